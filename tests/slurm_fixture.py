"""pytest fixture: a real single-node SLURM (deploy/slurm-local.sh) for the session.

Register it in tests/conftest.py with ``pytest_plugins = ["slurm_fixture"]`` (tests/ is on
sys.path in pytest's default import mode) or import the fixture in the test module.

The fixture skips only where SLURM cannot be set up at all (not Linux, not root and no
password-less sudo, neither apt-get nor the SLURM programs) or when FLUXFLOW_SKIP_SLURM=1; under
CI (CI set) even those fail. When setting it up merely fails, the test fails with the script's log.
SLURM is stopped at the end of the session only if this fixture started it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "slurm-local.sh"
STATE_DIR = os.environ.get("FLUXFLOW_SLURM_STATE", "/tmp/fluxflow-slurm")


def _privilege_prefix() -> list[str] | None:
    """[] as root, ["sudo", "-n"] with password-less sudo, None otherwise."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def _cannot_run_reason() -> str | None:
    if os.environ.get("FLUXFLOW_SKIP_SLURM") == "1":
        return "FLUXFLOW_SKIP_SLURM=1"
    if not sys.platform.startswith("linux"):
        return "the single-node SLURM needs Linux"
    if _privilege_prefix() is None:
        return "starting SLURM needs root or password-less sudo (run: sudo deploy/slurm-local.sh start)"
    if not (shutil.which("apt-get") or (shutil.which("slurmctld") or Path("/usr/sbin/slurmctld").exists())):
        return "neither apt-get nor slurmctld available to set up SLURM"
    return None


def _script(action: str, timeout: float) -> subprocess.CompletedProcess[str]:
    cmd = [*(_privilege_prefix() or []), "bash", str(SCRIPT), action, STATE_DIR]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def slurm_cluster_available() -> Iterator[str]:
    """A running slurmctld + slurmd + munge on this machine; yields the state directory."""
    reason = _cannot_run_reason()
    if reason is not None:
        if os.environ.get("CI") and os.environ.get("FLUXFLOW_SKIP_SLURM") != "1":
            pytest.fail(f"SLURM tests cannot run under CI: {reason}", pytrace=False)
        pytest.skip(reason)
    was_running = _script("status", 60).returncode == 0
    try:
        started = _script("start", 900)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"deploy/slurm-local.sh start timed out:\n{exc.stdout}\n{exc.stderr}", pytrace=False)
    if started.returncode != 0:
        pytest.fail(f"deploy/slurm-local.sh start failed (exit {started.returncode}):\n"
                    f"{started.stdout}\n{started.stderr}", pytrace=False)
    yield STATE_DIR
    if not was_running:
        stopped = _script("stop", 120)
        if stopped.returncode != 0:
            print(f"deploy/slurm-local.sh stop failed:\n{stopped.stdout}\n{stopped.stderr}", file=sys.stderr)
