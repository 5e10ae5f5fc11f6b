"""Visibility selections (fluxflow.ms.selection) and MODEL_DATA writing (fluxflow.ms.model_data).

Expected rows are recomputed with numpy from the columns tests/conftest.py wrote (spec §8:
cross-correlations only; §7.2 / §12: Stokes-I model on the parallel hands).
"""

from __future__ import annotations

import hashlib

import casacore.tables as ct
import numpy as np
import pytest
import xarray as xr

import conftest as c
from fluxflow.errors import MissingColumnError, SelectionError
from fluxflow.ms import (
    ensure_model_column,
    iter_selection,
    read_selection,
    reset_model_data,
    write_model_data,
)

STATES_FOR = {"PHASE": {2, 5}, "CHECK": {3}, "BANDPASS": {0}, "AMPLITUDE": {1}, "WVR": {0, 1, 2, 5}}


def expected_rows(info, field, spw, intents=None, scans=None, antennas=None, cross=True):
    """MS row numbers of a selection, in TIME, ANTENNA1, ANTENNA2, row order."""
    r = info["rows"]
    ddids = [d for d, s in enumerate(c.DD_SPW) if s == spw]
    m = (r["field"] == field) & np.isin(r["ddid"], ddids)
    if intents is not None:
        m &= np.isin(r["state"], sorted(set().union(*(STATES_FOR.get(i, set()) for i in intents))))
    if scans is not None:
        m &= np.isin(r["scan"], scans)
    if antennas is not None:
        m &= np.isin(r["ant1"], antennas) & np.isin(r["ant2"], antennas)
    if cross:
        m &= r["ant1"] != r["ant2"]
    ids = np.flatnonzero(m)
    return ids[np.lexsort((ids, r["ant2"][ids], r["ant1"][ids], r["time"][ids]))]


def column_md5(path, columns=("DATA", "FLAG", "WEIGHT", "FLAG_ROW", "UVW", "SIGMA")) -> dict[str, str]:
    out = {}
    with ct.table(path, ack=False) as t:
        for col in columns:
            h = hashlib.md5()
            for r in range(t.nrows()):
                h.update(np.asarray(t.getcell(col, r)).tobytes())
            out[col] = h.hexdigest()
    return out


SELECTIONS = [
    dict(field=2, spw=0),
    dict(field=2, spw=1, intents=["PHASE"], scans=[5]),
    dict(field=0, spw=0, intents=["CHECK"]),
    dict(field=0, spw=1, intents=["BANDPASS", "CHECK"]),
    dict(field=1, spw=0, antennas=[0, 2, 4]),
    dict(field=0, spw=2),
    dict(field=0, spw=0, intents=["WVR"], antennas=[1, 3]),
]


@pytest.mark.parametrize("sel", SELECTIONS)
def test_selection_matches_numpy(tiny_ms, sel):
    path, info = tiny_ms
    r = info["rows"]
    kw = {k: v for k, v in sel.items() if k in ("intents", "scans", "antennas")}
    ds = read_selection(path, sel["field"], sel["spw"], **kw)
    ids = expected_rows(info, sel["field"], sel["spw"], **kw)
    assert ids.size > 0
    np.testing.assert_array_equal(ds.row_id.values, ids)
    nchan = info["nchan"][sel["spw"]]
    assert dict(ds.sizes) == {"row": ids.size, "chan": nchan, "corr": 2, "uvw": 3}
    np.testing.assert_array_equal(ds.vis.values, np.stack([r["data"][i] for i in ids]))
    flag = np.stack([r["flag"][i] for i in ids]) | r["flag_row"][ids][:, None, None]
    np.testing.assert_array_equal(ds.flag.values, flag)
    np.testing.assert_array_equal(ds.weight.values, np.broadcast_to(r["weight"][ids][:, None, :], (ids.size, nchan, 2)))
    np.testing.assert_array_equal(ds.time.values, r["time"][ids])
    np.testing.assert_array_equal(ds.interval.values, r["interval"][ids])
    np.testing.assert_array_equal(ds.antenna1.values, r["ant1"][ids])
    np.testing.assert_array_equal(ds.antenna2.values, r["ant2"][ids])
    np.testing.assert_array_equal(ds.scan.values, r["scan"][ids])
    np.testing.assert_array_equal(ds.uvw.values, r["uvw"][ids])
    np.testing.assert_array_equal(ds.chan_freq.values, c.spw_freqs(sel["spw"], nchan))
    np.testing.assert_array_equal(ds.chan_width.values, np.full(nchan, c.SPW_WIDTH[sel["spw"]]))
    assert list(ds.corr.values) == ["XX", "YY"]
    assert {k: ds[k].dtype for k in ("vis", "model", "flag", "weight", "time", "interval", "antenna1", "antenna2",
                                     "scan", "uvw", "row_id")} == {
        "vis": np.complex64, "model": np.complex64, "flag": bool, "weight": np.float32, "time": np.float64,
        "interval": np.float64, "antenna1": np.int32, "antenna2": np.int32, "scan": np.int32,
        "uvw": np.float64, "row_id": np.int64}
    assert ds.attrs == {"ms": path, "ms_name": "uid___A002_tiny.ms", "field_id": sel["field"],
                        "spw_id": sel["spw"], "ddid": c.DD_SPW.index(sel["spw"]), "datacolumn": "DATA",
                        "has_model_column": False, "n_ant": 5}


