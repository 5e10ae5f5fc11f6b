"""QA scores (spec §10) and regression keys (spec §14) on numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from fluxflow.errors import InsufficientDataWarning
from fluxflow.models import CatalogueRow
from fluxflow.transfer import (
    FluxMeasurement,
    amp_time_score,
    amp_time_series,
    amp_time_spw_candidates,
    amp_time_variation,
    external_catalogue,
    linear_score,
    list_unity_message,
    regression_keys,
    score_amp_time_variation,
    score_derived_fluxes_snr,
    score_gfluxscale_k_spw,
    score_missing_derived_fluxes,
    select_reference_spw,
    snr_from_measurements,
    stage_score,
)

VIS = "uid___A002_X1.ms"


def fm(field, spw, i, err, name="J1"):
    return FluxMeasurement(field, name, spw, i, err)


def test_linear_score_clips_and_interpolates():
    assert linear_score(20.0, 5.0, 26.25, 0.66, 1.0) == pytest.approx(0.90)  # spec's worked number
    assert linear_score(3.0, 5.0, 26.25, 0.66, 1.0) == 0.66
    assert linear_score(100.0, 5.0, 26.25, 0.66, 1.0) == 1.0
    assert linear_score(0.5, 1.0, 0.0, 0.0, 1.0) == pytest.approx(0.5)  # x1 > x2 is fine


@pytest.mark.parametrize("expected, meas, score, text", [
    (0, [fm(1, 0, 1.0, 0.1)], 0.0, "No secondary calibrators for " + VIS),
    (2, [fm(1, 0, 0.0, 0.1), fm(1, 1, 1.0, 0.0)], 0.0, "No derived fluxes for " + VIS),
    (2, [fm(1, 0, 1.0, 0.1), fm(1, 1, 1.0, 0.1)], 1.0, "All expected derived fluxes present for " + VIS),
    (4, [fm(1, s, 1.0, 0.1) for s in range(3)], 0.75, f"Missing derived fluxes for {VIS} 3/4"),
    (1, [fm(1, s, 1.0, 0.1) for s in range(2)], 0.0, f"Extra derived fluxes for {VIS} 2/1"),
])
def test_missing_derived_fluxes(expected, meas, score, text):
    s = score_missing_derived_fluxes(expected, meas, vis=VIS)
    assert s.score == pytest.approx(score) and s.metric_value == s.score
    assert s.message == text and s.metric_name == "score_missing_derived_fluxes"


def test_derived_flux_snr_scores():
    low = [fm(2, 1, 20.0, 1.0), fm(2, 0, 30.0, 1.0), fm(10, 3, 5.0, 1.0), fm(1, 0, -1.0, 1.0)]
    s = score_derived_fluxes_snr({"2": low[:2], "10": low[2:]}, vis=VIS)
    # snr 20 -> 0.90, 30 -> 1.0, 5 -> 0.66; the negative flux is not counted
    assert s.score == pytest.approx((0.90 + 1.0 + 0.66) / 3)
    assert s.metric_value == pytest.approx(5.0)
    assert s.message == (f"For {VIS}, the fractional uncertainty in the derived scaling factor is large "
                         f"(> 3.8%) for field 10, SpW(s) 3; field 2, SpW(s) 1. The calibrator may be too faint.")
    good = score_derived_fluxes_snr([fm(1, 0, 30.0, 1.0)], vis=VIS)
    assert good.score == 1.0 and good.message == f"No low SNR derived fluxes for {VIS}"
    none = score_derived_fluxes_snr([], vis=VIS)
    assert none.score == 0.0 and none.metric_value is None


def test_stage_score_is_the_minimum():
    scores = [score_missing_derived_fluxes(2, [fm(1, 0, 1.0, 0.1)]), score_derived_fluxes_snr([fm(1, 0, 9, 1)])]
    assert stage_score(scores) == pytest.approx(min(0.5, linear_score(9.0, 5.0, 26.25, 0.66, 1.0)))
    assert stage_score([]) is None


# -- spw-spw consistency ---------------------------------------------------------------------------

BW = {0: 1.875e9, 1: 1.875e9, 2: 1.875e9, 3: 58.6e6}
SNR = {0: 50.0, 1: 80.0, 2: 60.0, 3: 200.0}  # spw 3 has the highest SNR but is narrow
CAT = {(1, 0): 1.0, (1, 1): 0.95, (1, 2): 0.9, (1, 3): 0.85}
CALVIS = [fm(1, 0, 1.05, 0.01), fm(1, 1, 0.95, 0.01), fm(1, 2, 0.765, 0.01), fm(1, 3, 1.105, 0.01)]


def test_k_spw_scores_relative_to_the_widest_highest_snr_spw():
    scores = score_gfluxscale_k_spw(CALVIS, CAT, SNR, BW, vis=VIS, field_intents={1: {"PHASE"}})
    # r = 1.05, 1.0 (reference spw 1), 0.85, 1.3 -> K = 1.05, 0.85, 1.3
    assert [sorted(s.applies_to["spw"]) for s in scores] == [[0], [2], [3]]
    np.testing.assert_allclose([s.metric_value for s in scores], [1.05, 0.85, 1.3], rtol=1e-12)
    assert [s.score for s in scores] == [1.0, 0.75, 0.5]
    assert all(s.applies_to["field"] == {1} for s in scores)
    assert "spw 2 differs by 15% from that of the highest-SNR spw 1" in scores[1].message
    assert "(PHASE)" in scores[1].message


def test_reference_spw_falls_back_to_median_bandwidth():
    assert select_reference_spw([0, 1, 2, 3], SNR, BW) == 1
    narrow = {0: 0.1e9, 1: 0.2e9, 2: 0.3e9}
    assert select_reference_spw([0, 1, 2], {0: 90.0, 1: 40.0, 2: 30.0}, narrow) == 1  # spw 0 < median
    assert select_reference_spw([0, 1], {0: 5.0, 1: 5.0}, {0: 2e9, 1: 2e9}) == 0  # ties: lowest id
    assert select_reference_spw([], SNR, BW) is None


def test_k_spw_skips_fields_without_catalogue():
    no_ref_cat = {k: v for k, v in CAT.items() if k != (1, 1)}
    with pytest.warns(InsufficientDataWarning, match="highest-SNR spw 1"):
        assert score_gfluxscale_k_spw(CALVIS, no_ref_cat, SNR, BW, vis=VIS) == []
    no_other = {k: v for k, v in CAT.items() if k != (1, 2)}
    assert score_gfluxscale_k_spw(CALVIS, no_other, SNR, BW, vis=VIS) == []
    two_fields = CALVIS + [fm(4, 0, 2.0, 0.1, "J4"), fm(4, 1, 2.2, 0.1, "J4")]
    cat = dict(CAT) | {(4, 0): 2.0, (4, 1): 2.0}
    scores = score_gfluxscale_k_spw(two_fields, no_other | {(4, 0): 2.0, (4, 1): 2.0}, SNR, BW, vis=VIS)
    assert [(sorted(s.applies_to["field"]), s.metric_value) for s in scores] == [([4], pytest.approx(1 / 1.1))]
    assert len(score_gfluxscale_k_spw(two_fields, cat, SNR, BW, vis=VIS)) == 4


def test_k_spw_needs_snr_for_every_measured_spw():
    with pytest.warns(InsufficientDataWarning, match="no SNR"):
        assert score_gfluxscale_k_spw(CALVIS, CAT, {0: 1.0, 1: 2.0}, BW, vis=VIS) == []


def test_k_spw_candidate_restriction():
    # reference among spws 0 and 2 only: spw 2 (SNR 60), r = 0.85
    scores = score_gfluxscale_k_spw(CALVIS, CAT, SNR, BW, candidate_spws={1: [0, 2]})
    assert [sorted(s.applies_to["spw"]) for s in scores] == [[0], [1], [3]]
    np.testing.assert_allclose([s.metric_value for s in scores], [1.05 / 0.85, 1.0 / 0.85, 1.3 / 0.85])


def test_snr_from_measurements_and_external_catalogue():
    assert snr_from_measurements([fm(3, 0, 2.0, 0.5), fm(3, 1, 1.0, 0.0), fm(3, 2, 0.0, 1.0)]) == \
        {0: 4.0, 1: float("inf")}
    rows = [CatalogueRow("a.ms", 1, 0, 1.5, origin="DB"), CatalogueRow("a.ms", 1, 1, 1.4, origin="N/A"),
            CatalogueRow("a.ms", 2, 0, 0.7, origin="Source.xml"), CatalogueRow("a.ms", 2, 1, 0.6, origin=None),
            CatalogueRow("a.ms", 3, 0, 0.5, origin="analysisUtils")]
    assert external_catalogue(rows) == {(1, 0): 1.5, (2, 0): 0.7, (3, 0): 0.5}


# -- amplitude vs time -----------------------------------------------------------------------------

@pytest.mark.parametrize("ampvar, expected", [
    (0.0, 1.0), (0.0325, 0.915), (0.13, 0.66), (0.195, 0.5), (0.26, 0.34), (0.52, 0.34)])
def test_amp_time_score(ampvar, expected):
    assert amp_time_score(ampvar) == pytest.approx(expected)


def test_amp_time_variation_uses_nearest_percentiles():
    assert amp_time_variation([8.0, 9.0, 10.0, 11.0, 12.0]) == pytest.approx(0.2)  # (11-9)/10
    assert amp_time_variation([1.0] * 5) == 0.0
    # 7 values: P80 -> index round(4.8)=5, P20 -> round(1.2)=1 of the sorted list
    assert amp_time_variation([7, 1, 6, 2, 5, 3, 4]) == pytest.approx((6 - 2) / 4)
    with pytest.raises(ValueError, match="median"):
        amp_time_variation([0.0, 0.0, 0.0])


def test_amp_time_series_averages_valid_entries_per_time():
    vis = np.array([[1, 2], [2, 4], [3 + 4j, 6j]])
    flag = np.array([[False, False], [True, False], [False, False]])
    np.testing.assert_allclose(amp_time_series(vis, flag, np.array([100.0, 100.0, 110.0])), [7 / 3, 5.5])


def test_amp_time_spw_candidates():
    info = [("Combined (17, 19)", 150.0), ("17", 35.0), ("19", 55.0), ("21", None), ("x", 99.0)]
    assert amp_time_spw_candidates(info) == [19, 17]
    d = {"Combined (17, 19, 21, 23)": 449.7, "17": 274.8, "19": 299.1, "21": 0, "23": 192.9, "29": None}
    assert amp_time_spw_candidates(d) == [19, 17, 23, 21]


def test_amp_time_variation_score_tries_spws_in_snr_order():
    series = {19: np.zeros(4), 17: np.array([8.0, 12.0, 9.0, 11.0, 10.0])}
    s = score_amp_time_variation(series, [19, 17], vis="uid.ms", field_id=3, field_name="J0000-0000")
    assert s.metric_value == pytest.approx(20.0) and s.metric_units == "%"
    assert s.score == pytest.approx(0.66 - 0.32 * (0.2 - 0.13) / 0.13)
    assert s.message == ("uid.ms: Based on the SPW with the highest S/N (spw=17), the Amplitude vs. time "
                         "spread for the flux calibrator J0000-0000 is 20.0% over the scan")
    assert s.applies_to == {"vis": {"uid.ms"}, "field": {3}, "spw": {17}}
    f = score_amp_time_variation({}, [19], vis="uid.ms", field_id=3, field_name="J0000-0000")
    assert (f.score, f.metric_value) == (0.9, "N/A")
    assert f.message == ("uid.ms: the Amplitude vs. time spread for the flux calibrator J0000-0000 "
                         "could not be calculated")
    assert "spw" not in f.applies_to


# -- regression keys -------------------------------------------------------------------------------

def test_regression_keys():
    ms = "/data/uid___A002_Xc46ab2_X15ae_repSPW_spw16_17_small.ms"
    meas = {"0": [FluxMeasurement(0, "J1", 0, 2.2542400978094923, 0.01)]}
    scores = [score_missing_derived_fluxes(1, meas, vis="x.ms"),
              score_amp_time_variation({}, [], vis="x.ms", field_id=3, field_name="F")]
    scores += score_gfluxscale_k_spw(CALVIS[:2], CAT, SNR, BW)
    lines = regression_keys(ms, scores, meas, stage=16)
    p = "s16.hifa_gfluxscale.uid___A002_Xc46ab2_X15ae_repSPW_spw16_17_small"
    assert lines[0] == f"{p}.field_0.spw_0.I=2.2542400978094923"
    assert f"{p}.qa.metric.score_missing_derived_fluxes=1.0" in lines
    assert f"{p}.qa.score.score_missing_derived_fluxes=1.0" in lines
    assert f"{p}.field_3.qa.metric.score_gfluxscale_amp_time_variation=N/A" in lines
    assert f"{p}.field_3.qa.score.score_gfluxscale_amp_time_variation=0.9" in lines
    assert f"{p}.field_1.spw_0.qa.metric.score_gfluxscale_k_spw=1.05" in lines
    assert len(lines) == 1 + 2 * 3
    assert regression_keys("a.ms", [], [FluxMeasurement(2, "J", 5, 1.5, 0.1)])[0] == \
        "hifa_gfluxscale.a.field_2.spw_5.I=1.5"


def test_list_unity_message():
    assert list_unity_message(["a.ms"]) == "No missing derived fluxes in a.ms"
    assert list_unity_message(["a.ms", "b.ms", "c.ms"]) == "No missing derived fluxes in a.ms, b.ms or c.ms"
