"""Antenna-based complex gain solves emulating CASA ``gaincal`` for G and T Jones.

Spec §9 (reference behaviour), §3.5 (phase solves), §3.6 (amplitude solve).

Pipeline of one solve (spec §9 steps 2–8):

1. divide by the model per channel, weight ← weight·|M|² (zero-model samples flagged);
2. weighted average over the selected channels and over each solution interval, per baseline and
   parallel-hand correlation (cross hands get zero weight for G/T);
3. mode enforcement on the averaged data (``'a'`` → modulus, weights unchanged; ``'p'`` → unit
   modulus with weight·amp²; ``'ap'`` unchanged);
4. antennas with fewer than ``minblperant`` baselines are dropped, recounting until stable;
5. minimise Σ w|V_ij − g_i conj(g_j)|² (StEFCal iteration, converged to 1e-12 relative change);
6. parameter errors and SNR as CASA's ``VisCalSolver2::getErrors`` and
   ``SolvableVisCal::formSolveSNR``:
   chi² = Σ w|residual|² over all used samples (every parallel correlation counted separately,
   both polarisations of a G solve pooled), nDOF = max(2·(n_samples − n_par_ok), 1),
   k² = chi²/nDOF, hess_i = Σ_j w_ij |g_j|², σ_g = sqrt(2·k²/hess_i), SNR = |g|/σ_g
   (9999999 if σ_g = 0); solutions are kept only if SNR > minsnr;
7. phases referenced to the refant (CASA ``applyRefAnt``, ``refantmode='flex'``), then ``'p'``
   solutions divided by their amplitude, ``'a'`` solutions by their phase; flagged solutions of
   a/p solves are set to 1+0j as CASA's ``enforceAPonSoln`` does.

Note on σ_g: with weights w = 1/σ² (σ² = complex noise variance) σ_g is the rms of the complex gain
error (each of the real and imaginary parts has rms σ_g/√2); for amplitude-only data (``'a'``)
σ_g is the rms of the amplitude error. The absolute weight scale cancels (k² absorbs it).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from fluxflow.errors import ConvergenceWarning
from fluxflow.gains import GainTable
from fluxflow.solve.solint import solution_intervals

#: SNR CASA stores when the parameter error is exactly zero.
INFINITE_SNR = 9999999.0
#: Relative convergence tolerance of the gain iteration.
TOLERANCE = 1e-12
#: Iteration limit of the gain iteration (like CASA, no rows are written for an interval whose
#: solve does not converge).
MAX_ITER = 5000

_HAND_PAR = {"X": 0, "R": 0, "Y": 1, "L": 1}


def corr_hands(corr_types: Sequence[str]) -> list[tuple[int, int]]:
    """Polarisation (0 = X/R, 1 = Y/L) of the two antennas of each correlation: 'XY' → (0, 1)."""
    hands = []
    for name in corr_types:
        name = str(name).upper()
        if len(name) != 2 or name[0] not in _HAND_PAR or name[1] not in _HAND_PAR:
            raise ValueError(f"unsupported correlation {name!r}: expected XX..YY or RR..LL")
        hands.append((_HAND_PAR[name[0]], _HAND_PAR[name[1]]))
    return hands


def _gain_layout(gaintype: str) -> tuple[int, str]:
    gaintype = gaintype.upper()
    if gaintype == "G":
        return 2, "G Jones"
    if gaintype == "T":
        return 1, "T Jones"
    raise ValueError(f"gaintype must be 'G' or 'T', got {gaintype!r}")


def _parallel_samples(corr_types: Sequence[str], npar: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the parallel-hand correlations and the gain parameter each one feeds."""
    hands = corr_hands(corr_types)
    idx = np.array([k for k, (p, q) in enumerate(hands) if p == q], dtype=np.int64)
    par = np.array([hands[k][0] if npar == 2 else 0 for k in idx], dtype=np.int64)
    return idx, par


