"""The report's figures, drawn with matplotlib's object API on the Agg canvas (no pyplot state).

Every function takes the JSON records of ``results.json`` (:func:`fluxflow.results.ms_record`),
writes one PNG to `path` and returns True, or returns False (no file) when there is nothing to plot.
Figures follow the weblog of ``hifa_gfluxscale`` (spec §11) and add the gain and multi-EB views.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from fluxflow.models.catalogue import EXTERNAL_ORIGINS, ORIGIN_ANALYSIS_UTILS, ORIGIN_DB, ORIGIN_XML

#: Spec §11 plot 1: legend names of the catalogue origins.
ORIGIN_LABELS = {ORIGIN_XML: "ASDM", ORIGIN_DB: "online catalogue", ORIGIN_ANALYSIS_UTILS: "analysisUtils"}

STYLE = {
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8.5,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.6, "axes.spines.top": False,
    "axes.spines.right": False, "savefig.dpi": 100, "figure.dpi": 100,
    "font.family": "DejaVu Sans",
}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
FLAG_COLOUR = "#d62728"
MJD_EPOCH = np.datetime64("1858-11-17T00:00:00", "us")


def _figure(width: float, height: float, *, left: float = 0.8, right: float = 0.2, bottom: float = 0.6,
            top: float = 0.4, wspace: float = 0.1, hspace: float = 0.5) -> Figure:
    """A figure with fixed margins in inches (faster than a layout engine, and the axes of every
    figure of one kind line up)."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, wspace=wspace, hspace=hspace)
    return fig


def _save(fig: Figure, path: str) -> bool:
    fig.savefig(path, format="png", facecolor="white")
    return True


def _colours(n: int, cmap: str = "tab10") -> list:
    from matplotlib import colormaps

    cm = colormaps[cmap]
    if n <= cm.N:
        return [cm(i) for i in range(n)]
    return [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, n)]


def external_catalogue(rec: dict, field_id: int, spw_id: int) -> dict | None:
    """Spec §11 table 4: the first catalogue row of an external origin for (field, spw)."""
    for row in (rec.get("plan") or {}).get("catalogue", []):
        if row.get("field_id") == field_id and row.get("spw_id") == spw_id and row.get("origin") in EXTERNAL_ORIGINS:
            return row
    return None


def mjd_seconds_to_datetime64(t: Sequence[float] | np.ndarray) -> np.ndarray:
    """MS TIME (MJD seconds, UTC) as numpy datetime64[us]."""
    return MJD_EPOCH + (np.asarray(t, float) * 1e6).astype("timedelta64[us]")


