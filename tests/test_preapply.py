"""Pre-applied calibration tables (fluxflow.solve.preapply), spec §3 "Preconditions", §9 item 1.

Every expected value is computed here from CASA's equations, independently of the kernel:
V_obs,pq = J_ip · V · conj(J_jq) for G, T, B and K Jones (so V = V_obs / (J_ip conj(J_jq))),
K: J = exp(2πi τ[ns] (ν − ν_ref)[GHz]) (KJones::calcAllJones) with ν_ref = CHAN_FREQ[n/2] of the
table spw (KJones::setApply), B TSYS: V = V_obs · sqrt(Tsys_ip Tsys_jq) (StandardTsys, doInv
reversed), weights per VisJones/BJones/StandardTsys calcWtScale. Tables are real CASA tables on
disk written by fluxflow's writer into a simulated MS.
"""

from __future__ import annotations

import json
import os
import math
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
from casa_helper import CASA_PYTHON, casa_available, casa_env
import pytest
from casacore import tables

from fluxflow.errors import CaltableError, FlaggedDataWarning
from fluxflow.gains import GainTable
from fluxflow.ms import read_metadata, read_selection
from fluxflow.ms.caltable import FloatCalTable, read_caltable, write_caltable
from fluxflow.simulate import simulate_ms
from fluxflow.solve.preapply import (CalApply, apply_calibration, load_calapps, parse_interp,
                                     prepare_calapp)

N_ANT = 12
HANDS = np.array([[0, 0], [1, 1]])  # XX, YY


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("sim") / "pre.ms")
    simulate_ms(path, seed=1, sefd=0.0, n_chan=16, n_cycles=1)
    md = read_metadata(path)
    ds = read_selection(path, 0, 1)
    return {"ms": path, "md": md, "ds": ds,
            "dirs": {f.id: tuple(f.direction) for f in md.fields},
            "freqs": {s.id: np.asarray(s.chan_freq, float) for s in md.spws}}


def _data(ds):
    return (ds["vis"].values.astype(np.complex128), ds["flag"].values, ds["weight"].values,
            ds["time"].values, ds["antenna1"].values, ds["antenna2"].values,
            tuple(str(c) for c in ds["corr"].values), ds["chan_freq"].values)


def _table(vis_cal, times, spw, field, values, flags=None, obs=None):
    """Rows for every (time, antenna); values (ntime, nant, nchan, npar)."""
    values = np.asarray(values)
    nt, na, nch, npar = values.shape
    t = np.repeat(np.asarray(times, float), na)
    ant = np.tile(np.arange(na), nt).astype(np.int32)
    n = t.size
    flags = np.zeros(values.shape, bool) if flags is None else np.asarray(flags)
    common = dict(vis_cal=vis_cal, time=t, interval=np.full(n, 10.0),
                  field_id=np.broadcast_to(np.asarray(field, np.int32), n).copy()
                  if np.ndim(field) else np.full(n, field, np.int32),
                  spw_id=np.full(n, spw, np.int32), antenna1=ant,
                  antenna2=np.zeros(n, np.int32), scan=np.ones(n, np.int32),
                  obs_id=(np.zeros(n, np.int32) if obs is None
                          else np.repeat(obs, na).astype(np.int32)),
                  paramerr=np.zeros((n, nch, npar)), flag=flags.reshape(n, nch, npar),
                  snr=np.full((n, nch, npar), 50.0), weight=np.ones((n, nch, npar)), meta={})
    if vis_cal in ("K Jones", "B TSYS"):
        return FloatCalTable(fparam=values.reshape(n, nch, npar).astype(float), **common)
    return GainTable(cparam=values.reshape(n, nch, npar).astype(complex), **common)


def _write(tmp_path, name, table, ms):
    path = str(tmp_path / name)
    write_caltable(path, table, ms)
    return path


def _corrupt(vis, a1, a2, jones):
    """V_obs = J_ip V conj(J_jq); jones (row-independent) (ant, chan or 1, pol)."""
    return vis * jones[a1][:, :, HANDS[:, 0]] * np.conj(jones[a2][:, :, HANDS[:, 1]])


def _apply(sim_or_ds, calapps, **kw):
    ds = sim_or_ds
    vis, flag, weight, time, a1, a2, corr, freqs = _data(ds)
    loaded = load_calapps(calapps)
    kw.setdefault("field_id", int(ds.attrs["field_id"]))
    kw.setdefault("spw_id", int(ds.attrs["spw_id"]))
    return apply_calibration(kw.pop("vis", vis), flag, kw.pop("weight", weight), time, a1, a2,
                             corr, freqs, loaded=loaded, **kw)


# --------------------------------------------------------------------------- interp strings


@pytest.mark.parametrize("text,expected", [
    ("", ("linear", "linear", False, False)),
    ("linear,linear", ("linear", "linear", False, False)),
    ("nearest", ("nearest", "linear", False, False)),
    ("linearPD", ("linearPD", "linear", False, False)),
    ("linearperobs,linearflag", ("linear", "linear", True, True)),
    ("nearest,nearestflag", ("nearest", "nearest", False, True)),
    ("linearflag", ("linear", "linear", False, False)),  # 'flag' counts in the freq part only
    ("linearPDperobs,nearest", ("linearPD", "nearest", True, False)),
])
def test_parse_interp(text, expected):
    assert parse_interp(text) == expected


