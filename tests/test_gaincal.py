"""Tests of fluxflow.solve.solint and fluxflow.solve.gaincal on synthetic point-source data."""

from __future__ import annotations

import time as _time
import warnings

import numpy as np
import pytest
from scipy.optimize import least_squares

import fluxflow.solve.gaincal as gaincal
from fluxflow.errors import ConvergenceWarning
from fluxflow.solve.gaincal import reference_phases, solve_gains, solve_gains_multi_spw
from fluxflow.solve.solint import parse_solint, solution_intervals

T0 = 5.0e9  # MJD seconds


# --------------------------------------------------------------------------------------------
# synthetic data


def make_data(gains, *, nchan=3, tstep=10.0, model=None, corr=("XX", "YY"), scans=None,
              noise=0.0, rng=None, weight=1.0):
    """Point-source visibilities V = g_i,p conj(g_j,q) M for every baseline and integration.

    ``gains`` is (ntime, nant, 2) (X/R and Y/L gain); ``model`` (nchan,) complex, default 2 Jy.
    Returns a dict of the arrays solve_gains takes.
    """
    ntime, nant, _ = gains.shape
    a1, a2 = np.triu_indices(nant, 1)
    nbl = a1.size
    ti = np.repeat(np.arange(ntime), nbl)
    A1, A2 = np.tile(a1, ntime), np.tile(a2, ntime)
    m = np.full(nchan, 2.0 + 0j) if model is None else np.asarray(model, complex)
    hands = [({"X": 0, "R": 0, "Y": 1, "L": 1}[c[0]], {"X": 0, "R": 0, "Y": 1, "L": 1}[c[1]])
             for c in corr]
    vis = np.empty((ti.size, nchan, len(corr)), complex)
    for k, (p, q) in enumerate(hands):
        vis[:, :, k] = (gains[ti, A1, p] * np.conj(gains[ti, A2, q]))[:, None] * m[None, :]
    if noise:
        vis = vis + noise / np.sqrt(2) * (rng.standard_normal(vis.shape)
                                          + 1j * rng.standard_normal(vis.shape))
    return dict(vis=vis, model=np.broadcast_to(m[None, :, None], vis.shape).copy(),
                flag=np.zeros(vis.shape, bool), weight=np.full(vis.shape, float(weight)),
                time=T0 + ti * tstep, interval=np.full(ti.size, tstep),
                scan=np.ones(ti.size, int) if scans is None else np.asarray(scans)[ti],
                antenna1=A1, antenna2=A2)


def random_gains(rng, ntime, nant, amp_scatter=0.3):
    amp = 1 + amp_scatter * rng.uniform(-1, 1, (ntime, nant, 2))
    return amp * np.exp(1j * rng.uniform(-np.pi, np.pi, (ntime, nant, 2)))


def referenced(g, ref):
    """Gains with the reference antenna's phase removed (per time and polarisation)."""
    ph = g[:, ref:ref + 1, :] / np.abs(g[:, ref:ref + 1, :])
    return g * np.conj(ph)


def table_gains(tab, ntime, nant):
    return tab.cparam[:, 0, :].reshape(ntime, nant, -1)


# --------------------------------------------------------------------------------------------
# solint


@pytest.mark.parametrize("text, expected", [
    ("int", "int"), ("INT", "int"), ("inf", "inf"), ("Inf", "inf"), ("", "inf"),
    ("30s", 30.0), ("1.5min", 90.0), ("2h", 7200.0), ("10", 10.0), ("12.096s", 12.096),
    ("30 s", 30.0), ("100sec", 100.0), ("0s", "int"),
])
def test_parse_solint(text, expected):
    assert parse_solint(text) == expected


@pytest.mark.parametrize("text", ["2m", "abc", "-5s", "3parsec"])
def test_parse_solint_rejects(text):
    with pytest.raises(ValueError):
        parse_solint(text)


def test_parse_solint_minutes_hint():
    with pytest.raises(ValueError, match="'min', not 'm'"):
        parse_solint("2m")


