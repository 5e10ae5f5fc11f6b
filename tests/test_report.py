"""The HTML report (spec §11 weblog, §10 QA bands) of a real simulated run.

One module fixture simulates two small EBs — `a.ms` with a flux calibrator and one injected
amplitude outlier, `b.ms` without a flux calibrator (it adopts the session fluxes) — runs the flux
transfer on the synchronous scheduler and builds the report. The flux-table checks parse the
numbers shown and compare them with ``results.json`` (the formatting rule is re-derived here, not
imported). Browser tests load the page in headless Chromium over the DevTools protocol
(tests/browser.py) and are skipped only when no chromium executable is installed.
"""

from __future__ import annotations

import copy
import html
import json
import math
import os
import re
import shutil
import struct
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest

import fluxflow
from fluxflow.report import build_report, format_flux, format_frequency, format_percent, qa_band
from fluxflow.report import plots as report_plots
from fluxflow.report.plots import uv_limits
from fluxflow.results import Results, ms_record
from fluxflow.simulate import simulate_ms
from fluxflow.tasks import MSResult

from browser import Browser, find_chromium

CHROMIUM = find_chromium()
browser = pytest.mark.browser
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                                    "(Debian: apt-get install -y --no-install-recommends chromium)")

EXTERNAL = ("analysisUtils", "DB", "Source.xml")
PREFIX = {"": 1.0, "m": 1e-3, "µ": 1e-6, "n": 1e-9}
#: QA band colours of the report's stylesheet, as the browser computes them.
BAND_RGB = {"red": "rgb(242, 196, 196)", "yellow": "rgb(251, 231, 166)", "blue": "rgb(199, 222, 245)",
            "green": "rgb(205, 235, 196)", "none": "rgb(230, 230, 230)"}
OUTLIER = (3, 1, 3, 10.0)  # antenna 3 (DV02), spw 1, scan 3 (PHASE), gain × 10


# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    simulate_ms(str(d / "a.ms"), seed=1, n_ant=8, n_chan=8, n_cycles=2, outliers=(OUTLIER,))
    simulate_ms(str(d / "b.ms"), seed=2, n_ant=8, n_chan=8, n_cycles=2, with_flux_cal=False)
    out = str(d / "out")
    res = fluxflow.gfluxscale(vis=[str(d / "a.ms"), str(d / "b.ms")], cluster="sync", output_dir=out)
    index = build_report(out)
    with open(os.path.join(out, "results.json")) as fh:
        saved = json.load(fh)
    return SimpleNamespace(dir=d, out=out, index=index, results=res, saved=saved)


@pytest.fixture(scope="module")
def varied(run, tmp_path_factory):
    """A report of `a.ms` of the same run with QA scores in every colour band, no outlier commands
    and one NaN flux, and a failed MS (a record as ms_record writes it for an MS that could not be
    read)."""
    records = copy.deepcopy(run.saved["ms"])
    a = records[0]
    a["flag_commands"] = []
    a["calibrated_fluxes"][0]["I"] = None  # a NaN flux, as results.json stores it
    base = dict(metric_value=0.0, metric_units="", applies_to={"vis": ["a.ms"]})
    a["qa"] = a["qa"][:1] + [dict(base, metric_name=f"synthetic_{s}", score=s, message=f"synthetic {s}",
                                  short_message="synthetic") for s in (0.1, 0.329, 0.33, 0.5, 0.66, 0.89, 0.9)]
    failed = ms_record(MSResult(ms="/nowhere/c.ms", ms_name="c.ms", error="NotAMeasurementSetError: no table"))
    out = tmp_path_factory.mktemp("varied")
    index = build_report(str(out), Results(records=[a, failed], params=run.saved["params"]))
    return SimpleNamespace(out=str(out), index=index)


@pytest.fixture(scope="module")
def chromium():
    with Browser(CHROMIUM) as b:
        yield b


# ---------------------------------------------------------------------------------------------
# independent parsing of what the page shows
_FLUX_RE = re.compile(r"^(-?\d+(?:\.(\d+))?) ± (\d+(?:\.\d+)?) ([µmn]?)Jy \(([0-9.e-]+)%\)$")
_CAT_RE = re.compile(r"^(-?\d+\.(\d{3})) ([µmn]?)Jy$")


def parse_flux(text: str) -> tuple[float, float, float, float]:
    """'315.9 ± 2.6 mJy (0.8%)' -> (value Jy, error Jy, half a unit of the last digit in Jy, pct)."""
    m = _FLUX_RE.match(text)
    assert m, f"not a 'value ± unc unit (pct%)' string: {text!r}"
    scale = PREFIX[m.group(4)]
    dec = len(m.group(2) or "")
    return float(m.group(1)) * scale, float(m.group(3)) * scale, 0.5 * 10 ** -dec * scale, float(m.group(5))


