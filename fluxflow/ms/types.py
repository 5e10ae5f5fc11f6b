"""Typed metadata of one MeasurementSet.

These are plain dataclasses with numpy arrays; they are built by :func:`fluxflow.ms.read_metadata`
(and by the simulator, which writes an MS from them). Nothing here touches casacore, so they can
be pickled and shipped to Dask workers.

Units: positions in metres (ITRF), angles in radians, frequencies in Hz, times in MJD seconds
(the MS TIME convention).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from fluxflow.errors import SelectionError

#: Pipeline intents that fluxflow knows (others found in an MS are kept verbatim).
KNOWN_INTENTS = (
    "AMPLITUDE", "BANDPASS", "PHASE", "CHECK", "TARGET", "POLARIZATION", "POLANGLE",
    "POLLEAKAGE", "DIFFGAINREF", "DIFFGAINSRC", "ATMOSPHERE", "WVR", "POINTING", "SIDEBAND",
    "FOCUS", "SYSTEM_CONFIGURATION", "UNSPECIFIED",
)

#: casacore Stokes enum -> name (subset seen in radio MSs).
STOKES_NAMES = {
    1: "I", 2: "Q", 3: "U", 4: "V",
    5: "RR", 6: "RL", 7: "LR", 8: "LL",
    9: "XX", 10: "XY", 11: "YX", 12: "YY",
}
STOKES_IDS = {v: k for k, v in STOKES_NAMES.items()}


@dataclass(frozen=True)
class Antenna:
    id: int
    name: str
    station: str
    position: np.ndarray  # (3,) ITRF metres
    diameter: float  # metres
    lon: float  # radians (spherical form of ITRF position)
    lat: float  # radians
    radius: float  # metres (geocentric)


@dataclass(frozen=True)
class SpectralWindow:
    id: int
    name: str
    chan_freq: np.ndarray  # (nchan,) Hz
    chan_width: np.ndarray  # (nchan,) Hz
    ref_frequency: float
    total_bandwidth: float
    is_science: bool
    baseband: int = 0

    @property
    def num_chan(self) -> int:
        return int(self.chan_freq.size)

    @property
    def centre_frequency(self) -> float:
        """Centre of the spw: mean of the band edges (as the pipeline's spw.centre_frequency)."""
        lo = np.min(self.chan_freq - np.abs(self.chan_width) / 2)
        hi = np.max(self.chan_freq + np.abs(self.chan_width) / 2)
        return float((lo + hi) / 2)

    @property
    def min_frequency(self) -> float:
        return float(np.min(self.chan_freq - np.abs(self.chan_width) / 2))

    @property
    def max_frequency(self) -> float:
        return float(np.max(self.chan_freq + np.abs(self.chan_width) / 2))


@dataclass(frozen=True)
class Polarization:
    id: int
    corr_types: tuple[str, ...]  # e.g. ("XX", "YY") or ("XX", "XY", "YX", "YY")

    @property
    def num_corr(self) -> int:
        return len(self.corr_types)

    @property
    def parallel_hands(self) -> tuple[int, ...]:
        """Indices of the parallel-hand correlations (XX/YY, RR/LL, or I)."""
        par = {"XX", "YY", "RR", "LL", "I"}
        return tuple(i for i, c in enumerate(self.corr_types) if c in par)


@dataclass(frozen=True)
class DataDescription:
    id: int
    spw_id: int
    pol_id: int


@dataclass(frozen=True)
class Field:
    id: int
    name: str
    direction: np.ndarray  # (2,) RA, Dec radians (PHASE_DIR at the reference epoch)
    source_id: int
    ephemeris_id: int = -1  # >= 0 when the field has an ephemeris table
    ephemeris_path: str | None = None  # absolute path of FIELD/EPHEM<id>_<name>.tab, if any

    @property
    def is_ephemeris(self) -> bool:
        return self.ephemeris_id >= 0


@dataclass(frozen=True)
class Scan:
    number: int
    start: float  # MJD seconds (earliest TIME - INTERVAL/2)
    end: float
    field_ids: frozenset[int]
    spw_ids: frozenset[int]
    intents: frozenset[str]
    state_ids: frozenset[int] = frozenset()


@dataclass
class MSMetadata:
    """Everything fluxflow needs to know about one MS, without its visibilities."""

    path: str
    antennas: list[Antenna]
    spws: list[SpectralWindow]
    polarizations: list[Polarization]
    data_descriptions: list[DataDescription]
    fields: list[Field]
    scans: list[Scan]
    state_intents: dict[int, frozenset[str]]  # STATE row -> pipeline intents
    unknown_obs_modes: tuple[str, ...] = ()
    start_time: float = 0.0  # MJD seconds
    end_time: float = 0.0
    data_columns: tuple[str, ...] = ()  # visibility columns present: DATA, CORRECTED_DATA, MODEL_DATA
    nrows: int = 0
    extra: dict = field(default_factory=dict)

    # -- names -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """MS basename as flux.csv's `ms` column uses it."""
        import os

        return os.path.basename(os.path.normpath(self.path))

    @property
    def antenna_names(self) -> list[str]:
        return [a.name for a in self.antennas]

    # -- lookups -----------------------------------------------------------------------------
    def antenna(self, key: int | str) -> Antenna:
        for a in self.antennas:
            if a.name == str(key) or (str(key).isdigit() and a.id == int(key)):
                return a
        raise SelectionError(f"{self.name}: no antenna {key!r} (antennas: {', '.join(self.antenna_names)})")

    def spw(self, spw_id: int) -> SpectralWindow:
        for s in self.spws:
            if s.id == int(spw_id):
                return s
        raise SelectionError(f"{self.name}: no spectral window {spw_id} (spws 0..{len(self.spws) - 1})")

    def field(self, field_id: int) -> Field:
        for f in self.fields:
            if f.id == int(field_id):
                return f
        raise SelectionError(f"{self.name}: no field id {field_id}")

    def fields_named(self, key: str) -> list[Field]:
        """Fields whose name equals `key`, or the field whose id is `key` (a digit string)."""
        hits = [f for f in self.fields if f.name == key]
        if not hits and str(key).strip().isdigit():
            hits = [f for f in self.fields if f.id == int(key)]
        return hits

    @property
    def science_spws(self) -> list[SpectralWindow]:
        return [s for s in self.spws if s.is_science]

    def ddids_for_spw(self, spw_id: int) -> list[int]:
        return [d.id for d in self.data_descriptions if d.spw_id == int(spw_id)]

    def polarization_for_spw(self, spw_id: int) -> Polarization:
        for d in self.data_descriptions:
            if d.spw_id == int(spw_id):
                return self.polarizations[d.pol_id]
        raise SelectionError(f"{self.name}: spw {spw_id} has no data description")

    # -- intents -----------------------------------------------------------------------------
    def field_intents(self, field_id: int) -> frozenset[str]:
        out: set[str] = set()
        for sc in self.scans:
            if field_id in sc.field_ids:
                out |= sc.intents
        return frozenset(out)

    def fields_with_intent(self, intent: str) -> list[Field]:
        return [f for f in self.fields if intent in self.field_intents(f.id)]

    def scans_for(self, field_id: int | None = None, intents: Iterable[str] | None = None,
                  spw_id: int | None = None) -> list[Scan]:
        want = None if intents is None else set(intents)
        out = []
        for sc in self.scans:
            if field_id is not None and field_id not in sc.field_ids:
                continue
            if spw_id is not None and spw_id not in sc.spw_ids:
                continue
            if want is not None and not (sc.intents & want):
                continue
            out.append(sc)
        return out

    def spws_for(self, field_id: int, intents: Iterable[str] | None = None,
                 science_only: bool = True) -> list[int]:
        """Spw ids observed on `field_id` in scans with any of `intents` (science spws only)."""
        ids: set[int] = set()
        for sc in self.scans_for(field_id=field_id, intents=intents):
            ids |= sc.spw_ids
        sci = {s.id for s in self.spws if s.is_science or not science_only}
        return sorted(ids & sci)

    def state_ids_for_intents(self, intents: Iterable[str]) -> list[int]:
        want = set(intents)
        return sorted(k for k, v in self.state_intents.items() if v & want)
