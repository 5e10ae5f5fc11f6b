"""Errors and warnings of fluxflow.

Every error a user can trigger with bad input is a :class:`FluxflowError` subclass whose message
names what is wrong and, where possible, how to fix it. The CLI prints ``str(error)`` on one line
and exits non-zero (no traceback unless ``--debug``).

Each data irregularity that fluxflow tolerates has its own warning class (a subclass of
:class:`FluxflowWarning`), so users can filter or escalate them one by one.
"""

from __future__ import annotations


class FluxflowError(Exception):
    """Base class of every error fluxflow raises for bad input or an impossible request."""


class NotAMeasurementSetError(FluxflowError):
    """The path does not exist, is not readable, or is not a casacore MeasurementSet."""


class MissingTableError(FluxflowError):
    """A required sub-table (ANTENNA, SPECTRAL_WINDOW, FIELD, STATE, ...) is missing."""


class MissingColumnError(FluxflowError):
    """A required column (e.g. DATA, CORRECTED_DATA, FLAG) is missing."""


class UnsupportedStorageManagerError(FluxflowError):
    """A column is stored with a data manager casacore cannot read (e.g. CASA's AsdmStMan)."""


class TableLockedError(FluxflowError):
    """A table stayed locked by another process for longer than the lock timeout."""


class CorruptTableError(FluxflowError):
    """A table exists but cannot be read (truncated or corrupt files)."""


class SelectionError(FluxflowError):
    """A field, spw, intent, antenna or scan selection names something the MS does not have."""


class CatalogueError(FluxflowError):
    """The flux catalogue (flux.csv) is malformed."""


class CaltableError(FluxflowError):
    """A calibration table is missing, malformed or of an unsupported type."""


class SolveError(FluxflowError):
    """A gain solve or flux transfer could not be done (too few antennas, all data flagged...)."""


class WriteError(FluxflowError):
    """Writing MODEL_DATA or an output failed (no space left, permission...)."""


class FluxflowWarning(UserWarning):
    """Base class of fluxflow's warnings about data irregularities."""


class UnknownIntentWarning(FluxflowWarning):
    """A STATE.OBS_MODE string maps to no known pipeline intent; it is kept as is."""


class MissingModelWarning(FluxflowWarning):
    """A reference calibrator has no catalogue row and no MODEL_DATA; a unit model is used."""


class FlaggedDataWarning(FluxflowWarning):
    """A selection is entirely flagged; it yields no solutions."""


class InsufficientDataWarning(FluxflowWarning):
    """A solve or a flux determination lacked data (too few antennas or baselines)."""


class ResolvedCalibratorWarning(FluxflowWarning):
    """The resolved-calibrator heuristic fell back to all antennas."""


class CatalogueWarning(FluxflowWarning):
    """A flux.csv row was ignored or repaired (unparsable spix, rows for other MSs...)."""


class UnsupportedCorrelationWarning(FluxflowWarning):
    """A spw's correlations (e.g. circular with 4 products) cannot give a calibrated-visibility flux."""


class ConvergenceWarning(FluxflowWarning):
    """An iterative gain solve did not converge; no solutions are written for that interval."""
