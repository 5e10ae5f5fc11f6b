"""CASA calibration tables (NewCalTable) written and read with python-casacore, without CASA.

Spec: §6.6 (the fluxscaled output table), §9 item 8 (row layout of the gain solves),
§15 (caltable I/O). The layout follows CASA's own code (casatools ``synthesis/CalTables``:
``CTDesc.cc``, ``CTEnums.cc``, ``NewCalTable.cc``;
``synthesis/MeasurementComponents/SolvableVisCal.cc``):

* main table columns TIME, FIELD_ID, SPECTRAL_WINDOW_ID, ANTENNA1, ANTENNA2 (= refant), INTERVAL,
  SCAN_NUMBER, OBSERVATION_ID (scalars; TIME is an epoch measure in UTC, TIME and INTERVAL carry
  QuantumUnits ``s``, which CASA's ``NewCalTable::conformant`` insists on), then CPARAM (complex)
  or FPARAM (float), PARAMERR, FLAG, SNR, WEIGHT: arrays of free shape, one cell per row of CASA
  shape [npar, nchan] = python-casacore (nchan, npar). G Jones has npar = 2, T Jones npar = 1.
* keywords ParType, MSName (basename of the MS), VisCal, PolBasis, CASA_Version, and the
  sub-tables OBSERVATION, ANTENNA, FIELD, SPECTRAL_WINDOW, HISTORY as table keywords;
  table info type ``Calibration``, sub-type the VisCal name (what CASA's ``calTableType`` checks).
* sub-tables have the MS's *required* description and their rows copied from the MS with
  TableCopy::copyRows (matching columns only), HISTORY stays empty.
* SPECTRAL_WINDOW for single-channel types (G, T): every row collapsed to one channel. Rows of
  spws without solutions get CHAN_FREQ = mean of the MS channel frequencies and CHAN_WIDTH,
  RESOLUTION, EFFECTIVE_BW = the sums over channels, FLAG_ROW = True (createMemCalTable2 and
  NewCalTable::flagAbsentSpws); rows of solved spws get CHAN_FREQ = the solution frequency,
  CHAN_WIDTH = RESOLUTION = EFFECTIVE_BW = TOTAL_BANDWIDTH of the MS spw and FLAG_ROW = False
  (setOrVerifyCTFrequencies with channel-averaged data). TOTAL_BANDWIDTH is kept.
* rows sorted by SPECTRAL_WINDOW_ID, TIME, ANTENNA1, ANTENNA2 (NewCalTable::writeToDisk).
* PolBasis is ``unknown`` (what gaincal writes: ``CTDesc(partype, msname, typeName(), "unknown")``).
* frequency-dependent types (B Jones, B TSYS; ``freqDepPar()`` in CASA) keep the MS channels in
  SPECTRAL_WINDOW (createMemCalTable with ``fsolint='none'``: CHAN_FREQ, widths as in the MS) and
  only FLAG_ROW marks spws without solutions (flagAbsentSpws); their cells are [npar, nchan of the
  spw]. K Jones delays (ns) and B TSYS (K) are stored in FPARAM with ParType ``Float``
  (``parType()`` REAL in KJones / StandardTsys); K Jones is single-channel like G.

Deviations from CASA: CASA_Version holds ``fluxflow-<version>`` (CASA reads it only for K Jones,
where any value but "Unknown" and a few 5.3.0 pre-releases means current behaviour); WEIGHT is
written (gaincal leaves it unwritten; CASA never reads it); FIELD directions of ephemeris objects
are copied as stored in the MS (CASA's NewCalTable::handleEphObj writes the nominal direction).

python-casacore returns array cells as (nrow, nchan, npar), which is exactly the GainTable layout
(nrow, 1, npar), so no axis is transposed here.
"""

from __future__ import annotations

import os
import shutil
import threading
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from casacore import tables

from fluxflow.errors import CaltableError, NotAMeasurementSetError, WriteError
from fluxflow.gains import GainTable

__all__ = ["FloatCalTable", "write_caltable", "read_caltable", "SUBTABLES", "NPAR", "FREQ_DEP",
           "FLOAT_TYPES"]

