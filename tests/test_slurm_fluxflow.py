"""fluxflow runs on the real single-node SLURM (deploy/slurm-local.sh, fixture in slurm_fixture.py).

Three simulated EBs (the last without flux calibrator, so one adopts) are run once with
``--cluster local``; SLURM runs (TLS on, as by default) must give exactly the same fluxes,
leave no job in the queue (also when the run fails: bad data on the workers, a bad catalogue
path, an exception on the client side mid-run), and survive a worker job scancelled mid-run.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import casacore.tables as ct
import pytest

import fluxflow
from fluxflow.cluster import ClusterSpec
from fluxflow.simulate import simulate_session
from fluxflow.slurm import slurm_client, slurm_settings

from slurm_fixture import slurm_cluster_available  # noqa: F401 - pytest fixture

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SIM = dict(n_chan=8, n_cycles=2)  # 3 EBs of ~6 MB: ~3 s of solves on 2 single-core workers
JOB_LOG = re.compile(r"^(fluxflow-[0-9a-f]+)-(\d+)\.err$")  # dask-jobqueue: <job_name>-%J.err


def _cli(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``fluxflow -v ARGS`` in a subprocess (same Python as the tests)."""
    return subprocess.run([sys.executable, "-m", "fluxflow.cli", "-v", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _queued() -> set[str]:
    """Ids of all jobs in the SLURM queue (pending, running, completing)."""
    return set(subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True,
                              check=True).stdout.split())


def _eventually(check, timeout: float = 30.0) -> bool:
    """True once ``check()`` is true, polled for up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _slurm_yaml(tmp_path: Path) -> Path:
    """fluxflow SLURM settings for this box: 1-core 2-GB jobs on loopback, everything in tmp."""
    cfg = tmp_path / "slurm.yaml"
    cfg.write_text("\n".join([
        "partition: debug", "cores: 1", "memory: 2GB", "walltime: '00:10:00'", "interface: lo",
        f"local_directory: {tmp_path / 'scratch'}", f"log_directory: {tmp_path / 'logs'}",
        f"tls_directory: {tmp_path / 'tls'}", "dashboard_address: '127.0.0.1:0'",
        "worker_timeout: 60"]) + "\n")
    return cfg


def _jobs_of_run(log_dir: Path) -> dict[str, set[str]]:
    """job name -> ids of the worker jobs that ran, from their sbatch log files."""
    jobs: dict[str, set[str]] = {}
    for path in log_dir.glob("*.err") if log_dir.is_dir() else ():
        m = JOB_LOG.match(path.name)
        if m:
            jobs.setdefault(m.group(1), set()).add(m.group(2))
    return jobs


def _fluxes(outdir: Path) -> list[tuple]:
    """Per MS: name, error, derived and calibrated fluxes, adopted flag (results.json)."""
    recs = json.loads((outdir / "results.json").read_text())["ms"]
    return [(r["ms_name"], r["error"], r["derived_fluxes"], r["calibrated_fluxes"], r["adopted"])
            for r in recs]


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return simulate_session(str(tmp_path_factory.mktemp("eb")), n_ebs=3, **SIM)


@pytest.fixture(scope="module")
def local_run(session, tmp_path_factory) -> Path:
    """Output directory of the same run on a LocalCluster of 2 worker processes."""
    work = tmp_path_factory.mktemp("local")
    out = work / "out"
    proc = _cli("run", *session.ms_paths, "--reffile", session.flux_csv, "-o", str(out),
                "--cluster", "local", "--workers", "2", "--no-progress", cwd=work)
    assert proc.returncode == 0, proc.stderr
    fluxes = _fluxes(out)
    assert [f[1] for f in fluxes] == [None, None, None]
    assert all(len(f[2]) == 12 for f in fluxes)  # 3 transfer fields x 4 spws each
    assert fluxes[2][4]  # the EB without flux calibrator adopted the others' fluxes
    return out


def test_cli_run_on_slurm_with_tls_equals_local_run(slurm_cluster_available, session, local_run,
                                                     tmp_path):
    cfg = _slurm_yaml(tmp_path)
    out = tmp_path / "out"
    proc = _cli("run", *session.ms_paths, "--reffile", session.flux_csv, "-o", str(out),
                "--cluster", "slurm", "--slurm-config", str(cfg), "--workers", "2",
                "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # TLS is on without asking: scheduler on tls://, workers started with the run's credentials
    assert re.search(r"Scheduler at:\s+tls://127\.0\.0\.1:", proc.stderr), proc.stderr[-3000:]
    assert "--protocol tls://" in proc.stderr and "--tls-key" in proc.stderr
    assert list((tmp_path / "tls").iterdir()) == []  # credentials deleted after the run

    assert (out / "derived_fluxes.csv").read_bytes() == (local_run / "derived_fluxes.csv").read_bytes()
    assert _fluxes(out) == _fluxes(local_run)

    jobs = _jobs_of_run(tmp_path / "logs")
    assert len(jobs) == 1 and len(ids := next(iter(jobs.values()))) == 2, jobs
    assert not ids & _queued()


def _corrupt_copy(ms: str, dest: Path) -> Path:
    """A copy of ``ms`` without the largest storage file of its DATA column (the science
    windows' hypercube, as after an incomplete transfer): metadata and planning work, every
    science visibility read on a worker fails."""
    copy = dest / Path(ms).name
    shutil.copytree(ms, copy)
    with ct.table(str(copy), ack=False) as t:
        seqnr = t.getdminfo("DATA")["SEQNR"]
    max(copy.glob(f"table.f{seqnr}_TSM*"), key=lambda p: p.stat().st_size).unlink()
    return copy


@pytest.mark.parametrize("failure", ["data-files-missing", "reffile-missing"])
def test_failed_run_leaves_queue_empty(slurm_cluster_available, session, tmp_path, failure):
    cfg = _slurm_yaml(tmp_path)
    if failure == "data-files-missing":
        vis, reffile = _corrupt_copy(session.ms_paths[0], tmp_path), session.flux_csv
    else:
        vis, reffile = session.ms_paths[0], str(tmp_path / "no-such-flux.csv")
    proc = _cli("run", str(vis), "--reffile", reffile, "-o", str(tmp_path / "out"),
                "--cluster", "slurm", "--slurm-config", str(cfg), "--workers", "2",
                "--no-progress", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    jobs = _jobs_of_run(tmp_path / "logs")
    if failure == "data-files-missing":
        # the failure came from the workers, while the SLURM jobs were running
        assert "could not be opened" in proc.stderr and "FAILED" in proc.stdout
        assert "Dask dashboard" in proc.stderr
        assert len(jobs) == 1 and (ids := next(iter(jobs.values()))), jobs
        assert not ids & _queued()
        assert list((tmp_path / "tls").iterdir()) == []
    else:
        # caught while planning, before any job was submitted
        assert "no-such-flux.csv' does not exist" in proc.stderr
        assert jobs == {}
        assert not (tmp_path / "tls").exists() or list((tmp_path / "tls").iterdir()) == []


def test_exception_mid_run_cancels_the_jobs_before_returning(slurm_cluster_available, session,
                                                             tmp_path, monkeypatch):
    """The client side fails while solves run on the SLURM workers: the jobs have left the
    queue when the exception reaches the caller (not only when the process exits)."""
    from distributed import as_completed

    from fluxflow import workflow

    def crash_after_first_solve(client, final, solves, progress, *args):
        futures = client.compute(solves)
        next(as_completed(futures, timeout=120))
        raise RuntimeError("injected client failure")

    monkeypatch.setattr(workflow, "_compute_with_progress", crash_after_first_solve)
    settings = slurm_settings(_slurm_yaml(tmp_path), argparse.Namespace(workers=2))
    with pytest.raises(RuntimeError, match="injected client failure"):
        fluxflow.gfluxscale(vis=session.ms_paths, reffile=session.flux_csv,
                            output_dir=str(tmp_path / "out"),
                            cluster=ClusterSpec(kind="slurm", n_workers=2, slurm=settings))
    jobs = _jobs_of_run(tmp_path / "logs")
    assert len(jobs) == 1 and (ids := next(iter(jobs.values()))), jobs
    assert not ids & _queued()
    assert list((tmp_path / "tls").iterdir()) == []


def test_scancel_of_a_worker_job_mid_run_gives_unchanged_results(slurm_cluster_available, session,
                                                                 local_run, tmp_path):
    settings = slurm_settings(_slurm_yaml(tmp_path), argparse.Namespace(workers=2))

    # run on the scheduler (in this process; local functions are pickled by value)
    def solves_done(dask_scheduler) -> tuple[int, int]:
        solves = [ts for k, ts in dask_scheduler.tasks.items() if str(k).startswith("solve-")]
        return sum(ts.state == "memory" for ts in solves), len(solves)

    killed: dict = {}
    run_done = threading.Event()

    def scancel_a_busy_worker(client) -> None:
        try:
            while not run_done.is_set():
                done, total = client.run_on_scheduler(solves_done)
                if done >= 3:
                    busy = {a: keys for a, keys in client.processing().items() if keys}
                    addr = next(iter(busy))
                    name = client.scheduler_info()["workers"][addr]["name"]
                    job = str(client.cluster.workers[name].job_id)
                    killed.update(addr=addr, job=job, done=done, total=total,
                                  busy=len(busy[addr]), before_end=not run_done.is_set())
                    subprocess.run(["scancel", job], check=True)
                    return
                time.sleep(0.02)
        except Exception as exc:  # noqa: BLE001 - reported by the test below
            killed["error"] = repr(exc)

    out = tmp_path / "out"
    with slurm_client(ClusterSpec(kind="slurm", n_workers=2, slurm=settings)) as client:
        client.wait_for_workers(2, timeout=60)
        jobs = {str(job.job_id) for job in client.cluster.workers.values()}
        killer = threading.Thread(target=scancel_a_busy_worker, args=(client,), daemon=True)
        killer.start()
        try:
            res = fluxflow.gfluxscale(vis=session.ms_paths, client=client, reffile=session.flux_csv,
                                      output_dir=str(out))
        finally:
            run_done.set()
            killer.join(timeout=30)
        assert "error" not in killed, killed
        # killed while the run had work left on that worker, not after it finished
        assert killed and killed["before_end"] and killed["busy"] > 0, killed
        assert killed["done"] < killed["total"], killed
        assert _eventually(lambda: killed["addr"] not in client.scheduler_info()["workers"])
        assert _eventually(lambda: killed["job"] not in _queued())
    assert res.exit_code == 0
    assert (out / "derived_fluxes.csv").read_bytes() == (local_run / "derived_fluxes.csv").read_bytes()
    assert _fluxes(out) == _fluxes(local_run)
    assert not jobs & _queued()