@pytest.mark.parametrize("text", ["cubic", "linear,spline", "aipslin", "foo,linear", "linear,bar"])
def test_parse_interp_rejects(text):
    with pytest.raises(ValueError):
        parse_interp(text)
    with pytest.raises(ValueError):
        CalApply("x", interp=text)


# ------------------------------------------------------------------------------- the writer


def test_writer_round_trip_bandpass_delay_tsys(tmp_path, sim):
    ms, freqs = sim["ms"], sim["freqs"]
    rng = np.random.default_rng(3)
    # B rows in spw 1 (16 channels) and spw 0 (4 channels): cells of different shapes
    b16 = (rng.normal(1, .1, (1, N_ANT, 16, 2)) + 1j * rng.normal(0, .1, (1, N_ANT, 16, 2)))
    b4 = np.pad(b16[:, :, :4], ((0, 0), (0, 0), (0, 12), (0, 0)), constant_values=np.nan)
    b = GainTable.concat([_table("B Jones", [5e9], 1, 0, b16.astype(np.complex64)),
                          _table("B Jones", [5e9], 0, 0, b4.astype(np.complex64))])
    b.flag[b.spw_id == 0, 4:] = True
    pb = _write(tmp_path, "t.B", b, ms)
    back = read_caltable(pb)
    assert back.vis_cal == "B Jones" and back.meta["nchan"] == {0: 4, 1: 16}
    want = b.sorted()
    np.testing.assert_array_equal(back.cparam[back.spw_id == 1], want.cparam[want.spw_id == 1])
    np.testing.assert_array_equal(back.cparam[back.spw_id == 0, :4],
                                  b16[0, :, :4].astype(np.complex64))
    with tables.table(pb, ack=False) as t:
        assert set(t.getcolshapestring("CPARAM")) == {"[16, 2]", "[4, 2]"}
        assert t.getkeyword("ParType") == "Complex"
    with tables.table(f"{pb}/SPECTRAL_WINDOW", ack=False) as t:
        assert t.getcell("CHAN_FREQ", 1).tolist() == freqs[1].tolist()  # MS channels kept
        assert t.getcol("NUM_CHAN").tolist() == [s.size for s in freqs.values()]
        assert t.getcol("FLAG_ROW").tolist() == [i not in (0, 1) for i in range(len(freqs))]

    k = _table("K Jones", [5e9], 1, 0, np.full((1, N_ANT, 1, 2), 0.25))
    pk = _write(tmp_path, "t.K", k, ms)
    kb = read_caltable(pk)
    assert isinstance(kb, FloatCalTable) and kb.fparam.shape == (N_ANT, 1, 2)
    with tables.table(pk, ack=False) as t:
        assert "FPARAM" in t.colnames() and "CPARAM" not in t.colnames()
        assert t.getkeyword("ParType") == "Float" and t.info()["subType"] == "K Jones"
    assert kb.meta["chan_freq"][1].tolist() == [freqs[1].mean()]

    ts = _table("B TSYS", [5e9], 1, 0, np.full((1, N_ANT, 16, 2), 80.0))
    back = read_caltable(_write(tmp_path, "t.tsys", ts, ms))
    assert back.vis_cal == "B TSYS" and back.fparam.shape == (N_ANT, 16, 2)
    assert np.all(back.fparam == 80.0)
    complex_k = _table("G Jones", [5e9], 1, 0, np.ones((1, N_ANT, 1, 2)))
    complex_k.vis_cal = "K Jones"
    with pytest.raises(CaltableError, match="FloatCalTable"):
        write_caltable(tmp_path / "x", complex_k, ms)


# ------------------------------------------------------------------ self-consistency (issue)


def test_bandpass_delay_gain_corruption_is_undone(tmp_path, sim):
    """Corrupt with a known B, K and time-variable G, write them, apply: original to 1e-6."""
    ms, ds = sim["ms"], sim["ds"]
    vis, flag, weight, time, a1, a2, corr, freqs = _data(ds)
    rng = np.random.default_rng(7)
    bp = (rng.uniform(0.8, 1.2, (N_ANT, 16, 2)) * np.exp(1j * rng.uniform(-1, 1, (N_ANT, 16, 2))))
    bp = bp.astype(np.complex64).astype(np.complex128)  # what the table stores
    tau = rng.choice([-0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0], (N_ANT, 2))  # ns, exact in f32
    nu_ref = freqs.mean()  # K table frequency = mean of the solved spw (writer, like gaincal)
    kj = np.exp(2j * np.pi * tau[:, None, :] * ((freqs - nu_ref) / 1e9)[None, :, None])
    # G: amplitude and phase linear in time, so linear interpolation between solutions is exact
    tsol = np.linspace(time.min() - 5.0, time.max() + 5.0, 4)
    a0, a_s = rng.uniform(0.7, 1.3, (N_ANT, 2)), rng.uniform(-1e-3, 1e-3, (N_ANT, 2))
    p0, p_s = rng.uniform(-3, 3, (N_ANT, 2)), rng.uniform(-0.01, 0.01, (N_ANT, 2))

    def g_at(t):  # (len(t), ant, pol)
        dt = (np.asarray(t) - tsol[0])[:, None, None]
        return (a0 + a_s * dt) * np.exp(1j * (p0 + p_s * dt))

    g_rows = g_at(time)  # (row, ant, pol)
    obs = _corrupt(vis, a1, a2, bp * kj)
    obs = (obs * g_rows[np.arange(time.size), a1][:, None, HANDS[:, 0]]
           * np.conj(g_rows[np.arange(time.size), a2][:, None, HANDS[:, 1]]))

    pb = _write(tmp_path, "c.B", _table("B Jones", [time.mean()], 1, 0, bp[None]), ms)
    pk = _write(tmp_path, "c.K", _table("K Jones", [time.mean()], 1, 0, tau[None, :, None, :]), ms)
    pg = _write(tmp_path, "c.G", _table("G Jones", tsol, 1, 0, g_at(tsol)[:, :, None, :]), ms)
    apps = [CalApply(pb, interp="linear,linear"), CalApply(pk), CalApply(pg, interp="linear")]
    out_v, out_f, out_w = _apply(ds, apps, vis=obs)
    np.testing.assert_allclose(out_v, vis, rtol=0, atol=1e-6 * np.abs(vis).max())
    np.testing.assert_array_equal(out_f, flag)
    np.testing.assert_array_equal(out_w, weight)
    # the table order does not matter (all Jones are diagonal)
    again, _, _ = _apply(ds, apps[::-1], vis=obs)
    np.testing.assert_allclose(again, out_v, rtol=0, atol=1e-9)


