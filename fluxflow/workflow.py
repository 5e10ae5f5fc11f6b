"""The fluxflow graph: hifa_gfluxscale for many MSs, top to bottom (spec §3 dependency graph).

    metadata + catalogue + plan, per MS          (client; small sub-tables and index columns)
    solve_field per (MS, field, spw)            (workers; each reads its own selection once)
    reduce_ms per MS                             (outliers, fluxscale, calibrated fluxes, QA)
    write_ms_outputs per MS                      (caltables, MODEL_DATA: one writer per MS)
    reduce_session                               (adopted fluxes for MSs without a flux cal)
    write_adopted_models per adopting MS
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
import warnings

import dask
from dask import delayed

from fluxflow import tasks
from fluxflow.cluster import ClusterSpec, open_client
from fluxflow.errors import FluxflowError
from fluxflow.params import Params
from fluxflow.plan import MSPlan
from fluxflow.results import Results

log = logging.getLogger("fluxflow")


def find_reffile(ms: str, reffile: str) -> str | None:
    """The flux catalogue for `ms`: `reffile` if given, else `<ms>.flux.csv` / `flux.csv` beside it."""
    if reffile:
        if not os.path.exists(reffile):
            raise FluxflowError(f"reffile {reffile!r} does not exist")
        return reffile
    ms = os.path.normpath(ms)
    stem = os.path.basename(ms).removesuffix(".ms")
    for cand in (f"{ms}.flux.csv", os.path.join(os.path.dirname(ms), f"{stem}.flux.csv"),
                 os.path.join(os.path.dirname(ms), "flux.csv")):
        if os.path.exists(cand):
            return cand
    return None


def add_ephemeris_sizes(md) -> None:
    """Spec §4 step 2: apparent diameters of ephemeris fields at the MS start, in md.extra."""
    from fluxflow.ms.ephemeris import read_ephemeris
    from fluxflow.transfer.resolved import disk_diameter_from_ephemeris

    sizes = {}
    for f in md.fields:
        if f.ephemeris_path:
            eph = read_ephemeris(f.ephemeris_path, md.start_time / 86400.0)
            if eph is not None:
                sizes[f.id] = disk_diameter_from_ephemeris(*eph)
    md.extra["ephemeris_diameter_arcsec"] = sizes


def plan_one(ms: str, params: Params, preapply: list) -> tuple[MSPlan | None, tasks.MSResult | None]:
    """Read one MS's metadata and flux.csv and plan it: (plan, None), or (None, MSResult naming
    the error) when it cannot be planned and other MSs can go on. Runs as a Dask task."""
    from fluxflow.models.catalogue import read_flux_csv
    from fluxflow.ms import read_metadata
    from fluxflow.plan import plan_ms

    try:
        md = read_metadata(ms)
        add_ephemeris_sizes(md)
        if not params.refant.strip():  # automatic refant ranking uses flagging (hif_refant)
            from fluxflow.ms import antenna_flag_fraction

            md.extra["antenna_flag_fraction"] = antenna_flag_fraction(md)
        ref = find_reffile(ms, params.reffile)
        cat = read_flux_csv(ref, ms_name=md.name) if ref else []
        plan = plan_ms(md, params, cat)
        plan.preapply = list(preapply)
        return plan, None
    except FluxflowError as exc:
        if len(params.vis) == 1:
            raise
        return None, tasks.MSResult(ms=os.path.abspath(ms), ms_name=os.path.basename(os.path.normpath(ms)),
                                    error=str(exc))


def plan_all(params: Params, client=None) -> tuple[list, list[tasks.MSResult]]:
    """Plan every MS; an MS that cannot be planned is reported. With a distributed `client` the
    MSs are planned in parallel on the workers (each reads metadata and a FLAG sample: 0.1-3 s
    per EB), otherwise one after the other here."""
    preapply = []
    if params.gaintable:  # validate (and describe) the pre-apply tables once, on the client
        from fluxflow.solve.preapply import load_calapps

        preapply = [c.summary for c in load_calapps(params.calapps())]
    names = [os.path.basename(os.path.normpath(v)) for v in params.vis]
    if len(set(names)) != len(names):
        raise FluxflowError("two MSs in `vis` share a basename; flux.csv rows could not tell them apart")
    if params.reffile:
        find_reffile("", params.reffile)  # a missing catalogue stops the run before any task
    if client is None:
        out = [plan_one(ms, params, preapply) for ms in params.vis]
    else:
        from distributed import wait

        run = uuid.uuid4().hex[:8]
        futures = client.map(plan_one, list(params.vis), params=params, preapply=preapply, pure=False,
                             key=[f"plan-{n}-{run}" for n in names])
        # Fewer MSs than workers: the idle workers read each MS's row index meanwhile (the
        # planning worker has it from planning), so no solve task starts with that read.
        workers = list(client.scheduler_info()["workers"])
        warm = [client.submit(tasks.preload_row_index, ms, workers=[w], pure=False, key=f"index-{n}-{i}-{run}")
                for ms, n in zip(params.vis, names) for i, w in enumerate(workers)
                ] if len(params.vis) < len(workers) else []
        out = client.gather(futures)
        wait(warm)
    plans = [p for p, _ in out if p is not None]
    failed = [e for _, e in out if e is not None]
    return plans, failed


def build_graph(plans: list, params: Params):
    """Dask delayed graph: returns (final, per-solve delayed objects for progress, per-MS
    reductions)."""
    solve = delayed(tasks.solve_field, pure=True)
    reduce_ms = delayed(tasks.reduce_ms, pure=True)
    write = delayed(tasks.write_ms_outputs, pure=False)
    session = delayed(tasks.reduce_session, pure=True)

    run = uuid.uuid4().hex[:8]  # task names are per run: a rerun on the same client never reuses a result
    solves, per_ms, reductions = [], [], []
    for plan in plans:
        field_solutions = [solve(t, dask_key_name=f"solve-{t.key}-{run}") for t in plan.tasks]
        solves.extend(field_solutions)
        if plan.adopt:
            per_ms.append(delayed(tasks.MSResult, pure=True)(
                ms=plan.ms, ms_name=plan.ms_name, plan=plan, warnings=list(plan.warnings),
                dask_key_name=f"reduce-{plan.ms_name}-{run}"))
            continue
        r = reduce_ms(plan, field_solutions, params.amp_outlier_sigma,
                      dask_key_name=f"reduce-{plan.ms_name}-{run}")
        reductions.append(r)
        per_ms.append(write(r, params.output_dir, params.write_model,
                            dask_key_name=f"write-{plan.ms_name}-{run}"))
    sess = session(per_ms, dask_key_name=f"session-{run}")
    final = delayed(tasks.write_adopted_all, pure=False)(sess, params.write_model,
                                                         dask_key_name=f"write-adopted-{run}")
    return final, solves, reductions


def run(params: Params, cluster: ClusterSpec | None = None, client=None,
        progress: bool = False) -> Results:
    """Run hifa_gfluxscale over `params.vis` and return (and save) the results."""
    if not params.vis:
        raise FluxflowError("no MeasurementSet given (vis is empty)")
    t0 = time.time()
    os.makedirs(params.output_dir, exist_ok=True)
    handler = logging.FileHandler(os.path.join(params.output_dir, "fluxflow.log"), mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(min(log.level or logging.INFO, logging.INFO))
    try:
        return _run(params, cluster, client, progress, t0)
    finally:
        log.removeHandler(handler)
        handler.close()


def _run(params: Params, cluster, client, progress: bool, t0: float) -> Results:
    log.info("fluxflow %s: %d MS(s), output %s", _version(), len(params.vis),
             os.path.abspath(params.output_dir))
    cleanup: list[str] = []  # the report's figure cache, removed whatever happens
    try:
        return _run_graph(params, cluster, client, progress, t0, cleanup)
    finally:
        for d in cleanup:
            shutil.rmtree(d, ignore_errors=True)


def _run_graph(params: Params, cluster, client, progress: bool, t0: float, cleanup: list) -> Results:
    report, figure_cache = "", None
    # Planning runs on the workers (whose row-index cache the solves then reuse), except for a
    # single MS when fluxflow itself is about to submit SLURM jobs: its errors come first.
    slurm = client is None and (cluster or ClusterSpec()).kind == "slurm"
    early = plan_all(params) if len(params.vis) == 1 and slurm else None
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(open_client(cluster or ClusterSpec()))
        if client is not None:
            log.info("Dask dashboard: %s", client.dashboard_link)
            if progress:
                print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
            if params.performance_report:
                from distributed import performance_report

                report = os.path.join(params.output_dir, "dask-performance.html")
                stack.enter_context(performance_report(filename=report, mode="inline"))  # opens offline
        plans, failed = early or plan_all(params, client)
        for plan in plans:
            log.info("%s: reference %s, transfer %s, transfer intents %s, refant %s, %d solve tasks%s",
                     plan.ms_name, [plan.field_names[i] for i in plan.reference_ids],
                     [plan.field_names[i] for i in plan.transfer_ids], ",".join(plan.transintents),
                     ",".join(plan.refant_names[:3]), len(plan.tasks),
                     f", resolved: antenna={plan.resantenna} uvrange={plan.uvrange}" if plan.resantenna else "")
        final, solves, reductions = build_graph(plans, params)
        if client is None:  # synchronous scheduler: the report draws every figure at the end
            with dask.config.set(scheduler="synchronous"):
                per_ms = final.compute()
        else:
            figure_cache = tempfile.mkdtemp(prefix=".figures-", dir=params.output_dir)
            cleanup.append(figure_cache)
            per_ms = _compute_with_progress(client, final, solves, progress, reductions, figure_cache)
    results = Results(ms_results=failed + per_ms, params=params, elapsed=time.time() - t0,
                      performance_report=report)
    for r in failed + per_ms:
        for w in r.warnings:
            log.warning("%s: %s", r.ms_name, w)
        for line in r.fluxscale_log:
            log.info("%s: fluxscale: %s", r.ms_name, line)
        for c in r.flag_commands:
            log.info("%s: outlier flag: %s", r.ms_name, c.to_casa() if hasattr(c, "to_casa") else c)
        if r.error:
            log.error("%s: FAILED: %s", r.ms_name, r.error)
    results.save(params.output_dir)
    if results.records:
        from fluxflow.report import build_report

        try:
            log.info("report: %s", build_report(params.output_dir, results, figure_cache))
        except Exception as exc:  # noqa: BLE001 - the results are saved; a plot bug must not fail the run
            log.error("could not build the report: %s", exc)
    log.info("done in %.1f s; exit code %d", results.elapsed, results.exit_code)
    return results


def _version() -> str:
    from fluxflow import __version__

    return __version__


def _compute_with_progress(client, final, solves, progress: bool, reductions=(), figure_cache=None):
    """Run the graph with a progress bar. As each MS's reduction finishes, its report figures
    are drawn by a task on a worker that does not hold the reduction, so beside (not queued
    after) that MS's writer; they are waited for before returning."""
    from distributed import as_completed, wait

    futures = client.compute([final] + solves)
    reduced = client.compute(list(reductions)) if figure_cache and reductions else []
    reduced_keys = {f.key for f in reduced}
    figures = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(futures), desc="fluxflow", unit="task")
    try:
        for fut in as_completed(futures + reduced):
            if fut.key not in reduced_keys:
                if bar is not None:
                    bar.update(1)
                continue
            holders = set(client.who_has([fut]).get(fut.key, ()))
            others = [w for w in client.scheduler_info()["workers"] if w not in holders]
            where = {"workers": others, "allow_other_workers": True} if others else {}
            figures.append(client.submit(tasks.render_figures, fut, figure_cache, pure=False,
                                         key=str(fut.key).replace("reduce-", "figures-", 1), **where))
    finally:
        if bar is not None:
            bar.close()
    out = futures[0].result()
    wait(figures)
    del futures, reduced, figures
    return out