def test_solution_intervals_numeric_solint():
    t = T0 + np.arange(0.0, 50.0, 10.0)
    ones = np.ones(t.size)
    assert solution_intervals(t, ones, ones, 20.0).tolist() == [0, 0, 1, 1, 2]
    assert solution_intervals(t, ones, ones, 0.0).tolist() == [0, 1, 2, 3, 4]  # 0 s = 'int'
    with pytest.raises(ValueError):
        solution_intervals(t, ones, ones, -5.0)


def test_solution_intervals_int():
    t = np.array([0.0, 0.0, 10.0, 10.0, 20.0, 20.0]) + T0
    lab = solution_intervals(t, np.full(6, 10.0), np.ones(6, int), "int")
    assert lab.tolist() == [0, 0, 1, 1, 2, 2]


def test_solution_intervals_inf_one_per_scan_in_time_order():
    # scan 7 is observed before scan 3: labels follow time, not scan number
    t = T0 + np.array([100.0, 110.0, 0.0, 10.0, 200.0, 210.0])
    scan = np.array([3, 3, 7, 7, 9, 9])
    lab = solution_intervals(t, np.full(6, 10.0), scan, "inf")
    assert lab.tolist() == [1, 1, 0, 0, 2, 2]


def test_solution_intervals_seconds_grid_restarts_each_scan():
    # scan 1: 0..110 s every 10 s -> 30 s grid from the scan start: 3 integrations per interval
    # scan 2: starts at 125 s -> new grid: {125,135,145}, {155}
    t1 = np.arange(0.0, 120.0, 10.0)
    t2 = np.array([125.0, 135.0, 145.0, 155.0])
    t = T0 + np.concatenate([t1, t2])
    scan = np.r_[np.ones(t1.size, int), np.full(t2.size, 2)]
    lab = solution_intervals(t, np.full(t.size, 10.0), scan, "30s")
    assert lab.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5]


def test_solution_intervals_grid_is_not_drifting():
    # 10 s sampling, 25 s solint: CASA's fixed grid gives {0,10,20}, {30,40}, {50,60,70}
    t = T0 + np.arange(0.0, 80.0, 10.0)
    lab = solution_intervals(t, np.full(t.size, 10.0), np.ones(t.size, int), 25.0)
    assert lab.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]


# --------------------------------------------------------------------------------------------
# noise-free recovery


def test_g_ap_recovers_gains_with_flags_swapped_rows_and_channel_model():
    rng = np.random.default_rng(1)
    nant, ntime = 15, 3
    g = random_gains(rng, ntime, nant)
    model = np.array([1.5 + 0.2j, 2.0, 2.5 - 0.4j, 3.0 + 1.0j])
    d = make_data(g, nchan=4, model=model)
    # random flags (10 %), some rows given as (a2, a1) with conjugated data
    d["flag"] = rng.random(d["flag"].shape) < 0.1
    d["vis"][d["flag"]] = 1e6  # flagged garbage must not matter
    swap = rng.random(d["antenna1"].size) < 0.3
    a1_swapped = d["antenna1"][swap].copy()
    d["antenna1"][swap] = d["antenna2"][swap]
    d["antenna2"][swap] = a1_swapped
    d["vis"][swap] = np.conj(d["vis"][swap])
    d["model"][swap] = np.conj(d["model"][swap])
    tab = solve_gains(**d, n_ant=nant, corr_types=("XX", "YY"), solint="int", gaintype="G",
                      calmode="ap", refant=(4,), minsnr=0.0)
    assert tab.vis_cal == "G Jones" and tab.nrow == ntime * nant and tab.npar == 2
    assert not tab.flag.any()
    np.testing.assert_allclose(table_gains(tab, ntime, nant), referenced(g, 4), rtol=0, atol=1e-9)
    assert np.all(tab.antenna2 == 4)
    np.testing.assert_array_equal(tab.antenna1, np.tile(np.arange(nant), ntime))
    np.testing.assert_allclose(np.unique(tab.time), T0 + 10.0 * np.arange(ntime))