def test_row_chunks_give_the_same_result(tmp_path, sim, monkeypatch):
    from fluxflow.solve import preapply

    ds = sim["ds"]
    rng = np.random.default_rng(5)
    b = np.exp(1j * rng.uniform(-3, 3, (1, N_ANT, 16, 2)))
    fl = rng.random(b.shape) < 0.05
    pb = _write(tmp_path, "ch.B", _table("B Jones", [5e9], 1, 0, b, flags=fl), sim["ms"])
    apps = [CalApply(pb, interp="linear,linearflag", calwt=True)]
    whole = _apply(ds, apps)
    monkeypatch.setattr(preapply, "CHUNK_ELEMENTS", 7 * 16 * 2)  # 7 rows per chunk
    chunked = _apply(ds, apps)
    np.testing.assert_allclose(chunked[0], whole[0], rtol=1e-14)  # SIMD rounding only
    np.testing.assert_array_equal(chunked[1], whole[1])
    np.testing.assert_allclose(chunked[2], whole[2], rtol=1e-14)
    assert not np.array_equal(whole[1], ds["flag"].values)  # the flags did something


def test_inputs_untouched_and_dtypes_kept(tmp_path, sim):
    ds = sim["ds"]
    vis = ds["vis"].values.copy()
    path = _write(tmp_path, "u.G", _table("G Jones", [5e9], 1, 0, np.full((1, N_ANT, 1, 2), 2.0)),
                  sim["ms"])
    out_v, out_f, out_w = _apply(ds, [CalApply(path)], vis=vis)
    assert out_v.dtype == np.complex64 and out_w.dtype == ds["weight"].values.dtype
    np.testing.assert_array_equal(vis, ds["vis"].values)
    np.testing.assert_allclose(out_v, vis / 4.0, rtol=1e-6)


# ------------------------------------------------------------------------ time interpolation


def test_gain_time_interpolation(tmp_path, sim):
    ds = sim["ds"]
    time = ds["time"].values
    t0, t1 = time.min() - 2.0, time.max() + 2.0
    # antenna 0: gain 1; antenna k: amplitude 1 -> 2 and phase 170° -> -170° (wraps through 180°)
    g = np.ones((2, N_ANT, 1, 2), complex)
    g[0, 1:] = 1.0 * np.exp(1j * np.radians(170.0))
    g[1, 1:] = 2.0 * np.exp(1j * np.radians(-170.0))
    path = _write(tmp_path, "ti.G", _table("G Jones", [t0, t1], 1, 0, g), sim["ms"])
    ones = np.ones(ds["vis"].shape, np.complex128)
    rows = (ds["antenna1"].values == 0)
    frac = (time - t0) / (t1 - t0)
    amp = 1.0 + frac
    ph = np.radians(170.0 + 20.0 * frac)  # the short way round
    v, _, _ = _apply(ds, [CalApply(path, interp="linear")], vis=ones)
    want = 1.0 / np.conj(amp * np.exp(1j * ph))  # baseline (0, k): V / (g_0 conj(g_k))
    np.testing.assert_allclose(v[rows, 3, 0], want[rows], rtol=1e-6)
    v, _, _ = _apply(ds, [CalApply(path, interp="nearest")], vis=ones)
    near = np.where(time - t0 <= t1 - time, g[0, 1, 0, 0], g[1, 1, 0, 0])  # tie -> earlier
    np.testing.assert_allclose(v[rows, 0, 1], 1.0 / np.conj(near[rows]), rtol=1e-6)


def test_gain_outside_solution_range_uses_nearest_solution(tmp_path, sim):
    ds = sim["ds"]
    time = ds["time"].values
    g = np.stack([np.full((N_ANT, 1, 2), 2.0), np.full((N_ANT, 1, 2), 4.0)]).astype(complex)
    tab = _table("G Jones", [time.max() + 10, time.max() + 20], 1, 0, g)
    later = _write(tmp_path, "late.G", tab, sim["ms"])
    v, _, _ = _apply(ds, [CalApply(later)], vis=np.ones(ds["vis"].shape, complex))
    np.testing.assert_allclose(v, 0.25)  # all data before the first solution: 1/(2·2)


