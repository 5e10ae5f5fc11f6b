"""Reference-antenna ranking, modelled on the pipeline's ``hif_refant`` heuristic (spec §3.3).

The pipeline (``pipeline/hif/heuristics/findrefant.py``) adds two scores per antenna and sorts by
the total, highest first:

* geometry: the ITRF position in spherical form (longitude λ, geocentric latitude φ, radius r);
  λ is taken relative to the median longitude; planar x = λ·cos φ·r and y = φ·r, each minus its
  median; distance d = sqrt(x² + y²) from that median centre. Score = N·(1 − d / max d).
* flagging: per antenna the amount of unflagged data; score = N·(good / max good)
  (0 for every antenna when nothing is unflagged). Since PIPE-1805 the flagging score is computed
  per intent and the lowest score over intents is kept.

N is the number of antennas. Ties keep the antenna-table order (a stable sort).
Here the unflagged amount is 1 − flagged fraction, which equals the pipeline's count ratio when
every antenna has the same total amount of data (the usual case for one selection).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _geometry_score(positions: np.ndarray) -> np.ndarray:
    xyz = np.asarray(positions, dtype=np.float64)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError("positions must have shape (nant, 3)")
    n = xyz.shape[0]
    lon = np.arctan2(xyz[:, 1], xyz[:, 0])
    lat = np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1]))
    radius = np.linalg.norm(xyz, axis=1)
    lon = lon - np.median(lon)
    x = lon * np.cos(lat) * radius
    x -= np.median(x)
    y = lat * radius
    y -= np.median(y)
    dist = np.hypot(x, y)
    far = dist.max()
    if not far > 0:  # a single antenna, or all at the centre
        return np.full(n, float(n))
    return (1.0 - dist / far) * n


def _flagging_score(flagged_fraction: np.ndarray, n: int) -> np.ndarray:
    frac = np.asarray(flagged_fraction, dtype=np.float64)
    per_intent = np.atleast_2d(frac)
    if per_intent.shape[1] != n:
        raise ValueError("flagged_fraction must be (nant,) or (nintent, nant)")
    if np.any((per_intent < 0) | (per_intent > 1)):
        raise ValueError("flagged_fraction must lie in [0, 1]")
    good = 1.0 - per_intent
    best = good.max(axis=1, keepdims=True)
    scores = np.divide(good, best, out=np.zeros_like(good), where=best > 0) * n
    return scores.min(axis=0)


def refant_scores(positions: np.ndarray, flagged_fraction: np.ndarray) -> np.ndarray:
    """Total score per antenna (geometry + flagging), higher is better."""
    geo = _geometry_score(positions)
    return geo + _flagging_score(flagged_fraction, geo.size)


def rank_refants(antenna_names: Sequence[str], positions: np.ndarray,
                 flagged_fraction: np.ndarray) -> list[str]:
    """Antenna names ranked as reference antennas, best first.

    ``positions`` (nant, 3) ITRF metres; ``flagged_fraction`` (nant,) in [0, 1], or
    (nintent, nant) to combine per-intent flagging scores by their minimum (PIPE-1805).
    """
    names = list(antenna_names)
    score = refant_scores(positions, flagged_fraction)
    if score.size != len(names):
        raise ValueError("antenna_names and positions must have the same length")
    order = np.argsort(-score, kind="stable")
    return [names[i] for i in order]