#: Sub-tables of a NewCalTable, in CASA's creation order (NewCalTable::createSubTables).
SUBTABLES = ("OBSERVATION", "ANTENNA", "FIELD", "SPECTRAL_WINDOW", "HISTORY")
#: Parameters per solution of the types fluxflow writes.
NPAR = {"G Jones": 2, "T Jones": 1, "B Jones": 2, "K Jones": 2, "B TSYS": 2}
#: Types with one solution per channel (CASA ``freqDepPar()``).
FREQ_DEP = frozenset({"B Jones", "B TSYS"})
#: Types with real parameters (FPARAM, ParType 'Float').
FLOAT_TYPES = frozenset({"K Jones", "B TSYS"})

# (column, python-casacore value type) of the main-table scalars, in CTDesc order.
_SCALARS = (("TIME", "double"), ("FIELD_ID", "int"), ("SPECTRAL_WINDOW_ID", "int"),
            ("ANTENNA1", "int"), ("ANTENNA2", "int"), ("INTERVAL", "double"),
            ("SCAN_NUMBER", "int"), ("OBSERVATION_ID", "int"))
# Main-table arrays after the parameter column, in CTDesc order.
_STATS = (("PARAMERR", "float"), ("FLAG", "boolean"), ("SNR", "float"), ("WEIGHT", "float"))
# Columns NewCalTable::conformant requires (OBSERVATION_ID is optional, pre-CASA-4.1 tables).
_REQUIRED = {name for name, _ in _SCALARS if name != "OBSERVATION_ID"} | {n for n, _ in _STATS}
# GainTable/FloatCalTable attribute <- main-table scalar column.
_SCALAR_ATTRS = (("time", "TIME", np.float64), ("interval", "INTERVAL", np.float64),
                 ("field_id", "FIELD_ID", np.int32), ("spw_id", "SPECTRAL_WINDOW_ID", np.int32),
                 ("antenna1", "ANTENNA1", np.int32), ("antenna2", "ANTENNA2", np.int32),
                 ("scan", "SCAN_NUMBER", np.int32), ("obs_id", "OBSERVATION_ID", np.int32))
_DM_GROUP = "MSMTAB"  # data-manager group of CASA-written caltables (StandardStMan)

_FLOAT_ROW_ARRAYS = ("time", "interval", "field_id", "spw_id", "antenna1", "antenna2", "scan",
                     "obs_id", "fparam", "paramerr", "flag", "snr", "weight")


