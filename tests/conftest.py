"""Shared fixtures: a tiny MeasurementSet written with python-casacore (no simulator needed).

`tiny_ms` layout (every value is returned in the info dict so tests compare against what was
written, not against what fluxflow reads):

* 5 antennas on ALMA-like ITRF positions generated from chosen (lon, lat, radius);
* spw 0 "ALMA_RB_03#BB_1#SW-01#FULL_RES" 8 chans (USB), spw 1 "...BB_2..." 4 chans (LSB,
  negative widths), spw 2 "WVR#NOMINAL" 4 chans; DATA_DESCRIPTION deliberately permuted:
  ddid 0 -> spw 1, ddid 1 -> spw 0, ddid 2 -> spw 2; one polarization XX,YY;
* 3 fields: 0 J1924-2914, 1 Uranus (EPHEMERIS_ID 0 with FIELD/EPHEM0_Uranus_58000.0.tab), 2 J1751+0939;
* 7 STATE rows with ALMA OBS_MODE strings (one dotted, one unknown, two unused);
* scans 1, 2, 5, 7 (see SCANS), 3 integrations each, all baselines incl. autocorrelations,
  written in a shuffled row order.
"""

from __future__ import annotations

import os
import struct

import casacore.tables as ct
import numpy as np
import pytest

ANT_NAMES = ["DA41", "DA42", "DV03", "DV05", "CM01"]
ANT_DIAMETERS = [12.0, 12.0, 12.0, 12.0, 7.0]
ANT_LON = np.radians(-67.7552) + 1e-5 * np.arange(5)
ANT_LAT = np.radians(-23.0293) - 7e-6 * np.arange(5)
ANT_RADIUS = 6_375_000.0 + 15.0 * np.arange(5)

SPW_NAMES = ["ALMA_RB_03#BB_1#SW-01#FULL_RES", "ALMA_RB_03#BB_2#SW-01#FULL_RES", "WVR#NOMINAL"]
SPW_FIRST = [100.0e9, 102.0e9, 183.31e9]
SPW_WIDTH = [15.625e6, -31.25e6, 1.5e9]
SPW_BBC = [1, 2, 0]
DD_SPW = [1, 0, 2]  # DATA_DESCRIPTION row -> spw

FIELD_NAMES = ["J1924-2914", "Uranus", "J1751+0939"]
FIELD_DIRS = np.radians([[291.2127, -29.2417], [45.1, 16.2], [267.8867, 9.6502]])
FIELD_EPHEM = [-1, 0, -1]

OBS_MODES = [
    "CALIBRATE_BANDPASS#ON_SOURCE,CALIBRATE_WVR#ON_SOURCE",
    "CALIBRATE_FLUX#ON_SOURCE,CALIBRATE_WVR#ON_SOURCE",
    "CALIBRATE_PHASE#ON_SOURCE,CALIBRATE_WVR#ON_SOURCE",
    "OBSERVE_CHECK_SOURCE.ON_SOURCE",
    "CALIBRATE_ATMOSPHERE#OFF_SOURCE,CALIBRATE_WVR#OFF_SOURCE",
    "CALIBRATE_PHASE#ON_SOURCE,CALIBRATE_WVR#ON_SOURCE",
    "CALIBRATE_NOVEL_MODE#ON_SOURCE",
]
STATE_INTENTS = [
    {"BANDPASS", "WVR"}, {"AMPLITUDE", "WVR"}, {"PHASE", "WVR"}, {"CHECK"}, {"ATMOSPHERE"},
    {"PHASE", "WVR"}, {"CALIBRATE_NOVEL_MODE#ON_SOURCE"},
]

# scan number -> (field, per-integration state ids, ddids)
SCANS = {
    1: (0, [0, 0, 0], [0, 1, 2]),
    2: (1, [1, 1, 1], [0, 1]),
    5: (2, [2, 2, 5], [0, 1]),
    7: (0, [3, 3, 3], [1]),
}
T0 = 5.0e9  # MJD seconds (2017)
INTERVAL = 6.048


