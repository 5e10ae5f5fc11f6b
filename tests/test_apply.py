"""Tests of fluxflow.solve.apply (in-memory applycal of G/T tables)."""

from __future__ import annotations

import numpy as np
import pytest

from fluxflow.errors import FlaggedDataWarning
from fluxflow.gains import GainTable
from fluxflow.solve.apply import apply_gains
from fluxflow.solve.gaincal import solve_gains

T0 = 5.0e9
HAND = {"X": 0, "Y": 1, "R": 0, "L": 1}


def gain_table(times, gains, flags=None, *, field=0, spw=0, vis_cal="G Jones"):
    """Table with one row per (time, antenna); ``gains`` is (ntime, nant, npar)."""
    gains = np.asarray(gains, complex)
    ntime, nant, npar = gains.shape
    n = ntime * nant
    flags = np.zeros(gains.shape, bool) if flags is None else np.asarray(flags)
    return GainTable(
        vis_cal=vis_cal, time=np.repeat(np.asarray(times, float), nant), interval=np.zeros(n),
        field_id=np.full(n, field), spw_id=np.full(n, spw),
        antenna1=np.tile(np.arange(nant), ntime), antenna2=np.zeros(n, int),
        scan=np.ones(n, int), obs_id=np.zeros(n, int), cparam=gains.reshape(n, 1, npar),
        paramerr=np.zeros((n, 1, npar)), flag=flags.reshape(n, 1, npar),
        snr=np.ones((n, 1, npar)), weight=np.ones((n, 1, npar)))


def baselines(nant, times):
    a1, a2 = np.triu_indices(nant, 1)
    nbl = a1.size
    return (np.tile(a1, len(times)), np.tile(a2, len(times)),
            np.repeat(np.asarray(times, float), nbl))


def corrupt(vis, a1, a2, gains_at_row, corr):
    """V_pq · g_i,p conj(g_j,q) with ``gains_at_row`` (row, nant, npar)."""
    out = vis.copy()
    rows = np.arange(vis.shape[0])
    npar = gains_at_row.shape[2]
    for k, c in enumerate(corr):
        p, q = (HAND[c[0]], HAND[c[1]]) if npar == 2 else (0, 0)
        out[:, :, k] *= (gains_at_row[rows, a1, p] * np.conj(gains_at_row[rows, a2, q]))[:, None]
    return out


def random_vis(rng, nrow, nchan, ncorr):
    shape = (nrow, nchan, ncorr)
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


@pytest.mark.parametrize("corr", [("XX", "XY", "YX", "YY"), ("RR", "LL")])
@pytest.mark.parametrize("interp", ["linear", "nearest"])
def test_round_trip_at_solution_times(corr, interp):
    rng = np.random.default_rng(1)
    nant, times = 6, T0 + np.array([0.0, 30.0, 60.0])
    g = (1 + 0.3 * rng.random((3, nant, 2))) * np.exp(2j * np.pi * rng.random((3, nant, 2)))
    tab = gain_table(times, g)
    a1, a2, t = baselines(nant, times)
    truth = random_vis(rng, t.size, 3, len(corr))
    ti = np.searchsorted(times, t)
    data = corrupt(truth, a1, a2, g[ti], corr)
    flag = np.zeros(data.shape, bool)
    w = np.ones(data.shape)
    cal, fl, wo = apply_gains(data, flag, w, t, a1, a2, corr, tab, field_id=0, spw_id=0,
                              interp=interp)
    np.testing.assert_allclose(cal, truth, rtol=1e-12, atol=1e-12)
    assert not fl.any() and np.array_equal(wo, w)


def test_t_table_applies_one_gain_to_both_hands():
    rng = np.random.default_rng(2)
    nant, times = 5, T0 + np.array([0.0])
    g = (1 + rng.random((1, nant, 1))) * np.exp(2j * np.pi * rng.random((1, nant, 1)))
    tab = gain_table(times, g, vis_cal="T Jones")
    a1, a2, t = baselines(nant, times)
    corr = ("XX", "XY", "YX", "YY")
    truth = random_vis(rng, t.size, 2, 4)
    data = corrupt(truth, a1, a2, g[np.zeros(t.size, int)], corr)
    cal, fl, _ = apply_gains(data, np.zeros(data.shape, bool), np.ones(data.shape), t, a1, a2,
                             corr, tab, field_id=0, spw_id=0)
    np.testing.assert_allclose(cal, truth, atol=1e-12)
    assert not fl.any()