# ---------------------------------------------------------------------------------------------
def flux_vs_frequency(rec: dict, field_id: int, path: str) -> bool:
    """Spec §11 plot 1 for one transfer field of one MS: calibrated fluxes (error bars: σ and half
    the spw bandwidth), fluxscale-derived fluxes, catalogue points per origin joined by lines with
    dotted spectral-index extrapolations to the plot edges, and the fluxscale spectral fit."""
    plan = rec.get("plan") or {}
    freqs = {int(k): v for k, v in plan.get("spw_freqs", {}).items() if v}
    bws = {int(k): v for k, v in plan.get("spw_bandwidths", {}).items()}
    cal = sorted((m for m in rec.get("calibrated_fluxes", []) if m["field_id"] == field_id
                  and m["spw_id"] in freqs and m["I"] is not None), key=lambda m: freqs[m["spw_id"]])
    if not cal:
        return False
    fs = {m["spw_id"]: m for m in rec.get("derived_fluxes", []) if m["field_id"] == field_id
          and m.get("origin") == "fluxscale" and m["I"] is not None}
    adopted = rec.get("adopted") or any(m.get("origin") == "adopted" for m in cal)
    name = cal[0]["field_name"]
    spws = [m["spw_id"] for m in cal]
    with rc_context(STYLE):
        fig = _figure(5.8, 3.9)
        ax = fig.add_subplot()
        colours = _colours(len(cal))
        for i, m in enumerate(cal):
            s = m["spw_id"]
            x, xe = freqs[s] / 1e9, (bws.get(s) or 0.0) / 2e9
            ax.errorbar([x], [m["I"]], xerr=[xe], yerr=[m["I_err"] or 0.0], fmt="o", color=colours[i], ms=5,
                        capsize=3, lw=1.3, zorder=3)
            ax.annotate(f"spw {s}", (x, m["I"] + (m["I_err"] or 0.0)), xytext=(0, 4), textcoords="offset points",
                        ha="center", va="bottom", fontsize=8, color=colours[i])
            if s in fs:
                ax.plot([x], [fs[s]["I"]], "o", mfc="none", mec=colours[i], ms=10, mew=1.2, zorder=3)
        handles = [Line2D([], [], marker="o", color="0.3", ms=5, lw=1.3,
                          label="adopted (session)" if adopted else "calibrated visibility")]
        if fs:
            handles.append(Line2D([], [], marker="o", mfc="none", mec="0.3", ms=10, ls="none",
                                  label="fluxscale derived"))
        lo = min(freqs[s] - (bws.get(s) or 0) / 2 for s in spws) / 1e9
        hi = max(freqs[s] + (bws.get(s) or 0) / 2 for s in spws) / 1e9
        pad = max(0.05 * (hi - lo), 0.25)
        xlim = (lo - pad, hi + pad)
        ages = set()
        by_origin: dict[str, list[tuple[float, float, float]]] = {}
        for s in spws:
            row = external_catalogue(rec, field_id, s)
            if row is not None:
                by_origin.setdefault(row["origin"], []).append((freqs[s] / 1e9, row["I"], row.get("spix") or 0.0))
                ages.add(row.get("age"))
        for k, (origin, pts) in enumerate(sorted(by_origin.items())):
            pts.sort()
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            handles += ax.plot(xs, ys, "-", marker=MARKERS[(k + 1) % len(MARKERS)], color="k", ms=5, lw=1,
                               label=f"catalogue ({ORIGIN_LABELS.get(origin, origin)})")
            for (x0, y0, a), x1 in ((pts[0], xlim[0]), (pts[-1], xlim[1])):
                ax.plot([x0, x1], [y0, y0 * (x1 / x0) ** a], ":", color="k", lw=1)
        fit = (rec.get("spectral_fits") or {}).get(str(field_id)) or {}
        if fit.get("ok") and fit.get("fit_flux") and fit.get("ref_freq") and fit.get("spidx"):
            nu = np.linspace(*xlim, 50)
            alpha = fit["spidx"][1]
            err = (fit.get("spidxerr") or [0, 0])[1]
            handles += ax.plot(nu, fit["fit_flux"] * (nu * 1e9 / fit["ref_freq"]) ** alpha, "--", color="0.45",
                               lw=1, label=f"fluxscale fit α = {alpha:.3f} ± {err:.3f}")
        ax.set_xlim(*xlim)
        ax.set_xlabel("Frequency (GHz)")
        ax.set_ylabel("Flux density (Jy)")
        age = ages.pop() if len(ages) == 1 else None
        age_text = f"{age:g} day{'' if age == 1 else 's'}" if isinstance(age, (int, float)) else "N/A"
        ax.set_title(f"Flux calibration: {name} (age = {age_text})")
        ax.margins(y=0.12)
        ax.legend(handles=handles, loc="best", framealpha=0.85)
        ax.ticklabel_format(axis="y", useOffset=False)
        return _save(fig, path)


# ---------------------------------------------------------------------------------------------
_UV_RE = re.compile(r"^\s*([<>]?)\s*([0-9.]+)?\s*(?:~\s*([0-9.]+))?\s*(km|m)?\s*$")


def uv_limits(uvrange: str) -> tuple[float, float] | None:
    """CASA uvrange in metres: '<172m' -> (0, 172), '>10m' -> (10, inf), '20~300m' -> (20, 300);
    None for an empty or a wavelength-unit range."""
    m = _UV_RE.match(uvrange or "")
    if not uvrange or not m or m.group(2) is None:
        return None
    scale = 1000.0 if m.group(4) == "km" else 1.0
    a = float(m.group(2)) * scale
    if m.group(1) == "<":
        return 0.0, a
    if m.group(1) == ">":
        return a, math.inf
    return (a, float(m.group(3)) * scale) if m.group(3) else None