def _channel_sums(vis, model, flag, weight, corr_idx, chan_mask):
    """Per row and parallel correlation: Σ_chan w|M|² and Σ_chan w|M|²·(V/M) over usable samples."""
    vis = np.asarray(vis)
    if vis.ndim != 3:
        raise ValueError("vis must have shape (row, chan, corr)")
    model = np.asarray(model)
    flag = np.asarray(flag, dtype=bool)
    weight = np.asarray(weight, dtype=np.float64)
    if weight.ndim == 2:  # (row, corr): the same weight for every channel
        weight = weight[:, None, :]
    weight = np.broadcast_to(weight, vis.shape)
    v = vis[:, :, corr_idx]
    m = model[:, :, corr_idx]
    w = weight[:, :, corr_idx]
    usable = (~flag[:, :, corr_idx] & (w > 0) & (m != 0)
              & np.isfinite(v) & np.isfinite(m) & np.isfinite(w))
    if chan_mask is not None:
        chan_mask = np.asarray(chan_mask, dtype=bool)
        if chan_mask.shape != (vis.shape[1],):
            raise ValueError("spw_chan_mask must have one entry per channel")
        usable &= chan_mask[None, :, None]
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite samples are masked anyway
        wm = np.where(usable, w * (m.real ** 2 + m.imag ** 2), 0.0)
        # w|M|²·(V/M) = w·V·conj(M): no division needed.
        wv = np.where(usable, w * v * np.conj(m), 0.0)
    return wm.sum(axis=1), wv.sum(axis=1)


def _pair_index(a1: np.ndarray, a2: np.ndarray, n_ant: int) -> np.ndarray:
    """Index of baseline (a1 < a2) in the row-major upper triangle (np.triu_indices order)."""
    return a1 * n_ant - a1 * (a1 + 1) // 2 + (a2 - a1 - 1)


class _Accumulated:
    """Interval- and baseline-averaged data of one solve."""

    def __init__(self, sw, sv, sol_time, sol_interval, sol_scan):
        self.sw = sw  # (nsol, npair, nsample) summed weights
        self.v = np.divide(sv, sw, out=np.zeros_like(sv), where=sw > 0)  # weighted means
        self.time = sol_time
        self.interval = sol_interval
        self.scan = sol_scan


def _accumulate(row_sw, row_sv, time, interval, scan, antenna1, antenna2, n_ant, solint):
    """Average per (solution interval, baseline, sample); returns :class:`_Accumulated` or None."""
    time = np.asarray(time, dtype=np.float64)
    interval = np.asarray(interval, dtype=np.float64)
    scan = np.asarray(scan)
    a1 = np.asarray(antenna1, dtype=np.int64)
    a2 = np.asarray(antenna2, dtype=np.int64)
    if np.any((a1 < 0) | (a2 < 0) | (a1 >= n_ant) | (a2 >= n_ant)):
        raise ValueError("antenna index outside 0..n_ant-1")
    cross = a1 != a2  # autocorrelations never enter a gain solve
    if not np.any(cross):
        return None
    row_sw, row_sv = row_sw[cross], row_sv[cross]
    time, interval, scan, a1, a2 = time[cross], interval[cross], scan[cross], a1[cross], a2[cross]
    swap = a1 > a2
    row_sv = np.where(swap[:, None], np.conj(row_sv), row_sv)  # V_ji = conj(V_ij)
    lo, hi = np.minimum(a1, a2), np.maximum(a1, a2)

    sol = solution_intervals(time, interval, scan, solint)
    nsol = int(sol.max()) + 1
    npair = n_ant * (n_ant - 1) // 2
    key = sol * npair + _pair_index(lo, hi, n_ant)
    nsample = row_sw.shape[1]
    size = nsol * npair
    sw = np.empty((size, nsample))
    sv = np.empty((size, nsample), dtype=np.complex128)
    for s in range(nsample):
        sw[:, s] = np.bincount(key, weights=row_sw[:, s], minlength=size)
        sv[:, s] = (np.bincount(key, weights=row_sv[:, s].real, minlength=size)
                    + 1j * np.bincount(key, weights=row_sv[:, s].imag, minlength=size))

    # Solution TIME: mean TIME of the rows with usable data (all rows if none), as CASA labels a
    # solution with the mean time of the averaged data; INTERVAL: span of the rows' intervals.
    has_data = row_sw.sum(axis=1) > 0
    n_all = np.bincount(sol, minlength=nsol)
    t_all = np.bincount(sol, weights=time, minlength=nsol)
    n_dat = np.bincount(sol, weights=has_data.astype(float), minlength=nsol)
    t_dat = np.bincount(sol, weights=np.where(has_data, time, 0.0), minlength=nsol)
    sol_time = np.where(n_dat > 0, t_dat / np.maximum(n_dat, 1), t_all / np.maximum(n_all, 1))
    start = np.full(nsol, np.inf)
    stop = np.full(nsol, -np.inf)
    np.minimum.at(start, sol, time - interval / 2)
    np.maximum.at(stop, sol, time + interval / 2)
    order = np.lexsort((time, sol))
    first = order[np.r_[0, np.flatnonzero(np.diff(sol[order])) + 1]]
    return _Accumulated(sw.reshape(nsol, npair, nsample), sv.reshape(nsol, npair, nsample),
                        sol_time, stop - start, scan[first])


