"""Shared helpers of the benchmark scripts: test MSs, machine facts, /proc accounting, tables, JSON.

Not part of fluxflow. Linux only (reads /proc). MSs live under FLUXFLOW_BENCH_DIR
(default /tmp/fluxflow-bench), results under benchmarks/results/.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
BENCH_DIR = Path(os.environ.get("FLUXFLOW_BENCH_DIR", "/tmp/fluxflow-bench"))

#: SimConfig.benchmark() overrides per preset. 'benchmark' is the issue's ~4.4 GB EB.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"n_ant": 8, "n_chan": 8, "n_cycles": 2, "bandpass_scan_s": 60.0, "flux_scan_s": 60.0,
             "target_scan_s": 120.0},
    "small": {"n_ant": 16, "n_chan": 32},
    "medium": {"n_ant": 43, "n_chan": 16},
    "benchmark": {},
}


def sim_config(preset: str = "benchmark", **overrides: Any):
    """SimConfig.benchmark() with the preset's and then the caller's overrides."""
    from fluxflow.simulate.config import SimConfig

    return SimConfig.benchmark(**{**PRESETS[preset], **overrides})


def ensure_ms(path: str | os.PathLike, config) -> tuple[str, str, float]:
    """Simulate `config` into `path` unless an MS made from the same config is there.

    Returns (ms path, flux.csv path, seconds spent simulating; 0 when reused). The config is
    kept in ``<ms>.benchconfig.json`` to decide reuse.
    """
    from fluxflow.simulate import simulate_ms

    path = os.path.abspath(path)
    stamp = path + ".benchconfig.json"
    want = json.dumps(config.to_json(), sort_keys=True, default=str)
    flux_csv = path[:-3] + ".flux.csv" if path.endswith(".ms") else path + ".flux.csv"
    if os.path.isdir(path) and os.path.exists(stamp) and os.path.exists(flux_csv):
        with open(stamp) as fh:
            if fh.read() == want:
                return path, flux_csv, 0.0
    t0 = time.perf_counter()
    sim = simulate_ms(path, config, overwrite=True)
    elapsed = time.perf_counter() - t0
    with open(stamp, "w") as fh:
        fh.write(want)
    return sim.ms_path, sim.flux_csv, elapsed


def dir_bytes(path: str | os.PathLike) -> int:
    """Total size of the files under `path`."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, f))
    return total


def remove_column(ms: str, column: str) -> bool:
    """Remove a main-table column if present (e.g. MODEL_DATA between 'fresh' runs)."""
    import casacore.tables as ct

    with contextlib.closing(ct.table(ms, readonly=False, ack=False)) as t:
        if column in t.colnames():
            t.removecols(column)
            return True
    return False


# ------------------------------------------------------------------------------------------
# machine facts and /proc accounting

def loadavg() -> list[float]:
    return [float(x) for x in open("/proc/loadavg").read().split()[:3]]


def machine_info() -> dict:
    """CPU, memory, disk, kernel and library versions of this machine (for the JSON records)."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError):
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    import numpy

    versions = {"python": platform.python_version(), "numpy": numpy.__version__}
    for mod in ("casacore", "dask", "distributed", "fluxflow"):
        with contextlib.suppress(Exception):
            versions[mod] = __import__(mod).__version__
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        versions["python-casacore"] = version("python-casacore")
    du = shutil.disk_usage(BENCH_DIR if BENCH_DIR.exists() else "/")
    fs = ""
    with contextlib.suppress(Exception):
        fs = subprocess.run(["df", "-T", str(BENCH_DIR if BENCH_DIR.exists() else "/")], capture_output=True,
                            text=True).stdout.splitlines()[-1].split()[1]
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        affinity = os.cpu_count()
    return {"host": platform.node(), "cpu": cpu, "cores_usable": affinity, "mem_bytes": mem,
            "kernel": platform.release(), "bench_dir": str(BENCH_DIR), "bench_fs": fs,
            "bench_disk_free_bytes": du.free, "versions": versions, "loadavg": loadavg(),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


IO_KEYS = ("rchar", "wchar", "read_bytes", "write_bytes", "syscr", "syscw")


def read_io(pid: int | str = "self") -> dict[str, int]:
    """/proc/<pid>/io counters (bytes through read/write calls, and to/from storage)."""
    out = {}
    for line in open(f"/proc/{pid}/io"):
        k, v = line.split(":")
        if k in IO_KEYS:
            out[k] = int(v)
    return out


def io_delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in IO_KEYS}


def io_sum(items) -> dict[str, int]:
    out = dict.fromkeys(IO_KEYS, 0)
    for d in items:
        for k in IO_KEYS:
            out[k] += d.get(k, 0)
    return out


def read_mem(pid: int | str = "self") -> dict[str, int]:
    """VmHWM (peak RSS) and VmRSS of a process, in bytes."""
    out = {}
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(("VmHWM", "VmRSS")):
            k, v = line.split(":")
            out[k] = int(v.split()[0]) * 1024
    return out


def reset_peak_rss(pid: int | str = "self") -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/<pid>/clear_refs)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def drop_caches() -> bool:
    """sync and drop the page cache (needs root); False when not allowed."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        return True
    except OSError:
        return False


