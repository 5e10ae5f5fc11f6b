"""Running fluxflow's Dask graph on a SLURM cluster.

Two ways:

- :func:`slurm_client` (``fluxflow run --cluster slurm``): the scheduler runs in this process and
  dask-jobqueue's ``SLURMCluster`` submits one SLURM job per group of ``processes`` workers,
  scaled to ``max_jobs`` (or adaptively). The jobs are cancelled at the end, also on errors and
  Ctrl-C, and the queue is checked (``squeue``) until they have left it.
- :func:`run_batch` (``deploy/sbatch-fluxflow.sh``, ``python -m fluxflow.slurm batch -- CMD``):
  everything inside one ``sbatch`` allocation with dask-jobqueue's ``SLURMRunner``: ``srun`` task 0
  is the scheduler, task 1 runs CMD as the client, the other tasks are workers.

Communication is mutual TLS with credentials made for the run (:mod:`fluxflow.security`) unless
``tls: false``. The dashboard listens only on ``dashboard_address`` (default ``127.0.0.1:8787``,
reach it through an SSH tunnel, see deploy/README.md); with ``dashboard_address: false`` the
scheduler's HTTP endpoints listen on a random loopback port only.

Settings (:func:`slurm_settings`) come, by precedence, from the command line, a fluxflow YAML
(deploy/fluxflow-slurm.yaml), dask-jobqueue's own configuration (``jobqueue.slurm.*``, e.g.
``~/.config/dask/jobqueue.yaml``, see deploy/jobqueue.yaml) and the defaults below.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from fluxflow.errors import FluxflowError

log = logging.getLogger("fluxflow")

#: fluxflow defaults, used where neither the YAML/CLI nor dask-jobqueue's config sets a value.
#: One thread per worker process: python-casacore is not thread-safe (see fluxflow.cluster).
DEFAULTS: dict[str, Any] = {
    "queue": None,
    "account": None,
    "cores": 1,
    "memory": "4GB",
    "processes": None,  # = cores: one single-threaded worker process per core
    "walltime": None,  # dask-jobqueue's config default (00:30:00) applies
    "interface": None,
    "local_directory": None,
    "log_directory": "fluxflow-slurm-logs",
    "job_extra_directives": [],
    "job_script_prologue": [],
    "worker_extra_args": [],
    "python": None,
    "death_timeout": 60,
    "lifetime": None,
    "lifetime_stagger": None,
    "max_jobs": 4,
    "adaptive": False,
    "dashboard_address": "127.0.0.1:8787",
    "tls": True,
    "tls_directory": "~/.fluxflow/tls",
    "worker_timeout": 600,
}

#: settings dask-jobqueue also reads from its config (jobqueue.slurm.<name>)
_JOBQUEUE_KEYS = {
    "queue": "queue", "account": "account", "cores": "cores", "memory": "memory",
    "processes": "processes", "walltime": "walltime", "interface": "interface",
    "local_directory": "local-directory", "log_directory": "log-directory",
    "job_extra_directives": "job-extra-directives", "job_script_prologue": "job-script-prologue",
    "worker_extra_args": "worker-extra-args", "python": "python", "death_timeout": "death-timeout",
}

_ALIASES = {"partition": "queue", "project": "account", "job_extra": "job_extra_directives",
            "maximum_jobs": "max_jobs", "jobs": "max_jobs", "dashboard": "dashboard_address"}

#: argparse attribute -> setting (the CLI may define any of these; missing ones are ignored)
_CLI_OPTIONS = {
    "workers": "max_jobs", "slurm_partition": "queue", "slurm_account": "account",
    "slurm_cores": "cores", "slurm_memory": "memory", "slurm_processes": "processes",
    "slurm_walltime": "walltime", "slurm_interface": "interface",
    "slurm_log_directory": "log_directory", "slurm_adaptive": "adaptive",
    "dashboard_address": "dashboard_address",
}

_WALLTIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^\d+-\d+$")


def _import_jobqueue() -> Any:
    """Import dask_jobqueue, undoing its module-level SIGINT handler.

    dask_jobqueue.runner replaces SIGINT with ``sys.exit()`` on import, which would turn Ctrl-C
    into a silent exit with status 0; the CLI expects KeyboardInterrupt (status 130).
    """
    import dask_jobqueue

    handler = signal.getsignal(signal.SIGINT)
    if getattr(handler, "__module__", "") == "dask_jobqueue.runner":
        with contextlib.suppress(ValueError):  # not the main thread: cannot (and need not) restore
            signal.signal(signal.SIGINT, signal.default_int_handler)
    return dask_jobqueue


# ------------------------------------------------------------------------------------- settings

def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise FluxflowError(f"SLURM setting {key}: expected a positive integer, got {value!r}")
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise FluxflowError(f"SLURM setting {key}: expected a positive integer, got {value!r}")
    return n


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.lower() in ("true", "yes", "on", "1")
    raise FluxflowError(f"SLURM setting {key}: expected true or false, got {value!r}")


def _str_list(key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, int, float)) for v in value):
        raise FluxflowError(f"SLURM setting {key}: expected a list of strings, got {value!r}")
    return [str(v) for v in value]


def _validate(s: dict[str, Any]) -> dict[str, Any]:
    from dask.utils import parse_bytes, parse_timedelta

    for key in ("cores", "max_jobs", "death_timeout"):
        s[key] = _positive_int(key, s[key])
    s["processes"] = _positive_int("processes", s["processes"] if s["processes"] is not None else s["cores"])
    if s["processes"] > s["cores"]:
        raise FluxflowError(f"SLURM settings: processes ({s['processes']}) > cores ({s['cores']})")
    if s["cores"] % s["processes"]:
        raise FluxflowError(f"SLURM settings: cores ({s['cores']}) must be a multiple of "
                            f"processes ({s['processes']})")
    if s["cores"] > s["processes"]:
        log.warning("SLURM settings: %d threads per worker process; python-casacore is not "
                    "thread-safe, prefer processes = cores", s["cores"] // s["processes"])
    try:
        parse_bytes(str(s["memory"]))
    except (ValueError, TypeError) as exc:
        raise FluxflowError(f"SLURM setting memory: cannot parse {s['memory']!r} (e.g. 8GB)") from exc
    s["memory"] = str(s["memory"])
    if s["walltime"] is not None:
        s["walltime"] = str(s["walltime"])
        if not _WALLTIME.match(s["walltime"]):
            raise FluxflowError(f"SLURM setting walltime: {s['walltime']!r} is not a SLURM time "
                                f"(HH:MM:SS, D-HH:MM:SS or minutes)")
    for key in ("lifetime", "lifetime_stagger"):
        if s[key] is not None:
            try:
                parse_timedelta(s[key])
            except (ValueError, TypeError, KeyError) as exc:
                raise FluxflowError(f"SLURM setting {key}: cannot parse {s[key]!r} (e.g. 50m)") from exc
            s[key] = str(s[key])
    if s["lifetime_stagger"] is not None and s["lifetime"] is None:
        raise FluxflowError("SLURM setting lifetime_stagger needs lifetime")
    for key in ("job_extra_directives", "job_script_prologue", "worker_extra_args"):
        s[key] = _str_list(key, s[key] or [])
    for key in ("adaptive", "tls"):
        s[key] = _bool(key, s[key])
    if s["dashboard_address"] in (False, "", "false", "none", "None"):
        s["dashboard_address"] = None
    elif s["dashboard_address"] is not None:
        s["dashboard_address"] = str(s["dashboard_address"])
    if s["worker_timeout"] is not None:
        try:
            s["worker_timeout"] = float(s["worker_timeout"])
        except (TypeError, ValueError) as exc:
            raise FluxflowError(f"SLURM setting worker_timeout: expected seconds, "
                                f"got {s['worker_timeout']!r}") from exc
    # used here, on the submitting host; local_directory is left as given: the job's shell
    # expands it on the compute node (e.g. $TMPDIR)
    for key in ("log_directory", "tls_directory"):
        if s[key] is not None:
            s[key] = os.path.abspath(os.path.expandvars(os.path.expanduser(str(s[key]))))
    return s


def _read_yaml(path: str) -> dict[str, Any]:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise FluxflowError(f"SLURM config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise FluxflowError(f"SLURM config {path}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if isinstance(data, dict) and isinstance(data.get("slurm"), dict) and len(data) == 1:
        data = data["slurm"]
    if isinstance(data, dict) and "jobqueue" in data:
        raise FluxflowError(f"SLURM config {path}: this is a dask-jobqueue config (jobqueue: ...); "
                            f"put it in ~/.config/dask/ or pass fluxflow's own format "
                            f"(see deploy/fluxflow-slurm.yaml)")
    if not isinstance(data, dict):
        raise FluxflowError(f"SLURM config {path}: expected a mapping of settings")
    out: dict[str, Any] = {}
    for raw, value in data.items():
        key = str(raw).replace("-", "_")
        key = _ALIASES.get(key, key)
        if key not in DEFAULTS:
            raise FluxflowError(f"SLURM config {path}: unknown setting {raw!r}; known: "
                                f"{', '.join(sorted(DEFAULTS))} (and partition)")
        out[key] = value
    return out


def slurm_settings(yaml_path: str | os.PathLike[str] | None,
                   args: argparse.Namespace | None = None) -> dict[str, Any]:
    """The effective SLURM settings: CLI ``args`` over the YAML file over dask-jobqueue's config
    (``jobqueue.slurm.*``) over :data:`DEFAULTS`. Validated; paths made absolute.

    ``args.workers`` is the maximum number of jobs; other attributes read from ``args`` if present:
    see ``_CLI_OPTIONS`` (``slurm_partition``, ``slurm_walltime``, ..., ``no_tls``).
    """
    import dask

    _import_jobqueue()  # loads dask-jobqueue's config defaults (jobqueue.slurm.*)
    s = dict(DEFAULTS)
    for key, cfg in _JOBQUEUE_KEYS.items():
        value = dask.config.get(f"jobqueue.slurm.{cfg}", None)
        if value not in (None, []):
            s[key] = value
    sched = dask.config.get("jobqueue.slurm.scheduler-options", None) or {}
    if "dashboard_address" in sched:
        s["dashboard_address"] = sched["dashboard_address"]
    if yaml_path:
        s.update(_read_yaml(os.fspath(yaml_path)))
    if args is not None:
        for attr, key in _CLI_OPTIONS.items():
            value = getattr(args, attr, None)
            if value is not None and value is not False:
                s[key] = value
        if getattr(args, "no_tls", False):
            s["tls"] = False
    return _validate(s)


# ----------------------------------------------------------------------------------- SLURMCluster

def _squeue_ids(job_name: str) -> list[str] | None:
    """Ids of this user's jobs named ``job_name`` still in the queue (None: squeue unavailable)."""
    try:
        out = subprocess.run(["squeue", "-h", "-u", getpass.getuser(), "-n", job_name, "-o", "%A"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("squeue failed (%s); cannot check that the jobs left the queue", exc)
        return None
    return out.split()


def _queue_state(job_name: str) -> str:
    try:
        out = subprocess.run(["squeue", "-h", "-u", getpass.getuser(), "-n", job_name,
                              "-o", "%A %T %R"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "squeue unavailable"
    return "; ".join(out.strip().splitlines()) or "no job in the queue"


def _ensure_jobs_gone(job_name: str, timeout: float = 30.0) -> list[str]:
    """scancel whatever is left of this run's jobs and wait until the queue has none; returns the
    ids still there after ``timeout`` (logged as an error)."""
    ids = _squeue_ids(job_name)
    if not ids:
        return []
    log.info("cancelling leftover SLURM jobs %s", " ".join(ids))
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)
    deadline = time.monotonic() + timeout
    while ids and time.monotonic() < deadline:
        time.sleep(0.2)
        ids = _squeue_ids(job_name) or []
    if ids:
        log.error("SLURM jobs %s are still in the queue %.0f s after scancel", " ".join(ids), timeout)
    return ids


def _newest_log_tail(log_directory: str, job_name: str, lines: int = 5) -> str:
    try:
        files = sorted(Path(log_directory).glob(f"{job_name}-*.err"), key=lambda p: p.stat().st_mtime)
    except OSError:
        return ""
    if not files:
        return ""
    try:
        tail = files[-1].read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"\nlast lines of {files[-1]}:\n" + "\n".join(tail) if tail else ""


def cluster_kwargs(settings: dict[str, Any], job_name: str, security: Any = None) -> dict[str, Any]:
    """Keyword arguments of ``dask_jobqueue.SLURMCluster`` for these settings."""
    s = settings
    # worker HTTP endpoints on loopback only, unless worker_extra_args (later, so winning) say otherwise
    extra = ["--dashboard-address", "127.0.0.1:0", *s["worker_extra_args"]]
    if s["lifetime"]:
        extra += ["--lifetime", s["lifetime"]]
        if s["lifetime_stagger"]:
            extra += ["--lifetime-stagger", s["lifetime_stagger"]]
    dash = s["dashboard_address"]
    kw: dict[str, Any] = {
        "job_name": job_name,
        "cores": s["cores"], "memory": s["memory"], "processes": s["processes"],
        "walltime": s["walltime"], "death_timeout": s["death_timeout"],
        "log_directory": s["log_directory"],
        "job_extra_directives": s["job_extra_directives"],
        "job_script_prologue": s["job_script_prologue"],
        "worker_extra_args": extra,
        "scheduler_options": {"dashboard_address": dash or "127.0.0.1:0", "dashboard": bool(dash)},
    }
    for key in ("queue", "account", "interface", "local_directory", "python"):
        if s[key] is not None:
            kw[key] = s[key]
    if security is not None:
        kw["security"] = security
        kw["protocol"] = "tls://"
    return kw


def dashboard_link(client: Any, dashboard_address: str) -> str:
    """The dashboard URL where it really listens (distributed's own link names the scheduler's
    host even when the HTTP server is bound elsewhere, e.g. to loopback)."""
    port = client.scheduler_info()["services"].get("dashboard")
    host = dashboard_address.rpartition(":")[0].strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = client.scheduler.address.split("://", 1)[-1].rpartition(":")[0].strip("[]")
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/status"


def _announce_dashboard(client: Any, dashboard_address: str | None) -> None:
    if not dashboard_address:
        return
    link = dashboard_link(client, dashboard_address)
    port = link.rsplit(":", 1)[1].split("/", 1)[0]
    msg = (f"Dask dashboard: {link} on {socket.gethostname()} (from your machine: "
           f"ssh -N -L {port}:localhost:{port} {socket.gethostname()}, "
           f"then open http://localhost:{port}/status)")
    log.info(msg)
    print(f"fluxflow: {msg}", file=sys.stderr, flush=True)


def _wait_for_workers(client: Any, settings: dict[str, Any], job_name: str) -> None:
    from distributed.utils import TimeoutError as DaskTimeoutError

    timeout = settings["worker_timeout"] or None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (TimeoutError, DaskTimeoutError) as exc:
        raise FluxflowError(
            f"no Dask worker joined within {timeout:.0f} s (SLURM jobs '{job_name}': "
            f"{_queue_state(job_name)}). The worker jobs' sbatch logs are in "
            f"{settings['log_directory']}{_newest_log_tail(settings['log_directory'], job_name)}") from exc


def _shutdown(client: Any, cluster: Any, job_name: str) -> None:
    """Close client and cluster, then make sure the jobs left the queue; never raises an Exception
    (it must not hide the one that ended the run)."""
    try:
        if client is not None:
            client.close(timeout=10)
    except Exception as exc:  # noqa: BLE001 - cleanup continues
        log.warning("closing the Dask client: %s", exc)
    finally:
        try:
            if cluster is not None:
                cluster.close(timeout=30)
        except Exception as exc:  # noqa: BLE001
            log.warning("closing the SLURM cluster: %s", exc)
        finally:
            _ensure_jobs_gone(job_name)


@contextlib.contextmanager
def slurm_client(spec: Any) -> Iterator[Any]:
    """Yield a Client of a new ``SLURMCluster`` for ``spec`` (a :class:`fluxflow.cluster.ClusterSpec`).

    Settings: ``spec.slurm`` (from :func:`slurm_settings`; defaults if empty). Scales to
    ``min(max_jobs, spec.n_workers)`` jobs (``spec.n_workers`` counts jobs), or adapts between 1
    and ``max_jobs`` jobs when ``adaptive``. Waits for the first worker (FluxflowError after
    ``worker_timeout`` s). On exit, also on exceptions and KeyboardInterrupt: closes client and
    cluster, cancels what is left of the run's jobs and waits until they left the queue, and
    deletes the run's TLS credentials.
    """
    from distributed import Client

    from fluxflow.security import make_tls_security, remove_tls_directory, security_directory

    unknown = set(spec.slurm) - set(DEFAULTS)
    if unknown:
        raise FluxflowError(f"unknown SLURM settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    settings = _validate({**slurm_settings(None, None), **spec.slurm})
    jq = _import_jobqueue()
    job_name = f"fluxflow-{secrets.token_hex(4)}"
    max_jobs = settings["max_jobs"]
    n_jobs = min(max_jobs, spec.n_workers) if spec.n_workers else max_jobs
    if settings["lifetime"] and not settings["adaptive"]:
        log.warning("SLURM: workers retire after lifetime=%s but only adaptive scaling replaces "
                    "them; set adaptive: true", settings["lifetime"])
    client = cluster = tls_dir = None
    try:
        security = None
        if settings["tls"]:
            security = make_tls_security(settings["tls_directory"])
            tls_dir = security_directory(security)
        cluster = jq.SLURMCluster(**cluster_kwargs(settings, job_name, security))
        log.info("SLURM job script:\n%s", cluster.job_script())
        if settings["adaptive"]:
            cluster.adapt(minimum_jobs=1, maximum_jobs=max_jobs)
        else:
            cluster.scale(jobs=n_jobs)
        client = Client(cluster, security=security)
        _announce_dashboard(client, settings["dashboard_address"])
        _wait_for_workers(client, settings, job_name)
        yield client
    finally:
        _shutdown(client, cluster, job_name)
        if tls_dir is not None:
            remove_tls_directory(tls_dir)


# ------------------------------------------------------------------------------ batch (SLURMRunner)

def _client_command(command: Sequence[str], address: str) -> list[str]:
    """The client task's command: ``fluxflow run ...`` gets ``--scheduler-address`` (same Python)."""
    cmd = list(command)
    if cmd and Path(cmd[0]).name == "fluxflow":
        cmd = [sys.executable, "-m", "fluxflow.cli", *cmd[1:]]
        if "run" in cmd and "--scheduler-address" not in cmd:
            cmd += ["--scheduler-address", address]
    return cmd


def run_batch(command: Sequence[str], *, tls_directory: str | None = None,
              scheduler_file: str | None = None, nthreads: int = 1, interface: str | None = None,
              dashboard_address: str | None = "127.0.0.1:8787",
              local_directory: str | None = None, worker_timeout: float = 300.0) -> int:
    """Run ``command`` against a Dask cluster made of this ``srun`` step's tasks (SLURMRunner).

    Call from every task of ``srun`` (needs SLURM_PROCID, SLURM_NTASKS >= 3, SLURM_JOB_ID):
    task 0 runs the scheduler, task 1 waits for all workers then runs ``command`` with
    ``DASK_SCHEDULER_ADDRESS`` (and, with ``tls_directory``, the TLS config) in its environment
    and returns its exit status; the other tasks are workers with ``nthreads`` threads. The
    scheduler and worker tasks end when the client task finishes. ``tls_directory`` is a directory
    from :func:`fluxflow.security.make_tls_directory`, made before ``srun``.
    """
    from distributed import Client
    from distributed.core import rpc
    from distributed.utils import TimeoutError as DaskTimeoutError

    from fluxflow.security import tls_environment, tls_security

    # dask_jobqueue.runner's SIGINT handler (sys.exit) is how the runner ends scheduler and workers
    from dask_jobqueue.slurm import SLURMRunner, WorldTooSmallException

    security = tls_security(tls_directory) if tls_directory else None
    job_id = os.environ.get("SLURM_JOB_ID", "0")
    if scheduler_file is None:
        scheduler_file = os.path.join(tls_directory or os.getcwd(), f"fluxflow-scheduler-{job_id}.json")
    scheduler_options: dict[str, Any] = {
        "dashboard_address": dashboard_address or "127.0.0.1:0", "dashboard": bool(dashboard_address),
        "interface": interface}
    worker_options: dict[str, Any] = {"nthreads": nthreads, "interface": interface,
                                      "dashboard_address": "127.0.0.1:0"}
    if local_directory:
        worker_options["local_directory"] = local_directory
    if security is not None:
        scheduler_options.update(security=security, protocol="tls")
        worker_options["security"] = security

    class Runner(SLURMRunner):
        async def before_client_start(self) -> None:
            # the base class talks to the scheduler without credentials; with TLS it must use them
            if security is not None:
                self.scheduler_comm = rpc(self.scheduler_address,
                                          connection_args=security.get_connection_args("client"))

    try:
        runner = Runner(scheduler_file=scheduler_file, scheduler_options=scheduler_options,
                        worker_options=worker_options)
    except WorldTooSmallException as exc:
        raise FluxflowError(f"batch mode needs at least 3 srun tasks (scheduler, client, one "
                            f"worker): {exc}") from exc
    # only the client task gets here; scheduler and worker tasks exit inside Runner()
    try:
        with runner, Client(runner, security=security) as client:
            try:
                client.wait_for_workers(runner.n_workers, timeout=worker_timeout)
            except (TimeoutError, DaskTimeoutError) as exc:
                raise FluxflowError(f"batch: {runner.n_workers} workers did not all join within "
                                    f"{worker_timeout:.0f} s") from exc
            _announce_dashboard(client, dashboard_address)
            address = runner.scheduler_address
            env = dict(os.environ, DASK_SCHEDULER_ADDRESS=address)
            if security is not None:
                env.update(tls_environment(security))
            cmd = _client_command(command, address)
            log.info("batch: running %s against %s with %d workers", cmd, address, runner.n_workers)
            try:
                return subprocess.run(cmd, env=env).returncode
            except OSError as exc:
                raise FluxflowError(f"batch: cannot run {cmd[0]!r}: {exc.strerror}") from exc
    finally:
        with contextlib.suppress(OSError):
            os.remove(scheduler_file)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fluxflow.slurm make-tls [PARENT] | batch [options] -- COMMAND ...``."""
    p = argparse.ArgumentParser(prog="python -m fluxflow.slurm", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("make-tls", help="create run credentials in a new private directory; print it")
    t.add_argument("parent", nargs="?", default=DEFAULTS["tls_directory"])
    b = sub.add_parser("batch", help="run COMMAND on a Dask cluster made of this srun step's tasks")
    b.add_argument("--tls-directory", default=None, help="from make-tls (omit: no TLS)")
    b.add_argument("--scheduler-file", default=None)
    b.add_argument("--nthreads", type=int, default=1)
    b.add_argument("--interface", default=None)
    b.add_argument("--dashboard-address", default=DEFAULTS["dashboard_address"],
                   help="'' to disable the dashboard")
    b.add_argument("--local-directory", default=None)
    b.add_argument("--worker-timeout", type=float, default=300.0)
    b.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.cmd == "make-tls":
        from fluxflow.security import make_tls_directory

        print(make_tls_directory(a.parent))
        return 0
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not command:
        p.error("batch: give the command after --")
    try:
        return run_batch(command, tls_directory=a.tls_directory, scheduler_file=a.scheduler_file,
                         nthreads=a.nthreads, interface=a.interface,
                         dashboard_address=a.dashboard_address or None,
                         local_directory=a.local_directory, worker_timeout=a.worker_timeout)
    except FluxflowError as exc:
        print(f"fluxflow: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
