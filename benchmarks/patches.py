"""Benchmark-local prototypes of proposed fluxflow fixes, applied as monkeypatches.

fluxflow itself is not edited: each patch replaces functions at run time, in this process and
(through ``client.run``) in every Dask worker, so that io_floor.py, scaling.py and memory.py can
measure the gain with ``--patch NAME``. They are prototypes for the report, not the fixes; each
was checked to give the same fluxes as unpatched fluxflow (to float32 rounding for ``rowsums``).

* ``rowsel`` — row selection without TaQL. Each (field, spw) read ran two TaQL queries over the
  whole main table (WHERE on FIELD_ID, DATA_DESC_ID, STATE_ID, ANTENNA1/2 and a sort on TIME,
  ANTENNA1, ANTENNA2), each MODEL_DATA write one more; with the StandardStMan layout every query
  reads the whole SSM file once per column it touches (~0.3-0.5 s and 1.5 GB of page-cache reads
  per query on the benchmark EB). The patch reads the index columns once per process and MS,
  selects rows with numpy (same WHERE semantics, same sort order) and opens them with
  ``table.selectrows``.
* ``rowsums`` — solve_field without (row, chan, corr) cubes. Everything solve_field needs is linear
  in the channel axis because G/T gains do not depend on channel (spec §9 step 3): gaincal's
  Σ_chan w|M|² and Σ_chan w·V·conj(M), the unflagged channel sum and count (§8 step 3, §10.4), the
  mean weight (§8 step 2), Σ_chan |M| (uv plot). The patch reads the selection in chunks of at
  most chunk_rows rows (and at most 256 MiB, selection.DEFAULT_CHUNK_BYTES) into reused buffers
  (``getcolnp``), reduces each chunk to these (row, corr) sums — for point/unit models and
  per-row weights as BLAS matrix-vector products with the model spectrum, otherwise with the
  cube formulas — and runs fluxflow's unchanged solvers, apply_gains and calvis_partials on
  one-channel "cubes" (V̄ = Σ wVM*/Σ w|M|², M = 1, weight = Σ w|M|² gives gaincal the same
  sums). Peak memory per task is O(chunk), not O(selection). The uv-profile plot averages per
  correlation first (plot only). Tasks that combine or map spws, pre-apply earlier tables
  (channel-dependent: they must be applied to each chunk before the reduction) or restrict
  the reference solve (resolved calibrators) fall back to fluxflow's code.
* ``scanindex`` — read_metadata's scan index deduplicated (scan, field, ddid, state, obs) over
  every row with np.unique (an O(n log n) sort of 2.4 M rows on the client before any task can
  start). Rows come in long runs of equal values, so the patch keeps the first row of each run
  (one vectorised comparison with the previous row) before the unique. Same result.
* ``modelwrite`` — write_model_data evaluated the model per row (UVW read, (row, chan) complex128
  model, isfinite over it, a new complex64 cube per chunk). For models that do not depend on
  UVW (point sources at the phase centre: every MODEL_DATA write of the benchmark) the patch
  builds one chunk of cells once and writes it for every chunk; other models keep the old path.
* ``planpar`` — workflow.plan_all read the metadata (scan index, refant flag statistics) and
  planned every MS one after the other on the client before the first task could start. The
  patch plans the MSs in parallel on the Dask workers (client.map, one task per MS) when a
  distributed client is the default client.
* ``reportoff`` — measures what the end-of-run products cost on the client: the HTML report
  (matplotlib plots per MS, build_report) and Dask's performance_report are skipped.
"""

from __future__ import annotations

import sys

import numpy as np

_INDEX: dict = {}
_SPECS: dict[str, dict] = {}
_INDEX_COLUMNS = ("FIELD_ID", "DATA_DESC_ID", "STATE_ID", "SCAN_NUMBER", "ANTENNA1", "ANTENNA2", "TIME")


# ------------------------------------------------------------------------------------------ rowsel
def _index(t) -> dict[str, np.ndarray]:
    key = (t.name(), t.nrows())
    idx = _INDEX.get(key)
    if idx is None:
        if len(_INDEX) >= 16:
            _INDEX.pop(next(iter(_INDEX)))
        idx = _INDEX[key] = {c: t.getcol(c) for c in _INDEX_COLUMNS}
    return idx


