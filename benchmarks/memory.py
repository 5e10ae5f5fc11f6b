"""Issue 6, part 4: peak RSS per Dask worker against the size of the largest selection.

For each EB variant and each ``chunk_rows`` setting (fluxflow's Params.chunk_rows, the documented
chunk setting), a fresh LocalCluster is started, every worker imports fluxflow and its RSS is
recorded ('base'), the peak-RSS counter is reset (/proc/<pid>/clear_refs = 5), fluxflow runs, and
VmHWM of every worker is read ('peak'). The largest selection is the (field, spw) selection with
the most rows; its size is given as DATA bytes (8 B per visibility) and as the bytes of the
in-memory Dataset read_selection returns (vis 8 + model 8 + weight 4 + flag 1 B per visibility).
The client process's peak (planning, reductions) is reported too.

Variants are written PRESET[:key=value,...], e.g. ``benchmark`` (the issue's 4.4 GB EB) or
``benchmark:bandpass_scan_s=1200,target_scan_s=150`` (a 4x larger largest selection).

    python benchmarks/memory.py --variant benchmark --chunk-rows 10000 100000
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import benchlib as bl
from io_floor import INDEX_COLUMNS, plan_selections, rows_of


def parse_variant(text: str) -> tuple[str, dict]:
    preset, _, rest = text.partition(":")
    over = {}
    for item in filter(None, rest.split(",")):
        k, v = item.split("=")
        over[k] = float(v) if "." in v or k.endswith("_s") else int(v)
    return preset, over


def variant_path(preset: str, over: dict) -> str:
    if not over:
        return str(bl.BENCH_DIR / preset / "eb.ms")
    tag = "_".join(f"{k}{over[k]:g}" for k in sorted(over))
    return str(bl.BENCH_DIR / "memory" / f"{preset}_{tag}" / "eb.ms")


def largest_selection(ms: str, reffile: str) -> dict:
    import casacore.tables as ct

    reads, _, _ = plan_selections(ms, reffile)
    with ct.table(ms, ack=False) as t:
        idx = {c: t.getcol(c) for c in INDEX_COLUMNS}
    best = max(reads, key=lambda s: rows_of(idx, s).size * s.nchan * s.ncorr)
    n = rows_of(idx, best).size
    nvis = n * best.nchan * best.ncorr
    return {"field_id": best.field_id, "spw_id": best.spw_id, "rows": int(n), "nchan": best.nchan,
            "ncorr": best.ncorr, "visibilities": int(nvis), "data_bytes": int(8 * nvis),
            "dataset_bytes": int(21 * nvis + 60 * n)}


def measure(ms: str, reffile: str, workers: int, chunk_rows: int | None, patches: list[str]) -> dict:
    import fluxflow

    from fluxflow.ms import ensure_model_column

    ensure_model_column(ms)
    outdir = os.path.join(os.path.dirname(ms), "mem-out")
    shutil.rmtree(outdir, ignore_errors=True)
    with bl.local_client(workers, memory_limit="0") as (client, _):
        if patches:
            import patches as pm

            pm.apply_everywhere(client, patches)
        client.run(bl.import_fluxflow)
        base = bl.workers_mem(client)
        bl.workers_reset_peak(client)
        bl.reset_peak_rss()
        c0 = bl.read_mem()["VmRSS"]
        t0 = time.perf_counter()
        res = fluxflow.gfluxscale(vis=[ms], client=client, output_dir=outdir, reffile=reffile,
                                  chunk_rows=chunk_rows)
        wall = time.perf_counter() - t0
        after = bl.workers_mem(client)
        client_peak = bl.read_mem()["VmHWM"]
    per_worker = [{"worker": w, "base_rss": base[w]["VmRSS"], "peak_rss": after[w]["VmHWM"]} for w in after]
    return {"chunk_rows": chunk_rows, "wall_s": wall, "exit_code": res.exit_code, "workers": per_worker,
            "max_peak_rss": max(p["peak_rss"] for p in per_worker),
            "max_peak_minus_base": max(p["peak_rss"] - p["base_rss"] for p in per_worker),
            "client_base_rss": c0, "client_peak_rss": client_peak, "loadavg": bl.loadavg()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--variant", action="append", help="PRESET[:key=value,...] (default: benchmark)")
    ap.add_argument("--chunk-rows", nargs="+", default=["auto", "10000", "100000"],
                    help="Params.chunk_rows values; 'auto' = fluxflow's default (None: chunks of at most "
                         "~256 MiB of arrays) (default: auto 10000 100000)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--patch", action="append", default=[], help="prototype fix from patches.py")
    ap.add_argument("--name", default="")
    args = ap.parse_args(argv)
    print(f"load average before: {bl.loadavg()}")
    machine = bl.machine_info()
    rows, runs = [], []
    for text in args.variant or ["benchmark"]:
        preset, over = parse_variant(text)
        ms, reffile, sim_s = bl.ensure_ms(variant_path(preset, over), bl.sim_config(preset, **over))
        if sim_s:
            print(f"simulated {text} in {sim_s:.1f} s", flush=True)
        sel = largest_selection(ms, reffile)
        for text_cr in args.chunk_rows:
            cr = None if text_cr == "auto" else int(text_cr)
            m = measure(ms, reffile, args.workers, cr, args.patch)
            runs.append({"variant": text, "ms_bytes": bl.dir_bytes(ms), "largest_selection": sel, **m})
            rows.append({"variant": text, "ms_GB": bl.dir_bytes(ms) / 1e9, "sel_rows": sel["rows"],
                         "sel_data_MiB": sel["data_bytes"] / 2**20, "sel_dataset_MiB": sel["dataset_bytes"] / 2**20,
                         "chunk_rows": text_cr, "wall_s": m["wall_s"], "worker_peak_MiB": m["max_peak_rss"] / 2**20,
                         "peak_minus_base_MiB": m["max_peak_minus_base"] / 2**20,
                         "peak/dataset": m["max_peak_minus_base"] / sel["dataset_bytes"],
                         "client_peak_MiB": m["client_peak_rss"] / 2**20})
            print(f"  {text} chunk_rows={cr}: worker peak {m['max_peak_rss'] / 2**20:.0f} MiB", flush=True)
    print(bl.table(rows, list(rows[0]), title="\npeak RSS per worker (max over workers)"))
    name = args.name or "memory" + ("_patched" if args.patch else "")
    print(f"wrote {bl.save_json(name, {'machine': machine, 'workers': args.workers, 'patches': args.patch, 'runs': runs, 'summary': rows, 'loadavg_at_end': bl.loadavg()})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