def test_no_autocorrelations_and_order(tiny_ms):
    path, info = tiny_ms
    ds = read_selection(path, 0, 0)
    assert np.all(ds.antenna1.values != ds.antenna2.values)
    with_autos = expected_rows(info, 0, 0, cross=False)
    assert with_autos.size == ds.sizes["row"] + 5 * 6  # 5 autos x (3 BANDPASS + 3 CHECK integrations)
    key = np.stack([ds.time.values, ds.antenna1.values, ds.antenna2.values], axis=1)
    assert all(tuple(a) < tuple(b) for a, b in zip(key[:-1], key[1:]))


def test_unit_model_when_model_data_absent(tiny_ms):
    path, _ = tiny_ms
    ds = read_selection(path, 2, 1)
    assert ds.attrs["has_model_column"] is False
    np.testing.assert_array_equal(ds.model.values, np.ones((ds.sizes["row"], 4, 2), np.complex64))


def test_chunked_reads_identical(tiny_ms):
    path, _ = tiny_ms
    whole = read_selection(path, 0, 0, chunk_rows=100_000)
    small = read_selection(path, 0, 0, chunk_rows=7)
    xr.testing.assert_identical(whole, small)
    chunks = list(iter_selection(path, 0, 0, chunk_rows=7))
    assert [ch.sizes["row"] for ch in chunks] == [7] * (whole.sizes["row"] // 7) + (
        [whole.sizes["row"] % 7] if whole.sizes["row"] % 7 else [])
    xr.testing.assert_identical(xr.concat(chunks, dim="row"), whole)
    assert list(iter_selection(path, 2, 0, intents=["AMPLITUDE"])) == []


def test_model_weight_spectrum_and_corrected(tiny_ms_factory):
    path, info = tiny_ms_factory("full.ms", model_data=True, weight_spectrum=True, corrected_data=True)
    r = info["rows"]
    ids = expected_rows(info, 1, 0)
    ds = read_selection(path, 1, 0, datacolumn="CORRECTED_DATA", chunk_rows=11)
    np.testing.assert_array_equal(ds.row_id.values, ids)
    np.testing.assert_array_equal(ds.vis.values, np.stack([r["corrected_data"][i] for i in ids]))
    np.testing.assert_array_equal(ds.model.values, np.stack([r["model_data"][i] for i in ids]))
    np.testing.assert_array_equal(ds.weight.values, np.stack([r["weight_spectrum"][i] for i in ids]))
    assert ds.attrs["has_model_column"] is True and ds.attrs["datacolumn"] == "CORRECTED_DATA"
    no_model = read_selection(path, 1, 0, read_model=False)
    assert no_model.attrs["has_model_column"] is False
    np.testing.assert_array_equal(no_model.model.values, np.ones_like(no_model.model.values))


def test_missing_datacolumn(tiny_ms):
    path, _ = tiny_ms
    with pytest.raises(MissingColumnError, match=r"CORRECTED_DATA.*present: DATA"):
        read_selection(path, 0, 0, datacolumn="CORRECTED_DATA")


def test_empty_selection_has_layout(tiny_ms):
    path, _ = tiny_ms
    for kw in (dict(intents=["AMPLITUDE"]), dict(intents=["TARGET"]), dict(scans=[99]), dict(antennas=[3])):
        ds = read_selection(path, 2, 0, **kw)
        assert dict(ds.sizes) == {"row": 0, "chan": 8, "corr": 2, "uvw": 3}
        assert set(ds.data_vars) | set(ds.coords) == {
            "vis", "model", "flag", "weight", "time", "interval", "antenna1", "antenna2", "scan", "uvw",
            "row_id", "chan_freq", "chan_width", "corr"}


@pytest.mark.parametrize("field, spw, kw", [(3, 0, {}), (-1, 0, {}), (0, 3, {}), (0, 0, {"antennas": [7]}),
                                             (0, 0, {"antennas": ["XX99"]})])
