"""Calibrated-visibility flux (spec §8): the partial-sum route equals the per-row definition."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fluxflow.errors import UnsupportedCorrelationWarning
from fluxflow.transfer import (
    CalvisPartials,
    calvis_flux,
    calvis_flux_direct,
    calvis_partials,
    channel_average,
    select_correlations,
)


def test_channel_average_uses_unflagged_channels_only():
    vis = np.array([[[1 + 1j], [3 + 1j], [np.nan + 0j]],
                    [[5 + 0j], [7 + 0j], [9 + 0j]]])  # (row 2, chan 3, corr 1)
    flag = np.array([[[False], [False], [True]], [[True], [True], [True]]])
    avg, aflag = channel_average(vis, flag)
    assert avg[0, 0] == 2 + 1j and not aflag[0, 0]
    assert avg[1, 0] == 0 and aflag[1, 0]


@pytest.mark.parametrize("corr, expected", [
    (["XX"], [0]), (["XX", "YY"], [0, 1]), (["RR", "LL"], [0, 1]),
    (["XX", "XY", "YX", "YY"], [0, 3]), ([9, 10, 11, 12], [0, 3]), (["YY", "XY", "YX", "XX"], [3, 0]),
])
def test_correlation_choice(corr, expected):
    assert select_correlations(corr) == expected


def test_circular_four_correlations_are_not_supported():
    with pytest.warns(UnsupportedCorrelationWarning):
        assert select_correlations(["RR", "RL", "LR", "LL"]) == []
    vis = np.ones((3, 2, 4), complex)
    with pytest.warns(UnsupportedCorrelationWarning):
        p = calvis_partials(vis, np.zeros(vis.shape, bool), np.ones((3, 4)), [0, 0, 1], [1, 2, 2], [1, 1, 1],
                            ["RR", "RL", "LR", "LL"])
    assert calvis_flux(p) == (0.0, 0.0)


def test_three_baseline_example_by_hand():
    # baselines 0-1, 0-2, 1-2 with V = 1, 1, 2 and weights 1, 1, 2, plus a flagged row and an
    # autocorrelation that must both be ignored.
    vis = np.array([1, 1, 2, 50, 7], complex).reshape(5, 1, 1) * np.ones((1, 2, 1))
    flag = np.zeros((5, 2, 1), bool)
    flag[3] = True
    weight = np.array([[1.0], [1.0], [2.0], [1.0], [1.0]])
    a1, a2 = np.array([0, 0, 1, 0, 2]), np.array([1, 2, 2, 1, 2])
    # mean = |(1+1+4)/4| = 1.5; var = [(0.25+0.25+2*0.25)/4]/k, k = (3 + 1*3)/2 = 3
    flux, sigma = calvis_flux_direct(vis, flag, weight, a1, a2, ["XX"])
    assert flux == pytest.approx(1.5, rel=1e-15)
    assert sigma == pytest.approx(math.sqrt(0.25 / 3), rel=1e-15)
    p = calvis_partials(vis, flag, weight, a1, a2, np.zeros(5, int), ["XX"])
    assert p.ngroups == 3
    assert calvis_flux(p) == pytest.approx((1.5, math.sqrt(0.25 / 3)), rel=1e-15)


def test_k_uses_integer_number_of_integrations():
    # 4 antennas (6 baselines), 8 visibilities: n_int = floor(8/6) = 1, k = (8 + 1*4)/2 = 6
    rng = np.random.default_rng(3)
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3), (0, 1), (2, 3)]
    a1, a2 = np.array(pairs).T
    vis = (2 + rng.normal(size=8) + 1j * rng.normal(size=8)).reshape(8, 1, 1)
    w = rng.uniform(0.5, 2, size=(8, 1))
    flux, sigma = calvis_flux_direct(vis, np.zeros(vis.shape, bool), w, a1, a2, ["I"])
    v = vis[:, 0, 0]
    m = abs(np.sum(w[:, 0] * v) / np.sum(w))
    var = np.sum(w[:, 0] * (np.abs(v) - m) ** 2) / np.sum(w) / 6.0
    assert flux == pytest.approx(m, rel=1e-14) and sigma == pytest.approx(math.sqrt(var), rel=1e-14)


def simulated(rng: np.random.Generator, n_ant: int = 6, n_scan: int = 3, n_int: int = 5, nchan: int = 8):
    rows = []
    for scan in range(1, n_scan + 1):
        for t in range(n_int):
            for i in range(n_ant):
                for j in range(i, n_ant):  # includes autocorrelations
                    rows.append((scan, 1000.0 * scan + 10.0 * t, i, j))
    scan, time, a1, a2 = (np.array(c) for c in zip(*rows))
    n = len(rows)
    vis = (1.7 * np.exp(0.3j) + 0.4 * (rng.normal(size=(n, nchan, 4)) + 1j * rng.normal(size=(n, nchan, 4))))
    flag = rng.uniform(size=vis.shape) < 0.1
    flag[rng.uniform(size=n) < 0.05] = True  # whole rows flagged
    vis[0, 0, 0] = np.nan  # flagged NaN must not matter
    flag[0, 0, 0] = True
    weight = rng.uniform(0.2, 3.0, size=(n, 4))
    return vis, flag, weight, a1, a2, scan, time


def calibrate(vis, flag, weight, a1, a2, gain1, gain2, scale):
    """Per-row applycal with calwt=True and calflagstrict, then multiplied by `scale`."""
    f = gain1 * gain2
    bad = ~(np.isfinite(f) & (gain1 > 0) & (gain2 > 0))
    fsafe = np.where(bad, 1.0, f)
    vis_cal = vis * scale / fsafe[:, None, None]
    w_cal = weight * (fsafe ** 2 / scale ** 2)[:, None]
    flag_cal = flag | bad[:, None, None]
    return vis_cal, flag_cal, w_cal


def test_partials_equal_direct_with_gains_scale_and_flags():
    rng = np.random.default_rng(42)
    vis, flag, weight, a1, a2, scan, time = simulated(rng)
    gains = rng.uniform(0.5, 2.0, size=(4, 6))  # (scan, antenna)
    gains[2, 4] = np.nan  # antenna 4 has no solution in scan 2: its baselines are dropped there
    fd = 2.3
    amp = lambda s, a: gains[s, a]  # noqa: E731
    corr = ["XX", "XY", "YX", "YY"]
    direct = calvis_flux_direct(*calibrate(vis, flag, weight, a1, a2, gains[scan, a1], gains[scan, a2], fd),
                                a1, a2, corr)
    p = calvis_partials(vis, flag, weight, a1, a2, scan, corr)
    assert p.corr_types == ("XX", "YY") and p.swv.shape[1] == 2
    via = calvis_flux(p, amp, scale=fd)
    np.testing.assert_allclose(via, direct, rtol=1e-12)
    assert direct[0] > 0 and direct[1] > 0
    # the partial sums are small: one group per (scan, baseline)
    assert p.ngroups == 3 * 15


def test_partials_from_chunks_combine_like_one_read():
    rng = np.random.default_rng(7)
    vis, flag, weight, a1, a2, scan, _ = simulated(rng)
    gains = rng.uniform(0.5, 2.0, size=(4, 6))
    amp = lambda s, a: gains[s, a]  # noqa: E731
    corr = ["XX", "XY", "YX", "YY"]
    whole = calvis_flux(calvis_partials(vis, flag, weight, a1, a2, scan, corr), amp, scale=0.8)
    cuts = [0, 37, 101, 250, vis.shape[0]]  # chunks split (scan, baseline) groups
    parts = [calvis_partials(vis[i:j], flag[i:j], weight[i:j], a1[i:j], a2[i:j], scan[i:j], corr)
             for i, j in zip(cuts[:-1], cuts[1:])]
    np.testing.assert_allclose(calvis_flux(parts, amp, scale=0.8), whole, rtol=1e-12)


def test_time_grouped_partials_follow_time_variable_gains():
    rng = np.random.default_rng(11)
    vis, flag, weight, a1, a2, scan, time = simulated(rng)
    amp = lambda s, a, t: 1.0 + 0.1 * a + 1e-4 * (t % 1000.0) * (a + 1)  # noqa: E731
    corr = ["XX", "YY", "XY", "YX"][:2]
    vis2, flag2, weight2 = vis[:, :, :2], flag[:, :, :2], weight[:, :2]
    direct = calvis_flux_direct(*calibrate(vis2, flag2, weight2, a1, a2, amp(scan, a1, time),
                                           amp(scan, a2, time), 1.7), a1, a2, corr)
    p = calvis_partials(vis2, flag2, weight2, a1, a2, scan, corr, time=time)
    usable = (a1 != a2) & ~np.all(flag2, axis=(1, 2))  # cross-correlation rows with some data
    assert p.time is not None and p.ngroups == int(usable.sum())  # one group per such row
    np.testing.assert_allclose(calvis_flux(p, amp, scale=1.7), direct, rtol=1e-12)


def test_per_correlation_gains_are_accepted():
    rng = np.random.default_rng(5)
    vis, flag, weight, a1, a2, scan, _ = simulated(rng)
    vis, flag, weight = vis[:, :, [0, 3]], flag[:, :, [0, 3]], weight[:, [0, 3]]
    g = rng.uniform(0.5, 2.0, size=(4, 6, 2))
    amp = lambda s, a: g[s, a]  # noqa: E731  (ngrp, ncorr)
    expected = []
    for c in range(2):
        vc, fc, wc = calibrate(vis[:, :, [c]], flag[:, :, [c]], weight[:, [c]], a1, a2,
                               g[scan, a1, c], g[scan, a2, c], 1.0)
        expected.append(calvis_flux_direct(vc, fc, wc, a1, a2, ["XX"]))
    flux = np.mean([e[0] for e in expected])
    sigma = math.sqrt(np.mean([e[1] ** 2 for e in expected]))
    got = calvis_flux(calvis_partials(vis, flag, weight, a1, a2, scan, ["XX", "YY"]), amp)
    np.testing.assert_allclose(got, (flux, sigma), rtol=1e-12)


def test_centred_moment_is_consistent_with_raw_moments():
    rng = np.random.default_rng(1)
    vis, flag, weight, a1, a2, scan, _ = simulated(rng)
    p = calvis_partials(vis, flag, weight, a1, a2, scan, ["XX", "XY", "YX", "YY"])
    ok = p.sw > 0
    np.testing.assert_allclose(p.m2[ok], (p.swa2 - p.swa ** 2 / p.sw)[ok], rtol=1e-9, atol=1e-12)
    assert p.swv.dtype == np.complex128 and p.n.dtype == np.int64


def test_nothing_usable_gives_zero():
    vis = np.ones((2, 3, 2), complex)
    flag = np.ones(vis.shape, bool)
    p = calvis_partials(vis, flag, np.ones((2, 2)), [0, 1], [1, 2], [1, 1], ["XX", "YY"])
    assert p.ngroups == 0 and calvis_flux(p) == (0.0, 0.0)
    assert calvis_flux_direct(vis, flag, np.ones((2, 2)), [0, 1], [1, 2], ["XX", "YY"]) == (0.0, 0.0)
    # all gains missing: nothing survives calflagstrict
    p2 = calvis_partials(vis, ~flag, np.ones((2, 2)), [0, 1], [1, 2], [1, 1], ["XX", "YY"])
    assert calvis_flux(p2, lambda s, a: np.full(s.shape, np.nan)) == (0.0, 0.0)
    assert calvis_flux([]) == (0.0, 0.0)


def test_mixing_correlation_setups_is_refused():
    vis = np.ones((1, 1, 2), complex)
    a = calvis_partials(vis, np.zeros(vis.shape, bool), np.ones((1, 2)), [0], [1], [1], ["XX", "YY"])
    b = calvis_partials(vis, np.zeros(vis.shape, bool), np.ones((1, 2)), [0], [1], [1], ["RR", "LL"])
    with pytest.raises(ValueError, match="different correlations"):
        calvis_flux([a, b])
    assert isinstance(CalvisPartials.empty(("XX",)), CalvisPartials)


def test_unique_int_rows_matches_numpy():
    from fluxflow.arrays import unique_rows

    _unique_int_rows = lambda b: unique_rows(b, return_inverse=True)  # noqa: E731

    rng = np.random.default_rng(4)
    for block in (rng.integers(0, 50, size=(500, 3)), rng.integers(-3, 4, size=(40, 3)),
                  np.zeros((0, 3), np.int64), np.array([[2**40, 1, 2], [0, 2**40, 1]])):
        u, inv = _unique_int_rows(block)
        u_ref, inv_ref = np.unique(block, axis=0, return_inverse=True)
        np.testing.assert_array_equal(u, u_ref)
        np.testing.assert_array_equal(inv.ravel(), inv_ref.ravel())