def uv_amplitude(rec: dict, field_id: int, path: str) -> bool:
    """Spec §11 plot 2 for one reference field: calibrated amplitude (binned in uv distance) and the
    model amplitude per spw; for a resolved calibrator a second panel with the antenna/uv selection
    used for its phase solve (``plots.uvamp_restricted`` if the run stored it, else the bins inside
    the uv range)."""
    plan = rec.get("plan") or {}
    prof = ((rec.get("plots") or {}).get("uvamp") or {}).get(str(field_id)) or {}
    prof = {int(s): p for s, p in prof.items() if p and p.get("uvdist_m")}
    if not prof:
        return False
    name = (plan.get("field_names") or {}).get(str(field_id), str(field_id))
    resantenna, uvrange = plan.get("resantenna") or "", plan.get("uvrange") or ""
    restricted = ((rec.get("plots") or {}).get("uvamp_restricted") or {}).get(str(field_id)) or {}
    limits = uv_limits(uvrange)
    panels = 2 if (resantenna or uvrange) else 1
    spws = sorted(prof)
    colours = dict(zip(spws, _colours(len(spws))))
    xmax = max(float(np.nanmax(np.asarray(p["uvdist_m"], float))) for p in prof.values()) * 1.04
    with rc_context(STYLE):
        fig = _figure(5.6 * panels if panels == 2 else 5.8, 3.9, top=0.65 if panels == 2 else 0.4)
        axes = fig.subplots(1, panels, squeeze=False, sharey=True)[0]
        for s in spws:
            _uv_series(axes[0], prof[s], colours[s], f"spw {s}")
        if panels == 2:
            axes[0].set_title("all antennas and baselines")
            if limits is not None:
                for edge in limits:
                    if 0 < edge < xmax:
                        axes[0].axvline(edge, color="0.3", ls="--", lw=1)
            for s in spws:
                p = restricted.get(str(s)) or (_clip_profile(prof[s], limits) if limits else None)
                if p and p.get("uvdist_m"):
                    _uv_series(axes[1], p, colours[s], f"spw {s}")
            n_ant = len([a for a in resantenna.rstrip("&").split(",") if a]) if resantenna else 0
            sel = ", ".join(t for t in (f"{n_ant} antennas" if n_ant else "", f"uv {uvrange}" if uvrange else "") if t)
            axes[1].set_title(f"restricted: {sel}")
            axes[1].set_xlabel("uv distance (m)")
            axes[1].set_xlim(0, xmax)
        axes[0].set_xlim(0, xmax)
        axes[0].set_xlabel("uv distance (m)")
        axes[0].set_ylabel("Amplitude (Jy)")
        axes[0].set_ylim(bottom=0)
        handles = [Line2D([], [], color="k", marker="o", ls="none", ms=5, label="calibrated data (binned)"),
                   Line2D([], [], color="k", lw=1.5, label="model")]
        handles += [Line2D([], [], color=colours[s], lw=3, label=f"spw {s}") for s in spws]
        axes[-1].legend(handles=handles, loc="best", framealpha=0.85)
        fig.suptitle(f"{rec['ms_name']}: flux calibrator {name}", fontsize=11)
        return _save(fig, path)


def _uv_series(ax, p: dict, colour, label: str) -> None:
    x = np.asarray(p["uvdist_m"], float)
    order = np.argsort(x)
    ax.plot(x[order], np.asarray(p["amp"], float)[order], "o", color=colour, ms=4, alpha=0.85)
    ax.plot(x[order], np.asarray(p["model"], float)[order], "-", color=colour, lw=1.5, label=label)


def _clip_profile(p: dict, limits: tuple[float, float]) -> dict:
    x = np.asarray(p["uvdist_m"], float)
    keep = (x >= limits[0]) & (x <= limits[1])
    return {k: np.asarray(v)[keep].tolist() for k, v in p.items()}


