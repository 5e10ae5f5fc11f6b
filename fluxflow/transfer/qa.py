"""QA scores of the flux transfer (spec §10) and the regression key/values (spec §14).

All fluxes scored here are the calibrated-visibility measurements of spec §8. The stage's
representative score is the minimum of its scores.

Deviation from spec §10.5: the pipeline ranks spws for the spw–spw consistency score by a
*predicted* gain SNR of the phase calibrator computed from Tsys tables (``gaincalSNR``). fluxflow
reads no Tsys tables, so the caller ranks spws by the *measured* calibrated-visibility SNR
(I/σ) of the phase calibrator instead (:func:`snr_from_measurements`). For typical data both
rankings prefer the widest, most sensitive spw; the K values themselves do not depend on it
except through the choice of reference spw.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from fluxflow.errors import InsufficientDataWarning
from fluxflow.models.catalogue import EXTERNAL_ORIGINS, CatalogueRow, FluxMeasurement

SNR_THRESHOLD = 26.25  # spec §10.2
AMP_TIME_FALLBACK_SCORE = 0.9  # spec §10.4

Measurements = Iterable[FluxMeasurement] | Mapping[object, Iterable[FluxMeasurement]]


def linear_score(x: float, x1: float, x2: float, y1: float, y2: float) -> float:
    """Clip x to [min(x1, x2), max(x1, x2)], then interpolate linearly from (x1, y1) to (x2, y2)."""
    xc = min(max(x, min(x1, x2)), max(x1, x2))
    return y1 + (y2 - y1) * (xc - x1) / (x2 - x1)


@dataclass(frozen=True)
class QAScore:
    """One QA score. ``metric_name`` is the regression metric name (spec §14); ``applies_to``
    has keys 'vis', 'field' (ids), 'spw' (ids) with sets of values (empty sets omitted)."""

    metric_name: str
    score: float
    metric_value: float | str | None
    message: str
    short_message: str = ""
    metric_units: str = ""
    applies_to: dict[str, frozenset] = field(default_factory=dict)


def _applies(vis: str, field_ids: Iterable[int] = (), spw_ids: Iterable[int] = ()) -> dict[str, frozenset]:
    out: dict[str, frozenset] = {}
    if vis:
        out["vis"] = frozenset([vis])
    if f := frozenset(int(i) for i in field_ids):
        out["field"] = f
    if s := frozenset(int(i) for i in spw_ids):
        out["spw"] = s
    return out


def _flatten(measurements: Measurements) -> list[FluxMeasurement]:
    if isinstance(measurements, Mapping):
        return [m for ms in measurements.values() for m in ms]
    return list(measurements)


def _valid(m: FluxMeasurement) -> bool:
    return m.I > 0.0 and m.I_err > 0.0


def stage_score(scores: Iterable[QAScore]) -> float | None:
    """The representative score: the minimum (None when there are no scores)."""
    values = [s.score for s in scores]
    return min(values) if values else None


def score_missing_derived_fluxes(expected: int, measurements: Measurements, vis: str = "") -> QAScore:
    """Spec §10.1: measured (I > 0 and σ > 0) vs expected number of derived fluxes."""
    n_meas = sum(1 for m in _flatten(measurements) if _valid(m))
    if expected == 0:
        score, long, short = 0.0, f"No secondary calibrators for {vis}", "No secondary calibrators"
    elif n_meas == 0:
        score, long, short = 0.0, f"No derived fluxes for {vis}", "No derived fluxes"
    elif n_meas == expected:
        score = 1.0
        long, short = f"All expected derived fluxes present for {vis}", "All expected derived fluxes present"
    elif n_meas < expected:
        score = n_meas / expected
        long, short = f"Missing derived fluxes for {vis} {n_meas}/{expected}", "Missing derived fluxes"
    else:
        score = 0.0
        long, short = f"Extra derived fluxes for {vis} {n_meas}/{expected}", "Extra derived fluxes"
    return QAScore("score_missing_derived_fluxes", score, score, long, short,
                   "Ratio of number of flux measurements to number expected", _applies(vis))


def score_derived_fluxes_snr(measurements: Measurements, vis: str = "") -> QAScore:
    """Spec §10.2: mean of linear_score(snr, 5, 26.25, 0.66, 1.0); metric = minimum SNR."""
    scores: list[float] = []
    low: dict[int, list[int]] = defaultdict(list)
    min_snr: float | None = None
    for m in _flatten(measurements):
        if not _valid(m):
            continue
        snr = m.I / m.I_err
        min_snr = snr if min_snr is None else min(min_snr, snr)
        k = linear_score(snr, 5.0, SNR_THRESHOLD, 0.66, 1.0)
        scores.append(k)
        if k < 1.0:
            low[m.field_id].append(m.spw_id)
    if not scores:
        score, long, short = 0.0, f"No derived fluxes for {vis}", "No derived fluxes"
    elif min(scores) >= 1.0:
        score, long, short = 1.0, f"No low SNR derived fluxes for {vis}", "No low SNR derived fluxes"
    else:
        score = float(sum(scores) / len(scores))
        parts = [f"field {fid}, SpW(s) {', '.join(str(s) for s in sorted(spws))}"
                 for fid, spws in sorted(low.items(), key=lambda kv: str(kv[0]))]
        long = (f"For {vis}, the fractional uncertainty in the derived scaling factor is large "
                f"(> {100 / SNR_THRESHOLD:.1f}%) for {'; '.join(parts)}. The calibrator may be too faint.")
        short = "Uncertainty in some of the derived fluxes"
    return QAScore("score_derived_fluxes_snr", score, min_snr, long, short,
                   "Minimum SNR of derived flux measurement", _applies(vis))


def snr_from_measurements(measurements: Iterable[FluxMeasurement]) -> dict[int, float]:
    """Per-spw SNR I/σ of the phase calibrator's calvis fluxes (σ = 0 → inf; I ≤ 0 skipped).

    Replaces the Tsys-based prediction of spec §10.5 (see the module docstring).
    """
    out: dict[int, float] = {}
    for m in measurements:
        if m.I > 0 and m.spw_id not in out:
            out[m.spw_id] = m.I / m.I_err if m.I_err > 0 else math.inf
    return out


def external_catalogue(rows: Iterable[CatalogueRow]) -> dict[tuple[int, int], float]:
    """(field id, spw id) → catalogue I of rows whose origin is Source.xml, DB or analysisUtils."""
    out: dict[tuple[int, int], float] = {}
    for r in rows:
        if r.origin in EXTERNAL_ORIGINS:
            out.setdefault((r.field_id, r.spw_id), r.I)
    return out


def select_reference_spw(spws: Iterable[int], snr_by_spw: Mapping[int, float],
                         bandwidth_by_spw: Mapping[int, float]) -> int | None:
    """Spec §10.3 step 2: among spws with bandwidth ≥ 1 GHz (else ≥ their median bandwidth),
    the one with the highest SNR (lowest id on ties); None if there is no candidate."""
    ids = sorted(set(int(s) for s in spws))
    if not ids:
        return None
    cands = [s for s in ids if bandwidth_by_spw[s] >= 1.0e9]
    if not cands:
        med = float(np.median([bandwidth_by_spw[s] for s in ids]))
        cands = [s for s in ids if bandwidth_by_spw[s] >= med]
    if not cands:
        return None
    return max(cands, key=lambda s: snr_by_spw[s])


def _k_spw_score(q: float) -> float:
    if q < 0.1:
        return 1.0
    if q < 0.2:
        return 0.75
    return 0.5


def score_gfluxscale_k_spw(measurements: Measurements, catalogue: Mapping[tuple[int, int], float],
                           snr_by_spw: Mapping[int, float], bandwidth_by_spw: Mapping[int, float], *,
                           vis: str = "", field_names: Mapping[int, str] | None = None,
                           field_intents: Mapping[int, Iterable[str]] | None = None,
                           candidate_spws: Mapping[int, Iterable[int]] | None = None) -> list[QAScore]:
    """Spec §10.3 steps 2–4: per field, K = r(s)/r(s*) with r = I_calvis/I_catalogue.

    `catalogue` maps (field id, spw id) → catalogue I (see :func:`external_catalogue`; entries
    ≤ 0 count as missing). `snr_by_spw` ranks spws (must cover every measured spw, else no
    scores). `candidate_spws` optionally restricts the reference-spw candidates per field (the
    band-to-band rule of §10.3 step 2). Fields are taken in order of their id as a string; one
    score per (field, other spw), metric K, applies_to {vis, field, spw}.
    """
    meas = _flatten(measurements)
    if not meas:
        return []
    missing = sorted({m.spw_id for m in meas} - set(snr_by_spw))
    if missing:
        warnings.warn(f"{vis}: spw-spw consistency not scored: no SNR for spw(s) {missing}",
                      InsufficientDataWarning, stacklevel=2)
        return []
    by_field: dict[int, list[FluxMeasurement]] = defaultdict(list)
    for m in meas:
        by_field[m.field_id].append(m)
    names = dict(field_names or {})
    out: list[QAScore] = []
    for fid in sorted(by_field, key=str):
        fms = by_field[fid]
        name = names.get(fid, fms[0].field_name or str(fid))
        intents = ",".join(sorted((field_intents or {}).get(fid, ())))
        spws = {m.spw_id for m in fms}
        if candidate_spws is not None and fid in candidate_spws:
            spws &= {int(s) for s in candidate_spws[fid]}
        ref = select_reference_spw(spws, snr_by_spw, bandwidth_by_spw)
        if ref is None:
            warnings.warn(f"{vis}: spw-spw consistency for {name}: no candidate reference spw",
                          InsufficientDataWarning, stacklevel=2)
            continue
        ref_meas = next(m for m in fms if m.spw_id == ref)
        cat_ref = catalogue.get((fid, ref), 0.0)
        if not cat_ref > 0:
            warnings.warn(f"{vis}: cannot score spw-spw consistency for {name} ({intents}): no catalogue "
                          f"flux for the highest-SNR spw {ref}", InsufficientDataWarning, stacklevel=2)
            continue
        r_ref = ref_meas.I / cat_ref
        ks: list[tuple[int, float]] = []
        for m in fms:
            if m is ref_meas:
                continue
            cat = catalogue.get((fid, m.spw_id), 0.0)
            if not cat > 0:
                ks = []
                break
            ks.append((m.spw_id, (m.I / cat) / r_ref))
        else:
            for spw, k in sorted(ks):
                q = abs(1.0 - k)
                long = (f"{vis}: the ratio of calibrated to catalogue flux density of {name} ({intents}) "
                        f"in spw {spw} differs by {q:.0%} from that of the highest-SNR spw {ref}")
                out.append(QAScore("score_gfluxscale_k_spw", _k_spw_score(q), float(k), long,
                                   "Internal spw-spw consistency",
                                   "Ratio of flux ratio (calibrated/catalogue) to that of the highest-SNR spw",
                                   _applies(vis, [fid], [spw])))
    return out


def amp_time_series(vis_avg: np.ndarray, flag_avg: np.ndarray, time: np.ndarray) -> np.ndarray:
    """Spec §10.4 step 2: per unique TIME (ascending), mean |V| over the valid entries.

    vis_avg, flag_avg: channel-averaged (row, corr) data and flags (all correlations); time:
    (row,). Valid = unflagged and finite; times without valid entries are left out.
    """
    v = np.asarray(vis_avg)
    valid = ~np.asarray(flag_avg, dtype=bool) & np.isfinite(v)
    t = np.broadcast_to(np.asarray(time, dtype=np.float64)[:, None], v.shape)[valid]
    a = np.abs(v[valid])
    if a.size == 0:
        return np.zeros(0)
    uniq, inv = np.unique(t, return_inverse=True)
    return np.bincount(inv, a, uniq.size) / np.bincount(inv, minlength=uniq.size)


def amp_time_variation(amplitudes: Sequence[float] | np.ndarray) -> float:
    """ampvar = (P80 − P20)/median with numpy percentile method 'nearest' (spec §10.4 step 3).

    Raises ValueError for no data or a zero median amplitude.
    """
    a = np.asarray(amplitudes, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no amplitudes")
    med = float(np.median(a))
    if med == 0 or not math.isfinite(med):
        raise ValueError(f"median amplitude is {med}")
    p80, p20 = np.percentile(a, [80, 20], method="nearest")
    return float((p80 - p20) / med)


def amp_time_score(ampvar: float) -> float:
    """Spec §10.4 step 4: 1.0 → 0.66 over ampvar 0–0.13, then 0.66 → 0.34 over 0.13–0.26."""
    if ampvar <= 0.13:
        return linear_score(ampvar, 0.0, 0.13, 1.0, 0.66)
    return max(linear_score(ampvar, 0.13, 0.26, 0.66, 0.34), 0.34)


def amp_time_spw_candidates(snr_info: Sequence[tuple[str, float | None]] | Mapping[str, float | None]
                            ) -> list[int]:
    """Spw ids of an spwphaseup SNR list, by SNR descending (spec §10.4 step 1).

    Labels that are not integers (e.g. 'Combined (17, 19)') and SNRs that are None or not
    finite are skipped; ties keep their input order.
    """
    items = list(snr_info.items()) if isinstance(snr_info, Mapping) else list(snr_info)
    cands: list[tuple[int, float]] = []
    for label, snr in items:
        try:
            spw = int(str(label).strip())
        except ValueError:
            continue
        if snr is None or not math.isfinite(float(snr)):
            continue
        cands.append((spw, float(snr)))
    return [spw for spw, _ in sorted(cands, key=lambda c: -c[1])]


def score_amp_time_variation(series: Mapping[int, np.ndarray], snr_order: Sequence[int], *, vis: str = "",
                             field_id: int, field_name: str) -> QAScore:
    """Spec §10.4 for one flux calibrator: the first spw of `snr_order` whose amplitude-vs-time
    series (see :func:`amp_time_series`) gives an ampvar; else the fallback score 0.9 ('N/A')."""
    for spw in snr_order:
        a = series.get(spw)
        if a is None:
            continue
        try:
            ampvar = amp_time_variation(a)
        except ValueError:
            continue
        pct = 100.0 * ampvar
        return QAScore("score_gfluxscale_amp_time_variation", amp_time_score(ampvar), pct,
                       f"{vis}: Based on the SPW with the highest S/N (spw={spw}), the Amplitude vs. time "
                       f"spread for the flux calibrator {field_name} is {pct:.1f}% over the scan",
                       "Flux calibrator amplitude vs. time spread", "%", _applies(vis, [field_id], [spw]))
    return QAScore("score_gfluxscale_amp_time_variation", AMP_TIME_FALLBACK_SCORE, "N/A",
                   f"{vis}: the Amplitude vs. time spread for the flux calibrator {field_name} could not "
                   f"be calculated", "Flux calibrator amplitude vs. time spread could not be calculated",
                   "%", _applies(vis, [field_id]))


def list_unity_message(ms_names: Sequence[str]) -> str:
    """The list-level message when every score is 1 (spec §10.1)."""
    names = list(ms_names)
    if len(names) > 1:
        joined = ", ".join(names[:-1]) + " or " + names[-1]
    else:
        joined = "".join(names)
    return f"No missing derived fluxes in {joined}"


def _value(x: object) -> str:
    if isinstance(x, (np.floating, np.integer)):
        x = x.item()
    return str(x)


def regression_keys(ms_basename: str, scores: Iterable[QAScore], measurements: Measurements,
                    stage: int | None = None) -> list[str]:
    """The regression extractor's 'key=value' lines for one MS (spec §14).

    Prefix ``s<stage>.hifa_gfluxscale.<MS name without extension>`` (``hifa_gfluxscale.<…>``
    without a stage); one ``….field_<id>.spw_<id>.I`` line per calvis measurement, then
    ``…[.field_…][.spw_…].qa.metric.<name>`` and ``….qa.score.<name>`` per score.
    """
    stem = os.path.splitext(os.path.basename(os.path.normpath(ms_basename)))[0]
    prefix = (f"s{stage}." if stage is not None else "") + f"hifa_gfluxscale.{stem}"
    d: OrderedDict[str, str] = OrderedDict()
    for m in _flatten(measurements):
        d[f"{prefix}.field_{m.field_id}.spw_{m.spw_id}.I"] = _value(float(m.I))
    for s in scores:
        name = re.sub(r"\s+", "-", re.sub(r"[^\w\s]", "", s.metric_name))
        sel = "".join(f".{key}_" + "_".join(sorted(map(str, s.applies_to[key])))
                      for key in ("field", "spw") if s.applies_to.get(key))
        d[f"{prefix}{sel}.qa.metric.{name}"] = _value(s.metric_value)
        d[f"{prefix}{sel}.qa.score.{name}"] = _value(s.score)
    return [f"{k}={v}" for k, v in d.items()]