def first_external(rec: dict, fid: int, spw: int) -> dict | None:
    for row in rec["plan"]["catalogue"]:
        if row["field_id"] == fid and row["spw_id"] == spw and row["origin"] in EXTERNAL:
            return row
    return None


def assert_flux_rows(rows: list[dict], saved: dict) -> None:
    """The flux table holds every (MS, field, spw) of results.json with its numbers."""
    by_key = {(r["ms"], int(r["field_id"]), int(r["spw"])): r for r in rows}
    n = 0
    for rec in saved["ms"]:
        if rec.get("error"):
            continue
        fs = {(m["field_id"], m["spw_id"]): m for m in rec["derived_fluxes"]}
        cv = {(m["field_id"], m["spw_id"]): m for m in rec["calibrated_fluxes"]}
        for fid, spw in set(fs) | set(cv):
            n += 1
            row = by_key[(rec["ms_name"], fid, spw)]
            c = cv[(fid, spw)]
            v, e, half, pct = parse_flux(row["calibrated"])
            assert abs(v - c["I"]) <= half * 1.0001 and abs(e - c["I_err"]) <= half * 1.0001
            shown_pct = 100 * c["I_err"] / c["I"]
            assert abs(pct - shown_pct) <= (0.05 if shown_pct >= 0.1 else 0.5 * shown_pct)
            if c["origin"] == "adopted":
                assert row["adopted"] and row["fluxscale"] == "N/A"
            else:
                d = fs[(fid, spw)]
                v, e, half, _ = parse_flux(row["fluxscale"])
                assert abs(v - d["I"]) <= half * 1.0001 and abs(e - d["I_err"]) <= half * 1.0001
            cat = first_external(rec, fid, spw)
            m = _CAT_RE.match(row["catalogue"])
            assert m, row["catalogue"]
            scale = PREFIX[m.group(3)]
            assert abs(float(m.group(1)) * scale - cat["I"]) <= 0.0005 * scale * 1.0001
            assert row["ratio"] == f"{c['I'] / cat['I']:.3f}"
    assert n == len(rows) and n > 0


class _FluxTable(HTMLParser):
    """Rows of #flux-table from the HTML text: data attributes and the value span of each cell."""

    CELLS = ("fluxscale", "calibrated", "catalogue", "ratio")

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self._row: dict | None = None
        self._cell: str | None = None
        self._capture = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "tr" and "data-ms" in a:
            self._row = {"ms": a["data-ms"], "field_id": a["data-field-id"], "spw": a["data-spw"],
                         "adopted": "adopted" in classes, **{c: "" for c in self.CELLS}}
        elif tag == "td" and self._row is not None:
            self._cell = next((c for c in self.CELLS if c in classes), None)
        elif tag == "span" and "v" in classes and self._cell:
            self._capture = True

    def handle_endtag(self, tag):
        if tag == "span":
            self._capture = False
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._capture:
            self._row[self._cell] += data


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def tags(page: str) -> list[tuple[str, dict]]:
    p = _Tags()
    p.feed(page)
    return p.tags


def png_size(path: str) -> tuple[int, int]:
    with open(path, "rb") as fh:
        head = fh.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


def section(page: str, sid: str) -> str:
    start = page.index(f'<section id="{sid}">')
    return page[start:page.index("</section>", start)]


# ---------------------------------------------------------------------------------------------
# formatting and bands (spec §11, §10)
@pytest.mark.parametrize("value,err,text", [
    (4.12312, 0.00152, "4.1231 ± 0.0015 Jy (0.04%)"),
    (0.31591, 0.00261, "315.9 ± 2.6 mJy (0.8%)"),
    (6.923, 2.80, "6.9 ± 2.8 Jy (40.4%)"),
    (2.5e-6, 1e-7, "2.50 ± 0.10 µJy (4.0%)"),
    (4.1216, None, "4.122 Jy"),
    (0.0123456, 0.0, "12.346 mJy"),
    (None, None, "N/A"),
])
def test_format_flux(value, err, text):
    assert format_flux(value, err) == text


def test_format_percent_and_frequency():
    assert format_percent(0.037) == "0.04%"
    assert format_percent(0.1) == "0.1%"
    assert format_percent(12.345) == "12.3%"
    assert format_frequency(90.5e9) == "90.500 GHz"
    assert format_frequency(1.875e9) == "1.875 GHz"
    assert format_frequency(62.5e6) == "62.500 MHz"
    assert format_frequency(None) == "N/A"