def _rows(t, spec: dict, sort: bool) -> np.ndarray:
    idx = _index(t)
    m = (idx["FIELD_ID"] == spec["field_id"]) & np.isin(idx["DATA_DESC_ID"], spec["ddids"])
    if spec["states"] is not None:
        m &= np.isin(idx["STATE_ID"], spec["states"])
    if spec["scans"] is not None:
        m &= np.isin(idx["SCAN_NUMBER"], spec["scans"])
    if spec["ants"] is not None:
        m &= np.isin(idx["ANTENNA1"], spec["ants"]) & np.isin(idx["ANTENNA2"], spec["ants"])
    if spec["cross_only"]:
        m &= idx["ANTENNA1"] != idx["ANTENNA2"]
    rows = np.flatnonzero(m)
    if sort and rows.size:  # SORT_ORDER = TIME, ANTENNA1, ANTENNA2, ROWID()
        rows = rows[np.lexsort((rows, idx["ANTENNA2"][rows], idx["ANTENNA1"][rows], idx["TIME"][rows]))]
    return rows


def _patch_rowsel() -> None:
    import casacore.tables as ct

    import fluxflow.ms.model_data as mdm
    import fluxflow.ms.selection as sel

    if getattr(sel, "_bench_rowsel", False):
        return
    orig_plan = sel.plan_selection
    orig_query = ct.table.query

    def plan_selection(md, field_id, spw_id, intents=None, scans=None, antennas=None, cross_only=True):
        plan = orig_plan(md, field_id, spw_id, intents, scans, antennas, cross_only)
        if plan.where is not None:
            want = sel._as_list(intents)
            scan_list = sel._as_list(scans)
            ant_list = sel._as_list(antennas)
            _SPECS[plan.where] = {
                "field_id": plan.field_id, "ddids": list(plan.ddids),
                "states": None if want is None else md.state_ids_for_intents(want),
                "scans": None if scan_list is None else sorted({int(s) for s in scan_list}),
                "ants": None if ant_list is None else sorted({md.antenna(a).id for a in ant_list}),
                "cross_only": cross_only}
        return plan

    def query_selection(t, plan):
        if plan.where is None:
            return None, np.zeros(0, dtype=np.int64)
        rows = _rows(t, _SPECS[plan.where], sort=True)
        if rows.size == 0:
            return None, np.zeros(0, dtype=np.int64)
        return t.selectrows(rows), rows.astype(np.int64)

    def query(self, query="", name="", sortlist="", columns="", limit=0, offset=0, style="Python"):
        spec = _SPECS.get(query)
        if spec is not None and not (name or sortlist or columns or limit or offset):
            return self.selectrows(_rows(self, spec, sort=False))
        return orig_query(self, query, name, sortlist, columns, limit, offset, style)

    sel.plan_selection = plan_selection
    mdm.plan_selection = plan_selection
    sel.query_selection = query_selection
    ct.table.query = query
    sel._bench_rowsel = True


# ----------------------------------------------------------------------------------------- rowsums
def _model_cells(spec, freq: np.ndarray, ncorr: int, par: list[int]) -> np.ndarray | None:
    """(chan, corr) model of a point/unit ModelSpec (the same on every row); None otherwise."""
    from fluxflow.models.sky import _spectrum

    if spec.kind == "unit":
        s = np.ones(freq.size)
    elif spec.kind == "point":
        s = _spectrum(spec.I, spec.spix, spec.ref_freq, freq)
    else:
        return None
    out = np.zeros((freq.size, ncorr), np.complex64)
    out[:, par] = s[:, None]
    return out