def test_unknown_field_spw_antenna(tiny_ms, field, spw, kw):
    path, _ = tiny_ms
    with pytest.raises(SelectionError):
        read_selection(path, field, spw, **kw)


def test_antenna_names_accepted(tiny_ms):
    path, info = tiny_ms
    ds = read_selection(path, 1, 0, antennas=["DA41", "DV03", "CM01"])
    np.testing.assert_array_equal(ds.row_id.values, expected_rows(info, 1, 0, antennas=[0, 2, 4]))


def _model(uvw: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """A resolved, spectrally sloped Stokes-I model with a phase gradient (test only)."""
    q = np.hypot(uvw[:, 0], uvw[:, 1])[:, None] * freq[None, :] / 299_792_458.0
    return 2.5 * (freq[None, :] / 100e9) ** -0.7 * np.exp(-q / 4e3) * np.exp(2j * np.pi * uvw[:, 2:3] / 50.0)


def test_write_model_roundtrip_and_data_untouched(tiny_ms):
    path, info = tiny_ms
    r = info["rows"]
    before = column_md5(path)
    n = write_model_data(path, 2, 0, _model)
    assert n == 3 * 15  # 3 integrations x 15 baselines incl. autocorrelations
    assert column_md5(path) == before
    ds = read_selection(path, 2, 0)
    assert ds.attrs["has_model_column"] is True
    want = _model(r["uvw"][ds.row_id.values], c.spw_freqs(0, 8)).astype(np.complex64)
    np.testing.assert_allclose(ds.model.values[:, :, 0], want, rtol=1e-6)
    np.testing.assert_array_equal(ds.model.values[:, :, 0], ds.model.values[:, :, 1])
    with ct.table(path, ack=False) as t:
        model = [t.getcell("MODEL_DATA", i) for i in range(t.nrows())]
        assert t.getdminfo("MODEL_DATA")["TYPE"] == "TiledShapeStMan"
    selected = set(expected_rows(info, 2, 0, cross=False).tolist())
    autos = [i for i in selected if r["ant1"][i] == r["ant2"][i]]
    assert len(autos) == 15
    for i in autos:
        np.testing.assert_allclose(model[i][:, 0], _model(r["uvw"][i:i + 1], c.spw_freqs(0, 8))[0], rtol=1e-6)
    for i in range(info["nrow"]):  # every other row holds the unit model of a new column
        if i not in selected:
            np.testing.assert_array_equal(model[i], np.ones_like(model[i]))

    # a second selection (spw 1 = ddid 0, PHASE intent of scan 5), then reset of spw 0
    assert write_model_data(path, 2, 1, lambda uvw, f: np.full((uvw.shape[0], f.size), 0.75),
                            intents=["PHASE"], scans=[5]) == 45
    np.testing.assert_array_equal(read_selection(path, 2, 1).model.values, np.full((30, 4, 2), 0.75, np.complex64))
    assert reset_model_data(path, 2, 0, intents="PHASE") == 45
    np.testing.assert_array_equal(read_selection(path, 2, 0).model.values, np.ones((30, 8, 2), np.complex64))
    np.testing.assert_array_equal(read_selection(path, 2, 1).model.values, np.full((30, 4, 2), 0.75, np.complex64))
    assert write_model_data(path, 2, 0, _model, intents=["AMPLITUDE"]) == 0
    assert column_md5(path) == before


def test_write_respects_intents_and_chunks(tiny_ms):
    path, info = tiny_ms
    r = info["rows"]
    n = write_model_data(path, 0, 0, lambda uvw, f: np.full((uvw.shape[0], f.size), 3.0 + 1.0j),
                         intents=["CHECK"], chunk_rows=4)
    assert n == 45
    ds = read_selection(path, 0, 0)
    is_check = np.isin(r["state"][ds.row_id.values], [3])
    np.testing.assert_array_equal(ds.model.values[is_check], np.full((is_check.sum(), 8, 2), 3 + 1j, np.complex64))
    np.testing.assert_array_equal(ds.model.values[~is_check], np.ones(((~is_check).sum(), 8, 2), np.complex64))


def test_ensure_model_column(tiny_ms_factory):
    path, info = tiny_ms_factory("fixed.ms", nchan=(4, 4, 4), fixed_shape=True)
    before = column_md5(path)
    assert ensure_model_column(path) is True
    assert ensure_model_column(path) is False
    with ct.table(path, ack=False) as t:
        dm = t.getdminfo("MODEL_DATA")
        assert dm["TYPE"] == "TiledColumnStMan"
        tile = dm["SPEC"]["HYPERCUBES"]["*1"]["TileShape"]
        assert list(tile[:2]) == [2, 4]
        model = t.getcol("MODEL_DATA")
    np.testing.assert_array_equal(model, np.ones((info["nrow"], 4, 2), np.complex64))
    assert column_md5(path) == before


def test_model_fn_shape_checked(tiny_ms):
    path, _ = tiny_ms
    with pytest.raises(ValueError, match="shape"):
        write_model_data(path, 2, 0, lambda uvw, f: np.ones((uvw.shape[0] + 1, f.size)))
    with pytest.raises(ValueError, match="non-finite"):
        write_model_data(path, 2, 0, lambda uvw, f: np.full((uvw.shape[0], f.size), np.nan))
    with pytest.raises(SelectionError):
        write_model_data(path, 5, 0, _model)


def test_write_models_initialises_only_uncovered_rows(tiny_ms):
    """write_models adds MODEL_DATA, writes the unit model only where none of its writes goes,
    then the models: every cell ends right (and each new cell was written once)."""
    from fluxflow.ms import write_models

    path, info = tiny_ms
    r = info["rows"]
    before = column_md5(path)
    const = lambda uvw, f: np.full((uvw.shape[0], f.size), 0.75)  # noqa: E731
    n = write_models(path, [(2, 0, _model, None), (2, 1, const, ["PHASE"], [5])])
    assert n == 45 + 45
    assert column_md5(path) == before
    sel0 = set(expected_rows(info, 2, 0, cross=False).tolist())
    with ct.table(path, ack=False) as t:
        model = [t.getcell("MODEL_DATA", i) for i in range(t.nrows())]
        sel1 = set(t.query("FIELD_ID == 2 AND DATA_DESC_ID == 0 AND SCAN_NUMBER == 5").rownumbers())
    assert len(sel1) == 45 and not sel0 & sel1
    for i in range(info["nrow"]):
        if i in sel0:
            np.testing.assert_allclose(model[i][:, 0], _model(r["uvw"][i:i + 1], c.spw_freqs(0, 8))[0], rtol=1e-6)
        elif i in sel1:
            np.testing.assert_array_equal(model[i], np.full_like(model[i], 0.75))
        else:
            np.testing.assert_array_equal(model[i], np.ones_like(model[i]))


def test_lock_taken_once_and_kept(tiny_ms, monkeypatch):
    """The table lock is taken once per open and never silently dropped by python-casacore."""
    from fluxflow.ms import read_metadata, tables

    path, _ = tiny_ms
    md = read_metadata(path, with_scans=False, warn=False)
    calls = []
    real = tables.acquire_lock
    monkeypatch.setattr(tables, "acquire_lock", lambda t, p, write, timeout: (calls.append(write), real(t, p, write, timeout)))
    assert write_model_data(path, 2, 0, _model, md=md, chunk_rows=5) == 45  # also creates MODEL_DATA
    # selectrows drops the user lock; ensure_lock takes the write lock back before the first write
    # of each selection: the unit-model initialisation per data description, then the model
    assert calls == [True] * (2 + len(md.data_descriptions))
    calls.clear()
    read_selection(path, 0, 0, md=md, chunk_rows=7)
    list(iter_selection(path, 0, 1, md=md, chunk_rows=7))
    assert calls == [False, False] * 2  # per open: the lock, and once more after selectrows


def test_row_index_cache_survives_model_writes_and_follows_index_changes(tmp_path):
    """The per-process row index is kept across MODEL_DATA writes (they touch other storage
    files) and re-read when an index column changes."""
    import casacore.tables as ct

    from fluxflow.models.sky import point_model
    from fluxflow.ms import rowindex, write_model_data
    from fluxflow.simulate import simulate_ms

    sim = simulate_ms(str(tmp_path / "c.ms"), n_chan=4, n_cycles=1, seed=2)
    rowindex._INDEX_CACHE.clear()
    before = read_selection(sim.ms_path, 0, 1)
    key = next(iter(rowindex._INDEX_CACHE))
    write_model_data(sim.ms_path, 0, 1, point_model(2.0, 0.0, 1e11))
    read_selection(sim.ms_path, 0, 1)
    assert list(rowindex._INDEX_CACHE) == [key]
    with ct.table(sim.ms_path, readonly=False, ack=False) as t:  # move field 0's rows to field 1
        fid = t.getcol("FIELD_ID")
        t.putcol("FIELD_ID", np.where(fid == 0, 1, fid))
    after = read_selection(sim.ms_path, 0, 1)
    assert before.sizes["row"] > 0 and after.sizes["row"] == 0
    assert len(rowindex._INDEX_CACHE) == 1 and next(iter(rowindex._INDEX_CACHE)) != key