def timed_sync() -> float:
    """Seconds to write back dirty pages (os.sync) after a run."""
    t0 = time.perf_counter()
    os.sync()
    return time.perf_counter() - t0


# ------------------------------------------------------------------------------------------
# Dask workers

def _worker_io() -> dict:
    return {"pid": os.getpid(), **read_io()}


def _worker_mem() -> dict:
    return {"pid": os.getpid(), **read_mem()}


def _worker_reset() -> bool:
    return reset_peak_rss()


@contextlib.contextmanager
def local_client(n_workers: int, memory_limit: str | None = None) -> Iterator[Any]:
    """A LocalCluster set up as fluxflow's ClusterSpec(kind='local') (processes, 1 thread each).

    Yields (client, seconds to start). The benchmark owns the client so that it can read the
    workers' /proc counters before and after each run.
    """
    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                           memory_limit=memory_limit or "auto", dashboard_address=":0")
    client = Client(cluster)
    client.wait_for_workers(n_workers)
    started = time.perf_counter() - t0
    try:
        yield client, started
    finally:
        client.close()
        cluster.close()


def workers_io(client) -> dict[str, dict]:
    return client.run(_worker_io)


def workers_mem(client) -> dict[str, dict]:
    return client.run(_worker_mem)


def workers_reset_peak(client) -> None:
    client.run(_worker_reset)


def workers_io_delta(after: dict, before: dict) -> dict[str, int]:
    return io_sum(io_delta(after[w], before[w]) for w in after if w in before)


# ------------------------------------------------------------------------------------------
# output

def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def table(rows: list[dict], columns: list[str], title: str = "") -> str:
    """A plain fixed-width text table of `rows` (dicts) over `columns`."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
        return "" if v is None else str(v)

    body = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(b[i]) for b in body]) for i, c in enumerate(columns)]
    lines = [title] if title else []
    lines.append("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


def save_json(name: str, payload: dict, out_dir: str | os.PathLike | None = None) -> Path:
    """Write `payload` (plus machine facts if absent) to <results>/<name>.json; returns the path."""
    out = Path(out_dir) if out_dir else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    payload.setdefault("machine", machine_info())
    payload.setdefault("argv", sys.argv)
    path = out / f"{name}.json"
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=1, default=str)
        fh.write("\n")
    return path


def clear_fluxflow_caches(client=None) -> None:
    """Forget fluxflow's per-process row-index caches (here and in every worker), so that each
    timed run reads the MS's index columns as a first run on that MS does. Not timed."""
    from fluxflow.ms.rowindex import clear_cache

    clear_cache()
    if client is not None:
        client.run(clear_cache)


def import_fluxflow() -> None:
    """Import what fluxflow's tasks use (run in each worker before timing: CASA's own import time
    is measured apart from its steps, so fluxflow's is excluded too)."""
    import matplotlib.backends.backend_agg  # noqa: F401
    import scipy.special  # noqa: F401

    import fluxflow.report.build  # noqa: F401
    import fluxflow.solve.gaincal  # noqa: F401
    import fluxflow.tasks  # noqa: F401
    import fluxflow.transfer.calvis  # noqa: F401
