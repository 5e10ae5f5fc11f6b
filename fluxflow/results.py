"""The results of a fluxflow run: tables for people, JSON and flux.csv for programs.

:class:`Results` shows as HTML tables in Jupyter, saves itself into the output directory
(``results.json``, ``derived_fluxes.csv`` in the flux.csv layout, flag commands per MS) and can be
loaded back from there (``Results.load``) to rebuild the report without touching any MS.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import numpy as np

EXIT_OK, EXIT_FAILED, EXIT_PARTIAL = 0, 1, 3


def _jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(x).items()}
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, (np.bool_,)):
        return bool(x)
    return x


def _gains_summary(t) -> dict | None:
    """A T/G table as plain lists (for the report's gain-vs-time plots)."""
    if t is None:
        return None
    return {"vis_cal": t.vis_cal, "time": t.time, "field_id": t.field_id, "spw_id": t.spw_id,
            "antenna": t.antenna1, "scan": t.scan, "amp": np.abs(t.cparam[:, 0, :]),
            "flag": t.flag[:, 0, :], "snr": t.snr[:, 0, :]}


def ms_record(r) -> dict:
    """One MS's results as a JSON-able dict (no GainTable objects, no casacore)."""
    plan = r.plan
    rec: dict[str, Any] = {
        "ms": r.ms, "ms_name": r.ms_name, "error": r.error, "adopted": r.adopted,
        "warnings": r.warnings,
        "derived_fluxes": r.derived, "calibrated_fluxes": r.measurements,
        "qa": r.qa, "flag_commands": [c.to_casa() if hasattr(c, "to_casa") else str(c)
                                      for c in r.flag_commands],
        "fluxscale_log": r.fluxscale_log, "spectral_fits": r.spectral_fits,
        "caltables": r.caltables, "model_rows_written": r.model_rows_written,
        "amp_gains": _gains_summary(r.amp_table_flagged),
        "amp_gains_unflagged": _gains_summary(r.amp_table),
        "plots": getattr(r, "plots", {}),
    }
    if plan is not None:
        rec["plan"] = {
            "reference": {str(i): plan.field_names[i] for i in plan.reference_ids},
            "transfer": {str(i): plan.field_names[i] for i in plan.transfer_ids},
            "transintents": plan.transintents, "refintents": plan.refintents,
            "refspwmap": plan.refspwmap, "refant": plan.refant_names,
            "resantenna": plan.resantenna, "uvrange": plan.uvrange,
            "resolved": plan.resolved_info,
            "field_intents": {str(k): v for k, v in plan.field_intents.items()},
            "field_names": {str(k): v for k, v in plan.field_names.items()},
            "antenna_names": plan.antenna_names,
            "science_spws": plan.science_spws,
            "spw_freqs": {str(k): v for k, v in plan.spw_freqs.items()},
            "spw_bandwidths": {str(k): v for k, v in plan.spw_bandwidths.items()},
            "expected_measurements": plan.expected_measurements,
            "catalogue": plan.catalogue,
            "n_tasks": len(plan.tasks),
            "start_time": plan.start_time,
            "preapply": plan.preapply,
        }
    return _jsonable(rec)


class Results:
    """What `fluxflow.gfluxscale` returns. `records` are JSON-able dicts, one per MS (what is
    saved); `ms_results` the live per-MS objects of a run (empty after :meth:`load`)."""

    def __init__(self, ms_results=None, params=None, elapsed=0.0, performance_report="",
                 records=None, version=None):
        self.ms_results = list(ms_results or [])
        self.records = records if records is not None else [ms_record(r) for r in self.ms_results]
        self.params = params.to_dict() if hasattr(params, "to_dict") else dict(params or {})
        self.elapsed = float(elapsed)
        self.performance_report = performance_report
        self.version = version or _version()

    # -- status ----------------------------------------------------------------------------
    @property
    def failed(self) -> list[dict]:
        return [r for r in self.records if r.get("error")]

    @property
    def exit_code(self) -> int:
        if not self.records or len(self.failed) == len(self.records):
            return EXIT_FAILED
        return EXIT_PARTIAL if self.failed else EXIT_OK

    # -- tables ----------------------------------------------------------------------------
    def flux_rows(self) -> list[dict]:
        """One row per (MS, transfer field, spw): fluxscale, calibrated and catalogue fluxes."""
        rows = []
        for rec in self.records:
            plan = rec.get("plan") or {}
            cat = {(c["field_id"], c["spw_id"]): c for c in plan.get("catalogue", [])}
            fs = {(m["field_id"], m["spw_id"]): m for m in rec["derived_fluxes"]}
            cv = {(m["field_id"], m["spw_id"]): m for m in rec["calibrated_fluxes"]}
            fits = rec.get("spectral_fits") or {}
            for key in sorted(set(fs) | set(cv), key=lambda k: (str(k[0]), k[1])):
                fid, spw = key
                d, c, k = fs.get(key), cv.get(key), cat.get(key)
                name = (d or c)["field_name"]
                cal_i = c["I"] if c else None
                fit = fits.get(str(fid)) or {}
                rows.append({
                    "ms": rec["ms_name"], "field": name, "field_id": fid,
                    "intents": ",".join(plan.get("field_intents", {}).get(str(fid), [])),
                    "spw": spw, "freq_GHz": (plan.get("spw_freqs", {}).get(str(spw)) or 0) / 1e9,
                    "bandwidth_MHz": (plan.get("spw_bandwidths", {}).get(str(spw)) or 0) / 1e6,
                    "fluxscale_I": d["I"] if d else None, "fluxscale_err": d["I_err"] if d else None,
                    "calibrated_I": cal_i, "calibrated_err": c["I_err"] if c else None,
                    "catalogue_I": k["I"] if k else None,
                    "ratio": (cal_i / k["I"]) if (cal_i and k and k["I"]) else None,
                    "spix_fit": (fit.get("spidx") or [None, None])[1] if fit else None,
                    "origin": (d or c)["origin"],
                })
        return rows

    def qa_rows(self) -> list[dict]:
        out = []
        for rec in self.records:
            for q in rec["qa"]:
                out.append({"ms": rec["ms_name"], **q})
        return out

    def fluxes(self):
        """Flux table as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.flux_rows())

    def qa(self):
        import pandas as pd

        return pd.DataFrame(self.qa_rows())

    def summary(self) -> str:
        """Plain-text table for the terminal."""
        lines = [f"{'MS':<22} {'field':<14} {'spw':>3} {'freq/GHz':>9} {'fluxscale/Jy':>18} "
                 f"{'calibrated/Jy':>18} {'catalogue':>9}"]
        for r in self.flux_rows():
            fs = f"{r['fluxscale_I']:.4f}±{r['fluxscale_err']:.4f}" if r["fluxscale_I"] else "-"
            cv = f"{r['calibrated_I']:.4f}±{r['calibrated_err']:.4f}" if r["calibrated_I"] else "-"
            cat = f"{r['catalogue_I']:.4f}" if r["catalogue_I"] else "-"
            lines.append(f"{r['ms'][:22]:<22} {r['field'][:14]:<14} {r['spw']:>3} "
                         f"{r['freq_GHz']:>9.3f} {fs:>18} {cv:>18} {cat:>9}")
        for rec in self.records:
            if rec.get("error"):
                lines.append(f"FAILED {rec['ms_name']}: {rec['error'].splitlines()[0]}")
        qa = [q for q in self.qa_rows()]
        if qa:
            worst = min(qa, key=lambda q: q["score"])
            lines.append(f"QA: {len(qa)} scores, lowest {worst['score']:.2f} ({worst['message']})")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        parts = ["<h4>fluxflow: derived flux densities</h4>", self.fluxes().to_html(index=False,
                 float_format=lambda v: f"{v:.4g}")]
        if self.qa_rows():
            parts += ["<h4>QA scores</h4>", self.qa()[["ms", "metric_name", "score", "message"]].to_html(
                index=False)]
        for rec in self.failed:
            parts.append(f"<p><b>FAILED</b> {rec['ms_name']}: {rec['error']}</p>")
        return "\n".join(parts)

    # -- persistence -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"fluxflow_version": self.version, "params": _jsonable(self.params),
                "elapsed_s": self.elapsed, "performance_report": self.performance_report,
                "ms": self.records}

    def save(self, outdir: str) -> None:
        from fluxflow.models.catalogue import CatalogueRow, write_flux_csv

        os.makedirs(outdir, exist_ok=True)
        _atomic_write(os.path.join(outdir, "results.json"), json.dumps(self.to_dict(), indent=1))
        rows = []
        for rec in self.records:
            plan = rec.get("plan") or {}
            for m in rec["derived_fluxes"]:
                intents = plan.get("field_intents", {}).get(str(m["field_id"]), [])
                rows.append(CatalogueRow(
                    ms=rec["ms_name"], field_id=m["field_id"], spw_id=m["spw_id"], I=m["I"],
                    Q=0.0, U=0.0, V=0.0, spix=m.get("spix", 0.0) or 0.0, uvmin=0.0, uvmax=0.0,
                    comment=f"# field={m['field_name']} intents={','.join(intents)} "
                            f"origin=fluxflow-{m['origin']} uncertainty={m['I_err']:.6g}",
                    origin=f"fluxflow-{m['origin']}"))
            cmds = rec.get("flag_commands") or []
            _atomic_write(os.path.join(outdir, f"{rec['ms_name'].removesuffix('.ms')}.flagcmds.txt"),
                          "\n".join(cmds) + ("\n" if cmds else ""))
        write_flux_csv(os.path.join(outdir, "derived_fluxes.csv"), rows)

    @classmethod
    def load(cls, outdir: str) -> "Results":
        with open(os.path.join(outdir, "results.json")) as fh:
            d = json.load(fh)
        return cls(records=d["ms"], params=d["params"], elapsed=d.get("elapsed_s", 0.0),
                   performance_report=d.get("performance_report", ""),
                   version=d.get("fluxflow_version"))


def _atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _version() -> str:
    from fluxflow import __version__

    return __version__
