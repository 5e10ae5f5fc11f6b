"""Write MODEL_DATA (setjy semantics of spec §3.10, §7.2; Stokes I only, spec §12).

This is the only module that opens a MeasurementSet for writing, always with the write lock of
:mod:`fluxflow.ms.tables`, and the only column it writes is MODEL_DATA (adding it if absent).

* The model is a Stokes-I visibility I(uvw, ν) stored on both parallel hands (XX = YY = I or
  RR = LL = I); cross hands are 0 (Q = U = V = 0).
* Like setjy, the selected autocorrelation rows are written too.
* A new MODEL_DATA column is initialised on every row to the unit point model (1 on parallel
  hands), which is what CASA assumes for an MS without a model column; :func:`write_models`
  skips the rows its writes cover, so that each new cell is written once.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import casacore.tables as ct
import numpy as np

from fluxflow.errors import MissingColumnError, WriteError
from fluxflow.ms.metadata import read_metadata
from fluxflow.ms.rowindex import row_index
from fluxflow.ms.selection import chunk_rows_for, plan_selection, select_rows, unit_model
from fluxflow.ms.tables import ensure_lock, open_ms
from fluxflow.ms.types import MSMetadata, Polarization

#: model_fn(uvw (nrow, 3) metres, chan_freq (nchan,) Hz) -> Stokes-I visibilities (nrow, nchan).
ModelFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

#: Target size of one MODEL_DATA tile (bytes).
TILE_BYTES = 2**20
#: casacore column option bit "FixedShape".
_FIXED_SHAPE = 4


def _model_column_spec(t, md: MSMetadata) -> tuple[dict, dict]:
    """(column description, data-manager info) for a new MODEL_DATA shaped like DATA.

    Fixed-shape DATA -> TiledColumnStMan with that shape. DATA of varying shape (several spws
    with different channel counts) cannot live in TiledColumnStMan, so TiledShapeStMan is used
    (as CASA and python-casacore's addImagingColumns do). Tiles hold about TILE_BYTES.
    """
    source = "DATA" if "DATA" in t.colnames() else "CORRECTED_DATA"
    desc = dict(t.getcoldesc(source))
    desc.pop("keywords", None)
    desc["comment"] = "The model data column"
    desc["valueType"] = "complex"
    shape = [int(x) for x in np.asarray(desc.get("shape", []), dtype=int).ravel()]
    fixed = len(shape) == 2 and bool(int(desc.get("option", 0)) & _FIXED_SHAPE)
    if fixed:
        nchan, ncorr = shape
        dm_type = "TiledColumnStMan"
    else:
        nchan = max([md.spw(d.spw_id).num_chan for d in md.data_descriptions] + [1])
        ncorr = max([md.polarizations[d.pol_id].num_corr for d in md.data_descriptions] + [1])
        dm_type = "TiledShapeStMan"
        desc.pop("shape", None)
        desc["option"] = 0
        desc["ndim"] = 2
    rows = max(1, min(TILE_BYTES // (8 * nchan * ncorr), t.nrows()))
    desc["dataManagerType"] = dm_type
    desc["dataManagerGroup"] = "ModelData"
    dminfo = {"TYPE": dm_type, "NAME": "ModelData",
              "SPEC": {"DEFAULTTILESHAPE": np.array([ncorr, nchan, rows], dtype=np.int32)}}
    return desc, dminfo


def _initialise_unit_model(t, path: str, md: MSMetadata, chunk_rows: int | None,
                           skip_rows: np.ndarray | None = None) -> None:
    """Unit model on every row of the new column, except `skip_rows` (sorted MS row numbers that
    are about to get another model)."""
    ddid = row_index(t, path)["DATA_DESC_ID"]
    for dd in md.data_descriptions:
        spw = md.spw(dd.spw_id)
        pol: Polarization = md.polarizations[dd.pol_id]
        step = chunk_rows_for(spw.num_chan, pol.num_corr, chunk_rows)
        rows = np.flatnonzero(ddid == dd.id)
        if skip_rows is not None and skip_rows.size:
            rows = rows[~np.isin(rows, skip_rows, assume_unique=True)]
        if rows.size == 0:
            continue
        sel = t.selectrows(rows)
        try:
            n = sel.nrows()
            cells = unit_model(min(step, n), spw.num_chan, pol)
            for start in range(0, n, step):
                m = min(step, n - start)
                ensure_lock(t, path, write=True)
                sel.putcol("MODEL_DATA", cells[:m], start, m)
        finally:
            del sel  # not close(): that would release the parent table's write lock


def _ensure_model_column(t, path: str, md: MSMetadata, chunk_rows: int | None,
                         skip_rows: np.ndarray | None = None) -> bool:
    if "MODEL_DATA" in t.colnames():
        return False
    _check_free_space(t, path, md)
    desc, dminfo = _model_column_spec(t, md)
    try:
        t.addcols(ct.maketabdesc(ct.makecoldesc("MODEL_DATA", desc)), dminfo)
        _initialise_unit_model(t, path, md, chunk_rows, skip_rows)
    except RuntimeError as err:
        raise WriteError(f"{path}: could not add and initialise MODEL_DATA: {err}") from err
    return True


def _check_free_space(t, path: str, md: MSMetadata) -> None:
    """Refuse to add MODEL_DATA when the disk cannot hold it.

    casacore aborts the whole process (an exception escaping a destructor) when it runs out of
    space while adding a column, so fluxflow checks first: the new column needs about
    nrow x nchan x ncorr x 8 bytes (complex64), plus a margin for the table files it rewrites."""
    import shutil

    ddid = row_index(t, path)["DATA_DESC_ID"]
    counts = np.bincount(ddid, minlength=len(md.data_descriptions))
    need = 0
    for dd, n in zip(md.data_descriptions, counts):
        need += int(n) * md.spw(dd.spw_id).num_chan * md.polarizations[dd.pol_id].num_corr * 8
    need = int(need * 1.05) + 4 * 2**20
    free = shutil.disk_usage(path).free
    if free < need:
        raise WriteError(f"{path}: not enough disk space to add MODEL_DATA ({need / 2**20:.1f} MiB "
                         f"needed, {free / 2**20:.1f} MiB free); the MS is unchanged. Free space, "
                         "or add MODEL_DATA beforehand, or run with --no-model")


def ensure_model_column(ms_path: str, chunk_rows: int | None = None, *, md: MSMetadata | None = None,
                        lock_timeout: float | None = None) -> bool:
    """Add MODEL_DATA (unit point model on every row) if absent. Returns True if it was added."""
    md = md if md is not None else read_metadata(ms_path, with_scans=False, warn=False, lock_timeout=lock_timeout)
    with open_ms(md.path, readonly=False, lock_timeout=lock_timeout) as t:
        return _ensure_model_column(t, md.path, md, chunk_rows)


def _stokes_i_to_model(values: np.ndarray, nrow: int, nchan: int, pol: Polarization) -> np.ndarray:
    try:
        stokes_i = np.broadcast_to(np.asarray(values), (nrow, nchan))
    except ValueError:
        raise ValueError(f"model_fn returned shape {np.shape(values)}, expected ({nrow}, {nchan})") from None
    if not np.all(np.isfinite(stokes_i)):
        raise ValueError("model_fn returned non-finite visibilities")
    out = np.zeros((nrow, nchan, pol.num_corr), dtype=np.complex64)
    out[:, :, list(pol.parallel_hands)] = stokes_i[:, :, None]
    return out


def write_model_data(ms_path: str, field_id: int, spw_id: int, model_fn: ModelFn,
                     intents: Iterable[str] | str | None = None, scans: Iterable[int] | None = None,
                     chunk_rows: int | None = None, *, md: MSMetadata | None = None,
                     lock_timeout: float | None = None) -> int:
    """Write model_fn's Stokes-I model into MODEL_DATA of the (field, spw[, intents, scans]) rows.

    Autocorrelations of the selection are written too. MODEL_DATA is created first if absent
    (see module docstring). Returns the number of rows written. Errors: SelectionError,
    TableLockedError, WriteError; ValueError if model_fn returns a wrong shape or non-finite values.
    """
    return write_models(ms_path, [(field_id, spw_id, model_fn, intents, scans)], chunk_rows, md=md,
                        lock_timeout=lock_timeout)


def write_models(ms_path: str, writes: Sequence[tuple], chunk_rows: int | None = None, *,
                 md: MSMetadata | None = None, lock_timeout: float | None = None) -> int:
    """Several :func:`write_model_data` calls with the MS opened once for writing.

    `writes`: (field_id, spw_id, model_fn, intents[, scans]) tuples, written in order. When
    MODEL_DATA has to be added, only the rows none of the writes covers are initialised to the
    unit model, so every new cell is written once. Returns the number of rows written."""
    md = md if md is not None else read_metadata(ms_path, with_scans=False, warn=False, lock_timeout=lock_timeout)
    plans = [(plan_selection(md, w[0], w[1], w[3], w[4] if len(w) > 4 else None, antennas=None,
                             cross_only=False), w[2]) for w in writes]
    written = 0
    with open_ms(md.path, readonly=False, lock_timeout=lock_timeout) as t:
        if "DATA" not in t.colnames() and "CORRECTED_DATA" not in t.colnames():
            raise MissingColumnError(f"{md.path}: no DATA column to shape MODEL_DATA on")
        rows = [select_rows(t, plan, sort=False) for plan, _ in plans]
        if "MODEL_DATA" not in t.colnames():
            covered = np.unique(np.concatenate(rows)) if rows else np.zeros(0, np.int64)
            _ensure_model_column(t, md.path, md, chunk_rows, skip_rows=covered)
        for (plan, model_fn), r in zip(plans, rows):
            written += _write_rows(t, md, plan, r, model_fn, chunk_rows)
    return written


def _write_rows(t, md: MSMetadata, plan, rows: np.ndarray, model_fn: ModelFn, chunk_rows: int | None) -> int:
    if rows.size == 0:
        return 0
    nchan = plan.spw.num_chan
    freq = np.asarray(plan.spw.chan_freq, dtype=np.float64)
    step = chunk_rows_for(nchan, plan.pol.num_corr, chunk_rows)
    sel = t.selectrows(rows)
    fixed = None
    if getattr(model_fn, "uvw_independent", False):  # point source: the same cells on every row
        fixed = _stokes_i_to_model(model_fn(np.zeros((1, 3)), freq), 1, nchan, plan.pol)
    written = 0
    try:
        n = sel.nrows()
        for start in range(0, n, step):
            m = min(step, n - start)
            ensure_lock(t, md.path, write=True)
            if fixed is not None:
                model = np.broadcast_to(fixed, (m,) + fixed.shape[1:])
            else:
                uvw = np.asarray(sel.getcol("UVW", start, m), dtype=np.float64).reshape(m, 3)
                model = _stokes_i_to_model(model_fn(uvw, freq), m, nchan, plan.pol)
            try:
                sel.putcol("MODEL_DATA", model, start, m)
            except RuntimeError as err:
                raise WriteError(f"{md.path}: writing MODEL_DATA failed: {err}") from err
            written += m
    finally:
        del sel  # not close(): that would release the parent table's write lock
    return written


def _unit_stokes_i(uvw: np.ndarray, chan_freq: np.ndarray) -> np.ndarray:
    return np.ones((uvw.shape[0], chan_freq.size), dtype=np.complex64)


def reset_model_data(ms_path: str, field_id: int, spw_id: int, intents: Iterable[str] | str | None = None,
                     scans: Iterable[int] | None = None, chunk_rows: int | None = None, *,
                     md: MSMetadata | None = None, lock_timeout: float | None = None) -> int:
    """Write the unit point model (I = 1 Jy) into MODEL_DATA of the selection; returns rows written."""
    return write_model_data(ms_path, field_id, spw_id, _unit_stokes_i, intents=intents, scans=scans,
                            chunk_rows=chunk_rows, md=md, lock_timeout=lock_timeout)

