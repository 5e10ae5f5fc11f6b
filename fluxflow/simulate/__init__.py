"""ALMA-like MeasurementSet simulator for tests, docs, demos and benchmarks.

:func:`simulate_ms` writes one execution block (a real MS), its ``flux.csv`` catalogue (spec §7.1)
and a truth JSON; :func:`simulate_session` writes several EBs of one session.
"""

from fluxflow.simulate.config import DEFAULT_SOURCES, OBS_MODES, SimConfig, SourceSpec
from fluxflow.simulate.layout import alma_layout
from fluxflow.simulate.simulate import (FLUX_CSV_HEADER, GainModel, SessionResult, SimResult,
                                        add_arguments, main, run,
                                        simulate_ms, simulate_session, write_flux_csv)

__all__ = [
    "DEFAULT_SOURCES", "FLUX_CSV_HEADER", "GainModel", "OBS_MODES", "SessionResult", "SimConfig",
    "SimResult", "SourceSpec", "add_arguments", "alma_layout", "main", "run",
    "simulate_ms", "simulate_session", "write_flux_csv",
]