def _reduce_fast(v: np.ndarray, f: np.ndarray, w: np.ndarray, mc: np.ndarray, gbuf: np.ndarray) -> dict:
    """Row sums for a row-independent model `mc` (chan, corr) and per-row weights `w` (row, corr).

    `v` (finite) is zeroed in place where flagged. Matrix-vector products run in BLAS (float32
    accumulation over the channels, as CASA's own averaging).
    """
    n, nchan, ncorr = v.shape
    np.copyto(v, 0, where=f)
    g = gbuf[:n]
    np.logical_not(f, out=g, casting="unsafe")
    ones_c = np.ones(nchan, np.complex64)
    ones_f = np.ones(nchan, np.float32)
    m2 = (mc.real ** 2 + mc.imag ** 2).astype(np.float32)
    mcc = np.conj(mc)
    sv = np.empty((n, ncorr), np.complex128)
    s1 = np.empty((n, ncorr), np.complex128)
    cnt = np.empty((n, ncorr), np.float64)
    sm2 = np.empty((n, ncorr), np.float64)
    for p in range(ncorr):
        vp, gp = v[:, :, p], g[:, :, p]
        sv[:, p] = vp @ mcc[:, p]
        s1[:, p] = vp @ ones_c
        cnt[:, p] = gp @ ones_f
        sm2[:, p] = gp @ m2[:, p]
    wok = (w > 0) & np.isfinite(w)
    w64 = np.where(wok, w, 0).astype(np.float64)
    return {"sw": w64 * sm2, "sv": w64 * sv, "s1": s1, "n": np.rint(cnt).astype(np.int64),
            "wmean": w.astype(np.float64), "mabs": np.broadcast_to(np.abs(mc).sum(axis=0), (n, ncorr)).copy()}


def _reduce_cube(v, f, w, model) -> dict:
    """Row sums from full (row, chan, corr) cubes (any model, weight spectrum, non-finite data)."""
    if w.ndim == 2:
        w = np.broadcast_to(w[:, None, :], v.shape)
    good = ~f
    usable = good & (w > 0) & (model != 0) & np.isfinite(v) & np.isfinite(model) & np.isfinite(w)
    wm = np.where(usable, w * (model.real ** 2 + model.imag ** 2), 0).sum(axis=1, dtype=np.float64)
    wv = np.where(usable, w * v * np.conj(model), 0).sum(axis=1, dtype=np.complex128)
    return {"sw": wm, "sv": wv, "s1": np.where(good, v, 0).sum(axis=1, dtype=np.complex128),
            "n": good.sum(axis=1), "wmean": w.mean(axis=1, dtype=np.float64),
            "mabs": np.abs(model).sum(axis=1, dtype=np.float64)}


def _read_reduce(task, s: int, md) -> tuple[dict, tuple, int] | None:
    """Chunked read of one (field, spw) selection reduced to (row, corr) sums."""
    import fluxflow.ms.selection as sel
    import fluxflow.tasks as tasks
    from fluxflow.ms.tables import ensure_lock, open_ms

    plan = sel.plan_selection(md, task.field_id, s, task.intents)
    nchan, ncorr = plan.spw.num_chan, plan.pol.num_corr
    corr = tuple(plan.pol.corr_types)
    par = [i for i, c in enumerate(corr) if c in ("XX", "YY", "RR", "LL", "I")]
    freq = np.asarray(plan.spw.chan_freq, np.float64)
    spec = task.models[s]
    mc = _model_cells(spec, freq, ncorr, par)
    step = min(task.chunk_rows, sel.chunk_rows_for(nchan, ncorr, None))
    parts = []
    with open_ms(task.ms) as t:
        sel._check_datacolumn(t, task.ms, task.datacolumn)
        q, row_ids = sel.query_selection(t, plan)
        if q is None:
            return None
        nrow = row_ids.size
        has_ws = sel._cells_defined(q, "WEIGHT_SPECTRUM", 0)
        step = min(step, nrow)
        vbuf = np.empty((step, nchan, ncorr), np.complex64)
        fbuf = np.empty((step, nchan, ncorr), bool)
        gbuf = np.empty((step, nchan, ncorr), np.float32)
        try:
            for start in range(0, nrow, step):
                m = min(step, nrow - start)
                ensure_lock(t, task.ms, write=False)
                v, f = vbuf[:m], fbuf[:m]
                q.getcolnp(task.datacolumn, v, start, m)
                q.getcolnp("FLAG", f, start, m)
                frow = q.getcol("FLAG_ROW", start, m)
                if frow.any():
                    f[frow] = True
                w = (np.asarray(q.getcol("WEIGHT_SPECTRUM", start, m), np.float32) if has_ws
                     else np.asarray(q.getcol("WEIGHT", start, m), np.float32))
                if mc is not None and not has_ws and np.isfinite(v).all():
                    red = _reduce_fast(v, f, w, mc, gbuf)
                else:
                    if mc is not None:
                        model = np.broadcast_to(mc, v.shape)
                    elif spec.kind == "column":
                        model = np.asarray(q.getcol("MODEL_DATA", start, m), np.complex64)
                    else:
                        import xarray as xr

                        uvw = np.asarray(q.getcol("UVW", start, m), np.float64)
                        ds = xr.Dataset({"uvw": (("row", "uvw"), uvw), "vis": (("row", "chan", "corr"), v)},
                                        coords={"chan_freq": ("chan", freq)})
                        model = tasks._model_array(spec, ds, tuple(par))
                    red = _reduce_cube(v, f, w, model)
                red["time"] = q.getcol("TIME", start, m)
                red["interval"] = q.getcol("INTERVAL", start, m)
                red["scan"] = q.getcol("SCAN_NUMBER", start, m)
                red["antenna1"] = q.getcol("ANTENNA1", start, m)
                red["antenna2"] = q.getcol("ANTENNA2", start, m)
                red["uvw"] = np.asarray(q.getcol("UVW", start, m), np.float64).reshape(m, 3)
                parts.append(red)
        finally:
            del q
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return cat, (corr, tuple(par)), nchan


