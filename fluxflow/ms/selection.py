"""Read one (field, spw) selection of visibilities into an xarray Dataset (spec §8, §9, §15).

Rows are selected with numpy on the process's cached index columns (fluxflow.ms.rowindex):
FIELD_ID, DATA_DESC_ID (the spw's data descriptions), STATE_ID (the states whose intents meet
the requested intents), SCAN_NUMBER, ANTENNA1/2 (both antennas of a baseline in the requested
list) and ANTENNA1 != ANTENNA2 (no autocorrelations; spec §8 edge cases), then opened with
``selectrows``. Rows are ordered by TIME, ANTENNA1, ANTENNA2 (then MS row number).

Dataset layout (one per selection or per chunk):

* dims ``row``, ``chan``, ``corr``, ``uvw`` (= 3)
* ``vis`` (row, chan, corr) complex64 from `datacolumn`;
  ``model`` (row, chan, corr) complex64 from MODEL_DATA, or the unit point model (1 on the
  parallel hands, 0 on the cross hands) when MODEL_DATA is absent, unwritten or not requested;
  ``flag`` (row, chan, corr) bool = FLAG | FLAG_ROW;
  ``weight`` (row, chan, corr) float32 from WEIGHT_SPECTRUM when it exists and holds data,
  else WEIGHT broadcast over channels;
  ``time``, ``interval`` (row) float64; ``antenna1``, ``antenna2``, ``scan`` (row) int32;
  ``uvw`` (row, uvw) float64; ``row_id`` (row) int64 = MS main-table row numbers
* coords ``chan_freq``, ``chan_width`` (chan) float64 [Hz], ``corr`` (corr) correlation names
* attrs ``ms`` (absolute path), ``ms_name``, ``field_id``, ``spw_id``, ``ddid`` (the first data
  description of the spw if it has several), ``datacolumn``, ``has_model_column`` (True when
  ``model`` came from MODEL_DATA), ``n_ant`` (antennas in the MS)

Memory: columns are read with ``getcol`` in chunks of at most ``chunk_rows`` rows. The default
(None) is ``min(DEFAULT_CHUNK_ROWS, DEFAULT_CHUNK_BYTES // bytes_per_row)`` with
``bytes_per_row = 21 * nchan * ncorr + 64`` (vis 8 + model 8 + weight 4 + flag 1 bytes per
element, plus the per-row columns), so one chunk of output stays under ~256 MiB whatever the
channel count; casacore's temporary read buffers add at most about the same again.
:func:`iter_selection` therefore runs in bounded memory; :func:`read_selection` returns the
whole selection (its size is the selection's, not the chunk's).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import xarray as xr

from fluxflow.errors import MissingColumnError, SelectionError
from fluxflow.ms.metadata import read_metadata
from fluxflow.ms.rowindex import row_index
from fluxflow.ms.tables import VISIBILITY_COLUMNS, ensure_lock, open_ms
from fluxflow.ms.types import MSMetadata, Polarization, SpectralWindow

#: Upper bound on rows per chunk.
DEFAULT_CHUNK_ROWS = 100_000
#: Upper bound on the bytes of one chunk's output arrays (used when chunk_rows is None).
DEFAULT_CHUNK_BYTES = 256 * 2**20
#: Bytes per (row, chan, corr) element of a selection Dataset (vis, model, weight, flag).
_BYTES_PER_ELEMENT = 8 + 8 + 4 + 1
_BYTES_PER_ROW = 8 + 8 + 4 + 4 + 4 + 24 + 8


def chunk_rows_for(nchan: int, ncorr: int, chunk_rows: int | None = None) -> int:
    """Rows per chunk: `chunk_rows` if given, else the memory-bounded default (module docstring)."""
    if chunk_rows is not None:
        if int(chunk_rows) < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        return int(chunk_rows)
    per_row = _BYTES_PER_ELEMENT * max(nchan, 1) * max(ncorr, 1) + _BYTES_PER_ROW
    return max(1, min(DEFAULT_CHUNK_ROWS, DEFAULT_CHUNK_BYTES // per_row))


def unit_model(nrow: int, nchan: int, pol: Polarization) -> np.ndarray:
    """Unit point-source model (nrow, nchan, ncorr) complex64: 1 on parallel hands, 0 on cross."""
    out = np.zeros((nrow, nchan, pol.num_corr), dtype=np.complex64)
    out[:, :, list(pol.parallel_hands)] = 1.0
    return out


def _as_list(values: Iterable | str | int | None) -> list | None:
    if values is None:
        return None
    if isinstance(values, str):
        return [v.strip() for v in values.split(",") if v.strip()]
    if isinstance(values, (int, np.integer)):
        return [values]
    return list(values)


@dataclass(frozen=True)
class SelectionPlan:
    """Everything needed to select one (field, spw); ``empty``: no row can match."""

    ms: str
    field_id: int
    spw: SpectralWindow
    pol: Polarization
    ddids: tuple[int, ...]
    n_ant: int
    empty: bool
    # the selection for :func:`select_rows` (None = no restriction)
    states: tuple[int, ...] | None = None
    scans: tuple[int, ...] | None = None
    antennas: tuple[int, ...] | None = None
    cross_only: bool = True


def plan_selection(md: MSMetadata, field_id: int, spw_id: int, intents: Iterable[str] | str | None = None,
                   scans: Iterable[int] | None = None, antennas: Iterable[int | str] | None = None,
                   cross_only: bool = True) -> SelectionPlan:
    """Validate a selection against `md`.

    `antennas` are ids or names; a baseline is kept when *both* its antennas are listed
    (baseline-among-listed semantics). Unknown field/spw/antenna -> SelectionError. A selection
    that can match no row (no data description for the spw, no state with the intents, empty
    lists) gets ``empty=True``.
    """
    field_id = int(field_id)
    if not any(f.id == field_id for f in md.fields):
        raise SelectionError(f"{md.name}: no field id {field_id} (fields 0..{len(md.fields) - 1})")
    spw = md.spw(int(spw_id))
    ddids = tuple(md.ddids_for_spw(spw.id))
    pol_ids = {d.pol_id for d in md.data_descriptions if d.id in ddids}
    if len(pol_ids) > 1:
        raise SelectionError(f"{md.name}: spw {spw.id} has data descriptions with different polarization "
                             f"setups ({sorted(pol_ids)}); fluxflow needs one correlation axis per spw")
    if pol_ids:
        pol_id = pol_ids.pop()
        if not 0 <= pol_id < len(md.polarizations):
            raise SelectionError(f"{md.name}: data description of spw {spw.id} names missing polarization {pol_id}")
        pol = md.polarizations[pol_id]
    else:
        pol = md.polarizations[0] if md.polarizations else Polarization(id=-1, corr_types=())
    empty = not ddids
    want = _as_list(intents)
    states = scan_ids = ant_ids = None
    if want is not None:
        states = md.state_ids_for_intents(want)
        empty |= not states
    scan_list = _as_list(scans)
    if scan_list is not None:
        scan_ids = sorted({int(s) for s in scan_list})
        empty |= not scan_ids
    ant_list = _as_list(antennas)
    if ant_list is not None:
        ant_ids = sorted({md.antenna(a).id for a in ant_list})
        empty |= not ant_ids
    return SelectionPlan(ms=md.path, field_id=field_id, spw=spw, pol=pol, ddids=ddids,
                         n_ant=len(md.antennas), empty=bool(empty),
                         states=None if states is None else tuple(states),
                         scans=None if scan_list is None else tuple(scan_ids),
                         antennas=None if ant_list is None else tuple(ant_ids), cross_only=cross_only)


def select_rows(t, plan: SelectionPlan, sort: bool = True) -> np.ndarray:
    """MS row numbers of `plan` on the open main table `t` (sorted by TIME, ANTENNA1, ANTENNA2)."""
    if plan.empty:
        return np.zeros(0, dtype=np.int64)
    idx = row_index(t, plan.ms)
    m = (idx["FIELD_ID"] == plan.field_id) & np.isin(idx["DATA_DESC_ID"], plan.ddids)
    if plan.states is not None:
        m &= np.isin(idx["STATE_ID"], plan.states)
    if plan.scans is not None:
        m &= np.isin(idx["SCAN_NUMBER"], plan.scans)
    if plan.antennas is not None:
        m &= np.isin(idx["ANTENNA1"], plan.antennas) & np.isin(idx["ANTENNA2"], plan.antennas)
    if plan.cross_only:
        m &= idx["ANTENNA1"] != idx["ANTENNA2"]
    rows = np.flatnonzero(m)
    if sort and rows.size:
        rows = rows[np.lexsort((rows, idx["ANTENNA2"][rows], idx["ANTENNA1"][rows], idx["TIME"][rows]))]
    return rows.astype(np.int64)


def query_selection(t, plan: SelectionPlan):
    """(sorted reference table, MS row numbers) of `plan` on the open main table `t`; (None, []) if empty."""
    if plan.empty:
        return None, np.zeros(0, dtype=np.int64)
    # Reference tables are released by dropping them, never with close(); selectrows (like
    # close()) may release the parent table's user lock, which is why every chunk read starts
    # with ensure_lock.
    row_ids = select_rows(t, plan, sort=True)
    if row_ids.size == 0:
        return None, row_ids
    return t.selectrows(row_ids), row_ids


def _cells_defined(sel, column: str, start: int) -> bool:
    return column in sel.colnames() and sel.iscelldefined(column, start)


def _read_chunk(t, sel, plan: SelectionPlan, row_ids: np.ndarray, start: int, n: int, datacolumn: str,
                read_model: bool, compact: bool = False) -> tuple[dict[str, np.ndarray], bool]:
    """Arrays of rows [start, start + n) of `sel`, and whether `model` came from MODEL_DATA.

    `compact`: no unit model is made when MODEL_DATA is not read, and WEIGHT stays (row, corr)."""
    ensure_lock(t, plan.ms, write=False)
    nchan, ncorr = plan.spw.num_chan, plan.pol.num_corr
    vis = np.asarray(sel.getcol(datacolumn, start, n), dtype=np.complex64)
    if vis.shape[1:] != (nchan, ncorr):
        raise SelectionError(f"{plan.ms}: {datacolumn} cells have shape {vis.shape[1:]} but spw {plan.spw.id} "
                             f"has {nchan} channels and {ncorr} correlations")
    model, from_column = None, False
    if read_model and _cells_defined(sel, "MODEL_DATA", start):
        try:
            model = np.asarray(sel.getcol("MODEL_DATA", start, n), dtype=np.complex64)
            from_column = True
        except RuntimeError:  # partly unwritten (TiledShapeStMan) column: treated as absent
            model = None
    if model is None and not compact:
        model = unit_model(n, nchan, plan.pol)
    flag = np.asarray(sel.getcol("FLAG", start, n), dtype=bool)
    flag |= np.asarray(sel.getcol("FLAG_ROW", start, n), dtype=bool)[:, None, None]
    weight = None
    if _cells_defined(sel, "WEIGHT_SPECTRUM", start):
        try:
            weight = np.asarray(sel.getcol("WEIGHT_SPECTRUM", start, n), dtype=np.float32)
        except RuntimeError:  # partly unwritten column: use WEIGHT
            weight = None
    if weight is None:
        weight = np.asarray(sel.getcol("WEIGHT", start, n), dtype=np.float32)
        if not compact:
            weight = np.ascontiguousarray(np.broadcast_to(weight[:, None, :], (n, nchan, ncorr)))
    arrays = {
        "vis": vis, "model": model, "flag": flag, "weight": weight,
        "time": np.asarray(sel.getcol("TIME", start, n), dtype=np.float64),
        "interval": np.asarray(sel.getcol("INTERVAL", start, n), dtype=np.float64),
        "antenna1": np.asarray(sel.getcol("ANTENNA1", start, n), dtype=np.int32),
        "antenna2": np.asarray(sel.getcol("ANTENNA2", start, n), dtype=np.int32),
        "scan": np.asarray(sel.getcol("SCAN_NUMBER", start, n), dtype=np.int32),
        "uvw": np.asarray(sel.getcol("UVW", start, n), dtype=np.float64).reshape(n, 3),
        "row_id": row_ids[start:start + n].copy(),
    }
    return arrays, from_column


_ROW_VARS = {"time": np.float64, "interval": np.float64, "antenna1": np.int32, "antenna2": np.int32,
             "scan": np.int32, "row_id": np.int64}


def _empty_arrays(nrow: int, nchan: int, ncorr: int) -> dict[str, np.ndarray]:
    out = {"vis": np.zeros((nrow, nchan, ncorr), np.complex64),
           "model": np.zeros((nrow, nchan, ncorr), np.complex64),
           "flag": np.zeros((nrow, nchan, ncorr), bool),
           "weight": np.zeros((nrow, nchan, ncorr), np.float32),
           "uvw": np.zeros((nrow, 3), np.float64)}
    out.update({k: np.zeros(nrow, dt) for k, dt in _ROW_VARS.items()})
    return out


def _dataset(arrays: dict[str, np.ndarray], plan: SelectionPlan, datacolumn: str, has_model: bool) -> xr.Dataset:
    cube = ("row", "chan", "corr")
    data_vars = {k: (cube, arrays[k]) for k in ("vis", "model", "flag") if arrays.get(k) is not None}
    data_vars["weight"] = (cube if arrays["weight"].ndim == 3 else ("row", "corr"), arrays["weight"])
    data_vars.update({k: (("row",), arrays[k]) for k in _ROW_VARS})
    data_vars["uvw"] = (("row", "uvw"), arrays["uvw"])
    coords = {"chan_freq": (("chan",), np.asarray(plan.spw.chan_freq, dtype=np.float64)),
              "chan_width": (("chan",), np.asarray(plan.spw.chan_width, dtype=np.float64)),
              "corr": (("corr",), np.array(plan.pol.corr_types, dtype=str))}
    attrs = {"ms": plan.ms, "ms_name": os.path.basename(os.path.normpath(plan.ms)), "field_id": plan.field_id,
             "spw_id": plan.spw.id, "ddid": plan.ddids[0] if plan.ddids else -1, "datacolumn": datacolumn,
             "has_model_column": bool(has_model), "n_ant": plan.n_ant}
    return xr.Dataset(data_vars=data_vars, coords=coords, attrs=attrs)


def _check_datacolumn(t, path: str, datacolumn: str) -> None:
    names = t.colnames()
    if datacolumn not in names:
        present = [c for c in VISIBILITY_COLUMNS if c in names]
        raise MissingColumnError(f"{path}: column {datacolumn} is missing (visibility columns present: "
                                 f"{', '.join(present) or 'none'})")


def iter_selection(ms_path: str, field_id: int, spw_id: int, intents: Iterable[str] | str | None = None,
                   scans: Iterable[int] | None = None, antennas: Iterable[int | str] | None = None,
                   datacolumn: str = "DATA", read_model: bool = True, chunk_rows: int | None = None,
                   *, md: MSMetadata | None = None, lock_timeout: float | None = None,
                   compact: bool = False) -> Iterator[xr.Dataset]:
    """Yield the selection of :func:`read_selection` as Datasets of at most `chunk_rows` rows.

    The field/spw/antenna selection is validated at call time; the MS is opened at the first
    iteration. Nothing is yielded for an empty selection. The MS stays read-locked while the
    generator is alive; exhaust or close it promptly.

    ``compact=True`` (what fluxflow's solves use) leaves out what can be made per channel later:
    ``model`` is absent unless it came from MODEL_DATA (attr ``has_model_column``), and
    ``weight`` is (row, corr) WEIGHT unless WEIGHT_SPECTRUM holds data.
    """
    md = md if md is not None else read_metadata(ms_path, with_scans=False, warn=False, lock_timeout=lock_timeout)
    plan = plan_selection(md, field_id, spw_id, intents, scans, antennas)
    step = chunk_rows_for(plan.spw.num_chan, plan.pol.num_corr, chunk_rows)
    return _iter_chunks(plan, step, datacolumn, read_model, lock_timeout, compact)


def _iter_chunks(plan: SelectionPlan, step: int, datacolumn: str, read_model: bool,
                 lock_timeout: float | None, compact: bool = False) -> Iterator[xr.Dataset]:
    with open_ms(plan.ms, lock_timeout=lock_timeout) as t:
        _check_datacolumn(t, plan.ms, datacolumn)
        sel, row_ids = query_selection(t, plan)
        if sel is None:
            return
        try:
            for start in range(0, row_ids.size, step):
                n = min(step, row_ids.size - start)
                arrays, from_column = _read_chunk(t, sel, plan, row_ids, start, n, datacolumn, read_model,
                                                  compact)
                yield _dataset(arrays, plan, datacolumn, from_column)
        finally:
            del sel


def read_selection(ms_path: str, field_id: int, spw_id: int, intents: Iterable[str] | str | None = None,
                   scans: Iterable[int] | None = None, antennas: Iterable[int | str] | None = None,
                   datacolumn: str = "DATA", read_model: bool = True, chunk_rows: int | None = None,
                   *, md: MSMetadata | None = None, lock_timeout: float | None = None) -> xr.Dataset:
    """Read the cross-correlation rows of (field, spw) into one Dataset (layout: module docstring).

    `intents`: pipeline intents (list or comma string), rows whose STATE has any of them;
    `scans`: scan numbers; `antennas`: ids or names, both antennas of a baseline must be listed.
    `md` (optional) avoids re-reading the sub-tables. Errors: SelectionError (unknown field,
    spw or antenna), MissingColumnError (`datacolumn` absent). An empty selection gives a
    Dataset with 0 rows.
    """
    md = md if md is not None else read_metadata(ms_path, with_scans=False, warn=False, lock_timeout=lock_timeout)
    plan = plan_selection(md, field_id, spw_id, intents, scans, antennas)
    nchan, ncorr = plan.spw.num_chan, plan.pol.num_corr
    step = chunk_rows_for(nchan, ncorr, chunk_rows)
    with open_ms(md.path, lock_timeout=lock_timeout) as t:
        _check_datacolumn(t, md.path, datacolumn)
        sel, row_ids = query_selection(t, plan)
        out = _empty_arrays(row_ids.size, nchan, ncorr)
        has_model = read_model and "MODEL_DATA" in t.colnames()
        if sel is not None:
            try:
                for start in range(0, row_ids.size, step):
                    n = min(step, row_ids.size - start)
                    arrays, from_column = _read_chunk(t, sel, plan, row_ids, start, n, datacolumn, read_model)
                    has_model &= from_column
                    for key, value in arrays.items():
                        out[key][start:start + n] = value
            finally:
                del sel
    return _dataset(out, plan, datacolumn, has_model)
