"""CASA caltable writing and reading (fluxflow.ms.caltable), spec §6.6, §9 item 8, §15.

Expected layout values come from CASA's source (CTDesc.cc, NewCalTable.cc, SolvableVisCal.cc
createMemCalTable2 / setOrVerifyCTFrequencies / flagAbsentSpws), worked out by hand below.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from casacore import tables

from casa_helper import CASA_PYTHON, casa_available, casa_env
from fluxflow.errors import CaltableError, FluxflowError, WriteError
from fluxflow.gains import GainTable
from fluxflow.ms import caltable
from fluxflow.ms.caltable import FloatCalTable, read_caltable, write_caltable

ANT_NAMES = ["DA41", "DA42", "DV03", "PM01"]
FIELD_NAMES = ["J0423-0120", "J0510+1800"]
# spw 0: USB, 8 channels; spw 1: LSB (negative widths), 4 channels; spw 2: never solved
SPW_FREQS = [100.0e9 + 15.625e6 * np.arange(8),
             90.0e9 - 31.25e6 * np.arange(4),
             230.0e9 + 1.0e6 * np.arange(5)]
SPW_WIDTHS = [15.625e6, -31.25e6, 1.0e6]
SPW_TOTBW = [125.0e6, 125.0e6, 5.0e6]


def make_ms(path) -> str:
    """A small MS (no main rows) with 4 antennas, 3 spws, 2 fields, 1 observation."""
    path = str(path)
    tables.default_ms(path).close()
    with tables.table(f"{path}/ANTENNA", readonly=False, ack=False) as t:
        t.addrows(len(ANT_NAMES))
        t.putcol("NAME", ANT_NAMES)
        t.putcol("STATION", [f"A{i:03d}" for i in range(len(ANT_NAMES))])
        t.putcol("TYPE", ["GROUND-BASED"] * len(ANT_NAMES))
        t.putcol("MOUNT", ["ALT-AZ"] * len(ANT_NAMES))
        t.putcol("DISH_DIAMETER", np.full(len(ANT_NAMES), 12.0))
        t.putcol("POSITION", np.array([[2225061.0 + 10 * i, -5440057.0, -2481681.0]
                                       for i in range(len(ANT_NAMES))]))
        t.putcol("OFFSET", np.zeros((len(ANT_NAMES), 3)))
    with tables.table(f"{path}/SPECTRAL_WINDOW", readonly=False, ack=False) as t:
        t.addrows(len(SPW_FREQS))
        for i, (f, w, bw) in enumerate(zip(SPW_FREQS, SPW_WIDTHS, SPW_TOTBW)):
            n = f.size
            t.putcell("CHAN_FREQ", i, f)
            for col in ("CHAN_WIDTH", "EFFECTIVE_BW", "RESOLUTION"):
                t.putcell(col, i, np.full(n, w if col == "CHAN_WIDTH" else abs(w)))
            t.putcell("NUM_CHAN", i, n)
            t.putcell("TOTAL_BANDWIDTH", i, bw)
            t.putcell("REF_FREQUENCY", i, f[0])
            t.putcell("NAME", i, f"spw_{i}")
            t.putcell("MEAS_FREQ_REF", i, 5)
            t.putcell("NET_SIDEBAND", i, 1 if w > 0 else -1)
    with tables.table(f"{path}/FIELD", readonly=False, ack=False) as t:
        t.addrows(len(FIELD_NAMES))
        t.putcol("NAME", FIELD_NAMES)
        t.putcol("CODE", ["none"] * len(FIELD_NAMES))
        for col in ("PHASE_DIR", "DELAY_DIR", "REFERENCE_DIR"):
            t.putcol(col, np.array([[[1.15, -0.02]], [[1.35, 0.31]]]))
        t.putcol("SOURCE_ID", np.arange(len(FIELD_NAMES), dtype=np.int32))
    with tables.table(f"{path}/OBSERVATION", readonly=False, ack=False) as t:
        t.addrows(1)
        t.putcell("TELESCOPE_NAME", 0, "ALMA")
        t.putcell("OBSERVER", 0, "someone")
        t.putcell("PROJECT", 0, "2019.1.00001.S")
        t.putcell("TIME_RANGE", 0, np.array([5.0e9, 5.0e9 + 3600.0]))
    return path


def make_gains(vis_cal: str, seed: int = 1, refant: int = 1) -> GainTable:
    """Rows for 3 solution times x 2 spws x 4 antennas; field alternates with time.

    Rows are generated deliberately out of order; every float is exactly representable in
    single precision so that the stored table can be compared exactly.
    """
    rng = np.random.default_rng(seed)
    npar = {"G Jones": 2, "T Jones": 1}[vis_cal]
    rows = [(t, t % 2, s, a) for t in (2, 0, 1) for s in (1, 0) for a in (3, 0, 2, 1)]
    t_i, field_id, spw, ant = (np.array(c) for c in zip(*rows))
    n = len(rows)
    f32 = lambda x: np.asarray(x, dtype=np.float32).astype(float)  # noqa: E731
    cparam = (f32(rng.normal(1, 0.2, (n, 1, npar)))
              + 1j * f32(rng.normal(0, 0.2, (n, 1, npar))))
    flag = rng.random((n, 1, npar)) < 0.2
    return GainTable(
        vis_cal=vis_cal, time=5.0e9 + 60.0 * t_i + 0.25, interval=np.full(n, 30.5),
        field_id=field_id.astype(np.int32), spw_id=spw.astype(np.int32),
        antenna1=ant.astype(np.int32), antenna2=np.full(n, refant, np.int32),
        scan=(3 + t_i).astype(np.int32), obs_id=np.zeros(n, np.int32), cparam=cparam,
        paramerr=f32(rng.uniform(0.01, 0.1, (n, 1, npar))), flag=flag,
        snr=f32(rng.uniform(3, 300, (n, 1, npar))), weight=f32(rng.uniform(1, 2, (n, 1, npar))),
        ms_name="", meta={"chan_freq": {0: 100.05e9}})


@pytest.fixture(scope="module")
def ms(tmp_path_factory) -> str:
    return make_ms(tmp_path_factory.mktemp("ms") / "uid___A002_X1_X2.ms")


def _written(tmp_path, ms, vis_cal="G Jones", name="cal.G"):
    gains = make_gains(vis_cal)
    path = str(tmp_path / name)
    write_caltable(path, gains, ms)
    return path, gains


# --------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("vis_cal,npar", [("G Jones", 2), ("T Jones", 1)])
def test_round_trip_every_column(tmp_path, ms, vis_cal, npar):
    path, gains = _written(tmp_path, ms, vis_cal)
    back = read_caltable(path)
    assert isinstance(back, GainTable)
    assert back.vis_cal == vis_cal and back.npar == npar
    assert back.cparam.shape == (gains.nrow, 1, npar)
    assert back.cparam.dtype == np.complex128
    want = gains.sorted()
    for name in caltable._FLOAT_ROW_ARRAYS:
        attr = "cparam" if name == "fparam" else name
        np.testing.assert_array_equal(getattr(back, attr), getattr(want, attr), err_msg=attr)
    assert back == want
    assert back.ms_name == "uid___A002_X1_X2.ms"


def test_rows_stored_in_casa_order_with_casa_cell_shape(tmp_path, ms):
    path, gains = _written(tmp_path, ms)
    with tables.table(path, ack=False) as t:
        spw, time = t.getcol("SPECTRAL_WINDOW_ID"), t.getcol("TIME")
        a1, a2 = t.getcol("ANTENNA1"), t.getcol("ANTENNA2")
        # NewCalTable::writeToDisk sorts by SPECTRAL_WINDOW_ID, TIME, ANTENNA1, ANTENNA2
        assert np.array_equal(np.lexsort((a2, a1, time, spw)), np.arange(t.nrows()))
        assert list(spw[:12]) == [0] * 12 and time[0] == 5.0e9 + 0.25
        assert list(a1[:4]) == [0, 1, 2, 3]
        # CASA cell shape [npar=2, nchan=1] is (1, 2) in python order
        assert set(t.getcolshapestring("CPARAM")) == {"[1, 2]"}
        assert t.getcol("CPARAM").shape == (24, 1, 2)
        assert t.getcol("CPARAM").dtype == np.complex64
        assert np.all(a2 == 1)
        # first stored row = spw 0, earliest time, antenna 0 of the generated rows
        src = np.flatnonzero((gains.spw_id == 0) & (gains.time == time[0]) & (gains.antenna1 == 0))
        assert t.getcell("CPARAM", 0)[0, 1] == gains.cparam[src[0], 0, 1]


def test_t_jones_keeps_one_parameter_per_cell(tmp_path, ms):
    path, _ = _written(tmp_path, ms, "T Jones", "cal.T")
    with tables.table(path, ack=False) as t:
        assert set(t.getcolshapestring("CPARAM")) == {"[1, 1]"}
        assert set(t.getcolshapestring("FLAG")) == {"[1, 1]"}


# ---------------------------------------------------------------------------- CASA conventions


def test_table_info_keywords_and_columns(tmp_path, ms):
    path, _ = _written(tmp_path, ms, "T Jones", "cal.T")
    with tables.table(path, ack=False) as t:
        assert t.info()["type"] == "Calibration"
        assert t.info()["subType"] == "T Jones"
        kw = t.getkeywords()
        assert kw["ParType"] == "Complex"
        assert kw["VisCal"] == "T Jones"
        assert kw["MSName"] == "uid___A002_X1_X2.ms"
        assert kw["PolBasis"] == "unknown"
        assert kw["CASA_Version"].startswith("fluxflow")
        for sub in ("OBSERVATION", "ANTENNA", "FIELD", "SPECTRAL_WINDOW", "HISTORY"):
            assert kw[sub] == f"Table: {os.path.realpath(path)}/{sub}"
        assert t.colnames() == ["TIME", "FIELD_ID", "SPECTRAL_WINDOW_ID", "ANTENNA1", "ANTENNA2",
                                "INTERVAL", "SCAN_NUMBER", "OBSERVATION_ID", "CPARAM",
                                "PARAMERR", "FLAG", "SNR", "WEIGHT"]
        types = {c: t.getcoldesc(c)["valueType"] for c in t.colnames()}
        assert types == {"TIME": "double", "FIELD_ID": "int", "SPECTRAL_WINDOW_ID": "int",
                         "ANTENNA1": "int", "ANTENNA2": "int", "INTERVAL": "double",
                         "SCAN_NUMBER": "int", "OBSERVATION_ID": "int", "CPARAM": "complex",
                         "PARAMERR": "float", "FLAG": "boolean", "SNR": "float",
                         "WEIGHT": "float"}
        for c in ("CPARAM", "PARAMERR", "FLAG", "SNR", "WEIGHT"):
            assert t.getcoldesc(c)["ndim"] == -1  # free shape, as ArrayColumnDesc<T>(name)
        assert t.getcolkeywords("TIME") == {"QuantumUnits": ["s"],
                                            "MEASINFO": {"type": "epoch", "Ref": "UTC"}}
        assert t.getcolkeywords("INTERVAL") == {"QuantumUnits": ["s"]}
        # one StandardStMan group, as in CASA-written caltables
        dm = t.getdminfo()
        assert len(dm) == 1 and dm["*1"]["TYPE"] == "StandardStMan"
        assert dm["*1"]["NAME"] == "MSMTAB" and len(dm["*1"]["COLUMNS"]) == 13


def test_subtables_copied_from_ms(tmp_path, ms):
    path, _ = _written(tmp_path, ms)
    with tables.table(f"{path}/ANTENNA", ack=False) as t:
        assert list(t.getcol("NAME")) == ANT_NAMES
        assert t.getcol("POSITION")[3, 0] == 2225091.0
    with tables.table(f"{path}/FIELD", ack=False) as t:
        assert list(t.getcol("NAME")) == FIELD_NAMES
        assert np.allclose(t.getcol("PHASE_DIR")[1, 0], [1.35, 0.31])
    with tables.table(f"{path}/OBSERVATION", ack=False) as t:
        assert t.nrows() == 1 and t.getcell("TELESCOPE_NAME", 0) == "ALMA"
    with tables.table(f"{path}/HISTORY", ack=False) as t:
        assert t.nrows() == 0
        assert set(t.colnames()) == set(tables.required_ms_desc("HISTORY")) - {
            "_define_hypercolumn_", "_keywords_", "_private_keywords_"}


def test_spectral_window_collapsed_as_casa_does(tmp_path, ms):
    path, _ = _written(tmp_path, ms)
    with tables.table(f"{path}/SPECTRAL_WINDOW", ack=False) as t:
        assert list(t.getcol("NUM_CHAN")) == [1, 1, 1]
        freq = [t.getcell("CHAN_FREQ", r) for r in range(3)]
        # spw 0: solution frequency from meta; spw 1: mean of 90, 89.96875, 89.9375, 89.90625 GHz
        # spw 2 (no solutions): mean of 230.000..230.004 GHz
        assert freq[0].tolist() == [100.05e9]
        assert freq[1].tolist() == [89.953125e9]
        assert freq[2].tolist() == [230.002e9]
        # solved: widths = TOTAL_BANDWIDTH; unsolved: sum of channel widths
        assert [t.getcell("CHAN_WIDTH", r).tolist() for r in range(3)] == [
            [125.0e6], [125.0e6], [5.0e6]]
        assert t.getcell("EFFECTIVE_BW", 2).tolist() == [5.0e6]
        assert list(t.getcol("TOTAL_BANDWIDTH")) == SPW_TOTBW
        assert list(t.getcol("FLAG_ROW")) == [False, False, True]
        assert list(t.getcol("NAME")) == ["spw_0", "spw_1", "spw_2"]


def test_lsb_unsolved_spw_keeps_negative_width_sum(tmp_path, ms):
    gains = make_gains("G Jones")
    gains = gains.select(gains.spw_id == 0)
    path = str(tmp_path / "cal.G")
    write_caltable(path, gains, ms)
    with tables.table(f"{path}/SPECTRAL_WINDOW", ack=False) as t:
        assert t.getcell("CHAN_WIDTH", 1).tolist() == [-125.0e6]  # 4 x -31.25 MHz
        assert t.getcell("RESOLUTION", 1).tolist() == [125.0e6]
        assert list(t.getcol("FLAG_ROW")) == [False, True, True]


def test_read_meta(tmp_path, ms):
    path, _ = _written(tmp_path, ms)
    meta = read_caltable(path).meta
    assert meta["field_names"] == FIELD_NAMES
    assert meta["antenna_names"] == ANT_NAMES
    assert meta["spw_names"] == ["spw_0", "spw_1", "spw_2"]
    assert sorted(meta["chan_freq"]) == [0, 1, 2]
    assert meta["chan_freq"][1].tolist() == [89.953125e9]
    assert meta["spw_flag_row"].tolist() == [False, False, True]
    assert meta["nchan"] == {0: 1, 1: 1}
    assert meta["pol_basis"] == "unknown" and meta["par_type"] == "Complex"


def test_rewrite_of_read_table_keeps_frequencies(tmp_path, ms):
    path, _ = _written(tmp_path, ms)
    first = read_caltable(path)
    scaled = first.copy()
    scaled.cparam[scaled.field_id == 1] /= 2.0  # a fluxscale-like edit (§6.6)
    out = str(tmp_path / "cal.fluxscaled")
    write_caltable(out, scaled, ms)
    again = read_caltable(out)
    assert again == scaled
    assert again.meta["chan_freq"][0].tolist() == [100.05e9]


def test_empty_table(tmp_path, ms):
    path = str(tmp_path / "empty.G")
    write_caltable(path, GainTable.empty("G Jones", 2), ms)
    back = read_caltable(path)
    assert back.nrow == 0 and back.cparam.shape == (0, 1, 2)
    with tables.table(f"{path}/SPECTRAL_WINDOW", ack=False) as t:
        assert list(t.getcol("FLAG_ROW")) == [True, True, True]


# ------------------------------------------------------------------------- atomicity, overwrite


def test_overwrite_refused_then_allowed(tmp_path, ms):
    path, gains = _written(tmp_path, ms)
    other = make_gains("G Jones", seed=7)
    with pytest.raises(CaltableError, match="already exists"):
        write_caltable(path, other, ms)
    assert read_caltable(path) == gains.sorted()
    write_caltable(path, other, ms, overwrite=True)
    assert read_caltable(path) == other.sorted()
    assert sorted(os.listdir(tmp_path)) == ["cal.G"]


def test_overwrite_never_replaces_a_non_caltable(tmp_path, ms):
    with pytest.raises(CaltableError, match="not a calibration table"):
        write_caltable(ms, make_gains("G Jones"), ms, overwrite=True)
    assert tables.tableexists(ms) and tables.tableinfo(ms)["type"] != "Calibration"


def test_inconsistent_gains_leave_no_table(tmp_path, ms):
    gains = make_gains("G Jones")
    gains.spw_id[5] = 3  # the MS has 3 spws: ids 0..2
    path = tmp_path / "bad.G"
    with pytest.raises(CaltableError, match="spw_id value 3 outside"):
        write_caltable(path, gains, ms)
    assert os.listdir(tmp_path) == []


def test_bad_shapes_rejected(tmp_path, ms):
    gains = make_gains("T Jones")
    with pytest.raises(CaltableError, match="npar=2"):
        write_caltable(tmp_path / "x", GainTable(**{**gains.__dict__, "vis_cal": "G Jones"}), ms)
    with pytest.raises(CaltableError, match="can only write"):
        write_caltable(tmp_path / "x", GainTable(**{**gains.__dict__, "vis_cal": "B Jones"}), ms)
    with pytest.raises(CaltableError, match="one frequency"):
        bad = gains.copy()
        bad.meta["chan_freq"] = {0: [1e11, 2e11]}
        write_caltable(tmp_path / "x", bad, ms)
    assert os.listdir(tmp_path) == []


def test_crash_midway_leaves_previous_table_and_no_temp(tmp_path, ms, monkeypatch):
    path, gains = _written(tmp_path, ms)

    def boom(main, g):
        main.addrows(3)
        raise RuntimeError("disk full")

    monkeypatch.setattr(caltable, "_put_rows", boom)
    with pytest.raises(WriteError, match="disk full"):
        write_caltable(path, make_gains("G Jones", seed=3), ms, overwrite=True)
    with pytest.raises(WriteError):
        write_caltable(tmp_path / "new.G", gains, ms)
    assert sorted(os.listdir(tmp_path)) == ["cal.G"]
    assert read_caltable(path) == gains.sorted()


def test_missing_ms(tmp_path):
    with pytest.raises(FluxflowError, match="not a MeasurementSet"):
        write_caltable(tmp_path / "x.G", make_gains("G Jones"), tmp_path / "nope.ms")
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------ read validation


def test_read_missing_path(tmp_path):
    with pytest.raises(CaltableError, match="does not exist"):
        read_caltable(tmp_path / "nope.G")


def test_read_non_caltable(tmp_path, ms):
    with pytest.raises(CaltableError, match="not a valid Calibration table"):
        read_caltable(ms)
    (tmp_path / "plain").mkdir()
    with pytest.raises(CaltableError, match="not a casacore table"):
        read_caltable(tmp_path / "plain")


def test_read_old_format_caltable(tmp_path):
    path = str(tmp_path / "old.G")
    desc = tables.maketabdesc([tables.makescacoldesc("TIME", 0.0),
                               tables.makearrcoldesc("GAIN", 0j)])
    with tables.table(path, desc, nrow=0, ack=False) as t:
        t.putinfo({"type": "Calibration", "subType": "G Jones", "readme": ""})
    with pytest.raises(CaltableError, match="missing column.*ANTENNA1.*CPARAM or FPARAM"):
        read_caltable(path)


# ------------------------------------------- other NewCalTable types (B, K, Tsys), CASA-made style


def _raw_caltable(path, vis_cal, par_col, cells, spw_ids, chan_freqs, *, weight=False,
                  obs_id=True, times=None):
    """A NewCalTable laid out by hand as CASA writes it (independent of write_caltable).

    A cell given as (shape, None) leaves the parameter cell of that row unwritten.
    """
    path = str(path)
    vtype = "complex" if par_col == "CPARAM" else "float"
    descs = [tables.makescacoldesc(n, 0.0 if n in ("TIME", "INTERVAL") else 0)
             for n in ("TIME", "FIELD_ID", "SPECTRAL_WINDOW_ID", "ANTENNA1", "ANTENNA2",
                       "INTERVAL", "SCAN_NUMBER") + (("OBSERVATION_ID",) if obs_id else ())]
    descs += [tables.makearrcoldesc(n, v, valuetype=vt) for n, v, vt in
              ((par_col, 0.0, vtype), ("PARAMERR", 0.0, "float"), ("FLAG", False, "boolean"),
               ("SNR", 0.0, "float"), ("WEIGHT", 0.0, "float"))]
    n = len(cells)
    with tables.table(path, tables.maketabdesc(descs), nrow=n, ack=False) as t:
        t.putinfo({"type": "Calibration", "subType": vis_cal, "readme": ""})
        t.putkeyword("ParType", "Complex" if par_col == "CPARAM" else "Float")
        t.putkeyword("VisCal", vis_cal)
        t.putkeyword("MSName", "x.ms")
        t.putkeyword("PolBasis", "unknown")
        t.putcol("TIME", 5.0e9 + np.arange(n, dtype=float) if times is None else times)
        t.putcol("SPECTRAL_WINDOW_ID", np.asarray(spw_ids, np.int32))
        t.putcol("ANTENNA1", np.arange(n, dtype=np.int32) % 3)
        t.putcol("ANTENNA2", np.full(n, -1, np.int32))
        for r, cell in enumerate(cells):
            if isinstance(cell, tuple):
                shape = cell[0]
            else:
                shape = cell.shape
                t.putcell(par_col, r, cell)
            t.putcell("PARAMERR", r, np.zeros(shape, np.float32))
            t.putcell("SNR", r, np.full(shape, 50.0, np.float32))
            t.putcell("FLAG", r, np.zeros(shape, bool))
            if weight:
                t.putcell("WEIGHT", r, np.ones(shape, np.float32))
        for sub in ("OBSERVATION", "ANTENNA", "FIELD", "SPECTRAL_WINDOW", "HISTORY"):
            nsub = {"SPECTRAL_WINDOW": len(chan_freqs), "ANTENNA": 3, "FIELD": 1}.get(sub, 0)
            with tables.table(f"{path}/{sub}", tables.required_ms_desc(sub), nrow=nsub,
                              ack=False) as s:
                if sub == "SPECTRAL_WINDOW":
                    for r, f in enumerate(chan_freqs):
                        s.putcell("CHAN_FREQ", r, f)
                        s.putcell("NAME", r, f"w{r}")
                if sub in ("ANTENNA", "FIELD"):
                    s.putcol("NAME", [f"{sub[0]}{i}" for i in range(nsub)])
                t.putkeyword(sub, s)
    return path


def test_read_bandpass_with_different_channel_counts(tmp_path):
    # spw 0 rows: 4 channels, spw 1 rows: 6 channels; npar 2; WEIGHT never written (as CASA)
    c0 = (np.arange(8).reshape(4, 2) + 1j).astype(np.complex64)
    c1 = (np.arange(12).reshape(6, 2) - 2j).astype(np.complex64)
    freqs = [1e11 + 1e6 * np.arange(4), 2e11 + 1e6 * np.arange(6)]
    path = _raw_caltable(tmp_path / "cal.B", "B Jones", "CPARAM", [c0, c1, c0], [0, 1, 0], freqs)
    b = read_caltable(path)
    assert isinstance(b, GainTable) and b.vis_cal == "B Jones"
    assert b.cparam.shape == (3, 6, 2)
    assert np.array_equal(b.cparam[0, :4], c0) and np.array_equal(b.cparam[1], c1)
    assert np.all(np.isnan(b.cparam[0, 4:])) and np.all(b.flag[0, 4:]) and not b.flag[0, :4].any()
    assert not b.flag[1].any()
    assert np.all(np.isnan(b.weight))
    assert np.all(b.snr[0, :4] == 50.0)
    assert b.meta["nchan"] == {0: 4, 1: 6}
    assert np.array_equal(b.meta["chan_freq"][1], freqs[1])
    assert b.meta["field_names"] == ["F0"] and b.meta["antenna_names"] == ["A0", "A1", "A2"]


def test_read_float_tables(tmp_path):
    k_cells = [np.array([[1.5, -2.25]], np.float32), np.array([[0.5, 0.75]], np.float32)]
    path = _raw_caltable(tmp_path / "cal.K", "K Jones", "FPARAM", k_cells, [0, 0], [[1e11]],
                         weight=True, times=[5.0e9 + 10, 5.0e9])
    k = read_caltable(path)
    assert isinstance(k, FloatCalTable) and k.vis_cal == "K Jones"
    assert k.fparam.shape == (2, 1, 2) and k.fparam.dtype == np.float64
    # rows come back in time order: the second stored row first
    assert k.time.tolist() == [5.0e9, 5.0e9 + 10]
    assert k.fparam[:, 0].tolist() == [[0.5, 0.75], [1.5, -2.25]]
    assert np.all(k.weight == 1.0) and k.meta["par_type"] == "Float"
    tsys = [np.linspace(50, 80, 16, dtype=np.float32).reshape(8, 2)]
    t = read_caltable(_raw_caltable(tmp_path / "cal.tsys", "B TSYS", "FPARAM", tsys, [0],
                                    [1e11 + np.arange(8)]))
    assert isinstance(t, FloatCalTable) and t.nchan == 8 and t.npar == 2
    assert np.array_equal(t.fparam[0], tsys[0])
    assert t.select(np.array([True])) == t


def test_read_unwritten_parameter_cell_is_flagged(tmp_path):
    cells = [np.full((1, 2), 2 + 1j, np.complex64), ((1, 2), None)]
    g = read_caltable(_raw_caltable(tmp_path / "hole.G", "G Jones", "CPARAM", cells, [0, 0],
                                    [[1e11]]))
    assert g.cparam.shape == (2, 1, 2)
    assert np.all(g.cparam[0] == 2 + 1j) and not g.flag[0].any()
    assert np.all(np.isnan(g.cparam[1])) and g.flag[1].all()
    assert g.meta["nchan"] == {0: 1}


def test_read_pre_casa41_table_without_observation_id(tmp_path):
    cells = [np.ones((1, 1), np.complex64)] * 2
    path = _raw_caltable(tmp_path / "old.T", "T Jones", "CPARAM", cells, [0, 0], [[1e11]],
                         obs_id=False)
    t = read_caltable(path)
    assert t.obs_id.tolist() == [0, 0] and t.npar == 1


# ------------------------------------------------------------------------ CASA itself, if present


@pytest.mark.skipif(not casa_available(), reason="CASA is not available (set FLUXFLOW_CASA_PYTHON)")
def test_casatools_opens_the_table(tmp_path, ms):
    path, gains = _written(tmp_path, ms)
    script = textwrap.dedent("""
        import sys, casatools
        tb = casatools.table()
        tb.open(sys.argv[1])
        info = tb.info()
        assert info["type"] == "Calibration" and info["subType"] == "G Jones", info
        assert tb.getcol("CPARAM").shape == (2, 1, int(sys.argv[2])), tb.getcol("CPARAM").shape
        assert tb.getkeyword("ParType") == "Complex"
        tb.close()
    """)
    run = subprocess.run([CASA_PYTHON, "-c", script, path, str(gains.nrow)],
                         capture_output=True, text=True, timeout=120, env=casa_env(), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