def _patch_rowsums() -> None:
    import fluxflow.tasks as tasks

    if getattr(tasks, "_bench_rowsums", False):
        return
    orig = tasks._solve_field

    def _solve_field(task, sol) -> None:
        restricted = task.role == "reference" and any(
            p.label == "A" and (p.antennas is not None or p.uvmax_m is not None) for p in task.phase_solves)
        if (len(task.spw_ids) != 1 or any(p.spwmap or p.combine_spw for p in task.phase_solves)
                or getattr(task, "preapply", ()) or restricted):
            return orig(task, sol)  # spw groups, pre-applied tables, resolved-calibrator plots
        from fluxflow.gains import GainTable
        from fluxflow.ms import read_metadata
        from fluxflow.solve.apply import apply_gains
        from fluxflow.solve.gaincal import solve_gains
        from fluxflow.transfer.calvis import calvis_partials

        s = task.spw_ids[0]
        md = read_metadata(task.ms, with_scans=False, warn=False)
        got = _read_reduce(task, s, md)
        if got is None:
            sol.nrows[s] = 0
            sol.warnings.append(f"field {task.field_name} spw {s}: no rows selected")
            return
        cat, (corr, par), nchan = got
        nrow = cat["sw"].shape[0]
        sol.nrows[s] = nrow
        time, interval, scan = cat["time"], cat["interval"], cat["scan"]
        a1, a2, uvw = cat["antenna1"], cat["antenna2"], cat["uvw"]
        sw = cat["sw"]
        vis1 = np.divide(cat["sv"], sw, out=np.zeros_like(cat["sv"]), where=sw > 0)[:, None, :]
        flag1 = (sw <= 0)[:, None, :]
        w1 = sw[:, None, :]
        m1 = np.ones_like(vis1)
        n = cat["n"]
        vbar = np.divide(cat["s1"], n, out=np.zeros_like(cat["s1"]), where=n > 0)[:, None, :]
        fbar = (n == 0)[:, None, :]
        vis_ph, vbar_ph, fbar_ph = vis1.copy(), vbar.copy(), fbar.copy()
        covered = np.zeros(nrow, bool)
        for p in task.phase_solves:
            rows = tasks._phase_rows(p, tasks._rows_with(scan, task.scan_intents, p.intents), a1, a2, uvw)
            table = solve_gains(vis1[rows], m1[rows], flag1[rows], w1[rows], time[rows], interval[rows],
                                scan[rows], a1[rows], a2[rows], n_ant=task.n_ant, corr_types=corr,
                                solint=p.solint, gaintype=p.gaintype, calmode="p", refant=task.refants,
                                minblperant=p.minblperant, minsnr=task.minsnr, field_id=task.field_id, spw_id=s)
            table.meta.update(label=p.label, intents=sorted(p.intents), solint=p.solint, gaintype=p.gaintype)
            key = f"{p.label}:{','.join(sorted(p.intents))}"
            prev = sol.phase.get(key)
            sol.phase[key] = table if prev is None else GainTable.concat([prev, table])
            arows = tasks._rows_with(scan, task.scan_intents, p.apply_intents) & ~covered
            if not arows.any():
                continue
            for src, fsrc, dst, fdst in ((vis1, flag1, vis_ph, flag1), (vbar, fbar, vbar_ph, fbar_ph)):
                v, f, _ = apply_gains(src[arows], fsrc[arows], np.ones(fsrc[arows].shape), time[arows],
                                      a1[arows], a2[arows], corr, table, field_id=task.field_id, spw_id=s,
                                      interp="linear", calwt=False)
                dst[arows] = v
                fdst[arows] = f
            covered |= arows
        rows = np.ones(nrow, bool)
        if task.antennas is not None:
            rows = np.isin(a1, task.antennas) | np.isin(a2, task.antennas)
        amp = solve_gains(vis_ph[rows], m1[rows], flag1[rows], w1[rows], time[rows], interval[rows], scan[rows],
                          a1[rows], a2[rows], n_ant=task.n_ant, corr_types=corr, solint=task.amp_solint,
                          gaintype="T", calmode="a", refant=task.refants, minblperant=2, minsnr=task.minsnr,
                          field_id=task.field_id, spw_id=s)
        sol.amp = amp
        sol.amp.ms_name = task.ms_name
        if task.role == "reference":
            mcube = (cat["mabs"] / nchan)[:, None, :]
            sol.uvamp[s] = tasks.uv_profile(vbar_ph, fbar_ph, mcube, uvw, scan, a1, a2, amp, par)
        if task.calvis_intents:
            cr = tasks._rows_with(scan, task.scan_intents, task.calvis_intents)
            sol.calvis[s] = calvis_partials(vbar_ph[cr], fbar_ph[cr], cat["wmean"][cr], a1[cr], a2[cr],
                                            scan[cr], corr)
        if task.amp_time:
            sol.amp_time[s] = tasks._amp_time_series(vbar, fbar, time,
                                                     tasks._rows_with(scan, task.scan_intents, {"AMPLITUDE"}))

    tasks._solve_field = _solve_field
    tasks._bench_rowsums = True