# ---------------------------------------------------------------------------------------------
def gain_vs_time(rec: dict, path: str) -> bool:
    """Amplitude of the T solve (after outlier flagging) vs time, one panel per spw, colour per
    antenna, marker per field; solutions flagged as outliers are ringed in red at their amplitude,
    solutions the solver could not determine are counted in the panel title."""
    g = rec.get("amp_gains")
    if not g or not g.get("time"):
        return False
    plan = rec.get("plan") or {}
    from matplotlib.dates import date2num

    t64 = mjd_seconds_to_datetime64(g["time"])
    t = date2num(t64)
    field = np.asarray(g["field_id"], int)
    spw = np.asarray(g["spw_id"], int)
    ant = np.asarray(g["antenna"], int)
    amp = np.asarray(g["amp"], float).reshape(len(t), -1)
    flag = np.asarray(g["flag"], bool).reshape(len(t), -1)
    before = rec.get("amp_gains_unflagged")
    if before and np.array_equal(np.asarray(before["time"]), np.asarray(g["time"])) and \
            np.array_equal(np.asarray(before["antenna"]), ant):
        solver_flag = np.asarray(before["flag"], bool).reshape(flag.shape)
    else:
        solver_flag = np.zeros_like(flag)
    outlier = flag & ~solver_flag
    names = plan.get("antenna_names") or []
    fnames = plan.get("field_names") or {}
    spws, fields, ants = np.unique(spw), np.unique(field), np.unique(ant)
    acol = dict(zip(ants.tolist(), _colours(len(ants), "tab20")))
    ylim = _gain_limits(amp[~flag & np.isfinite(amp)], amp[outlier])
    fmark = {f: MARKERS[i % len(MARKERS)] for i, f in enumerate(fields.tolist())}
    ncol = 2 if len(spws) > 1 else 1
    nrow = math.ceil(len(spws) / ncol)
    with rc_context(STYLE):
        fig = _figure(11.0 if ncol == 2 else 7.0, 2.9 * nrow + 0.9, right=1.4, top=0.65, bottom=0.55,
                      wspace=0.06, hspace=0.3)
        axes = fig.subplots(nrow, ncol, squeeze=False, sharex=True, sharey=True).ravel()
        point_colour = np.array([acol[a] for a in ant.tolist()]) if len(ant) else np.zeros((0, 4))
        for ax, s in zip(axes, spws.tolist()):
            for f in fields.tolist():
                for p in range(amp.shape[1]):
                    ok = (spw == s) & (field == f) & ~flag[:, p]
                    ax.scatter(t[ok], amp[ok, p], c=point_colour[ok], marker=fmark[f], s=13, linewidths=0,
                               alpha=0.9)
            for p in range(amp.shape[1]):
                bad = (spw == s) & outlier[:, p]
                inset = 0.03 * (ylim[1] - ylim[0])  # pinned rings stay inside the axes
                y = np.clip(amp[bad, p], ylim[0] + inset, ylim[1] - inset)
                ax.plot(t[bad], y, "o", mfc="none", mec=FLAG_COLOUR, ms=10, mew=1.5, ls="none")
                for tx, v, yc in zip(t[bad], amp[bad, p], y):
                    if v != yc:  # off the scale of the good solutions: pinned to the edge, value written
                        ax.annotate(f"{v:.3g}", (tx, yc), xytext=(8, -3 if v > yc else 3), textcoords="offset points",
                                    fontsize=8, color=FLAG_COLOUR, va="top" if v > yc else "bottom")
            n_out = int(((spw == s)[:, None] & outlier).sum())
            n_solver = int(((spw == s)[:, None] & solver_flag).sum())
            ax.set_title(f"spw {s}: {n_out} outlier-flagged, {n_solver} not solved", fontsize=10)
            ax.set_ylabel("Gain amplitude")
        for ax in axes[len(spws):]:
            ax.set_visible(False)
        axes[0].set_ylim(*ylim)
        for ax in axes[max(0, len(spws) - ncol):len(spws)]:
            ax.set_xlabel("Time (UTC)")
            _time_axis(ax)
        handles = [Line2D([], [], marker=fmark[f], color="0.3", ls="none", ms=6,
                          label=fnames.get(str(f), str(f))) for f in fields.tolist()]
        handles.append(Line2D([], [], marker="o", mfc="none", mec=FLAG_COLOUR, mew=1.5, ls="none", ms=9,
                              label="outlier (flagged)"))
        handles += [Line2D([], [], marker="s", color=acol[a], ls="none", ms=6,
                           label=names[a] if a < len(names) else str(a)) for a in ants.tolist()]
        fig.legend(handles=handles, loc="upper right", bbox_to_anchor=(1.0, 1 - 0.55 / fig.get_figheight()),
                   fontsize=8, framealpha=0.85)
        day = str(t64.min().astype("datetime64[D]"))
        fig.suptitle(f"{rec['ms_name']}: T-solve amplitudes per scan ({day})", fontsize=11)
        return _save(fig, path)


