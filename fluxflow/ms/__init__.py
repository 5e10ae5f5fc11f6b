"""MeasurementSet and caltable I/O: the only fluxflow package that imports casacore.

Public functions of every fluxflow.ms module are re-exported here.
"""

from fluxflow.ms.intents import obs_mode_to_intents, parse_obs_mode
from fluxflow.ms.metadata import is_science_spw, read_metadata, summary
from fluxflow.ms.model_data import ensure_model_column, reset_model_data, write_model_data, write_models
from fluxflow.ms.selection import (
    DEFAULT_CHUNK_ROWS,
    iter_selection,
    plan_selection,
    read_selection,
    unit_model,
)
from fluxflow.ms.tables import open_ms, open_table
from fluxflow.ms.types import (
    Antenna,
    DataDescription,
    Field,
    MSMetadata,
    Polarization,
    Scan,
    SpectralWindow,
)

from fluxflow.ms.caltable import FloatCalTable, read_caltable, write_caltable
from fluxflow.ms.create import Ephemeris, MSWriter, create_ms, ephemeris_table_name
from fluxflow.ms.ephemeris import read_ephemeris
from fluxflow.ms.flags import antenna_flag_fraction

__all__ = [
    "Antenna", "DataDescription", "Field", "MSMetadata", "Polarization", "Scan", "SpectralWindow",
    "DEFAULT_CHUNK_ROWS", "ensure_model_column", "is_science_spw", "iter_selection", "obs_mode_to_intents",
    "open_ms", "open_table", "parse_obs_mode", "plan_selection", "read_metadata", "read_selection",
    "reset_model_data", "summary", "unit_model", "write_model_data", "write_models",
    "read_caltable", "write_caltable", "FloatCalTable", "MSWriter", "create_ms", "Ephemeris",
    "ephemeris_table_name", "read_ephemeris", "antenna_flag_fraction",
]