@pytest.mark.parametrize("score,band", [
    (0.0, "red"), (0.3299, "red"), (0.33, "yellow"), (0.6599, "yellow"), (0.66, "blue"),
    (0.8999, "blue"), (0.9, "green"), (1.0, "green"), (None, "none"), (math.nan, "none"),
])
def test_qa_band(score, band):
    assert qa_band(score) == band


@pytest.mark.parametrize("text,limits", [
    ("<172.010m", (0.0, 172.01)), (">10m", (10.0, math.inf)), ("20~300m", (20.0, 300.0)),
    ("1~2km", (1000.0, 2000.0)), ("", None), ("<50klambda", None),
])
def test_uv_limits(text, limits):
    assert uv_limits(text) == limits


# ---------------------------------------------------------------------------------------------
# the report of the run (no browser)
def test_report_folder_is_self_contained(run):
    assert run.index == os.path.join(run.out, "report", "index.html")
    page = read(run.index)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    report_dir = os.path.dirname(run.index)
    imgs = [a for t, a in tags(page) if t == "img"]
    # flux vs frequency: 3 transfer fields × 2 EBs; uv and gains: a.ms only; across EBs: 3 fields
    assert len(imgs) == 6 + 1 + 1 + 3
    for a in imgs:
        w, h = png_size(os.path.join(report_dir, a["src"]))
        assert (w, h) == (int(a["width"]), int(a["height"])) and w > 100 and h > 100
    for t, a in tags(page):
        href = a.get("href", "") if t == "a" else ""
        if href and not href.startswith("#"):
            assert os.path.exists(os.path.normpath(os.path.join(report_dir, href))), href
    assert not [n for n in os.listdir(run.out) if n.startswith(".report")]  # no build leftovers


def test_flux_table_holds_the_run_numbers(run):
    p = _FluxTable()
    p.feed(read(run.index))
    assert_flux_rows(p.rows, run.saved)
    adopted = {r["ms"] for r in p.rows if r["adopted"]}
    assert adopted == {"b.ms"}


def test_summary_flags_and_plots_content(run):
    page = read(run.index)
    summary = html.unescape(section(page, "summary"))
    plan = run.saved["ms"][0]["plan"]
    assert "J0423-0120 (#1) AMPLITUDE" in summary
    for fid, name in plan["transfer"].items():
        intents = [i for i in plan["field_intents"][fid] if i in plan["transintents"]]
        assert f"{name} (#{fid}) {','.join(intents)}" in summary
    assert plan["refant"][0] in summary
    assert "MSs using adopted flux calibrations" in summary and "b.ms" in summary
    flags = html.unescape(section(page, "flagging"))
    cmds = run.saved["ms"][0]["flag_commands"]
    assert len(cmds) == 1 and "antenna='DV02&&&' spw='1'" in cmds[0]
    assert cmds[0] in flags
    assert "none (adopted fluxes: no amplitude solve)" in flags
    params = html.unescape(section(page, "params"))
    assert "amp_outlier_sigma" in params and "50.0" in params
    assert "not written (fluxflow run --performance-report writes it)" in page


def test_cli_report_rebuilds_from_results_json_alone(run, monkeypatch):
    """`fluxflow report OUTDIR` with the MSs gone and casacore disabled gives the same tables."""
    import casacore.tables

    from fluxflow.cli import main

    before = read(run.index)
    moved = []
    try:
        for ms in ("a.ms", "b.ms"):
            src = os.path.join(run.dir, ms)
            os.rename(src, src + ".away")
            moved.append(src)

        def no_tables(*a, **k):
            raise AssertionError("the report must not open a table")

        monkeypatch.setattr(casacore.tables, "table", no_tables)
        shutil.rmtree(os.path.join(run.out, "report"))
        assert main(["report", run.out]) == 0
    finally:
        for src in moved:
            os.rename(src + ".away", src)
    after = read(run.index)
    for sid in ("summary", "qa", "fluxes", "flagging", "params"):
        assert section(after, sid) == section(before, sid)
    assert len([t for t, _ in tags(after) if t == "img"]) == len([t for t, _ in tags(before) if t == "img"])


def test_failed_build_leaves_previous_report(run, monkeypatch):
    before = read(run.index)
    images = sorted(os.listdir(os.path.join(run.out, "report", "img")))

    def boom(*a, **k):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(report_plots, "gain_vs_time", boom)
    with pytest.raises(RuntimeError, match="plot failed"):
        build_report(run.out)
    assert read(run.index) == before
    assert sorted(os.listdir(os.path.join(run.out, "report", "img"))) == images
    assert not [n for n in os.listdir(run.out) if n.startswith(".report")]