def test_p_mode_unit_amplitude_and_a_mode_zero_phase():
    rng = np.random.default_rng(2)
    nant = 12
    g = random_gains(rng, 1, nant)
    d = make_data(g)
    tp = solve_gains(**d, n_ant=nant, corr_types=("XX", "YY"), solint="inf", calmode="p",
                     refant=(0,), minsnr=0.0)
    ta = solve_gains(**d, n_ant=nant, corr_types=("XX", "YY"), solint="inf", calmode="a",
                     refant=(0,), minsnr=0.0)
    ref = referenced(g, 0)
    np.testing.assert_allclose(table_gains(tp, 1, nant), ref / np.abs(ref), atol=1e-9)
    np.testing.assert_allclose(table_gains(ta, 1, nant), np.abs(g), atol=1e-9)
    assert np.all(table_gains(ta, 1, nant).imag == 0)


def test_t_solves_the_weighted_polarisation_average():
    # XX gains a*u, YY gains b*u: the weighted mean visibility is (wx a² + wy b²)/(wx+wy) u_i u_j*,
    # so the T gain is sqrt((wx a² + wy b²)/(wx+wy)) * u.
    rng = np.random.default_rng(3)
    nant, a, b, wx, wy = 10, 1.3, 0.7, 1.0, 3.0
    u = random_gains(rng, 1, nant)[:, :, :1]
    g = np.concatenate([a * u, b * u], axis=2)
    d = make_data(g)
    d["weight"][:, :, 0], d["weight"][:, :, 1] = wx, wy
    tt = solve_gains(**d, n_ant=nant, corr_types=("XX", "YY"), solint="inf", gaintype="T",
                     calmode="ap", refant=(2,), minsnr=0.0)
    assert tt.vis_cal == "T Jones" and tt.npar == 1
    expected = np.sqrt((wx * a ** 2 + wy * b ** 2) / (wx + wy)) * referenced(u, 2)
    np.testing.assert_allclose(table_gains(tt, 1, nant), expected, atol=1e-9)
    tg = solve_gains(**d, n_ant=nant, corr_types=("XX", "YY"), solint="inf", gaintype="G",
                     calmode="ap", refant=(2,), minsnr=0.0)
    np.testing.assert_allclose(table_gains(tg, 1, nant),
                               np.concatenate([a * referenced(u, 2), b * referenced(u, 2)], 2),
                               atol=1e-9)


def test_cross_hands_are_ignored_and_circular_feeds_work():
    rng = np.random.default_rng(4)
    nant = 8
    g = random_gains(rng, 1, nant)
    d = make_data(g, corr=("RR", "RL", "LR", "LL"))
    d["vis"][:, :, 1:3] = 50.0  # nonsense cross hands
    tab = solve_gains(**d, n_ant=nant, corr_types=("RR", "RL", "LR", "LL"), solint="inf",
                      calmode="ap", refant=(1,), minsnr=0.0, minblperant=4)
    np.testing.assert_allclose(table_gains(tab, 1, nant), referenced(g, 1), atol=1e-9)


def test_zero_model_samples_are_flagged():
    rng = np.random.default_rng(5)
    nant = 8
    g = random_gains(rng, 1, nant)
    d = make_data(g)
    on_ant5 = (d["antenna1"] == 5) | (d["antenna2"] == 5)
    d["model"][on_ant5] = 0.0  # no usable data for antenna 5
    d["vis"][on_ant5] = 1e3
    tab = solve_gains(**d, n_ant=nant, corr_types=("XX", "YY"), solint="inf", calmode="ap",
                      refant=(0,), minsnr=0.0)
    got = table_gains(tab, 1, nant)
    assert tab.flag[5].all() and np.all(got[0, 5] == 1.0)
    others = np.arange(nant) != 5
    np.testing.assert_allclose(got[0, others], referenced(g, 0)[0, others], atol=1e-9)


