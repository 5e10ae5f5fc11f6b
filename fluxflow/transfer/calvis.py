"""Calibrated-visibility flux ("vector-averaged calibrated visibility amplitude"), spec §8.

The expensive part, :func:`calvis_partials`, runs where the visibilities are read: it
channel-averages phase-calibrated data and reduces them to a few sums per (scan, baseline) group
and correlation. :func:`calvis_flux` then applies the amplitude calibration (the fluxscaled
amplitude table, ``calwt=True``) to those sums and evaluates §8 steps 5–6 exactly as if every row
had been calibrated first. :func:`calvis_flux_direct` is the plain per-row form of §8, the
reference the tests compare against.

How the sums transform. A row of baseline (i, j) with channel-averaged visibility V̄ and weight
w, calibrated by real amplitude gains a_i, a_j and then multiplied by ``scale`` = s (the fluxscale
factor; the amplitude table scaled by 1/sqrt(s) gives exactly this), becomes

    V_cal = s·V̄ / f,   w_cal = w·f² / s²,   with f = a_i·a_j  (constant within a group).

Hence, per group, Σ w_cal·V_cal = (f/s)·Σ w·V̄,  Σ w_cal = (f²/s²)·Σ w,
Σ w_cal·|V_cal| = (f/s)·Σ w·|V̄|,  Σ w_cal·|V_cal|² = Σ w·|V̄|², and, for any m,

    Σ w_cal·(|V_cal| − m)² = Σ w·(|V̄| − m·f/s)² = M2 + Σw·(ā − m·f/s)²,

with ā = Σw|V̄|/Σw and M2 = Σ w·(|V̄| − ā)² the group's centred second moment. fluxflow uses the
last form (``m2``) because the raw moment expansion loses about SNR² in relative precision.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from fluxflow.arrays import unique_rows
from fluxflow.errors import UnsupportedCorrelationWarning

#: casacore Stokes enum codes of the correlations this module can meet.
_CORR_CODES = {1: "I", 5: "RR", 6: "RL", 7: "LR", 8: "LL", 9: "XX", 10: "XY", 11: "YX", 12: "YY"}

AmpFn = Callable[..., np.ndarray]


def _corr_names(corr_types: Sequence[str | int]) -> tuple[str, ...]:
    return tuple(_CORR_CODES.get(int(c), str(c)) if not isinstance(c, str) else c for c in corr_types)


def select_correlations(corr_types: Sequence[str | int]) -> list[int]:
    """Indices of the correlations used (spec §8 step 4): 1–2 → all; 4 linear → XX, YY; else none."""
    names = _corr_names(corr_types)
    if len(names) in (1, 2):
        return list(range(len(names)))
    if len(names) == 4 and set(names) == {"XX", "XY", "YX", "YY"}:
        return [names.index("XX"), names.index("YY")]
    warnings.warn(f"calibrated-visibility flux: correlations {','.join(names)} are not supported "
                  f"(only 1-2 correlations or linear XX,XY,YX,YY); no flux", UnsupportedCorrelationWarning,
                  stacklevel=3)
    return []


def channel_average(vis: np.ndarray, flag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, chan, corr) → (row, corr): unweighted mean of unflagged channels; flag if all flagged.

    Fully flagged row/correlations get value 0 (spec §8 step 3).
    """
    good = ~np.asarray(flag, dtype=bool)
    count = good.sum(axis=1)
    total = np.sum(np.where(good, vis, 0), axis=1, dtype=np.complex128)
    avg = np.where(count > 0, total / np.maximum(count, 1), 0)
    return avg, count == 0


@dataclass
class CalvisPartials:
    """Per (scan, antenna1, antenna2[, time]) group and used correlation, sums over kept rows.

    swv = Σ w·V̄ (complex), sw = Σ w, swa = Σ w·|V̄|, swa2 = Σ w·|V̄|², m2 = Σ w·(|V̄| − swa/sw)²,
    n = number of kept rows. Arrays are (ngrp,) or (ngrp, ncorr); ``time`` is None unless the
    partials were grouped by time as well (then the amplitude callable receives it).
    """

    corr_types: tuple[str, ...]
    scan: np.ndarray
    antenna1: np.ndarray
    antenna2: np.ndarray
    swv: np.ndarray
    sw: np.ndarray
    swa: np.ndarray
    swa2: np.ndarray
    m2: np.ndarray
    n: np.ndarray
    time: np.ndarray | None = None

    @property
    def ngroups(self) -> int:
        return int(self.scan.size)

    @classmethod
    def empty(cls, corr_types: Sequence[str] = ()) -> "CalvisPartials":
        nc = len(corr_types)
        z = np.zeros((0, nc))
        return cls(tuple(corr_types), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
                   np.zeros((0, nc), np.complex128), z, z.copy(), z.copy(), z.copy(),
                   np.zeros((0, nc), np.int64))