# -------------------------------------------------------------------------- flag propagation


def test_flagged_and_missing_solutions_flag_data(tmp_path, sim):
    ds = sim["ds"]
    vis, flag, weight, time, a1, a2, corr, freqs = _data(ds)
    ut = np.unique(time)
    tsol = np.array([ut[0], ut[4], ut[9]])
    g = np.full((3, N_ANT, 1, 2), 2.0 + 0j)
    fl = np.zeros(g.shape, bool)
    fl[1, 2, 0, 0] = True  # antenna 2, pol X, middle solution flagged
    tab = _table("G Jones", tsol, 1, 0, g, flags=fl)
    tab = tab.select(tab.antenna1 != 5)  # antenna 5 has no solutions at all
    path = _write(tmp_path, "fl.G", tab, sim["ms"])
    with pytest.warns(FlaggedDataWarning, match=r"antennas \[5\]"):
        v, f, w = _apply(ds, [CalApply(path, interp="linear")])
    has5 = (a1 == 5) | (a2 == 5)
    has2 = (a1 == 2) | (a2 == 2)
    assert f[has5].all()
    np.testing.assert_array_equal(v[has5], vis[has5])  # flagged samples are not corrected
    # linear: every time strictly between the first and last solution uses the middle one
    needs_mid = has2 & ~has5 & (time > tsol[0]) & (time < tsol[2])
    assert f[needs_mid][:, :, 0].all()  # XX only: the flagged solution is pol X
    np.testing.assert_array_equal(f[needs_mid, :, 1], flag[needs_mid, :, 1])
    ok = ~has5 & ~needs_mid
    np.testing.assert_array_equal(f[ok], flag[ok])
    np.testing.assert_allclose(v[ok], vis[ok] / 4.0, rtol=1e-6)
    # nearest: the row just before (or at) the time, or the next one if strictly closer
    lo_part = (time > tsol[0]) & (time < tsol[1]) & (tsol[1] - time < time - tsol[0])
    hi_part = (time > tsol[1]) & (time < tsol[2]) & ~(tsol[2] - time < time - tsol[1])
    uses_mid = has2 & ~has5 & ((time == tsol[1]) | lo_part | hi_part)
    with pytest.warns(FlaggedDataWarning):
        _, f, _ = _apply(ds, [CalApply(path, interp="nearest")])
    assert f[uses_mid][:, :, 0].all() and uses_mid.any()
    other = ~has5 & ~uses_mid
    np.testing.assert_array_equal(f[other], flag[other])


def test_spw_without_solutions_flags_everything(tmp_path, sim):
    ds = sim["ds"]
    path = _write(tmp_path, "s3.G", _table("G Jones", [5e9], 3, 0, np.ones((1, N_ANT, 1, 2))),
                  sim["ms"])
    with pytest.warns(FlaggedDataWarning, match="no solutions for spw 1"):
        v, f, _ = _apply(ds, [CalApply(path)])
    assert f.all()
    np.testing.assert_array_equal(v, ds["vis"].values)


# --------------------------------------------------------------------- frequency resampling


def _smooth_bandpass(nu, ant, pol):
    """Amplitude and phase linear in frequency: linear interpolation reproduces them exactly.

    The phase slope (up to 9 rad/GHz, ~1 rad per channel) wraps several times across the band.
    """
    x = (nu - 91.0e9) / 1e9
    amp = 1.0 + 0.1 * x * (ant + 1) / N_ANT + 0.05 * pol
    return amp * np.exp(1j * (1.5 * x * (ant - 5) + pol))


def test_bandpass_resampled_onto_other_channels(tmp_path, sim):
    ds = sim["ds"]
    freqs = sim["freqs"][1]  # LSB: decreasing
    width = freqs[1] - freqs[0]
    t_freqs = freqs + 0.25 * width  # table channels a quarter channel further down the band
    b = np.stack([np.stack([_smooth_bandpass(t_freqs, a, p) for p in (0, 1)], -1)
                  for a in range(N_ANT)])[None]
    tab = _table("B Jones", [5e9], 1, 0, b)
    tab.meta["chan_freq"] = {1: t_freqs}
    path = _write(tmp_path, "shift.B", tab, sim["ms"])
    ones = np.ones(ds["vis"].shape, complex)
    a1, a2 = ds["antenna1"].values, ds["antenna2"].values
    # data channel 0 lies beyond the table's first channel: edge value; the others interpolate
    nu_eff = np.clip(freqs, t_freqs.min(), t_freqs.max())
    want_b = np.stack([np.stack([_smooth_bandpass(nu_eff, a, p) for p in (0, 1)], -1)
                       for a in range(N_ANT)])
    want = 1.0 / (want_b[a1][:, :, HANDS[:, 0]] * np.conj(want_b[a2][:, :, HANDS[:, 1]]))
    v, f, _ = _apply(ds, [CalApply(path, interp="linear,linear")], vis=ones)
    np.testing.assert_allclose(v, want, rtol=2e-6)
    np.testing.assert_array_equal(f, ds["flag"].values)
    # nearest in frequency: data channel j registers to table channel j (closer than j-1)
    v, _, _ = _apply(ds, [CalApply(path, interp="linear,nearest")], vis=ones)
    bt = b[0]
    want = 1.0 / (bt[a1][:, :, HANDS[:, 0]] * np.conj(bt[a2][:, :, HANDS[:, 1]]))
    np.testing.assert_allclose(v, want, rtol=2e-6)