def _enforce_mode_on_data(acc: _Accumulated, calmode: str) -> None:
    """Spec §9 step 4 on the averaged data, in place."""
    if calmode == "ap":
        return
    amp = np.abs(acc.v)
    if calmode == "a":
        acc.v = amp.astype(np.complex128)
    else:  # 'p'
        good = amp > 0
        acc.v = np.divide(acc.v, amp, out=np.zeros_like(acc.v), where=good)
        acc.sw = np.where(good, acc.sw * amp ** 2, 0.0)


def _combine_samples(acc: _Accumulated, sample_par: np.ndarray, npar: int):
    """Per parameter: total weight, weighted mean visibility, count of samples and the chi² part
    that the mean cannot absorb (Σ w_s|V_s − V̄|²). Shapes (nsol, npar, npair)."""
    nsol, npair, _ = acc.sw.shape
    W = np.zeros((nsol, npar, npair))
    V = np.zeros((nsol, npar, npair), dtype=np.complex128)
    cnt = np.zeros((nsol, npar, npair))
    const = np.zeros((nsol, npar, npair))
    for p in range(npar):
        sel = np.flatnonzero(sample_par == p)
        if sel.size == 0:
            continue
        sw, v = acc.sw[:, :, sel], acc.v[:, :, sel]
        W[:, p] = sw.sum(axis=2)
        V[:, p] = np.divide((sw * v).sum(axis=2), W[:, p], out=np.zeros(W[:, p].shape, complex),
                            where=W[:, p] > 0)
        cnt[:, p] = (sw > 0).sum(axis=2)
        const[:, p] = (sw * np.abs(v - V[:, p][:, :, None]) ** 2).sum(axis=2)
    return W, V, cnt, const


def _dense(values: np.ndarray, n_ant: int, hermitian: bool) -> np.ndarray:
    """(..., npair) baseline values → (..., n_ant, n_ant) symmetric/Hermitian, zero diagonal."""
    iu, ju = np.triu_indices(n_ant, 1)
    lead = values.shape[:-1]
    flat = np.zeros((int(np.prod(lead)), n_ant * n_ant), dtype=values.dtype)
    vals = values.reshape(-1, values.shape[-1])
    flat[:, iu * n_ant + ju] = vals
    flat[:, ju * n_ant + iu] = np.conj(vals) if hermitian else vals
    return flat.reshape(lead + (n_ant, n_ant))


def _antennas_with_enough_baselines(W: np.ndarray, minblperant: int) -> np.ndarray:
    """CASA's minblperant rule: drop antennas with < minblperant baselines, recount, repeat."""
    has = W > 0
    ok = has.any(axis=-1)
    while True:
        nbl = (has & ok[..., None, :]).sum(axis=-1)
        new_ok = ok & (nbl >= max(int(minblperant), 1))
        if np.array_equal(new_ok, ok):
            return ok
        ok = new_ok


def _stefcal(WR: np.ndarray, W: np.ndarray, ok: np.ndarray):
    """Batched StEFCal: g_i ← Σ_j W_ij R_ij g_j / Σ_j W_ij |g_j|², averaging every second step.

    The fixed point is the stationary point of Σ_{i<j} W_ij |R_ij − g_i conj(g_j)|².
    Returns (g, converged) with shapes (P, n) and (P,).
    """
    g = ok.astype(np.complex128)
    converged = ~ok.any(axis=1)
    active = np.flatnonzero(~converged)  # problems still iterated
    WRa, Wa, ga = WR[active], W[active], g[active]
    live = np.ones(active.size, dtype=bool)  # not yet converged among the iterated ones
    for it in range(1, MAX_ITER + 1):
        if active.size == 0:
            break
        num = np.einsum("pij,pj->pi", WRa, ga)
        den = np.einsum("pij,pj->pi", Wa, ga.real ** 2 + ga.imag ** 2)
        new = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
        if it % 2 == 0:
            new = 0.5 * (new + ga)
        change = np.linalg.norm(new - ga, axis=1)
        size = np.linalg.norm(new, axis=1)
        ga = new
        done = live & (change <= TOLERANCE * np.where(size > 0, size, 1.0))
        if done.any():
            g[active[done]] = ga[done]
            converged[active[done]] = True
            live &= ~done
            # Copying the stacks costs as much as an iteration: compact only in large steps.
            if live.sum() <= 0.75 * live.size:
                active, WRa, Wa, ga, live = (active[live], WRa[live], Wa[live], ga[live],
                                             live[live])
    g[active[live]] = ga[live]
    return g, converged