def test_resolved_calibrator_gets_restricted_panel(run, tmp_path):
    rec = copy.deepcopy(run.saved["ms"][0])
    one, two = str(tmp_path / "one.png"), str(tmp_path / "two.png")
    assert report_plots.uv_amplitude(rec, 1, one)
    rec["plan"]["resantenna"], rec["plan"]["uvrange"] = "DA41,DV01,DA42&", "<150m"
    assert report_plots.uv_amplitude(rec, 1, two)
    w1, _ = png_size(one)
    w2, _ = png_size(two)
    assert w2 > 1.7 * w1  # a second panel
    assert not report_plots.uv_amplitude(rec, 0, str(tmp_path / "none.png"))  # not a reference field


def test_varied_report_bands_failed_ms_and_no_flags(varied):
    page = read(varied.index)
    rows = re.findall(r'<tr>\s*<td>[^<]*</td>\s*<td class="qa qa-(\w+)" data-score="([^"]*)">', page)
    rows = [(score, band) for band, score in rows]
    assert len(rows) == 8
    assert {band for _, band in rows} == {"red", "yellow", "blue", "green"}
    for score, band in rows:
        assert qa_band(float(score)) == band
    assert [float(s) for s, _ in rows] == sorted(float(s) for s, _ in rows)  # lowest first
    summary = html.unescape(section(page, "summary"))
    assert "c.ms" in summary and "NotAMeasurementSetError: no table" in summary
    flags = re.search(r"<td>a\.ms</td><td class=\"num\">0</td>\s*<td class=\"flags\">none", page)
    assert flags
    p = _FluxTable()
    p.feed(page)
    assert p.rows[0]["calibrated"] == "N/A" and p.rows[0]["ratio"] == "N/A"
    assert p.rows[1]["calibrated"] != "N/A"


# ---------------------------------------------------------------------------------------------
# in a real browser
PAGE_JS = r"""
(() => {
  const txt = (el) => el ? el.textContent.replace(/\s+/g, ' ').trim() : null;
  return {
    title: document.title,
    overflow: document.documentElement.scrollWidth - window.innerWidth,
    images: [...document.images].map(i => ({src: i.getAttribute('src'), complete: i.complete,
                                            w: i.naturalWidth, h: i.naturalHeight})),
    flux: [...document.querySelectorAll('#flux-table tbody tr')].map(tr => ({
      ms: tr.dataset.ms, field_id: tr.dataset.fieldId, spw: tr.dataset.spw,
      adopted: tr.classList.contains('adopted'),
      fluxscale: txt(tr.querySelector('td.fluxscale .v')), calibrated: txt(tr.querySelector('td.calibrated .v')),
      catalogue: txt(tr.querySelector('td.catalogue .v')), ratio: txt(tr.querySelector('td.ratio .v'))})),
    qa: [...document.querySelectorAll('td.qa')].map(td => ({
      score: td.dataset.score, text: txt(td), bg: getComputedStyle(td).backgroundColor})),
  };
})()
"""


def _band_of_cell(cell: dict) -> str:
    return qa_band(float(cell["score"])) if cell["score"] else "none"


@browser
@needs_chromium
def test_browser_page_loads_with_images_numbers_and_colours(run, chromium):
    page = chromium.load(run.index, evaluate=PAGE_JS)
    assert page.errors == [], page.errors
    v = page.value
    assert v["title"].startswith("fluxflow")
    assert v["overflow"] <= 0  # nothing wider than a 1280 px window
    assert len(v["images"]) == 11
    for img in v["images"]:
        assert img["complete"] and img["w"] > 0 and img["h"] > 0, img
    assert_flux_rows(v["flux"], run.saved)
    assert len(v["qa"]) == sum(len(r["qa"]) for r in run.saved["ms"]) + len(run.saved["ms"])  # + summary
    for cell in v["qa"]:
        assert cell["bg"] == BAND_RGB[_band_of_cell(cell)], cell


@browser
@needs_chromium
def test_browser_qa_colours_cover_every_band(varied, chromium):
    page = chromium.load(varied.index, evaluate=PAGE_JS)
    assert page.errors == [], page.errors
    seen = set()
    for cell in page.value["qa"]:
        band = _band_of_cell(cell)
        assert cell["bg"] == BAND_RGB[band], cell
        seen.add(band)
    assert seen == set(BAND_RGB)  # the failed c.ms has no scores: 'none' (grey)
    assert all(img["w"] > 0 for img in page.value["images"])


@browser
@needs_chromium
def test_browser_reports_a_broken_image(tmp_path, chromium):
    """The console check can fail: a missing image is reported as an error."""
    (tmp_path / "index.html").write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title>'
                                         '</head><body><img src="missing.png"></body></html>')
    page = chromium.load(tmp_path / "index.html", evaluate="document.images[0].naturalWidth")
    assert page.value == 0
    assert any("missing.png" in m["text"] for m in page.errors)
