"""Create a MeasurementSet with python-casacore and append visibility rows in bounded memory.

Used by the simulator (:mod:`fluxflow.simulate`); the only simulator code that imports casacore.
The layout follows what ALMA data filled by CASA ``importasdm`` look like, as far as fluxflow
reads them (spec §3 preconditions, §7.1, §15): ANTENNA (pad names, ITRF positions),
SPECTRAL_WINDOW (ALMA-style names, TOPO frame, BBC_NO), POLARIZATION, DATA_DESCRIPTION (one row per
spw), FIELD (with an optional per-field ephemeris table, spec §4 step 2), STATE (OBS_MODE intent
strings, spec §15), OBSERVATION, FEED, PROCESSOR and SOURCE.

Visibility columns (DATA, FLAG and optionally MODEL_DATA, WEIGHT_SPECTRUM) use one
TiledShapeStMan each, so spws of different shapes (science, WVR, CH_AVG) share a column.
"""

from __future__ import annotations

import os
import shutil
import time as _time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import casacore.tables as ct

from fluxflow.errors import MissingColumnError, WriteError
from fluxflow.ms.types import STOKES_IDS, Antenna, Field, SpectralWindow

#: ASDM NetSideband enum as ALMA's filler writes it into SPECTRAL_WINDOW.NET_SIDEBAND.
NET_SIDEBAND_LSB, NET_SIDEBAND_USB, NET_SIDEBAND_DSB = 1, 2, 3

#: Receptor index of each hand, for POLARIZATION.CORR_PRODUCT.
_HAND = {"X": 0, "Y": 1, "R": 0, "L": 1}

_UNIX_EPOCH_MJD = 40587.0


@dataclass(frozen=True)
class Ephemeris:
    """A CASA/JPL-Horizons style ephemeris of one solar-system body (FIELD/EPHEM<id>_<name>.tab).

    Rows must be equally spaced in MJD (casacore's MeasComet requires it). Directions are
    geocentric ICRS; `rho_au` is the geocentric distance; `radii_km` the three body radii as in
    the ``radii`` table keyword (two equatorial, one polar, spec §4 step 2).
    """

    name: str
    mjd: np.ndarray  # (n,) days, equally spaced
    ra_deg: np.ndarray  # (n,)
    dec_deg: np.ndarray  # (n,)
    rho_au: np.ndarray  # (n,)
    radii_km: tuple[float, float, float]
    radvel_au_per_day: np.ndarray | None = None
    disk_long_deg: np.ndarray | None = None
    disk_lat_deg: np.ndarray | None = None
    extra_keywords: dict = field(default_factory=dict)


def ephemeris_table_name(ephemeris_id: int, name: str) -> str:
    """File name of a field's ephemeris table inside FIELD (casacore finds ``EPHEM<id>_*.tab``)."""
    clean = "".join(c if c.isalnum() or c in "-+." else "_" for c in name)
    return f"EPHEM{int(ephemeris_id)}_{clean}.tab"


def _tsm(name: str, column: str, tile: Sequence[int]) -> dict:
    return {"TYPE": "TiledShapeStMan", "NAME": name, "COLUMNS": [column],
            "SPEC": {"DEFAULTTILESHAPE": np.asarray(tile, dtype=np.int32)}}


