"""fluxscale (spec §6): median rule, fd/fderr, refspwmap, several references, errors, fit, scaling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fluxflow.errors import InsufficientDataWarning, SolveError
from fluxflow.gains import GainTable
from fluxflow.transfer import casacore_median, fluxscale, spectral_fit


def make_table(rows: list[tuple], npar: int = 1, vis_cal: str = "T Jones") -> GainTable:
    """rows: (time, field, spw, antenna, amplitudes (npar,), flags (npar,) or bool)."""
    n = len(rows)
    cparam = np.zeros((n, 1, npar), complex)
    flag = np.zeros((n, 1, npar), bool)
    rng = np.random.default_rng(0)
    for i, (_, _, _, _, amps, flg) in enumerate(rows):
        phase = rng.uniform(-np.pi, np.pi, npar)  # amplitudes, not the complex values, matter
        cparam[i, 0, :] = np.asarray(amps, float) * np.exp(1j * phase)
        flag[i, 0, :] = flg
    col = lambda k, dt: np.array([r[k] for r in rows], dtype=dt)  # noqa: E731
    return GainTable(vis_cal=vis_cal, time=col(0, float), interval=np.full(n, 30.0),
                     field_id=col(1, np.int32), spw_id=col(2, np.int32), antenna1=col(3, np.int32),
                     antenna2=np.zeros(n, np.int32), scan=col(1, np.int32) + 1, obs_id=np.zeros(n, np.int32),
                     cparam=cparam.astype(np.complex64).astype(complex), paramerr=np.zeros((n, 1, npar)),
                     flag=flag, snr=np.full((n, 1, npar), 50.0), weight=np.ones((n, 1, npar)))


FREQS = {0: 100e9, 1: 110e9}


# -- casacore median -------------------------------------------------------------------------

def test_median_odd_takes_middle():
    assert casacore_median([3.0, 1.0, 2.0]) == 2.0


def test_median_even_takes_mean_of_middles_for_small_arrays():
    assert casacore_median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert casacore_median([4.0, 1.0, 3.0, 2.0], array_size=100) == 2.5


def test_median_even_takes_lower_middle_for_arrays_over_100():
    assert casacore_median([4.0, 1.0, 3.0, 2.0], array_size=101) == 2.0
    assert casacore_median([5.0, 1.0, 3.0], array_size=500) == 3.0  # odd: unaffected


def test_median_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        casacore_median([])


# -- a 4-antenna T-gain example worked out by hand -----------------------------------------------

def four_antenna_rows() -> list[tuple]:
    ref = {0: [1.0, 1.2], 1: [0.9, 1.1], 2: [2.0, 2.0], 3: [1.0, 1.5]}  # means 1.1, 1.0, 2.0, 1.25
    tr = {0: [0.55], 1: [0.6, 0.4], 2: [1.2], 3: [0.5]}  # means 0.55, 0.5, 1.2, 0.5
    rows = []
    for a, amps in ref.items():
        rows += [(1000.0 + 100 * k, 0, 0, a, [g], False) for k, g in enumerate(amps)]
    for a, amps in tr.items():
        rows += [(2000.0 + 100 * k, 1, 0, a, [g], False) for k, g in enumerate(amps)]
    rows.append((2500.0, 1, 0, 2, [100.0], True))  # flagged outlier: ignored in the means
    rows += [(2000.0, 1, 1, a, [0.7], True) for a in range(4)]  # spw 1: all flagged
    rows += [(1000.0, 0, 1, a, [1.0], False) for a in range(4)]
    return rows


def test_fd_and_fderr_on_four_antennas():
    # ratios 0.55/1.1, 0.5/1.0, 1.2/2.0, 0.5/1.25 = 0.5, 0.5, 0.6, 0.4 -> median 0.5, fd 0.25;
    # sample std sqrt(0.02/3); fderr = 2*std/sqrt(3) = 2*sqrt(0.02)/3.
    res = fluxscale(make_table(four_antenna_rows()), [0], [1], [-1], FREQS, n_ant=4,
                    field_names={0: "FluxCal", 1: "PhaseCal"})
    e = res.entries[(1, 0)]
    assert e.ok and e.numsol == 4 and e.ref_spw == 0
    assert e.ratio == pytest.approx(0.5, rel=1e-6)
    assert e.fd == pytest.approx(0.25, rel=1e-6)
    assert e.fderr == pytest.approx(2 * math.sqrt(0.02) / 3, rel=1e-6)
    assert res.array_size == 4
    bad = res.entries[(1, 1)]
    assert (bad.fd, bad.fderr, bad.numsol) == (-1.0, -1.0, -1) and not bad.ok
    assert "Flux density for PhaseCal in SpW=0 (freq=1e+11 Hz) is: 0.25 +/- 0.0942809 (SNR = 2.65165, N = 4)" \
        in res.log
    assert "Flux density for PhaseCal in SpW=1 is: INSUFFICIENT DATA" in res.log
    [m] = res.measurements()
    assert (m.field_id, m.field_name, m.spw_id, m.origin) == (1, "PhaseCal", 0, "fluxscale")
    assert m.I == e.fd and m.I_err == e.fderr and m.freq == 100e9


def test_scaled_table_divides_transfer_rows_by_the_median_ratio():
    table = make_table(four_antenna_rows())
    res = fluxscale(table, [0], [1], [-1], FREQS, n_ant=4)
    r32 = np.float32(res.entries[(1, 0)].ratio)
    scaled = res.scaled_table
    tr = (table.field_id == 1) & (table.spw_id == 0)
    assert tr.sum() == 6  # includes the flagged outlier row: flagged rows are scaled too
    c = table.cparam[tr].astype(np.complex64)
    np.testing.assert_array_equal(scaled.cparam[tr].real, (c.real / r32).astype(np.float32))
    np.testing.assert_array_equal(scaled.cparam[tr].imag, (c.imag / r32).astype(np.float32))
    untouched = ~tr  # reference rows and the not-scaleOK spw 1 of the transfer field
    np.testing.assert_array_equal(scaled.cparam[untouched], table.cparam[untouched])
    np.testing.assert_array_equal(scaled.flag, table.flag)
    assert table.cparam is not scaled.cparam  # input unchanged


# -- refspwmap -----------------------------------------------------------------------------------

def refspw_rows() -> list[tuple]:
    rows = [(1000.0, 0, 0, a, [g], False) for a, g in enumerate([1.0, 2.0, 4.0])]  # ref in spw 0 only
    rows += [(1000.0, 0, 1, a, [1.0], True) for a in range(3)]  # ref spw 1 fully flagged
    rows += [(2000.0, 1, 0, a, [g], False) for a, g in enumerate([0.5, 1.0, 2.0])]  # ratios 0.5
    rows += [(2000.0, 1, 1, a, [g], False) for a, g in enumerate([0.3, 0.8, 1.2])]  # vs spw 0: .3 .4 .3
    return rows


def test_without_refspwmap_a_flagged_reference_spw_gives_no_result():
    res = fluxscale(make_table(refspw_rows()), [0], [1], [-1], FREQS, n_ant=3)
    assert res.entries[(1, 0)].fd == pytest.approx(0.25)
    assert not res.entries[(1, 1)].ok


@pytest.mark.parametrize("refspwmap", [[0], [0, 0]])
def test_refspwmap_maps_spw1_to_the_reference_spw0(refspwmap):
    res = fluxscale(make_table(refspw_rows()), [0], [1], refspwmap, FREQS, n_ant=3)
    e = res.entries[(1, 1)]
    # ratios 0.3, 0.4, 0.3 -> median 0.3; std = sqrt(((-1/30)^2*2 + (2/30)^2)/2) = 0.057735
    assert e.ref_spw == 0 and e.ratio == pytest.approx(0.3)
    assert e.fd == pytest.approx(0.09)
    assert e.fderr == pytest.approx(2 * math.sqrt(0.02 / 3 / 2) / math.sqrt(2))
    assert any("in SpW=1 (freq=1.1e+11 Hz) (ref SpW=0) is: 0.09 +/-" in line for line in res.log)


def test_refspwmap_list_starting_with_minus_one_is_ignored():
    # CASA only looks at the map when refspwmap[0] > -1
    res = fluxscale(make_table(refspw_rows()), [0], [1], [-1, 0], FREQS, n_ant=3)
    assert not res.entries[(1, 1)].ok


# -- several reference fields --------------------------------------------------------------------

def test_several_references_average_the_ok_ones_per_antenna():
    rows = [(1000.0, 0, 0, a, [g], False) for a, g in enumerate([1.0, 2.0, 4.0])]
    rows += [(1100.0, 2, 0, 0, [3.0], False), (1100.0, 2, 0, 1, [9.0], True), (1100.0, 2, 0, 2, [2.0], False)]
    rows += [(2000.0, 1, 0, a, [g], False) for a, g in enumerate([1.0, 0.8, 1.5])]
    # Mref = (1+3)/2, 2 (ref 2 flagged), (4+2)/2 = 2, 2, 3; ratios 0.5, 0.4, 0.5 -> median 0.5
    with pytest.warns(InsufficientDataWarning, match="reference fields have no solutions available: 5"):
        res = fluxscale(make_table(rows), [0, 2, 5], [1], [-1], FREQS, n_ant=3)
    assert res.reference_fields == [0, 2]
    e = res.entries[(1, 0)]
    assert e.fd == pytest.approx(0.25)
    std = np.std([0.5, 0.4, 0.5], ddof=1)
    assert e.rms == pytest.approx(std) and e.fderr == pytest.approx(2 * std / math.sqrt(2))


def test_g_gains_use_both_parameters_and_the_lower_middle_median_over_100_slots():
    # 60 antennas x 2 parameters = 120 slots > 100: the even median is the lower middle value.
    rows = [(1000.0, 0, 0, a, [1.0, 1.0], [False, False]) for a in range(2)]
    rows += [(2000.0, 1, 0, 0, [0.4, 0.5], [False, False]), (2000.0, 1, 0, 1, [0.6, 0.7], [False, False])]
    res = fluxscale(make_table(rows, npar=2, vis_cal="G Jones"), [0], [1], [-1], FREQS, n_ant=60)
    e = res.entries[(1, 0)]
    assert res.array_size == 120 and e.numsol == 4
    assert e.ratio == pytest.approx(0.5) and e.fd == pytest.approx(0.25)
    res_small = fluxscale(make_table(rows, npar=2, vis_cal="G Jones"), [0], [1], [-1], FREQS, n_ant=50)
    assert res_small.entries[(1, 0)].ratio == pytest.approx(0.55)  # 100 slots: mean of the middles


def test_single_ratio_has_zero_error():
    rows = [(1000.0, 0, 0, 0, [2.0], False), (1000.0, 0, 0, 1, [2.0], False),
            (2000.0, 1, 0, 0, [3.0], False), (2000.0, 1, 0, 1, [3.0], True)]
    res = fluxscale(make_table(rows), [0], [1], [-1], FREQS, n_ant=2)
    e = res.entries[(1, 0)]
    assert e.numsol == 1 and e.fd == pytest.approx(2.25) and e.fderr == 0.0 and e.rms == 0.0
    assert any("(SNR = inf, N = 1)" in line for line in res.log)


# -- bookkeeping and errors ------------------------------------------------------------------------

def test_reference_listed_as_transfer_is_dropped_and_empty_transfer_means_all_others():
    res = fluxscale(make_table(four_antenna_rows()), [0], [0], [-1], FREQS, n_ant=4)
    assert res.transfer_fields == [1]
    assert "Assuming all non-reference fields are transfer fields." in res.log


def test_missing_transfer_field_warns_and_gives_no_result():
    with pytest.warns(InsufficientDataWarning, match="transfer fields have no solutions available: 7"):
        res = fluxscale(make_table(four_antenna_rows()), [0], [1, 7], [-1], FREQS, n_ant=4)
    assert {f for f, _ in res.entries} == {1}


def test_duplicate_timestamp_is_an_error():
    rows = four_antenna_rows() + [(2000.0, 1, 0, 3, [0.5], False)]
    with pytest.raises(SolveError, match="multiple gain solutions in a single timestamp for fieldid=1"):
        fluxscale(make_table(rows), [0], [1], [-1], FREQS, n_ant=4)


def test_missing_reference_is_an_error():
    with pytest.raises(SolveError, match="Cannot find specified reference field"):
        fluxscale(make_table(four_antenna_rows()), [3], [1], [-1], FREQS, n_ant=4)


def test_only_reference_solutions_is_an_error():
    rows = [r for r in four_antenna_rows() if r[1] == 0]
    with pytest.raises(SolveError, match="Cannot find solutions for transfer field"):
        fluxscale(make_table(rows), [0], [1], [-1], FREQS, n_ant=4)


def test_no_scale_factor_is_an_error():
    rows = [r[:5] + (True,) if r[1] == 1 else r for r in four_antenna_rows()]
    with pytest.raises(SolveError, match="No scale factors determined!"):
        fluxscale(make_table(rows), [0], [1], [-1], FREQS, n_ant=4)


def test_empty_table_is_an_error():
    with pytest.raises(SolveError, match="Empty"):
        fluxscale(GainTable.empty("T Jones", 1), [0], [1], [-1], FREQS, n_ant=4)


# -- spectral fit ----------------------------------------------------------------------------------

def test_weighted_fit_matches_numpy_polyfit_with_error_scaling():
    nu = np.array([90e9, 100e9, 110e9, 230e9])
    fd = np.array([1.2, 1.1, 1.0, 0.6])
    err = np.array([0.01, 0.02, 0.015, 0.03])
    x = np.log10(nu) - np.mean(np.log10(nu))
    y = np.log10(fd)
    sig = err / fd
    p, cov = np.polyfit(x, y, 1, w=1 / sig, cov="unscaled")
    chi2 = np.sum(((y - np.polyval(p, x)) / sig) ** 2)
    perr = np.sqrt(np.diag(cov)) * np.sqrt(chi2 / (4 - 2))
    fit = spectral_fit(nu, fd, err, 1)
    assert fit.ok and fit.n_used == 4 and fit.fitorder_used == 1
    np.testing.assert_allclose(fit.spidx, p[::-1], rtol=1e-12)
    np.testing.assert_allclose(fit.spidxerr, perr[::-1], rtol=1e-10)
    np.testing.assert_allclose(fit.covariance, cov[::-1, ::-1], rtol=1e-10)
    assert fit.fit_flux == pytest.approx(10 ** p[1], rel=1e-12)
    assert fit.fit_flux_err == pytest.approx(math.log(10) * 10 ** p[1] * perr[1], rel=1e-10)
    assert fit.ref_freq == pytest.approx(10 ** np.mean(np.log10(nu)), rel=1e-14)
    # a point with zero error is skipped (but still sets the reference frequency)
    fit0 = spectral_fit(np.append(nu, 300e9), np.append(fd, 5.0), np.append(err, 0.0), 1)
    assert fit0.n_used == 4
    assert fit0.ref_freq == pytest.approx(10 ** np.mean(np.log10(np.append(nu, 300e9))))


def test_fit_with_as_many_points_as_coefficients_has_zero_errors():
    fit = spectral_fit(np.array([100e9, 200e9]), np.array([2.0, 1.0]), np.array([0.1, 0.1]))
    assert fit.spidx[1] == pytest.approx(-1.0)  # log2/log2
    assert fit.fit_flux == pytest.approx(math.sqrt(2.0))  # at the geometric mean frequency
    assert np.all(fit.spidxerr == 0) and fit.fit_flux_err == 0.0


def test_single_point_is_not_fitted_and_two_points_with_order_2_fit_order_0():
    one = spectral_fit(np.array([100e9]), np.array([1.5]), np.array([0.1]), 1)
    assert one.fit_flux == 1.5 and one.ref_freq == 100e9 and np.all(one.spidx == 0)
    with pytest.warns(InsufficientDataWarning, match="order 0"):
        two = spectral_fit(np.array([100e9, 200e9]), np.array([2.0, 1.0]), np.array([0.1, 0.05]), 2)
    assert two.fitorder_used == 0 and two.spidx.size == 3
    w = np.array([(2.0 / 0.1) ** 2, (1.0 / 0.05) ** 2])  # weights 1/sigma^2 of log10 fd
    assert two.spidx[0] == pytest.approx(np.sum(w * np.log10([2.0, 1.0])) / np.sum(w))
    assert two.spidx[1] == 0 and two.spidx[2] == 0


def test_fit_with_only_zero_errors_is_marked_not_ok():
    with pytest.warns(InsufficientDataWarning):
        fit = spectral_fit(np.array([100e9, 200e9]), np.array([2.0, 1.0]), np.array([0.0, 0.0]))
    assert not fit.ok and math.isnan(fit.fit_flux)


def test_fluxscale_fits_its_scaleok_spws():
    rows = four_antenna_rows()
    rows += [(2000.0, 1, 1, a, [g], False) for a, g in enumerate([0.4, 0.36, 0.8, 0.6])]  # spw 1 usable
    rows = [r for r in rows if not (r[1] == 1 and r[2] == 1 and r[5] is True)]
    res = fluxscale(make_table(rows), [0], [1], [-1], FREQS, n_ant=4)
    e0, e1 = res.entries[(1, 0)], res.entries[(1, 1)]
    assert e0.ok and e1.ok
    expect = spectral_fit(np.array([100e9, 110e9]), np.array([e0.fd, e1.fd]), np.array([e0.fderr, e1.fderr]))
    np.testing.assert_allclose(res.fits[1].spidx, expect.spidx)
    assert any(line.startswith("Fitted spectrum for 1 with fitorder=1") for line in res.log)