def calvis_partials(vis: np.ndarray, flag: np.ndarray, weight: np.ndarray, antenna1: np.ndarray,
                    antenna2: np.ndarray, scan: np.ndarray, corr_types: Sequence[str | int],
                    time: np.ndarray | None = None) -> CalvisPartials:
    """Reduce phase-calibrated visibilities to per-group sums (spec §8 steps 2–4).

    vis, flag: (row, chan, corr); weight: (row, corr) WEIGHT (not WEIGHT_SPECTRUM); antenna1,
    antenna2, scan (and optional time): (row,). Autocorrelations and non-finite averages are
    dropped. With `time`, groups are per integration as well (for time-interpolated gains).
    """
    vis = np.asarray(vis)
    flag = np.asarray(flag, dtype=bool)
    weight = np.asarray(weight, dtype=np.float64)
    a1 = np.asarray(antenna1, dtype=np.int64)
    a2 = np.asarray(antenna2, dtype=np.int64)
    sc = np.asarray(scan, dtype=np.int64)
    nrow = vis.shape[0]
    if vis.ndim != 3 or flag.shape != vis.shape or weight.shape != (nrow, vis.shape[2]):
        raise ValueError(f"calvis_partials: vis {vis.shape}, flag {flag.shape} and weight "
                         f"{weight.shape} must be (row, chan, corr), (row, chan, corr), (row, corr)")
    if not (a1.shape == a2.shape == sc.shape == (nrow,)):
        raise ValueError("calvis_partials: antenna1, antenna2 and scan must have one value per row")
    if len(corr_types) != vis.shape[2]:
        raise ValueError(f"calvis_partials: {len(corr_types)} correlation types for {vis.shape[2]} "
                         f"correlations")
    names = _corr_names(corr_types)
    idx = select_correlations(names)
    if not idx:
        return CalvisPartials.empty(())
    used = tuple(names[i] for i in idx)
    avg, avg_flag = channel_average(vis[:, :, idx], flag[:, :, idx])
    w = weight[:, idx]
    keep = ~avg_flag & np.isfinite(avg) & (a1 != a2)[:, None]
    rows = np.flatnonzero(keep.any(axis=1))
    if rows.size == 0:
        return CalvisPartials.empty(used)
    cols = [sc[rows], a1[rows], a2[rows]]
    t = None
    if time is not None:
        t = np.asarray(time, dtype=np.float64)
        if t.shape != (nrow,):
            raise ValueError("calvis_partials: time must have one value per row")
        key = np.stack([c.astype(np.float64) for c in cols] + [t[rows]], axis=1)
        uniq, inv = np.unique(key, axis=0, return_inverse=True)
    else:  # (scan, antenna1, antenna2) as one int64 key: a 1-D sort instead of a row sort
        uniq, inv = unique_rows(np.stack(cols, axis=1), return_inverse=True)
    inv = inv.ravel()
    ng = uniq.shape[0]
    nc = len(idx)
    out = {k: np.zeros((ng, nc)) for k in ("sw", "swa", "swa2", "m2")}
    swv = np.zeros((ng, nc), dtype=np.complex128)
    n = np.zeros((ng, nc), dtype=np.int64)
    for c in range(nc):
        k = keep[rows, c]
        g = inv[k]
        v = avg[rows[k], c]
        wk = w[rows[k], c]
        amp = np.abs(v)
        swv[:, c] = (np.bincount(g, wk * v.real, ng) + 1j * np.bincount(g, wk * v.imag, ng))
        out["sw"][:, c] = np.bincount(g, wk, ng)
        out["swa"][:, c] = np.bincount(g, wk * amp, ng)
        out["swa2"][:, c] = np.bincount(g, wk * amp * amp, ng)
        sw = out["sw"][:, c]
        abar = np.divide(out["swa"][:, c], sw, out=np.zeros(ng), where=sw > 0)
        out["m2"][:, c] = np.bincount(g, wk * (amp - abar[g]) ** 2, ng)
        n[:, c] = np.bincount(g, minlength=ng)
    return CalvisPartials(used, uniq[:, 0].astype(np.int64), uniq[:, 1].astype(np.int64),
                          uniq[:, 2].astype(np.int64), swv, out["sw"], out["swa"], out["swa2"],
                          out["m2"], n, time=uniq[:, 3].copy() if t is not None else None)


def _combine_stats(mean_c: list[float], var_c: list[float]) -> tuple[float, float]:
    """Spec §8 step 6: flux = mean of mean_c, σ = sqrt(mean of var_c); none → (0, 0)."""
    if not mean_c:
        return 0.0, 0.0
    return float(np.mean(mean_c)), float(np.sqrt(np.mean(var_c)))


def _k_factor(n_vis: int, ants: np.ndarray) -> float:
    """k = (n_vis + n_int·n_ant)/2 with n_int = ⌊n_vis/n_bl⌋, n_bl = n_ant(n_ant−1)/2 (spec §8)."""
    n_ant = int(np.unique(ants).size)
    n_bl = n_ant * (n_ant - 1) // 2
    n_int = n_vis // n_bl
    return (n_vis + n_int * n_ant) / 2.0


