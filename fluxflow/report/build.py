"""Build the HTML report of a run from its :class:`~fluxflow.results.Results` (spec §11, §10).

The report is a folder ``<outdir>/report/`` holding ``index.html`` (CSS inline, no scripts, no
network resources) and ``img/*.png``; it links to the run's files beside it (``results.json``,
``derived_fluxes.csv``, flag commands, the Dask performance report). It is built in a temporary
folder inside `outdir` and swapped in by renames, so a failed build leaves the previous report.
Only ``results.json`` is read: no MeasurementSet is opened.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from fluxflow.report import plots

REPORT_DIR = "report"
IMG_DIR = "img"
TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")
NA = "N/A"

#: QA colour bands of the pipeline weblog: (upper bound, band name), first match wins.
QA_BANDS: tuple[tuple[float, str], ...] = ((0.33, "red"), (0.66, "yellow"), (0.9, "blue"))

#: Catalogue origins as the flux table names them (the plots' legends use the long names).
SHORT_ORIGIN = {"Source.xml": "ASDM", "DB": "online", "analysisUtils": "analysisUtils"}

_JY_PREFIXES = ((1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"))
_HZ_PREFIXES = ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""))


# ---------------------------------------------------------------------------------------------
# formatting (spec §11: SI prefixes, "value ± unc unit (pct%)", percent with 1 decimal or 1
# significant digit below 0.1 %)
def qa_band(score: float | None) -> str:
    """'red' (< 0.33), 'yellow' (< 0.66), 'blue' (< 0.9), 'green', or 'none' for a missing score."""
    if score is None or not math.isfinite(score):
        return "none"
    for upper, band in QA_BANDS:
        if score < upper:
            return band
    return "green"


def _prefix(value: float, prefixes: Sequence[tuple[float, str]]) -> tuple[float, str]:
    a = abs(value)
    for scale, p in prefixes:
        if a >= scale:
            return scale, p
    return prefixes[-1]


def format_percent(pct: float) -> str:
    """1 decimal, or 1 significant digit below 0.1 % (spec §11)."""
    return f"{pct:.1f}%" if abs(pct) >= 0.1 else f"{pct:.1g}%"


def format_flux(value: float | None, err: float | None = None, unit: str = "Jy") -> str:
    """'4.1231 ± 0.0015 Jy (0.04%)', '315.9 ± 2.6 mJy (0.8%)'; one SI prefix chosen by the value,
    decimals so that the uncertainty shows two significant digits; without an uncertainty 3
    decimals ('4.122 Jy')."""
    if value is None or not math.isfinite(value):
        return NA
    scale, p = _prefix(value, _JY_PREFIXES) if value else (1.0, "")
    v = value / scale
    if err is None or not math.isfinite(err) or err <= 0:
        return f"{v:.3f} {p}{unit}"
    e = err / scale
    dec = min(6, max(0, 1 - math.floor(math.log10(e))))
    pct = format_percent(100.0 * err / abs(value)) if value else NA
    return f"{v:.{dec}f} ± {e:.{dec}f} {p}{unit} ({pct})"


def format_frequency(hz: float | None, decimals: int = 3) -> str:
    """'90.500 GHz', '1.875 GHz', '62.500 MHz'."""
    if hz is None or not math.isfinite(hz):
        return NA
    scale, p = _prefix(hz, _HZ_PREFIXES)
    return f"{hz / scale:.{decimals}f} {p}Hz"


def format_value(value: Any) -> str:
    """Parameter values as they would be typed: lists comma-joined, '' shown as ''."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) if value else "[]"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True) if value else "{}"
    if value == "":
        return "''"
    return str(value)


