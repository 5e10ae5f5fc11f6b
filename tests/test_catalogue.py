"""flux.csv reading/writing (spec §7.1) and session-adopted fluxes (spec §12)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from fluxflow.errors import CatalogueError, CatalogueWarning, InsufficientDataWarning, SelectionError, WriteError
from fluxflow.models import CatalogueRow, FluxMeasurement, catalogue_lookup, make_comment, read_flux_csv, \
    write_flux_csv
from fluxflow.transfer import adopt_session_fluxes

HEADER = "ms,field,spw,I,Q,U,V,spix,uvmin,uvmax,comment\n"
C1 = "# field=J1924-2914 intents=BANDPASS,PHASE origin=DB age=-3.0 queried_at=2024-01-02 03:04:05 UTC"


def write(tmp_path, text: str, name: str = "flux.csv") -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def test_current_layout_with_comment_fields(tmp_path):
    path = write(tmp_path, HEADER
                 + f'uid_A.ms,2,17,3.25,0.0,0.0,0.0,-0.512,0.0,0.0,"{C1}"\n'
                 + 'uid_A.ms,3,17,1.0,0,0,0,0.0,0,0,# field=J2000 intents=AMPLITUDE origin=N/A age=N/A '
                   'queried_at=N/A\n')
    rows = read_flux_csv(path)
    a, b = rows
    assert (a.ms, a.field_id, a.spw_id, a.I, a.spix) == ("uid_A.ms", 2, 17, 3.25, -0.512)
    assert (a.field_name, a.origin, a.age, a.queried_at) == ("J1924-2914", "DB", -3.0, "2024-01-02 03:04:05 UTC")
    assert a.line == 2 and b.line == 3
    assert (b.field_name, b.origin, b.age, b.queried_at) == ("J2000", None, None, None)


def test_legacy_and_cycle7_headers(tmp_path):
    legacy = write(tmp_path, "ms,field,spw,I,Q,U,V,spix,comment\n"
                   "x.ms,0,1,2.0,0.1,0.2,0.3,0.25,# field=F intents=PHASE origin=Source.xml age=1.5\n", "a.csv")
    [r] = read_flux_csv(legacy)
    assert (r.Q, r.U, r.V, r.spix, r.uvmin, r.uvmax, r.origin, r.age) == (0.1, 0.2, 0.3, 0.25, 0.0, 0.0,
                                                                           "Source.xml", 1.5)
    c7 = write(tmp_path, "ms,field,spw,I,Q,U,V,spix,origin,query_date,age,comment\n"
               "x.ms,0,1,2.0,0,0,0,-0.7,DB,2019-10-01 00:00:00 UTC,12.0,'J0510+1800' intent=BANDPASS,PHASE\n",
               "b.csv")
    [r] = read_flux_csv(c7)
    assert (r.origin, r.age, r.queried_at, r.field_name, r.spix) == ("DB", 12.0, "2019-10-01 00:00:00 UTC",
                                                                    "J0510+1800", -0.7)
    assert r.comment == "'J0510+1800' intent=BANDPASS,PHASE"  # unquoted commas rejoined


def test_analysisutils_origin_and_band3age(tmp_path):
    path = write(tmp_path, HEADER + 'x.ms,0,0,1.1,0,0,0,0,0,0,"1.1 Jy, freq=100 GHz, origin=DB Band3age=4.5"\n')
    [r] = read_flux_csv(path)
    assert r.origin == "analysisUtils" and r.age == 4.5


def test_rows_of_other_mses_are_filtered_by_basename(tmp_path):
    path = write(tmp_path, HEADER + "a.ms,0,0,1,0,0,0,0,0,0,\nb.ms,0,0,2,0,0,0,0,0,0,\n")
    assert [r.I for r in read_flux_csv(path, ms_name="/some/dir/b.ms/")] == [2.0]
    assert len(read_flux_csv(path)) == 2
    assert read_flux_csv(path, ms_name="c.ms") == []


def test_unparsable_spix_becomes_zero_with_a_warning(tmp_path):
    path = write(tmp_path, HEADER + "a.ms,0,0,1,0,0,0,abc,0,0,\na.ms,0,1,1,0,0,0,,0,0,\n")
    with pytest.warns(CatalogueWarning) as rec:
        rows = read_flux_csv(path)
    assert [str(w.message) for w in rec] == ["flux.csv, line 2: spix 'abc' is not a number; using 0",
                                             "flux.csv, line 3: spix '' is not a number; using 0"]
    assert [r.spix for r in rows] == [0.0, 0.0]
    nospix = write(tmp_path, "ms,field,spw,I,Q,U,V\na.ms,0,0,1,0,0,0\n", "n.csv")
    with pytest.warns(CatalogueWarning, match="no spix column"):
        assert read_flux_csv(nospix)[0].spix == 0.0


@pytest.mark.parametrize("body, problem", [
    ("a.ms,0,0,x1,0,0,0,0,0,0,\n", r"line 2: Stokes I value 'x1' is not a number"),
    ("a.ms,0,0,1,0,0,q,0,0,0,\n", r"line 2: Stokes V value 'q' is not a number"),
    ("a.ms,0,0,-0.5,0,0,0,0,0,0,\n", r"line 2: Stokes I is negative"),
    ("a.ms,0,0,nan,0,0,0,0,0,0,\n", r"line 2: Stokes I value 'nan' is not finite"),
    ("a.ms,0,0,1,0,0,0,0,0,0,\n\na.ms,1,0,1,0,0,0,0,0,0,\na.ms,0,0,2,0,0,0,0,0,0,\n",
     r"line 5: duplicate row for ms a.ms field 0 spw 0 \(first given at line 2\)"),
    ("a.ms,one,0,1,0,0,0,0,0,0,\n", r"line 2: field id 'one' is not an integer"),
    ("a.ms,0,0,1\n", r"line 2: missing value for column 'Q'"),
])
def test_malformed_rows_name_the_problem_and_line(tmp_path, body, problem):
    path = write(tmp_path, HEADER + body)
    with pytest.raises(CatalogueError, match=r"flux\.csv, " + problem):
        read_flux_csv(path)


def test_malformed_header_and_empty_file(tmp_path):
    with pytest.raises(CatalogueError, match=r"line 1: header lacks required column\(s\) spw, V"):
        read_flux_csv(write(tmp_path, "ms,field,I,Q,U,spix,comment\na.ms,0,1,0,0,0,\n"))
    with pytest.raises(CatalogueError, match="empty file"):
        read_flux_csv(write(tmp_path, "\n\n", "e.csv"))
    with pytest.raises(CatalogueError, match="cannot read"):
        read_flux_csv(tmp_path / "missing.csv")


def test_write_then_read_round_trip(tmp_path):
    rows = [CatalogueRow("uid_A.ms", 2, 17, 0.1 + 0.2, 0.0, 0.0, 0.0, spix=-0.71234, comment=C1),
            CatalogueRow("uid_A.ms", 3, 19, 1.0 / 3.0, comment=make_comment("J2", ["PHASE", "CHECK"]))]
    path = tmp_path / "out" / "flux.csv"
    path.parent.mkdir()
    write_flux_csv(path, rows)
    text = path.read_text().splitlines()
    assert text[0] == "ms,field,spw,I,Q,U,V,spix,uvmin,uvmax,comment"
    assert text[1].startswith("uid_A.ms,2,17,0.30000000000000004,0.0,0.0,0.0,-0.712,0.0,0.0,")
    assert os.listdir(path.parent) == ["flux.csv"]  # no temporary file left behind
    back = read_flux_csv(path)
    assert back[0].I == 0.1 + 0.2 and back[1].I == 1.0 / 3.0 and back[0].spix == -0.712
    assert back[1].field_name == "J2" and back[1].comment == \
        "# field=J2 intents=CHECK,PHASE origin=N/A age=N/A queried_at=N/A"
    assert catalogue_lookup(back, "/x/uid_A.ms", 3, 19) == back[1]
    assert catalogue_lookup(back, "uid_A.ms", 3, 17) is None
    with pytest.raises(WriteError):
        write_flux_csv(tmp_path / "nodir" / "flux.csv", rows)


def test_catalogue_row_as_measurement():
    m = CatalogueRow("a.ms", 1, 2, 1.5, spix=-0.5, origin="DB", field_name="J").to_measurement(100e9)
    assert m == FluxMeasurement(1, "J", 2, 1.5, 0.0, origin="DB", spix=-0.5, freq=100e9)
    assert FluxMeasurement(0, "J", 0, 2.0, 0.5).snr == 4.0


# -- session-adopted fluxes ------------------------------------------------------------------------

def test_adopted_means_and_standard_errors():
    spw_names = {"a.ms": {0: "X0", 1: "X1"}, "b.ms": {5: "X0", 6: "X1"}, "c.ms": {2: "X0", 3: "X1"}}
    per_ms = {
        "a.ms": [FluxMeasurement(1, "J1", 0, 1.0, 0.05), FluxMeasurement(1, "J1", 1, 2.0, 0.07),
                 FluxMeasurement(4, "J9", 0, 7.0, 0.3)],
        "b.ms": [FluxMeasurement(2, "J1", 5, 1.2, 0.04), FluxMeasurement(2, "J1", 6, 2.0, 0.02)],
        "c.ms": [],
    }
    out = adopt_session_fluxes(per_ms, ["c.ms"], spw_names, field_ids={"c.ms": {"J1": 0, "J9": 3}})
    got = {(m.field_id, m.spw_id): m for m in out["c.ms"]}
    assert set(got) == {(0, 2), (0, 3), (3, 2)}
    assert got[(0, 2)].I == pytest.approx(1.1)
    assert got[(0, 2)].I_err == pytest.approx(np.std([1.0, 1.2], ddof=1) / math.sqrt(2))  # = 0.1
    assert got[(0, 2)].I_err == pytest.approx(0.1)
    assert got[(0, 3)].I == pytest.approx(2.0) and got[(0, 3)].I_err == 0.0  # identical values
    assert got[(3, 2)].I == 7.0 and got[(3, 2)].I_err == 0.3  # single measurement keeps its error
    assert all(m.origin == "adopted" for m in out["c.ms"])


def test_adopted_without_matching_fields_warns_and_unique_spw_names_required():
    per_ms = {"a.ms": [FluxMeasurement(1, "J1", 0, 1.0, 0.05)]}
    with pytest.warns(InsufficientDataWarning, match="c.ms"):
        out = adopt_session_fluxes(per_ms, ["c.ms"], {"a.ms": {0: "X0"}, "c.ms": {0: "X0"}},
                                   field_ids={"c.ms": {"Other": 0}})
    assert out == {"c.ms": []}
    default_ids = adopt_session_fluxes(per_ms, ["c.ms"], {"a.ms": {0: "X0"}, "c.ms": {4: "X0"}})
    assert [(m.field_id, m.field_name, m.spw_id) for m in default_ids["c.ms"]] == [(-1, "J1", 4)]
    with pytest.raises(SelectionError, match="spw name 'X0'"):
        adopt_session_fluxes(per_ms, ["c.ms"], {"a.ms": {0: "X0"}, "c.ms": {0: "X0", 1: "X0"}})