def test_spw_chan_mask_selects_channels():
    rng = np.random.default_rng(6)
    nant = 8
    g = random_gains(rng, 1, nant)
    d = make_data(g, nchan=4)
    d["vis"][:, 3, :] *= 5.0  # corrupt the last channel only
    mask = np.array([True, True, True, False])
    tab = solve_gains(**d, n_ant=nant, corr_types=("XX", "YY"), solint="inf", calmode="ap",
                      refant=(0,), minsnr=0.0, spw_chan_mask=mask)
    np.testing.assert_allclose(table_gains(tab, 1, nant), referenced(g, 0), atol=1e-9)


# --------------------------------------------------------------------------------------------
# minblperant, empty intervals, labels


def test_minblperant_drops_antenna_with_one_baseline():
    rng = np.random.default_rng(7)
    nant = 10
    g = random_gains(rng, 1, nant)
    d = make_data(g)
    bad = ((d["antenna1"] == 7) | (d["antenna2"] == 7)) & (d["antenna1"] + d["antenna2"] != 7)
    d["flag"][bad] = True  # antenna 7 keeps only its baseline to antenna 0
    tab = solve_gains(**d, n_ant=nant, corr_types=("XX", "YY"), solint="inf", calmode="ap",
                      refant=(0,), minblperant=4, minsnr=0.0)
    got = table_gains(tab, 1, nant)
    assert tab.flag[7].all() and np.all(got[0, 7] == 1.0) and np.all(tab.snr[7] == 0)
    keep = np.arange(nant) != 7
    assert not tab.flag[keep].any()
    np.testing.assert_allclose(got[0, keep], referenced(g, 0)[0, keep], atol=1e-9)


def test_minblperant_recounts_after_each_drop():
    # antenna 9: baselines to 0, 1, 8 (3 < 4) -> dropped; antenna 8 then has 0, 1, 2 left (its
    # 4th baseline was to 9) -> dropped in the recount; everyone else is complete.
    rng = np.random.default_rng(8)
    nant = 10
    g = random_gains(rng, 1, nant)
    d = make_data(g)
    a1, a2 = d["antenna1"], d["antenna2"]
    allowed = {9: {0, 1, 8}, 8: {0, 1, 2, 9}}
    keep_row = np.ones(a1.size, bool)
    for ant, partners in allowed.items():
        mine = (a1 == ant) | (a2 == ant)
        other = np.where(a1 == ant, a2, a1)
        keep_row &= ~mine | np.isin(other, list(partners))
    d["flag"][~keep_row] = True
    tab = solve_gains(**d, n_ant=nant, corr_types=("XX", "YY"), solint="inf", calmode="ap",
                      refant=(0,), minblperant=4, minsnr=0.0)
    assert tab.flag[8].all() and tab.flag[9].all()
    assert not tab.flag[:8].any()
    np.testing.assert_allclose(table_gains(tab, 1, nant)[0, :8], referenced(g, 0)[0, :8], atol=1e-9)


def test_fully_flagged_interval_writes_no_rows_and_labels_are_means():
    rng = np.random.default_rng(9)
    nant, ntime = 6, 6
    g = np.repeat(random_gains(rng, 1, nant), ntime, axis=0)
    d = make_data(g, scans=[1, 1, 1, 2, 2, 2])
    d["flag"][d["time"] == T0 + 40.0] = True  # one integration of scan 2 flagged
    d["flag"][d["scan"] == 1] = True  # all of scan 1 flagged
    tab = solve_gains(**d, n_ant=nant, corr_types=("XX", "YY"), solint="inf", calmode="ap",
                      refant=(0,), minblperant=2, minsnr=0.0)
    assert tab.nrow == nant  # only scan 2
    assert np.all(tab.scan == 2)
    # mean time of the rows with data (30 and 50 s), span of all rows of the scan (25..55 s)
    np.testing.assert_allclose(tab.time, T0 + 40.0)
    np.testing.assert_allclose(tab.interval, 30.0)


def test_solint_seconds_solutions():
    rng = np.random.default_rng(10)
    nant, ntime = 6, 6
    g = random_gains(rng, ntime, nant, amp_scatter=0.0)
    g[:] = g[0]  # constant gains
    d = make_data(g)
    tab = solve_gains(**d, n_ant=nant, corr_types=("XX", "YY"), solint="30s", calmode="ap",
                      refant=(0,), minblperant=2, minsnr=0.0)
    np.testing.assert_allclose(np.unique(tab.time), T0 + np.array([10.0, 40.0]))
    np.testing.assert_allclose(tab.cparam[:, 0, :].reshape(2, nant, 2),
                               referenced(g[:2], 0), atol=1e-9)