def test_flagged_bandpass_channel_interpolated_or_flagged(tmp_path, sim):
    ds = sim["ds"]
    vis, flag, weight, time, a1, a2, corr, freqs = _data(ds)
    b = np.ones((1, N_ANT, 16, 2), complex)
    b[0, 3, :, 0] = np.linspace(1.0, 2.5, 16)  # antenna 3, pol X: amplitude ramp
    fl = np.zeros(b.shape, bool)
    fl[0, 3, 5, 0] = True
    b[0, 3, 5, 0] = 100.0  # a bad, flagged value that must never be used
    path = _write(tmp_path, "fl.B", _table("B Jones", [5e9], 1, 0, b, flags=fl), sim["ms"])
    rows = (a1 == 3) & (a2 != 3)
    ones = np.ones(vis.shape, complex)
    v, f, _ = _apply(ds, [CalApply(path, interp="linear,linear")], vis=ones)
    np.testing.assert_array_equal(f, flag)  # no flags without 'flag'
    ramp = np.linspace(1.0, 2.5, 16)
    np.testing.assert_allclose(v[rows, :, 0], 1.0 / ramp[None, :].repeat(rows.sum(), 0), rtol=1e-6)
    # 'linearflag' on the table's own channel grid: flags are copied channel by channel, so
    # table channel 5 flags data channel 5 only (as CASA's applycal does; checked against CASA
    # in test_matches_casa_applycal)
    _, f, _ = _apply(ds, [CalApply(path, interp="linear,linearflag")], vis=ones)
    added = f & ~flag
    touched = (a1 == 3) | (a2 == 3)
    assert not added[~touched].any() and not added[:, :, 1].any()
    assert set(np.flatnonzero(added[touched][:, :, 0].any(axis=0))) == {5}
    assert f[touched][:, 5, 0].all()
    # 'nearestflag': only the flagged channel itself
    _, f, _ = _apply(ds, [CalApply(path, interp="linear,nearestflag")], vis=ones)
    added = f & ~flag
    assert set(np.flatnonzero(added[touched][:, :, 0].any(axis=0))) == {5}


# --------------------------------------------------------------------------------- gainfield


@pytest.fixture(scope="module")
def two_field_gains(tmp_path_factory, sim):
    """Field 1 gain 2 (before the data of field 4), field 2 gain 3 (after it)."""
    d4 = read_selection(sim["ms"], 4, 1)
    t4 = d4["time"].values
    g = GainTable.concat([
        _table("G Jones", [t4.min() - 100.0], 1, 1, np.full((1, N_ANT, 1, 2), 2.0)),
        _table("G Jones", [t4.max() + 100.0], 1, 2, np.full((1, N_ANT, 1, 2), 3.0))])
    path = str(tmp_path_factory.mktemp("gf") / "two.G")
    write_caltable(path, g, sim["ms"])
    return path, d4


@pytest.mark.parametrize("gainfield,gain", [
    ("J0423-0120", 2.0), ("2", 3.0), ("J05*", 3.0), ("1~1", 2.0), ("nearest", 3.0)])
def test_gainfield_selects_solutions(two_field_gains, sim, gainfield, gain):
    path, d4 = two_field_gains
    ones = np.ones(d4["vis"].shape, complex)
    v, _, _ = _apply(d4, [CalApply(path, gainfield=gainfield)], vis=ones,
                     field_directions=sim["dirs"])
    # field 4 (J0502+1338) is nearer on the sky to field 2 (J0510+1800) than to field 1
    np.testing.assert_allclose(v, 1.0 / gain ** 2, rtol=1e-6)


def test_gainfield_all_fields_interpolates_across_fields(two_field_gains):
    path, d4 = two_field_gains
    t = d4["time"].values
    ta, tb = t.min() - 100.0, t.max() + 100.0
    amp = 2.0 + (t - ta) / (tb - ta)
    v, _, _ = _apply(d4, [CalApply(path, gainfield="")], vis=np.ones(d4["vis"].shape, complex))
    np.testing.assert_allclose(v[:, 0, 0], 1.0 / amp ** 2, rtol=1e-6)


def test_gainfield_nearest_needs_directions_and_unknown_names_fail(two_field_gains, sim):
    path, d4 = two_field_gains
    with pytest.raises(CaltableError, match="direction"):
        _apply(d4, [CalApply(path, gainfield="nearest")], field_directions={})
    d1 = read_selection(sim["ms"], 1, 1)  # field 1 itself: nearest is field 1 (distance 0)
    v, _, _ = _apply(d1, [CalApply(path, gainfield="nearest")],
                     vis=np.ones(d1["vis"].shape, complex), field_directions=sim["dirs"])
    np.testing.assert_allclose(v, 0.25, rtol=1e-6)
    with pytest.raises(CaltableError, match="matches no field"):
        load_calapps([CalApply(path, gainfield="NoSuchSource")])
    with pytest.raises(CaltableError, match="selects no solutions"):
        load_calapps([CalApply(path, gainfield="J0522-3627")])


# ------------------------------------------------------------------------------------ spwmap


@pytest.mark.parametrize("spwmap,ok", [((), False), ((0, 3, 2, 3), True), ((3,), True),
                                       ((-999,), True), ((0, 1, 2), False)])