def gfluxscale(vis, *, cluster: str | ClusterSpec | None = None, client=None, progress: bool = False,
               **kwargs) -> Results:
    """Python API: ``fluxflow.gfluxscale(vis=['a.ms', 'b.ms'], refant='DA41', ...)``.

    Keyword arguments are the fields of :class:`fluxflow.params.Params` (hifa_gfluxscale's names).
    `cluster`: 'local' (default), 'sync', a scheduler address, or a :class:`ClusterSpec`;
    `client`: an existing ``distributed.Client`` (takes precedence).
    """
    if isinstance(vis, (str, os.PathLike)):
        vis = [vis]
    for key in ("refspwmap", "gaintable", "gainfield", "interp", "calwt"):
        if key in kwargs and kwargs[key] is not None:  # gaincal accepts a string for one table
            v = kwargs[key]
            kwargs[key] = (v,) if isinstance(v, (str, bool)) else tuple(v)
    if kwargs.get("spwmap") is not None:
        m = list(kwargs["spwmap"])
        kwargs["spwmap"] = (tuple(m),) if m and isinstance(m[0], int) else tuple(tuple(x) for x in m)
    params = Params(vis=tuple(str(v) for v in vis), **kwargs)
    if isinstance(cluster, str):
        cluster = (ClusterSpec(kind="address", address=cluster) if "://" in cluster
                   else ClusterSpec(kind=cluster))
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        return run(params, cluster=cluster, client=client, progress=progress)