# --------------------------------------------------------------------------------------------
# parameter errors, SNR, minsnr


def casa_errors(vis, w, a1, a2, nant, gains):
    """CASA's VisCalSolver2 error estimate for one polarisation, written out loop by loop."""
    chi2, n_wt = 0.0, 0
    hess = np.zeros(nant)
    for v, wt, i, j in zip(vis, w, a1, a2):
        if wt <= 0:
            continue
        r = v - gains[i] * np.conj(gains[j])
        chi2 += wt * abs(r) ** 2
        n_wt += 1
        hess[i] += wt * abs(gains[j]) ** 2
        hess[j] += wt * abs(gains[i]) ** 2
    return chi2, n_wt, hess


def lsq_gains(vis, w, a1, a2, nant, ref):
    """Least-squares gains with scipy (independent of the StEFCal solver), ref imag fixed to 0."""
    def unpack(x):
        g = x[:nant] + 1j * np.insert(x[nant:], ref, 0.0)
        return g

    def fun(x):
        g = unpack(x)
        r = np.sqrt(w) * (vis - g[a1] * np.conj(g[a2]))
        return np.concatenate([r.real, r.imag])

    x0 = np.concatenate([np.ones(nant), np.zeros(nant - 1)])
    sol = least_squares(fun, x0, xtol=1e-15, ftol=1e-15, gtol=1e-15, method="lm")
    g = unpack(sol.x)
    return g * np.sign(g[ref].real)  # the cost is invariant under g -> -g


@pytest.mark.parametrize("calmode", ["ap", "p"])
def test_errors_and_snr_follow_casa_formula(calmode):
    rng = np.random.default_rng(11)
    nant = 5
    g = random_gains(rng, 1, nant)
    d = make_data(g, nchan=1, noise=0.2, rng=rng, model=[1.0])
    d["weight"] = rng.uniform(0.5, 2.0, d["weight"].shape)
    tab = solve_gains(**d, n_ant=nant, corr_types=("XX", "YY"), solint="inf", gaintype="G",
                      calmode=calmode, refant=(0,), minblperant=2, minsnr=0.0)
    chi2 = n_wt = 0.0
    per_pol = []
    for p in range(2):
        v, w = d["vis"][:, 0, p], d["weight"][:, 0, p]
        if calmode == "p":  # unit-modulus data, weight * amp²
            w, v = w * np.abs(v) ** 2, v / np.abs(v)
        gl = lsq_gains(v, w, d["antenna1"], d["antenna2"], nant, ref=0)
        c, n, h = casa_errors(v, w, d["antenna1"], d["antenna2"], nant, gl)
        chi2, n_wt = chi2 + c, n_wt + n
        per_pol.append((gl, h))
    k2 = chi2 / max(2 * (n_wt - 2 * nant), 1)
    for p, (gl, h) in enumerate(per_pol):
        err = np.sqrt(2 * k2 / h)
        np.testing.assert_allclose(tab.paramerr[:, 0, p], err, rtol=1e-7)
        np.testing.assert_allclose(tab.snr[:, 0, p], np.abs(gl) / err, rtol=1e-7)
        expect = gl if calmode == "ap" else gl / np.abs(gl)
        np.testing.assert_allclose(tab.cparam[:, 0, p], expect, atol=1e-7)


