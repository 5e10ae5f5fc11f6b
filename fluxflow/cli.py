"""Command line: ``fluxflow simulate | info | run | report | demo``.

A thin layer over the library: ``run`` builds a :class:`fluxflow.params.Params` and calls
:func:`fluxflow.workflow.run`, exactly what ``fluxflow.gfluxscale`` does from Python.
Errors a user can cause print one line (no traceback unless ``--debug``) and exit non-zero:
1 = failed, 2 = bad command line, 3 = partial (some MSs failed, the others have results).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from fluxflow.errors import FluxflowError, FluxflowWarning
from fluxflow.params import DEFAULT_TRANSINTENT, Params, parse_int_list, parse_phaseup


def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("hifa_gfluxscale parameters (spec §2)")
    g.add_argument("--reference", default="", help="reference (flux) calibrator fields: names or ids")
    g.add_argument("--transfer", default="", help="transfer calibrator fields: names or ids")
    g.add_argument("--refintent", default="AMPLITUDE")
    g.add_argument("--transintent", default=DEFAULT_TRANSINTENT)
    g.add_argument("--refspwmap", default="", help="e.g. 1,1,3,3")
    g.add_argument("--reffile", default="", help="flux.csv (default: <ms>.flux.csv or flux.csv beside the MS)")
    g.add_argument("--phaseupsolint", default="int")
    g.add_argument("--solint", default="inf")
    g.add_argument("--minsnr", type=float, default=2.0)
    g.add_argument("--refant", default="", help="ranked comma list (default: automatic ranking)")
    g.add_argument("--hm-resolvedcals", default="automatic", choices=["automatic", "manual"])
    g.add_argument("--antenna", default="")
    g.add_argument("--uvrange", default="", help="manual mode only, e.g. '<80m'")
    g.add_argument("--peak-fraction", type=float, default=0.2)
    g.add_argument("--amp-outlier-sigma", type=float, default=50.0)
    pa = p.add_argument_group("pre-applied calibration (gaincal's conventions; one value per table, "
                              "or one value for all)")
    pa.add_argument("--gaintable", nargs="+", default=[], metavar="TABLE",
                    help="CASA caltables (G, T, B, K, Tsys) applied in memory before solving")
    pa.add_argument("--gainfield", nargs="+", default=[], metavar="SEL", help="'' | nearest | field names")
    pa.add_argument("--interp", nargs="+", default=[], metavar="INTERP",
                    help="e.g. linear,linear  nearest  linearPD,linearflag  linearperobs")
    pa.add_argument("--spwmap", nargs="+", default=[], metavar="MAP", help="e.g. 0,0,1,1 (use - for none)")
    pa.add_argument("--calwt", nargs="+", default=[], metavar="BOOL", help="true/false (default true)")
    f = p.add_argument_group("fluxflow options")
    f.add_argument("--datacolumn", default="DATA", choices=["DATA", "CORRECTED_DATA"])
    f.add_argument("--phaseup", action="append", default=[], metavar="INTENT:FIELD:k=v,...",
                   help="phase-up override as hifa_spwphaseup records it, e.g. "
                        "PHASE:J0510+1800:solint=60s,gaintype=T,combine=spw,spwmap=0;0;0;0")
    f.add_argument("--resolved-diameter", action="append", default=[], metavar="FIELD=ARCSEC",
                   help="apparent diameter of a resolved flux calibrator without ephemeris table")
    f.add_argument("--spw", default="", help="restrict to these science spws")
    f.add_argument("-o", "--output-dir", default="fluxflow-out")
    f.add_argument("--no-model", action="store_true", help="do not write MODEL_DATA")
    f.add_argument("--chunk-rows", type=int, default=None,
                   help="rows per read chunk; bounds memory per worker (default: ~256 MiB of arrays)")
    f.add_argument("--performance-report", action="store_true",
                   help="also save Dask's performance report (OUTDIR/dask-performance.html)")
    c = p.add_argument_group("where to run")
    c.add_argument("--cluster", default="local", choices=["local", "sync", "slurm"])
    c.add_argument("--scheduler-address", default=None, help="join a running Dask scheduler")
    c.add_argument("--workers", type=int, default=None, help="worker processes (local) / jobs (slurm)")
    c.add_argument("--slurm-config", default=None, help="YAML with SLURMCluster settings")
    c.add_argument("--slurm-partition", default=None, help="SLURM partition (sbatch -p)")
    c.add_argument("--slurm-account", default=None, help="SLURM account (sbatch -A)")
    c.add_argument("--slurm-walltime", default=None, help="walltime per worker job, e.g. 01:00:00")
    c.add_argument("--slurm-memory", default=None, help="memory per worker job, e.g. 8GB")
    c.add_argument("--slurm-cores", type=int, default=None, help="cores (= worker processes) per job")
    c.add_argument("--slurm-interface", default=None, help="network interface for Dask, e.g. ib0")
    c.add_argument("--slurm-adaptive", action="store_true", default=None,
                   help="scale between 1 and --workers jobs")
    c.add_argument("--dashboard-address", default=None,
                   help="where the dashboard listens (slurm default 127.0.0.1:8787)")
    c.add_argument("--no-tls", action="store_true", help="slurm: no TLS between scheduler, workers and client")
    c.add_argument("--no-progress", action="store_true")


def params_from_args(a: argparse.Namespace) -> Params:
    diam = {}
    for item in a.resolved_diameter:
        name, _, val = item.rpartition("=")
        try:
            diam[name] = float(val)
        except ValueError as exc:
            raise FluxflowError(f"--resolved-diameter {item!r}: expected FIELD=ARCSEC") from exc
    return Params(
        vis=tuple(a.vis), reference=a.reference, transfer=a.transfer, refintent=a.refintent,
        transintent=a.transintent, refspwmap=parse_int_list(a.refspwmap) if a.refspwmap else (),
        reffile=a.reffile, phaseupsolint=a.phaseupsolint, solint=a.solint, minsnr=a.minsnr,
        refant=a.refant, hm_resolvedcals=a.hm_resolvedcals, antenna=a.antenna, uvrange=a.uvrange,
        peak_fraction=a.peak_fraction, amp_outlier_sigma=a.amp_outlier_sigma,
        datacolumn=a.datacolumn, phaseup=parse_phaseup(a.phaseup), resolved_diameter=diam,
        spw=a.spw, output_dir=a.output_dir, write_model=not a.no_model, chunk_rows=a.chunk_rows,
        performance_report=a.performance_report,
        gaintable=tuple(a.gaintable), gainfield=tuple("" if g in ("''", '""') else g for g in a.gainfield),
        interp=tuple(a.interp),
        spwmap=tuple(() if m in ("-", "", "[]") else parse_int_list(m) for m in a.spwmap),
        calwt=tuple(_bool(v) for v in a.calwt) or (True,))


def _bool(v: str) -> bool:
    if v.lower() in ("true", "t", "1", "yes"):
        return True
    if v.lower() in ("false", "f", "0", "no"):
        return False
    raise FluxflowError(f"--calwt {v!r}: expected true or false")


def cluster_from_args(a: argparse.Namespace):
    from fluxflow.cluster import ClusterSpec

    if a.scheduler_address:
        return ClusterSpec(kind="address", address=a.scheduler_address)
    spec = ClusterSpec(kind=a.cluster, n_workers=a.workers)
    if a.cluster == "slurm":
        from fluxflow.slurm import slurm_settings

        spec.slurm = slurm_settings(a.slurm_config, a)
    return spec


def cmd_run(a: argparse.Namespace) -> int:
    from fluxflow.workflow import run

    params = params_from_args(a)
    res = run(params, cluster=cluster_from_args(a), progress=not a.no_progress)
    print(res.summary())
    print(f"results: {os.path.abspath(params.output_dir)}")
    report = os.path.join(params.output_dir, "report", "index.html")
    if os.path.exists(report):
        print(f"report:  {os.path.abspath(report)}")
    return res.exit_code


def cmd_simulate(a: argparse.Namespace) -> int:
    from fluxflow.simulate import simulate_ms

    over = dict(seed=a.seed, n_ant=a.antennas, n_chan=a.channels)
    if a.duration:
        over["duration_s"] = a.duration
    if a.noise_free:
        over["sefd"] = 0.0
    if a.disk_diameter:  # with its ephemeris table, so fluxflow finds the size as in ALMA data
        over["flux_cal_disk_diameter_arcsec"] = a.disk_diameter
        over["with_ephemeris"] = True
    if a.no_flux_cal:
        over["with_flux_cal"] = False
    res = simulate_ms(a.out, **over)
    print(f"wrote {res.ms_path}\n      {res.flux_csv}\n      {res.truth_json}")
    if not a.quiet:
        from fluxflow.ms import read_metadata
        from fluxflow.ms.metadata import summary

        print(summary(read_metadata(res.ms_path)))
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    from fluxflow.ms import read_metadata
    from fluxflow.ms.metadata import summary

    for ms in a.vis:
        print(summary(read_metadata(ms)))
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from fluxflow.report import build_report

    path = build_report(a.outdir)
    print(f"report: {path}")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    """Simulate one ALMA-like EB and run the flux transfer on it (the README's first command)."""
    from fluxflow.simulate import simulate_ms
    from fluxflow.workflow import run

    os.makedirs(a.dir, exist_ok=True)
    sim = simulate_ms(os.path.join(a.dir, "demo.ms"), seed=1, overwrite=True)
    print(f"simulated {sim.ms_path}")
    params = Params(vis=(sim.ms_path,), reffile=sim.flux_csv, output_dir=os.path.join(a.dir, "out"))
    from fluxflow.cluster import ClusterSpec

    res = run(params, cluster=ClusterSpec(kind=a.cluster), progress=True)
    print(res.summary())
    truth = sim.truth
    print("\ninjected (truth) flux densities at the spw centres:")
    for name, f in truth.get("fields", {}).items():
        if "flux" in f:
            vals = ", ".join(f"spw{k}={v:.4f}" for k, v in sorted(f["flux"].items(), key=lambda x: int(x[0])))
            print(f"  {name:<14} {vals}")
    report = os.path.join(params.output_dir, "report", "index.html")
    if os.path.exists(report):
        print(f"report: {os.path.abspath(report)}")
    return res.exit_code


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fluxflow", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="transfer the flux scale (hifa_gfluxscale) for one or more MSs")
    r.add_argument("vis", nargs="+")
    _add_run_options(r)
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("simulate", help="write an ALMA-like simulated MS, its flux.csv and truth")
    s.add_argument("out")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--antennas", type=int, default=12)
    s.add_argument("--channels", type=int, default=16)
    s.add_argument("--duration", type=float, default=None, help="seconds of observation")
    s.add_argument("--noise-free", action="store_true")
    s.add_argument("--disk-diameter", type=float, default=None, help="resolved flux calibrator (arcsec)")
    s.add_argument("--no-flux-cal", action="store_true", help="an EB without AMPLITUDE calibrator")
    s.add_argument("-q", "--quiet", action="store_true")
    s.set_defaults(func=cmd_simulate)

    i = sub.add_parser("info", help="print an MS summary (antennas, spws, fields, scans, intents)")
    i.add_argument("vis", nargs="+")
    i.set_defaults(func=cmd_info)

    rep = sub.add_parser("report", help="rebuild the HTML report from a run's output directory")
    rep.add_argument("outdir")
    rep.set_defaults(func=cmd_report)

    d = sub.add_parser("demo", help="simulate an EB and run the flux transfer on it")
    d.add_argument("--dir", default="fluxflow-demo")
    d.add_argument("--cluster", default="local", choices=["local", "sync"])
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    quiet_key = "DASK_DISTRIBUTED__LOGGING__DISTRIBUTED"
    quiet = not a.verbose and quiet_key not in os.environ
    if quiet:  # quiet Dask's INFO chatter, also in worker processes (they inherit the environment)
        os.environ[quiet_key] = "warning"
    try:
        return _main(a)
    finally:
        if quiet:
            os.environ.pop(quiet_key, None)


def _main(a: argparse.Namespace) -> int:
    level = logging.INFO if a.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for h in logging.getLogger().handlers:  # the run's log file gets INFO; the terminal `level`
        h.setLevel(level)
    if not a.debug:
        warnings.simplefilter("default", FluxflowWarning)
    try:
        return int(a.func(a) or 0)
    except FluxflowError as exc:
        if a.debug:
            raise
        print(f"fluxflow: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fluxflow: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
