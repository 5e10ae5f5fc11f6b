"""Gain solutions as a row table, the in-memory form of a CASA G/T Jones caltable.

One row per (solution time, field, spw, antenna), as CASA lays out a caltable: `cparam` has shape
(nrow, 1, npar) with npar = 2 for G (one gain per parallel hand) and 1 for T (shared). This is pure
numpy; :mod:`fluxflow.ms.caltable` writes and reads it as a real CASA table.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np

_ROW_ARRAYS = ("time", "interval", "field_id", "spw_id", "antenna1", "antenna2", "scan",
               "obs_id", "cparam", "paramerr", "flag", "snr", "weight")


@dataclass
class GainTable:
    vis_cal: str  # "G Jones" or "T Jones"
    time: np.ndarray  # (nrow,) MJD seconds, centre of the solution interval
    interval: np.ndarray  # (nrow,) seconds
    field_id: np.ndarray  # (nrow,) int
    spw_id: np.ndarray  # (nrow,) int
    antenna1: np.ndarray  # (nrow,) int, the antenna of the solution
    antenna2: np.ndarray  # (nrow,) int, the reference antenna (-1 if none)
    scan: np.ndarray  # (nrow,) int
    obs_id: np.ndarray  # (nrow,) int
    cparam: np.ndarray  # (nrow, 1, npar) complex
    paramerr: np.ndarray  # (nrow, 1, npar) float
    flag: np.ndarray  # (nrow, 1, npar) bool
    snr: np.ndarray  # (nrow, 1, npar) float
    weight: np.ndarray  # (nrow, 1, npar) float
    ms_name: str = ""
    meta: dict = field(default_factory=dict)  # free-form (solint, gaintype, calmode, ...)

    @property
    def nrow(self) -> int:
        return int(self.time.size)

    @property
    def npar(self) -> int:
        return int(self.cparam.shape[2]) if self.cparam.ndim == 3 else 0

    @classmethod
    def empty(cls, vis_cal: str, npar: int, ms_name: str = "", meta: dict | None = None) -> "GainTable":
        z = lambda dt: np.zeros(0, dtype=dt)  # noqa: E731
        return cls(vis_cal=vis_cal, time=z(float), interval=z(float), field_id=z(np.int32),
                   spw_id=z(np.int32), antenna1=z(np.int32), antenna2=z(np.int32),
                   scan=z(np.int32), obs_id=z(np.int32),
                   cparam=np.zeros((0, 1, npar), complex), paramerr=np.zeros((0, 1, npar)),
                   flag=np.zeros((0, 1, npar), bool), snr=np.zeros((0, 1, npar)),
                   weight=np.zeros((0, 1, npar)), ms_name=ms_name, meta=dict(meta or {}))

    @classmethod
    def concat(cls, tables: list["GainTable"], vis_cal: str | None = None,
               npar: int | None = None) -> "GainTable":
        tables = [t for t in tables if t is not None]
        if not tables:
            if vis_cal is None or npar is None:
                raise ValueError("concat of no tables needs vis_cal and npar")
            return cls.empty(vis_cal, npar)
        first = tables[0]
        kw = {name: np.concatenate([getattr(t, name) for t in tables]) for name in _ROW_ARRAYS}
        out = cls(vis_cal=first.vis_cal, ms_name=first.ms_name, meta=dict(first.meta), **kw)
        return out.sorted()

    def select(self, mask: np.ndarray) -> "GainTable":
        kw = {name: getattr(self, name)[mask] for name in _ROW_ARRAYS}
        return replace(self, **kw)

    def sorted(self) -> "GainTable":
        """Rows in CASA's order: time, field, spw, antenna."""
        order = np.lexsort((self.antenna1, self.spw_id, self.field_id, self.time))
        return self.select(order)

    def copy(self) -> "GainTable":
        kw = {name: getattr(self, name).copy() for name in _ROW_ARRAYS}
        return replace(self, meta=dict(self.meta), **kw)

    @property
    def amplitude(self) -> np.ndarray:
        return np.abs(self.cparam)

    def __eq__(self, other: object) -> bool:  # arrays compare element-wise
        if not isinstance(other, GainTable):
            return NotImplemented
        if self.vis_cal != other.vis_cal:
            return False
        return all(_array_equal(getattr(self, n), getattr(other, n)) for n in _ROW_ARRAYS)


def _array_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Element-wise equality where NaN equals NaN (unwritten CASA cells read as NaN)."""
    nan_ok = np.issubdtype(np.asarray(a).dtype, np.inexact)
    return bool(np.array_equal(a, b, equal_nan=nan_ok))


def _check_fields() -> None:  # keep _ROW_ARRAYS in step with the dataclass
    names = {f.name for f in fields(GainTable)}
    assert set(_ROW_ARRAYS) <= names


_check_fields()