def test_snr_matches_scatter_over_noise_realisations():
    # Amplitude-only T solves: σ_g is the rms of the amplitude error. 'ap' G solves: σ_g is the
    # rms of the complex error, so the amplitude scatter is σ_g/√2.
    rng = np.random.default_rng(12)
    nant, nreal, noise = 12, 400, 0.3
    g0 = random_gains(rng, 1, nant, amp_scatter=0.2)
    g = np.repeat(g0, nreal, axis=0)
    for calmode, gaintype, scale in [("a", "T", 1.0), ("ap", "G", np.sqrt(2.0))]:
        gg = g if gaintype == "G" else np.repeat(g[:, :, :1], 2, axis=2)
        d = make_data(gg, nchan=1, noise=noise, rng=rng, model=[1.0])
        tab = solve_gains(**d, n_ant=nant, corr_types=("XX", "YY"), solint="int",
                          gaintype=gaintype, calmode=calmode, refant=(0,), minsnr=0.0)
        amp = np.abs(tab.cparam[:, 0, 0]).reshape(nreal, nant)
        err = tab.paramerr[:, 0, 0].reshape(nreal, nant)
        ratio = amp.std(axis=0) * scale / err.mean(axis=0)
        assert abs(ratio.mean() - 1.0) < 0.2, (calmode, ratio)
        snr = tab.snr[:, 0, 0].reshape(nreal, nant)
        np.testing.assert_allclose(snr, amp / err, rtol=1e-9)


def test_minsnr_flags_solutions_at_or_below_threshold():
    rng = np.random.default_rng(13)
    nant, ntime = 8, 20
    g = random_gains(rng, ntime, nant)
    g[:, 0, :] *= 8.0  # the refant stays well above the threshold, so no interval loses its refant
    d = make_data(g, nchan=1, noise=1.5, rng=rng, model=[1.0])
    free = solve_gains(**d, n_ant=nant, corr_types=("XX", "YY"), solint="int", calmode="ap",
                       refant=(0,), minsnr=0.0)
    threshold = float(np.median(free.snr))
    cut = solve_gains(**d, n_ant=nant, corr_types=("XX", "YY"), solint="int", calmode="ap",
                      refant=(0,), minsnr=threshold)
    np.testing.assert_array_equal(cut.snr, free.snr)
    np.testing.assert_array_equal(cut.flag, free.snr <= threshold)
    assert 0 < cut.flag.sum() < cut.flag.size


def test_unconverged_intervals_are_dropped_with_a_warning(monkeypatch):
    rng = np.random.default_rng(19)
    nant = 6
    d = make_data(random_gains(rng, 2, nant), nchan=1, noise=0.3, rng=rng)
    monkeypatch.setattr(gaincal, "MAX_ITER", 2)
    with pytest.warns(ConvergenceWarning, match="2 solution interval"):
        tab = solve_gains(**d, n_ant=nant, corr_types=("XX", "YY"), solint="int",
                          calmode="ap", refant=(0,), minsnr=0.0)
    assert tab.nrow == 0 and tab.npar == 2


# --------------------------------------------------------------------------------------------
# reference antenna


def test_flex_refant_holds_alternate_phase_and_strict_flags():
    rng = np.random.default_rng(14)
    nant, ntime = 7, 4
    g = np.repeat(random_gains(rng, 1, nant), ntime, axis=0)  # constant gains
    d = make_data(g)
    gone = (d["time"] == T0 + 10.0) & ((d["antenna1"] == 2) | (d["antenna2"] == 2))
    d["flag"][gone] = True  # refant 2 missing in the second interval
    tab = solve_gains(**d, n_ant=nant, corr_types=("XX", "YY"), solint="int", calmode="ap",
                      refant=(2,), minblperant=2, minsnr=0.0)
    got = table_gains(tab, ntime, nant)
    ant2 = tab.antenna2.reshape(ntime, nant)[:, 0]
    # alternate = next antenna in id order (no positions); a refant must be good in the previous
    # interval too, so CASA keeps the alternate one more interval before returning to antenna 2
    assert ant2.tolist() == [2, 0, 0, 2]
    flags = tab.flag.reshape(ntime, nant, 2)
    assert flags[1, 2].all() and flags.sum() == 2
    ok = np.arange(nant) != 2
    # the alternate keeps its previous phase, so the constant gains stay identical
    np.testing.assert_allclose(got[1, ok], referenced(g, 2)[1, ok], atol=1e-9)
    np.testing.assert_allclose(got[[0, 2, 3]], referenced(g, 2)[[0, 2, 3]], atol=1e-9)

    strict = solve_gains(**d, n_ant=nant, corr_types=("XX", "YY"), solint="int", calmode="ap",
                         refant=(2,), minblperant=2, minsnr=0.0, refantmode="strict")
    sflag = strict.flag.reshape(ntime, nant, 2)
    # strict: no alternate, the gap is flagged; the next interval connects to the last referenced
    # one (the first), where antenna 2 was good
    assert sflag[1].all() and not sflag[[0, 2, 3]].any()
    assert strict.antenna2.reshape(ntime, nant)[:, 0].tolist() == [2, -1, 2, 2]