# --------------------------------------------------------------------------------------- scanindex
def _patch_scanindex() -> None:
    import fluxflow.ms.metadata as meta

    if getattr(meta, "_bench_scanindex", False):
        return
    orig = meta._unique_rows

    def _unique_rows(block: np.ndarray) -> np.ndarray:
        if block.shape[0] > 1:
            heads = np.ones(block.shape[0], bool)
            heads[1:] = np.any(block[1:] != block[:-1], axis=1)
            block = block[heads]
        return orig(block)

    meta._unique_rows = _unique_rows
    meta._bench_scanindex = True


# -------------------------------------------------------------------------------------- modelwrite
def _patch_modelwrite() -> None:
    import fluxflow.ms as fms
    import fluxflow.ms.model_data as mdm

    if getattr(mdm, "_bench_modelwrite", False):
        return
    orig = mdm.write_model_data
    probe = np.array([[0.0, 0.0, 0.0], [1234.5, -987.6, 12.3]])

    def write_model_data(ms_path, field_id, spw_id, model_fn, intents=None, scans=None, chunk_rows=None, *,
                         md=None, lock_timeout=None):
        md = md if md is not None else mdm.read_metadata(ms_path, with_scans=False, warn=False,
                                                         lock_timeout=lock_timeout)
        plan = mdm.plan_selection(md, field_id, spw_id, intents, scans, antennas=None, cross_only=False)
        freq = np.asarray(plan.spw.chan_freq, dtype=np.float64)
        values = np.asarray(model_fn(probe, freq))
        if values.shape != (2, freq.size) or not np.array_equal(values[0], values[1]) \
                or not np.all(np.isfinite(values)):
            return orig(ms_path, field_id, spw_id, model_fn, intents, scans, chunk_rows, md=md,
                        lock_timeout=lock_timeout)
        nchan, ncorr = plan.spw.num_chan, plan.pol.num_corr
        step = mdm.chunk_rows_for(nchan, ncorr, chunk_rows)
        written = 0
        with mdm.open_ms(md.path, readonly=False, lock_timeout=lock_timeout) as t:
            if "DATA" not in t.colnames() and "CORRECTED_DATA" not in t.colnames():
                raise mdm.MissingColumnError(f"{md.path}: no DATA column to shape MODEL_DATA on")
            mdm._ensure_model_column(t, md.path, md, chunk_rows)
            if plan.where is None:
                return 0
            sel = t.query(plan.where)
            try:
                n = sel.nrows()
                cells = mdm._stokes_i_to_model(values[:1], min(step, max(n, 1)), nchan, plan.pol)
                for start in range(0, n, step):
                    m = min(step, n - start)
                    mdm.ensure_lock(t, md.path, write=True)
                    try:
                        sel.putcol("MODEL_DATA", cells[:m], start, m)
                    except RuntimeError as err:
                        raise mdm.WriteError(f"{md.path}: writing MODEL_DATA failed: {err}") from err
                    written += m
            finally:
                del sel
        return written

    mdm.write_model_data = write_model_data
    fms.write_model_data = write_model_data
    mdm._bench_modelwrite = True


