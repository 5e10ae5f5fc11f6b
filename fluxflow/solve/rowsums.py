"""Per-row channel sums: the whole of a (row, chan, corr) selection that fluxflow's solves use.

fluxflow's gains are G or T, constant over channels (spec §9 step 3), and every quantity
solve_field derives from a selection is linear in the channel axis:

* gaincal's per-row sums Σ_chan w|M|² and Σ_chan w·V·conj(M) over usable samples (unflagged,
  w > 0, M ≠ 0, finite) — :func:`fluxflow.solve.gaincal.solve_gains` forms exactly these before
  it averages over time and baselines;
* the unflagged channel sum Σ_chan V and count (the channel average of spec §8 step 3 and the
  amplitude-vs-time series of §10.4);
* the mean weight over channels (§8 step 2);
* Σ_chan |M| (the model curve of the report's amplitude-vs-uv plot).

So each chunk of a selection is reduced to these (row, corr) sums as soon as it is read, and the
solvers run on one-channel "cubes" built from them (:meth:`RowSums.solver_inputs`):
V̄ = Σ wVM* / Σ w|M|², M = 1 and weight Σ w|M|² give gaincal the same sums, so the gains are the
same to float rounding. Peak memory per solve task is then one chunk, not the selection.

Gains applied to these sums must not depend on channel; tables that do (bandpass, Tsys, K)
are applied to each chunk before it is reduced (fluxflow.tasks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RowSums", "reduce_rows"]


@dataclass
class RowSums:
    """Channel sums per (row, corr) of one selection (module docstring); ``nchan`` channels."""

    sw: np.ndarray  # float64 Σ w|M|² over usable samples
    sv: np.ndarray  # complex128 Σ w·V·conj(M) over usable samples
    s1: np.ndarray  # complex128 Σ V over unflagged channels
    n: np.ndarray  # int64 unflagged channel count
    wmean: np.ndarray  # float64 mean weight over all channels
    mabs: np.ndarray  # float64 Σ |M| over all channels
    nchan: int

    @property
    def nrow(self) -> int:
        return int(self.sw.shape[0])

    @classmethod
    def concat(cls, parts: list["RowSums"], ncorr: int, nchan: int) -> "RowSums":
        if not parts:
            z = np.zeros((0, ncorr))
            return cls(z, z.astype(np.complex128), z.astype(np.complex128), z.astype(np.int64), z, z, nchan)
        cat = {k: np.concatenate([getattr(p, k) for p in parts]) for k in ("sw", "sv", "s1", "n", "wmean", "mabs")}
        return cls(nchan=nchan, **cat)

    def solver_inputs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(vis, model, flag, weight) one-channel cubes (row, 1, corr) giving gaincal the same sums."""
        sw = self.sw
        vis = np.divide(self.sv, sw, out=np.zeros_like(self.sv), where=sw > 0)[:, None, :]
        return vis, np.ones_like(vis), (sw <= 0)[:, None, :], sw[:, None, :]

    def channel_mean(self) -> tuple[np.ndarray, np.ndarray]:
        """(vis, flag) (row, 1, corr): mean of the unflagged channels; flagged where none is."""
        n = self.n
        v = np.divide(self.s1, n, out=np.zeros_like(self.s1), where=n > 0)[:, None, :]
        return v, (n == 0)[:, None, :]

    def model_mean(self) -> np.ndarray:
        """(row, 1, corr) mean |M| over channels."""
        return (self.mabs / max(self.nchan, 1))[:, None, :]


def reduce_rows(vis: np.ndarray, flag: np.ndarray, weight: np.ndarray, model: np.ndarray) -> RowSums:
    """Reduce one chunk to :class:`RowSums`.

    ``vis``, ``flag``: (row, chan, corr); ``weight``: (row, corr) (WEIGHT) or (row, chan, corr);
    ``model``: (chan, corr) when it is the same on every row (point source at the phase centre,
    unit model), else (row, chan, corr). ``vis`` may be overwritten (flagged samples zeroed).
    """
    vis = np.asarray(vis)
    flag = np.asarray(flag, dtype=bool)
    weight = np.asarray(weight)
    model = np.asarray(model)
    nrow, nchan, ncorr = vis.shape
    if flag.shape != vis.shape:
        raise ValueError(f"reduce_rows: flag {flag.shape} must be shaped like vis {vis.shape}")
    if weight.shape not in ((nrow, ncorr), vis.shape):
        raise ValueError(f"reduce_rows: weight {weight.shape} must be (row, corr) or like vis {vis.shape}")
    if model.shape not in ((nchan, ncorr), vis.shape):
        raise ValueError(f"reduce_rows: model {model.shape} must be (chan, corr) or like vis {vis.shape}")
    if model.ndim == 2 and weight.ndim == 2 and np.isfinite(model).all() and np.isfinite(vis).all():
        return _reduce_shared_model(vis, flag, weight, model)
    return _reduce_cubes(vis, flag, weight, model)