def spw_freqs(spw: int, nchan: int) -> np.ndarray:
    return SPW_FIRST[spw] + SPW_WIDTH[spw] * np.arange(nchan)


def antenna_positions() -> np.ndarray:
    return np.stack([ANT_RADIUS * np.cos(ANT_LAT) * np.cos(ANT_LON),
                     ANT_RADIUS * np.cos(ANT_LAT) * np.sin(ANT_LON),
                     ANT_RADIUS * np.sin(ANT_LAT)], axis=1)


def build_tiny_ms(path: str, *, nchan: tuple[int, int, int] = (8, 4, 4), weight_spectrum: bool = False,
                  model_data: bool = False, corrected_data: bool = False, fixed_shape: bool = False,
                  data_dm: str | None = None, t0: float = T0, seed: int = 1) -> dict:
    """Write the tiny MS at `path`; return everything written (see module docstring)."""
    rng = np.random.default_rng(seed)
    path = str(path)
    ncorr = 2
    cols = []
    if fixed_shape:
        assert len(set(nchan)) == 1
        shape = [nchan[0], ncorr]
        cols.append(ct.makearrcoldesc("DATA", 0j, shape=shape, valuetype="complex"))
    else:
        kw = {"datamanagertype": data_dm, "datamanagergroup": "DataGroup"} if data_dm else {}
        cols.append(ct.makearrcoldesc("DATA", 0j, ndim=2, valuetype="complex", **kw))
    if corrected_data:
        cols.append(ct.makearrcoldesc("CORRECTED_DATA", 0j, ndim=2, valuetype="complex"))
    if model_data:
        cols.append(ct.makearrcoldesc("MODEL_DATA", 0j, ndim=2, valuetype="complex"))
    if weight_spectrum:
        cols.append(ct.makearrcoldesc("WEIGHT_SPECTRUM", 0.0, ndim=2, valuetype="float"))
    ms = ct.default_ms(path, ct.maketabdesc(cols))
    ms.close()

    pos = antenna_positions()
    with ct.table(f"{path}/ANTENNA", readonly=False, ack=False) as t:
        t.addrows(5)
        t.putcol("NAME", ANT_NAMES)
        t.putcol("STATION", [f"A{i + 1:03d}" for i in range(5)])
        t.putcol("TYPE", ["GROUND-BASED"] * 5)
        t.putcol("MOUNT", ["ALT-AZ"] * 5)
        t.putcol("DISH_DIAMETER", np.array(ANT_DIAMETERS))
        t.putcol("POSITION", pos)
        t.putcol("OFFSET", np.zeros((5, 3)))

    with ct.table(f"{path}/SPECTRAL_WINDOW", readonly=False, ack=False) as t:
        t.addcols(ct.maketabdesc([ct.makescacoldesc("BBC_NO", 0)]))
        t.addrows(3)
        for i in range(3):
            f = spw_freqs(i, nchan[i])
            t.putcell("CHAN_FREQ", i, f)
            t.putcell("CHAN_WIDTH", i, np.full(nchan[i], SPW_WIDTH[i]))
            t.putcell("EFFECTIVE_BW", i, np.full(nchan[i], abs(SPW_WIDTH[i])))
            t.putcell("RESOLUTION", i, np.full(nchan[i], abs(SPW_WIDTH[i])))
            t.putcell("NUM_CHAN", i, nchan[i])
            t.putcell("TOTAL_BANDWIDTH", i, abs(SPW_WIDTH[i]) * nchan[i])
            t.putcell("REF_FREQUENCY", i, f[0])
            t.putcell("NAME", i, SPW_NAMES[i])
            t.putcell("MEAS_FREQ_REF", i, 5)
            t.putcell("NET_SIDEBAND", i, 1 if SPW_WIDTH[i] < 0 else 2)
            t.putcell("BBC_NO", i, SPW_BBC[i])

    with ct.table(f"{path}/POLARIZATION", readonly=False, ack=False) as t:
        t.addrows(1)
        t.putcell("NUM_CORR", 0, ncorr)
        t.putcell("CORR_TYPE", 0, np.array([9, 12], dtype=np.int32))
        t.putcell("CORR_PRODUCT", 0, np.array([[0, 0], [1, 1]], dtype=np.int32))

    with ct.table(f"{path}/DATA_DESCRIPTION", readonly=False, ack=False) as t:
        t.addrows(3)
        t.putcol("SPECTRAL_WINDOW_ID", np.array(DD_SPW, dtype=np.int32))
        t.putcol("POLARIZATION_ID", np.zeros(3, dtype=np.int32))

    with ct.table(f"{path}/FIELD", readonly=False, ack=False) as t:
        t.addcols(ct.maketabdesc([ct.makescacoldesc("EPHEMERIS_ID", 0)]))
        t.addrows(3)
        t.putcol("NAME", FIELD_NAMES)
        t.putcol("CODE", ["none"] * 3)
        t.putcol("NUM_POLY", np.zeros(3, dtype=np.int32))
        t.putcol("SOURCE_ID", np.arange(3, dtype=np.int32))
        t.putcol("TIME", np.full(3, t0))
        t.putcol("EPHEMERIS_ID", np.array(FIELD_EPHEM, dtype=np.int32))
        for col in ("PHASE_DIR", "DELAY_DIR", "REFERENCE_DIR"):
            t.putcol(col, FIELD_DIRS[:, None, :])
    eph_path = os.path.join(path, "FIELD", "EPHEM0_Uranus_58000.0.tab")
    ct.table(eph_path, ct.maketabdesc([ct.makescacoldesc("MJD", 0.0)]), nrow=2, ack=False).close()

    with ct.table(f"{path}/STATE", readonly=False, ack=False) as t:
        t.addrows(len(OBS_MODES))
        t.putcol("OBS_MODE", OBS_MODES)
        t.putcol("SUB_SCAN", np.arange(len(OBS_MODES), dtype=np.int32))

    # main rows: per scan, integration, ddid, baseline (autos included)
    baselines = [(a, b) for a in range(5) for b in range(a, 5)]
    rows = {k: [] for k in ("time", "ant1", "ant2", "field", "ddid", "scan", "state")}
    for k, (scan, (field, states, ddids)) in enumerate(SCANS.items()):
        for i, state in enumerate(states):
            time = t0 + 100.0 * k + INTERVAL * (i + 0.5)
            for dd in ddids:
                for a, b in baselines:
                    for key, val in zip(rows, (time, a, b, field, dd, scan, state)):
                        rows[key].append(val)
    order = rng.permutation(len(rows["time"]))
    cols_out = {k: np.asarray(v)[order] for k, v in rows.items()}
    nrow = order.size
    cols_out["uvw"] = (pos[cols_out["ant2"]] - pos[cols_out["ant1"]]) * 0.7 + rng.normal(0, 1, (nrow, 3))
    cols_out["interval"] = np.full(nrow, INTERVAL)
    cols_out["flag_row"] = rng.random(nrow) < 0.05
    cols_out["weight"] = rng.uniform(0.5, 2.0, (nrow, ncorr)).astype(np.float32)
    nch = [nchan[DD_SPW[d]] for d in cols_out["ddid"]]
    cols_out["data"] = [(rng.normal(size=(n, ncorr)) + 1j * rng.normal(size=(n, ncorr))).astype(np.complex64)
                        for n in nch]
    cols_out["flag"] = [rng.random((n, ncorr)) < 0.1 for n in nch]
    if weight_spectrum:
        cols_out["weight_spectrum"] = [rng.uniform(0.1, 3.0, (n, ncorr)).astype(np.float32) for n in nch]
    if model_data:
        cols_out["model_data"] = [(rng.normal(size=(n, ncorr)) + 1j).astype(np.complex64) for n in nch]
    if corrected_data:
        cols_out["corrected_data"] = [(d * 2).astype(np.complex64) for d in cols_out["data"]]

    with ct.table(path, readonly=False, ack=False) as t:
        t.addrows(nrow)
        t.putcol("TIME", cols_out["time"])
        t.putcol("TIME_CENTROID", cols_out["time"])
        t.putcol("INTERVAL", cols_out["interval"])
        t.putcol("EXPOSURE", cols_out["interval"])
        t.putcol("ANTENNA1", cols_out["ant1"].astype(np.int32))
        t.putcol("ANTENNA2", cols_out["ant2"].astype(np.int32))
        t.putcol("DATA_DESC_ID", cols_out["ddid"].astype(np.int32))
        t.putcol("FIELD_ID", cols_out["field"].astype(np.int32))
        t.putcol("SCAN_NUMBER", cols_out["scan"].astype(np.int32))
        t.putcol("STATE_ID", cols_out["state"].astype(np.int32))
        t.putcol("UVW", cols_out["uvw"])
        t.putcol("FLAG_ROW", cols_out["flag_row"])
        t.putcol("WEIGHT", cols_out["weight"])
        t.putcol("SIGMA", 1.0 / np.sqrt(cols_out["weight"]))
        for r in range(nrow):
            t.putcell("DATA", r, cols_out["data"][r])
            t.putcell("FLAG", r, cols_out["flag"][r])
            for name in ("weight_spectrum", "model_data", "corrected_data"):
                if name in cols_out:
                    t.putcell(name.upper(), r, cols_out[name][r])

    with ct.table(f"{path}/OBSERVATION", readonly=False, ack=False) as t:
        t.addrows(1)
        t.putcell("TELESCOPE_NAME", 0, "ALMA")
        t.putcell("TIME_RANGE", 0, np.array([cols_out["time"].min() - INTERVAL / 2,
                                             cols_out["time"].max() + INTERVAL / 2]))
        t.putcell("OBSERVER", 0, "fluxflow-tests")
        t.putcell("PROJECT", 0, "T.0.00000.S")

    return {
        "path": path, "nchan": nchan, "ncorr": ncorr, "positions": pos, "lon": ANT_LON, "lat": ANT_LAT,
        "radius": ANT_RADIUS, "ephemeris_path": eph_path, "rows": cols_out, "nrow": nrow,
    }