# ----------------------------------------------------------------------------------------- planpar
def _plan_one(ms: str, params, preapply: list):
    """The body of workflow.plan_all for one MS: (plan, None) or (None, MSResult with the error)."""
    import os

    from fluxflow import tasks
    from fluxflow.errors import FluxflowError
    from fluxflow.models.catalogue import read_flux_csv
    from fluxflow.ms import antenna_flag_fraction, read_metadata
    from fluxflow.plan import plan_ms
    from fluxflow.workflow import add_ephemeris_sizes, find_reffile

    try:
        md = read_metadata(ms)
        add_ephemeris_sizes(md)
        if not params.refant.strip():
            md.extra["antenna_flag_fraction"] = antenna_flag_fraction(md)
        ref = find_reffile(ms, params.reffile)
        cat = read_flux_csv(ref, ms_name=md.name) if ref else []
        plan = plan_ms(md, params, cat)
        plan.preapply = list(preapply)
        return plan, None
    except FluxflowError as exc:
        if len(params.vis) == 1:
            raise
        return None, tasks.MSResult(ms=os.path.abspath(ms), ms_name=os.path.basename(ms), error=str(exc))


def _patch_planpar() -> None:
    import os

    import fluxflow.workflow as wf

    if getattr(wf, "_bench_planpar", False):
        return
    orig = wf.plan_all

    def plan_all(params):
        try:
            from distributed import default_client

            client = default_client()
        except (ImportError, ValueError):
            return orig(params)
        names = [os.path.basename(os.path.normpath(v)) for v in params.vis]
        if len(set(names)) != len(names) or params.gaintable:
            return orig(params)
        futures = client.map(_plan_one, list(params.vis), params=params, preapply=[], pure=False)
        plans, failed = [], []
        for plan, err in client.gather(futures):
            (plans.append(plan) if plan is not None else failed.append(err))
        return plans, failed

    wf.plan_all = plan_all
    wf._bench_planpar = True


# --------------------------------------------------------------------------------------- reportoff
def _patch_reportoff() -> None:
    import contextlib

    import distributed

    import fluxflow.report as rep

    rep.build_report = lambda outdir, results: "(skipped)"
    distributed.performance_report = lambda *a, **k: contextlib.nullcontext()


PATCHES = {"rowsel": _patch_rowsel, "rowsums": _patch_rowsums, "scanindex": _patch_scanindex,
           "modelwrite": _patch_modelwrite, "planpar": _patch_planpar, "reportoff": _patch_reportoff}


def apply_local(names: list[str]) -> None:
    """Apply the named patches in this process."""
    for n in names:
        if n not in PATCHES:
            raise SystemExit(f"unknown patch {n!r}; known: {', '.join(PATCHES)}")
        PATCHES[n]()


def apply_everywhere(client, names: list[str]) -> None:
    """Apply the named patches here and in every worker of `client`."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    apply_local(names)
    client.run(apply_local, names)
