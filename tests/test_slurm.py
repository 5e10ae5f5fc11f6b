"""fluxflow.slurm and fluxflow.security, against a real single-node SLURM (deploy/slurm-local.sh).

Tests marked ``slurm`` use the session fixture from tests/slurm_fixture.py; the others (settings,
credentials) need no SLURM.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dask
import psutil
import pytest
from dask_jobqueue.slurm import SLURMJob  # (imported before any dask.config.set of jobqueue.*)
from distributed import Client, as_completed, wait

from fluxflow.cluster import ClusterSpec, open_client
from fluxflow.errors import FluxflowError
from fluxflow.security import make_tls_security, remove_tls_directory, security_directory, tls_security
from fluxflow.slurm import _client_command, cluster_kwargs, slurm_client, slurm_settings

from slurm_fixture import slurm_cluster_available  # noqa: F401 - pytest fixture

REPO = Path(__file__).resolve().parent.parent
SUM_SQUARES_0_19 = 19 * 20 * 39 // 6  # sum k^2, k = 0..19 = n(n+1)(2n+1)/6 with n = 19
SUM_SQUARES_0_29 = 29 * 30 * 59 // 6


def _queued() -> set[str]:
    """Ids of all jobs in the SLURM queue (pending, running, completing)."""
    return set(subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True,
                              check=True).stdout.split())


def _job_ids(client: Client) -> set[str]:
    return {str(job.job_id) for job in client.cluster.workers.values()}


def _test_settings(tmp_path: Path, **yaml_extra: object) -> dict:
    """Settings for this box through the real YAML + CLI path: 1-core 1-GB jobs on loopback."""
    lines = ["partition: debug", "cores: 1", "memory: 1GB", "walltime: '00:05:00'",
             "interface: lo", f"log_directory: {tmp_path / 'logs'}",
             f"tls_directory: {tmp_path / 'tls'}", "dashboard_address: '127.0.0.1:0'",
             "worker_timeout: 60"]
    lines += [f"{k}: {v}" for k, v in yaml_extra.items()]
    cfg = tmp_path / "slurm.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    return slurm_settings(cfg, argparse.Namespace(workers=2))


# Task functions are made inside the tests: SLURM workers cannot import this test module, and
# distributed pickles module-level functions by reference but local functions by value.

# ------------------------------------------------------------------------------ no SLURM needed

def test_settings_merge_yaml_cli_jobqueue_config(tmp_path):
    cfg = tmp_path / "fluxflow-slurm.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        partition: short
        account: proj42
        cores: 4
        memory: 16GB
        walltime: "00:45:00"
        local-directory: /scratch/me
        log_directory: {tmp_path / "logs"}
        job_extra_directives: ["--qos=normal", "--constraint=cpu"]
        lifetime: 50m
        lifetime_stagger: 5m
        max_jobs: 10
        adaptive: true
        """))
    args = argparse.Namespace(workers=3, slurm_walltime="00:20:00", slurm_partition=None, no_tls=False)
    with dask.config.set({"jobqueue.slurm.account": "from-config", "jobqueue.slurm.interface": "ib0"}):
        s = slurm_settings(cfg, args)
    assert s["queue"] == "short"            # YAML alias partition -> queue
    assert s["account"] == "proj42"         # YAML over jobqueue config
    assert s["interface"] == "ib0"          # jobqueue config where YAML and CLI are silent
    assert s["walltime"] == "00:20:00"      # CLI over YAML
    assert s["max_jobs"] == 3               # --workers is the job maximum
    assert s["cores"] == 4 and s["processes"] == 4  # one single-threaded process per core
    assert s["local_directory"] == "/scratch/me" and s["log_directory"] == str(tmp_path / "logs")
    assert s["adaptive"] is True and s["tls"] is True
    assert s["dashboard_address"] == "127.0.0.1:8787"

    kw = cluster_kwargs(s, "fluxflow-test", security=None)
    script = SLURMJob(scheduler="tcp://127.0.0.1:1", name="w", **{
        k: v for k, v in kw.items() if k != "scheduler_options"}).job_script()
    for expected in ("#SBATCH -J fluxflow-test", "#SBATCH -p short", "#SBATCH -A proj42",
                     "#SBATCH -t 00:20:00", "#SBATCH -n 1", "#SBATCH --cpus-per-task=4",
                     "#SBATCH --qos=normal", "#SBATCH --constraint=cpu", "--nworkers 4",
                     "--nthreads 1", "--lifetime 50m --lifetime-stagger 5m", "--interface ib0",
                     "--local-directory /scratch/me"):
        assert expected in script, expected
    assert kw["scheduler_options"] == {"dashboard_address": "127.0.0.1:8787", "dashboard": True}