def calvis_flux(partials: list[CalvisPartials] | CalvisPartials, amp: AmpFn | None = None,
                scale: float = 1.0) -> tuple[float, float]:
    """Flux and σ of spec §8 steps 5–6 from partial sums, after amplitude calibration.

    `amp(scan, antenna)` (or `amp(scan, antenna, time)` for time-grouped partials) returns the
    real amplitude gain a > 0 of each group's antenna, shape (ngrp,) or (ngrp, ncorr); NaN, ≤ 0 or
    non-finite marks a missing/flagged solution and drops the group (calflagstrict). Each row is
    treated as calibrated with calwt=True and multiplied by `scale` (module docstring). Partials
    from several chunks may be passed as a list (a group may appear in several of them).
    """
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"calvis_flux: scale must be a positive number, got {scale}")
    parts = [partials] if isinstance(partials, CalvisPartials) else list(partials)
    parts = [p for p in parts if p.corr_types and p.ngroups > 0]
    if not parts:
        return 0.0, 0.0
    corr = parts[0].corr_types
    if any(p.corr_types != corr for p in parts):
        raise ValueError("calvis_flux: partials with different correlations cannot be combined")
    timed = [p.time is not None for p in parts]
    if any(timed) and not all(timed):
        raise ValueError("calvis_flux: cannot mix time-grouped and scan-grouped partials")
    cat = {k: np.concatenate([getattr(p, k) for p in parts])
           for k in ("scan", "antenna1", "antenna2", "swv", "sw", "swa", "m2", "n")}
    times = np.concatenate([p.time for p in parts]) if all(timed) else None
    ng, nc = cat["swv"].shape
    if amp is None:
        f = np.ones((ng, nc))
    else:
        args1 = (cat["scan"], cat["antenna1"]) + ((times,) if times is not None else ())
        args2 = (cat["scan"], cat["antenna2"]) + ((times,) if times is not None else ())
        g1 = np.asarray(amp(*args1), dtype=np.float64)
        g2 = np.asarray(amp(*args2), dtype=np.float64)
        f = np.broadcast_to((g1 * g2).reshape(ng, -1), (ng, nc))
        bad = ~(np.broadcast_to(np.reshape(g1 > 0, (ng, -1)), (ng, nc))
                & np.broadcast_to(np.reshape(g2 > 0, (ng, -1)), (ng, nc)) & np.isfinite(f))
        f = np.where(bad, np.nan, f)
    s = float(scale)
    means: list[float] = []
    variances: list[float] = []
    for c in range(nc):
        keep = (cat["n"][:, c] > 0) & np.isfinite(f[:, c])
        if not np.any(keep):
            continue
        fk = f[keep, c] / s  # calibrated = V̄ / fk, weight = w·fk²
        sw = cat["sw"][keep, c]
        sum_w = float(np.sum(fk * fk * sw))
        if not sum_w > 0:
            continue
        mean = abs(np.sum(fk * cat["swv"][keep, c]) / sum_w)
        abar = np.divide(cat["swa"][keep, c], sw, out=np.zeros(sw.size), where=sw > 0)
        resid = np.sum(cat["m2"][keep, c]) + np.sum(sw * (abar - mean * fk) ** 2)
        n_vis = int(np.sum(cat["n"][keep, c]))
        k = _k_factor(n_vis, np.concatenate([cat["antenna1"][keep], cat["antenna2"][keep]]))
        means.append(float(mean))
        variances.append(float(resid / sum_w / k))
    return _combine_stats(means, variances)


def calvis_flux_direct(vis_cal: np.ndarray, flag: np.ndarray, weight: np.ndarray, antenna1: np.ndarray,
                       antenna2: np.ndarray, corr_types: Sequence[str | int]) -> tuple[float, float]:
    """Spec §8 on fully calibrated rows, one row at a time (the reference implementation).

    vis_cal, flag: (row, chan, corr) CORRECTED_DATA and FLAG; weight: (row, corr) WEIGHT.
    """
    vis_cal = np.asarray(vis_cal)
    flag = np.asarray(flag, dtype=bool)
    weight = np.asarray(weight, dtype=np.float64)
    a1 = np.asarray(antenna1, dtype=np.int64)
    a2 = np.asarray(antenna2, dtype=np.int64)
    idx = select_correlations(_corr_names(corr_types))
    means: list[float] = []
    variances: list[float] = []
    avg, avg_flag = channel_average(vis_cal, flag)
    for c in idx:
        keep = ~avg_flag[:, c] & np.isfinite(avg[:, c]) & (a1 != a2)
        if not np.any(keep):
            continue
        v = avg[keep, c]
        w = weight[keep, c]
        sum_w = float(np.sum(w))
        if not sum_w > 0:
            continue
        mean = abs(np.sum(w * v) / sum_w)
        var = np.sum(w * (np.abs(v) - mean) ** 2) / sum_w
        k = _k_factor(int(v.size), np.concatenate([a1[keep], a2[keep]]))
        means.append(float(mean))
        variances.append(float(var / k))
    return _combine_stats(means, variances)
