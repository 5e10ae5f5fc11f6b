"""Issue 6, part 1: fluxflow end to end against the I/O floor of the same MS, warm and cold cache.

(a) I/O floor: python-casacore alone, one process, one open of the MS: the five selection index
    columns (FIELD_ID, DATA_DESC_ID, STATE_ID, ANTENNA1, ANTENNA2) once, then for every
    (field, spw) selection that fluxflow solves, its cross-correlation rows' DATA, FLAG, FLAG_ROW,
    WEIGHT, TIME, INTERVAL, SCAN_NUMBER and UVW, each cell once; then MODEL_DATA written once for
    every row fluxflow writes (transfer fields' transfer intents, reference fields' calibrator
    intents, autocorrelations included, as setjy). The selections come from fluxflow's own plan
    (computed before the clock starts), so (a) and (b) touch the same rows. The point-source model
    is constant over rows, so the floor reads no UVW for writing.
(b) fluxflow.gfluxscale on the same MS (Dask LocalCluster of --workers processes, set up as
    ClusterSpec(kind='local'); the cluster start is timed separately).

MODEL_DATA modes: 'existing' (the MS has MODEL_DATA, as hif_setmodels leaves it: the pipeline's
precondition; added once, untimed, if missing) and 'fresh' (MODEL_DATA removed before every run:
fluxflow must add it and initialise every row to the unit model). In 'fresh' mode two floors are
timed: 'floor' (add the column, write only the model rows) and 'floor_init' (add the column and
write every MODEL_DATA cell exactly once: model rows with the model, all others with the unit
model — the least work that gives CASA's semantics of a new MODEL_DATA).

Bytes: /proc/<pid>/io of this process plus every Dask worker (client.run), before and after each
run. rchar counts bytes returned by read() (page-cache hits included), read_bytes bytes fetched
from storage (meaningful on a cold cache). 'needed' = on-disk size of the cells the solves need
(DATA 8 B and FLAG 1 bit per element, FLAG_ROW 1 bit, WEIGHT 4 B per correlation, TIME,
INTERVAL 8 B, SCAN_NUMBER 4 B, UVW 24 B per row) plus the five index columns over all rows.
Cold cache = `sync; echo 3 > /proc/sys/vm/drop_caches` before the run (root only; skipped with a
message otherwise). Dirty pages are not flushed inside the timed run (neither by fluxflow nor by
the floor); the time of the os.sync() that follows each run is reported as sync_s.

    python benchmarks/io_floor.py --preset benchmark --workers 2 --repeats 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

import benchlib as bl

INDEX_COLUMNS = ("FIELD_ID", "DATA_DESC_ID", "STATE_ID", "ANTENNA1", "ANTENNA2")
READ_COLUMNS = ("DATA", "FLAG", "FLAG_ROW", "WEIGHT", "TIME", "INTERVAL", "SCAN_NUMBER", "UVW")
CHUNK_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Sel:
    """One row selection: field, spw's data descriptions, STATE ids; cross-only or not."""

    field_id: int
    spw_id: int
    ddids: tuple[int, ...]
    states: tuple[int, ...]
    nchan: int
    ncorr: int
    par: tuple[int, ...]
    cross_only: bool
    value: complex = 1.0  # model value written (write selections)


def plan_selections(ms: str, reffile: str) -> tuple[list[Sel], list[Sel], object]:
    """fluxflow's own plan for `ms`: the selections it reads and the MODEL_DATA rows it writes."""
    from fluxflow.params import Params
    from fluxflow.workflow import plan_all
    from fluxflow.ms import read_metadata

    plans, failed = plan_all(Params(vis=(ms,), reffile=reffile))
    if failed or not plans:
        raise SystemExit(f"fluxflow could not plan {ms}: {failed}")
    plan = plans[0]
    md = read_metadata(ms, with_scans=False, warn=False)

    def sel(fid, spw, intents, cross_only, value=1.0):
        pol = md.polarization_for_spw(spw)
        return Sel(fid, spw, tuple(md.ddids_for_spw(spw)), tuple(md.state_ids_for_intents(intents)),
                   md.spw(spw).num_chan, pol.num_corr, tuple(pol.parallel_hands), cross_only, value)

    reads = [sel(t.field_id, s, t.intents, True) for t in plan.tasks for s in t.spw_ids]
    writes = []
    ti = set(plan.transintents)
    for fid in plan.transfer_ids:
        intents = set(plan.field_intents[fid]) & ti
        writes += [sel(fid, s, intents, False, 1.0) for s in plan.valid_spws.get(fid, [])]
    for t in plan.tasks:
        if t.role == "reference":
            writes += [sel(t.field_id, s, t.intents, False, spec.I) for s, spec in t.models.items()
                       if spec.kind in ("point", "disk")]
    return reads, writes, plan


