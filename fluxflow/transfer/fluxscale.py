"""CASA ``fluxscale`` (SolvableVisJones::fluxscale, non-incremental, gainthreshold = -1), spec §6.

Given an amplitude gain table solved against the true model of the reference (flux) calibrator
and unit models of the transfer calibrators, |g_T| / |g_R| = sqrt(S_T / 1 Jy) per antenna, so the
median over antennas of the per-antenna ratio of time-averaged gain amplitudes, squared, is the
transfer field's flux density. Pure numpy; the caller reads/writes the table.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace

import numpy as np

from fluxflow.errors import InsufficientDataWarning, SolveError
from fluxflow.gains import GainTable
from fluxflow.models.catalogue import FluxMeasurement


def casacore_median(x: np.ndarray, array_size: int | None = None) -> float:
    """casacore's median of the unmasked values `x` (spec §6.4).

    Sort; n2 = ⌊(N−1)/2⌋; N odd → x[n2]; N even → mean of x[n2] and x[n2+1] only when the
    (masked) array it came from has ``array_size`` ≤ 100 elements, else the lower middle x[n2].
    ``array_size`` defaults to N.
    """
    v = np.sort(np.asarray(x, dtype=np.float64).ravel())
    n = v.size
    if n == 0:
        raise ValueError("median of an empty array")
    size = n if array_size is None else int(array_size)
    n2 = (n - 1) // 2
    if n % 2 == 1 or size > 100:
        return float(v[n2])
    return float((v[n2] + v[n2 + 1]) / 2.0)


@dataclass(frozen=True)
class SpectralFit:
    """Weighted polynomial fit of log10 flux vs centred log10 frequency (spec §6.5).

    ``spidx`` = [c0, α(, β)] (length fitorder+1 as requested; unfitted terms 0), ``spidxerr``
    their errors, ``fit_flux`` = 10^c0 at ``ref_freq`` = 10^mean(log10 ν), ``fit_flux_err`` =
    ln(10)·10^c0·err(c0), ``covariance`` = (AᵀWA)⁻¹ (unscaled, as casacore's compuCovariance;
    empty when no fit was made). ``fitorder_used`` is the order actually fitted; ``n_used`` the
    number of points with non-zero σ. ``ok`` is False when the points could not determine the
    coefficients (fewer usable points than coefficients).
    """

    spidx: np.ndarray
    spidxerr: np.ndarray
    fit_flux: float
    fit_flux_err: float
    ref_freq: float
    covariance: np.ndarray
    fitorder_used: int
    n_used: int
    ok: bool = True


def spectral_fit(freqs: np.ndarray, fd: np.ndarray, fderr: np.ndarray, fitorder: int = 1) -> SpectralFit:
    """CASA's per-field spectral fit over the scaleOK spws (spec §6.5).

    1 point: no fit (fit_flux = fd, ref_freq = ν, zero coefficients). ≥ 2 points:
    x = log10 ν − mean(log10 ν), y = log10 fd, σ = fderr/fd, weight 1/σ², points with σ = 0 skipped;
    coefficient errors = sqrt(diag((AᵀWA)⁻¹))·sqrt(χ²/max(1, n−m)). CASA quirks kept: fitorder < 0
    → 1 (warning); fitorder > 1 with exactly 2 points → order 0 (CASA warns "use fitorder=1" but
    fits a constant).
    """
    freqs = np.asarray(freqs, dtype=np.float64)
    fd = np.asarray(fd, dtype=np.float64)
    fderr = np.asarray(fderr, dtype=np.float64)
    if not (freqs.size == fd.size == fderr.size) or fd.size == 0:
        raise ValueError("spectral_fit needs equally long, non-empty freqs, fd and fderr")
    ncoef = max(int(fitorder), 0) + 1
    zeros = np.zeros(ncoef)
    if fd.size == 1:
        return SpectralFit(zeros, zeros.copy(), float(fd[0]), 0.0, float(freqs[0]),
                           np.zeros((0, 0)), int(fitorder), 1)
    order = int(fitorder)
    if order < 0:
        warnings.warn(f"fitorder={order} not supported; using fitorder=1", InsufficientDataWarning,
                      stacklevel=2)
        order = 1
        ncoef = 2
        zeros = np.zeros(ncoef)
    elif fd.size == 2 and order > 1:
        warnings.warn(f"not enough flux densities for fitorder={order}; CASA then fits order 0",
                      InsufficientDataWarning, stacklevel=2)
        order = 0
    m = order + 1
    mean_log = float(np.mean(np.log10(freqs)))
    x = np.log10(freqs) - mean_log
    y = np.log10(fd)
    sigma = fderr / fd
    use = sigma != 0.0
    n = int(np.count_nonzero(use))
    ref_freq = 10.0 ** mean_log
    if n < m:
        warnings.warn(f"spectral fit of order {order} needs {m} points with non-zero errors, "
                      f"got {n}; no fit", InsufficientDataWarning, stacklevel=2)
        nan = np.full(ncoef, np.nan)
        return SpectralFit(nan, nan.copy(), math.nan, math.nan, ref_freq, np.zeros((0, 0)), order, n,
                           ok=False)
    a = np.vander(x[use], m, increasing=True)
    w = 1.0 / sigma[use] ** 2
    normal = a.T @ (w[:, None] * a)
    sw = np.sqrt(w)
    # least squares on the whitened system: stable when the errors span many decades, where
    # inverting the normal matrix fails (found by the property tests)
    coef, _, rank, _ = np.linalg.lstsq(a * sw[:, None], y[use] * sw, rcond=None)
    if rank < m:
        warnings.warn(f"spectral fit of order {order} is degenerate (rank {rank} < {m}); no fit",
                      InsufficientDataWarning, stacklevel=2)
        nan = np.full(ncoef, np.nan)
        return SpectralFit(nan, nan.copy(), math.nan, math.nan, ref_freq, np.zeros((0, 0)), order, n,
                           ok=False)
    cov = np.linalg.pinv(normal)
    # an exactly determined fit has χ² = 0 (spec §6.5); do not let round-off make it positive
    chi2 = float(np.sum(w * (y[use] - a @ coef) ** 2)) if n > m else 0.0
    err = np.sqrt(np.abs(np.diag(cov))) * math.sqrt(chi2 / max(1, n - m))
    spidx = np.zeros(ncoef)
    spidxerr = np.zeros(ncoef)
    spidx[:m] = coef
    spidxerr[:m] = err
    fit_flux = 10.0 ** coef[0]
    fit_flux_err = math.log(10.0) * fit_flux * err[0] if err[0] > 0 else 0.0
    return SpectralFit(spidx, spidxerr, float(fit_flux), float(fit_flux_err), ref_freq, cov, order, n)


@dataclass(frozen=True)
class FluxscaleEntry:
    """Result for one (transfer field, spw); fd = fderr = numsol = −1 when not scaleOK."""

    field_id: int
    spw_id: int
    fd: float
    fderr: float
    numsol: int
    ref_spw: int
    ratio: float  # median gain ratio R = sqrt(fd); NaN when not scaleOK
    rms: float  # sample standard deviation of the per-antenna ratios; NaN when not scaleOK
    freq: float  # caltable spw frequency (Hz), −1 if unknown

    @property
    def ok(self) -> bool:
        return self.numsol > 0


@dataclass
class FluxscaleResult:
    """Output of :func:`fluxscale` (spec §6.6).

    ``entries`` holds every (transfer field with solutions, spw) pair, as CASA's record;
    ``fits`` the per-field spectral fit (fields with ≥ 1 scaleOK spw); ``scaled_table`` the
    input table with CPARAM of scaleOK (field, spw) rows divided by R; ``log`` CASA-style lines.
    """

    entries: dict[tuple[int, int], FluxscaleEntry]
    fits: dict[int, SpectralFit]
    scaled_table: GainTable
    log: list[str]
    reference_fields: list[int]
    transfer_fields: list[int]
    array_size: int  # n_par · n_ant, the masked-array size deciding the median rule
    field_names: dict[int, str] = field(default_factory=dict)

    def ok_entries(self) -> list[FluxscaleEntry]:
        """scaleOK entries (the ones the pipeline keeps, spec §3.9), by field then spw."""
        return [e for _, e in sorted(self.entries.items()) if e.ok]

    def measurements(self) -> list[FluxMeasurement]:
        """scaleOK entries as FluxMeasurements (origin 'fluxscale', I ± fderr)."""
        return [FluxMeasurement(e.field_id, self.field_names.get(e.field_id, str(e.field_id)), e.spw_id,
                                e.fd, e.fderr, origin="fluxscale", freq=e.freq)
                for e in self.ok_entries()]


def _refspw_map(refspwmap: list[int] | None, spws: list[int]) -> dict[int, int]:
    """Spec §6.2: identity, or all → r (one element), or per-index overrides."""
    mapping = {s: s for s in spws}
    if not refspwmap or refspwmap[0] <= -1:
        return mapping
    if len(refspwmap) == 1:
        return {s: int(refspwmap[0]) for s in spws}
    for i, r in enumerate(refspwmap):
        if r > -1 and r != i and i in mapping:
            mapping[i] = int(r)
    return mapping


def _fmt(x: float) -> str:
    """C++ ostream default formatting (6 significant digits), as CASA's log."""
    return f"{x:g}"