def _solve_accumulated(acc: _Accumulated, sample_par: np.ndarray, npar: int, n_ant: int,
                       minblperant: int, minsnr: float):
    """Gains, errors and flags for every interval. Arrays are (nsol, npar, n_ant)."""
    W, V, cnt, const = _combine_samples(acc, sample_par, npar)
    nsol = W.shape[0]
    Wd = _dense(W, n_ant, hermitian=False)
    solved = _antennas_with_enough_baselines(Wd, minblperant)
    iu, ju = np.triu_indices(n_ant, 1)
    used = solved[..., iu] & solved[..., ju]  # baselines between solvable antennas
    W = np.where(used, W, 0.0)
    Wd = _dense(W, n_ant, hermitian=False)
    P = nsol * npar
    g, conv = _stefcal(_dense(W * V, n_ant, hermitian=True).reshape(P, n_ant, n_ant),
                       Wd.reshape(P, n_ant, n_ant), solved.reshape(P, n_ant))
    g = g.reshape(nsol, npar, n_ant)
    conv = conv.reshape(nsol, npar).all(axis=1)

    # chi², sample count and parameter count per interval (both parameters pooled, as CASA solves
    # all parameters of an interval together).
    resid = V - g[..., iu] * np.conj(g[..., ju])
    chi2 = np.sum(np.where(used, W * (resid.real ** 2 + resid.imag ** 2) + const, 0.0), axis=(1, 2))
    n_wt = np.sum(np.where(used, cnt, 0.0), axis=(1, 2))
    n_parok = solved.sum(axis=(1, 2))
    n_dof = np.maximum(2.0 * (n_wt - n_parok), 1.0)
    k2 = chi2 / n_dof
    hess = np.einsum("...ij,...j->...i", Wd, np.abs(g) ** 2)
    err = np.zeros_like(hess)
    pos = solved & (hess > 0)
    err[pos] = np.sqrt(2.0 * np.broadcast_to(k2[:, None, None], hess.shape)[pos] / hess[pos])
    amp = np.abs(g)
    snr = np.where(err > 0, np.divide(amp, err, out=np.zeros_like(amp), where=err > 0),
                   INFINITE_SNR)
    snr = np.where(solved, snr, 0.0)

    if not conv.all():
        warnings.warn(f"{int((~conv).sum())} solution interval(s) did not converge in {MAX_ITER} "
                      "iterations; no solutions are written for them", ConvergenceWarning,
                      stacklevel=3)
    # CASA writes no rows for an interval whose solve failed (nothing solvable, no convergence).
    keep = conv & solved.any(axis=(1, 2))
    good = solved & (snr > minsnr)
    return g, good, solved, err, snr, keep


def _refant_choices(refant: Sequence[int], n_ant: int, positions: np.ndarray | None) -> list[int]:
    """CASA's prioritised refant list: primary, last used (initially primary), the user's secondary
    refants, then every antenna by distance from the last user refant (user refants last)."""
    user = [int(r) for r in refant]
    if positions is not None:
        xyz = np.asarray(positions, dtype=np.float64)
        dist2 = np.sum((xyz - xyz[user[-1]]) ** 2, axis=1)
    else:
        dist2 = np.arange(n_ant, dtype=np.float64)
    dist2 = dist2.copy()
    dist2[user] = np.inf
    rest = [int(a) for a in np.argsort(dist2, kind="stable")]
    return [user[0], user[0]] + user[1:] + rest


