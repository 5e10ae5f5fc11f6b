"""Resolved reference calibrator heuristic (spec §4) against an independent brute-force version."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import jv

from fluxflow.errors import ResolvedCalibratorWarning, SelectionError
from fluxflow.transfer import (
    ResolvedSelection,
    disk_diameter_from_ephemeris,
    filter_refants,
    resolve_selection,
    resolved_antennas,
)

R_EARTH = 6378137.0


def brute_force(names, lon, lat, radius, refant, theta, min_freq, peak_frac):
    """Spec §4 steps 3-10 written out with plain Python loops (pipeline style)."""
    xy = {n: (lo * math.cos(la) * r, la * r) for n, lo, la, r in zip(names, lon, lat, radius)}
    shortest = 10000.0
    for n in names:
        if n != refant:
            shortest = min(shortest, math.dist(xy[n], xy[refant]))
    lam = 3.0e8 / min_freq

    def vis(b):
        u = math.pi * b * theta / (206265.0 * lam)
        return jv(1, u) / u

    peak = vis(shortest)
    limit = 10000.0 + shortest
    for k in range(10000):
        if vis(shortest + k) < peak_frac * peak:
            limit = shortest + k
            break
    chosen = [n for n in names if math.dist(xy[n], xy[refant]) < limit]
    return chosen, limit, shortest


def line_layout(distances):
    """Antennas on the equator at the given east offsets (m) from the reference antenna."""
    lon = [d / R_EARTH for d in distances]
    return lon, [0.0] * len(distances), [R_EARTH] * len(distances)


NAMES = ["DV05", "DA41", "DV02", "DA43", "PM01", "DV11"]  # refant DA41 is not first
DIST = [40.0, 0.0, 15.0, 80.0, 200.0, 900.0]


def test_hand_layout_selects_the_near_antennas_in_table_order():
    lon, lat, rad = line_layout(DIST)
    # lambda = 3 mm, theta = 10": V(B) = J1(u)/u with u = pi*B*theta/lambda; B_short = 15 m;
    # the visibility drops below 0.2*V(15 m) between 61 and 62 m (checked below), so B_lim = 62 m
    sel = resolved_antennas(NAMES, lon, lat, rad, "DA41", 10.0, 100e9, 0.2)
    chosen, limit, shortest = brute_force(NAMES, lon, lat, rad, "DA41", 10.0, 100e9, 0.2)
    assert sel.b_short == pytest.approx(15.0, abs=1e-6) and shortest == pytest.approx(15.0, abs=1e-6)
    assert sel.b_lim == pytest.approx(limit, abs=1e-9)
    u = lambda b: math.pi * b * 10.0 / 206265.0 / 3e-3  # noqa: E731
    v = lambda b: jv(1, u(b)) / u(b)  # noqa: E731
    assert v(sel.b_lim) < 0.2 * v(15.0) <= v(sel.b_lim - 1.0)
    assert 61 < sel.b_lim < 63
    assert sel.antennas == ["DV05", "DA41", "DV02"] == chosen
    assert sel.antenna_string == "DV05,DA41,DV02&"
    assert sel.uvrange == "<%.3fm" % limit


def test_random_alma_like_layout_matches_brute_force():
    rng = np.random.default_rng(2)
    n = 25
    lat0, lon0 = math.radians(-23.023), math.radians(-67.755)
    east = rng.uniform(-300, 300, n)
    north = rng.uniform(-300, 300, n)
    rad = R_EARTH + rng.uniform(5000, 5100, n)
    lat = lat0 + north / rad
    lon = lon0 + east / (rad * math.cos(lat0))
    names = [f"A{i:02d}" for i in range(n)]
    sizes = []
    for theta, freq in [(2.0, 100e9), (1.0, 230e9), (0.3, 90e9), (10.0, 90e9)]:
        expect, limit, shortest = brute_force(names, lon, lat, rad, "A07", theta, freq, 0.2)
        sizes.append(len(expect))
        if len(expect) < 3:
            with pytest.warns(ResolvedCalibratorWarning):
                sel = resolved_antennas(names, lon, lat, rad, "A07", theta, freq, 0.2)
            assert sel.antennas == [] and sel.uvrange == ""
        else:
            sel = resolved_antennas(names, lon, lat, rad, "A07", theta, freq, 0.2)
            assert sel.antennas == expect
            assert sel.uvrange == "<%.3fm" % limit
        assert sel.b_short == pytest.approx(shortest, rel=1e-12)
        assert sel.b_lim == pytest.approx(limit, rel=1e-12)
    assert min(sizes) < 3 and any(3 <= k < n for k in sizes) and max(sizes) == n  # all branches


def test_fewer_than_three_antennas_fall_back_to_all_without_uv_limit():
    lon, lat, rad = line_layout(DIST)
    with pytest.warns(ResolvedCalibratorWarning, match="fewer than 3"):
        sel = resolved_antennas(NAMES, lon, lat, rad, "DA41", 30.0, 100e9, 0.2)
    assert sel.antennas == [] and sel.antenna_string == "" and sel.uvrange == ""
    assert 15 < sel.b_lim < 40


def test_unresolved_calibrator_gives_empty_selection():
    lon, lat, rad = line_layout(DIST)
    sel = resolved_antennas(NAMES, lon, lat, rad, "DA41", 0.0, 100e9, 0.2)
    assert (sel.antenna_string, sel.uvrange) == ("", "") and math.isnan(sel.b_lim)


def test_shortest_baseline_is_capped_at_10_km():
    lon, lat, rad = line_layout([0.0, 12000.0, 15000.0])
    with pytest.warns(ResolvedCalibratorWarning):
        sel = resolved_antennas(["R", "B", "C"], lon, lat, rad, "R", 0.1, 100e9, 0.2)
    assert sel.b_short == 10000.0


def test_no_limit_found_uses_b_short_plus_10_km():
    lon, lat, rad = line_layout([0.0, 5.0, 8.0, 3000.0])
    # a tiny disk: the visibility never drops to 20% within 10 km
    sel = resolved_antennas(["R", "B", "C", "D"], lon, lat, rad, "R", 1e-3, 100e9, 0.2)
    assert sel.b_lim == pytest.approx(10005.0)
    assert sel.antennas == ["R", "B", "C", "D"]


def test_unknown_refant_is_an_error():
    lon, lat, rad = line_layout(DIST)
    with pytest.raises(SelectionError, match="XX99"):
        resolved_antennas(NAMES, lon, lat, rad, "XX99", 10.0, 100e9)


def test_disk_diameter_from_ephemeris():
    au = 149597870.7
    # equatorial radii averaged; polar radius seen edge-on (beta = 0)
    theta = disk_diameter_from_ephemeris([25600.0, 25518.0, 24973.0], 19.5, 0.0)
    assert theta == pytest.approx(2 * 25559.0 / (19.5 * au) * 206264.8, rel=1e-12)
    # a prolate body seen pole-on: minor axis = 2 R_eq too, major = 2 R_eq -> same
    assert disk_diameter_from_ephemeris([1000.0, 1000.0, 1500.0], 1.0, math.pi / 2) == pytest.approx(
        2 * 1000.0 / au * 206264.8, rel=1e-12)
    # prolate seen edge-on: the polar axis is the larger
    assert disk_diameter_from_ephemeris([1000.0, 1000.0, 1500.0], 1.0, 0.0) == pytest.approx(
        2 * 1500.0 / au * 206264.8, rel=1e-12)
    with pytest.raises(ValueError):
        disk_diameter_from_ephemeris([1.0, 2.0], 1.0)


def test_task_post_processing():
    sel = ResolvedSelection(antennas=["A", "B", "C"], uvrange="<61.000m", b_lim=61.0, b_short=15.0)
    assert resolve_selection("automatic", sel, "", "", 10) == ("A,B,C&", "<61.000m")
    assert resolve_selection("automatic", sel, "", "", 3) == ("", "<61.000m")  # all antennas: keep uv limit
    assert resolve_selection("automatic", sel, "DA41", "", 2) == ("DA41", "<61.000m")
    assert resolve_selection("automatic", ResolvedSelection(), "DA41", "<5m", 10) == ("", "")
    assert resolve_selection("automatic", ("", ""), "DA41", "", 10) == ("", "")
    assert resolve_selection("manual", sel, "DA41,DA42", "<100m", 10) == ("DA41,DA42", "<100m")
    with pytest.raises(SelectionError):
        resolve_selection("auto", sel, "", "", 10)


def test_filter_refants_keeps_rank_order():
    assert filter_refants("DV02,DA41,PM01,DV05", "DV05,DA41,DV02&") == ["DV02", "DA41", "DV05"]
    assert filter_refants(["DV02", "DA41"], "") == ["DV02", "DA41"]
    assert filter_refants(["PM01"], "DA41,DV02&") == []
