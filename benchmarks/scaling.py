"""Issue 6, part 3: fluxflow throughput over EBs and workers, and cost per visibility vs EB size.

``ebs``  — 1, 2, 4 and 8 copies of one EB (default preset 'scaling': the benchmark EB with 32
           channels and 3 phase/target cycles, ~0.65 GB of DATA, so that 8 EBs with MODEL_DATA
           stay in the page cache) in one gfluxscale call, on
           a LocalCluster of 1 and 2 worker processes (cluster start not timed; one priming run
           per cluster). Throughput = visibilities / wall time, where 'read' visibilities are the
           (row, chan, corr) samples of the selections fluxflow solves and 'total' all
           cross-correlation science visibilities of the MSs. Efficiency = throughput relative
           to 1 EB on 1 worker, divided by the number of workers.
``size`` — one EB, antennas, channels and duration varied one at a time around 43 antennas,
           32 channels, 6 cycles; wall time and nanoseconds per read visibility.

MODEL_DATA is present before every run (the pipeline's precondition; --model fresh removes it
first, so that fluxflow adds and initialises it). Warm page cache.

    python benchmarks/scaling.py --part ebs --part size
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import time

import benchlib as bl
from io_floor import INDEX_COLUMNS, bytes_needed, plan_selections, rows_of

bl.PRESETS.setdefault("scaling", {"n_chan": 32, "n_cycles": 3})

SIZE_SWEEP = {
    "n_ant": [12, 24, 43, 64],
    "n_chan": [8, 32, 128],
    "n_cycles": [2, 6, 12],
}


def copy_eb(src: str, flux_csv: str, dst: str) -> tuple[str, str]:
    """Copy an MS and its flux.csv under a new basename (flux.csv 'ms' column rewritten)."""
    stamp = src + ".benchconfig.json"
    same = (os.path.isdir(dst) and os.path.exists(dst + ".benchconfig.json")
            and open(stamp).read() == open(dst + ".benchconfig.json").read())
    if not same:
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
        shutil.copy(stamp, dst + ".benchconfig.json")
    name = os.path.basename(dst)
    out = dst[:-3] + ".flux.csv"
    with open(flux_csv, newline="") as fh:
        rows = list(csv.reader(fh))
    for r in rows[1:]:
        r[0] = name
    with open(out, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return dst, out


def vis_counts(ms: str, reffile: str) -> dict:
    """Read and total visibilities of one MS (see module docstring)."""
    import casacore.tables as ct
    import numpy as np

    from fluxflow.ms import read_metadata

    reads, writes, _ = plan_selections(ms, reffile)
    need = bytes_needed(ms, reads, writes)
    nread = 0
    with ct.table(ms, ack=False) as t:
        idx = {c: t.getcol(c) for c in INDEX_COLUMNS}
    for s in reads:
        nread += rows_of(idx, s).size * s.nchan * s.ncorr
    md = read_metadata(ms, with_scans=False, warn=False)
    total = 0
    cross = idx["ANTENNA1"] != idx["ANTENNA2"]
    for dd in md.data_descriptions:
        spw = md.spw(dd.spw_id)
        if spw.is_science:
            n = int(np.count_nonzero(cross & (idx["DATA_DESC_ID"] == dd.id)))
            total += n * spw.num_chan * md.polarizations[dd.pol_id].num_corr
    return {"vis_read": int(nread), "vis_total": int(total), "bytes_read_needed": need["read_total"],
            "ms_bytes": bl.dir_bytes(ms)}


def prepare(ms: str, mode: str) -> None:
    if mode == "fresh":
        bl.remove_column(ms, "MODEL_DATA")
    else:
        from fluxflow.ms import ensure_model_column

        ensure_model_column(ms)


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def run_ff(client, vis: list[str], outdir: str, mode: str) -> dict:
    """One gfluxscale call: wall time and CPU seconds of the client process and of the workers."""
    import fluxflow

    for v in vis:
        prepare(v, mode)
    shutil.rmtree(outdir, ignore_errors=True)
    bl.clear_fluxflow_caches(client)
    w0 = client.run(_cpu_seconds)
    c0 = _cpu_seconds()
    t0 = time.perf_counter()
    res = fluxflow.gfluxscale(vis=vis, client=client, output_dir=outdir)
    wall = time.perf_counter() - t0
    c1 = _cpu_seconds()
    w1 = client.run(_cpu_seconds)
    if res.exit_code:
        raise SystemExit(f"fluxflow failed on {vis}: exit code {res.exit_code}")
    return {"wall_s": wall, "client_cpu_s": c1 - c0, "workers_cpu_s": sum(w1[k] - w0[k] for k in w1 if k in w0)}


def part_ebs(args) -> dict:
    where = bl.BENCH_DIR / "scaling" / args.preset
    base = str(where / "base.ms")
    ms, csvp, sim_s = bl.ensure_ms(base, bl.sim_config(args.preset))
    if sim_s:
        print(f"simulated {ms} in {sim_s:.1f} s")
    n_max = max(args.ebs)
    ebs = [copy_eb(ms, csvp, str(where / f"eb{k + 1}.ms")) for k in range(n_max)]
    counts = vis_counts(ebs[0][0], ebs[0][1])
    rows = []
    outdir = str(where / "out")
    for w in args.workers:
        with bl.local_client(w) as (client, start_s):
            if args.patch:
                import patches

                patches.apply_everywhere(client, args.patch)
            run_ff(client, [ebs[0][0]], outdir, args.model)  # prime
            for n in args.ebs:
                vis = [e[0] for e in ebs[:n]]
                runs = [run_ff(client, vis, outdir, args.model) for _ in range(args.repeats)]
                best = min(runs, key=lambda r: r["wall_s"])
                wall = best["wall_s"]
                rows.append({"workers": w, "ebs": n, "wall_s": wall, "runs": runs, "cluster_start_s": start_s,
                             "client_cpu_s": best["client_cpu_s"], "workers_cpu_s": best["workers_cpu_s"],
                             "vis_read": n * counts["vis_read"], "vis_total": n * counts["vis_total"],
                             "Mvis_read_per_s": n * counts["vis_read"] / wall / 1e6,
                             "Mvis_total_per_s": n * counts["vis_total"] / wall / 1e6,
                             "GB_per_s_ms": n * counts["ms_bytes"] / wall / 1e9, "loadavg": bl.loadavg()})
                print(f"  workers={w} ebs={n}: {wall:.2f} s", flush=True)
    ref = next((r for r in rows if r["workers"] == min(args.workers) and r["ebs"] == min(args.ebs)), rows[0])
    for r in rows:
        r["speedup"] = r["Mvis_read_per_s"] / ref["Mvis_read_per_s"]
        r["efficiency"] = r["speedup"] / (r["workers"] / ref["workers"])
    print(bl.table(rows, ["workers", "ebs", "wall_s", "client_cpu_s", "workers_cpu_s", "Mvis_read_per_s",
                          "Mvis_total_per_s", "GB_per_s_ms", "speedup", "efficiency"],
                   title=f"\nEBs x workers ({args.preset}: {bl.fmt_bytes(counts['ms_bytes'])} per EB, "
                         f"{counts['vis_read'] / 1e6:.1f} M read / {counts['vis_total'] / 1e6:.1f} M total "
                         f"visibilities per EB)"))
    return {"eb": {"preset": args.preset, "config": bl.sim_config(args.preset).to_json(), **counts}, "rows": rows}


def part_size(args) -> dict:
    rows = []
    base = {**bl.PRESETS[args.size_base], "n_chan": args.size_n_chan}
    sweep = SIZE_SWEEP if not args.sweep else {
        k: [int(x) for x in v.split(",")] for k, v in (e.split("=") for e in args.sweep)}
    for key, values in sweep.items():
        for v in values:
            over = {**base, key: v}
            tag = "_".join(f"{k}{over[k]}" for k in sorted(over))
            ms_path = str(bl.BENCH_DIR / "size" / tag / "eb.ms")
            if bl.sim_config("benchmark", **over) == bl.sim_config("benchmark"):
                ms_path = str(bl.BENCH_DIR / "benchmark" / "eb.ms")  # the EB itself
            ms, csvp, sim_s = bl.ensure_ms(ms_path, bl.sim_config("benchmark", **over))
            if sim_s:
                print(f"simulated {tag} in {sim_s:.1f} s", flush=True)
            counts = vis_counts(ms, csvp)
            with bl.local_client(args.size_workers) as (client, _):
                if args.patch:
                    import patches

                    patches.apply_everywhere(client, args.patch)
                run_ff(client, [ms], str(bl.BENCH_DIR / "size" / "out"), args.model)  # prime
                wall = min(run_ff(client, [ms], str(bl.BENCH_DIR / "size" / "out"), args.model)["wall_s"]
                           for _ in range(args.repeats))
            cfg = bl.sim_config("benchmark", **over)
            rows.append({"vary": key, "n_ant": cfg.n_ant, "n_chan": cfg.n_chan, "n_cycles": cfg.n_cycles, "ms_GB": counts["ms_bytes"] / 1e9, "wall_s": wall,
                         "Mvis_read": counts["vis_read"] / 1e6,
                         "ns_per_vis_read": 1e9 * wall / counts["vis_read"],
                         "ns_per_vis_total": 1e9 * wall / counts["vis_total"], "loadavg": bl.loadavg()})
            print(f"  {tag}: {wall:.2f} s", flush=True)
            if args.cleanup and ms_path != str(bl.BENCH_DIR / "benchmark" / "eb.ms"):
                shutil.rmtree(ms, ignore_errors=True)
                os.remove(ms + ".benchconfig.json")
    print(bl.table(rows, ["vary", "n_ant", "n_chan", "n_cycles", "ms_GB", "wall_s", "Mvis_read", "ns_per_vis_read",
                          "ns_per_vis_total"], title=f"\ncost per visibility ({args.size_workers} worker(s))"))
    return {"rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--part", action="append", choices=("ebs", "size"), help="default: both")
    ap.add_argument("--preset", default="scaling", help="EB of the 'ebs' part (benchlib.PRESETS)")
    ap.add_argument("--ebs", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--size-workers", type=int, default=2, help="workers of the 'size' part")
    ap.add_argument("--size-base", default="benchmark", help="preset the 'size' sweep varies (default benchmark)")
    ap.add_argument("--size-n-chan", type=int, default=32, help="channels of the 'size' base EB (default 32)")
    ap.add_argument("--sweep", action="append", default=[],
                    help="'size' sweep entry KEY=v1,v2,... (repeatable; default n_ant, n_chan, n_cycles)")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per point (minimum reported)")
    ap.add_argument("--model", choices=("existing", "fresh"), default="existing")
    ap.add_argument("--patch", action="append", default=[], help="prototype fix from patches.py")
    ap.add_argument("--cleanup", action="store_true", help="delete the 'size' MSs after use")
    ap.add_argument("--name", default="")
    args = ap.parse_args(argv)
    parts = args.part or ["ebs", "size"]
    print(f"load average before: {bl.loadavg()}")
    payload = {"machine": bl.machine_info(), "model": args.model, "patches": args.patch, "repeats": args.repeats}
    if "ebs" in parts:
        payload["ebs"] = part_ebs(args)
    if "size" in parts:
        payload["size"] = part_size(args)
    payload["loadavg_at_end"] = bl.loadavg()
    name = args.name or "_".join(["scaling"] + parts + (["patched"] if args.patch else []))
    print(f"wrote {bl.save_json(name, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