def _reference_sequence(g: np.ndarray, ok: np.ndarray, refant: Sequence[int], mode: str,
                        positions: np.ndarray | None):
    """Re-reference time-ordered solutions of one spw (CASA ``SolvableVisJones::applyRefAnt``).

    ``g``, ``ok`` are (nsol, npar, n_ant). A refant is usable in an interval if its solutions of
    all checked polarisations are unflagged in this interval and in the previous referenced one;
    the phase it had in that previous interval is held ('flex'), so the preferred refant keeps
    phase 0 while it is available. ``strict`` allows only the primary refant. Intervals without
    a usable refant are flagged entirely. Returns (g, ok, antenna2 per interval).
    """
    nsol, npar, n_ant = g.shape
    g, ok = g.copy(), ok.copy()
    ant2 = np.full(nsol, -1, dtype=np.int32)
    user = [int(r) for r in refant if 0 <= int(r) < n_ant]
    if not user or nsol == 0:
        return g, ok, ant2
    choices = _refant_choices(user, n_ant, positions)
    if mode == "strict":
        choices = choices[:1]
    elif mode != "flex":
        raise ValueError(f"refantmode must be 'flex' or 'strict', got {mode!r}")
    # Polarisations checked: the second one only if it has any unflagged solution (CASA's nPol).
    pars = [0] if npar == 1 or not ok[:, 1, :].any() else [0, 1]
    prev = None  # index of the last referenced interval
    for t in range(nsol):
        found = None
        for c in range(len(choices)):
            ref = choices[c]
            good = all(ok[t, p, ref] for p in pars)
            if prev is not None:
                good = good and all(ok[prev, p, ref] for p in pars)
            if good:
                found = ref
                break
        if found is None:
            ok[t] = False
            continue
        phasor = _unit(g[t, :, found])
        if prev is not None:
            phasor = phasor * np.conj(_unit(g[prev, :, found]))
        g[t] = g[t] * np.conj(phasor)[:, None]
        ant2[t] = found
        if len(choices) > 1:
            choices[1] = found  # the last used refant gets second priority
        prev = t
    return g, ok, ant2


def _unit(z: np.ndarray) -> np.ndarray:
    a = np.abs(z)
    return np.divide(z, a, out=np.ones_like(z), where=a > 0)


def _enforce_mode_on_solutions(g: np.ndarray, good: np.ndarray, solved: np.ndarray,
                               calmode: str) -> np.ndarray:
    """Spec §9 step 7: 'p' → unit amplitude, 'a' → zero phase; flagged a/p solutions → 1+0j.
    Unsolved parameters (no data, minblperant) are 1+0j in every mode."""
    if calmode == "p":
        g = np.where(good, _unit(g), 1.0 + 0j)
    elif calmode == "a":
        g = np.where(good, np.abs(g).astype(np.complex128), 1.0 + 0j)
    return np.where(solved, g, 1.0 + 0j)


def _check_options(calmode: str, gaintype: str) -> tuple[str, int, str]:
    calmode = calmode.lower()
    if calmode not in ("a", "p", "ap"):
        raise ValueError(f"calmode must be 'a', 'p' or 'ap', got {calmode!r}")
    npar, vis_cal = _gain_layout(gaintype)
    return calmode, npar, vis_cal


