"""The bodies of fluxflow's Dask tasks. Each takes small plan objects and returns small results.

- :func:`solve_field` — one (MS, field, spw) selection: read once, phase-only solves (§3.5),
  phase applied in memory, amplitude-only T solve per scan (§3.6), partial sums for the
  calibrated-visibility flux (§8) and the amplitude-vs-time series (§10.4). Returns gains and sums.
- :func:`reduce_ms` — per MS: outlier flagging (§5), fluxscale (§6), calibrated fluxes (§8), QA (§10).
- :func:`write_ms_outputs` — per MS, the single writer: caltables and MODEL_DATA (§3.10).
- :func:`reduce_session` — across MSs: adopted fluxes for MSs without a flux calibrator (§12).
"""

from __future__ import annotations

import logging
import os
import traceback
import warnings
from dataclasses import dataclass, field

import numpy as np

from fluxflow.gains import GainTable
from fluxflow.models.catalogue import FluxMeasurement
from fluxflow.models.sky import disk_model, point_model
from fluxflow.plan import FieldTask, ModelSpec, MSPlan, PhaseSolve, bandpass_spix

log = logging.getLogger("fluxflow")


# --------------------------------------------------------------------------------------------
@dataclass
class FieldSolution:
    key: str
    ms_name: str
    field_id: int
    spw_ids: tuple[int, ...]
    role: str
    phase: dict[str, GainTable] = field(default_factory=dict)  # label -> table
    amp: GainTable | None = None
    calvis: dict[int, object] = field(default_factory=dict)  # spw -> CalvisPartials
    amp_time: dict[int, np.ndarray] = field(default_factory=dict)  # spw -> A_t series
    uvamp: dict[int, dict] = field(default_factory=dict)  # spw -> binned |V| and |model| vs uv
    uvamp_restricted: dict[int, dict] = field(default_factory=dict)  # same, baselines of solve A
    nrows: dict[int, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


def _rows_with(scan: np.ndarray, scan_intents: dict[int, frozenset[str]], intents) -> np.ndarray:
    """Rows whose scan carries any of `intents` (a lookup table over scan numbers)."""
    want = set(intents)
    if scan.size == 0:
        return np.zeros(0, bool)
    lo, hi = int(scan.min()), int(scan.max())
    lut = np.zeros(hi - lo + 1, bool)
    for s, ints in scan_intents.items():
        if lo <= int(s) <= hi and ints & want:
            lut[int(s) - lo] = True
    return lut[scan - lo]


def _gain_lookup(table: GainTable, scan: np.ndarray, ant: np.ndarray) -> np.ndarray:
    """|g| of a per-scan T table for each (scan, antenna) pair; NaN where flagged or missing."""
    out = np.full(scan.shape, np.nan)
    if table.nrow == 0 or scan.size == 0:
        return out
    scans = np.unique(np.concatenate([table.scan, scan]))
    n_ant = int(max(table.antenna1.max(), ant.max())) + 1
    lut = np.full((scans.size, n_ant), np.nan)
    amp = np.abs(table.cparam[:, 0, 0]).astype(float)
    amp[table.flag[:, 0, 0]] = np.nan
    lut[np.searchsorted(scans, table.scan), table.antenna1] = amp
    return lut[np.searchsorted(scans, scan), ant]


def _phase_rows(p: PhaseSolve, base: np.ndarray, a1, a2, uvw) -> np.ndarray:
    rows = base.copy()
    if p.antennas is not None:
        sel = np.isin(a1, p.antennas) | np.isin(a2, p.antennas)
        rows &= sel
    if p.uvmax_m is not None:
        rows &= np.hypot(uvw[:, 0], uvw[:, 1]) < p.uvmax_m
    return rows


def preload_row_index(ms: str) -> int | None:
    """Warm this worker's row-index cache for `ms` (fluxflow.ms.rowindex); errors are left to
    the planning and solve tasks, which report them."""
    from fluxflow.ms.rowindex import preload

    try:
        return preload(ms)
    except Exception:  # noqa: BLE001
        return None


def solve_field(task: FieldTask) -> FieldSolution:
    """Read one field/spw selection once and do every solve that needs it (spec §3.5, §3.6)."""
    sol = FieldSolution(key=task.key, ms_name=task.ms_name, field_id=task.field_id,
                        spw_ids=task.spw_ids, role=task.role)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _solve_field(task, sol)
        sol.warnings.extend(f"{w.category.__name__}: {w.message}" for w in caught)
    except Exception as exc:  # noqa: BLE001 - one bad selection must not stop the run
        from fluxflow.errors import FluxflowError

        sol.error = str(exc) if isinstance(exc, FluxflowError) else (
            f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    return sol


def _chunk_model(spec: ModelSpec, ds, par: tuple[int, ...]) -> np.ndarray:
    """The model of one chunk (spec §7.2, Stokes I on the parallel hands): (chan, corr) when it
    is the same on every row (unit, point source at the phase centre, and MODEL_DATA where the
    column is unwritten), (row, chan, corr) for a disk or MODEL_DATA as read."""
    freq = ds["chan_freq"].values
    nrow, nchan, ncorr = ds["vis"].shape
    if spec.kind == "column" and "model" in ds:
        return ds["model"].values
    if spec.kind == "disk":
        m = disk_model(spec.I, spec.spix, spec.ref_freq, spec.diameter_arcsec)(ds["uvw"].values, freq)
        out = np.zeros((nrow, nchan, ncorr), np.complex64)
        out[:, :, list(par)] = m[:, :, None]
        return out
    s = (point_model(spec.I, spec.spix, spec.ref_freq)(np.zeros((1, 3)), freq)[0] if spec.kind == "point"
         else np.ones(nchan))  # unit model, also for an unwritten MODEL_DATA
    out = np.zeros((nchan, ncorr), np.complex64)
    out[:, list(par)] = s[:, None]
    return out


@dataclass
class _Selection:
    """One spw of a task's selection, reduced to per-row channel sums (fluxflow.solve.rowsums)."""

    sums: object  # RowSums
    corr: tuple[str, ...]
    par: tuple[int, ...]
    time: np.ndarray
    interval: np.ndarray
    scan: np.ndarray
    a1: np.ndarray
    a2: np.ndarray
    uvw: np.ndarray

    @property
    def nrow(self) -> int:
        return self.time.size


def _read_reduced(task: FieldTask, s: int, loaded: list) -> _Selection | None:
    """Read (field, spw) chunk by chunk, pre-apply earlier tables per chunk (they may depend on
    channel), and reduce each chunk to row sums at once: memory is one chunk, whatever the
    selection's size. None when no row is selected."""
    from fluxflow.ms import iter_selection
    from fluxflow.solve.rowsums import RowSums, reduce_rows

    spec = task.models[s]
    parts, rows = [], {k: [] for k in ("time", "interval", "scan", "antenna1", "antenna2", "uvw")}
    corr = par = None
    nchan = 0
    for ds in iter_selection(task.ms, task.field_id, s, intents=task.intents, datacolumn=task.datacolumn,
                             read_model=spec.kind == "column", chunk_rows=task.chunk_rows, compact=True):
        corr = tuple(str(c) for c in ds["corr"].values)
        par = tuple(i for i, c in enumerate(corr) if c in ("XX", "YY", "RR", "LL", "I"))
        freq = ds["chan_freq"].values
        vis, flag, weight = ds["vis"].values, ds["flag"].values, ds["weight"].values
        nchan = vis.shape[1]
        for k in rows:
            rows[k].append(ds[k].values)
        if loaded:  # earlier calibration (Tsys, bandpass, ...) applied in memory, flags propagated
            from fluxflow.solve.preapply import apply_calibration

            if weight.ndim == 2:
                weight = np.broadcast_to(weight[:, None, :], vis.shape)
            vis, flag, weight = apply_calibration(
                vis, flag, weight, ds["time"].values, ds["antenna1"].values, ds["antenna2"].values, corr, freq,
                field_id=task.field_id, spw_id=s, loaded=loaded, field_directions=task.field_directions)
        model = _chunk_model(spec, ds, par)
        parts.append(reduce_rows(vis, flag, weight, model))
        del ds, vis, flag, weight, model
    if not parts:
        return None
    cat = {k: np.concatenate(v) for k, v in rows.items()}
    return _Selection(RowSums.concat(parts, len(corr), nchan), corr, par, cat["time"], cat["interval"],
                      cat["scan"], cat["antenna1"], cat["antenna2"], cat["uvw"])


def _solve_field(task: FieldTask, sol: FieldSolution) -> None:
    from fluxflow.solve.apply import apply_gains
    from fluxflow.solve.gaincal import solve_gains
    from fluxflow.transfer.calvis import calvis_partials

    loaded = []
    if task.preapply:
        from fluxflow.solve.preapply import load_calapps

        loaded = load_calapps(list(task.preapply))
    data = {}
    for s in task.spw_ids:
        data[s] = _read_reduced(task, s, loaded)
        sol.nrows[s] = 0 if data[s] is None else data[s].nrow
        if data[s] is None:
            sol.warnings.append(f"field {task.field_name} spw {s}: no rows selected")
    data = {s: d for s, d in data.items() if d is not None}
    amp_tables = []
    # spws whose phases come from another spw (phase-up spwmap) go after the spws they map to
    mapped = {sp for sp in data for p in task.phase_solves
              if p.spwmap and sp < len(p.spwmap) and p.spwmap[sp] != sp and p.spwmap[sp] in data}
    combined: dict[str, GainTable] = {}  # combine='spw' phase tables of this task, by solve
    for s in sorted(data, key=lambda sp: sp in mapped):
        d = data[s]
        corr, par = d.corr, d.par
        time, interval, scan, a1, a2, uvw = d.time, d.interval, d.scan, d.a1, d.a2, d.uvw
        # one-channel cubes: the solver's sums (vis, model, flag, weight) and the channel means
        vis, model, flag, weight = d.sums.solver_inputs()
        vbar, fbar = d.sums.channel_mean()
        vis_ph, vbar_ph, fbar_ph = vis.copy(), vbar.copy(), fbar.copy()

        # §3.5 phase-only solves, applied in memory to the rows each one targets
        covered = np.zeros(d.nrow, bool)
        for p in task.phase_solves:
            rows = _phase_rows(p, _rows_with(scan, task.scan_intents, p.intents), a1, a2, uvw)
            key = f"{p.label}:{','.join(sorted(p.intents))}"
            solve_spw = p.spwmap[s] if p.spwmap and s < len(p.spwmap) else s
            spwmap = None
            if p.combine_spw and len(data) > 1:  # combine='spw': one solve over the group's spws
                group = sorted(data)
                if key not in combined:
                    combined[key] = _solve_combined(task, p, data, group)
                    prev = sol.phase.get(key)
                    sol.phase[key] = combined[key] if prev is None else GainTable.concat([prev, combined[key]])
                table = combined[key]
                spwmap = list(range(max(group) + 1))
                for sp in group:
                    spwmap[sp] = group[0]
            elif solve_spw != s and solve_spw in data:  # solved already (ordered first), mapped onto s
                table, spwmap = sol.phase[key], list(p.spwmap)
            else:
                table = solve_gains(vis[rows], model[rows], flag[rows], weight[rows], time[rows],
                                    interval[rows], scan[rows], a1[rows], a2[rows], n_ant=task.n_ant,
                                    corr_types=corr, solint=p.solint, gaintype=p.gaintype,
                                    calmode="p", refant=task.refants, minblperant=p.minblperant,
                                    minsnr=task.minsnr, field_id=task.field_id, spw_id=s)
                table.meta.update(label=p.label, intents=sorted(p.intents), solint=p.solint,
                                  gaintype=p.gaintype)
                prev = sol.phase.get(key)
                sol.phase[key] = table if prev is None else GainTable.concat([prev, table])
            arows = _rows_with(scan, task.scan_intents, p.apply_intents) & ~covered
            if not arows.any():
                continue
            # the solver's sums and the channel means side by side as two "channels": the gains
            # do not depend on channel, so one apply corrects both
            v, f, _ = apply_gains(np.concatenate([vis[arows], vbar[arows]], axis=1),
                                  np.concatenate([flag[arows], fbar[arows]], axis=1),
                                  np.concatenate([weight[arows], weight[arows]], axis=1), time[arows],
                                  a1[arows], a2[arows], corr, table, field_id=task.field_id, spw_id=s,
                                  interp="linear", calwt=False, spwmap=spwmap)
            vis_ph[arows], flag[arows] = v[:, :1], f[:, :1]
            vbar_ph[arows], fbar_ph[arows] = v[:, 1:], f[:, 1:]
            covered |= arows

        # §3.6 amplitude-only T solve per scan against the model, phases applied
        rows = np.ones(d.nrow, bool)
        if task.antennas is not None:
            rows = np.isin(a1, task.antennas) | np.isin(a2, task.antennas)
        amp = solve_gains(vis_ph[rows], model[rows], flag[rows], weight[rows], time[rows],
                          interval[rows], scan[rows], a1[rows], a2[rows], n_ant=task.n_ant,
                          corr_types=corr, solint=task.amp_solint, gaintype="T", calmode="a",
                          refant=task.refants, minblperant=2, minsnr=task.minsnr,
                          field_id=task.field_id, spw_id=s)
        amp_tables.append(amp)
        if task.role == "reference":
            mmean = d.sums.model_mean()
            sol.uvamp[s] = uv_profile(vbar_ph, fbar_ph, mmean, uvw, scan, a1, a2, amp, par)
            for p in task.phase_solves:
                if p.label == "A" and (p.antennas is not None or p.uvmax_m is not None):
                    r = _phase_rows(p, np.ones(d.nrow, bool), a1, a2, uvw)
                    sol.uvamp_restricted[s] = uv_profile(vbar_ph[r], fbar_ph[r], mmean[r], uvw[r], scan[r],
                                                         a1[r], a2[r], amp, par)

        # §8 partial sums of the phase-calibrated, channel-averaged data of the transfer intents
        if task.calvis_intents:
            cr = _rows_with(scan, task.scan_intents, task.calvis_intents)
            sol.calvis[s] = calvis_partials(vbar_ph[cr], fbar_ph[cr], d.sums.wmean[cr], a1[cr], a2[cr],
                                            scan[cr], corr)
        # §10.4 amplitude-vs-time series of the flux calibrator (data as read, pre-applied tables applied)
        if task.amp_time:
            sol.amp_time[s] = _amp_time_series(vbar, fbar, time,
                                               _rows_with(scan, task.scan_intents, {"AMPLITUDE"}))
    if amp_tables:
        sol.amp = GainTable.concat(amp_tables)
        sol.amp.ms_name = task.ms_name


def _solve_combined(task: FieldTask, p: PhaseSolve, data: dict, group: list[int]) -> GainTable:
    """Phase solve `p` with combine='spw' over the spws of `group` (spec §3.5: phase-up records
    that combine spws): each spw's row sums enter one solve, labelled with the lowest spw."""
    from fluxflow.solve.gaincal import solve_gains_multi_spw

    parts = {k: [] for k in ("vis", "model", "flag", "weight", "time", "interval", "scan", "a1", "a2")}
    for sp in group:
        d = data[sp]
        rows = _phase_rows(p, _rows_with(d.scan, task.scan_intents, p.intents), d.a1, d.a2, d.uvw)
        vis, model, flag, weight = d.sums.solver_inputs()
        for k, v in zip(parts, (vis, model, flag, weight, d.time, d.interval, d.scan, d.a1, d.a2)):
            parts[k].append(v[rows])
    table = solve_gains_multi_spw(
        parts["vis"], parts["model"], parts["flag"], parts["weight"], parts["time"], parts["interval"],
        parts["scan"], parts["a1"], parts["a2"], spw_ids=group, n_ant=task.n_ant,
        corr_types=data[group[0]].corr, solint=p.solint, gaintype=p.gaintype, calmode="p",
        refant=task.refants, minblperant=p.minblperant, minsnr=task.minsnr, field_id=task.field_id)
    table.meta.update(label=p.label, intents=sorted(p.intents), solint=p.solint, gaintype=p.gaintype)
    return table


def uv_profile(vis, flag, model, uvw, scan, a1, a2, amp: GainTable, par, nbins: int = 24) -> dict:
    """Calibrated amplitude and model amplitude vs projected baseline length (report plot).

    Data are phase-calibrated and divided by the per-scan T amplitudes; parallel hands averaged
    (fluxflow passes channel means per correlation, (row, 1, corr)); binned in uv distance (m)
    with the mean per bin."""
    uvd = np.hypot(uvw[:, 0], uvw[:, 1])
    good = ~flag[:, :, par]
    n = good.sum(axis=(1, 2))
    v = np.where(n > 0, (vis[:, :, par] * good).sum(axis=(1, 2)) / np.maximum(n, 1), np.nan)
    m = np.abs(model[:, :, par]).mean(axis=(1, 2))
    cal = np.abs(v) / (_gain_lookup(amp, scan, a1) * _gain_lookup(amp, scan, a2))
    ok = np.isfinite(cal)
    if not ok.any():
        return {}
    edges = np.linspace(0.0, uvd[ok].max() * 1.0001, nbins + 1)
    idx = np.clip(np.digitize(uvd, edges) - 1, 0, nbins - 1)
    cnt = np.bincount(idx[ok], minlength=nbins)
    keep = cnt > 0
    mean = lambda x: (np.bincount(idx[ok], weights=x[ok], minlength=nbins)[keep] / cnt[keep])  # noqa: E731
    return {"uvdist_m": mean(uvd).tolist(), "amp": mean(cal).tolist(), "model": mean(m).tolist(),
            "n": cnt[keep].tolist()}


def _amp_time_series(vis, flag, time, rows) -> np.ndarray:
    """Spec §10.4 step 2: channel-averaged |V| (all correlations), mean per unique TIME."""
    v, f, t = vis[rows], flag[rows], time[rows]
    if v.shape[0] == 0:
        return np.zeros(0)
    good = ~f
    n = good.sum(axis=1)
    avg = np.where(n > 0, (v * good).sum(axis=1) / np.maximum(n, 1), np.nan)  # (row, corr)
    amp = np.abs(avg)
    valid = (n > 0) & np.isfinite(amp)
    ut, inv = np.unique(t, return_inverse=True)
    s = np.bincount(inv, weights=np.where(valid, amp, 0).sum(axis=1), minlength=ut.size)
    c = np.bincount(inv, weights=valid.sum(axis=1), minlength=ut.size)
    return (s[c > 0] / c[c > 0]).astype(float)


# --------------------------------------------------------------------------------------------
@dataclass
class MSResult:
    ms: str
    ms_name: str
    plan: MSPlan | None = None
    derived: list[FluxMeasurement] = field(default_factory=list)  # fluxscale fd ± fderr
    measurements: list[FluxMeasurement] = field(default_factory=list)  # calibrated-visibility
    qa: list = field(default_factory=list)  # QAScore
    flag_commands: list = field(default_factory=list)
    fluxscale_log: list[str] = field(default_factory=list)
    spectral_fits: dict = field(default_factory=dict)  # field id -> fit dict
    plots: dict = field(default_factory=dict)  # small arrays for the report
    phase_tables: dict[str, GainTable] = field(default_factory=dict)
    amp_table: GainTable | None = None
    amp_table_flagged: GainTable | None = None
    scaled_table: GainTable | None = None
    caltables: dict[str, str] = field(default_factory=dict)
    model_rows_written: int = 0
    adopted: bool = False
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


def reduce_ms(plan: MSPlan, solutions: list[FieldSolution], amp_outlier_sigma: float) -> MSResult:
    """Per-MS reduction: outliers (§5), fluxscale (§6), calibrated fluxes (§8), QA (§10)."""
    res = MSResult(ms=plan.ms, ms_name=plan.ms_name, plan=plan, warnings=list(plan.warnings))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _reduce_ms(plan, solutions, amp_outlier_sigma, res)
        res.warnings.extend(f"{w.category.__name__}: {w.message}" for w in caught)
    except Exception as exc:  # noqa: BLE001
        from fluxflow.errors import FluxflowError

        res.error = str(exc) if isinstance(exc, FluxflowError) else (
            f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    return res


def _reduce_ms(plan: MSPlan, solutions: list[FieldSolution], sigma: float, res: MSResult) -> None:
    from fluxflow.solve.outliers import flag_amplitude_outliers
    from fluxflow.transfer.calvis import calvis_flux
    from fluxflow.transfer.fluxscale import fluxscale

    for s in solutions:
        res.warnings.extend(f"{s.key}: {w}" for w in s.warnings)
        if s.error:
            res.warnings.append(f"{s.key}: solve failed: {s.error}")
    good = [s for s in solutions if not s.error]
    for s in good:
        for key, t in s.phase.items():
            prev = res.phase_tables.get(key)
            res.phase_tables[key] = t if prev is None else GainTable.concat([prev, t])
    for s in good:
        for spw, prof in s.uvamp.items():
            if prof:
                res.plots.setdefault("uvamp", {}).setdefault(str(s.field_id), {})[str(spw)] = prof
        for spw, prof in s.uvamp_restricted.items():
            if prof:
                res.plots.setdefault("uvamp_restricted", {}).setdefault(str(s.field_id), {})[str(spw)] = prof
        for spw, series in s.amp_time.items():
            res.plots.setdefault("amp_time", {}).setdefault(str(s.field_id), {})[str(spw)] = series
    amps = [s.amp for s in good if s.amp is not None and s.amp.nrow]
    if not amps:
        raise_solve("no amplitude solutions: every calibrator solve failed or had no data")
    amp = GainTable.concat(amps)
    amp.ms_name = plan.ms_name
    res.amp_table = amp

    # §5 outlier flagging: fields whose *name* is in the reference/transfer lists
    names = {plan.field_names[i] for i in plan.reference_ids + plan.transfer_ids}
    check = sorted(i for i, n in plan.field_names.items() if n in names)
    flagged, cmds = flag_amplitude_outliers(
        amp, check, plan.science_spws, {f: set(v) for f, v in plan.valid_spws.items()},
        plan.antenna_names, sigma=sigma)
    res.amp_table_flagged, res.flag_commands = flagged, cmds

    # §6 fluxscale
    sci_freqs = {s: plan.spw_freqs[s] for s in plan.science_spws}
    fs = fluxscale(flagged, plan.reference_ids, plan.transfer_ids, list(plan.refspwmap),
                   sci_freqs, plan.n_ant, field_names=plan.field_names)
    res.scaled_table = fs.scaled_table
    res.fluxscale_log = list(fs.log)
    res.spectral_fits = dict(fs.fits)
    res.derived = [m for m in fs.measurements()]

    # §8 calibrated-visibility flux from the partial sums, with the outlier-flagged amplitudes
    # and the fluxscale factor (the scaled table divides the gains by sqrt(fd)).
    for s in good:
        if s.role != "transfer":
            continue
        for spw, partials in s.calvis.items():
            lut = _amp_lookup(flagged, s.field_id, spw)
            e = fs.entries.get((s.field_id, spw))
            scale = e.fd if (e is not None and e.ok) else 1.0
            flux, sigma_ = calvis_flux(partials, amp=lut, scale=scale)
            if flux > 0:
                res.measurements.append(FluxMeasurement(
                    field_id=s.field_id, field_name=plan.field_names[s.field_id], spw_id=spw,
                    I=flux, I_err=sigma_, origin="calvis", freq=plan.spw_freqs.get(spw, float("nan"))))
    res.measurements.sort(key=lambda m: (str(m.field_id), m.spw_id))

    # §10 QA
    res.qa = qa_scores(plan, res.measurements,
                       {(s.field_id, sp): t for s in good for sp, t in s.amp_time.items()})


def raise_solve(msg: str) -> None:
    from fluxflow.errors import SolveError

    raise SolveError(msg)


def _amp_lookup(table: GainTable, field_id: int, spw_id: int):
    """(scan, antenna) -> unflagged T amplitude, NaN when flagged or missing (calflagstrict)."""
    t = table.select((table.field_id == field_id) & (table.spw_id == spw_id))
    return lambda scan, ant: _gain_lookup(t, np.asarray(scan), np.asarray(ant))


def qa_scores(plan: MSPlan, measurements: list[FluxMeasurement], amp_time: dict) -> list:
    """Spec §10.1-§10.4 for one MS. K_spw and the amplitude-vs-time spw order are ranked by the
    PHASE calibrator's measured calibrated-flux SNR (fluxflow has no Tsys table for §10.5)."""
    from fluxflow.transfer import qa

    vis = plan.ms_name
    scores = [qa.score_missing_derived_fluxes(plan.expected_measurements, measurements, vis=vis),
              qa.score_derived_fluxes_snr(measurements, vis=vis)]
    phase_fields = [f for f in plan.transfer_ids if "PHASE" in plan.field_intents[f]]
    no_target = [f for f in phase_fields if "TARGET" not in plan.field_intents[f]]
    pf = (no_target or phase_fields or [None])[0]
    snr = qa.snr_from_measurements([m for m in measurements if m.field_id == pf]) if pf is not None else {}
    if pf is not None and measurements:
        cat = qa.external_catalogue(plan.catalogue)
        scores.extend(qa.score_gfluxscale_k_spw(
            measurements, cat, snr, plan.spw_bandwidths, vis=vis, field_names=plan.field_names,
            field_intents={f: plan.field_intents[f] for f in plan.transfer_ids}))
    order = sorted(snr, key=lambda s: -snr[s]) or list(plan.science_spws)
    for fid in plan.reference_ids:
        if "AMPLITUDE" in plan.field_intents[fid] and not plan.field_is_ephemeris[fid]:
            series = {spw: a for (f, spw), a in amp_time.items() if f == fid}
            scores.append(qa.score_amp_time_variation(series, order, vis=vis, field_id=fid,
                                                      field_name=plan.field_names[fid]))
    return scores


# --------------------------------------------------------------------------------------------
def write_ms_outputs(res: MSResult, outdir: str, write_model: bool) -> MSResult:
    """The single writer of one MS: caltables (own files) and MODEL_DATA (§3.10)."""
    if res.error or res.plan is None:
        return res
    from fluxflow.ms import write_caltable

    plan = res.plan
    try:
        os.makedirs(outdir, exist_ok=True)
        base = os.path.join(outdir, plan.ms_name.removesuffix(".ms"))
        tables = {f"phase_{k.split(':')[0]}": t for k, t in res.phase_tables.items()}
        merged: dict[str, list[GainTable]] = {}
        for name, t in tables.items():
            merged.setdefault(f"{name}.{'G' if t.npar == 2 else 'T'}", []).append(t)
        for name, ts in merged.items():
            path = f"{base}.{name}.tbl"
            write_caltable(path, GainTable.concat(ts), plan.ms, overwrite=True)
            res.caltables[name] = path
        for name, t in (("amp", res.amp_table_flagged), ("fluxscale", res.scaled_table)):
            if t is not None:
                path = f"{base}.{name}.tbl"
                write_caltable(path, t, plan.ms, overwrite=True)
                res.caltables[name] = path
        if write_model:
            res.model_rows_written = write_models(plan, res.derived)
    except Exception as exc:  # noqa: BLE001
        res.error = f"writing outputs: {exc}"
    return res


def write_models(plan: MSPlan, fluxes: list[FluxMeasurement]) -> int:
    """MODEL_DATA: derived fluxes on the transfer fields (their transfer intents), the catalogue
    model on the reference fields (their calibrator intents). Unit model where nothing derived.
    One write pass with the MS opened once (a new column is initialised only where no model goes)."""
    from fluxflow.ms import write_models as write_all

    got = {(m.field_id, m.spw_id): m.I for m in fluxes}
    ti = set(plan.transintents)
    writes = []
    for fid in plan.transfer_ids:
        intents = set(plan.field_intents[fid]) & ti
        for spw in plan.valid_spws.get(fid, []):
            # spec §3.10: derived flux (1 Jy where none), catalogue spix for BANDPASS fields only
            spix = (bandpass_spix(plan.catalogue, plan.ms_name, fid, spw)
                    if "BANDPASS" in plan.field_intents[fid] else 0.0)
            writes.append((fid, spw, point_model(got.get((fid, spw), 1.0), spix, plan.spw_freqs[spw]), intents))
    for task in plan.tasks:
        if task.role != "reference":
            continue
        for spw, spec in task.models.items():
            if spec.kind in ("point", "disk"):
                fn = (point_model(spec.I, spec.spix, spec.ref_freq) if spec.kind == "point" else
                      disk_model(spec.I, spec.spix, spec.ref_freq, spec.diameter_arcsec))
                writes.append((task.field_id, spw, fn, task.intents))
    return write_all(plan.ms, writes) if writes else 0


# --------------------------------------------------------------------------------------------
def reduce_session(results: list[MSResult]) -> list[MSResult]:
    """Spec §12 'adopted': MSs without a reference calibrator take the session mean per field name
    and spw name from the other MSs."""
    from fluxflow.transfer.adopted import adopt_session_fluxes

    adopters = [r for r in results if r.plan is not None and r.plan.adopt and not r.error]
    if not adopters:
        return results
    per_ms = {r.ms_name: r.measurements for r in results if r.plan is not None and not r.plan.adopt
              and not r.error}
    spw_names = {r.ms_name: r.plan.spw_names for r in results if r.plan is not None}
    if not per_ms:
        for r in adopters:
            r.error = (f"no field with intent {','.join(r.plan.refintents)} (and no `reference` "
                       "given), and no other MS of the run has one to adopt fluxes from")
        return results
    field_ids = {r.ms_name: {n: i for i, n in r.plan.field_names.items() if i in r.plan.transfer_ids}
                 for r in adopters}
    adopted = adopt_session_fluxes(per_ms, [r.ms_name for r in adopters], spw_names, field_ids)
    for r in adopters:
        out = list(adopted.get(r.ms_name, []))
        r.measurements = sorted(out, key=lambda m: (str(m.field_id), m.spw_id))
        r.derived = list(r.measurements)
        r.adopted = True
        if not out:
            r.warnings.append("no fields in common with the MSs that have a flux calibrator")
    return results


def render_figures(res: MSResult, figure_cache: str) -> str | None:
    """Draw one MS's report figures into the run's figure cache (runs beside its writer). A
    failure only means build_report draws them itself."""
    if res.error or res.plan is None or res.plan.adopt:
        return None
    try:
        from fluxflow.report.build import prerender_ms_figures
        from fluxflow.results import ms_record

        return prerender_ms_figures(ms_record(res), figure_cache)
    except Exception as exc:  # noqa: BLE001 - the report is not worth failing the run for
        log.warning("%s: figures not pre-rendered: %s", res.ms_name, exc)
        return None


def write_adopted_models(res: MSResult, write_model: bool) -> MSResult:
    if res.adopted and write_model and not res.error:
        try:
            res.model_rows_written = write_models(res.plan, res.measurements)
        except Exception as exc:  # noqa: BLE001
            res.error = f"writing MODEL_DATA: {exc}"
    return res


def write_adopted_all(results: list[MSResult], write_model: bool) -> list[MSResult]:
    """Last task of the graph: MODEL_DATA of adopted MSs."""
    return [write_adopted_models(r, write_model) for r in results]