def test_linear_interpolates_amplitude_and_phase_separately():
    # antenna 1: amp 1 -> 3 and phase 0 -> 90 deg between t=0 and t=10; antenna 0 fixed at 1
    times = T0 + np.array([0.0, 10.0])
    g = np.ones((2, 2, 2), complex)
    g[1, 1, :] = 3.0 * np.exp(1j * np.pi / 2)
    tab = gain_table(times, g)
    t = T0 + np.array([2.5, 0.0, 10.0, -5.0, 20.0])
    a1, a2 = np.zeros(5, int), np.ones(5, int)
    vis = np.ones((5, 1, 1), complex)
    cal, fl, _ = apply_gains(vis, np.zeros(vis.shape, bool), np.ones(vis.shape), t, a1, a2,
                             ("XX",), tab, field_id=0, spw_id=0, interp="linear")
    g1 = np.array([1.5 * np.exp(1j * np.pi / 8), 1.0, 3j, 1.0, 3j])  # 22.5 deg at t=2.5
    np.testing.assert_allclose(cal[:, 0, 0], 1.0 / np.conj(g1), atol=1e-12)
    assert not fl.any()
    near, _, _ = apply_gains(vis, np.zeros(vis.shape, bool), np.ones(vis.shape), t, a1, a2,
                             ("XX",), tab, field_id=0, spw_id=0, interp="nearest")
    np.testing.assert_allclose(near[:, 0, 0], 1.0 / np.conj([1.0, 1.0, 3j, 1.0, 3j]), atol=1e-12)


def test_linear_phase_is_unwrapped_between_neighbours():
    times = T0 + np.array([0.0, 10.0])
    g = np.ones((2, 2, 1), complex)
    g[0, 1, 0] = np.exp(1j * np.deg2rad(170.0))
    g[1, 1, 0] = np.exp(1j * np.deg2rad(-170.0))
    tab = gain_table(times, g, vis_cal="T Jones")
    vis = np.ones((1, 1, 1), complex)
    cal, _, _ = apply_gains(vis, np.zeros(vis.shape, bool), np.ones(vis.shape),
                            T0 + np.array([5.0]), np.array([0]), np.array([1]), ("XX",), tab,
                            field_id=0, spw_id=0)
    # the midpoint is 180 deg (the short way round), not 0 deg
    np.testing.assert_allclose(cal[0, 0, 0], 1.0 / np.conj(np.exp(1j * np.pi)), atol=1e-12)


def test_calflagstrict_flags_samples_needing_a_flagged_or_missing_solution():
    nant, times = 4, T0 + np.array([0.0, 10.0])
    g = np.full((2, nant, 2), 2.0 + 0j)
    flags = np.zeros(g.shape, bool)
    flags[1, 3, 1] = True  # antenna 3, Y, second solution
    tab = gain_table(times, g, flags)
    tab = tab.select(tab.antenna1 != 2)  # antenna 2 has no solutions at all
    t = T0 + np.array([0.0, 5.0, 10.0, 5.0, 5.0])
    a1 = np.array([0, 0, 1, 0, 1])
    a2 = np.array([3, 3, 3, 2, 3])
    corr = ("XX", "XY", "YX", "YY")
    vis = np.ones((5, 2, 4), complex)
    flag = np.zeros(vis.shape, bool)
    cal, fl, _ = apply_gains(vis, flag, np.ones(vis.shape), t, a1, a2, corr, tab,
                             field_id=0, spw_id=0, interp="linear")
    y_of_ant2 = np.array([False, True, False, True])  # corrs whose second antenna uses Y
    expect = np.zeros((5, 4), bool)
    expect[1] = y_of_ant2  # linear at t=5 needs the flagged neighbour
    expect[2] = y_of_ant2  # exactly at the flagged solution
    expect[3] = True  # antenna 2 missing
    expect[4] = y_of_ant2
    np.testing.assert_array_equal(fl[:, 0, :], expect)
    np.testing.assert_array_equal(fl[:, 1, :], expect)
    np.testing.assert_allclose(cal[fl], 1.0)  # flagged samples are left uncalibrated
    np.testing.assert_allclose(cal[~fl], 0.25)
    assert not flag.any()  # input untouched