def _main_table_layout(max_corr: int, max_chan: int, with_weight_spectrum: bool,
                       with_model_column: bool) -> tuple[dict, dict]:
    """Extra MAIN column descriptions and their data managers (one TiledShapeStMan per column).

    Default tile: all correlations, up to 1024 channels, and enough rows for about 1 MiB of
    complex data; casacore shrinks it for hypercubes with fewer channels/correlations.
    """
    nchan_tile = int(min(max_chan, 1024))
    nrow_tile = int(max(16, 2**20 // (8 * max_corr * nchan_tile)))
    tile = (max_corr, nchan_tile, nrow_tile)
    wanted = [("DATA", "complex", "TiledDATA", "The data column"),
              ("FLAG", "boolean", "TiledFLAG", "The data flags, array of bools with same shape as data")]
    if with_model_column:
        wanted.append(("MODEL_DATA", "complex", "TiledMODEL", "The model data column"))
    if with_weight_spectrum:
        wanted.append(("WEIGHT_SPECTRUM", "float", "TiledWgtSpectrum", "Weight for each data point"))
    cols = []
    dms = {}
    for i, (col, vtype, dm_name, comment) in enumerate(wanted):
        cols.append(ct.makearrcoldesc(col, 0, ndim=2, valuetype=vtype, datamanagertype="TiledShapeStMan",
                                      datamanagergroup=dm_name, comment=comment))
        dms[f"*{i + 1}"] = _tsm(dm_name, col, tile)
    return ct.maketabdesc(cols), dms


def _add_optional_columns(tab: ct.table, subtable: str, names: Sequence[str]) -> None:
    full = ct.complete_ms_desc(subtable)
    have = set(tab.colnames())
    for name in names:
        if name not in have:
            tab.addcols(ct.makecoldesc(name, full[name]))


def _fill_antenna(ms_path: str, antennas: Sequence[Antenna]) -> None:
    with ct.table(os.path.join(ms_path, "ANTENNA"), readonly=False, ack=False) as t:
        t.addrows(len(antennas))
        t.putcol("NAME", [a.name for a in antennas])
        t.putcol("STATION", [a.station for a in antennas])
        t.putcol("TYPE", ["GROUND-BASED"] * len(antennas))
        t.putcol("MOUNT", ["ALT-AZ"] * len(antennas))
        t.putcol("POSITION", np.array([np.asarray(a.position, float) for a in antennas]))
        t.putcol("OFFSET", np.zeros((len(antennas), 3)))
        t.putcol("DISH_DIAMETER", np.array([a.diameter for a in antennas], float))
        t.putcol("FLAG_ROW", np.zeros(len(antennas), bool))


def _fill_feed(ms_path: str, n_ant: int, start: float, end: float) -> None:
    with ct.table(os.path.join(ms_path, "FEED"), readonly=False, ack=False) as t:
        t.addrows(n_ant)
        t.putcol("ANTENNA_ID", np.arange(n_ant, dtype=np.int32))
        t.putcol("FEED_ID", np.zeros(n_ant, np.int32))
        t.putcol("SPECTRAL_WINDOW_ID", np.full(n_ant, -1, np.int32))
        t.putcol("TIME", np.full(n_ant, (start + end) / 2))
        t.putcol("INTERVAL", np.full(n_ant, max(end - start, 0.0)))
        t.putcol("NUM_RECEPTORS", np.full(n_ant, 2, np.int32))
        t.putcol("BEAM_ID", np.full(n_ant, -1, np.int32))
        t.putcol("BEAM_OFFSET", np.zeros((n_ant, 2, 2)))
        t.putcol("POLARIZATION_TYPE", np.array([["X", "Y"]] * n_ant))
        t.putcol("POL_RESPONSE", np.tile(np.eye(2, dtype=np.complex64), (n_ant, 1, 1)))
        t.putcol("POSITION", np.zeros((n_ant, 3)))
        t.putcol("RECEPTOR_ANGLE", np.tile(np.array([-np.pi / 4, np.pi / 4]), (n_ant, 1)))


def _fill_spectral_window(ms_path: str, spws: Sequence[SpectralWindow]) -> None:
    with ct.table(os.path.join(ms_path, "SPECTRAL_WINDOW"), readonly=False, ack=False) as t:
        _add_optional_columns(t, "SPECTRAL_WINDOW", ["BBC_NO"])
        t.addrows(len(spws))
        for row, s in enumerate(spws):
            width = np.asarray(s.chan_width, float)
            if "WVR" in s.name.upper():
                sideband = NET_SIDEBAND_DSB
            elif width.size and np.all(width < 0):
                sideband = NET_SIDEBAND_LSB
            else:
                sideband = NET_SIDEBAND_USB
            t.putcell("NAME", row, s.name)
            t.putcell("NUM_CHAN", row, int(s.num_chan))
            t.putcell("CHAN_FREQ", row, np.asarray(s.chan_freq, float))
            t.putcell("CHAN_WIDTH", row, width)
            t.putcell("EFFECTIVE_BW", row, np.abs(width))
            t.putcell("RESOLUTION", row, np.abs(width))
            t.putcell("REF_FREQUENCY", row, float(s.ref_frequency))
            t.putcell("TOTAL_BANDWIDTH", row, float(s.total_bandwidth))
            t.putcell("MEAS_FREQ_REF", row, 5)  # TOPO
            t.putcell("NET_SIDEBAND", row, sideband)
            t.putcell("BBC_NO", row, int(s.baseband))
            t.putcell("FREQ_GROUP", row, 0)
            t.putcell("FREQ_GROUP_NAME", row, "")
            t.putcell("IF_CONV_CHAIN", row, 0)
            t.putcell("FLAG_ROW", row, False)


def _corr_product(corr: str) -> list[int]:
    if corr in ("I", "Q", "U", "V"):
        return [0, 0]
    return [_HAND[corr[0]], _HAND[corr[1]]]


def _fill_polarization_and_dd(ms_path: str, spws: Sequence[SpectralWindow],
                              corr_types: tuple[str, ...],
                              corr_types_per_spw: Mapping[int, tuple[str, ...]]) -> None:
    pols: list[tuple[str, ...]] = []
    dd_pol = []
    for s in spws:
        corrs = tuple(corr_types_per_spw.get(s.id, corr_types))
        for c in corrs:
            if c not in STOKES_IDS:
                raise ValueError(f"unknown correlation type {c!r} for spw {s.id}")
        if corrs not in pols:
            pols.append(corrs)
        dd_pol.append(pols.index(corrs))
    with ct.table(os.path.join(ms_path, "POLARIZATION"), readonly=False, ack=False) as t:
        t.addrows(len(pols))
        for row, corrs in enumerate(pols):
            t.putcell("NUM_CORR", row, len(corrs))
            t.putcell("CORR_TYPE", row, np.array([STOKES_IDS[c] for c in corrs], np.int32))
            t.putcell("CORR_PRODUCT", row, np.array([_corr_product(c) for c in corrs], np.int32))
            t.putcell("FLAG_ROW", row, False)
    with ct.table(os.path.join(ms_path, "DATA_DESCRIPTION"), readonly=False, ack=False) as t:
        t.addrows(len(spws))
        t.putcol("SPECTRAL_WINDOW_ID", np.array([s.id for s in spws], np.int32))
        t.putcol("POLARIZATION_ID", np.array(dd_pol, np.int32))
        t.putcol("FLAG_ROW", np.zeros(len(spws), bool))


def _write_ephemeris(path: str, eph: Ephemeris) -> None:
    """Write one ephemeris table with the keywords and columns casacore's MeasComet reads."""
    mjd = np.asarray(eph.mjd, float)
    n = mjd.size
    if n < 2 or not np.allclose(np.diff(mjd), mjd[1] - mjd[0], rtol=0, atol=1e-9):
        raise ValueError(f"ephemeris {eph.name}: MJD rows must be equally spaced (n >= 2)")
    dmjd = float(mjd[1] - mjd[0])
    zeros = np.zeros(n)
    columns = {
        "MJD": (mjd, "d"),
        "RA": (np.asarray(eph.ra_deg, float), "deg"),
        "DEC": (np.asarray(eph.dec_deg, float), "deg"),
        "Rho": (np.asarray(eph.rho_au, float), "AU"),
        "RadVel": (zeros if eph.radvel_au_per_day is None else np.asarray(eph.radvel_au_per_day, float), "AU/d"),
        "DiskLong": (zeros if eph.disk_long_deg is None else np.asarray(eph.disk_long_deg, float), "deg"),
        "DiskLat": (zeros if eph.disk_lat_deg is None else np.asarray(eph.disk_lat_deg, float), "deg"),
    }
    desc = ct.maketabdesc([ct.makescacoldesc(name, 0.0) for name in columns])
    # Creation stamps from the first row's date, so the table is reproducible.
    now = _time.strftime("%Y/%m/%d/%H:%M", _time.gmtime((mjd[0] - _UNIX_EPOCH_MJD) * 86400.0))
    with ct.table(path, desc, nrow=n, readonly=False, ack=False) as t:
        for name, (values, unit) in columns.items():
            t.putcol(name, values)
            t.putcolkeyword(name, "UNIT", unit)
        radii = [float(r) for r in eph.radii_km]
        keywords = {
            "VS_CREATE": now, "VS_DATE": now, "VS_VERSION": "0001.0001", "VS_TYPE":
            "Table of comet/planetary positions",
            # MeasComet: row k holds MJD0 + (k+1)*dMJD.
            "MJD0": float(mjd[0] - dmjd), "dMJD": dmjd, "NAME": eph.name,
            "GeoLong": 0.0, "GeoLat": 0.0, "GeoDist": 0.0, "obsloc": "GEOCENTRIC",
            "posrefsys": "ICRF/ICRS",
            "radii": {"value": np.array(radii), "unit": "km"},
            "meanrad": {"value": float(np.mean(radii)), "unit": "km"},
        }
        keywords.update(eph.extra_keywords)
        for key, value in keywords.items():
            t.putkeyword(key, value)


def _fill_field_and_source(ms_path: str, fields: Sequence[Field], start: float, end: float,
                           ephemerides: Mapping[int, Ephemeris]) -> None:
    field_path = os.path.join(ms_path, "FIELD")
    any_ephem = any(f.ephemeris_id >= 0 for f in fields)
    with ct.table(field_path, readonly=False, ack=False) as t:
        if any_ephem:
            _add_optional_columns(t, "FIELD", ["EPHEMERIS_ID"])
        t.addrows(len(fields))
        for row, f in enumerate(fields):
            if f.id != row:
                raise ValueError(f"field ids must be 0..n-1 in order (got {f.id} at row {row})")
            direction = np.asarray(f.direction, float).reshape(1, 2)
            if f.ephemeris_id >= 0:
                # casacore (MSFieldColumns::extractDirMeas) adds the FIELD direction as an offset
                # to the ephemeris position, so an ephemeris field stores a zero offset.
                if f.id not in ephemerides:
                    raise ValueError(f"field {f.name}: ephemeris_id={f.ephemeris_id} but no Ephemeris given")
                direction = np.zeros((1, 2))
            for col in ("DELAY_DIR", "PHASE_DIR", "REFERENCE_DIR"):
                t.putcell(col, row, direction)
            t.putcell("NAME", row, f.name)
            t.putcell("CODE", row, "none")
            t.putcell("TIME", row, float(start))
            t.putcell("NUM_POLY", row, 0)
            t.putcell("SOURCE_ID", row, int(f.source_id))
            t.putcell("FLAG_ROW", row, False)
            if any_ephem:
                t.putcell("EPHEMERIS_ID", row, int(f.ephemeris_id))
    for f in fields:
        if f.ephemeris_id >= 0:
            _write_ephemeris(os.path.join(field_path, ephemeris_table_name(f.ephemeris_id, f.name)),
                             ephemerides[f.id])

    src_path = os.path.join(ms_path, "SOURCE")
    sources: dict[int, Field] = {}
    for f in fields:
        sources.setdefault(int(f.source_id), f)
    with ct.default_ms_subtable("SOURCE", src_path) as t:
        t.addrows(len(sources))
        for row, (sid, f) in enumerate(sorted(sources.items())):
            t.putcell("SOURCE_ID", row, sid)
            t.putcell("NAME", row, f.name)
            t.putcell("DIRECTION", row, np.asarray(f.direction, float))
            t.putcell("PROPER_MOTION", row, np.zeros(2))
            t.putcell("SPECTRAL_WINDOW_ID", row, -1)
            t.putcell("TIME", row, (start + end) / 2)
            t.putcell("INTERVAL", row, max(end - start, 0.0))
            t.putcell("CODE", row, "")
            t.putcell("CALIBRATION_GROUP", row, 0)
            t.putcell("NUM_LINES", row, 0)
    with ct.table(ms_path, readonly=False, ack=False) as ms:
        ms.putkeyword("SOURCE", "Table: " + os.path.abspath(src_path))


def _fill_state(ms_path: str, obs_modes: Sequence[str]) -> None:
    with ct.table(os.path.join(ms_path, "STATE"), readonly=False, ack=False) as t:
        n = len(obs_modes)
        t.addrows(n)
        t.putcol("OBS_MODE", list(obs_modes))
        t.putcol("SUB_SCAN", np.ones(n, np.int32))
        t.putcol("CAL", np.zeros(n))
        t.putcol("LOAD", np.zeros(n))
        t.putcol("REF", np.zeros(n, bool))
        t.putcol("SIG", np.ones(n, bool))
        t.putcol("FLAG_ROW", np.zeros(n, bool))


def _fill_observation_and_processor(ms_path: str, observation: Mapping) -> None:
    start, end = (float(x) for x in observation.get("time_range", (0.0, 0.0)))
    with ct.table(os.path.join(ms_path, "OBSERVATION"), readonly=False, ack=False) as t:
        t.addrows(1)
        t.putcell("TELESCOPE_NAME", 0, str(observation.get("telescope", "ALMA")))
        t.putcell("OBSERVER", 0, str(observation.get("observer", "fluxflow")))
        t.putcell("PROJECT", 0, str(observation.get("project", "uid://A001/X0/X0")))
        t.putcell("TIME_RANGE", 0, np.array([start, end]))
        t.putcell("SCHEDULE_TYPE", 0, str(observation.get("schedule_type", "ALMA")))
        t.putcell("SCHEDULE", 0, np.array([str(s) for s in observation.get("schedule", ["SchedulingBlock sim"])]))
        t.putcell("LOG", 0, np.array([str(s) for s in observation.get("log", ["simulated by fluxflow"])]))
        t.putcell("RELEASE_DATE", 0, float(observation.get("release_date", end)))
        t.putcell("FLAG_ROW", 0, False)
    with ct.table(os.path.join(ms_path, "PROCESSOR"), readonly=False, ack=False) as t:
        t.addrows(1)
        t.putcell("TYPE", 0, "CORRELATOR")
        t.putcell("SUB_TYPE", 0, "ALMA_CORRELATOR_MODE")
        t.putcell("TYPE_ID", 0, -1)
        t.putcell("MODE_ID", 0, -1)
        t.putcell("FLAG_ROW", 0, False)


def create_ms(path: str, antennas: list[Antenna], spws: list[SpectralWindow], corr_types: tuple[str, ...],
              fields: list[Field], obs_modes: list[str], observation: dict,
              with_weight_spectrum: bool = False, with_model_column: bool = False,
              overwrite: bool = False, corr_types_per_spw: Mapping[int, tuple[str, ...]] | None = None,
              ephemerides: Mapping[int, Ephemeris] | None = None) -> None:
    """Create an empty MS (no MAIN rows) with all sub-tables filled.

    `spws` must have ids 0..n-1 in order; DATA_DESCRIPTION row i refers to spw i.
    `corr_types` applies to every spw unless `corr_types_per_spw` names another tuple (e.g. the
    WVR window's single 'I' correlation). `obs_modes` become STATE rows 0..n-1.
    `observation`: telescope ('ALMA'), observer, project, time_range (start, end MJD seconds),
    optionally schedule, log, release_date. `ephemerides` maps a field id whose
    ``ephemeris_id >= 0`` to its :class:`Ephemeris`.
    Raises WriteError if `path` exists and `overwrite` is False.
    """
    path = os.path.abspath(path)
    if os.path.exists(path):
        if not overwrite:
            raise WriteError(f"{path} exists; pass overwrite=True to replace it")
        shutil.rmtree(path)
    for row, s in enumerate(spws):
        if s.id != row:
            raise ValueError(f"spw ids must be 0..n-1 in order (got {s.id} at row {row})")
    per_spw = dict(corr_types_per_spw or {})
    max_corr = max(len(per_spw.get(s.id, corr_types)) for s in spws)
    max_chan = max(s.num_chan for s in spws)
    start, end = (float(x) for x in observation.get("time_range", (0.0, 0.0)))
    tabdesc, dminfo = _main_table_layout(max_corr, max_chan, with_weight_spectrum, with_model_column)
    try:
        ct.default_ms(path, tabdesc, dminfo).close()
        _fill_antenna(path, antennas)
        _fill_feed(path, len(antennas), start, end)
        _fill_spectral_window(path, spws)
        _fill_polarization_and_dd(path, spws, tuple(corr_types), per_spw)
        _fill_field_and_source(path, fields, start, end, dict(ephemerides or {}))
        _fill_state(path, obs_modes)
        _fill_observation_and_processor(path, observation)
    except RuntimeError as exc:  # casacore errors surface as RuntimeError
        raise WriteError(f"could not create {path}: {exc}") from exc


#: MAIN columns an appended chunk must provide.
REQUIRED_ROW_COLUMNS = ("TIME", "INTERVAL", "ANTENNA1", "ANTENNA2", "FIELD_ID", "DATA_DESC_ID",
                        "STATE_ID", "SCAN_NUMBER", "UVW", "DATA", "FLAG", "WEIGHT", "SIGMA")
_ZERO_DEFAULTS = ("FEED1", "FEED2", "ARRAY_ID", "OBSERVATION_ID", "PROCESSOR_ID")


class MSWriter:
    """Append MAIN rows to an MS created by :func:`create_ms`, one chunk at a time.

    Each :meth:`append` call writes its chunk and keeps nothing, so memory is bounded by the
    chunk size. All array columns of one chunk must have one shape per row (one DATA shape).
    Defaults when missing: FEED1/FEED2/ARRAY_ID/OBSERVATION_ID/PROCESSOR_ID = 0,
    EXPOSURE = INTERVAL, TIME_CENTROID = TIME, FLAG_ROW = all of FLAG.
    """

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        self._table: ct.table | None = None
        self.nrows_written = 0

    def __enter__(self) -> "MSWriter":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        try:
            self._table = ct.table(self.path, readonly=False, ack=False)
        except RuntimeError as exc:
            raise WriteError(f"cannot open {self.path} for writing: {exc}") from exc
        self._columns = set(self._table.colnames())

    def append(self, rows: Mapping[str, np.ndarray]) -> int:
        """Append one chunk; returns the number of rows added."""
        if self._table is None:
            raise WriteError(f"{self.path}: writer is not open")
        missing = [c for c in REQUIRED_ROW_COLUMNS if c not in rows]
        if missing:
            raise MissingColumnError(f"chunk lacks MAIN column(s) {', '.join(missing)}")
        unknown = [c for c in rows if c not in self._columns]
        if unknown:
            raise MissingColumnError(f"{self.path} has no column(s) {', '.join(unknown)}"
                                     " (create the MS with the matching options)")
        n = int(np.asarray(rows["TIME"]).shape[0])
        cols = {k: np.asarray(v) for k, v in rows.items()}
        for k, v in cols.items():
            if v.shape[0] != n:
                raise ValueError(f"column {k} has {v.shape[0]} rows, TIME has {n}")
        for k in _ZERO_DEFAULTS:
            cols.setdefault(k, np.zeros(n, np.int32))
        cols.setdefault("EXPOSURE", cols["INTERVAL"])
        cols.setdefault("TIME_CENTROID", cols["TIME"])
        cols.setdefault("FLAG_ROW", cols["FLAG"].reshape(n, -1).all(axis=1))
        if n == 0:
            return 0
        start = self._table.nrows()
        try:
            self._table.addrows(n)
            for k, v in cols.items():
                self._table.putcol(k, v, startrow=start, nrow=n)
        except RuntimeError as exc:
            raise WriteError(f"{self.path}: writing {n} rows failed: {exc}") from exc
        self.nrows_written += n
        return n

    def close(self) -> None:
        if self._table is not None:
            self._table.flush()
            self._table.close()
            self._table = None