# ---------------------------------------------------------------------------------------------
def build_report(outdir: str, results=None, figure_cache: str | None = None) -> str:
    """Write ``<outdir>/report/`` from `results` (default: ``Results.load(outdir)``); return the
    path of its ``index.html``. ``figure_cache``: per-MS figures drawn earlier in the same run."""
    from fluxflow.results import Results

    outdir = os.path.abspath(outdir)
    if results is None:
        results = Results.load(outdir)
    final = os.path.join(outdir, REPORT_DIR)
    os.makedirs(outdir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{REPORT_DIR}-build-", dir=outdir)
    try:
        os.chmod(tmp, 0o755)
        os.makedirs(os.path.join(tmp, IMG_DIR))
        ctx = report_context(results, outdir, tmp, figure_cache)
        html = render(ctx)
        with open(os.path.join(tmp, "index.html"), "w", encoding="utf-8") as fh:
            fh.write(html)
        _swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return os.path.join(final, "index.html")


def _swap_in(new: str, final: str) -> None:
    """Replace the folder `final` by `new` with two renames (a directory cannot be replaced
    atomically by a non-empty one); the old report is deleted only after the new one is in place."""
    old = None
    if os.path.lexists(final):
        old = f"{final}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
    os.rename(new, final)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def render(ctx: dict) -> str:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    return env.get_template("index.html.j2").render(**ctx)


# ---------------------------------------------------------------------------------------------
def report_context(results, outdir: str, build_dir: str, figure_cache: str | None = None) -> dict:
    """Everything the template shows; draws the figures into ``build_dir/img`` (copies those
    found in ``figure_cache/<ms>/``, see :func:`prerender_ms_figures`)."""
    from fluxflow import __version__

    records = results.records
    figs = _Figures(build_dir)
    ms_sections = []
    for rec in records:
        cache = os.path.join(figure_cache, _slug(rec["ms_name"])) if figure_cache else None
        figs.cache = cache if cache and os.path.isdir(cache) else None
        ms_sections.append(_ms_section(rec, outdir, figs))
    figs.cache = None
    ok_records = [r for r in records if not r.get("error")]
    eb_figs = []
    if len(ok_records) > 1:
        names = []
        for rec in ok_records:
            for m in rec.get("calibrated_fluxes", []):
                if m["field_name"] not in names:
                    names.append(m["field_name"])
        for name in names:
            fig = figs.draw(f"ebs-{name}", plots.flux_across_ebs, ok_records, name,
                            alt=f"{name}: calibrated flux density across EBs",
                            caption=f"{name}: calibrated-visibility flux density per spw in each EB; "
                                    "open diamonds: catalogue.")
            if fig:
                eb_figs.append(fig)
    qa_rows = [dict(ms=rec["ms_name"], **_qa_row(q)) for rec in records for q in rec.get("qa", [])]
    qa_rows.sort(key=lambda q: q["score"] if q["score"] is not None else -1.0)  # lowest first (stable)
    perf = _performance_link(results.performance_report, outdir)
    return {
        "title": "fluxflow — flux-scale transfer (hifa_gfluxscale)",
        "version": getattr(results, "version", None) or __version__,
        "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "elapsed": f"{results.elapsed:.1f} s",
        "n_ms": len(records), "n_failed": len(results.failed),
        "performance_report": perf,
        "files": _run_files(outdir),
        "ms_sections": ms_sections,
        "adopted": [s for s in ms_sections if s["adopted"]],
        "resolved": [s for s in ms_sections if s["resantenna"] or s["uvrange"]],
        "qa_rows": qa_rows,
        "qa_bands": [("red", "< 0.33"), ("yellow", "0.33 – 0.66"), ("blue", "0.66 – 0.9"), ("green", "≥ 0.9")],
        "flux_rows": flux_table(records),
        "eb_figures": eb_figs,
        "params": param_rows(results.params),
        "preapply": next(((r.get("plan") or {}).get("preapply") for r in records
                          if (r.get("plan") or {}).get("preapply")), []),
    }


class _Figures:
    """Names, draws and describes the PNGs of one build.

    ``cache``: a folder of PNGs drawn earlier in the same run by :func:`prerender_ms_figures`
    (named by figure stem); a figure found there is copied instead of drawn again. ``cache`` is
    set per MS by the caller."""

    def __init__(self, build_dir: str, img_dir: str = IMG_DIR) -> None:
        self.dir = os.path.join(build_dir, img_dir)
        self.used: set[str] = set()
        self.cache: str | None = None

    def draw(self, stem: str, fn: Callable[..., bool], *args, alt: str, caption: str) -> dict | None:
        name = _slug(stem)
        cached = os.path.join(self.cache, f"{name}.png") if self.cache else None
        base, k = name, 1
        while name in self.used:
            k += 1
            name = f"{base}-{k}"
        self.used.add(name)
        path = os.path.join(self.dir, f"{name}.png")
        if cached and os.path.exists(cached):
            shutil.copyfile(cached, path)
        elif not fn(*args, path):
            return None
        w, h = png_size(path)
        return {"src": f"{IMG_DIR}/{name}.png", "alt": alt, "caption": caption, "width": w, "height": h}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"


def png_size(path: str) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    with open(path, "rb") as fh:
        head = fh.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    return struct.unpack(">II", head[16:24])


def _performance_link(perf: str, outdir: str) -> dict:
    if perf:
        name = os.path.basename(perf)
        if os.path.exists(os.path.join(outdir, name)):
            return {"href": f"../{name}", "text": name}
        return {"href": None, "text": f"{name} (not found beside results.json)"}
    return {"href": None, "text": "not written (fluxflow run --performance-report writes it)"}


def _run_files(outdir: str) -> list[dict]:
    out = []
    for name, what in (("results.json", "all results (JSON)"),
                       ("derived_fluxes.csv", "derived fluxes (flux.csv layout)")):
        if os.path.exists(os.path.join(outdir, name)):
            out.append({"href": f"../{name}", "text": name, "what": what})
    return out


def _field_label(plan: dict, fid: str | int, intents: Sequence[str] | None = None) -> str:
    """'J0522-3627 (#0) BANDPASS' — name, id and the field's intents among `intents` (§11)."""
    names = plan.get("field_names") or {}
    fint = (plan.get("field_intents") or {}).get(str(fid), [])
    shown = [i for i in fint if intents is None or i in intents]
    return f"{names.get(str(fid), fid)} (#{fid})" + (f" {','.join(shown)}" if shown else "")


def _ms_section(rec: dict, outdir: str, figs: _Figures) -> dict:
    plan = rec.get("plan") or {}
    stem = rec["ms_name"].removesuffix(".ms")
    transintents = plan.get("transintents") or []
    resolved = plan.get("resolved") or {}
    qa = rec.get("qa") or []
    worst = min(qa, key=lambda q: q["score"] if q["score"] is not None else math.inf) if qa else None
    cmds = rec.get("flag_commands") or []
    cmd_file = f"{stem}.flagcmds.txt"
    sec = {
        "ms": rec["ms_name"], "anchor": _slug(f"ms-{stem}"), "path": rec.get("ms", ""),
        "error": rec.get("error"), "adopted": bool(rec.get("adopted")),
        "status": "failed" if rec.get("error") else ("adopted" if rec.get("adopted") else "ok"),
        "warnings": rec.get("warnings") or [],
        "reference": [_field_label(plan, f, plan.get("refintents"))
                      for f in sorted(plan.get("reference", {}), key=int)],
        "transfer": [_field_label(plan, f, transintents) for f in sorted(plan.get("transfer", {}), key=int)],
        "refant": plan.get("refant") or [],
        "resantenna": plan.get("resantenna") or "", "uvrange": plan.get("uvrange") or "",
        "resolved_reason": resolved.get("reason", ""),
        "flag_commands": cmds,
        "flag_file": f"../{cmd_file}" if os.path.exists(os.path.join(outdir, cmd_file)) else None,
        "fluxscale_log": rec.get("fluxscale_log") or [],
        "qa_min": _score_text(worst["score"]) if worst else NA,
        "qa_min_score": worst["score"] if worst else None,
        "qa_min_band": qa_band(worst["score"]) if worst else "none",
        "qa_min_message": worst["message"] if worst else "no QA scores",
        "flux_figures": [], "uv_figures": [], "gain_figure": None,
    }
    if rec.get("error"):
        return sec
    for fid in sorted({m["field_id"] for m in rec.get("calibrated_fluxes", [])}):
        label = _field_label(plan, fid, transintents)
        fig = figs.draw(f"flux-{stem}-{fid}", plots.flux_vs_frequency, rec, fid,
                        alt=f"{rec['ms_name']} {label}: flux density vs frequency",
                        caption=f"{label}: calibrated flux density per spw (bars: ±σ, spw width), fluxscale "
                                "value (open), catalogue (black, dotted: its spectral index).")
        if fig:
            sec["flux_figures"].append(fig)
    for fid in sorted(plan.get("reference", {}), key=int):
        label = _field_label(plan, fid, plan.get("refintents"))
        fig = figs.draw(f"uv-{stem}-{fid}", plots.uv_amplitude, rec, int(fid),
                        alt=f"{rec['ms_name']} {label}: amplitude vs uv distance",
                        caption=f"{label}: phase- and amplitude-calibrated visibility amplitude, averaged in "
                                "uv-distance bins, and the model used for the amplitude solve.")
        if fig:
            sec["uv_figures"].append(fig)
    sec["gain_figure"] = figs.draw(f"gains-{stem}", plots.gain_vs_time, rec,
                                   alt=f"{rec['ms_name']}: T-solve gain amplitude vs time",
                                   caption="Amplitude of the per-scan T solve of every calibrator, after outlier "
                                           "flagging; red rings: solutions flagged as outliers (§5).")
    return sec


def prerender_ms_figures(rec: dict, figure_cache: str) -> str:
    """Draw the figures of one MS's section into ``figure_cache/<ms>/`` (a Dask task: it runs on
    a worker while the MS's MODEL_DATA is written, and build_report then only copies them). The
    figures depend only on the per-MS reduction, which is final when this runs."""
    folder = os.path.join(figure_cache, _slug(rec["ms_name"]))
    os.makedirs(folder, exist_ok=True)
    figs = _Figures(folder, img_dir="")
    _ms_section(rec, figure_cache, figs)
    return folder


def _number(x: Any) -> bool:
    """A finite number (results.json stores NaN and infinities as null)."""
    return isinstance(x, (int, float)) and math.isfinite(x)


def _score_text(score: float | None) -> str:
    return NA if score is None else f"{score:.2f}"


def _qa_row(q: dict) -> dict:
    mv = q.get("metric_value")
    if isinstance(mv, float):
        mv = f"{mv:.4g}"
    units = q.get("metric_units") or ""
    return {"metric": q.get("metric_name", ""), "score": q.get("score"), "score_text": _score_text(q.get("score")),
            "band": qa_band(q.get("score")), "message": q.get("message", ""),
            "short": q.get("short_message", ""), "metric_value": "" if mv is None else str(mv),
            "metric_units": units}


def flux_table(records: Sequence[dict]) -> list[dict]:
    """Rows of the computed-flux table (spec §11 table 4), one per (MS, transfer field, spw), with
    the rowspans of the MS and field cells precomputed."""
    rows: list[dict] = []
    for rec in records:
        if rec.get("error"):
            continue
        plan = rec.get("plan") or {}
        transintents = plan.get("transintents") or []
        freqs = plan.get("spw_freqs") or {}
        bws = plan.get("spw_bandwidths") or {}
        fs = {(m["field_id"], m["spw_id"]): m for m in rec.get("derived_fluxes", [])}
        cv = {(m["field_id"], m["spw_id"]): m for m in rec.get("calibrated_fluxes", [])}
        fits = rec.get("spectral_fits") or {}
        keys = sorted(set(fs) | set(cv), key=lambda k: (k[0], k[1]))
        ms_rows = []
        for fid, spw in keys:
            d, c = fs.get((fid, spw)), cv.get((fid, spw))
            cat = plots.external_catalogue(rec, fid, spw)
            adopted = (c or d or {}).get("origin") == "adopted"
            ratio = c["I"] / cat["I"] if (c and cat and _number(c["I"]) and _number(cat["I"]) and cat["I"]) else None
            fit = fits.get(str(fid)) or {}
            spix = NA
            if fit.get("ok") and fit.get("spidx"):
                spix = f"{fit['spidx'][1]:.3f} ± {(fit.get('spidxerr') or [0, 0])[1]:.3f}"
            ms_rows.append({
                "ms": rec["ms_name"], "field_id": fid, "spw": spw, "adopted": adopted,
                "field": _field_label(plan, fid, transintents),
                "freq": format_frequency(freqs.get(str(spw))), "bandwidth": format_frequency(bws.get(str(spw))),
                "fluxscale": NA if (d is None or adopted) else format_flux(d["I"], d["I_err"]),
                "calibrated": NA if c is None else format_flux(c["I"], c["I_err"]),
                "catalogue": NA if cat is None else format_flux(cat["I"]),
                "catalogue_origin": "" if cat is None else SHORT_ORIGIN.get(cat["origin"], cat["origin"]),
                "catalogue_spix": "" if cat is None else f"{cat.get('spix') or 0.0:.3f}",
                "ratio": NA if ratio is None else f"{ratio:.3f}",
                "spix": spix, "ms_span": 0, "field_span": 0,
            })
        if ms_rows:
            ms_rows[0]["ms_span"] = len(ms_rows)
            for r in ms_rows:
                same = [x for x in ms_rows if x["field_id"] == r["field_id"]]
                if same[0] is r:
                    r["field_span"] = len(same)
        rows.extend(ms_rows)
    return rows


def param_rows(params: dict) -> list[dict]:
    """The run's parameters with the values that differ from :class:`fluxflow.params.Params`'s
    defaults marked."""
    from fluxflow.params import Params

    defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                for f in dataclasses.fields(Params)}
    out = []
    for name, value in params.items():
        d = defaults.get(name, dataclasses.MISSING)
        d = list(d) if isinstance(d, tuple) else d
        changed = name != "vis" and d is not dataclasses.MISSING and value != d
        out.append({"name": name, "value": format_value(value), "changed": changed})
    return out
