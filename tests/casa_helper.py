"""CASA as an optional cross-check, always in its own interpreter (never in the same process as
python-casacore). FLUXFLOW_CASA_PYTHON names that interpreter (default: this Python),
FLUXFLOW_CASA_PRELOAD its LD_PRELOAD and CASASITECONFIG its offline site config; the set-up is
in benchmarks/README.md. Tests that need CASA skip when it cannot be imported."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

CASA_PYTHON = os.environ.get("FLUXFLOW_CASA_PYTHON", sys.executable)


def casa_env() -> dict:
    env = dict(os.environ)
    if os.environ.get("FLUXFLOW_CASA_PRELOAD"):
        env["LD_PRELOAD"] = os.environ["FLUXFLOW_CASA_PRELOAD"]
    return env


@functools.cache
def casa_available(module: str = "casatools") -> bool:
    try:
        run = subprocess.run([CASA_PYTHON, "-c", f"import {module}"], capture_output=True, timeout=180,
                             env=casa_env())
    except (OSError, subprocess.TimeoutExpired):
        return False
    return run.returncode == 0