def rows_of(idx: dict[str, np.ndarray], s: Sel) -> np.ndarray:
    m = (idx["FIELD_ID"] == s.field_id) & np.isin(idx["DATA_DESC_ID"], s.ddids) & np.isin(idx["STATE_ID"], s.states)
    if s.cross_only:
        m &= idx["ANTENNA1"] != idx["ANTENNA2"]
    return np.flatnonzero(m)


def _model_cells(n: int, s: Sel, value: complex) -> np.ndarray:
    out = np.zeros((n, s.nchan, s.ncorr), np.complex64)
    out[:, :, list(s.par)] = value
    return out


def bytes_needed(ms: str, reads: list[Sel], writes: list[Sel]) -> dict[str, int]:
    """On-disk bytes of the cells the solves need (module docstring) and of the model cells."""
    import casacore.tables as ct

    with contextlib.closing(ct.table(ms, ack=False)) as t:
        idx = {c: t.getcol(c) for c in INDEX_COLUMNS}
        nrows = t.nrows()
    r = w = rows_r = rows_w = 0
    for s in reads:
        n = rows_of(idx, s).size
        rows_r += n
        r += n * (s.nchan * s.ncorr * 8 + s.nchan * s.ncorr / 8 + 1 / 8 + s.ncorr * 4 + 8 + 8 + 4 + 24)
    for s in writes:
        n = rows_of(idx, s).size
        rows_w += n
        w += n * s.nchan * s.ncorr * 8
    index = nrows * 4 * len(INDEX_COLUMNS)
    return {"read_cells": int(r), "index_columns": index, "read_total": int(r) + index, "write_model": int(w),
            "rows_read": rows_r, "rows_written": rows_w, "nrows": nrows}


def _add_model_column(t, ms: str) -> None:
    import casacore.tables as ct
    from fluxflow.ms import read_metadata
    from fluxflow.ms.model_data import _model_column_spec  # same layout as fluxflow's column

    desc, dminfo = _model_column_spec(t, read_metadata(ms, with_scans=False, warn=False))
    t.addcols(ct.maketabdesc(ct.makecoldesc("MODEL_DATA", desc)), dminfo)


