"""Tests of fluxflow.solve.refant on a hand-built layout."""

from __future__ import annotations

import numpy as np
import pytest

from fluxflow.solve.refant import rank_refants, refant_scores

LON0, LAT0, R0 = np.deg2rad(-67.755), np.deg2rad(-23.023), 6_379_000.0


def itrf(east_north: list[tuple[float, float]]) -> np.ndarray:
    """ITRF positions of antennas at (east, north) metres from a centre, on a sphere."""
    out = []
    for e, n in east_north:
        lat = LAT0 + n / R0
        lon = LON0 + e / (R0 * np.cos(LAT0))
        out.append(R0 * np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon),
                                  np.sin(lat)]))
    return np.array(out)


def test_hand_built_layout_ranking():
    names = ["A", "B", "C", "D", "E"]
    pos = itrf([(0, 0), (10, 0), (0, -30), (100, 100), (-500, 20)])
    flagged = np.array([0.5, 0.0, 0.0, 0.0, 0.0])
    # median centre is (0, 0); distances 0, 10, 30, 141.4, 500.4 m; N = 5
    d = np.array([0.0, 10.0, 30.0, np.hypot(100, 100), np.hypot(500, 20)])
    geometry = 5 * (1 - d / d.max())
    flagging = 5 * np.array([0.5, 1, 1, 1, 1])
    np.testing.assert_allclose(refant_scores(pos, flagged), geometry + flagging, rtol=1e-4)
    # totals: A 7.5, B 9.90, C 9.70, D 8.59, E 5.0
    assert rank_refants(names, pos, flagged) == ["B", "C", "D", "A", "E"]


def test_flagging_can_outweigh_geometry():
    names = ["A", "B", "C"]
    pos = itrf([(0, 0), (40, 0), (-400, 0)])
    assert rank_refants(names, pos, [0.0, 0.0, 0.0]) == ["A", "B", "C"]
    assert rank_refants(names, pos, [0.9, 0.0, 0.0]) == ["B", "A", "C"]


def test_ties_keep_table_order_and_per_intent_minimum():
    names = ["P", "Q", "R"]
    pos = itrf([(50, 0), (-50, 0), (0, 0)])
    # P and Q are symmetric about the centre and equally flagged: they keep their order
    assert rank_refants(names, pos, [0.1, 0.1, 0.1]) == ["R", "P", "Q"]
    # per intent (rows): P is clean for one intent but 80 % flagged for the other -> its lowest
    # flagging score counts, so Q overtakes it
    per_intent = np.array([[0.0, 0.1, 0.1], [0.8, 0.1, 0.1]])
    assert rank_refants(names, pos, per_intent) == ["R", "Q", "P"]


def test_everything_flagged_gives_zero_flagging_score():
    pos = itrf([(0, 0), (10, 0), (-10, 0)])  # geometry scores 3, 0, 0
    np.testing.assert_allclose(refant_scores(pos, [1.0, 1.0, 1.0]), [3.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(refant_scores(pos, [1.0, 0.5, 1.0]), [3.0, 3.0, 0.0], atol=1e-6)


def test_input_validation():
    with pytest.raises(ValueError):
        rank_refants(["A", "B"], itrf([(0, 0), (1, 0)]), [0.0, 1.5])
    with pytest.raises(ValueError):
        rank_refants(["A"], itrf([(0, 0), (1, 0)]), [0.0, 0.0])
