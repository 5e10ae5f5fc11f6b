"""Tests of the ALMA-like simulator and the MS writer (real casacore tables in tmp_path).

Expected numbers are recomputed here from the model stated in the task (V_pq = g_ip conj(g_jq) S,
S = S_ref (ν/ν_ref)^α, uniform disk 2J1(x)/x, σ = SEFD/sqrt(2 Δν τ)) using the MS's own
SPECTRAL_WINDOW/UVW columns and the gains recorded in truth.json, not the simulator's helpers.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import math
import os
import re

import numpy as np
import pytest
import casacore.tables as ct
from scipy.special import j1

from fluxflow.errors import MissingColumnError, WriteError
from fluxflow.ms.create import MSWriter, create_ms
from fluxflow.ms.metadata import read_metadata
from fluxflow.simulate import SimConfig, main, simulate_ms, simulate_session
import fluxflow.simulate.simulate as simmod

C = 299792458.0
SMALL = dict(n_ant=6, n_cycles=1, bandpass_scan_s=12.0, flux_scan_s=12.0, phase_scan_s=12.0,
             target_scan_s=12.0, check_scan_s=12.0)


def _data_md5(ms: str, column: str = "DATA") -> str:
    h = hashlib.md5()
    with ct.table(ms, ack=False) as t:
        for d in sorted(set(t.getcol("DATA_DESC_ID").tolist())):
            with t.query(f"DATA_DESC_ID=={d}") as sub:
                h.update(np.ascontiguousarray(sub.getcol(column)).tobytes())
    return h.hexdigest()


def _spw_table(ms: str) -> tuple[dict[int, np.ndarray], dict[int, float]]:
    """Channel frequencies and centre (mean of band edges) per spw, read from the MS."""
    freqs, centres = {}, {}
    with ct.table(os.path.join(ms, "SPECTRAL_WINDOW"), ack=False) as t:
        for r in range(t.nrows()):
            f = t.getcell("CHAN_FREQ", r)
            w = np.abs(t.getcell("CHAN_WIDTH", r))
            freqs[r] = f
            centres[r] = (np.min(f - w / 2) + np.max(f + w / 2)) / 2
    return freqs, centres


def _gain(truth: dict, ant: int, pol: int, spw: int, t: float, scan: int) -> complex:
    g = truth["gains"]
    si = g["spw_ids"].index(spw)
    ti = g["times"].index(t)
    amp = g["amp"][ant][pol][si] * (1 + g["drift_per_hour"][ant][pol] * (t - g["t_ref"]) / 3600.0)
    val = amp * np.exp(1j * (g["phase_walk_rad"][ti][ant][pol] + g["spw_phase_offset_rad"][ant][pol][si]))
    for o in truth["outliers"]:
        if o["antenna"] == ant and o["spw"] == spw and o["scan"] == scan:
            val *= o["factor"]
    return val


@pytest.fixture(scope="module")
def basic(tmp_path_factory):
    """Default 12-antenna, 4x16-channel EB with noise and flags."""
    d = tmp_path_factory.mktemp("basic")
    return simulate_ms(str(d / "basic.ms"), seed=7, catalogue_error=1.1, flag_fraction=0.05)


@pytest.fixture(scope="module")
def noisefree(tmp_path_factory):
    """Noise-free, unflagged, full-polarisation EB with a drift and one gain outlier."""
    d = tmp_path_factory.mktemp("nf")
    return simulate_ms(str(d / "nf.ms"), seed=3, sefd=0.0, flag_fraction=0.0, flagged_antenna_scan=None,
                       corr=("XX", "XY", "YX", "YY"), gain_amp_drift_rms=0.05, phase_rw_deg=3.0,
                       outliers=((2, 3, 5, 1.7),))


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    """Resolved (3.7 arcsec) ephemeris flux calibrator, unit gain amplitudes, MODEL_DATA."""
    d = tmp_path_factory.mktemp("disk")
    return simulate_ms(str(d / "disk.ms"), seed=5, sefd=0.0, flag_fraction=0.0, gain_amp_rms=0.0,
                       flux_cal_disk_diameter_arcsec=3.7, with_ephemeris=True, with_model_column=True)


def test_deterministic_for_seed(basic, tmp_path):
    again = simulate_ms(str(tmp_path / "basic.ms"), seed=7, catalogue_error=1.1, flag_fraction=0.05)
    other = simulate_ms(str(tmp_path / "other.ms"), seed=8, catalogue_error=1.1, flag_fraction=0.05)
    assert _data_md5(basic.ms_path) == _data_md5(again.ms_path)
    assert _data_md5(basic.ms_path, "FLAG") == _data_md5(again.ms_path, "FLAG")
    assert _data_md5(basic.ms_path) != _data_md5(other.ms_path)
    assert again.truth["gains"] == basic.truth["gains"]


def test_noise_free_visibilities_equal_gain_model(noisefree):
    truth = json.load(open(noisefree.truth_json))
    freqs, _ = _spw_table(noisefree.ms_path)
    fields = {f["id"]: f for f in truth["fields"].values()}
    sci = truth["science_spws"]
    hands = {0: (0, 0), 1: (0, 1), 2: (1, 0), 3: (1, 1)}
    with ct.table(noisefree.ms_path, ack=False) as t:
        ddid = t.getcol("DATA_DESC_ID")
        rows = np.flatnonzero(np.isin(ddid, sci))
        rng = np.random.default_rng(0)
        sample = set(rng.choice(rows, 150, replace=False).tolist())
        # every row of the outlier antenna in the outlier (spw, scan) is checked too
        out = t.query("SCAN_NUMBER==5 && DATA_DESC_ID==3 && (ANTENNA1==2 || ANTENNA2==2)")
        sample |= {int(r) for r in out.rownumbers(t)}
        assert out.nrows() == 11 * 5  # 11 baselines x 5 integrations of the PHASE scan
        for r in sorted(sample):
            a1, a2 = int(t.getcell("ANTENNA1", r)), int(t.getcell("ANTENNA2", r))
            spw, scan = int(ddid[r]), int(t.getcell("SCAN_NUMBER", r))
            time = float(t.getcell("TIME", r))
            f = fields[int(t.getcell("FIELD_ID", r))]
            s = f["flux_jy_ref"] * (freqs[spw] / f["ref_freq_hz"]) ** f["spix"]
            data = t.getcell("DATA", r)
            assert data.shape == (16, 4)
            for c, (p, q) in hands.items():
                if p != q:
                    assert np.all(data[:, c] == 0)
                    continue
                expect = _gain(truth, a1, p, spw, time, scan) * np.conj(_gain(truth, a2, q, spw, time, scan)) * s
                np.testing.assert_allclose(data[:, c], expect, rtol=2e-6, atol=1e-7)
            assert np.all(t.getcell("WEIGHT", r) == 1) and np.all(t.getcell("SIGMA", r) == 1)
            assert not t.getcell("FLAG", r).any()


def test_outlier_scales_antenna_gain(noisefree):
    """|V| on baselines to the outlier antenna in (spw 3, scan 5) is factor x the outlier-free value."""
    truth = json.load(open(noisefree.truth_json))
    assert truth["outliers"] == [{"antenna": 2, "antenna_name": truth["antennas"][2]["name"], "spw": 3,
                                  "scan": 5, "factor": 1.7}]
    g = truth["gains"]
    si = g["spw_ids"].index(3)
    with ct.table(noisefree.ms_path, ack=False) as t:
        sub = t.query("SCAN_NUMBER==5 && DATA_DESC_ID==3 && ANTENNA1==0 && ANTENNA2==2")
        xx = np.abs(sub.getcol("DATA")[:, :, 0])
        times = sub.getcol("TIME")
        f = truth["fields"]["J0510+1800"]
        freqs, _ = _spw_table(noisefree.ms_path)
        s = f["flux_jy_ref"] * (freqs[3] / f["ref_freq_hz"]) ** f["spix"]
        for k, tm in enumerate(times):
            drift = [1 + g["drift_per_hour"][a][0] * (tm - g["t_ref"]) / 3600 for a in (0, 2)]
            plain = g["amp"][0][0][si] * drift[0] * g["amp"][2][0][si] * drift[1] * s
            np.testing.assert_allclose(xx[k], 1.7 * plain, rtol=2e-6)


def test_noise_level_and_weights(noisefree, tmp_path):
    noisy = simulate_ms(str(tmp_path / "noisy.ms"), seed=3, sefd=2000.0, flag_fraction=0.0,
                        flagged_antenna_scan=None, corr=("XX", "XY", "YX", "YY"), gain_amp_drift_rms=0.05,
                        phase_rw_deg=3.0, outliers=((2, 3, 5, 1.7),))
    freqs, _ = _spw_table(noisy.ms_path)
    with ct.table(noisy.ms_path, ack=False) as tn, ct.table(noisefree.ms_path, ack=False) as tf:
        sub_n, sub_f = tn.query("DATA_DESC_ID==5"), tf.query("DATA_DESC_ID==5")
        diff = sub_n.getcol("DATA").astype(np.complex128) - sub_f.getcol("DATA")
        with ct.table(os.path.join(noisy.ms_path, "SPECTRAL_WINDOW"), ack=False) as sw:
            dnu = abs(sw.getcell("CHAN_WIDTH", 5)[0])
        sigma = 2000.0 / math.sqrt(2 * dnu * 6.0)
        assert np.std(diff.real) == pytest.approx(sigma, rel=0.03)
        assert np.std(diff.imag) == pytest.approx(sigma, rel=0.03)
        assert abs(np.mean(diff.real)) < 0.05 * sigma
        np.testing.assert_allclose(sub_n.getcol("SIGMA"), sigma, rtol=1e-6)
        np.testing.assert_allclose(sub_n.getcol("WEIGHT"), 1 / sigma**2, rtol=1e-5)
    assert noisy.truth["noise"]["sigma_per_spw"]["5"] == pytest.approx(sigma, rel=1e-12)


def test_disk_calibrator_follows_2j1x_over_x(disk):
    truth = disk.truth
    f = truth["fields"]["Uranus"]
    assert f["intents"] == ["AMPLITUDE"] and f["disk_diameter_arcsec"] == 3.7
    theta = 3.7 / 206264.80624709636
    freqs, _ = _spw_table(disk.ms_path)
    with ct.table(disk.ms_path, ack=False) as t:
        sub = t.query(f"FIELD_ID=={f['id']} && DATA_DESC_ID==1")
        amp = np.abs(sub.getcol("DATA")[:, :, 0])
        uvw = sub.getcol("UVW")
    q = np.hypot(uvw[:, 0], uvw[:, 1])[:, None] * freqs[1][None, :] / C
    x = math.pi * theta * q
    expect = f["flux_jy_ref"] * (freqs[1] / f["ref_freq_hz"]) ** f["spix"] * np.abs(2 * j1(x) / x)
    np.testing.assert_allclose(amp, expect, rtol=2e-6, atol=1e-6)
    assert np.min(amp / expect.max()) < 0.2  # resolved: baselines beyond the first null exist
    assert np.max(amp) > 0.9 * expect.max()


def test_disk_ephemeris_table(disk):
    field_dir = os.path.join(disk.ms_path, "FIELD")
    with ct.table(field_dir, ack=False) as t:
        names = list(t.getcol("NAME"))
        eph = t.getcol("EPHEMERIS_ID")
        fid = names.index("Uranus")
        assert eph[fid] == 0 and all(e == -1 for i, e in enumerate(eph) if i != fid)
        np.testing.assert_array_equal(t.getcell("PHASE_DIR", fid), [[0.0, 0.0]])
    (path,) = glob.glob(os.path.join(field_dir, "EPHEM0_*.tab"))
    with ct.table(path, ack=False) as e:
        kw = e.getkeywords()
        radii = kw["radii"]["value"]
        assert kw["radii"]["unit"] == "km" and len(radii) == 3
        rho = e.getcol("Rho")
        mjd = e.getcol("MJD")
        # spec §4 step 2: major = 2 R_eq / Delta (arcsec)
        major = 2 * (radii[0] + radii[1]) / 2 / (rho * 1.495978707e8) * 206264.8
        np.testing.assert_allclose(major, 3.7, rtol=1e-6)
        assert kw["MJD0"] + kw["dMJD"] == pytest.approx(mjd[0])
        assert mjd[0] * 86400 < disk.truth["observation"]["start"] < disk.truth["observation"]["end"] < mjd[-1] * 86400
        assert set(e.colnames()) >= {"MJD", "RA", "DEC", "Rho", "RadVel"}


def test_model_column_as_setmodels_leaves_it(disk):
    truth = disk.truth
    freqs, centres = _spw_table(disk.ms_path)
    ids = {n: f["id"] for n, f in truth["fields"].items()}
    with ct.table(disk.ms_path, ack=False) as t:
        amp = t.query(f"FIELD_ID=={ids['Uranus']} && DATA_DESC_ID==3")
        # noise-free and unit gain amplitudes: the AMPLITUDE model equals |DATA|
        np.testing.assert_allclose(np.abs(amp.getcol("MODEL_DATA")), np.abs(amp.getcol("DATA")), rtol=2e-6, atol=1e-6)
        bp = t.query(f"FIELD_ID=={ids['J0522-3627']} && DATA_DESC_ID==3")
        model = bp.getcol("MODEL_DATA")
        spix = truth["fields"]["J0522-3627"]["spix"]
        np.testing.assert_allclose(model[0, :, 0].real, (freqs[3] / centres[3]) ** spix, rtol=1e-6)
        ph = t.query(f"FIELD_ID=={ids['J0510+1800']} && DATA_DESC_ID==3")
        assert np.all(ph.getcol("MODEL_DATA") == 1)


def test_flux_csv_rows(basic):
    truth = basic.truth
    rows = list(csv.reader(open(basic.flux_csv, newline="")))
    assert rows[0] == ["ms", "field", "spw", "I", "Q", "U", "V", "spix", "uvmin", "uvmax", "comment"]
    body = [dict(zip(rows[0], r)) for r in rows[1:]]
    _, centres = _spw_table(basic.ms_path)
    with ct.table(os.path.join(basic.ms_path, "FIELD"), ack=False) as t:
        field_names = list(t.getcol("NAME"))
    expected_fields = {"J0423-0120": ("AMPLITUDE", 1.0, -0.6), "J0522-3627": ("BANDPASS", 4.0, -0.3),
                       "J0510+1800": ("PHASE", 0.8, -0.7), "J0502+1338": ("CHECK", 0.3, -0.5)}
    assert len(body) == 4 * 4
    pattern = re.compile(r"^# field=(\S+) intents=(\S+) origin=DB age=[0-9.]+ "
                         r"queried_at=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$")
    seen = set()
    for row in body:
        assert row["ms"] == "basic.ms"
        name = field_names[int(row["field"])]
        intent, s100, spix = expected_fields[name]
        spw = int(row["spw"])
        assert spw in (1, 3, 5, 7)
        factor = 1.0 if intent == "AMPLITUDE" else 1.1
        assert float(row["I"]) == pytest.approx(factor * s100 * (centres[spw] / 100e9) ** spix, rel=1e-12)
        assert float(row["spix"]) == pytest.approx(spix)
        assert [row[k] for k in "QUV"] == ["0.0"] * 3 and float(row["uvmin"]) == float(row["uvmax"]) == 0.0
        m = pattern.match(row["comment"])
        assert m and m.group(1) == name and m.group(2) == intent
        seen.add((name, spw))
        assert truth["fields"][name]["catalogue"][str(spw)] == float(row["I"])
        assert truth["fields"][name]["flux"][str(spw)] == pytest.approx(float(row["I"]) / factor)
    assert len(seen) == 16


def test_intents_per_scan(basic):
    md = read_metadata(basic.ms_path)
    assert [s.id for s in md.science_spws] == [1, 3, 5, 7]
    intents = [sorted(sc.intents - {"WVR"}) for sc in md.scans]
    assert intents == [["BANDPASS"], ["AMPLITUDE"], ["PHASE"], ["TARGET"], ["PHASE"], ["TARGET"], ["CHECK"],
                       ["PHASE"], ["TARGET"], ["PHASE"]]
    names = [md.field(next(iter(sc.field_ids))).name for sc in md.scans]
    assert names[:3] == ["J0522-3627", "J0423-0120", "J0510+1800"] and names[3] == "NGC1808"
    # WVR and CH_AVG windows have rows only in the first two scans
    assert [sorted(sc.spw_ids) for sc in md.scans[:2]] == [list(range(9))] * 2
    assert all(sorted(sc.spw_ids) == [1, 3, 5, 7] for sc in md.scans[2:])
    with ct.table(os.path.join(basic.ms_path, "STATE"), ack=False) as t:
        modes = list(t.getcol("OBS_MODE"))
    assert "CALIBRATE_BANDPASS#ON_SOURCE,CALIBRATE_WVR#ON_SOURCE" in modes
    assert "CALIBRATE_FLUX#ON_SOURCE,CALIBRATE_WVR#ON_SOURCE" in modes
    assert "OBSERVE_CHECK_SOURCE#ON_SOURCE" in modes and "OBSERVE_TARGET#ON_SOURCE" in modes
    assert md.antenna_names[:3] == ["DA41", "DV01", "DA42"] and len(md.antennas) == 12
    assert md.extra.get("telescope") == "ALMA"


def test_layout_is_alma_like(basic):
    md = read_metadata(basic.ms_path, with_scans=False)
    pos = np.array([a.position for a in md.antennas])
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)[np.triu_indices(len(pos), 1)]
    assert d.min() == pytest.approx(15.0, abs=0.5) and 200 < d.max() <= 500
    lon, lat = math.degrees(md.antennas[0].lon), math.degrees(md.antennas[0].lat)
    assert lon == pytest.approx(-67.7548, abs=0.01) and lat == pytest.approx(-23.0234 + 0.14, abs=0.1)
    r = np.linalg.norm(pos, axis=1)
    assert np.all((r > 6.37e6) & (r < 6.385e6))  # ~5 km above the ellipsoid at latitude -23 deg
    assert all(re.fullmatch(r"[AWSPN]\d{3}", a.station) for a in md.antennas)


def test_flags(basic):
    truth = basic.truth
    bad = truth["flags"]["antenna_scan"]
    with ct.table(basic.ms_path, ack=False) as t:
        sci = t.query("DATA_DESC_ID in [1,3,5,7]")
        flag = sci.getcol("FLAG")
        a1, a2, scan = sci.getcol("ANTENNA1"), sci.getcol("ANTENNA2"), sci.getcol("SCAN_NUMBER")
        in_bad = ((a1 == bad["antenna"]) | (a2 == bad["antenna"])) & (scan == bad["scan"])
        assert in_bad.sum() > 0 and flag[in_bad].all() and sci.getcol("FLAG_ROW")[in_bad].all()
        frac = flag[~in_bad].mean()
        assert frac == pytest.approx(0.05, abs=0.005)
        assert not sci.getcol("FLAG_ROW")[~in_bad].any()


def test_chunked_append_equals_single_append(tmp_path, monkeypatch):
    calls = []
    real_append = MSWriter.append

    def spy(self, rows):
        calls.append(len(rows["TIME"]))
        return real_append(self, rows)

    monkeypatch.setattr(simmod.MSWriter, "append", spy)
    cfg = SimConfig(seed=11, extra_spw_scans=1, **{**SMALL, "target_scan_s": 120.0})
    a = simulate_ms(str(tmp_path / "chunked.ms"), cfg, max_chunk_bytes=1)
    n_chunked = len(calls)
    calls.clear()
    b = simulate_ms(str(tmp_path / "whole.ms"), cfg, max_chunk_bytes=2**40)
    n_whole = len(calls)
    # scan 1 (2 integrations) alternates WVR / FULL_RES / CH_AVG shapes: 2 x 9 appends either way;
    # afterwards one append per integration when chunked, a single append otherwise
    n_int_rest = sum(s["n_int"] for s in a.truth["scans"][1:])
    assert n_int_rest == 28
    assert n_whole == 18 + 1 and n_chunked == 18 + n_int_rest
    with ct.table(a.ms_path, ack=False) as ta, ct.table(b.ms_path, ack=False) as tb:
        assert ta.nrows() == tb.nrows() == sum(calls)
        for col in ("TIME", "ANTENNA1", "ANTENNA2", "DATA_DESC_ID", "SCAN_NUMBER", "STATE_ID", "UVW", "FLAG_ROW"):
            np.testing.assert_array_equal(ta.getcol(col), tb.getcol(col))
    for col in ("DATA", "FLAG", "WEIGHT", "SIGMA"):
        assert _data_md5(a.ms_path, col) == _data_md5(b.ms_path, col)


def test_second_eb_layout_and_session(tmp_path):
    res = simulate_session(str(tmp_path / "sess"), n_ebs=2, seed=21, n_chan=4, **SMALL)
    assert len(res.results) == 2
    first, last = (read_metadata(r.ms_path) for r in res.results)
    assert "AMPLITUDE" in set().union(*(sc.intents for sc in first.scans))
    assert "AMPLITUDE" not in set().union(*(sc.intents for sc in last.scans))
    assert last.start_time > first.end_time
    np.testing.assert_array_equal([a.position for a in first.antennas], [a.position for a in last.antennas])
    assert res.results[0].truth["gains"]["amp"] != res.results[1].truth["gains"]["amp"]
    rows = list(csv.DictReader(open(res.flux_csv, newline="")))
    by_ms = {}
    for r in rows:
        by_ms.setdefault(r["ms"], []).append(r)
    assert sorted(by_ms) == sorted(os.path.basename(p) for p in res.ms_paths)
    assert len(by_ms[os.path.basename(res.ms_paths[0])]) == 4 * 4
    assert len(by_ms[os.path.basename(res.ms_paths[1])]) == 3 * 4  # no AMPLITUDE field


def test_bandpass_is_flux_cal(tmp_path):
    r = simulate_ms(str(tmp_path / "bpf.ms"), seed=2, bandpass_is_flux_cal=True, **SMALL)
    f = r.truth["fields"]["J0423-0120"]
    assert f["intents"] == ["AMPLITUDE", "BANDPASS"] and "J0522-3627" not in r.truth["fields"]
    md = read_metadata(r.ms_path)
    assert [sorted(sc.intents - {"WVR"}) for sc in md.scans[:2]] == [["BANDPASS"], ["AMPLITUDE"]]
    assert md.scans[0].field_ids == md.scans[1].field_ids


def test_cli_main_writes_ms(tmp_path, capsys):
    out = tmp_path / "cli.ms"
    assert main([str(out), "--n-ant", "4", "--n-chan", "4", "--n-cycles", "1", "--sefd", "0"]) == 0
    md = read_metadata(str(out))
    assert len(md.antennas) == 4 and all(s.num_chan == 4 for s in md.science_spws)
    assert os.path.exists(str(tmp_path / "cli.flux.csv")) and os.path.exists(str(tmp_path / "cli.truth.json"))
    assert str(out) in capsys.readouterr().out


def test_create_ms_and_writer_errors(tmp_path, basic):
    with pytest.raises(WriteError):
        simulate_ms(basic.ms_path, seed=7)  # exists, no overwrite
    md = read_metadata(basic.ms_path, with_scans=False)
    path = str(tmp_path / "empty.ms")
    create_ms(path, md.antennas, md.spws, ("XX", "YY"), md.fields, ["OBSERVE_TARGET#ON_SOURCE"],
              {"time_range": (0.0, 1.0)}, corr_types_per_spw={0: ("I",)})
    with pytest.raises(WriteError):
        create_ms(path, md.antennas, md.spws, ("XX", "YY"), md.fields, ["X"], {})
    with MSWriter(path) as w:
        with pytest.raises(MissingColumnError):
            w.append({"TIME": np.zeros(1)})
        n = 3
        rows = {"TIME": np.arange(n, dtype=float), "INTERVAL": np.ones(n), "ANTENNA1": np.zeros(n, np.int32),
                "ANTENNA2": np.ones(n, np.int32), "FIELD_ID": np.zeros(n, np.int32),
                "DATA_DESC_ID": np.ones(n, np.int32), "STATE_ID": np.zeros(n, np.int32),
                "SCAN_NUMBER": np.ones(n, np.int32), "UVW": np.zeros((n, 3)),
                "DATA": np.ones((n, 16, 2), np.complex64), "FLAG": np.zeros((n, 16, 2), bool),
                "WEIGHT": np.ones((n, 2), np.float32), "SIGMA": np.ones((n, 2), np.float32)}
        with pytest.raises(MissingColumnError):
            w.append({**rows, "MODEL_DATA": rows["DATA"]})  # created without MODEL_DATA
        assert w.append(rows) == n
    with ct.table(path, ack=False) as t:
        assert t.nrows() == 3 and np.all(t.getcol("EXPOSURE") == 1) and not t.getcol("FLAG_ROW").any()
        np.testing.assert_array_equal(t.getcol("TIME_CENTROID"), np.arange(3.0))
    with ct.table(os.path.join(path, "POLARIZATION"), ack=False) as t:
        assert list(t.getcol("NUM_CORR")) == [1, 2]
        np.testing.assert_array_equal(t.getcell("CORR_TYPE", 1), [9, 12])
        np.testing.assert_array_equal(t.getcell("CORR_PRODUCT", 1), [[0, 0], [1, 1]])


def test_config_validation():
    with pytest.raises(ValueError):
        SimConfig(corr=("RR", "LL"))
    with pytest.raises(ValueError):
        SimConfig(with_ephemeris=True)
    with pytest.raises(TypeError):
        SimConfig().with_overrides(n_antennas=3)
    bench = SimConfig.benchmark()
    nbl = bench.n_ant * (bench.n_ant - 1) // 2
    n_int = (bench.bandpass_scan_s + bench.flux_scan_s + bench.n_cycles * (bench.phase_scan_s + bench.target_scan_s)
             + bench.check_scan_s + bench.phase_scan_s) / bench.int_time
    size_gb = n_int * nbl * bench.n_spw * bench.n_chan * 2 * 8 / 1e9
    assert 4.0 < size_gb < 4.8


def test_duration_chooses_cycle_count(tmp_path):
    r = simulate_ms(str(tmp_path / "dur.ms"), seed=4, n_ant=3, n_chan=4, duration_s=1800.0)
    obs = r.truth["observation"]
    per_cycle = 30.0 + 60.0 + 2 * 12.0  # PHASE + TARGET scans and their gaps (default lengths)
    assert abs((obs["end"] - obs["start"]) - 1800.0) <= per_cycle / 2
    # one cycle: BP 60 + FLUX 60 + PH 30 + TGT 60 + CHECK 30 + PH 30 s + 5 gaps of 12 s = 330 s;
    # each further cycle adds 114 s -> 1 + round((1800 - 330) / 114) = 14 cycles
    assert sum(s["intent"] == "TARGET" for s in r.truth["scans"]) == 14