def _gain_limits(good: np.ndarray, outliers: np.ndarray) -> tuple[float, float]:
    """y range of the good solutions (5 % margins, from 0 when close to it); outliers inside it
    widen nothing, outliers outside are pinned to the edges by the caller."""
    if good.size == 0:
        good = outliers if outliers.size else np.array([0.0, 1.0])
    lo, hi = float(np.min(good)), float(np.max(good))
    pad = 0.08 * (hi - lo) if hi > lo else 0.1 * max(abs(hi), 1.0)
    lo = 0.0 if lo - pad < 0.25 * hi else lo - pad
    return lo, hi + pad


def _time_axis(ax) -> None:
    from matplotlib.dates import MINUTELY, AutoDateLocator, DateFormatter

    ax.xaxis_date()
    loc = AutoDateLocator(minticks=3, maxticks=7)
    loc.intervald[MINUTELY] = [1, 2, 5, 10, 15, 20, 30]
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(DateFormatter("%H:%M"))


# ---------------------------------------------------------------------------------------------
def eb_order(records: Sequence[dict]) -> list[dict]:
    """Records in observing order (first T-solve time) when every record has gains, else as run."""
    starts = [min(r["amp_gains"]["time"]) if (r.get("amp_gains") or {}).get("time") else None for r in records]
    if all(s is not None for s in starts):
        return [records[i] for _, i in sorted(zip(starts, range(len(records))))]
    return list(records)


def flux_across_ebs(records: Sequence[dict], field_name: str, path: str) -> bool:
    """One field's calibrated flux density per spw across the EBs of the run (catalogue values as
    open black diamonds); EBs that adopted session fluxes are labelled."""
    rows = []
    for rec in eb_order(records):
        ms = [m for m in rec.get("calibrated_fluxes", []) if m["field_name"] == field_name and m["I"] is not None]
        if ms:
            rows.append((rec, ms))
    if len(rows) < 2:
        return False
    spws = sorted({m["spw_id"] for _, ms in rows for m in ms})
    colours = dict(zip(spws, _colours(len(spws))))
    width = 0.6
    off = {s: (i - (len(spws) - 1) / 2) * width / max(len(spws), 1) for i, s in enumerate(spws)}
    with rc_context(STYLE):
        fig = _figure(min(11.0, max(5.8, 0.9 * len(rows) + 3.0)), 3.9, bottom=0.8)
        ax = fig.add_subplot()
        for x, (rec, ms) in enumerate(rows):
            for m in ms:
                s = m["spw_id"]
                adopted = m.get("origin") == "adopted"
                ax.errorbar([x + off[s]], [m["I"]], yerr=[m["I_err"] or 0.0], fmt="s" if adopted else "o",
                            color=colours[s], mfc="white" if adopted else colours[s], ms=6, capsize=3)
                row = external_catalogue(rec, m["field_id"], s)
                if row is not None:
                    ax.plot([x + off[s]], [row["I"]], "D", mfc="none", mec="k", ms=6, mew=1)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([rec["ms_name"] + ("\n(adopted)" if rec.get("adopted") else "") for rec, _ in rows])
        ax.set_xlim(-0.6, len(rows) - 0.4)
        ax.set_xlabel("Execution block")
        ax.set_ylabel("Flux density (Jy)")
        ax.ticklabel_format(axis="y", useOffset=False)
        handles = [Line2D([], [], marker="o", color=colours[s], ls="none", ms=6, label=f"spw {s}") for s in spws]
        handles.append(Line2D([], [], marker="D", mfc="none", mec="k", ls="none", ms=6, label="catalogue"))
        if any(rec.get("adopted") for rec, _ in rows):
            handles.append(Line2D([], [], marker="s", mfc="white", mec="0.3", ls="none", ms=6, label="adopted"))
        ax.legend(handles=handles, loc="best", framealpha=0.85)
        ax.set_title(f"{field_name}: calibrated flux density across EBs")
        return _save(fig, path)