def _stokes_spectrum(model: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(spectrum (chan,), corr mask) when `model` is one real spectrum on some correlations and 0
    on the others (a Stokes-I point or unit model: parallel hands S(ν), cross hands 0)."""
    if np.any(model.imag != 0):
        return None
    on = np.any(model != 0, axis=0)
    if not on.any():
        return np.zeros(model.shape[0]), on
    spec = model.real[:, np.argmax(on)]
    if not np.all(model.real[:, on] == spec[:, None]):
        return None
    return spec.astype(np.float64), on


def _reduce_shared_model(vis, flag, weight, model) -> RowSums:
    """Row-independent model, per-row weights, finite data: channel sums as small matrix products.

    For a Stokes-I model S(ν) every sum is a product of the chunk with a (2, chan) matrix of
    channel weights — [1, S] for V, [1, S²] for the unflagged mask — one pass over the chunk
    in float32 (as CASA's own channel averaging). numpy runs these stacked 2×chan by chan×k
    products one row at a time, so the result does not depend on the number of threads or on
    memory alignment (tested); other models use einsum in double precision."""
    nrow, nchan, ncorr = vis.shape
    vis = np.ascontiguousarray(vis, dtype=np.complex64)
    if not vis.flags.writeable:
        vis = vis.copy()
    np.copyto(vis, 0, where=flag)
    good = np.logical_not(flag).astype(np.float32)
    stokes = _stokes_spectrum(model)
    if stokes is not None:
        spec, on = stokes
        wv = np.stack([np.ones(nchan), spec]).astype(np.float32)
        wg = np.stack([np.ones(nchan), spec ** 2]).astype(np.float32)
        rv = np.matmul(wv, vis.view(np.float32).reshape(nrow, nchan, 2 * ncorr))  # (row, 2, 2 corr)
        rg = np.matmul(wg, good)  # (row, 2, corr)
        s1 = np.ascontiguousarray(rv[:, 0, :]).view(np.complex64).astype(np.complex128)
        sv = np.ascontiguousarray(rv[:, 1, :]).view(np.complex64).astype(np.complex128) * on
        cnt = rg[:, 0, :].astype(np.float64)
        sm2 = rg[:, 1, :].astype(np.float64) * on
    else:
        m = model.astype(np.complex128)
        s1 = np.einsum("rcp,c->rp", vis, np.ones(nchan, np.complex128))
        sv = np.einsum("rcp,cp->rp", vis, np.conj(m))
        cnt = np.einsum("rcp->rp", good)  # exact: float32 holds integers up to 2**24
        sm2 = np.einsum("rcp,cp->rp", good, m.real ** 2 + m.imag ** 2)
    w = np.asarray(weight, dtype=np.float64)
    w_use = np.where((w > 0) & np.isfinite(w), w, 0.0)
    return RowSums(sw=w_use * sm2, sv=w_use * sv, s1=s1, n=np.rint(cnt).astype(np.int64), wmean=w,
                   mabs=np.broadcast_to(np.abs(model).sum(axis=0, dtype=np.float64), (nrow, ncorr)).copy(),
                   nchan=nchan)


def _reduce_cubes(vis, flag, weight, model) -> RowSums:
    """Any model (UVW-dependent, MODEL_DATA), WEIGHT_SPECTRUM, non-finite samples."""
    nrow, nchan, ncorr = vis.shape
    w = np.asarray(weight, dtype=np.float64)
    wmean = w if w.ndim == 2 else w.mean(axis=1)
    if w.ndim == 2:
        w = w[:, None, :]
    m = np.broadcast_to(model, vis.shape)
    good = ~flag
    usable = good & (w > 0) & (m != 0) & np.isfinite(vis) & np.isfinite(m) & np.isfinite(w)
    with np.errstate(invalid="ignore", over="ignore"):
        sw = np.where(usable, w * (m.real ** 2 + m.imag ** 2), 0.0).sum(axis=1)
        sv = np.where(usable, w * vis * np.conj(m), 0.0).sum(axis=1, dtype=np.complex128)
    s1 = np.where(good, vis, 0).sum(axis=1, dtype=np.complex128)
    mabs = np.abs(m).sum(axis=1, dtype=np.float64)
    return RowSums(sw=sw, sv=sv, s1=s1, n=good.sum(axis=1).astype(np.int64), wmean=np.asarray(wmean, np.float64),
                   mabs=mabs, nchan=nchan)