def io_floor(ms: str, reads: list[Sel], writes: list[Sel], init_all: bool = False) -> None:
    """The I/O floor (module docstring): one process, python-casacore and numpy only."""
    import casacore.tables as ct

    t = ct.table(ms, readonly=False, ack=False, lockoptions="permanentwait")
    try:
        idx = {c: t.getcol(c) for c in INDEX_COLUMNS}
        for s in reads:
            rows = rows_of(idx, s)
            if rows.size == 0:
                continue
            sub = t.selectrows(rows)
            step = max(1, CHUNK_BYTES // (9 * s.nchan * s.ncorr + 64))
            for start in range(0, rows.size, step):
                n = min(step, rows.size - start)
                for c in READ_COLUMNS:
                    sub.getcol(c, start, n)
            del sub
        if "MODEL_DATA" not in t.colnames():
            _add_model_column(t, ms)
        if not init_all:
            for s in writes:
                rows = rows_of(idx, s)
                if rows.size:
                    _put_model(t, rows, s, np.full(rows.size, s.value, np.complex64))
        else:
            _write_every_model_cell(t, ms, idx, writes)
    finally:
        t.close()


def _put_model(t, rows: np.ndarray, s: Sel, values: np.ndarray) -> None:
    sub = t.selectrows(rows)
    step = max(1, CHUNK_BYTES // (8 * s.nchan * s.ncorr))
    for start in range(0, rows.size, step):
        n = min(step, rows.size - start)
        cells = np.zeros((n, s.nchan, s.ncorr), np.complex64)
        cells[:, :, list(s.par)] = values[start:start + n, None, None]
        sub.putcol("MODEL_DATA", cells, start, n)
    del sub


def _write_every_model_cell(t, ms: str, idx: dict, writes: list[Sel]) -> None:
    from fluxflow.ms import read_metadata

    md = read_metadata(ms, with_scans=False, warn=False)
    value = np.ones(idx["FIELD_ID"].size, np.complex64)
    for s in writes:
        value[rows_of(idx, s)] = s.value
    for dd in md.data_descriptions:
        rows = np.flatnonzero(idx["DATA_DESC_ID"] == dd.id)
        if rows.size == 0:
            continue
        pol = md.polarizations[dd.pol_id]
        s = Sel(-1, dd.spw_id, (dd.id,), (), md.spw(dd.spw_id).num_chan, pol.num_corr,
                tuple(pol.parallel_hands), False)
        _put_model(t, rows, s, value[rows])


# ------------------------------------------------------------------------------------------
def run_measured(fn, client=None) -> dict:
    """Run fn(); wall time, this process's and the workers' /proc io deltas, then sync time."""
    self0 = bl.read_io()
    w0 = bl.workers_io(client) if client is not None else {}
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    self_d = bl.io_delta(bl.read_io(), self0)
    w_d = bl.workers_io_delta(bl.workers_io(client), w0) if client is not None else bl.io_sum([])
    rec = {"wall_s": wall, "sync_s": bl.timed_sync(), "io_client": self_d, "io_workers": w_d,
           "io": bl.io_sum([self_d, w_d]), "loadavg_after": bl.loadavg()}
    if isinstance(out, dict):
        rec.update(out)
    return rec


def fluxflow_run(ms: str, reffile: str, outdir: str, client) -> dict:
    import fluxflow

    shutil.rmtree(outdir, ignore_errors=True)
    bl.clear_fluxflow_caches(client)
    tstream = {}
    if client is not None:
        from distributed import get_task_stream

        with get_task_stream(client) as ts:
            t0 = time.perf_counter()
            res = fluxflow.gfluxscale(vis=[ms], client=client, output_dir=outdir, reffile=reffile)
            wall = time.perf_counter() - t0
        tstream = summarize_task_stream(ts.data)
    else:
        t0 = time.perf_counter()
        res = fluxflow.gfluxscale(vis=[ms], cluster="sync", output_dir=outdir, reffile=reffile)
        wall = time.perf_counter() - t0
    rows = res.flux_rows()
    # wall_s: the gfluxscale call alone (collecting the task stream afterwards takes ~1 s and is
    # the benchmark's, not fluxflow's)
    return {"wall_s": wall, "n_flux_rows": len(rows), "exit_code": res.exit_code,
            "elapsed_internal_s": res.elapsed, "task_seconds": tstream}


def summarize_task_stream(data: list[dict]) -> dict:
    """Compute seconds and counts per task-name prefix ('solve', 'reduce', 'write', ...)."""
    out: dict[str, dict] = {}
    for d in data:
        prefix = str(d.get("key", "?")).split("-")[0].strip("('\" ")
        comp = sum(s["stop"] - s["start"] for s in d.get("startstops", []) if s.get("action") == "compute")
        e = out.setdefault(prefix, {"n": 0, "compute_s": 0.0, "max_s": 0.0})
        e["n"] += 1
        e["compute_s"] += comp
        e["max_s"] = max(e["max_s"], comp)
    return out


def ensure_existing_model(ms: str) -> float:
    """Add MODEL_DATA initialised to the unit model if missing (as hif_setmodels leaves it)."""
    from fluxflow.ms import ensure_model_column

    t0 = time.perf_counter()
    ensure_model_column(ms)
    return time.perf_counter() - t0


def measure(ms: str, reffile: str, reads, writes, model_mode: str, workers: int, repeats: int,
            cold: bool, patches: list[str]) -> dict:
    outdir = os.path.join(os.path.dirname(ms), "ff-out")
    floors = ["floor"] + (["floor_init"] if model_mode == "fresh" else [])

    def prep():
        if model_mode == "fresh":
            bl.remove_column(ms, "MODEL_DATA")

    def run_floor(kind, client):
        prep()
        return run_measured(lambda: io_floor(ms, reads, writes, init_all=(kind == "floor_init")), client)

    def run_ff(client):
        prep()
        return run_measured(lambda: fluxflow_run(ms, reffile, outdir, client), client)

    results: dict[str, dict[str, list]] = {"warm": {}, "cold": {}}
    with bl.local_client(workers) as (client, start_s):
        if patches:
            import patches as pm

            pm.apply_everywhere(client, patches)
        # prime: page cache and the workers' imports
        run_floor("floor", client)
        run_ff(client)
        for _ in range(repeats):
            for kind in floors:
                results["warm"].setdefault(kind, []).append(run_floor(kind, client))
            results["warm"].setdefault("fluxflow", []).append(run_ff(client))
        can_drop = bl.drop_caches() if cold else False
        if cold and not can_drop:
            print("cold cache: cannot drop the page cache here (needs root); cold runs skipped", file=sys.stderr)
        if can_drop:
            for kind in floors + ["fluxflow"]:
                prep()
                bl.drop_caches()
                fn = ((lambda: fluxflow_run(ms, reffile, outdir, client)) if kind == "fluxflow" else
                      (lambda k=kind: io_floor(ms, reads, writes, init_all=(k == "floor_init"))))
                results["cold"].setdefault(kind, []).append(run_measured(fn, client))
    return {"cluster_start_s": start_s, "runs": results, "cold_available": can_drop}


def summarize(meas: dict, needed: dict, model_mode: str) -> list[dict]:
    rows = []
    for cache in ("warm", "cold"):
        runs = meas["runs"][cache]
        if not runs:
            continue
        med = {k: statistics.median(r["wall_s"] for r in v) for k, v in runs.items()}
        for kind, v in runs.items():
            best = min(v, key=lambda r: r["wall_s"])
            io = best["io"]
            rows.append({
                "model": model_mode, "cache": cache, "run": kind, "n": len(v), "wall_s": med[kind],
                "sync_s": best["sync_s"], "ratio_vs_floor": med[kind] / med["floor"],
                "rchar": bl.fmt_bytes(io["rchar"]), "read_bytes": bl.fmt_bytes(io["read_bytes"]),
                "wchar": bl.fmt_bytes(io["wchar"]),
                "amp_rchar": io["rchar"] / needed["read_total"],
                "amp_disk": (io["read_bytes"] / needed["read_total"]) if cache == "cold" else None,
                "write_amp": io["wchar"] / max(needed["write_model"], 1),
            })
    return rows


def profile_sync(ms: str, reffile: str, top: int, patches: list[str]) -> tuple[str, dict]:
    """cProfile of one fluxflow run with the synchronous scheduler (one process, after a warm-up run).

    Returns the printed statistics and a JSON-able summary (top functions by cumulative and by
    internal time)."""
    import cProfile
    import io
    import pstats

    if patches:
        import patches as pm

        pm.apply_local(patches)
    outdir = os.path.join(os.path.dirname(ms), "ff-out")
    fluxflow_run(ms, reffile, outdir, None)  # warm
    pr = cProfile.Profile()
    t0 = time.perf_counter()
    pr.enable()
    fluxflow_run(ms, reffile, outdir, None)
    pr.disable()
    wall = time.perf_counter() - t0
    s = io.StringIO()
    st = pstats.Stats(pr, stream=s)
    st.sort_stats("cumulative").print_stats(top)
    st.sort_stats("tottime").print_stats(top)

    def rows(key):
        st.sort_stats(key)
        out = []
        for func in st.fcn_list[:top]:
            cc, nc, tt, ct, _ = st.stats[func]
            out.append({"function": f"{os.path.basename(func[0])}:{func[1]}({func[2]})", "ncalls": nc,
                        "tottime_s": round(tt, 3), "cumtime_s": round(ct, 3)})
        return out

    return s.getvalue(), {"wall_s": wall, "by_cumtime": rows("cumulative"), "by_tottime": rows("tottime")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--preset", default="benchmark", choices=sorted(bl.PRESETS),
                    help="simulated EB (benchlib.PRESETS; 'benchmark' = SimConfig.benchmark(), ~4.4 GB)")
    ap.add_argument("--ms", help="MS path (default <bench dir>/<preset>/eb.ms; simulated if missing)")
    ap.add_argument("--workers", type=int, default=2, help="Dask worker processes (default 2)")
    ap.add_argument("--repeats", type=int, default=2, help="warm repeats after one priming run (default 2)")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-cache runs")
    ap.add_argument("--model", choices=("existing", "fresh", "both"), default="both",
                    help="MODEL_DATA present before the run, or absent (default both)")
    ap.add_argument("--patch", action="append", default=[],
                    help="benchmark-local prototype fix from patches.py (repeatable; see patches.py)")
    ap.add_argument("--profile", type=int, metavar="N", default=0,
                    help="instead of measuring, cProfile one sync-scheduler run, print the top N functions "
                         "and save them to results/profile_<preset>.json")
    ap.add_argument("--name", default="", help="JSON name (default io_floor_<preset>[_patched])")
    args = ap.parse_args(argv)

    ms = args.ms or str(bl.BENCH_DIR / args.preset / "eb.ms")
    print(f"load average before: {bl.loadavg()}")
    ms, reffile, sim_s = bl.ensure_ms(ms, bl.sim_config(args.preset)) if not args.ms else (
        ms, ms[:-3] + ".flux.csv", 0.0)
    if sim_s:
        print(f"simulated {ms} in {sim_s:.1f} s")
    if args.profile:
        machine = bl.machine_info()
        text, summary = profile_sync(ms, reffile, args.profile, args.patch)
        print(text)
        name = args.name or f"profile_{args.preset}" + ("_patched" if args.patch else "")
        payload = {"machine": machine, "patches": args.patch, "loadavg_at_end": bl.loadavg(), **summary}
        print(f"wrote {bl.save_json(name, payload)}")
        return 0
    reads, writes, plan = plan_selections(ms, reffile)
    needed = bytes_needed(ms, reads, writes)
    print(f"{ms}: {bl.fmt_bytes(bl.dir_bytes(ms))} on disk, {needed['nrows']} rows; {len(reads)} read "
          f"selections ({needed['rows_read']} rows), {len(writes)} MODEL_DATA selections "
          f"({needed['rows_written']} rows); needed: read {bl.fmt_bytes(needed['read_total'])} "
          f"(cells {bl.fmt_bytes(needed['read_cells'])} + index {bl.fmt_bytes(needed['index_columns'])}), "
          f"write {bl.fmt_bytes(needed['write_model'])}")
    modes = ["existing", "fresh"] if args.model == "both" else [args.model]
    payload = {"machine": bl.machine_info(), "ms": ms, "preset": args.preset, "config": bl.sim_config(args.preset).to_json(),
               "ms_bytes": bl.dir_bytes(ms), "needed": needed, "workers": args.workers,
               "patches": args.patch, "modes": {}}
    all_rows = []
    for mode in modes:
        if mode == "existing":
            added = ensure_existing_model(ms)
            print(f"MODEL_DATA present (prepared in {added:.1f} s)")
        meas = measure(ms, reffile, reads, writes, mode, args.workers, args.repeats, not args.no_cold,
                       args.patch)
        rows = summarize(meas, needed, mode)
        all_rows += rows
        payload["modes"][mode] = {"measurements": meas, "summary": rows}
        print(bl.table(rows, ["model", "cache", "run", "n", "wall_s", "sync_s", "ratio_vs_floor", "rchar",
                              "read_bytes", "wchar", "amp_rchar", "amp_disk", "write_amp"],
                       title=f"\nMODEL_DATA {mode}; cluster start {meas['cluster_start_s']:.1f} s"))
        ff = meas["runs"]["warm"].get("fluxflow", [])
        if ff and ff[-1].get("task_seconds"):
            ts = [{"task": k, **v} for k, v in sorted(ff[-1]["task_seconds"].items())]
            print(bl.table(ts, ["task", "n", "compute_s", "max_s"], title="fluxflow tasks (last warm run)"))
    payload["loadavg_at_end"] = bl.loadavg()
    name = args.name or f"io_floor_{args.preset}" + ("_patched" if args.patch else "")
    print(f"\nwrote {bl.save_json(name, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
