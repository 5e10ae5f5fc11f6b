"""Issue 6, part 2: CASA's hifa_gfluxscale chain against fluxflow on the same MS.

The CASA chain (casa_chain.py: setjy, gaincal p, gaincal a T, fluxscale, setjy, then applycal and
the calibrated-visibility flux) runs in a separate process with CASA's Python, on a copy of the MS
without MODEL_DATA (CASA writes MODEL_DATA and CORRECTED_DATA). fluxflow runs on the original MS
with the same reference antenna, with MODEL_DATA removed first ('fresh': both create it) and
also with MODEL_DATA present ('existing', the pipeline's precondition). Reported: wall times and
their ratios, and per transfer field and spw the derived (fluxscale) and calibrated fluxes of
both, their relative difference and the simulator's injected truth.

CASA is optional: where the CASA Python (``--casa-python``, default /tmp/casa-venv/bin/python)
cannot import casatools and casatasks, the script prints why, records ``skipped`` in the JSON and
exits 0. Install (see benchmarks/README.md): a Python 3.12 venv with
``pip install casatools casatasks casadata six``, an offline site config (CASASITECONFIG) and,
on Debian 12, LD_PRELOAD of libssl.so.3 plus a stub exporting EVP_md2.

    python benchmarks/casa_reference.py --preset benchmark --workers 2
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import subprocess
import sys
import time

import benchlib as bl

HERE = os.path.dirname(os.path.abspath(__file__))
CASA_VENV = os.environ.get("FLUXFLOW_CASA_VENV", "/tmp/casa-venv")
INTENT_PATTERNS = {"AMPLITUDE": "*CALIBRATE_FLUX*", "BANDPASS": "*CALIBRATE_BANDPASS*",
                   "PHASE": "*CALIBRATE_PHASE*", "CHECK": "*OBSERVE_CHECK_SOURCE*",
                   "POLARIZATION": "*CALIBRATE_POLARIZATION*", "DIFFGAINREF": "*CALIBRATE_DIFFGAIN*",
                   "DIFFGAINSRC": "*OBSERVE_DIFFGAIN*"}


def casa_env(site_config: str, preload: str) -> dict:
    env = dict(os.environ)
    if site_config:
        env["CASASITECONFIG"] = site_config
    if preload:
        env["LD_PRELOAD"] = preload
    return env


def casa_available(python: str, env: dict) -> tuple[bool, str]:
    """(True, version) if `python` imports casatools and casatasks, else (False, reason)."""
    if not os.path.exists(python):
        return False, f"no CASA Python at {python}"
    try:
        p = subprocess.run([python, "-c", "import casatools, casatasks; print(casatools.version_string())"],
                           env=env, capture_output=True, text=True, timeout=300, cwd="/tmp")
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, str(err)
    if p.returncode:
        return False, (p.stderr.strip().splitlines() or ["import failed"])[-1]
    return True, p.stdout.strip().splitlines()[-1]


def make_job(ms_copy: str, ms: str, reffile: str, workdir: str) -> tuple[dict, object]:
    """The CASA job (field ids/names, intents, spws, catalogue, refant) from fluxflow's plan."""
    from fluxflow.ms import read_metadata
    from fluxflow.params import Params
    from fluxflow.workflow import plan_all

    plans, failed = plan_all(Params(vis=(ms,), reffile=reffile))
    if failed or not plans:
        raise SystemExit(f"fluxflow could not plan {ms}: {failed}")
    plan = plans[0]
    md = read_metadata(ms, with_scans=False, warn=False)
    if len(plan.reference_ids) != 1:
        raise SystemExit("casa_reference.py handles one reference field")

    def pattern(intents):
        return ",".join(INTENT_PATTERNS[i] for i in sorted(intents))

    rid = plan.reference_ids[0]
    ti = set(plan.transintents)
    transfer = []
    for fid in plan.transfer_ids:
        intents = set(plan.field_intents[fid]) & ti
        transfer.append({"id": fid, "name": plan.field_names[fid], "intent_sel": pattern(intents),
                         "bandpass": "BANDPASS" in intents, "states": md.state_ids_for_intents(intents)})
    spws = [{"id": s, "centre_hz": plan.spw_freqs[s], "ddid": md.ddids_for_spw(s)[0]} for s in plan.science_spws]
    with open(reffile, newline="") as fh:
        cat = [{"field": int(r["field"]), "spw": int(r["spw"]), "I": float(r["I"]), "spix": float(r["spix"] or 0)}
               for r in csv.DictReader(fh) if os.path.basename(r["ms"]) == plan.ms_name]
    job = {"ms": ms_copy, "workdir": workdir, "refant": plan.refant_names[0],
           "reference": {"id": rid, "name": plan.field_names[rid],
                         "intent_sel": pattern(set(plan.field_intents[rid]) & set(plan.refintents))},
           "transfer": transfer, "spws": spws, "catalogue": cat}
    return job, plan