def fluxscale(table: GainTable, reference_fields: list[int], transfer_fields: list[int],
              refspwmap: list[int] | None, spw_freqs: dict[int, float], n_ant: int, fitorder: int = 1,
              field_names: dict[int, str] | None = None) -> FluxscaleResult:
    """Transfer the flux scale from the reference to the transfer fields (spec §6).

    `table` is the amplitude (T or G) gain table; `spw_freqs` maps spw id → solution frequency
    (middle channel of the caltable spw, spec §6.5), also used for the log; `n_ant` is the
    number of antennas of the MS (decides the median rule together with n_par). `field_names`
    is used in messages (default: the id). Errors (SolveError) and warnings
    (InsufficientDataWarning) carry CASA's messages.
    """
    names = dict(field_names or {})

    def fname(f: int) -> str:
        return names.get(f, str(f))

    if table.nrow == 0:
        raise SolveError("SVJ:fluxscale: Empty or absent caltable specified")
    npar = table.npar
    if np.any(table.antenna1 < 0) or np.any(table.antenna1 >= n_ant):
        raise SolveError(f"fluxscale: antenna ids in the caltable exceed the {n_ant} antennas of the MS")
    log: list[str] = []

    # §6.1 field bookkeeping
    fld_list = sorted(int(f) for f in np.unique(table.field_id))
    refs = sorted(set(int(f) for f in reference_fields))
    trans = list(dict.fromkeys(int(f) for f in transfer_fields))
    for r in refs:
        if r in trans:
            log.append(f"The reference field, {fname(r)} , is also listed in the transfer fields.  "
                       f"It will be ignored for further scaling process.")
            trans.remove(r)
    trans = sorted(set(trans))
    present_refs = [f for f in fld_list if f in refs]
    impl_trans = [f for f in fld_list if f not in refs]
    if not present_refs:
        raise SolveError("Cannot find specified reference field(s)")
    if not impl_trans:
        raise SolveError("Cannot find solutions for transfer field(s)")
    if len(present_refs) < len(refs):
        missing = " ".join(fname(r) for r in refs if r not in fld_list)
        warnings.warn(f"The following reference fields have no solutions available: {missing}",
                      InsufficientDataWarning, stacklevel=2)
    refs = present_refs
    if not trans:
        trans = impl_trans
        log.append("Assuming all non-reference fields are transfer fields.")
    else:
        missing_t = [t for t in trans if t not in impl_trans]
        if missing_t:
            warnings.warn("The following transfer fields have no solutions available: "
                          + " ".join(fname(t) for t in missing_t), InsufficientDataWarning,
                          stacklevel=2)
    log.append("Found reference field(s): " + " ".join(fname(r) for r in refs))
    log.append("Found transfer field(s):  " + " ".join(fname(t) for t in trans))

    spw_ids = sorted(set(int(s) for s in spw_freqs) | set(int(s) for s in np.unique(table.spw_id)))
    ref_of = _refspw_map(refspwmap, spw_ids)
    if refspwmap and refspwmap[0] > -1:
        if len(refspwmap) == 1:
            log.append(f"All spectral windows will be referenced to spw={int(refspwmap[0])}")
        else:
            log.extend(f"Spw={s} will be referenced to spw={r}" for s, r in ref_of.items() if s != r)
    nspw = max(max(spw_ids), max(ref_of.values())) + 1

    # §6.3 per-antenna time averages over unflagged solutions (only fields of interest)
    used_fields = refs + [t for t in trans if t in fld_list]
    sel = np.isin(table.field_id, used_fields)
    t_spw = table.spw_id[sel].astype(np.int64)
    t_fld = table.field_id[sel].astype(np.int64)
    t_ant = table.antenna1[sel].astype(np.int64)
    t_time = table.time[sel]
    order = np.lexsort((t_ant, t_fld, t_time, t_spw))
    key = np.stack([t_spw[order], t_time[order], t_fld[order], t_ant[order]], axis=1)
    dup = np.all(key[1:] == key[:-1], axis=1)
    if np.any(dup):
        fld = int(key[1:][dup][0, 2])
        raise SolveError(f"Found multiple gain solutions in a single timestamp for fieldid={fld}. "
                         f"Please check the input Caltable.")
    # CASA takes |g| of the single-precision CPARAM in single precision and accumulates in its
    # iteration order (spw, time, field, antenna); both are kept so the means match bit for bit.
    amp = np.abs(table.cparam[sel, 0, :].astype(np.complex64)).astype(np.float64)[order]
    good = ~table.flag[sel, 0, :][order]
    fidx = {f: i for i, f in enumerate(used_fields)}
    nf = len(used_fields)
    shape = (nf, nspw, n_ant, npar)
    sums = np.zeros(shape)
    counts = np.zeros(shape, dtype=np.int64)
    lut = np.full(int(t_fld.max()) + 1 if t_fld.size else 1, -1, dtype=np.int64)
    lut[used_fields] = np.arange(nf)
    fi = lut[t_fld[order]]
    si, ai = t_spw[order], t_ant[order]
    for p in range(npar):
        g = good[:, p]
        np.add.at(sums, (fi[g], si[g], ai[g], p), amp[g, p])
        np.add.at(counts, (fi[g], si[g], ai[g], p), 1)
    ok = counts > 0
    mean = np.where(ok, sums / np.maximum(counts, 1), 0.0)

    # §6.4 reference combination
    ref_rows = [fidx[r] for r in refs]
    ref_ok_count = ok[ref_rows].sum(axis=0)
    mref = np.where(ref_ok_count > 0, (mean[ref_rows] * ok[ref_rows]).sum(axis=0)
                    / np.maximum(ref_ok_count, 1), 0.0)
    mref_ok = ref_ok_count > 0

    array_size = npar * int(n_ant)
    entries: dict[tuple[int, int], FluxscaleEntry] = {}
    for t in trans:
        if t not in fidx:
            continue
        ti = fidx[t]
        for s in spw_ids:
            r = ref_of[s]
            freq = float(spw_freqs.get(s, -1.0))
            valid = ok[ti, s] & mref_ok[r] & (mref[r] > 0.0)
            ratios = mean[ti, s][valid] / mref[r][valid]
            nsol = int(ratios.size)
            head = f"Flux density for {fname(t)} in SpW={s}"
            if nsol > 0:
                big_r = casacore_median(ratios, array_size)
                rms = float(np.std(ratios, ddof=1)) if nsol > 1 else 0.0
                fd = big_r * big_r
                fderr = 2.0 * rms / math.sqrt(nsol - 1) if nsol > 1 else 0.0
                entries[(t, s)] = FluxscaleEntry(t, s, fd, fderr, nsol, r, big_r, rms, freq)
                snr = fd / fderr if fderr != 0 else math.inf
                head += f" (freq={_fmt(freq)} Hz)"
                if r != s:
                    head += f" (ref SpW={r})"
                log.append(f"{head} is: {_fmt(fd)} +/- {_fmt(fderr)} (SNR = {_fmt(snr)}, N = {nsol})")
            else:
                entries[(t, s)] = FluxscaleEntry(t, s, -1.0, -1.0, -1, r, math.nan, math.nan, freq)
                if r != s:
                    head += f" (ref SpW={r})"
                log.append(f"{head} is: INSUFFICIENT DATA")

    # §6.5 per-field spectral fit
    fits: dict[int, SpectralFit] = {}
    for t in trans:
        good_e = [entries[(t, s)] for s in spw_ids if (t, s) in entries and entries[(t, s)].ok]
        if not good_e:
            continue
        freqs = np.array([e.freq for e in good_e])
        if np.any(freqs <= 0):
            bad = [e.spw_id for e in good_e if e.freq <= 0]
            raise SolveError(f"fluxscale: no frequency known for spw {bad} (needed for the spectral fit)")
        fit = spectral_fit(freqs, np.array([e.fd for e in good_e]), np.array([e.fderr for e in good_e]),
                           fitorder)
        fits[t] = fit
        if len(good_e) > 1 and fit.ok:
            msg = (f"Fitted spectrum for {fname(t)} with fitorder={fit.fitorder_used}: Flux density = "
                   f"{_fmt(fit.fit_flux)} +/- {_fmt(fit.fit_flux_err)} (freq={_fmt(fit.ref_freq / 1e9)} GHz)"
                   " spidx:")
            for j in range(1, fit.fitorder_used + 1):
                label = " a_1 (spectral index) " if j == 1 else f" a_{j}"
                msg += f"{label}={_fmt(fit.spidx[j])} +/- {_fmt(fit.spidxerr[j])}"
            log.append(msg)

    if not any(e.ok for e in entries.values()):
        raise SolveError("No scale factors determined!")

    # §6.6 scaled table: CPARAM / R for every row of a scaleOK (field, spw), flagged rows too.
    # CASA divides the single-precision CPARAM by Complex(Float(R)); with an imaginary part 0 that
    # is a per-component float32 division, reproduced here bit for bit.
    cparam = table.cparam.copy()
    for (t, s), e in entries.items():
        if not e.ok:
            continue
        rows = (table.field_id == t) & (table.spw_id == s)
        r32 = np.float32(e.ratio)
        c = table.cparam[rows].astype(np.complex64)
        out = np.empty(c.shape, dtype=np.complex64)
        out.real = c.real / r32
        out.imag = c.imag / r32
        cparam[rows] = out
    scaled = replace(table.copy(), cparam=cparam)
    return FluxscaleResult(entries=entries, fits=fits, scaled_table=scaled, log=log,
                           reference_fields=refs, transfer_fields=trans, array_size=array_size,
                           field_names=names)