def _finish(acc: _Accumulated | None, sample_par: np.ndarray, *, n_ant: int, npar: int,
            vis_cal: str, calmode: str, refant: Sequence[int], refantmode: str,
            antenna_positions: np.ndarray | None, minblperant: int, minsnr: float, field_id: int,
            spw_id: int, meta: dict) -> GainTable:
    if acc is None:
        return GainTable.empty(vis_cal, npar, meta=meta)
    _enforce_mode_on_data(acc, calmode)
    g, good, solved, err, snr, keep = _solve_accumulated(acc, sample_par, npar, n_ant,
                                                         minblperant, minsnr)
    if not keep.any():
        return GainTable.empty(vis_cal, npar, meta=meta)
    g, good, solved, err, snr = g[keep], good[keep], solved[keep], err[keep], snr[keep]
    sol_time, sol_interval, sol_scan = acc.time[keep], acc.interval[keep], acc.scan[keep]
    order = np.argsort(sol_time, kind="stable")  # referencing walks the intervals in time order
    g_r, good_r, ant2_r = _reference_sequence(g[order], good[order], refant, refantmode,
                                              antenna_positions)
    g[order], good[order] = g_r, good_r
    ant2 = np.empty_like(ant2_r)
    ant2[order] = ant2_r
    cparam = _enforce_mode_on_solutions(g, good, solved, calmode)

    nsol = g.shape[0]
    rep = lambda x, dt: np.repeat(np.asarray(x, dtype=dt), n_ant)  # noqa: E731
    per_row = lambda a: np.transpose(a, (0, 2, 1)).reshape(nsol * n_ant, 1, npar)  # noqa: E731
    table = GainTable(
        vis_cal=vis_cal,
        time=rep(sol_time, np.float64),
        interval=rep(sol_interval, np.float64),
        field_id=np.full(nsol * n_ant, field_id, dtype=np.int32),
        spw_id=np.full(nsol * n_ant, spw_id, dtype=np.int32),
        antenna1=np.tile(np.arange(n_ant, dtype=np.int32), nsol),
        antenna2=rep(ant2, np.int32),
        scan=rep(sol_scan, np.int32),
        obs_id=np.zeros(nsol * n_ant, dtype=np.int32),
        cparam=per_row(cparam),
        paramerr=per_row(np.where(solved, err, 0.0)),
        flag=per_row(~good),
        snr=per_row(snr),
        weight=np.zeros((nsol * n_ant, 1, npar)),
        meta=meta,
    )
    return table.sorted()


def solve_gains(vis: np.ndarray, model: np.ndarray, flag: np.ndarray, weight: np.ndarray,
                time: np.ndarray, interval: np.ndarray, scan: np.ndarray, antenna1: np.ndarray,
                antenna2: np.ndarray, *, n_ant: int, corr_types: Sequence[str],
                solint: str | float = "int", gaintype: str = "G", calmode: str = "p",
                refant: Sequence[int] = (0,), minblperant: int = 4, minsnr: float = 2.0,
                field_id: int = 0, spw_id: int = 0, spw_chan_mask: np.ndarray | None = None,
                refantmode: str = "flex",
                antenna_positions: np.ndarray | None = None) -> GainTable:
    """Solve G or T gains for one field and one spw, as CASA gaincal with ``combine=''`` (spec §9).

    Arrays: ``vis``, ``model``, ``flag`` and ``weight`` are (row, chan, corr) (``weight`` may also
    be (row, corr)); ``time`` (MJD s), ``interval``, ``scan``, ``antenna1``, ``antenna2``
    are (row,).
    ``spw_chan_mask`` (chan,) selects the channels averaged (default all). ``refant`` is the ranked
    refant id list; ``antenna_positions`` (n_ant, 3) ITRF m orders CASA's alternate refants by
    distance (antenna id order if omitted). One row per antenna and interval is returned;
    unsolved antennas are flagged with CPARAM 1+0j, ANTENNA2 is the refant used (−1 if none).
    """
    calmode, npar, vis_cal = _check_options(calmode, gaintype)
    corr_idx, sample_par = _parallel_samples(corr_types, npar)
    meta = {"solint": solint, "gaintype": gaintype.upper(), "calmode": calmode,
            "minblperant": minblperant, "minsnr": minsnr, "refant": list(refant), "combine": ""}
    row_sw, row_sv = _channel_sums(vis, model, flag, weight, corr_idx, spw_chan_mask)
    acc = _accumulate(row_sw, row_sv, time, interval, scan, antenna1, antenna2, n_ant, solint)
    return _finish(acc, sample_par, n_ant=n_ant, npar=npar, vis_cal=vis_cal, calmode=calmode,
                   refant=refant, refantmode=refantmode, antenna_positions=antenna_positions,
                   minblperant=minblperant, minsnr=minsnr, field_id=field_id, spw_id=spw_id,
                   meta=meta)