def test_alternate_refant_is_nearest_antenna():
    rng = np.random.default_rng(15)
    nant = 6
    g = np.repeat(random_gains(rng, 1, nant), 2, axis=0)
    d = make_data(g)
    gone = (d["time"] == T0 + 10.0) & ((d["antenna1"] == 1) | (d["antenna2"] == 1))
    d["flag"][gone] = True
    pos = np.zeros((nant, 3))
    pos[:, 0] = [0.0, 100.0, 500.0, 900.0, 130.0, 50.0]  # antenna 4 is nearest to antenna 1
    tab = solve_gains(**d, n_ant=nant, corr_types=("XX", "YY"), solint="int", calmode="ap",
                      refant=(1,), minblperant=2, minsnr=0.0, antenna_positions=pos)
    assert tab.antenna2.reshape(2, nant)[:, 0].tolist() == [1, 4]


def test_reference_phases_on_a_table_is_idempotent_for_available_refant():
    rng = np.random.default_rng(16)
    nant = 6
    g = random_gains(rng, 2, nant)
    d = make_data(g)
    tab = solve_gains(**d, n_ant=nant, corr_types=("XX", "YY"), solint="int", calmode="ap",
                      refant=(3,), minblperant=2, minsnr=0.0)
    again = reference_phases(tab, (3,))
    np.testing.assert_allclose(again.cparam, tab.cparam, atol=1e-12)
    moved = reference_phases(tab, (5,))
    np.testing.assert_allclose(table_gains(moved, 2, nant), referenced(g, 5), atol=1e-9)
    assert np.all(moved.antenna2 == 5)


# --------------------------------------------------------------------------------------------
# combine='spw'


def test_multi_spw_solution_uses_all_spws_and_lowest_label():
    rng = np.random.default_rng(17)
    nant = 8
    g = random_gains(rng, 2, nant)
    d1 = make_data(g, nchan=3, model=[1.0, 1.1, 1.2])
    d2 = make_data(g, nchan=5, model=[2.0, 2.0, 2.1, 2.2, 2.3])
    # antenna 3 has no data in the first spw; the second spw alone determines it
    d1["flag"][(d1["antenna1"] == 3) | (d1["antenna2"] == 3)] = True
    args = {k: [d1[k], d2[k]] for k in d1}
    tab = solve_gains_multi_spw(**args, spw_ids=[19, 17], n_ant=nant, corr_types=("XX", "YY"),
                                solint="int", calmode="ap", refant=(0,), minsnr=0.0)
    assert np.all(tab.spw_id == 17) and tab.meta["combine"] == "spw"
    assert not tab.flag.any()
    np.testing.assert_allclose(table_gains(tab, 2, nant), referenced(g, 0), atol=1e-9)


# --------------------------------------------------------------------------------------------
# performance


def test_solve_is_fast_for_a_full_alma_array():
    rng = np.random.default_rng(18)
    nant, ntime = 43, 600
    g = random_gains(rng, ntime, nant, amp_scatter=0.1)
    d = make_data(g, nchan=1, noise=0.05, rng=rng, model=[1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        start = _time.perf_counter()
        tab = solve_gains(**d, n_ant=nant, corr_types=("XX", "YY"), solint="int", calmode="p",
                          refant=(0,))
        elapsed = _time.perf_counter() - start
    assert tab.nrow == nant * ntime
    assert elapsed < 4.0, elapsed