def test_spwmap(tmp_path, sim, spwmap, ok):
    ds = sim["ds"]
    path = _write(tmp_path, "s.G", _table("G Jones", [5e9], 3, 0, np.full((1, N_ANT, 1, 2), 2.0)),
                  sim["ms"])
    ones = np.ones(ds["vis"].shape, complex)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        v, f, _ = _apply(ds, [CalApply(path, spwmap=spwmap)], vis=ones)
    if ok:
        np.testing.assert_allclose(v, 0.25, rtol=1e-6)
        assert not caught
    else:
        assert f.all() and any(issubclass(c.category, FlaggedDataWarning) for c in caught)


def test_spwmap_outside_table_rejected(tmp_path, sim):
    path = _write(tmp_path, "s.G", _table("G Jones", [5e9], 3, 0, np.ones((1, N_ANT, 1, 2))),
                  sim["ms"])
    with pytest.raises(CaltableError, match=r"spwmap value\(s\) \[9\]"):
        load_calapps([CalApply(path, spwmap=(0, 9))])


def test_linear_pd_scales_phase_by_frequency_ratio(tmp_path, sim):
    ds = sim["ds"]
    g = np.ones((1, N_ANT, 1, 2), complex)
    g[0, 4] = np.exp(0.6j)
    path = _write(tmp_path, "pd.T", _table("G Jones", [5e9], 3, 0, g), sim["ms"])
    ones = np.ones(ds["vis"].shape, complex)
    rows = (ds["antenna1"].values == 4) & (ds["antenna2"].values != 4)
    nu_data = sim["freqs"][1][16 // 2]
    nu_table = sim["freqs"][3].mean()  # the G table's frequency of spw 3
    for interp, phase in (("linear", 0.6), ("linearPD", 0.6 * nu_data / nu_table)):
        v, _, _ = _apply(ds, [CalApply(path, interp=interp, spwmap=(0, 3))], vis=ones)
        np.testing.assert_allclose(v[rows], np.exp(-1j * phase), rtol=1e-6)


# ------------------------------------------------------------------------------------ delays


def test_delay_sign_and_reference_frequency(tmp_path, sim):
    ds = sim["ds"]
    freqs = sim["freqs"][1]
    tau = np.zeros((1, N_ANT, 1, 2))
    tau[0, 4, 0, 0] = 1.0  # 1 ns on antenna 4, pol X
    tab = _table("K Jones", [5e9], 1, 0, tau)
    tab.meta["chan_freq"] = {1: freqs[3]}
    path = _write(tmp_path, "d.K", tab, sim["ms"])
    ones = np.ones(ds["vis"].shape, complex)
    a1, a2 = ds["antenna1"].values, ds["antenna2"].values
    w_in = ds["weight"].values
    v, _, w = _apply(ds, [CalApply(path, calwt=True)], vis=ones)
    phase = 2 * np.pi * 1.0 * (freqs - freqs[3]) / 1e9  # J_4X = exp(+i phase)
    np.testing.assert_allclose(v[a1 == 4][:, :, 0],
                               np.broadcast_to(np.exp(-1j * phase), ((a1 == 4).sum(), 16)),
                               rtol=1e-6)
    np.testing.assert_allclose(v[a2 == 4][:, :, 0],
                               np.broadcast_to(np.exp(1j * phase), ((a2 == 4).sum(), 16)),
                               rtol=1e-6)
    np.testing.assert_allclose(v[(a1 != 4) & (a2 != 4)], 1.0)
    np.testing.assert_allclose(v[:, :, 1], 1.0)
    np.testing.assert_array_equal(w, w_in)  # calwt never applies to delays
    # a table from CASA before 5.3 pivots on the spw REF_FREQUENCY
    with tables.table(path, readonly=False, ack=False) as t:
        t.putkeyword("CASA_Version", "Unknown")
    with tables.table(f"{sim['ms']}/SPECTRAL_WINDOW", ack=False) as t:
        ref = t.getcell("REF_FREQUENCY", 1)
    v, _, _ = _apply(ds, [CalApply(path)], vis=ones)
    phase = 2 * np.pi * (freqs - ref) / 1e9
    np.testing.assert_allclose(v[a1 == 4][:, :, 0],
                               np.broadcast_to(np.exp(-1j * phase), ((a1 == 4).sum(), 16)),
                               rtol=1e-6)


# ---------------------------------------------------------------------------- Tsys and calwt


def test_tsys_scales_amplitudes_and_weights(tmp_path, sim):
    ds = sim["ds"]
    vis, flag, weight, time, a1, a2, corr, freqs = _data(ds)
    chan = np.arange(16)
    tsys = np.empty((1, N_ANT, 16, 2))
    for a in range(N_ANT):
        tsys[0, a, :, 0] = 50.0 + 10.0 * a + chan
        tsys[0, a, :, 1] = 70.0 + 5.0 * a - 0.5 * chan
    tsys[0, 2, 7, 1] = -1.0  # a spurious negative value: flagged (StandardTsys::calcPar)
    path = _write(tmp_path, "t.tsys", _table("B TSYS", [5e9], 1, 0, tsys), sim["ms"])
    t = tsys[0]
    v, f, w = _apply(ds, [CalApply(path, calwt=True)])
    ti, tj = t[a1][:, :, HANDS[:, 0]], t[a2][:, :, HANDS[:, 1]]
    bad = (ti < 0) | (tj < 0)
    want_v = np.where(bad, vis, vis * np.sqrt(np.abs(ti * tj)))
    np.testing.assert_allclose(v, want_v, rtol=1e-6)
    np.testing.assert_array_equal(f, flag | bad)
    np.testing.assert_allclose(w[~bad], (weight / (ti * tj))[~bad], rtol=1e-6)
    # per-row weights: 1 / (mean Tsys_i · mean Tsys_j) over the unflagged channels
    good_t = np.where(t > 0, t, np.nan)
    mean_t = np.nanmean(good_t, axis=1)  # (ant, pol)
    w_row = weight[:, 0, :]
    _, _, w2 = _apply(ds, [CalApply(path, calwt=True)], weight=w_row)
    want = w_row / (mean_t[a1][:, HANDS[:, 0]] * mean_t[a2][:, HANDS[:, 1]])
    np.testing.assert_allclose(w2, want, rtol=1e-6)


def test_tsys_interpolated_in_time(tmp_path, sim):
    ds = sim["ds"]
    vis, flag, weight, time, a1, a2, corr, freqs = _data(ds)
    t0, t1 = time.min() - 3.0, time.max() + 3.0
    tsys = np.empty((2, N_ANT, 16, 2))
    tsys[0] = 100.0 + np.arange(N_ANT)[:, None, None]  # rising to twice that over the data
    tsys[1] = 2.0 * tsys[0]
    tsys[1, :, :, 1] += np.arange(16)[None, :]  # pol Y also changes shape with time
    path = _write(tmp_path, "tt.tsys", _table("B TSYS", [t0, t1], 1, 0, tsys), sim["ms"])
    frac = ((time - t0) / (t1 - t0))[:, None, None, None]
    t_row = tsys[0][None] + frac * (tsys[1] - tsys[0])[None]  # (row, ant, chan, pol)
    rix = np.arange(time.size)
    want = vis * np.sqrt(t_row[rix, a1][:, :, HANDS[:, 0]] * t_row[rix, a2][:, :, HANDS[:, 1]])
    v, _, _ = _apply(ds, [CalApply(path, interp="linear,linear")])
    np.testing.assert_allclose(v, want, rtol=1e-6)


def test_calwt_gain_and_bandpass(tmp_path, sim):
    ds = sim["ds"]
    vis, flag, weight, time, a1, a2, corr, freqs = _data(ds)
    amp = 1.0 + 0.1 * np.arange(N_ANT)
    g = (amp[None, :, None, None] * np.exp(0.3j) * np.ones((1, N_ANT, 1, 2)))
    pg = _write(tmp_path, "w.G", _table("G Jones", [5e9], 1, 0, g), sim["ms"])
    _, _, w = _apply(ds, [CalApply(pg, calwt=True)])
    np.testing.assert_allclose(w, weight * (amp[a1] ** 2 * amp[a2] ** 2)[:, None, None], rtol=1e-6)
    _, _, w = _apply(ds, [CalApply(pg, calwt=False)])
    np.testing.assert_array_equal(w, weight)
    # B: mean over unflagged table channels of |B|^2, per antenna and polarisation
    b = np.ones((1, N_ANT, 16, 2), complex)
    b[0, :, :, 0] = np.linspace(1.0, 2.0, 16)[None, :] * np.exp(0.1j)
    fl = np.zeros(b.shape, bool)
    fl[0, :, 0, 0] = True  # channel 0 excluded from the mean
    pb = _write(tmp_path, "w.B", _table("B Jones", [5e9], 1, 0, b, flags=fl), sim["ms"])
    _, _, w = _apply(ds, [CalApply(pb, calwt=True)])
    mx = np.mean(np.linspace(1.0, 2.0, 16)[1:] ** 2)
    want = weight * np.array([mx * mx, 1.0])[None, None, :]
    np.testing.assert_allclose(w, want, rtol=1e-6)


# ----------------------------------------------------------------------------------- perobs


def test_perobs_uses_the_data_observation_only(tmp_path, sim):
    ms = str(tmp_path / "two_obs.ms")
    shutil.copytree(sim["ms"], ms)
    with tables.table(f"{ms}/OBSERVATION", readonly=False, ack=False) as t:
        t.copyrows(t, startrowin=0, nrow=1)  # a second observation, so obs_id 1 is valid
    ds = sim["ds"]
    t = ds["time"].values
    g = GainTable.concat([
        _table("G Jones", [t.min() - 50.0], 1, 0, np.full((1, N_ANT, 1, 2), 2.0), obs=[0]),
        _table("G Jones", [t.max() + 50.0], 1, 0, np.full((1, N_ANT, 1, 2), 3.0), obs=[1])])
    path = str(tmp_path / "obs.G")
    write_caltable(path, g, ms)
    ones = np.ones(ds["vis"].shape, complex)
    v, _, _ = _apply(ds, [CalApply(path, interp="linearperobs")], vis=ones, obs_id=0)
    np.testing.assert_allclose(v, 0.25, rtol=1e-6)
    v, _, _ = _apply(ds, [CalApply(path, interp="linear")], vis=ones, obs_id=0)
    assert np.all(np.abs(v) < 0.25 - 1e-3)  # interpolated towards the obs-1 gain
    with pytest.warns(FlaggedDataWarning, match="perobs"):
        _apply(ds, [CalApply(path, interp="linearperobs")], vis=ones)
    # per-row observation ids: interleaved rows take their own observation's solutions
    obs = np.arange(ones.shape[0]) % 2
    v, _, _ = _apply(ds, [CalApply(path, interp="linearperobs")], vis=ones, obs_id=obs)
    np.testing.assert_allclose(v[obs == 0], 0.25, rtol=1e-6)
    np.testing.assert_allclose(v[obs == 1], 1.0 / 9.0, rtol=1e-6)


# -------------------------------------------------------------------------- loading checks


def test_unsupported_table_type_rejected(tmp_path, sim):
    path = _write(tmp_path, "d.G", _table("G Jones", [5e9], 1, 0, np.ones((1, N_ANT, 1, 2))),
                  sim["ms"])
    with tables.table(path, readonly=False, ack=False) as t:
        t.putinfo({"type": "Calibration", "subType": "KAntPos Jones", "readme": ""})
    with pytest.raises(CaltableError, match="cannot be pre-applied"):
        load_calapps([CalApply(path)])


def test_summary_lists_the_applied_table(tmp_path, sim):
    path = _write(tmp_path, "sum.G", _table("G Jones", [5e9], 1, 0, np.ones((1, N_ANT, 1, 2))),
                  sim["ms"])
    (cal,) = load_calapps([CalApply(path, gainfield="nearest", interp="linear,linear",
                                    spwmap=[0, 1], calwt=True)])
    assert cal.summary == (f"G Jones: table={path} select='nearest' interp='linear,linear' "
                           "spwmap=[0, 1] calWt=True")
    assert cal.describe()["n_solutions"] == N_ANT
    assert prepare_calapp(read_caltable(path), CalApply(path)).kind == "gain"


# ------------------------------------------------------------------------ CASA, if present


@pytest.mark.skipif(not casa_available(), reason="CASA is not available (set FLUXFLOW_CASA_PYTHON)")
def test_matches_casa_applycal(tmp_path, sim):
    """Bandpass + delay + gain tables: fluxflow's corrected data equal CASA's CORRECTED_DATA."""
    ms = str(tmp_path / "casa.ms")
    shutil.copytree(sim["ms"], ms)
    ds = read_selection(ms, 0, 1)
    vis, flag, weight, time, a1, a2, corr, freqs = _data(ds)
    rng = np.random.default_rng(11)
    bp = rng.uniform(0.8, 1.2, (N_ANT, 16, 2)) * np.exp(1j * rng.uniform(-1, 1, (N_ANT, 16, 2)))
    tau = rng.choice([-0.5, 0.25, 0.75], (N_ANT, 2))
    kj = np.exp(2j * np.pi * tau[:, None, :] * ((freqs - freqs.mean()) / 1e9)[None, :, None])
    obs = _corrupt(vis, a1, a2, bp * kj).astype(np.complex64)
    with tables.table(ms, readonly=False, ack=False) as t:
        for r, row in enumerate(ds["row_id"].values):
            t.putcell("DATA", int(row), obs[r])
    bfl = np.zeros((1, N_ANT, 16, 2), bool)
    bfl[0, 2, 9, 1] = True
    pb = _write(tmp_path, "x.B", _table("B Jones", [time.mean()], 1, 0, bp[None], flags=bfl), ms)
    pk = _write(tmp_path, "x.K", _table("K Jones", [time.mean()], 1, 0, tau[None, :, None, :]), ms)
    g = np.exp(1j * rng.uniform(-3, 3, (3, N_ANT, 1, 2))) * rng.uniform(0.8, 1.2, (3, N_ANT, 1, 2))
    pg = _write(tmp_path, "x.G", _table("G Jones", np.linspace(time.min(), time.max(), 3), 1, 0, g),
                ms)
    apps = [CalApply(pb, interp="linear,linearflag"), CalApply(pk),
            CalApply(pg, interp="linear", calwt=True)]
    script = textwrap.dedent("""
        import json, sys, casatools
        cb = casatools.calibrater()
        cb.open(sys.argv[1], addcorr=True, addmodel=False)
        for a in json.loads(sys.argv[2]):
            cb.setapply(table=a["path"], field=a["gainfield"], interp=a["interp"],
                        spwmap=a["spwmap"] or [-1], calwt=a["calwt"])
        cb.correct(applymode="calflagstrict")
        cb.close()
    """)
    spec = json.dumps([{"path": a.path, "gainfield": a.gainfield, "interp": a.interp or "linear",
                        "spwmap": list(a.spwmap), "calwt": a.calwt} for a in apps])
    run = subprocess.run([CASA_PYTHON, "-c", script, ms, spec], capture_output=True,
                         text=True, timeout=600, env=casa_env(), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    v, f, _ = _apply(read_selection(ms, 0, 1), apps)
    with tables.table(ms, ack=False) as t:
        rows = ds["row_id"].values
        casa_v = np.stack([t.getcell("CORRECTED_DATA", int(r)) for r in rows])
        casa_f = np.stack([t.getcell("FLAG", int(r)) for r in rows])
    np.testing.assert_array_equal(f, casa_f)
    np.testing.assert_allclose(v[~f], casa_v[~f], rtol=0, atol=2e-5 * np.abs(casa_v).max())
    assert math.isfinite(float(np.abs(v).max()))