def test_settings_no_tls_and_dashboard_off(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("slurm:\n  dashboard_address: false\n  tls: false\n")
    s = slurm_settings(cfg, argparse.Namespace(workers=None))
    assert s["tls"] is False and s["dashboard_address"] is None and s["max_jobs"] == 4
    kw = cluster_kwargs(s, "x")
    assert "security" not in kw
    # HTTP endpoints stay on a loopback port even with the dashboard off
    assert kw["scheduler_options"] == {"dashboard_address": "127.0.0.1:0", "dashboard": False}
    assert slurm_settings(None, argparse.Namespace(workers=None, no_tls=True))["tls"] is False


@pytest.mark.parametrize("text, message", [
    ("cores: 2\nqueueu: debug\n", "unknown setting 'queueu'"),
    ("walltime: soon\n", "not a SLURM time"),
    ("cores: 2\nprocesses: 3\n", "processes (3) > cores (2)"),
    ("memory: lots\n", "cannot parse 'lots'"),
    ("max_jobs: 0\n", "max_jobs: expected a positive integer"),
    ("lifetime_stagger: 5m\n", "lifetime_stagger needs lifetime"),
    ("jobqueue:\n  slurm:\n    cores: 1\n", "dask-jobqueue config"),
    ("- a\n- b\n", "expected a mapping"),
])
def test_settings_errors(tmp_path, text, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(FluxflowError, match=re.escape(message)):
        slurm_settings(cfg, None)


def test_settings_missing_file(tmp_path):
    with pytest.raises(FluxflowError, match="nope.yaml"):
        slurm_settings(tmp_path / "nope.yaml", None)


def test_slurm_client_rejects_unknown_settings():
    with pytest.raises(FluxflowError, match="unknown SLURM settings"):
        with slurm_client(ClusterSpec(kind="slurm", slurm={"partiton": "debug"})):
            pytest.fail("must not start")


def test_deploy_example_configs_load():
    s = slurm_settings(REPO / "deploy" / "fluxflow-slurm.yaml", argparse.Namespace(workers=None))
    assert (s["queue"], s["cores"], s["processes"], s["max_jobs"]) == ("normal", 4, 4, 8)
    assert s["adaptive"] and s["tls"] and s["lifetime"] == "110m"
    assert s["local_directory"] == "$TMPDIR"  # expanded by the job's shell, not here
    import yaml

    jq = yaml.safe_load((REPO / "deploy" / "jobqueue.yaml").read_text())["jobqueue"]["slurm"]
    with dask.config.set({f"jobqueue.slurm.{k}": v for k, v in jq.items()}):
        s = slurm_settings(None, argparse.Namespace(workers=2))
    assert (s["queue"], s["memory"], s["walltime"], s["max_jobs"]) == ("normal", "4GB", "01:00:00", 2)
    assert s["log_directory"] == os.path.expanduser("~/fluxflow-slurm-logs")


def test_tls_credentials_private_and_removable(tmp_path):
    sec = make_tls_security(tmp_path / "tls")
    d = security_directory(sec)
    assert d.parent == tmp_path / "tls"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for name in ("ca.pem", "dask.crt", "dask.key"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600
    assert sec.require_encryption and sec.tls_worker_key == str(d / "dask.key")
    assert not any("PRIVATE KEY" in p.read_text() for p in d.iterdir() if p.name != "dask.key")
    (d / "dask.key").chmod(0o644)
    with pytest.raises(FluxflowError, match="other users could read"):
        tls_security(d)
    remove_tls_directory(d)
    assert not d.exists()
    keep = tmp_path / "not-ours"
    keep.mkdir()
    remove_tls_directory(keep)  # no marker: never deleted
    assert keep.exists()


def test_batch_client_command():
    addr = "tls://10.0.0.1:8786"
    assert _client_command(["fluxflow", "run", "a.ms", "-o", "out"], addr) == [
        sys.executable, "-m", "fluxflow.cli", "run", "a.ms", "-o", "out", "--scheduler-address", addr]
    assert _client_command(["python", "x.py"], addr) == ["python", "x.py"]


# --------------------------------------------------------------------------------- real SLURM

@pytest.mark.slurm
def test_tls_cluster_runs_on_slurm_jobs(slurm_cluster_available, tmp_path):
    spec = ClusterSpec(kind="slurm", n_workers=2, slurm=_test_settings(tmp_path))
    with open_client(spec) as client:
        assert client.scheduler.address.startswith("tls://")
        assert all(a.startswith("tls://") for a in client.scheduler_info()["workers"])
        jobs = _job_ids(client)
        assert len(jobs) == 2 and jobs <= _queued()
        def square_where(x: int) -> tuple[int, str | None]:
            return x * x, os.environ.get("SLURM_JOB_ID")

        futures = client.map(square_where, range(20))
        wait(futures, timeout=60)
        results = client.gather(futures)
        assert sum(r for r, _ in results) == SUM_SQUARES_0_19
        assert {job for _, job in results} <= jobs  # every task ran inside one of our SLURM jobs

        (tls_dir,) = (tmp_path / "tls").iterdir()
        assert f"--tls-key {tls_dir}/dask.key" in client.cluster.job_script()
        # a client with another CA's certificate, or without TLS, is refused
        with pytest.raises(OSError):
            Client(client.scheduler.address, security=make_tls_security(tmp_path / "other"), timeout=5)
        with pytest.raises(OSError):
            Client(client.scheduler.address.replace("tls://", "tcp://"), timeout=5)
        # the dashboard listens on loopback only
        port = client.scheduler_info()["services"]["dashboard"]
        listening = [c.laddr.ip for c in psutil.Process().net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
        assert listening == ["127.0.0.1"]
    assert not jobs & _queued()
    assert list((tmp_path / "tls").iterdir()) == []  # the run's credentials are deleted


@pytest.mark.slurm
def test_adaptive_cluster(slurm_cluster_available, tmp_path):
    spec = ClusterSpec(kind="slurm", slurm=_test_settings(tmp_path, adaptive="true"))
    with slurm_client(spec) as client:
        futures = client.map(lambda x: x * x, range(20))
        wait(futures, timeout=60)
        assert sum(client.gather(futures)) == SUM_SQUARES_0_19
        jobs = _job_ids(client)
        assert 1 <= len(jobs) <= 2  # max_jobs = --workers 2
    assert not jobs & _queued()


@pytest.mark.slurm
@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_jobs_leave_queue_when_body_raises(slurm_cluster_available, tmp_path, exc_type):
    spec = ClusterSpec(kind="slurm", n_workers=1, slurm=_test_settings(tmp_path))
    with pytest.raises(exc_type, match="boom"):
        with slurm_client(spec) as client:
            jobs = _job_ids(client)
            assert len(jobs) == 1 and jobs <= _queued()
            assert client.submit(pow, 3, 2).result(timeout=60) == 9
            raise exc_type("boom")
    assert not jobs & _queued()


@pytest.mark.slurm
def test_pending_jobs_time_out_with_clear_error(slurm_cluster_available, tmp_path):
    settings = _test_settings(tmp_path, worker_timeout=3, job_extra_directives='["--begin=now+1hour"]')
    with pytest.raises(FluxflowError) as info:
        with slurm_client(ClusterSpec(kind="slurm", n_workers=1, slurm=settings)):
            pytest.fail("no worker can have joined")
    msg = str(info.value)
    assert "no Dask worker joined within 3 s" in msg and "PENDING (BeginTime)" in msg
    assert str(tmp_path / "logs") in msg
    jobs = set(re.findall(r"(\d+) PENDING", msg))
    assert len(jobs) == 1 and not jobs & _queued()


@pytest.mark.slurm
def test_ctrl_c_cancels_jobs(slurm_cluster_available, tmp_path):
    settings = _test_settings(tmp_path)
    code = textwrap.dedent(f"""
        import sys, time
        from fluxflow.cluster import ClusterSpec
        from fluxflow.slurm import slurm_client
        try:
            with slurm_client(ClusterSpec(kind="slurm", n_workers=1, slurm={settings!r})) as client:
                print(*[job.job_id for job in client.cluster.workers.values()], flush=True)
                time.sleep(60)
        except KeyboardInterrupt:
            sys.exit(130)
        """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    try:
        jobs = set(proc.stdout.readline().split())
        assert len(jobs) == 1 and jobs <= _queued(), proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130  # dask_jobqueue's sys.exit SIGINT handler is undone
    finally:
        proc.kill()
    assert not jobs & _queued()


@pytest.mark.slurm
def test_scancel_of_a_worker_job_is_survived(slurm_cluster_available, tmp_path):
    spec = ClusterSpec(kind="slurm", n_workers=2, slurm=_test_settings(tmp_path))
    with slurm_client(spec) as client:
        client.wait_for_workers(2, timeout=60)
        def slow_square(x: int) -> int:
            time.sleep(0.2)
            return x * x

        futures = client.map(slow_square, range(30), pure=False)
        done = 0
        for _ in as_completed(futures, timeout=60):
            done += 1
            if done == 4:
                break
        processing = client.processing()
        victim_addr = next(a for a, keys in processing.items() if keys)
        name = client.scheduler_info()["workers"][victim_addr]["name"]
        victim_job = str(client.cluster.workers[name].job_id)
        subprocess.run(["scancel", victim_job], check=True)
        wait(futures, timeout=60)
        assert client.gather(futures) == [x * x for x in range(30)]
        assert sum(client.gather(futures)) == SUM_SQUARES_0_29
        assert victim_addr not in client.scheduler_info()["workers"]
        assert victim_job not in _queued()
        jobs = _job_ids(client) | {victim_job}
    assert not jobs & _queued()


@pytest.mark.slurm
def test_sbatch_batch_mode_with_slurmrunner(slurm_cluster_available, tmp_path):
    script = tmp_path / "tiny.py"
    script.write_text(textwrap.dedent("""
        import sys
        from distributed import Client
        with Client() as c:  # DASK_SCHEDULER_ADDRESS and the TLS config come from the batch task
            print("address", c.scheduler.address, "workers", len(c.scheduler_info()["workers"]))
            print("result", sum(c.gather(c.map(lambda x: x * x, range(20)))))
        sys.exit(int(sys.argv[1]))
        """))
    env = dict(os.environ, FLUXFLOW_PYTHON=sys.executable, FLUXFLOW_TLS_PARENT=str(tmp_path / "tls"),
               FLUXFLOW_DASHBOARD="127.0.0.1:0")

    def submit(rc: int) -> subprocess.Popen[str]:
        # 3 tasks on one allocated CPU (-O): the 2-CPU test node can run both jobs at once
        return subprocess.Popen(
            ["sbatch", "--wait", "-n", "3", "-O", "-o", str(tmp_path / f"out-{rc}.txt"),
             str(REPO / "deploy" / "sbatch-fluxflow.sh"), sys.executable, str(script), str(rc)],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    ok, failing = submit(0), submit(3)
    assert ok.wait(timeout=60) == 0, ok.stdout.read()
    assert failing.wait(timeout=60) == 3  # the command's exit status is the job's
    jobs = {re.search(r"Submitted batch job (\d+)", p.stdout.read()).group(1) for p in (ok, failing)}
    for rc in (0, 3):
        out = (tmp_path / f"out-{rc}.txt").read_text()
        assert "address tls://" in out and "workers 1" in out, out
        assert f"result {SUM_SQUARES_0_19}" in out, out
    assert list((tmp_path / "tls").iterdir()) == []  # credentials removed by the job script
    assert len(jobs) == 2 and not jobs & _queued()
