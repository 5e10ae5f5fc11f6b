"""Issue 7: bad input gets one clear line and a non-zero exit; one bad MS does not cost the others;
re-runs, kills and worker loss lose nothing and never touch DATA, FLAG or WEIGHT."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import casacore.tables as ct
import numpy as np
import pytest

import fluxflow
from fluxflow.simulate import simulate_ms

SMALL = dict(n_chan=4, n_cycles=1)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("rel")
    return simulate_ms(str(d / "base.ms"), seed=21, **SMALL)


@pytest.fixture
def ms(base, tmp_path):
    """A private copy of the simulated MS (tests may damage it) with its flux.csv."""
    dst = tmp_path / "eb.ms"
    shutil.copytree(base.ms_path, dst)
    shutil.copy(base.flux_csv, tmp_path / "eb.flux.csv")
    with open(base.flux_csv) as fh:
        text = fh.read().replace("base.ms", "eb.ms")
    (tmp_path / "eb.flux.csv").write_text(text)
    return str(dst)


def cli(*args, env=None, timeout=300):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "fluxflow.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=e)


def checksums(path):
    out = {}
    with ct.table(path, ack=False) as t:
        for col in ("DATA", "FLAG", "WEIGHT"):
            cells = t.getvarcol(col)
            out[col] = hash(b"".join(np.ascontiguousarray(cells[k]).tobytes()
                                     for k in sorted(cells, key=lambda k: int(k[1:]))))
    return out


def one_line_error(proc, *needles):
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("fluxflow: error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# ---- bad input ---------------------------------------------------------------------------
def test_missing_path(tmp_path):
    p = cli("run", str(tmp_path / "nope.ms"), "--cluster", "sync", "-o", str(tmp_path / "o"))
    one_line_error(p, "nope.ms")


def test_not_an_ms(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x.txt").write_text("hello")
    p = cli("run", str(tmp_path / "plain"), "--cluster", "sync", "-o", str(tmp_path / "o"))
    one_line_error(p, "plain")


@pytest.mark.parametrize("opt,needle", [
    (["--reference", "NoSuchCal"], "NoSuchCal"),
    (["--transfer", "J0510+1800,Nowhere"], "Nowhere"),
    (["--spw", "42"], "spw 42"),
    (["--refant", "XX99"], "XX99"),
    (["--refspwmap", "0,9,2,3,4,5,6,7"], "spw 9"),
    (["--refspwmap", "0,2,2,3,4,5,6,7"], "spw 2"),  # spw 2 is a CH_AVG window: no reference data
    (["--reffile", "/nonexistent/flux.csv"], "flux.csv"),
])
def test_bad_selection_options(ms, tmp_path, opt, needle):
    before = checksums(ms)
    p = cli("run", ms, "--cluster", "sync", "-o", str(tmp_path / "o"), *opt)
    one_line_error(p, needle)
    assert checksums(ms) == before
    with ct.table(ms, ack=False) as t:
        assert "MODEL_DATA" not in t.colnames()  # nothing written


@pytest.mark.parametrize("mutate,needle", [
    (lambda t: t.replace("spw,I,", "spw,Iflux,"), "I"),
    (lambda t: t.replace(",0.0,0.0,0.0,", ",abc,0.0,0.0,", 1), "abc"),
    (lambda t: t + t.splitlines()[1] + "\n", "duplicate"),
])
def test_malformed_flux_csv(ms, tmp_path, mutate, needle):
    csv = tmp_path / "eb.flux.csv"
    csv.write_text(mutate(csv.read_text()))
    p = cli("run", ms, "--cluster", "sync", "-o", str(tmp_path / "o"))
    one_line_error(p, "flux.csv")


def test_negative_flux_in_csv(ms, tmp_path):
    csv = tmp_path / "eb.flux.csv"
    lines = csv.read_text().splitlines()
    parts = lines[1].split(",")
    parts[3] = "-1.5"
    lines[1] = ",".join(parts)
    csv.write_text("\n".join(lines) + "\n")
    p = cli("run", ms, "--cluster", "sync", "-o", str(tmp_path / "o"))
    one_line_error(p, "flux.csv", "-1.5")


def test_no_amplitude_calibrator(tmp_path):
    sim = simulate_ms(str(tmp_path / "noamp.ms"), seed=2, with_flux_cal=False, **SMALL)
    p = cli("run", sim.ms_path, "--cluster", "sync", "-o", str(tmp_path / "o"))
    assert p.returncode == 1
    assert "AMPLITUDE" in p.stdout + p.stderr
    assert "Traceback" not in p.stderr


def test_reference_all_flagged(ms, tmp_path):
    with ct.table(ms, readonly=False, ack=False) as t:
        for dd in range(t.getcol("DATA_DESC_ID").max() + 1):  # the flux calibrator, every spw
            sub = t.query(f"FIELD_ID==1 && DATA_DESC_ID=={dd}")  # (test input, our own copy)
            if sub.nrows():
                sub.putcol("FLAG", np.ones_like(sub.getcol("FLAG")))
            sub.close()
    p = cli("run", ms, "--cluster", "sync", "-o", str(tmp_path / "o"))
    assert p.returncode == 1
    assert "reference" in (p.stdout + p.stderr).lower()
    assert "Traceback" not in p.stderr


def test_too_few_antennas(tmp_path):
    sim = simulate_ms(str(tmp_path / "two.ms"), seed=3, n_ant=2, **SMALL)
    p = cli("run", sim.ms_path, "--cluster", "sync", "-o", str(tmp_path / "o"))
    assert p.returncode == 1
    assert "Traceback" not in p.stderr


def test_corrupt_table(ms, tmp_path):
    f0 = os.path.join(ms, "table.f0")
    with open(f0, "r+b") as fh:
        fh.truncate(100)
    p = cli("run", ms, "--cluster", "sync", "-o", str(tmp_path / "o"))
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    assert "eb.ms" in p.stderr


def test_locked_table_times_out_cleanly(ms, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import casacore.tables as ct, sys, time\n"
        f"t = ct.table({ms!r}, readonly=False, ack=False, lockoptions='user')\n"
        "t.lock(write=True)\nprint('locked', flush=True)\ntime.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        p = cli("run", ms, "--cluster", "sync", "-o", str(tmp_path / "o"),
                env={"FLUXFLOW_LOCK_TIMEOUT": "1"})
    finally:
        holder.kill()
        holder.wait()
    assert p.returncode != 0
    assert "lock" in (p.stdout + p.stderr).lower()
    assert "Traceback" not in p.stderr


# ---- partial failure ---------------------------------------------------------------------
def test_one_bad_ms_does_not_stop_the_others(ms, base, tmp_path):
    bad = tmp_path / "bad.ms"
    bad.mkdir()
    out = tmp_path / "o"
    p = cli("run", ms, str(bad), "--cluster", "sync", "-o", str(out), "--no-progress")
    assert p.returncode == 3, p.stderr  # partial
    res = json.load(open(out / "results.json"))
    by = {r["ms_name"]: r for r in res["ms"]}
    assert by["bad.ms"]["error"] and "bad.ms" in by["bad.ms"]["error"]
    assert not by["eb.ms"]["error"] and len(by["eb.ms"]["calibrated_fluxes"]) == 12
    assert "FAILED bad.ms" in p.stdout


# ---- interruption, idempotence, worker loss ----------------------------------------------
@pytest.mark.parametrize("delay", [0.8, 2.0, 3.5])
def test_sigkill_leaves_ms_intact_and_rerun_completes(ms, tmp_path, delay):
    before = checksums(ms)
    proc = subprocess.Popen([sys.executable, "-m", "fluxflow.cli", "run", ms, "--cluster", "sync",
                             "-o", str(tmp_path / "killed"), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert checksums(ms) == before
    with ct.table(ms, ack=False) as t:
        assert t.nrows() > 0
    res = fluxflow.gfluxscale([ms], cluster="sync", output_dir=str(tmp_path / "rerun"))
    assert res.exit_code == 0 and len(res.flux_rows()) == 12
    assert checksums(ms) == before


def test_worker_killed_during_solves_is_survived(base, tmp_path):
    from distributed import Client, LocalCluster

    ref = fluxflow.gfluxscale([base.ms_path], cluster="sync", output_dir=str(tmp_path / "ref"),
                              write_model=False)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
            Client(lc) as client:
        pids = list(client.run(os.getpid).values())
        killed = threading.Event()

        def killer():
            # kill one worker as soon as solve tasks are running on it
            for _ in range(400):
                proc = client.processing()
                busy = [w for w, keys in proc.items() if any("solve" in str(k) for k in keys)]
                if busy:
                    pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                    os.kill(pid, signal.SIGKILL)
                    killed.set()
                    return
                time.sleep(0.01)

        th = threading.Thread(target=killer)
        th.start()
        res = fluxflow.gfluxscale([base.ms_path], client=client, output_dir=str(tmp_path / "k"),
                                  write_model=False)
        th.join()
    assert killed.is_set() and len(pids) == 2
    assert res.flux_rows() == ref.flux_rows()


def test_no_space_for_model_data(ms, tmp_path):
    """A full disk while adding MODEL_DATA: clear message, MS readable and unchanged."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    size_k = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(ms) for f in fs) // 1024
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_k + 700}k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    try:
        small = str(mnt / "eb.ms")
        shutil.copytree(ms, small)
        before = checksums(small)
        p = cli("run", small, "--cluster", "sync", "-o", str(tmp_path / "o"), "--no-progress",
                "--reffile", str(tmp_path / "eb.flux.csv"))
        assert p.returncode == 1
        assert "not enough disk space to add MODEL_DATA" in p.stdout
        assert checksums(small) == before
        with ct.table(small, ack=False) as t:
            assert "MODEL_DATA" not in t.colnames()
        rec = json.load(open(tmp_path / "o" / "results.json"))["ms"][0]
        assert len(rec["derived_fluxes"]) == 12  # the fluxes are still reported
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