def solve_gains_multi_spw(vis: Sequence[np.ndarray], model: Sequence[np.ndarray],
                          flag: Sequence[np.ndarray], weight: Sequence[np.ndarray],
                          time: Sequence[np.ndarray], interval: Sequence[np.ndarray],
                          scan: Sequence[np.ndarray], antenna1: Sequence[np.ndarray],
                          antenna2: Sequence[np.ndarray], *, spw_ids: Sequence[int], n_ant: int,
                          corr_types: Sequence[str], solint: str | float = "int",
                          gaintype: str = "G", calmode: str = "p", refant: Sequence[int] = (0,),
                          minblperant: int = 4, minsnr: float = 2.0, field_id: int = 0,
                          spw_chan_masks: Sequence[np.ndarray | None] | None = None,
                          refantmode: str = "flex",
                          antenna_positions: np.ndarray | None = None) -> GainTable:
    """``combine='spw'``: the data of several spws solved together, labelled with the lowest spw id.

    Every argument except the keywords is a list with one array per spw (shapes as in
    :func:`solve_gains`; channel counts may differ). Each spw is channel- and time-averaged on its
    own (CASA keeps one averaged buffer per spw) and all of them enter one least-squares problem
    per solution interval; each (spw, correlation) average counts as one sample in the chi² and
    degrees of freedom. Solution intervals are formed from the rows of all spws together.
    """
    calmode, npar, vis_cal = _check_options(calmode, gaintype)
    nspw = len(spw_ids)
    if nspw == 0:
        raise ValueError("solve_gains_multi_spw needs at least one spw")
    lists = (vis, model, flag, weight, time, interval, scan, antenna1, antenna2)
    if any(len(x) != nspw for x in lists):
        raise ValueError("every per-spw argument must have one entry per spw id")
    masks = list(spw_chan_masks) if spw_chan_masks is not None else [None] * nspw
    corr_idx, par = _parallel_samples(corr_types, npar)
    ns = corr_idx.size
    blocks_sw, blocks_sv = [], []
    for k in range(nspw):
        sw, sv = _channel_sums(vis[k], model[k], flag[k], weight[k], corr_idx, masks[k])
        full_sw = np.zeros((sw.shape[0], nspw * ns))
        full_sv = np.zeros((sw.shape[0], nspw * ns), dtype=np.complex128)
        full_sw[:, k * ns:(k + 1) * ns] = sw
        full_sv[:, k * ns:(k + 1) * ns] = sv
        blocks_sw.append(full_sw)
        blocks_sv.append(full_sv)
    cat = lambda xs: np.concatenate([np.asarray(x) for x in xs])  # noqa: E731
    acc = _accumulate(np.concatenate(blocks_sw), np.concatenate(blocks_sv), cat(time),
                      cat(interval), cat(scan), cat(antenna1), cat(antenna2), n_ant, solint)
    meta = {"solint": solint, "gaintype": gaintype.upper(), "calmode": calmode,
            "minblperant": minblperant, "minsnr": minsnr, "refant": list(refant),
            "combine": "spw", "combined_spws": [int(s) for s in spw_ids]}
    return _finish(acc, np.tile(par, nspw), n_ant=n_ant, npar=npar, vis_cal=vis_cal,
                   calmode=calmode, refant=refant, refantmode=refantmode,
                   antenna_positions=antenna_positions, minblperant=minblperant, minsnr=minsnr,
                   field_id=field_id, spw_id=int(min(spw_ids)), meta=meta)


def reference_phases(table: GainTable, refant: Sequence[int], *, refantmode: str = "flex",
                     antenna_positions: np.ndarray | None = None) -> GainTable:
    """Re-reference a whole table per spw in time order (all fields together, as CASA does for the
    solutions of one gaincal call). Rows are assumed to be one per antenna per (time, field)."""
    out = table.copy()
    n_ant = int(table.antenna1.max()) + 1 if table.nrow else 0
    npar = table.npar
    for spw in np.unique(table.spw_id):
        rows = np.flatnonzero(table.spw_id == spw)
        keys = np.stack([table.time[rows], table.field_id[rows]], axis=1)
        uniq, slot = np.unique(keys, axis=0, return_inverse=True)
        slot = slot.reshape(-1)
        g = np.ones((uniq.shape[0], npar, n_ant), dtype=np.complex128)
        ok = np.zeros((uniq.shape[0], npar, n_ant), dtype=bool)
        ant = table.antenna1[rows]
        g[slot, :, ant] = table.cparam[rows, 0, :]
        ok[slot, :, ant] = ~table.flag[rows, 0, :]
        g, ok, ant2 = _reference_sequence(g, ok, refant, refantmode, antenna_positions)
        out.cparam[rows, 0, :] = g[slot, :, ant]
        out.flag[rows, 0, :] = ~ok[slot, :, ant]
        out.antenna2[rows] = ant2[slot]
    return out
