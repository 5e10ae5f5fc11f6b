"""Calibrator visibility models (spec §7.2, §7.3)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import jv

from fluxflow.models import disk_model, normalised_bandpass_model, point_model, to_correlations, unit_model

UVW = np.array([[0.0, 0.0, 0.0], [30.0, 40.0, 5.0], [-300.0, 400.0, 0.0]])
NU = np.array([99e9, 100e9, 101e9])


def test_point_model_scales_by_channel():
    v = point_model(2.5, -0.7, 100e9)(UVW, NU)
    assert v.shape == (3, 3) and v.dtype == np.complex128
    expected = 2.5 * (NU / 100e9) ** -0.7
    for row in v:
        np.testing.assert_allclose(row, expected, rtol=1e-15)
    assert np.all(v.imag == 0)
    assert v[0, 1] == 2.5  # exactly I at the reference frequency


def test_unit_and_normalised_bandpass_models():
    np.testing.assert_array_equal(unit_model()(UVW, NU), np.ones((3, 3)))
    b = normalised_bandpass_model(1.5, 100e9)(UVW, NU)
    np.testing.assert_allclose(b[:, 1], 1.0)
    np.testing.assert_allclose(b[2], (NU / 100e9) ** 1.5, rtol=1e-15)


def test_disk_model_follows_the_airy_visibility():
    theta = 3.0  # arcsec
    v = disk_model(1.2, 0.0, 100e9, theta)(UVW, NU)
    np.testing.assert_allclose(v[0], 1.2)  # zero spacing: total flux
    q = 50.0 * NU / 299792458.0  # |(30, 40)| = 50 m in wavelengths
    x = np.pi * np.radians(theta / 3600.0) * q
    np.testing.assert_allclose(v[1].real, 1.2 * 2 * jv(1, x) / x, rtol=1e-12)
    # at the first null of J1 (x = 3.8317...) the disk visibility vanishes
    x0 = 3.831705970207512
    b_null = x0 / (np.pi * np.radians(theta / 3600.0)) * 299792458.0 / 100e9
    v0 = disk_model(1.0, 0.0, 100e9, theta)(np.array([[b_null, 0.0, 0.0]]), np.array([100e9]))
    assert abs(v0[0, 0]) < 1e-12
    with_spix = disk_model(1.2, -1.0, 100e9, theta)(UVW, NU)
    np.testing.assert_allclose(with_spix[1], v[1] * (NU / 100e9) ** -1.0, rtol=1e-14)


def test_to_correlations_fills_parallel_hands():
    vals = point_model(2.0, 0.0, 1.0)(UVW[:2], NU[:1])
    out = to_correlations(vals, ["XX", "XY", "YX", "YY"])
    assert out.shape == (2, 1, 4)
    np.testing.assert_array_equal(out[..., 0], 2.0)
    np.testing.assert_array_equal(out[..., 3], 2.0)
    np.testing.assert_array_equal(out[..., 1:3], 0.0)
    assert to_correlations(vals, ["RR", "LL"]).sum() == pytest.approx(8.0)
