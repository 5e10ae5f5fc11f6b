"""MS metadata reading (fluxflow.ms.metadata) and OBS_MODE -> intent mapping (fluxflow.ms.intents).

Expected values are what tests/conftest.py wrote; the intent table is the ALMA pipeline's
(pipeline/domain/state.py, StateALMA / StateALMACycle0), spec §15.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import conftest as c
from fluxflow.errors import UnknownIntentWarning
from fluxflow.ms import obs_mode_to_intents, parse_obs_mode, read_metadata, summary
from fluxflow.ms.intents import ALMA_CYCLE0_END_MJD_SEC
from fluxflow.ms.metadata import is_science_spw


def _read(path, **kw):
    with pytest.warns(UnknownIntentWarning, match="CALIBRATE_NOVEL_MODE#ON_SOURCE") as rec:
        md = read_metadata(path, **kw)
    assert len([w for w in rec if issubclass(w.category, UnknownIntentWarning)]) == 1
    return md


def test_antennas(tiny_ms):
    path, info = tiny_ms
    md = _read(path)
    assert md.antenna_names == c.ANT_NAMES
    assert [a.station for a in md.antennas] == [f"A{i + 1:03d}" for i in range(5)]
    assert [a.id for a in md.antennas] == list(range(5))
    assert [a.diameter for a in md.antennas] == c.ANT_DIAMETERS
    for a in md.antennas:
        np.testing.assert_array_equal(a.position, info["positions"][a.id])
        # positions were generated from these spherical coordinates
        assert a.lon == pytest.approx(info["lon"][a.id], abs=1e-12)
        assert a.lat == pytest.approx(info["lat"][a.id], abs=1e-12)
        assert a.radius == pytest.approx(info["radius"][a.id], abs=1e-6)


def test_spws_polarizations_data_descriptions(tiny_ms):
    path, info = tiny_ms
    md = _read(path)
    assert [s.name for s in md.spws] == c.SPW_NAMES
    assert [s.is_science for s in md.spws] == [True, True, False]
    assert [s.baseband for s in md.spws] == c.SPW_BBC
    assert [s.id for s in md.science_spws] == [0, 1]
    for s in md.spws:
        nchan = info["nchan"][s.id]
        np.testing.assert_array_equal(s.chan_freq, c.SPW_FIRST[s.id] + c.SPW_WIDTH[s.id] * np.arange(nchan))
        np.testing.assert_array_equal(s.chan_width, np.full(nchan, c.SPW_WIDTH[s.id]))
        assert s.ref_frequency == c.SPW_FIRST[s.id]
        assert s.total_bandwidth == abs(c.SPW_WIDTH[s.id]) * nchan
    # spw 1 (LSB, channels 102.0 .. 101.90625 GHz, 31.25 MHz wide): edges 101.890625 .. 102.015625 GHz
    assert md.spws[1].centre_frequency == pytest.approx((101.890625e9 + 102.015625e9) / 2, abs=1.0)
    assert [p.corr_types for p in md.polarizations] == [("XX", "YY")]
    assert [(d.id, d.spw_id, d.pol_id) for d in md.data_descriptions] == [(0, 1, 0), (1, 0, 0), (2, 2, 0)]
    assert md.ddids_for_spw(0) == [1]
    assert md.polarization_for_spw(2).corr_types == ("XX", "YY")


def test_fields(tiny_ms):
    path, info = tiny_ms
    md = _read(path)
    assert [f.name for f in md.fields] == c.FIELD_NAMES
    assert [f.source_id for f in md.fields] == [0, 1, 2]
    for f in md.fields:
        np.testing.assert_array_equal(f.direction, c.FIELD_DIRS[f.id])
    assert [f.ephemeris_id for f in md.fields] == c.FIELD_EPHEM
    assert [f.is_ephemeris for f in md.fields] == [False, True, False]
    assert md.fields[1].ephemeris_path == os.path.abspath(info["ephemeris_path"])
    assert md.fields[0].ephemeris_path is None


def test_states_and_scans(tiny_ms):
    path, info = tiny_ms
    md = _read(path)
    assert md.state_intents == {i: frozenset(v) for i, v in enumerate(c.STATE_INTENTS)}
    assert md.unknown_obs_modes == ("CALIBRATE_NOVEL_MODE#ON_SOURCE",)
    assert [s.number for s in md.scans] == [1, 2, 5, 7]
    expected_intents = {1: {"BANDPASS", "WVR"}, 2: {"AMPLITUDE", "WVR"}, 5: {"PHASE", "WVR"}, 7: {"CHECK"}}
    expected_states = {1: {0}, 2: {1}, 5: {2, 5}, 7: {3}}
    for k, scan in enumerate(md.scans):
        field, states, ddids = c.SCANS[scan.number]
        assert scan.field_ids == {field}
        assert scan.spw_ids == {c.DD_SPW[d] for d in ddids}
        assert scan.intents == expected_intents[scan.number]
        assert scan.state_ids == expected_states[scan.number]
        first_mid = c.T0 + 100.0 * k + c.INTERVAL * 0.5
        last_mid = c.T0 + 100.0 * k + c.INTERVAL * (len(states) - 0.5)
        assert scan.start == pytest.approx(first_mid - c.INTERVAL / 2, abs=1e-6)
        assert scan.end == pytest.approx(last_mid + c.INTERVAL / 2, abs=1e-6)
    assert md.start_time == pytest.approx(c.T0, abs=1e-6)
    assert md.end_time == pytest.approx(c.T0 + 300.0 + 3 * c.INTERVAL, abs=1e-6)
    assert md.nrows == info["nrow"] == 360
    assert md.data_columns == ("DATA",)
    assert md.extra["telescope"] == "ALMA" and md.extra["cycle0"] is False
    assert md.extra["field_intents"] == {0: {"BANDPASS", "WVR", "CHECK"}, 1: {"AMPLITUDE", "WVR"},
                                         2: {"PHASE", "WVR"}}
    # MSMetadata helpers work on what was read
    assert [f.id for f in md.fields_with_intent("PHASE")] == [2]
    assert md.spws_for(0, intents=["BANDPASS"]) == [0, 1]
    assert md.spws_for(0, intents=["CHECK"]) == [0]
    assert md.state_ids_for_intents(["PHASE"]) == [2, 5]


def test_without_scans_and_columns(tiny_ms_factory):
    path, _ = tiny_ms_factory("cols.ms", model_data=True, corrected_data=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        md = read_metadata(path, with_scans=False, warn=False)
    assert md.scans == [] and md.start_time == 0.0
    assert md.data_columns == ("DATA", "CORRECTED_DATA", "MODEL_DATA")
    assert md.unknown_obs_modes == ("CALIBRATE_NOVEL_MODE#ON_SOURCE",)
    assert md.state_intents[6] == {"CALIBRATE_NOVEL_MODE#ON_SOURCE"}


def test_cycle0_flag(tiny_ms_factory):
    path, _ = tiny_ms_factory("cycle0.ms", t0=ALMA_CYCLE0_END_MJD_SEC - 86400.0)
    md = read_metadata(path, warn=False)
    assert md.extra["cycle0"] is True


def test_summary_lists_everything(tiny_ms):
    path, _ = tiny_ms
    text = summary(_read(path))
    for needle in ("Antennas: 5", "DA41", "CM01", "WVR#NOMINAL", "Uranus", "[ephemeris]", "XX YY",
                   "BANDPASS,CHECK,WVR", "AMPLITUDE,WVR", "CALIBRATE_NOVEL_MODE#ON_SOURCE"):
        assert needle in text
    scan_lines = [ln for ln in text.splitlines() if ln.strip().split(" ")[0] in {"1", "2", "5", "7"}
                  and "UTC" not in ln and "2017-" in ln]
    assert len(scan_lines) == 4
    assert "100.054688" in text  # spw 0 centre: 100 GHz + 3.5 x 15.625 MHz


@pytest.mark.parametrize("obs_mode, intents", [
    ("CALIBRATE_BANDPASS#ON_SOURCE,CALIBRATE_WVR#ON_SOURCE", {"BANDPASS", "WVR"}),
    ("CALIBRATE_FLUX#ON_SOURCE", {"AMPLITUDE"}),
    ("CALIBRATE_AMPLI#ON_SOURCE", {"AMPLITUDE"}),
    ("CALIBRATE_PHASE#ON_SOURCE", {"PHASE"}),
    ("CALIBRATE_PHASE#OFF_SOURCE,CALIBRATE_WVR#OFF_SOURCE", set()),
    ("OBSERVE_TARGET#ON_SOURCE", {"TARGET"}),
    ("OBSERVE_TARGET.ON_SOURCE", {"TARGET"}),
    ("OBSERVE_TARGET_ON_SOURCE", {"TARGET"}),
    ("OBSERVE_TARGET#OFF_SOURCE", {"REFERENCE"}),
    ("OBSERVE_CHECK_SOURCE#ON_SOURCE", {"CHECK"}),
    ("CALIBRATE_DELAY#ON_SOURCE", {"CHECK"}),
    ("CALIBRATE_POLARIZATION#ON_SOURCE", {"POLARIZATION"}),
    ("CALIBRATE_POL_ANGLE#ON_SOURCE", {"POLANGLE"}),
    ("CALIBRATE_POL_ANGLE_ON_SOURCE", {"POLANGLE"}),
    ("CALIBRATE_POL_LEAKAGE.ON_SOURCE", {"POLLEAKAGE"}),
    ("CALIBRATE_DIFFGAIN#REFERENCE", {"DIFFGAINREF"}),
    ("CALIBRATE_DIFFGAIN#ON_SOURCE", {"DIFFGAINSRC"}),
    ("CALIBRATE_ATMOSPHERE#HOT,CALIBRATE_WVR#OFF_SOURCE", {"ATMOSPHERE"}),
    ("CALIBRATE_ATMOSPHERE#AMBIENT", {"ATMOSPHERE"}),
    ("CALIBRATE_SIDEBAND_RATIO#OFF_SOURCE", {"SIDEBAND"}),
    ("CALIBRATE_POINTING#ON_SOURCE,CALIBRATE_WVR#ON_SOURCE", {"POINTING", "WVR"}),
    ("CALIBRATE_FOCUS#ON_SOURCE", {"FOCUS"}),
    ("SYSTEM_CONFIGURATION#UNSPECIFIED", {"SYSTEM_CONFIGURATION"}),
    ("UNSPECIFIED#UNSPECIFIED", {"UNSPECIFIED"}),
    (" CALIBRATE_PHASE#ON_SOURCE , OBSERVE_TARGET#ON_SOURCE ", {"PHASE", "TARGET"}),
    ("", set()),
])
def test_obs_mode_mapping(obs_mode, intents):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert obs_mode_to_intents(obs_mode) == frozenset(intents)


def test_unknown_mode_kept_and_warned_once():
    with pytest.warns(UnknownIntentWarning) as rec:
        got = obs_mode_to_intents("CALIBRATE_FOO#ON_SOURCE,CALIBRATE_FOO#ON_SOURCE,CALIBRATE_PHASE#ON_SOURCE")
    assert got == {"CALIBRATE_FOO#ON_SOURCE", "PHASE"}
    assert len(rec) == 1 and "CALIBRATE_FOO#ON_SOURCE" in str(rec[0].message)
    assert parse_obs_mode("BAR.X,CALIBRATE_FOO#ON_SOURCE") == (
        frozenset({"BAR.X", "CALIBRATE_FOO#ON_SOURCE"}), ("BAR.X", "CALIBRATE_FOO#ON_SOURCE"))


def test_cycle0_drops_phase_next_to_bandpass_or_amplitude():
    mode = "CALIBRATE_BANDPASS#ON_SOURCE,CALIBRATE_PHASE#ON_SOURCE"
    assert obs_mode_to_intents(mode) == {"BANDPASS", "PHASE"}
    assert obs_mode_to_intents(mode, cycle0=True) == {"BANDPASS"}
    assert obs_mode_to_intents("CALIBRATE_FLUX#ON_SOURCE,CALIBRATE_PHASE#ON_SOURCE", cycle0=True) == {"AMPLITUDE"}
    assert obs_mode_to_intents("CALIBRATE_PHASE#ON_SOURCE,CALIBRATE_WVR#ON_SOURCE", cycle0=True) == {"PHASE", "WVR"}


@pytest.mark.parametrize("name, nchan, science", [
    ("ALMA_RB_03#BB_1#SW-01#FULL_RES", 128, True),
    ("ALMA_RB_03#BB_1#SW-01#CH_AVG", 1, False),
    ("ALMA_RB_03#BB_1#SW-01#FULL_RES", 1, False),
    ("WVR#NOMINAL", 4, False),
    ("BB_1#SQLD", 1, False),
    ("ALMA_RB_06#BB_2#SQLD", 2, False),
    ("", 64, True),
])
def test_is_science_spw(name, nchan, science):
    assert is_science_spw(name, nchan) is science