@pytest.fixture
def tiny_ms(tmp_path) -> tuple[str, dict]:
    """(path, info) of a freshly written tiny MS (see module docstring)."""
    path = str(tmp_path / "uid___A002_tiny.ms")
    return path, build_tiny_ms(path)


@pytest.fixture
def tiny_ms_factory(tmp_path):
    """Callable(name, **options) -> (path, info) building tiny MS variants in tmp_path."""

    def make(name: str = "variant.ms", **options) -> tuple[str, dict]:
        path = str(tmp_path / name)
        return path, build_tiny_ms(path, **options)

    return make


def patch_dm_type(table_path: str, old: str, new: str) -> None:
    """Rename a data-manager type in the data-manager list of table.dat (test helper).

    The list entry is the last length-prefixed occurrence of `old`; the top-level object
    length at byte 4 is corrected for the size change.
    """
    dat = os.path.join(table_path, "table.dat")
    raw = open(dat, "rb").read()
    needle = struct.pack(">I", len(old)) + old.encode()
    at = raw.rfind(needle)
    assert at > 0, f"{old} not found in {dat}"
    raw = raw[:at] + struct.pack(">I", len(new)) + new.encode() + raw[at + len(needle):]
    length = struct.unpack(">I", raw[4:8])[0] + len(new) - len(old)
    with open(dat, "wb") as fh:
        fh.write(raw[:4] + struct.pack(">I", length) + raw[8:])
