"""Tests of fluxflow.solve.outliers (spec §5) with hand-worked numbers."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from fluxflow.errors import InsufficientDataWarning
from fluxflow.gains import GainTable
from fluxflow.solve.outliers import (FlagCommand, apply_flag_commands, casa_ymd,
                                     flag_amplitude_outliers)

T0 = 5.0e9 + 0.3  # MJD seconds, away from whole-second boundaries
NAMES = ["DA41", "DV03", "PM02"]


def rows(field, spw, t, amps, flags=None):
    """Rows of a T table: ``amps`` is (ntime, nant) amplitudes at times ``t``."""
    amps = np.asarray(amps, float)
    ntime, nant = amps.shape
    n = ntime * nant
    flags = np.zeros(amps.shape, bool) if flags is None else np.asarray(flags)
    # a phase must not matter: only |CPARAM| enters
    cparam = (amps * np.exp(0.3j * np.arange(nant))[None, :]).reshape(n, 1, 1)
    return GainTable(
        vis_cal="T Jones", time=np.repeat(T0 + np.asarray(t, float), nant), interval=np.zeros(n),
        field_id=np.full(n, field), spw_id=np.full(n, spw),
        antenna1=np.tile(np.arange(nant), ntime),
        antenna2=np.zeros(n, int), scan=np.ones(n, int), obs_id=np.zeros(n, int), cparam=cparam,
        paramerr=np.zeros((n, 1, 1)), flag=flags.reshape(n, 1, 1), snr=np.ones((n, 1, 1)),
        weight=np.ones((n, 1, 1)))


def worked_table() -> GainTable:
    """Three fields; amplitudes per spw as (time, antenna) arrays (see the test for the numbers)."""
    parts = [
        # field 0: median 1, MAD 0 -> guarded, nothing flagged despite the 9.0
        rows(0, 0, [0, 60], [[1.0, 1.25, 1.0], [1.0, 0.75, 9.0]]),
        rows(0, 1, [0, 60], [[1.0, 1.5, 1.0], [1.0, 0.5, 1.0]]),
        # field 1: spws 0 and 1 valid, spw 3 only enters the statistics
        rows(1, 0, [600, 660], [[1.0, 0.875, 1.0625], [1.1875, 1.125, 12.0]]),
        rows(1, 1, [600, 660], [[0.9375, 1.25, 1.0], [1.0, 0.8125, 1.0]]),
        rows(1, 1, [630], [[500.0, 500.0, 500.0]], flags=[[True, True, True]]),
        rows(1, 3, [600, 660], [[1.0, 1.0, 1.0], [1.0, 1.0, 30.0]]),
        # field 2: its own level (5 Jy-ish gains); global statistics would flag all of it
        rows(2, 0, [1200, 1260], [[5.0, 4.9375, 5.125], [5.0625, 5.0, 4.875]]),
    ]
    return GainTable.concat(parts)


def expected_ymd(t: float) -> str:
    """Calendar time rounded to the nearest second (independent of casacore's arithmetic)."""
    when = dt.datetime(1858, 11, 17) + dt.timedelta(seconds=round(t))
    return when.strftime("%Y/%m/%d/%H:%M:%S")


def test_worked_example():
    table = worked_table()
    # Field 1, all unflagged amplitudes (18 values):
    #   sorted: 0.8125 0.875 0.9375 1 1 1 1 1 1 1 1 1 1.0625 1.125 1.1875 1.25 12 30
    #   median = (9th + 10th)/2 = 1
    #   |x - 1| sorted: 0 x9, 0.0625 x2, 0.125 x2, 0.1875 x2, 0.25, 11, 29 -> median = 0.03125
    #   MAD = 0.03125 / 0.6745; sigma(12) = 11 / MAD = 237.424 > 50 -> flagged
    #   sigma(30) = 29 / MAD is larger but spw 3 is not valid for field 1 -> not flagged
    #   sigma(1.25) = 0.25 / MAD = 5.40 -> not flagged
    with pytest.warns(InsufficientDataWarning, match="field 0"):
        out, cmds = flag_amplitude_outliers(
            table, field_ids_to_check=[0, 1, 2], science_spws=[0, 1, 2, 3],
            valid_spws_per_field={0: {0, 1}, 1: {0, 1}, 2: {0}}, antenna_names=NAMES, sigma=50.0)
    assert len(cmds) == 1
    cmd = cmds[0]
    sigma32 = np.float32(11.0) / np.float32(0.03125 / 0.6745)
    assert abs(cmd.sigma - 237.424) < 1e-4
    assert cmd.sigma == float(sigma32)
    t = T0 + 660
    assert (cmd.antenna, cmd.spw, cmd.field, cmd.antenna_id, cmd.time) == ("PM02&&&", 0, 1, 2, t)
    assert cmd.timerange == f"{expected_ymd(t - 0.5)}~{expected_ymd(t + 0.5)}"
    assert cmd.reason == f"QA2:gfluxscale_amp_time_sigma={sigma32:.6f}"
    assert cmd.to_casa() == (
        f"mode='manual' antenna='PM02&&&' spw='0' field='1' "
        f"timerange='{expected_ymd(t - 0.5)}~{expected_ymd(t + 0.5)}' "
        f"reason='QA2:gfluxscale_amp_time_sigma={sigma32:.6f}'")
    newly = out.flag & ~table.flag
    hit = np.flatnonzero(newly[:, 0, 0])
    assert hit.size == 1
    r = hit[0]
    assert (out.field_id[r], out.spw_id[r], out.antenna1[r], out.time[r]) == (1, 0, 2, t)
    assert not table.flag[r].any()  # the input table is not modified


def test_threshold_is_strict_and_lower_sigma_flags_more():
    table = worked_table()
    _, cmds = flag_amplitude_outliers(table, [1], [0, 1], {1: {0, 1}}, NAMES, sigma=5.0)
    # sigma(1.25) = 0.25/MAD = 5.3960 > 5 -> flagged too; everything else <= 4.05
    assert [(c.spw, c.antenna_id, round(c.sigma, 3)) for c in cmds] == [(0, 2, 237.424),
                                                                       (1, 1, 5.396)]
    at = float(np.float32(11.0) / np.float32(0.03125 / 0.6745))
    _, none = flag_amplitude_outliers(table, [1], [0, 1], {1: {0, 1}}, NAMES, sigma=at)
    assert none == []  # sigma equal to the threshold is not flagged


def test_mad_zero_guard_and_missing_fields():
    table = worked_table()
    with pytest.warns(InsufficientDataWarning):
        out, cmds = flag_amplitude_outliers(table, [0, 7], [0, 1], {}, NAMES)
    assert cmds == [] and np.array_equal(out.flag, table.flag)


def test_statistics_per_field_flagging_per_spw_and_fully_flagged_spw_skipped():
    table = worked_table()
    # field 1 with spw 3 tested as well: the 30.0 is flagged there
    _, cmds = flag_amplitude_outliers(table, [1], [0, 1, 3], {1: {0, 1, 3}}, NAMES)
    assert [(c.spw, c.antenna_id) for c in cmds] == [(0, 2), (3, 2)]
    # a field missing from valid_spws_per_field is tested in every science spw
    _, cmds2 = flag_amplitude_outliers(table, [1], [0, 1, 3], {}, NAMES)
    assert cmds2 == cmds


def test_g_table_commands_are_parameter_major():
    # two rows, two parameters; outliers at (row 0, par 1) and (row 1, par 0): the pipeline's
    # np.where over [par, chan, row] lists par 0 first
    base = np.ones((12, 1, 2))
    base[0, 0, 1] = 40.0
    base[1, 0, 0] = 60.0
    base[2:, 0, :] = np.linspace(0.9, 1.1, 20).reshape(10, 2)
    n = 12
    table = GainTable(vis_cal="G Jones", time=T0 + np.repeat(np.arange(4) * 30.0, 3),
                      interval=np.zeros(n), field_id=np.zeros(n, int), spw_id=np.zeros(n, int),
                      antenna1=np.tile(np.arange(3), 4), antenna2=np.zeros(n, int),
                      scan=np.ones(n, int), obs_id=np.zeros(n, int), cparam=base.astype(complex),
                      paramerr=np.zeros((n, 1, 2)), flag=np.zeros((n, 1, 2), bool),
                      snr=np.ones((n, 1, 2)), weight=np.ones((n, 1, 2)))
    out, cmds = flag_amplitude_outliers(table, [0], [0], {0: {0}}, NAMES)
    assert [c.antenna for c in cmds] == ["DV03&&&", "DA41&&&"]
    assert out.flag[0].all() and out.flag[1].all() and not out.flag[2:].any()


def test_apply_flag_commands_window_is_half_a_second():
    t = np.array([0.0, 0.4, 0.6, 0.0])
    n = 4
    table = GainTable(vis_cal="T Jones", time=T0 + t, interval=np.zeros(n),
                      field_id=np.array([1, 1, 1, 2]), spw_id=np.zeros(n, int),
                      antenna1=np.zeros(n, int), antenna2=np.zeros(n, int), scan=np.ones(n, int),
                      obs_id=np.zeros(n, int), cparam=np.ones((n, 1, 1), complex),
                      paramerr=np.zeros((n, 1, 1)), flag=np.zeros((n, 1, 1), bool),
                      snr=np.ones((n, 1, 1)), weight=np.ones((n, 1, 1)))
    cmd = FlagCommand(antenna="DA41&&&", spw=0, field=1, timerange="", reason="", antenna_id=0,
                      time=T0, sigma=99.0)
    out = apply_flag_commands(table, [cmd])
    assert out.flag[:, 0, 0].tolist() == [True, True, False, False]


def test_casa_ymd_rounding_and_midnight_quirk():
    assert casa_ymd(T0 - 0.5) == expected_ymd(T0 - 0.5)
    assert casa_ymd(0.0) == "1858/11/17/00:00:00"
    assert casa_ymd(1.5) == "1858/11/17/00:00:02"
    assert casa_ymd(86399.5) == "1858/11/17/24:00:00"  # casacore prints 24:00:00, not next day
    # 2017-09-17 06:14:38.7 UTC
    assert casa_ymd(5012345678.7) == "2017/09/17/06:14:39"


def test_casa_ymd_matches_casacore():
    quanta = pytest.importorskip("casacore.quanta")
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.uniform(4.0e9, 5.6e9, 2000),
                             np.floor(rng.uniform(4.0e9, 5.6e9, 2000)) + 0.5])
    for v in values:
        assert casa_ymd(float(v)) == quanta.quantity(float(v), "s").formatted("YMD")