def fluxflow_once(ms: str, reffile: str, refant: str, outdir: str, workers: int, fresh: bool,
                  cold: bool, patches: list[str]) -> dict:
    """One fluxflow run on its own LocalCluster; wall time excludes the cluster start."""
    import fluxflow

    if fresh:
        bl.remove_column(ms, "MODEL_DATA")
    else:
        from fluxflow.ms import ensure_model_column

        ensure_model_column(ms)
    shutil.rmtree(outdir, ignore_errors=True)
    with bl.local_client(workers) as (client, start_s):
        if patches:
            import patches as pm

            pm.apply_everywhere(client, patches)
        # imports are excluded on both sides (CASA's are measured apart): load what the tasks use
        client.run(bl.import_fluxflow)
        if cold:
            bl.drop_caches()
        t0 = time.perf_counter()
        res = fluxflow.gfluxscale(vis=[ms], client=client, output_dir=outdir, reffile=reffile, refant=refant)
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "cluster_start_s": start_s, "rows": res.flux_rows(), "exit_code": res.exit_code}


def run_casa(python: str, env: dict, job: dict, workdir: str, cold: bool, mode: str) -> dict:
    job = {**job, "setjy_mode": mode}
    job_path = os.path.join(workdir, f"job-{mode}.json")
    out_path = os.path.join(workdir, f"casa_result-{mode}.json")
    with open(job_path, "w") as fh:
        json.dump(job, fh, indent=1)
    with contextlib.suppress(FileNotFoundError):
        os.remove(out_path)
    if cold:
        bl.drop_caches()
    t0 = time.perf_counter()
    p = subprocess.run([python, os.path.join(HERE, "casa_chain.py"), job_path, out_path], env=env,
                       cwd=workdir, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode or not os.path.exists(out_path):
        raise SystemExit(f"CASA chain failed (exit {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    out = json.load(open(out_path))
    out["process_wall_s"] = wall
    return out


def compare(ff_rows: list[dict], casa: dict, truth: dict) -> list[dict]:
    """Per transfer field/spw: fluxflow vs CASA derived and calibrated fluxes, and the truth."""
    der = {(d["field"], d["spw"]): d for d in casa["derived"]}
    cal = {(d["field"], d["spw"]): d for d in casa["calvis"]}
    out = []
    for r in ff_rows:
        key = (r["field"], r["spw"])
        c, v = der.get(key), cal.get(key)
        t = truth.get("fields", {}).get(r["field"], {}).get("flux", {}).get(str(r["spw"]))
        row = {"field": r["field"], "spw": r["spw"], "ff_fluxscale": r.get("fluxscale_I"),
               "casa_fluxscale": c["I"] if c else None, "ff_calibrated": r.get("calibrated_I"),
               "casa_calibrated": v["I"] if v else None, "truth": t}
        for a, b, name in (("ff_fluxscale", "casa_fluxscale", "d_fluxscale_pct"),
                           ("ff_calibrated", "casa_calibrated", "d_calibrated_pct")):
            row[name] = (100.0 * (row[a] / row[b] - 1.0)) if row[a] and row[b] else None
        row["casa_vs_truth_pct"] = 100.0 * (row["casa_fluxscale"] / t - 1.0) if t and row["casa_fluxscale"] else None
        row["ff_vs_truth_pct"] = 100.0 * (row["ff_fluxscale"] / t - 1.0) if t and row["ff_fluxscale"] else None
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--preset", default="benchmark", choices=sorted(bl.PRESETS))
    ap.add_argument("--ms", help="MS path (default <bench dir>/<preset>/eb.ms; simulated if missing)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--casa-python", default=os.path.join(CASA_VENV, "bin", "python"))
    ap.add_argument("--site-config", default=os.path.join(CASA_VENV, "site", "config.py"),
                    help="CASASITECONFIG file for an offline start ('' for none)")
    ap.add_argument("--preload", default=f"/lib/x86_64-linux-gnu/libssl.so.3 {CASA_VENV}/site/libmd2stub.so",
                    help="LD_PRELOAD for casatools on Debian 12 ('' for none)")
    ap.add_argument("--cold", action="store_true", help="drop the page cache before every timed run")
    ap.add_argument("--setjy-mode", choices=("per-spw", "per-field", "both"), default="both",
                    help="CASA setjy calls: per spw as the pipeline (fluxes compared from this run), one per "
                         "field (fewest calls, timing only), or both (default; two CASA runs on fresh copies)")
    ap.add_argument("--patch", action="append", default=[],
                    help="also time fluxflow with these prototype fixes (patches.py), after the unpatched runs")
    ap.add_argument("--name", default="")
    args = ap.parse_args(argv)

    ms = args.ms or str(bl.BENCH_DIR / args.preset / "eb.ms")
    ms, reffile, _ = bl.ensure_ms(ms, bl.sim_config(args.preset)) if not args.ms else (ms, ms[:-3] + ".flux.csv", 0)
    name = args.name or f"casa_reference_{args.preset}"
    env = casa_env(args.site_config if os.path.exists(args.site_config) else "",
                   " ".join(p for p in args.preload.split() if os.path.exists(p)))
    ok, info = casa_available(args.casa_python, env)
    if not ok:
        print(f"CASA reference SKIPPED: casatools/casatasks not usable with {args.casa_python}: {info}\n"
              "Install them in a Python 3.12 venv (see benchmarks/README.md) and pass --casa-python.")
        bl.save_json(name, {"skipped": True, "reason": info, "ms": ms})
        return 0
    print(f"CASA {info}; load average {bl.loadavg()}")
    machine = bl.machine_info()
    workdir = str(bl.BENCH_DIR / args.preset / "casa")
    ms_copy = os.path.join(workdir, os.path.basename(ms))
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    job, plan = make_job(ms_copy, ms, reffile, workdir)
    refant = job["refant"]
    truth = json.load(open(ms[:-3] + ".truth.json")) if os.path.exists(ms[:-3] + ".truth.json") else {}
    modes = ["per-spw", "per-field"] if args.setjy_mode == "both" else [args.setjy_mode]
    casa_runs = {}
    for mode in modes:
        shutil.rmtree(ms_copy, ignore_errors=True)
        t0 = time.perf_counter()
        shutil.copytree(ms, ms_copy)
        bl.remove_column(ms_copy, "MODEL_DATA")
        print(f"copied {ms} -> {ms_copy} in {time.perf_counter() - t0:.1f} s (not timed)", flush=True)
        casa_runs[mode] = run_casa(args.casa_python, env, job, workdir, args.cold, mode)
    casa = casa_runs[modes[0]]
    outdir = str(bl.BENCH_DIR / args.preset / "ff-casa-out")
    ff = {"fresh": fluxflow_once(ms, reffile, refant, outdir, args.workers, True, args.cold, []),
          "existing": fluxflow_once(ms, reffile, refant, outdir, args.workers, False, args.cold, [])}
    if args.patch:  # after the unpatched runs: the patches stay applied in this process
        tag = "+".join(args.patch)
        ff[f"fresh, patched {tag}"] = fluxflow_once(ms, reffile, refant, outdir, args.workers, True, args.cold,
                                                    args.patch)
        ff[f"existing, patched {tag}"] = fluxflow_once(ms, reffile, refant, outdir, args.workers, False,
                                                       args.cold, args.patch)
    cmp_rows = compare(ff["fresh"]["rows"], casa, truth)
    patched_key = next((k for k in ff if k.startswith("fresh, patched")), None)
    if patched_key:  # the prototypes must not move the fluxes
        pcmp = {(r["field"], r["spw"]): r for r in compare(ff[patched_key]["rows"], casa, truth)}
        for r in cmp_rows:
            p = pcmp.get((r["field"], r["spw"]), {})
            r["d_fluxscale_pct_patched"] = p.get("d_fluxscale_pct")
            r["d_calibrated_pct_patched"] = p.get("d_calibrated_pct")
    summary = []
    for cmode, c in casa_runs.items():
        five, calvis = c["five_step_s"], c["calvis_s"]
        for mode, r in ff.items():
            summary.append({"casa_setjy": cmode, "fluxflow_mode": mode, "fluxflow_s": r["wall_s"], "casa_5step_s": five,
                            "casa_5step+calvis_s": five + calvis, "casa_process_s": c["process_wall_s"],
                            "ratio_5step": five / r["wall_s"], "ratio_with_calvis": (five + calvis) / r["wall_s"]})
        print(bl.table([{"step": k, "s": v} for k, v in c["step_s"].items()], ["step", "s"],
                       title=f"\nCASA {c['casatools']} steps, setjy {cmode} (import {c['import_s']:.1f} s)"))
    print(bl.table(summary, list(summary[0]), title="\nwall times (cluster start excluded)"))
    cols = ["field", "spw", "truth", "ff_fluxscale", "casa_fluxscale", "d_fluxscale_pct", "ff_calibrated",
            "casa_calibrated", "d_calibrated_pct", "ff_vs_truth_pct", "casa_vs_truth_pct"]
    if patched_key:
        cols += ["d_fluxscale_pct_patched", "d_calibrated_pct_patched"]
    print(bl.table(cmp_rows, cols, title="\nfluxes [Jy] (d_* = fluxflow/CASA - 1, %)"))
    d = [abs(r["d_fluxscale_pct"]) for r in cmp_rows if r["d_fluxscale_pct"] is not None]
    dc = [abs(r["d_calibrated_pct"]) for r in cmp_rows if r["d_calibrated_pct"] is not None]
    print(f"max |fluxflow/CASA - 1|: derived {max(d, default=float('nan')):.3f} %, "
          f"calibrated {max(dc, default=float('nan')):.3f} %")
    payload = {"machine": machine, "ms": ms, "ms_bytes": bl.dir_bytes(ms), "preset": args.preset, "casa_version": info,
               "cold": args.cold, "workers": args.workers, "refant": refant, "casa": casa_runs,
               "fluxflow": {k: {kk: vv for kk, vv in v.items() if kk != "rows"} for k, v in ff.items()},
               "summary": summary, "fluxes": cmp_rows, "loadavg_at_end": bl.loadavg()}
    print(f"wrote {bl.save_json(name, payload)}")
    shutil.rmtree(ms_copy, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