def test_calwt_scales_weights_by_gain_amplitudes():
    times = T0 + np.array([0.0])
    g = np.array([[[2.0, 3.0], [0.5j, 4.0]]])  # (1 time, 2 antennas, 2 pols)
    tab = gain_table(times, g)
    corr = ("XX", "XY", "YX", "YY")
    vis = np.ones((1, 3, 4), complex)
    w = np.full((1, 3, 4), 2.0)
    _, _, wo = apply_gains(vis, np.zeros(vis.shape, bool), w, times, np.array([0]), np.array([1]),
                           corr, tab, field_id=0, spw_id=0, calwt=True)
    expected = 2.0 * np.array([2.0 ** 2 * 0.5 ** 2, 2.0 ** 2 * 4.0 ** 2,
                               3.0 ** 2 * 0.5 ** 2, 3.0 ** 2 * 4.0 ** 2])
    np.testing.assert_allclose(wo[0], np.broadcast_to(expected, (3, 4)))
    _, _, w2 = apply_gains(vis, np.zeros(vis.shape, bool), w[:, 0, :], times, np.array([0]),
                           np.array([1]), corr, tab, field_id=0, spw_id=0, calwt=True)
    np.testing.assert_allclose(w2[0], expected)  # (row, corr) weights work too


def test_spwmap_and_missing_spw():
    times = T0 + np.array([0.0])
    tab = gain_table(times, np.full((1, 2, 2), 2.0 + 0j), spw=0)
    vis = np.ones((1, 1, 2), complex)
    args = (vis, np.zeros(vis.shape, bool), np.ones(vis.shape), times, np.array([0]),
            np.array([1]), ("XX", "YY"), tab)
    cal, fl, _ = apply_gains(*args, field_id=0, spw_id=2, spwmap=[0, 0, 0])
    np.testing.assert_allclose(cal, 0.25)
    assert not fl.any()
    with pytest.warns(FlaggedDataWarning):
        cal, fl, _ = apply_gains(*args, field_id=0, spw_id=2)
    assert fl.all()
    np.testing.assert_allclose(cal, 1.0)


def test_field_without_solutions_falls_back_to_other_fields_of_the_spw():
    times = T0 + np.array([0.0, 100.0])
    g = np.array([np.full((2, 1), 2.0), np.full((2, 1), 4.0)], complex)
    tab = GainTable.concat([gain_table(times[:1], g[:1], field=1, vis_cal="T Jones"),
                            gain_table(times[1:], g[1:], field=3, vis_cal="T Jones")])
    vis = np.ones((2, 1, 1), complex)
    t = T0 + np.array([10.0, 95.0])
    a1, a2 = np.array([0, 0]), np.array([1, 1])
    cal, _, _ = apply_gains(vis, np.zeros(vis.shape, bool), np.ones(vis.shape), t, a1, a2,
                            ("XX",), tab, field_id=1, spw_id=0, interp="nearest")
    np.testing.assert_allclose(cal[:, 0, 0], [0.25, 0.25])  # field 1's own solution only
    with pytest.warns(FlaggedDataWarning):
        cal, _, _ = apply_gains(vis, np.zeros(vis.shape, bool), np.ones(vis.shape), t, a1, a2,
                                ("XX",), tab, field_id=0, spw_id=0, interp="nearest")
    np.testing.assert_allclose(cal[:, 0, 0], [0.25, 1 / 16])  # nearest of any field


def test_solve_then_apply_recovers_the_model():
    rng = np.random.default_rng(3)
    nant, times = 8, T0 + np.array([0.0, 10.0])
    g = (1 + 0.3 * rng.random((2, nant, 2))) * np.exp(2j * np.pi * rng.random((2, nant, 2)))
    a1, a2, t = baselines(nant, times)
    model = np.broadcast_to(np.array([1.0, 1.5 + 0.5j])[None, :, None], (t.size, 2, 2)).copy()
    ti = np.searchsorted(times, t)
    data = corrupt(model, a1, a2, g[ti], ("XX", "YY"))
    flag = np.zeros(data.shape, bool)
    w = np.ones(data.shape)
    tab = solve_gains(data, model, flag, w, t, np.full(t.size, 10.0), np.ones(t.size, int), a1, a2,
                      n_ant=nant, corr_types=("XX", "YY"), solint="int", calmode="ap",
                      refant=(3,), minsnr=0.0)
    cal, fl, _ = apply_gains(data, flag, w, t, a1, a2, ("XX", "YY"), tab, field_id=0, spw_id=0)
    np.testing.assert_allclose(cal, model, atol=1e-9)
    assert not fl.any()
