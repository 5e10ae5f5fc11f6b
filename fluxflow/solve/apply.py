"""In-memory application of a G or T gain table to visibilities (spec §3.11, §9 step 1, §15).

Semantics follow CASA ``applycal`` with ``applymode='calflagstrict'`` as used by the pipeline:

* V_cal,pq = V_pq / (g_i,p · conj(g_j,q)) where p, q are the polarisations of the two antennas
  of the correlation (a T table has one gain for both);
* solutions are looked up per spw after ``spwmap`` (``spwmap[spw]`` = table spw; an spw beyond the
  end of the list maps to itself) and per field: the rows of ``field_id`` in the table
  (``gainfield='nearest'`` reduces to the same field when the field has solutions). If the table
  has no solution for that field in that spw, all fields' solutions of the spw are used, nearest
  in time (a simplification of CASA's "nearest on the sky"; the caller is warned);
* time interpolation per antenna: ``'nearest'`` or ``'linear'`` (amplitude and phase interpolated
  separately, the phase difference between the two neighbours wrapped to (−π, π]); a time outside
  the solution range, or a single solution, uses the nearest solution; a time equal to a solution
  time uses that solution alone;
* calflagstrict: a sample whose needed solution is flagged or missing (either antenna; either
  neighbour for linear interpolation) is flagged and left uncalibrated;
* ``calwt=True`` multiplies the weight by |g_i,p|²·|g_j,q|².
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from fluxflow.errors import FlaggedDataWarning
from fluxflow.gains import GainTable
from fluxflow.solve.gaincal import corr_hands


def _table_rows(table: GainTable, field_id: int, table_spw: int) -> np.ndarray:
    in_spw = table.spw_id == table_spw
    rows = np.flatnonzero(in_spw & (table.field_id == field_id))
    if rows.size == 0 and np.any(in_spw):
        warnings.warn(f"gain table has no solutions for field {field_id} in spw {table_spw}; "
                      "using the nearest solutions of any field", FlaggedDataWarning, stacklevel=3)
        rows = np.flatnonzero(in_spw)
    return rows


def _grid(table: GainTable, rows: np.ndarray, n_ant: int):
    """Solutions as dense (n_time, n_ant, npar) arrays; missing (time, antenna) cells flagged."""
    times, slot = np.unique(table.time[rows], return_inverse=True)
    npar = table.npar
    g = np.ones((times.size, n_ant, npar), dtype=np.complex128)
    bad = np.ones((times.size, n_ant, npar), dtype=bool)
    ant = table.antenna1[rows]
    inside = (ant >= 0) & (ant < n_ant)
    g[slot[inside], ant[inside]] = table.cparam[rows[inside], 0, :]
    bad[slot[inside], ant[inside]] = table.flag[rows[inside], 0, :]
    bad |= ~np.isfinite(g) | (g == 0)
    return times, g, bad


def _interpolate(t: np.ndarray, times: np.ndarray, g: np.ndarray, bad: np.ndarray,
                 ant: np.ndarray, interp: str):
    """Gain (row, npar) and flag of antenna ``ant[row]`` at time ``t[row]``."""
    n = times.size
    hi = np.clip(np.searchsorted(times, t, side="left"), 0, n - 1)
    lo = np.clip(hi - 1, 0, n - 1)
    exact = times[hi] == t
    if interp == "nearest" or n == 1:
        nearer_lo = np.abs(t - times[lo]) <= np.abs(times[hi] - t)
        idx = np.where(exact, hi, np.where(nearer_lo, lo, hi))
        return g[idx, ant], bad[idx, ant]
    # Linear between lo and hi; clamp to the nearest solution outside the range.
    before = t <= times[0]
    after = t >= times[-1]
    single = exact | before | after
    idx_single = np.where(exact, hi, np.where(before, 0, n - 1))
    span = times[hi] - times[lo]
    frac = np.divide(t - times[lo], span, out=np.zeros_like(t), where=span > 0)[:, None]
    g0, g1 = g[lo, ant], g[hi, ant]
    amp = (1 - frac) * np.abs(g0) + frac * np.abs(g1)
    dph = np.angle(g1 * np.conj(g0))  # wrapped phase difference
    phase = np.angle(g0) + frac * dph
    g_lin = amp * np.exp(1j * phase)
    bad_lin = bad[lo, ant] | bad[hi, ant]
    gs, bs = g[idx_single, ant], bad[idx_single, ant]
    return (np.where(single[:, None], gs, g_lin), np.where(single[:, None], bs, bad_lin))


def apply_gains(vis: np.ndarray, flag: np.ndarray, weight: np.ndarray, time: np.ndarray,
                antenna1: np.ndarray, antenna2: np.ndarray, corr_types: Sequence[str],
                table: GainTable, *, field_id: int, spw_id: int, interp: str = "linear",
                calwt: bool = False,
                spwmap: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply ``table`` to rows of one field and one spw; returns (vis_cal, flag_out, weight_out).

    ``vis`` and ``flag`` are (row, chan, corr); ``weight`` is (row, chan, corr) or (row, corr);
    ``time`` (MJD s), ``antenna1``, ``antenna2`` are (row,). Inputs are not modified.
    """
    interp = interp.lower()
    if interp not in ("linear", "nearest"):
        raise ValueError(f"interp must be 'linear' or 'nearest', got {interp!r}")
    vis = np.asarray(vis)
    flag = np.asarray(flag, dtype=bool)
    weight = np.asarray(weight, dtype=np.float64)
    time = np.asarray(time, dtype=np.float64)
    a1 = np.asarray(antenna1, dtype=np.int64)
    a2 = np.asarray(antenna2, dtype=np.int64)
    hands = np.array(corr_hands(corr_types), dtype=np.int64).reshape(-1, 2)
    if vis.ndim != 3 or vis.shape[2] != hands.shape[0]:
        raise ValueError("vis must be (row, chan, corr) with one corr per entry of corr_types")

    table_spw = spw_id
    if spwmap is not None and 0 <= spw_id < len(spwmap):
        table_spw = int(spwmap[spw_id])
    rows = _table_rows(table, field_id, table_spw)
    if rows.size == 0:
        warnings.warn(f"gain table has no solutions for spw {table_spw}; all samples flagged",
                      FlaggedDataWarning, stacklevel=2)
        return vis.copy(), np.ones_like(flag), weight.copy()

    n_ant = int(max(a1.max(initial=0), a2.max(initial=0), table.antenna1.max())) + 1
    times, g, bad = _grid(table, rows, n_ant)
    g1, b1 = _interpolate(time, times, g, bad, a1, interp)
    g2, b2 = _interpolate(time, times, g, bad, a2, interp)
    if table.npar == 1:  # T: one gain for both polarisations
        p_idx = q_idx = np.zeros(hands.shape[0], dtype=np.int64)
    else:
        p_idx, q_idx = hands[:, 0], hands[:, 1]
    corr_gain = g1[:, p_idx] * np.conj(g2[:, q_idx])  # (row, corr)
    corr_bad = b1[:, p_idx] | b2[:, q_idx]

    safe = np.where(corr_bad, 1.0 + 0j, corr_gain)
    vis_cal = np.where(corr_bad[:, None, :], vis, vis / safe[:, None, :])
    flag_out = flag | corr_bad[:, None, :]
    weight_out = weight.copy()
    if calwt:
        factor = np.where(corr_bad, 1.0, np.abs(safe) ** 2)
        weight_out = weight * (factor[:, None, :] if weight.ndim == 3 else factor)
    return vis_cal, flag_out, weight_out