@dataclass(eq=False)
class FloatCalTable:
    """Rows of a caltable with real parameters (FPARAM): K Jones delays (ns), B TSYS (K), ...

    Same row layout as :class:`fluxflow.gains.GainTable`; parameter arrays are
    (nrow, nchan, npar). Produced by :func:`read_caltable`; K Jones and B TSYS tables in this form
    are written by :func:`write_caltable`.
    """

    vis_cal: str
    time: np.ndarray
    interval: np.ndarray
    field_id: np.ndarray
    spw_id: np.ndarray
    antenna1: np.ndarray
    antenna2: np.ndarray
    scan: np.ndarray
    obs_id: np.ndarray
    fparam: np.ndarray  # (nrow, nchan, npar) float
    paramerr: np.ndarray
    flag: np.ndarray
    snr: np.ndarray
    weight: np.ndarray
    ms_name: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def nrow(self) -> int:
        return int(self.time.size)

    @property
    def npar(self) -> int:
        return int(self.fparam.shape[2])

    @property
    def nchan(self) -> int:
        return int(self.fparam.shape[1])

    def select(self, mask: np.ndarray) -> "FloatCalTable":
        return replace(self, **{n: getattr(self, n)[mask] for n in _FLOAT_ROW_ARRAYS})

    def sorted(self) -> "FloatCalTable":
        """Rows in fluxflow's order: time, field, spw, antenna (as GainTable.sorted)."""
        return self.select(np.lexsort((self.antenna1, self.spw_id, self.field_id, self.time)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FloatCalTable):
            return NotImplemented
        return self.vis_cal == other.vis_cal and all(
            _same(getattr(self, n), getattr(other, n)) for n in _FLOAT_ROW_ARRAYS)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Element-wise equality; NaN equals NaN for floating arrays (unwritten cells read as NaN)."""
    return np.array_equal(a, b, equal_nan=a.dtype.kind in "fc" and b.dtype.kind in "fc")


# ------------------------------------------------------------------------------------- writing


def write_caltable(path: str | os.PathLike, gains: GainTable | FloatCalTable,
                   ms_path: str | os.PathLike, overwrite: bool = False) -> None:
    """Write a caltable derived from ``ms_path``: G, T, B Jones (GainTable) or K Jones, B TSYS
    (FloatCalTable).

    The table is built at ``<path>.tmp-<pid>-<thread>`` and renamed into place, so a failure never
    leaves a partial table at ``path``. An existing ``path`` is replaced only with
    ``overwrite=True`` and only if it is itself a calibration table.

    Single-channel types (G, T, K): ``gains.meta['chan_freq']`` ({spw: frequency or 1-element
    array}, Hz) gives the solution frequency of solved spws; default: the mean channel frequency
    of the MS spw (CASA with all channels selected). Frequency-dependent types (B, B TSYS): the
    parameter arrays are (nrow, nchan, npar) with nchan at least the channel count of every row's
    spw; row cells hold the first NUM_CHAN channels of their spw; ``meta['chan_freq']`` may give
    the channel frequencies of an spw (same count as the MS spw). CPARAM/FPARAM, PARAMERR, SNR and
    WEIGHT are stored in single precision as CASA stores them.

    Raises CaltableError (bad table, target exists), NotAMeasurementSetError (bad MS),
    WriteError (I/O failure).
    """
    path = os.path.normpath(os.fspath(path))
    ms_path = os.fspath(ms_path)
    _check_gains(gains)
    if os.path.lexists(path):
        if not overwrite:
            raise CaltableError(f"{path} already exists; pass overwrite=True to replace it")
        if not _is_caltable(path):
            raise CaltableError(f"refusing to replace {path}: it is not a calibration table")
    if not tables.tableexists(os.path.join(ms_path, "SPECTRAL_WINDOW")):
        raise NotAMeasurementSetError(f"{ms_path} is not a MeasurementSet (no SPECTRAL_WINDOW)")

    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(tmp, ignore_errors=True)  # stale leftover of a killed writer with our ids
    try:
        _build(tmp, gains, ms_path)
        _swap_into_place(tmp, path)
    except (OSError, RuntimeError) as exc:  # casacore and file-system failures
        shutil.rmtree(tmp, ignore_errors=True)
        raise WriteError(f"could not write calibration table {path}: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _par_name(vis_cal: str) -> str:
    return "fparam" if vis_cal in FLOAT_TYPES else "cparam"


def _check_gains(gains: GainTable | FloatCalTable) -> None:
    """Shape and type checks that need no MS (CaltableError)."""
    if gains.vis_cal not in NPAR:
        raise CaltableError(f"can only write {sorted(NPAR)} tables, not {gains.vis_cal!r}")
    want = FloatCalTable if gains.vis_cal in FLOAT_TYPES else GainTable
    if not isinstance(gains, want):
        raise CaltableError(f"can only write {gains.vis_cal} tables from a {want.__name__}, "
                            f"got a {type(gains).__name__}")
    npar = NPAR[gains.vis_cal]
    n = gains.time.shape[0] if gains.time.ndim == 1 else -1
    par = getattr(gains, _par_name(gains.vis_cal))
    nchan = par.shape[1] if par.ndim == 3 and gains.vis_cal in FREQ_DEP else 1
    shape = (n, nchan, npar)
    chans = "nchan" if gains.vis_cal in FREQ_DEP else "1 channel"
    for name in (_par_name(gains.vis_cal), "paramerr", "flag", "snr", "weight"):
        arr = getattr(gains, name)
        if arr.shape != shape or (gains.vis_cal in FREQ_DEP and nchan < 1):
            raise CaltableError(f"{gains.vis_cal} table: {name} has shape {arr.shape}; can only "
                                f"write shape {shape} (nrow, {chans}, npar={npar})")
    for attr, _, _ in _SCALAR_ATTRS:
        arr = getattr(gains, attr)
        if arr.shape != (n,):
            raise CaltableError(f"{attr} has shape {arr.shape}, expected ({n},)")
    if not np.all(np.isfinite(gains.time)):
        raise CaltableError("TIME has non-finite values")


def _is_caltable(path: str) -> bool:
    try:
        return tables.tableexists(path) and tables.tableinfo(path).get("type") == "Calibration"
    except RuntimeError:
        return False


def _swap_into_place(tmp: str, path: str) -> None:
    if not os.path.lexists(path):
        os.rename(tmp, path)
        return
    old = f"{tmp}.old"
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except OSError:
        os.rename(old, path)  # put the previous table back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _build(tmp: str, gains: GainTable | FloatCalTable, ms_path: str) -> None:
    """Create the complete caltable at ``tmp`` (all handles closed on return)."""
    float_par = gains.vis_cal in FLOAT_TYPES
    main = tables.table(tmp, _main_desc("FPARAM" if float_par else "CPARAM"), nrow=0,
                        readonly=False, ack=False)
    try:
        counts = _copy_subtables(ms_path, tmp, main)
        _check_indices(gains, counts)
        spws = {int(s) for s in np.unique(gains.spw_id)}
        spw_path = os.path.join(tmp, "SPECTRAL_WINDOW")
        if gains.vis_cal in FREQ_DEP:
            _keep_spectral_window(spw_path, spws, gains.meta.get("chan_freq") or {})
        else:
            _collapse_spectral_window(spw_path, spws, gains.meta.get("chan_freq") or {})
        main.putinfo({"type": "Calibration", "subType": gains.vis_cal,
                      "readme": f"Written by fluxflow {_fluxflow_version()}"})
        for key, value in (("ParType", "Float" if float_par else "Complex"),
                           ("MSName", os.path.basename(os.path.normpath(ms_path))),
                           ("VisCal", gains.vis_cal), ("PolBasis", "unknown"),
                           ("CASA_Version", f"fluxflow-{_fluxflow_version()}")):
            main.putkeyword(key, value)
        _put_rows(main, gains)
        main.flush()
    finally:
        main.close()


def _main_desc(par_col: str) -> dict:
    """CTDesc::defaultCalMain for ParType 'Complex' (CPARAM) or 'Float' (FPARAM)."""
    time_kw = {"QuantumUnits": ["s"], "MEASINFO": {"type": "epoch", "Ref": "UTC"}}
    descs = []
    for name, vtype in _SCALARS:
        kw = time_kw if name == "TIME" else {"QuantumUnits": ["s"]} if name == "INTERVAL" else {}
        descs.append(tables.makescacoldesc(name, _EXAMPLE[vtype], datamanagertype="StandardStMan",
                                           datamanagergroup=_DM_GROUP, options=5, keywords=kw))
    par = (par_col, "complex" if par_col == "CPARAM" else "float")
    for name, vtype in (par,) + _STATS:
        descs.append(tables.makearrcoldesc(name, _EXAMPLE[vtype], datamanagertype="StandardStMan",
                                           datamanagergroup=_DM_GROUP, valuetype=vtype))
    return tables.maketabdesc(descs)


_EXAMPLE: dict[str, Any] = {"double": 0.0, "int": 0, "float": 0.0, "complex": 0j,
                            "boolean": False}


def _copy_subtables(ms_path: str, tmp: str, main: tables.table) -> dict[str, int]:
    """Create the sub-tables with the MS-required descriptions, copy MS rows; return row counts."""
    counts = {}
    for name in SUBTABLES:
        sub = tables.table(os.path.join(tmp, name), tables.required_ms_desc(name), nrow=0,
                           readonly=False, ack=False)
        try:
            if name != "HISTORY":
                src_path = os.path.join(ms_path, name)
                if not tables.tableexists(src_path):
                    raise NotAMeasurementSetError(f"{ms_path} has no {name} sub-table")
                src = tables.table(src_path, ack=False)
                try:
                    src.copyrows(sub)  # TableCopy::copyRows, as NewCalTable::setMetaInfo
                finally:
                    src.close()
            counts[name] = sub.nrows()
            sub.flush()
            main.putkeyword(name, sub)
        finally:
            sub.close()
    return counts


def _check_indices(gains: GainTable | FloatCalTable, counts: dict[str, int]) -> None:
    """Ids must index the MS sub-tables (as CASA asserts in fillAntBasedMainRows)."""
    nant = counts["ANTENNA"]
    checks = (("field_id", gains.field_id, 0, counts["FIELD"]),
              ("spw_id", gains.spw_id, 0, counts["SPECTRAL_WINDOW"]),
              ("antenna1", gains.antenna1, 0, nant), ("antenna2", gains.antenna2, -1, nant),
              ("obs_id", gains.obs_id, 0, counts["OBSERVATION"]))
    for name, ids, lo, hi in checks:
        bad = (ids < lo) | (ids >= hi)
        if np.any(bad):
            raise CaltableError(f"{name} value {int(ids[bad][0])} outside [{lo}, {hi}) of the MS "
                                "sub-table; the gains do not belong to this MS")


def _collapse_spectral_window(spw_path: str, solved: set[int], chan_freq: dict) -> None:
    """One channel per spw, flagged unless solved (see module docstring)."""
    spw = tables.table(spw_path, readonly=False, ack=False)
    try:
        for row in range(spw.nrows()):
            freqs = np.asarray(spw.getcell("CHAN_FREQ", row), dtype=float)
            totbw = float(spw.getcell("TOTAL_BANDWIDTH", row))
            if row in solved:
                f = np.atleast_1d(np.asarray(chan_freq.get(row, freqs.mean()), dtype=float))
                if f.shape != (1,):
                    raise CaltableError(f"meta['chan_freq'][{row}] must be one frequency, "
                                        f"got shape {f.shape}")
                widths = {c: totbw for c in ("CHAN_WIDTH", "RESOLUTION", "EFFECTIVE_BW")}
            else:
                f = np.array([freqs.mean()])
                widths = {c: float(np.sum(spw.getcell(c, row)))
                          for c in ("CHAN_WIDTH", "RESOLUTION", "EFFECTIVE_BW")}
            spw.putcell("CHAN_FREQ", row, f)
            for col, value in widths.items():
                spw.putcell(col, row, np.array([value]))
            spw.putcell("NUM_CHAN", row, 1)
            spw.putcell("FLAG_ROW", row, row not in solved)
        spw.flush()
    finally:
        spw.close()


def _keep_spectral_window(spw_path: str, solved: set[int], chan_freq: dict) -> None:
    """Frequency-dependent types: MS channels kept, FLAG_ROW unless solved."""
    spw = tables.table(spw_path, readonly=False, ack=False)
    try:
        for row in range(spw.nrows()):
            freqs = np.asarray(spw.getcell("CHAN_FREQ", row), dtype=float)
            if row in solved and row in chan_freq:
                f = np.atleast_1d(np.asarray(chan_freq[row], dtype=float))
                if f.shape != freqs.shape:
                    raise CaltableError(f"meta['chan_freq'][{row}] has {f.size} channels, the MS "
                                        f"spw {freqs.size} (channel-averaged tables unsupported)")
                spw.putcell("CHAN_FREQ", row, f)
            spw.putcell("FLAG_ROW", row, row not in solved)
        spw.flush()
    finally:
        spw.close()


def _put_rows(main: tables.table, gains: GainTable | FloatCalTable) -> None:
    """Rows in CASA's order; cells of each spw block have the NUM_CHAN of the table's spw."""
    order = np.lexsort((gains.antenna2, gains.antenna1, gains.time, gains.spw_id))
    g = gains.select(order)
    main.addrows(g.nrow)
    if g.nrow == 0:
        return
    for attr, col, dtype in _SCALAR_ATTRS:
        main.putcol(col, np.asarray(getattr(g, attr), dtype=dtype))
    float_par = g.vis_cal in FLOAT_TYPES
    par = ("FPARAM", "fparam", np.float32) if float_par else ("CPARAM", "cparam", np.complex64)
    columns = (par, ("PARAMERR", "paramerr", np.float32), ("FLAG", "flag", bool),
               ("SNR", "snr", np.float32), ("WEIGHT", "weight", np.float32))
    sub = _open_subtable(main, main.getkeywords(), "SPECTRAL_WINDOW")
    try:
        nchan = [int(x) for x in sub.getcol("NUM_CHAN")]
    finally:
        sub.close()
    spw_ids, starts = np.unique(g.spw_id, return_index=True)
    bounds = list(starts) + [g.nrow]
    for k, s in enumerate(spw_ids.tolist()):
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        n = nchan[s]
        if n > getattr(g, columns[0][1]).shape[1]:
            raise CaltableError(f"{g.vis_cal} table: spw {s} has {n} channels, the parameter "
                                f"arrays only {getattr(g, columns[0][1]).shape[1]}")
        for col, attr, dtype in columns:
            cells = np.ascontiguousarray(getattr(g, attr)[lo:hi, :n], dtype=dtype)
            main.putcol(col, cells, startrow=lo, nrow=hi - lo)


def _fluxflow_version() -> str:
    try:
        return version("fluxflow")
    except PackageNotFoundError:  # running from a source tree
        return "unknown"


# ------------------------------------------------------------------------------------- reading


def read_caltable(path: str | os.PathLike) -> GainTable | FloatCalTable:
    """Read any NewCalTable: GainTable for CPARAM tables, FloatCalTable for FPARAM tables.

    Parameter arrays are (nrow, nchan, npar) in float64/complex128. Rows whose spw has fewer
    channels than the widest are padded with NaN and FLAG = True (``meta['nchan']`` gives the
    real count per spw); undefined cells (CASA leaves WEIGHT unwritten) read as NaN, FLAG = True.
    A table without OBSERVATION_ID (pre-CASA 4.1) reads obs_id = 0, as CASA does.

    ``meta``: ``chan_freq`` {spw: CHAN_FREQ array of the caltable's SPECTRAL_WINDOW},
    ``ref_frequency`` {spw: REF_FREQUENCY}, ``nchan`` {spw: channels of its rows},
    ``field_names``, ``antenna_names``, ``spw_names`` (lists by id), ``field_directions``
    {field: (ra, dec) of PHASE_DIR, rad}, ``spw_flag_row`` (array), ``par_type``, ``pol_basis``,
    ``casa_version``.
    Rows come back in GainTable order (time, field, spw, antenna).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CaltableError(f"calibration table {path} does not exist")
    if not tables.tableexists(path):
        raise CaltableError(f"{path} is not a casacore table")
    try:
        tab = tables.table(path, ack=False)
    except RuntimeError as exc:
        raise CaltableError(f"cannot open calibration table {path}: {exc}") from exc
    try:
        return _read_open(path, tab)
    except RuntimeError as exc:
        raise CaltableError(f"calibration table {path} is unreadable: {exc}") from exc
    finally:
        tab.close()


def _read_open(path: str, tab: tables.table) -> GainTable | FloatCalTable:
    info = tab.info()
    if info.get("type") != "Calibration":
        raise CaltableError(f"{path} is not a valid Calibration table (table type "
                            f"{info.get('type')!r}, expected 'Calibration')")
    keywords = tab.getkeywords()
    vis_cal = info.get("subType") or str(keywords.get("VisCal", ""))
    cols = set(tab.colnames())
    missing = sorted(_REQUIRED - cols)
    if "CPARAM" in cols:
        par_col, cdtype = "CPARAM", np.complex128
    elif "FPARAM" in cols:
        par_col, cdtype = "FPARAM", np.float64
    else:
        missing.append("CPARAM or FPARAM")
    if missing:
        raise CaltableError(f"{path} ({vis_cal}) is not a CASA NewCalTable (pre-CASA-3.4 format?):"
                            f" missing column(s) {', '.join(missing)}")
    nrow = tab.nrows()
    rows: dict[str, np.ndarray] = {}
    for attr, col, dtype in _SCALAR_ATTRS:
        if col in cols and nrow:
            rows[attr] = np.asarray(tab.getcol(col), dtype=dtype)
        else:
            rows[attr] = np.zeros(nrow, dtype)
    # (nchan, npar) per row; the output grid is the largest; a table with no cells gets
    # (1, npar of its type)
    shapes = _cell_shapes(tab, par_col) if nrow else []
    known = [s for s in shapes if len(s) == 2]
    grid = ((max(s[0] for s in known), max(s[1] for s in known)) if known
            else (1, NPAR.get(vis_cal, 1)))
    param, defined = _read_array(tab, par_col, cdtype, np.nan, shapes, grid)
    flag, _ = _read_array(tab, "FLAG", bool, True, shapes, grid)
    flag |= ~defined
    arrays = {"paramerr": _read_array(tab, "PARAMERR", np.float64, np.nan, shapes, grid)[0],
              "flag": flag,
              "snr": _read_array(tab, "SNR", np.float64, np.nan, shapes, grid)[0],
              "weight": _read_array(tab, "WEIGHT", np.float64, np.nan, shapes, grid)[0]}
    meta = _read_meta(tab, keywords, rows["spw_id"], shapes)
    ms_name = str(keywords.get("MSName", ""))
    if par_col == "CPARAM":
        out: GainTable | FloatCalTable = GainTable(vis_cal=vis_cal, cparam=param, ms_name=ms_name,
                                                   meta=meta, **rows, **arrays)
    else:
        out = FloatCalTable(vis_cal=vis_cal, fparam=param, ms_name=ms_name, meta=meta,
                            **rows, **arrays)
    return out.sorted()


def _cell_shapes(tab: tables.table, col: str) -> list[tuple[int, ...]]:
    """Python-order (nchan, npar) shape of every cell of ``col``; () for an undefined cell."""
    nrow = tab.nrows()
    try:
        strings = tab.getcolshapestring(col) if nrow else []
    except RuntimeError:  # some cell undefined
        strings = [tab.getcolshapestring(col, startrow=r, nrow=1)[0]
                   if tab.iscelldefined(col, r) else "" for r in range(nrow)]
    return [tuple(int(x) for x in s.strip("[]").split(",")) if s else () for s in strings]


def _read_array(tab: tables.table, col: str, dtype: Any, fill: Any,
                shapes: list[tuple[int, ...]], grid: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Array column as (nrow, nchan, npar) = (nrow, *grid) and a per-element 'defined' mask.

    ``shapes`` are the parameter column's cell shapes. One getcol when all cells have the grid
    shape, otherwise cell by cell, padding with ``fill``.
    """
    nchan, npar = grid
    nrow = len(shapes)
    out = np.full((nrow, nchan, npar), fill, dtype=dtype)
    defined = np.zeros((nrow, nchan, npar), dtype=bool)
    if nrow == 0:
        return out, defined
    if all(s == (nchan, npar) for s in shapes):
        try:
            whole = tab.getcol(col)
        except RuntimeError:  # undefined or differently shaped cells: per-cell path below
            whole = None
        if whole is not None and whole.shape == out.shape:
            out[...] = whole
            defined[...] = True
            return out, defined
    for r in range(nrow):
        if tab.iscelldefined(col, r):
            cell = np.asarray(tab.getcell(col, r))
            if cell.ndim == 2 and cell.shape[0] <= nchan and cell.shape[1] <= npar:
                out[r, :cell.shape[0], :cell.shape[1]] = cell
                defined[r, :cell.shape[0], :cell.shape[1]] = True
    return out, defined


def _read_meta(tab: tables.table, keywords: dict, spw_id: np.ndarray,
               shapes: list[tuple[int, ...]]) -> dict:
    meta: dict[str, Any] = {"par_type": str(keywords.get("ParType", "")),
                            "pol_basis": str(keywords.get("PolBasis", "")),
                            "casa_version": str(keywords.get("CASA_Version", "Unknown"))}
    nchan: dict[int, int] = {}
    for s, shape in zip(spw_id.tolist(), shapes):
        if len(shape) == 2:
            nchan[s] = max(nchan.get(s, 0), shape[0])
    meta["nchan"] = nchan
    sub = _open_subtable(tab, keywords, "SPECTRAL_WINDOW")
    try:
        meta["chan_freq"] = {r: np.asarray(sub.getcell("CHAN_FREQ", r), dtype=float)
                             for r in range(sub.nrows())}
        meta["spw_names"] = list(sub.getcol("NAME")) if sub.nrows() else []
        meta["spw_flag_row"] = (np.asarray(sub.getcol("FLAG_ROW"), dtype=bool) if sub.nrows()
                                else np.zeros(0, bool))
        meta["ref_frequency"] = {r: float(sub.getcell("REF_FREQUENCY", r))
                                 for r in range(sub.nrows())}
    finally:
        sub.close()
    sub = _open_subtable(tab, keywords, "FIELD")
    try:
        meta["field_directions"] = {
            r: tuple(float(x) for x in np.asarray(sub.getcell("PHASE_DIR", r))[0, :2])
            for r in range(sub.nrows()) if sub.iscelldefined("PHASE_DIR", r)}
    finally:
        sub.close()
    for key, name in (("field_names", "FIELD"), ("antenna_names", "ANTENNA")):
        sub = _open_subtable(tab, keywords, name)
        try:
            meta[key] = list(sub.getcol("NAME")) if sub.nrows() else []
        finally:
            sub.close()
    return meta


def _open_subtable(tab: tables.table, keywords: dict, name: str) -> tables.table:
    value = keywords.get(name)
    if not isinstance(value, str) or not value.startswith("Table: "):
        raise CaltableError(f"calibration table {tab.name()} has no {name} sub-table")
    return tables.table(value[len("Table: "):], ack=False)
