"""MeasurementSet and caltable I/O: the only fluxflow package that imports casacore.

Public functions of every fluxflow.ms module are re-exported here.
"""

from fluxflow.ms.intents import obs_mode_to_intents, parse_obs_mode
from fluxflow.ms.metadata import is_science_spw, read_metadata, summary
from fluxflow.ms.model_data import ensure_model_column, reset_model_data, write_model_data
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

try:  # written by another module owner; optional until it exists
    from fluxflow.ms.caltable import read_caltable, write_caltable
except ImportError:  # pragma: no cover - depends on the state of the tree
    pass

try:  # written by another module owner; optional until it exists
    from fluxflow.ms.create import MSWriter, create_ms
except ImportError:  # pragma: no cover - depends on the state of the tree
    pass

try:  # further public names of those modules, guarded separately
    from fluxflow.ms.caltable import FloatCalTable
except ImportError:  # pragma: no cover
    pass

try:
    from fluxflow.ms.create import Ephemeris, ephemeris_table_name
except ImportError:  # pragma: no cover
    pass

try:
    from fluxflow.ms.ephemeris import read_ephemeris
except ImportError:  # pragma: no cover
    pass

__all__ = [
    "Antenna", "DataDescription", "Field", "MSMetadata", "Polarization", "Scan", "SpectralWindow",
    "DEFAULT_CHUNK_ROWS", "ensure_model_column", "is_science_spw", "iter_selection", "obs_mode_to_intents",
    "open_ms", "open_table", "parse_obs_mode", "plan_selection", "read_metadata", "read_selection",
    "reset_model_data", "summary", "unit_model", "write_model_data",
]
for _optional in ("read_caltable", "write_caltable", "FloatCalTable", "MSWriter", "create_ms", "Ephemeris",
                  "ephemeris_table_name", "read_ephemeris"):
    if _optional in globals():
        __all__.append(_optional)
del _optional
