"""Issue 8 end to end: a Tsys table that differs between the flux-calibrator scans and the other
scans is applied in memory before solving; without it the transferred fluxes are wrong by the
Tsys ratio, with it they equal the injected ones. DATA is never written by fluxflow."""

from __future__ import annotations

import casacore.tables as ct
import numpy as np
import pytest

import fluxflow
from fluxflow.gains import GainTable
from fluxflow.ms import read_metadata, write_caltable
from fluxflow.ms.caltable import FloatCalTable
from fluxflow.simulate import simulate_ms


def _tsys(scan_intent: str, ant: np.ndarray) -> np.ndarray:
    base = 80.0 if scan_intent == "AMPLITUDE" else 125.0
    return base * (1.0 + 0.05 * np.sin(ant))


@pytest.fixture(scope="module")
def tsys_ms(tmp_path_factory):
    d = tmp_path_factory.mktemp("pre")
    sim = simulate_ms(str(d / "tsys.ms"), seed=8, sefd=0.0, n_chan=8, n_cycles=1)
    md = read_metadata(sim.ms_path)
    scans = {s["number"]: s for s in sim.truth["scans"]}
    sci = [s.id for s in md.science_spws]
    # test input: raw data in Tsys-normalised units, DATA / sqrt(Tsys_i Tsys_j) per scan
    with ct.table(sim.ms_path, readonly=False, ack=False) as t:
        for spw in sci:
            dd = md.ddids_for_spw(spw)[0]
            sub = t.query(f"DATA_DESC_ID=={dd}")
            data, sc = sub.getcol("DATA"), sub.getcol("SCAN_NUMBER")
            a1, a2 = sub.getcol("ANTENNA1"), sub.getcol("ANTENNA2")
            intent = np.array([scans[int(s)]["intent"] for s in sc])
            t1 = np.where(intent == "AMPLITUDE", 80.0, 125.0) * (1 + 0.05 * np.sin(a1))
            t2 = np.where(intent == "AMPLITUDE", 80.0, 125.0) * (1 + 0.05 * np.sin(a2))
            sub.putcol("DATA", (data / np.sqrt(t1 * t2)[:, None, None]).astype(data.dtype))
            sub.close()
    # the Tsys table: one solution per scan and antenna, per channel and polarisation
    rows = []
    n_ant = len(md.antennas)
    ant = np.arange(n_ant)
    for num, s in scans.items():
        tc = 0.5 * (s["start"] + s["end"])
        for spw in sci:
            nch = md.spw(spw).num_chan
            val = np.repeat(_tsys(s["intent"], ant)[:, None, None], nch, axis=1).repeat(2, axis=2)
            rows.append(dict(time=np.full(n_ant, tc), spw=np.full(n_ant, spw), field=np.full(n_ant, s["field_id"]),
                             scan=np.full(n_ant, num), ant=ant, fparam=val))
    cat = {k: np.concatenate([r[k] for r in rows]) for k in rows[0] if k != "fparam"}
    n = cat["time"].size
    nch = md.spw(sci[0]).num_chan
    fparam = np.concatenate([r["fparam"] for r in rows])
    table = FloatCalTable(vis_cal="B TSYS", time=cat["time"], interval=np.full(n, 30.0),
                          field_id=cat["field"].astype(np.int32), spw_id=cat["spw"].astype(np.int32),
                          antenna1=cat["ant"].astype(np.int32), antenna2=np.full(n, -1, np.int32),
                          scan=cat["scan"].astype(np.int32), obs_id=np.zeros(n, np.int32), fparam=fparam,
                          paramerr=np.zeros((n, nch, 2)), flag=np.zeros((n, nch, 2), bool),
                          snr=np.ones((n, nch, 2)), weight=np.ones((n, nch, 2)))
    path = str(d / "tsys.tsys")
    write_caltable(path, table, sim.ms_path)
    return sim, path


def test_tsys_preapply_restores_flux_scale(tsys_ms, tmp_path):
    sim, tsys = tsys_ms
    plain = fluxflow.gfluxscale([sim.ms_path], cluster="sync", output_dir=str(tmp_path / "plain"),
                                reffile=sim.flux_csv, write_model=False)
    pre = fluxflow.gfluxscale([sim.ms_path], cluster="sync", output_dir=str(tmp_path / "pre"),
                              reffile=sim.flux_csv, write_model=False, gaintable=[tsys],
                              gainfield=["nearest"], interp=["nearest,linear"], calwt=[False])
    for r in pre.flux_rows():
        truth = sim.truth["fields"][r["field"]]["flux"][str(r["spw"])]
        assert r["fluxscale_I"] == pytest.approx(truth, rel=1e-3), r
        assert r["calibrated_I"] == pytest.approx(truth, rel=1e-3), r
    # without the Tsys table the transfer is off by the Tsys ratio (125/80)
    for r in plain.flux_rows():
        truth = sim.truth["fields"][r["field"]]["flux"][str(r["spw"])]
        assert r["fluxscale_I"] / truth == pytest.approx(80.0 / 125.0, rel=0.02)
    assert pre.records[0]["plan"]["preapply"] and "B TSYS" in pre.records[0]["plan"]["preapply"][0]


def test_bad_gaintable_is_a_clear_error(tsys_ms, tmp_path):
    sim, _ = tsys_ms
    with pytest.raises(fluxflow.errors.CaltableError, match="nope.tbl"):
        fluxflow.gfluxscale([sim.ms_path], cluster="sync", output_dir=str(tmp_path / "x"),
                            reffile=sim.flux_csv, gaintable=str(tmp_path / "nope.tbl"))


def test_gaincal_list_semantics():
    from fluxflow.params import Params

    p = Params(gaintable=("a", "b"), interp=("nearest",), spwmap=((0, 0),), calwt=(False, True))
    a, b = p.calapps()
    assert a.interp == b.interp == "nearest" and a.spwmap == b.spwmap == (0, 0)
    assert (a.calwt, b.calwt) == (False, True) and a.gainfield == b.gainfield == ""
    with pytest.raises(fluxflow.errors.FluxflowError, match="calwt"):
        Params(gaintable=("a",), calwt=(True, False, True)).calapps()
    assert GainTable  # the module's public types stay importable


def test_report_lists_preapplied_tables(tsys_ms, tmp_path):
    sim, tsys = tsys_ms
    fluxflow.gfluxscale([sim.ms_path], cluster="sync", output_dir=str(tmp_path / "r"),
                        reffile=sim.flux_csv, write_model=False, gaintable=[tsys], interp=["nearest"])
    html = (tmp_path / "r" / "report" / "index.html").read_text()
    assert "Pre-applied calibration" in html and "tsys.tsys" in html and "B TSYS" in html
