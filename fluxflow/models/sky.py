"""Visibility models of calibrators (spec §7.2, §7.3).

Each factory returns ``model(uvw, chan_freq) -> (nrow, nchan) complex``: the Stokes-I visibility
in Jy of a source at the phase centre, for baselines ``uvw`` (nrow, 3) in metres and channel
frequencies ``chan_freq`` (nchan,) in Hz. Spectra follow setjy's ``scalebychan=True``:
S(ν) = I·(ν/ν_ref)^spix per channel. :func:`to_correlations` spreads the Stokes-I value on the
parallel hands (XX = YY = I, RR = LL = I; cross hands 0), as setjy does for Q = U = V = 0.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy.special import j1

#: Speed of light in m/s (exact); used for baseline lengths in wavelengths.
C_LIGHT = 299792458.0
ARCSEC_TO_RAD = np.pi / (180.0 * 3600.0)

ModelFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _spectrum(I: float, spix: float, ref_freq: float, chan_freq: np.ndarray) -> np.ndarray:  # noqa: E741
    nu = np.asarray(chan_freq, dtype=np.float64)
    if spix == 0.0:
        return np.full(nu.shape, float(I))
    return float(I) * (nu / float(ref_freq)) ** float(spix)


def point_model(I: float, spix: float, ref_freq: float) -> ModelFn:  # noqa: E741
    """Point source at the phase centre: V = I·(ν/ν_ref)^spix on every baseline."""
    def model(uvw: np.ndarray, chan_freq: np.ndarray) -> np.ndarray:
        nrow = np.asarray(uvw).shape[0]
        s = _spectrum(I, spix, ref_freq, chan_freq)
        return np.broadcast_to(s.astype(np.complex128), (nrow, s.size)).copy()

    model.uvw_independent = True  # writers may build the cells once and skip reading UVW
    return model


def disk_model(I: float, spix: float, ref_freq: float, diameter_arcsec: float) -> ModelFn:  # noqa: E741
    """Circular uniform disk: V = S(ν)·2·J1(x)/x, x = π·θ·q, q = |(u, v)|·ν/c (θ in radians).

    The limit x → 0 is 1. CASA's solar-system models are elliptical disks (spec §7.2); with
    equal axes they reduce to this one.
    """
    theta = float(diameter_arcsec) * ARCSEC_TO_RAD

    def model(uvw: np.ndarray, chan_freq: np.ndarray) -> np.ndarray:
        uvw = np.asarray(uvw, dtype=np.float64)
        nu = np.asarray(chan_freq, dtype=np.float64)
        q = np.hypot(uvw[:, 0], uvw[:, 1])[:, None] * nu[None, :] / C_LIGHT
        x = np.pi * theta * q
        safe = np.where(x == 0.0, 1.0, x)
        shape = np.where(x == 0.0, 1.0, 2.0 * j1(safe) / safe)
        return (shape * _spectrum(I, spix, ref_freq, nu)[None, :]).astype(np.complex128)

    return model


def unit_model() -> ModelFn:
    """1 Jy point source (the model of calibrators without one, spec §3 preconditions)."""
    return point_model(1.0, 0.0, 1.0)


def normalised_bandpass_model(spix: float, ref_freq: float) -> ModelFn:
    """1 Jy at ν_ref (the spw centre) with the catalogue spectral index (spec §7.3)."""
    return point_model(1.0, spix, ref_freq)


def to_correlations(values: np.ndarray, corr_types: Sequence[str]) -> np.ndarray:
    """(nrow, nchan) Stokes-I model -> (nrow, nchan, ncorr): parallel hands = I, cross hands 0.

    `corr_types` are correlation names as in :class:`fluxflow.ms.types.Polarization`.
    """
    out = np.zeros(values.shape + (len(corr_types),), dtype=np.complex128)
    for k, name in enumerate(corr_types):
        if name in ("XX", "YY", "RR", "LL", "I"):
            out[..., k] = values
    return out
