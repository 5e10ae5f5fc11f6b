"""Pre-applied calibration tables, applied in memory while reading (spec §3 "Preconditions":
registered pre-apply calibrations; §9 item 1: corrected = DATA after all pre-applies).

A :class:`CalApply` is one entry of CASA's ``gaintable``/``gainfield``/``interp``/``spwmap``/
``calwt`` lists; :func:`load_calapps` reads the tables (through :mod:`fluxflow.ms`, the only
casacore user) and :func:`apply_calibration` corrects the visibilities, flags and weights of one
(field, spw) selection. Everything here follows CASA's apply path (casa ``synthesis``:
``SolvableVisCal::setApply``/``calcPar``, ``CTPatchedInterp``, ``CTTimeInterp1``,
``RIorAPArray``, ``VisJones``, ``KJones``, ``StandardTsys``, ``BJones``), applymode
``calflagstrict``:

* interp = ``"<time>[,<freq>]"`` (text before the first comma is the time part); defaults
  ``linear`` for both. Time: ``nearest`` or ``linear``; ``perobs`` in the time part slices the
  table by OBSERVATION_ID (only when it holds more than one); ``PD`` in the time part
  (``linearPD``) scales the interpolated phase of a G/T solution by
  ν_data[n/2] / ν_table[n/2] (``CTTimeInterp1::applyPhaseDelay``). Frequency (B, B TSYS only):
  ``nearest`` or ``linear``; ``flag`` in the frequency part (``linearflag``) flags data channels
  whose registered table channels are flagged instead of interpolating across them.
* time interpolation, per table spw and antenna (and per field for gainfield ``'nearest'``, per
  observation for ``perobs``) over that slice's own solution times: outside the time range or
  for a single solution the nearest (first/last) solution; an exact time match uses that row;
  ``nearest`` takes the closer neighbour (the earlier on a tie); ``linear`` interpolates amplitude
  and phase separately, the later phase tracked to within π of the earlier (``RIorAPArray``
  ``trackPhase``), and is flagged where either neighbour is flagged. Flagged rows stay in the
  time list (they are not skipped).
* frequency resampling (``CTPatchedInterp::resampleInFreq``), per antenna and parameter, of the
  time-interpolated spectrum: only unflagged table channels are used; if they equal the data
  channels the values are copied; otherwise the phase is unwrapped along frequency, data
  channels beyond the table channels take the edge value and the rest are interpolated. Without
  ``flag`` no data channel is flagged unless every table channel is; with ``flag`` the data
  channel registered (``resampleFlagsInFreq``) to table channel k is flagged if channel k
  (``nearest``) or channel k or k+1 (``linear``) is flagged.
* gainfield ``''``: the solutions of all fields; ``'nearest'``: those of the table field nearest
  on the sky to the data field (PHASE_DIR separation; the only field if there is one; a tie is an
  error); otherwise a comma list of field ids, ``a~b`` id ranges or (glob) names selecting the
  table's rows (``loadMemCalTable`` with an MSSelection field expression).
* spwmap (``CTPatchedInterp::setSpwMap``): empty or ``[-1]`` = identity; one element = every spw
  maps to it; ``[-999, ...]`` = every spw maps to the first spw with solutions; otherwise
  ``spwmap[spw]`` for the listed spws and identity beyond the list.
* Jones matrices (diagonal, one element per polarisation; T and one-parameter tables use the
  same element for both): G, T, B: the (interpolated) complex solution; K: delays τ [ns] give
  exp(2πi·τ·(ν − ν_ref)) with ν, ν_ref in GHz, ν_ref = CHAN_FREQ[n/2] of the table's spw after
  spwmap (``KJones::setApply``; tables whose CASA_Version is ``Unknown`` or 5.3.0-100..106 use that
  spw's REF_FREQUENCY instead); B TSYS: sqrt(Tsys), interpolated Tsys < 0 flagged
  (``StandardTsys::calcPar``). Correction of correlation pq on baseline ij:
  V / (J_ip · conj(J_jq)) for G, T, B, K; V · sqrt(Tsys_ip · Tsys_jq) for B TSYS (``StandardTsys``
  inverts the usual ``doInv``). All are diagonal, so the order of the tables does not matter.
* calwt (weights multiplied by ws_ip · ws_jq): G, T: ws = |J|² (1 where flagged,
  ``VisJones::calcWtScale``); B: ws = mean over unflagged table channels of |B|² of the
  time-interpolated solution (``BJones::calcWtScale``); B TSYS: ws = 1/Tsys per channel for
  per-channel weights, 1/mean(Tsys over unflagged data channels) for per-row weights
  (``StandardTsys::calcWtScale2``/``calcWtScale``); K: never (``KJones`` forces calWt off).
* calflagstrict: a sample whose antenna Jones is flagged or missing (no solutions for that
  antenna, field or observation) is flagged and left uncorrected; if the table has no solution
  in the mapped spw every sample is flagged (CASA's gaincal refuses to solve in that case; the
  kernel flags and warns so that one missing spw does not stop a run).

Deviations from CASA: times and frequencies are interpolated in double precision (CASA uses
single-precision time offsets); interp strings that name no known method are errors (CASA falls
back to linear in frequency); ``cubic``/``spline`` frequency interpolation is not supported; a
Tsys of exactly 0 is flagged like a negative one (CASA would divide weights by zero); ``perobs``
slices whenever the table has several OBSERVATION_IDs and the caller passes observation ids
(CASA also requires the MS to have the same count).
"""

from __future__ import annotations

import fnmatch
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fluxflow.errors import CaltableError, FlaggedDataWarning
from fluxflow.solve.gaincal import corr_hands

__all__ = ["CalApply", "LoadedCal", "parse_interp", "load_calapps", "prepare_calapp",
           "apply_calibration", "SUPPORTED_TYPES"]

#: VisCal type -> how it is applied.
SUPPORTED_TYPES = {"G Jones": "gain", "T Jones": "gain", "B Jones": "bandpass",
                   "K Jones": "delay", "KMBD Jones": "delay", "B TSYS": "tsys"}
# CASA versions whose K tables pivot the delay phase on REF_FREQUENCY (KJones::setApply).
_OLD_K_VERSIONS = frozenset({"Unknown", "", *(f"5.3.0-{n}" for n in range(100, 107))})
_TWO_PI = 2.0 * math.pi
#: Upper bound on (row x chan x corr) elements of the per-baseline temporaries of one chunk.
CHUNK_ELEMENTS = 1 << 22


def parse_interp(interp: str) -> tuple[str, str, bool, bool]:
    """CASA interp string -> (time_interp, freq_interp, perobs, freq_flag).

    ``time_interp`` is ``'nearest'`` or ``'linear'``, with ``'PD'`` appended for phase-delay
    interpolation (``'linearPD'``); ``freq_interp`` is ``'nearest'`` or ``'linear'``;
    ``perobs`` comes from the time part, ``freq_flag`` from the frequency part (a ``flag`` in
    the time part has no effect in CASA either). ValueError for unknown or unsupported methods.
    """
    text = (interp or "").strip()
    time_part, _, freq_part = text.partition(",")
    t_low, f_low = time_part.strip().lower(), freq_part.strip().lower()
    if "aips" in t_low or "aips" in f_low:
        raise ValueError("the 'aipslin' interpolation was removed in CASA 3.4; use 'linear'")
    time_interp = "linear" if not t_low else _method(t_low, ("nearest", "linear"), interp, "time")
    if "pd" in t_low:
        time_interp += "PD"
    freq_interp = "linear" if not f_low else _method(f_low, ("nearest", "linear"), interp, "freq")
    return time_interp, freq_interp, "perobs" in t_low, "flag" in f_low


def _method(part: str, known: tuple[str, ...], interp: str, axis: str) -> str:
    for name in known:  # CASA tests 'nearest' before 'linear'
        if name in part:
            return name
    if axis == "freq" and ("cubic" in part or "spline" in part):
        raise ValueError(f"interp {interp!r}: cubic/spline frequency interpolation is not "
                         "supported by fluxflow")
    raise ValueError(f"interp {interp!r}: unknown {axis} interpolation {part!r} "
                     f"(expected one of {', '.join(known)})")


@dataclass(frozen=True)
class CalApply:
    """One pre-apply table with CASA gaincal/applycal conventions (spec §3, §9 item 1)."""

    path: str
    gainfield: str = ""
    interp: str = ""
    spwmap: tuple[int, ...] = ()
    calwt: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", str(self.path))
        object.__setattr__(self, "gainfield", str(self.gainfield or "").strip())
        object.__setattr__(self, "spwmap", tuple(int(s) for s in self.spwmap))
        object.__setattr__(self, "calwt", bool(self.calwt))
        parse_interp(self.interp)  # fail early on a bad interp string


@dataclass
class LoadedCal:
    """A pre-apply table ready to apply: its rows (after the gainfield selection) and metadata."""

    calapp: CalApply
    vis_cal: str
    kind: str  # 'gain' | 'bandpass' | 'delay' | 'tsys'
    table: Any  # GainTable (G, T, B) or FloatCalTable (K, B TSYS)
    time_interp: str
    freq_interp: str
    perobs: bool
    freq_flag: bool
    nearest_field: bool
    chan_freq: dict[int, np.ndarray]
    ref_frequency: dict[int, float] = field(default_factory=dict)
    field_directions: dict[int, tuple[float, float]] = field(default_factory=dict)
    casa_version: str = ""

    @property
    def spws(self) -> frozenset[int]:
        """Table spws with solutions (CASA ``spwInOK``)."""
        return frozenset(int(s) for s in np.unique(self.table.spw_id))

    @property
    def calwt(self) -> bool:
        """Effective calwt (KJones forces it off)."""
        return self.calapp.calwt and self.kind != "delay"

    @property
    def summary(self) -> str:
        """One line for logs, results and the report (after CASA's ``applyinfo``)."""
        a = self.calapp
        return (f"{self.vis_cal}: table={a.path} select={a.gainfield!r} "
                f"interp={a.interp or 'linear,linear'!r} spwmap={list(a.spwmap)} "
                f"calWt={self.calwt}")

    def describe(self) -> dict:
        """The applied table as a plain dict (results/report)."""
        a = self.calapp
        return {"path": a.path, "vis_cal": self.vis_cal, "gainfield": a.gainfield,
                "interp": a.interp, "spwmap": list(a.spwmap), "calwt": self.calwt,
                "n_solutions": int(self.table.time.size)}

    def table_spw(self, spw: int) -> int:
        """Table spw used for data spw ``spw`` (``CTPatchedInterp::setSpwMap``)."""
        m = self.calapp.spwmap
        if not m or (len(m) == 1 and m[0] == -1):
            return spw
        if m[0] == -999:
            return min(self.spws) if self.spws else spw
        if len(m) == 1:
            return m[0]
        return m[spw] if spw < len(m) else spw

    def delay_reference(self, spw: int) -> float:
        """K Jones pivot frequency [Hz] for data spw ``spw`` (``KJones::setApply``).

        The pivot is indexed through the raw spwmap (``spwMap()(spw)`` where listed and > -1),
        not through the realised map of :meth:`table_spw`; the two differ only for a
        one-element spwmap, where CASA maps the solutions of every spw but the pivot of spw 0
        only.
        """
        m = self.calapp.spwmap
        ref_spw = m[spw] if spw < len(m) and m[spw] > -1 else spw
        if ref_spw not in self.chan_freq:
            ref_spw = self.table_spw(spw)
        if self.casa_version in _OLD_K_VERSIONS:
            if ref_spw not in self.ref_frequency:
                raise CaltableError(f"{self.calapp.path}: no REF_FREQUENCY for spw {ref_spw}")
            return float(self.ref_frequency[ref_spw])
        f = np.asarray(self.chan_freq[ref_spw], dtype=float)
        return float(f[f.size // 2])

    def nearest_table_field(self, field_id: int,
                            field_directions: Mapping[int, Sequence[float]] | None) -> int:
        """Table field nearest on the sky to data field ``field_id`` (``setFldMap``)."""
        fields = np.unique(self.table.field_id)
        if fields.size == 1:
            return int(fields[0])
        dirs = dict(field_directions or {})
        if field_id not in dirs:
            raise CaltableError(f"{self.calapp.path}: gainfield='nearest' needs the direction "
                                f"of data field {field_id}")
        ra0, dec0 = (float(x) for x in dirs[field_id][:2])
        seps = []
        for f in fields.tolist():
            d = self.field_directions.get(f, dirs.get(f))
            if d is None:
                raise CaltableError(f"{self.calapp.path}: no direction for table field {f}")
            seps.append(_separation(ra0, dec0, float(d[0]), float(d[1])))
        order = np.argsort(seps, kind="stable")
        if seps[order[1]] == seps[order[0]]:
            raise CaltableError(f"{self.calapp.path}: more than one table field at minimum "
                                f"distance from field {field_id}; cannot decide")
        return int(fields[order[0]])


def _separation(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Great-circle distance [rad] (Vincenty form, stable at all separations)."""
    dra = ra2 - ra1
    num = math.hypot(math.cos(dec2) * math.sin(dra),
                     math.cos(dec1) * math.sin(dec2)
                     - math.sin(dec1) * math.cos(dec2) * math.cos(dra))
    den = math.sin(dec1) * math.sin(dec2) + math.cos(dec1) * math.cos(dec2) * math.cos(dra)
    return math.atan2(num, den)


# -------------------------------------------------------------------------------- loading


def load_calapps(calapps: Sequence[CalApply]) -> list[LoadedCal]:
    """Read every table (:func:`fluxflow.ms.read_caltable`) and prepare it for applying.

    Raises CaltableError for unreadable or unsupported tables, bad gainfield or spwmap.
    """
    from fluxflow.ms import read_caltable  # the casacore boundary stays in fluxflow.ms

    return [prepare_calapp(read_caltable(c.path), c) for c in calapps]


def prepare_calapp(table: Any, calapp: CalApply) -> LoadedCal:
    """Check a read table against ``calapp`` and apply its gainfield selection."""
    path = calapp.path
    kind = SUPPORTED_TYPES.get(table.vis_cal)
    if kind is None:
        raise CaltableError(f"{path}: {table.vis_cal!r} tables cannot be pre-applied by fluxflow "
                            f"(supported: {', '.join(SUPPORTED_TYPES)})")
    real = kind in ("delay", "tsys")
    if real != hasattr(table, "fparam"):
        raise CaltableError(f"{path}: {table.vis_cal} table has "
                            f"{'CPARAM' if real else 'FPARAM'} parameters")
    time_interp, freq_interp, perobs, freq_flag = parse_interp(calapp.interp)
    meta = table.meta
    chan_freq = {int(k): np.atleast_1d(np.asarray(v, dtype=float))
                 for k, v in (meta.get("chan_freq") or {}).items()}
    n_ct_spw = len(chan_freq) if chan_freq else int(table.spw_id.max(initial=-1)) + 1
    m = calapp.spwmap
    if m and not (len(m) == 1 and m[0] == -1) and m[0] != -999:
        bad = [s for s in m if s < 0 or s >= n_ct_spw]
        if bad:
            raise CaltableError(f"{path}: spwmap value(s) {bad} outside the table's spws "
                                f"0..{n_ct_spw - 1}")
    nearest = calapp.gainfield.lower() == "nearest"
    if calapp.gainfield and not nearest:
        ids = _select_fields(calapp.gainfield, list(meta.get("field_names") or []), path)
        table = table.select(np.isin(table.field_id, ids))
        if table.time.size == 0:
            raise CaltableError(f"{path}: gainfield {calapp.gainfield!r} selects no solutions")
    if kind in ("bandpass", "tsys"):
        for s, n in (meta.get("nchan") or {}).items():
            if s in chan_freq and chan_freq[s].size != n:
                raise CaltableError(f"{path}: spw {s} rows have {n} channels, its "
                                    f"SPECTRAL_WINDOW {chan_freq[s].size}")
    return LoadedCal(calapp=calapp, vis_cal=table.vis_cal, kind=kind, table=table,
                     time_interp=time_interp, freq_interp=freq_interp, perobs=perobs,
                     freq_flag=freq_flag, nearest_field=nearest, chan_freq=chan_freq,
                     ref_frequency={int(k): float(v)
                                    for k, v in (meta.get("ref_frequency") or {}).items()},
                     field_directions={int(k): (float(v[0]), float(v[1]))
                                       for k, v in (meta.get("field_directions") or {}).items()},
                     casa_version=str(meta.get("casa_version", "")))


def _select_fields(expr: str, names: list[str], path: str) -> list[int]:
    """Field ids of an MSSelection-like field expression: ids, 'a~b' ranges, glob names."""
    ids: set[int] = set()
    for token in (t.strip() for t in expr.split(",")):
        if not token:
            continue
        rng = re.fullmatch(r"(\d+)\s*~\s*(\d+)", token)
        if token.isdigit():
            ids.add(int(token))
        elif rng:
            ids.update(range(int(rng.group(1)), int(rng.group(2)) + 1))
        else:
            hits = [i for i, n in enumerate(names) if fnmatch.fnmatchcase(n, token)]
            if not hits:
                raise CaltableError(f"{path}: gainfield {token!r} matches no field "
                                    f"(table fields: {', '.join(names) or 'none'})")
            ids.update(hits)
    return sorted(ids)


# ------------------------------------------------------------------------------- applying


def apply_calibration(vis: np.ndarray, flag: np.ndarray, weight: np.ndarray, time: np.ndarray,
                      antenna1: np.ndarray, antenna2: np.ndarray, corr_types: Sequence[str],
                      chan_freq: np.ndarray, *, field_id: int, spw_id: int,
                      loaded: Sequence[LoadedCal],
                      field_directions: Mapping[int, Sequence[float]] | None = None,
                      obs_id: int | np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply the ``loaded`` tables in turn to rows of one field and spw (module docstring).

    ``vis``, ``flag`` are (row, chan, corr); ``weight`` (row, chan, corr) or (row, corr);
    ``time`` [MJD s], ``antenna1``, ``antenna2`` (row,); ``chan_freq`` (chan,) [Hz] of the data;
    ``field_directions`` {field_id: (ra, dec) rad} (needed for gainfield 'nearest' when the
    table has several fields); ``obs_id`` (scalar or (row,)) for 'perobs'. Returns new
    (vis, flag, weight) with the input dtypes (complex at least complex64, weights at least
    float32); inputs are not modified. Interpolation runs in double precision, the correction
    itself in the data's precision (CASA corrects in single precision).
    """
    vis_in, w_in = np.asarray(vis), np.asarray(weight)
    hands = np.array(corr_hands(corr_types), dtype=np.int64).reshape(-1, 2)
    freqs = np.asarray(chan_freq, dtype=np.float64).ravel()
    nrow = vis_in.shape[0] if vis_in.ndim == 3 else -1
    if vis_in.ndim != 3 or vis_in.shape[1:] != (freqs.size, hands.shape[0]):
        raise ValueError("vis must be (row, chan, corr) with one chan per chan_freq and one "
                         "corr per corr_types entry")
    if np.shape(flag) != vis_in.shape or w_in.shape not in (vis_in.shape, (nrow, hands.shape[0])):
        raise ValueError("flag must be shaped like vis and weight (row, chan, corr) or (row, corr)")
    v = np.array(vis_in, dtype=np.result_type(vis_in.dtype, np.complex64), copy=True)
    f = np.array(flag, dtype=bool, copy=True)
    w = np.array(w_in, dtype=np.result_type(w_in.dtype, np.float32), copy=True)
    rows = _Rows(np.asarray(time, dtype=np.float64), np.asarray(antenna1, dtype=np.int64),
                 np.asarray(antenna2, dtype=np.int64), hands, freqs,
                 None if obs_id is None else np.broadcast_to(np.asarray(obs_id), (nrow,)))
    if nrow > 0:
        for cal in loaded:
            _apply_one(cal, rows, v, f, w, field_id, spw_id, field_directions)
    return v, f, w


@dataclass
class _Rows:
    time: np.ndarray
    a1: np.ndarray
    a2: np.ndarray
    hands: np.ndarray  # (corr, 2) polarisation of antenna 1 / antenna 2
    freqs: np.ndarray
    obs: np.ndarray | None


def _apply_one(cal: LoadedCal, rows: _Rows, v: np.ndarray, f: np.ndarray, w: np.ndarray,
               field_id: int, spw_id: int,
               field_directions: Mapping[int, Sequence[float]] | None) -> None:
    """Correct v, f, w in place with one table."""
    tab = cal.table
    ct_spw = cal.table_spw(spw_id)
    if ct_spw not in cal.spws:
        warnings.warn(f"{cal.calapp.path}: no solutions for spw {ct_spw} (data spw {spw_id}); "
                      "all samples flagged", FlaggedDataWarning, stacklevel=3)
        f[:] = True
        return
    sel = tab.spw_id == ct_spw
    if cal.nearest_field:
        sel &= tab.field_id == cal.nearest_table_field(field_id, field_directions)
    groups = [(np.ones(rows.time.size, bool), sel)]
    obs_ids = np.unique(tab.obs_id[sel])
    if cal.perobs and obs_ids.size > 1:
        if rows.obs is None:
            warnings.warn(f"{cal.calapp.path}: 'perobs' ignored, no observation ids given",
                          FlaggedDataWarning, stacklevel=3)
        else:
            groups = [(rows.obs == o, sel & (tab.obs_id == o)) for o in np.unique(rows.obs)]
    missing: set[int] = set()
    for data_rows, table_rows in groups:
        idx = np.flatnonzero(data_rows)
        missing |= _apply_rows(cal, rows, idx, table_rows, ct_spw, spw_id, v, f, w)
    if missing:
        warnings.warn(f"{cal.calapp.path}: antennas {sorted(missing)} have no solutions in spw "
                      f"{ct_spw} for field {field_id}; their baselines are flagged",
                      FlaggedDataWarning, stacklevel=3)


def _apply_rows(cal: LoadedCal, rows: _Rows, idx: np.ndarray, table_rows: np.ndarray,
                ct_spw: int, spw_id: int, v: np.ndarray, f: np.ndarray,
                w: np.ndarray) -> set[int]:
    """Correct data rows ``idx`` with the table rows ``table_rows``; return antennas without
    solutions."""
    a1, a2 = rows.a1[idx], rows.a2[idx]
    ut, t_idx = np.unique(rows.time[idx], return_inverse=True)
    ants = np.unique(np.concatenate([a1, a2]))
    terms = _antenna_terms(cal, ut, ants, table_rows, ct_spw, spw_id, rows.freqs,
                           spectral_weight=w.ndim == 3)
    jones, ok, wscale = terms
    # per antenna: the factor multiplying the data (finite where flagged), data precision
    if cal.kind == "tsys":
        factor = np.where(ok, jones, 1.0).astype(v.real.dtype)
    else:
        factor = (1.0 / np.where(ok, jones, 1.0)).astype(v.dtype)
    scale = wscale.astype(w.dtype)
    all_ok = bool(ok.all())
    # (row, chan_or_1, npar) per antenna of the baseline -> (row, chan_or_1, corr)
    p = rows.hands[:, 0] if jones.shape[-1] > 1 else np.zeros(rows.hands.shape[0], np.int64)
    q = rows.hands[:, 1] if jones.shape[-1] > 1 else np.zeros(rows.hands.shape[0], np.int64)
    pos1, pos2 = np.searchsorted(ants, a1), np.searchsorted(ants, a2)
    contiguous = idx.size > 0 and idx[-1] - idx[0] == idx.size - 1
    step = max(1, CHUNK_ELEMENTS // max(1, v.shape[1] * v.shape[2]))
    for lo in range(0, idx.size, step):
        hi = min(lo + step, idx.size)
        r = slice(idx[lo], idx[hi - 1] + 1) if contiguous else idx[lo:hi]
        ti, p1, p2 = t_idx[lo:hi], pos1[lo:hi], pos2[lo:hi]
        c2 = factor[ti, p2][:, :, q]
        fac = factor[ti, p1][:, :, p] * (c2 if cal.kind == "tsys" else np.conj(c2))
        if not all_ok:  # a sample needing a flagged Jones is flagged and left uncorrected
            good = ok[ti, p1][:, :, p] & ok[ti, p2][:, :, q]
            fac = np.where(good, fac, fac.dtype.type(1))
            f[r] |= ~good
        v[r] *= fac
        if cal.calwt:
            sc = scale[ti, p1][:, :, p] * scale[ti, p2][:, :, q]
            w[r] *= sc if w.ndim == 3 else sc[:, 0, :]
    has = np.isin(ants, cal.table.antenna1[table_rows])
    return set(ants[~has].tolist())


def _antenna_terms(cal: LoadedCal, ut: np.ndarray, ants: np.ndarray, table_rows: np.ndarray,
                   ct_spw: int, spw_id: int, freqs: np.ndarray, spectral_weight: bool
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (time, antenna): Jones (nt, nant, nchan_or_1, npar), OK flags, weight scales."""
    tab = cal.table
    cplx = not hasattr(tab, "fparam")
    par = tab.cparam if cplx else tab.fparam
    npar = par.shape[2]
    freq_dep = cal.kind in ("bandpass", "tsys")
    n_in = cal.chan_freq[ct_spw].size if freq_dep and ct_spw in cal.chan_freq else 1
    n_out = freqs.size if cal.kind != "gain" else 1
    nt, na = ut.size, ants.size
    jones = np.ones((nt, na, n_out, npar), np.float64 if cal.kind == "tsys" else np.complex128)
    ok = np.zeros((nt, na, n_out, npar), bool)
    n_ws = n_out if (cal.kind == "tsys" and spectral_weight) else 1
    wscale = np.ones((nt, na, n_ws, npar))
    nearest = cal.time_interp.startswith("nearest")
    if cal.kind == "delay":
        dnu = (freqs - cal.delay_reference(spw_id)) / 1e9  # GHz
    for k, ant in enumerate(ants.tolist()):
        sel = np.flatnonzero(table_rows & (tab.antenna1 == ant))
        if sel.size == 0:
            continue  # no solutions: stays flagged
        raw = par[sel, :n_in, :]
        bad = tab.flag[sel, :n_in, :] | ~np.isfinite(raw)
        # flagged cells never reach an unflagged result; keep their values finite
        values = np.where(bad, 1.0, raw)
        vals = (np.stack([np.abs(values), np.angle(values)], axis=-1) if cplx
                else values[..., None].astype(np.float64))
        tv, tf, reg, frac = _interp_time(ut, tab.time[sel], vals, bad, nearest)
        if cal.kind == "gain":
            amp, ph = tv[..., 0], tv[..., 1]
            if "PD" in cal.time_interp:
                ph = _phase_delay(ph, np.angle(values[reg]), freqs, cal.chan_freq.get(ct_spw))
            jones[:, k] = amp * np.exp(1j * ph)
            ok[:, k] = ~tf
            wscale[:, k] = np.where(tf, 1.0, amp ** 2)
        elif cal.kind == "delay":
            tau = tv[:, 0, :, 0]  # (nt, npar) ns
            jones[:, k] = np.exp(1j * _TWO_PI * tau[:, None, :] * dnu[None, :, None])
            ok[:, k] = ~tf[:, :1, :]
        else:
            # times registered to the same rows with the same weight share one spectrum
            _, first, same = np.unique(np.stack([reg.astype(float), frac], axis=1), axis=0,
                                       return_index=True, return_inverse=True)
            fv, ff = _resample_freq(tv[first], tf[first], cal.chan_freq[ct_spw], freqs,
                                    cal.freq_interp, cal.freq_flag)
            fv, ff = fv[same.ravel()], ff[same.ravel()]
            if cal.kind == "bandpass":
                jones[:, k] = fv[..., 0] * np.exp(1j * fv[..., 1])
                ok[:, k] = ~ff
                good = ~tf
                n_good = good.sum(axis=1)
                power = np.where(good, tv[..., 0] ** 2, 0.0).sum(axis=1)
                wscale[:, k, 0] = np.where(n_good > 0, power / np.maximum(n_good, 1), 1.0)
            else:  # tsys
                tsys = fv[..., 0]
                good = ~ff & (tsys > 0)
                jones[:, k] = np.sqrt(np.where(good, tsys, 1.0))
                ok[:, k] = good
                if spectral_weight:
                    wscale[:, k] = np.where(good, 1.0 / np.where(good, tsys, 1.0), 0.0)
                else:
                    n_good = good.sum(axis=1)
                    mean = np.where(good, tsys, 0.0).sum(axis=1) / np.maximum(n_good, 1)
                    wscale[:, k, 0] = np.where(n_good > 0, 1.0 / np.where(n_good > 0, mean, 1.0),
                                               1.0)
    if cal.kind != "tsys":
        ok &= jones != 0  # a singular Jones cannot be inverted: flagged (Jones::invert)
    return jones, ok, wscale


def _phase_delay(ph: np.ndarray, stored_phase: np.ndarray, freqs: np.ndarray,
                 table_freqs: np.ndarray | None) -> np.ndarray:
    """'PD' time interpolation: (phase + cycles of the registered row) · ν_data/ν_table."""
    if table_freqs is None or table_freqs.size == 0:
        return ph
    cfreq = float(table_freqs[table_freqs.size // 2])
    cycles = np.floor((stored_phase + math.pi) / _TWO_PI) * _TWO_PI
    return (ph + cycles) * (float(freqs[freqs.size // 2]) / cfreq)


def _interp_time(t_out: np.ndarray, t_in: np.ndarray, vals: np.ndarray, flags: np.ndarray,
                 nearest: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Interpolate one antenna's solutions to ``t_out`` (``CTTimeInterp1``).

    ``vals`` (m, nchan, npar, k): k = 2 for (amplitude, phase), k = 1 for real parameters;
    ``flags`` (m, nchan, npar). Returns values (n, nchan, npar, k), flags (n, nchan, npar), the
    registered row of each output time (index into the inputs) and the weight of the row after
    it (0 where one row is used).
    """
    order = np.argsort(t_in, kind="stable")
    t_in, vals, flags = t_in[order], vals[order], flags[order]
    m = t_in.size
    pos = np.searchsorted(t_in, t_out, side="left")  # casacore binarySearch: first >= value
    exact = (pos < m) & (t_in[np.minimum(pos, m - 1)] == t_out)
    before, after = t_out < t_in[0], t_out > t_in[-1]
    lo = np.clip(pos - 1, 0, m - 1)
    if m == 1:
        single = np.ones(t_out.size, bool)
        idx = np.zeros(t_out.size, np.int64)
    elif nearest:
        hi = np.minimum(lo + 1, m - 1)
        take_hi = (lo != m - 1) & ((t_in[hi] - t_out) < (t_out - t_in[lo]))
        idx = np.where(exact, pos, np.where(before, 0, np.where(after, m - 1,
                                                                 np.where(take_hi, hi, lo))))
        single = np.ones(t_out.size, bool)
    else:
        single = exact | before | after
        idx = np.where(exact, np.minimum(pos, m - 1),
                       np.where(before, 0, np.where(after, m - 1, lo)))
    out = vals[idx].copy()
    out_flag = flags[idx].copy()
    weight_next = np.zeros(t_out.size)
    interp = ~single
    if np.any(interp):
        i0 = np.minimum(lo[interp], m - 2)
        i1 = i0 + 1
        frac = ((t_out[interp] - t_in[i0]) / (t_in[i1] - t_in[i0]))[:, None, None]
        v0, v1 = vals[i0], vals[i1]
        with np.errstate(invalid="ignore"):
            d = v1 - v0
            if vals.shape[-1] == 2:  # track the later phase to within pi of the earlier
                dph = d[..., 1]
                d[..., 1] = np.where(np.abs(dph) <= math.pi, dph,
                                     (dph + math.pi) % _TWO_PI - math.pi)
            out[interp] = v0 + frac[..., None] * d
        out_flag[interp] = flags[i0] | flags[i1]
        idx = idx.copy()
        idx[interp] = i0
        weight_next[interp] = frac[:, 0, 0]
    return out, out_flag, order[idx], weight_next


def _resample_freq(vals: np.ndarray, flags: np.ndarray, f_in: np.ndarray, f_out: np.ndarray,
                   method: str, flag_mode: bool) -> tuple[np.ndarray, np.ndarray]:
    """Resample (n, nchan_in, npar, k) onto ``f_out`` (``CTPatchedInterp::resampleInFreq``).

    Elements (time, parameter) sharing a channel flag pattern are resampled together.
    """
    n, n_in, npar, k = vals.shape
    elem = vals.transpose(0, 2, 1, 3).reshape(n * npar, n_in, k)
    eflag = flags.transpose(0, 2, 1).reshape(n * npar, n_in)
    out = np.zeros((n * npar, f_out.size, k))
    out_flag = np.ones((n * npar, f_out.size), bool)
    if flag_mode and f_in.size == f_out.size and np.allclose(f_out, f_in, rtol=1e-10, atol=0.0):
        # same channels as the data: values and flags are copied channel by channel (checked
        # against CASA's applycal: a flagged bandpass channel flags only that data channel)
        return vals.copy(), flags.copy()
    patterns, which = np.unique(eflag, axis=0, return_inverse=True)
    for p, pattern in enumerate(patterns):
        members = np.flatnonzero(which.ravel() == p)
        good = ~pattern
        if not good.any():
            continue  # every table channel flagged: output flagged
        x = f_in[good]
        y = elem[members][:, good, :]
        if x.size == f_out.size and np.allclose(f_out, x, rtol=1e-10, atol=0.0):
            out[members] = y
            out_flag[members] = False
            continue
        if k == 2:
            y = y.copy()
            y[..., 1] = np.unwrap(y[..., 1], axis=1)
        out[members] = _interp_apply(x, f_out, y, method)
        out_flag[members] = (_registered_flags(pattern, f_in, f_out, method) if flag_mode
                             else False)
    res = out.reshape(n, npar, f_out.size, k).transpose(0, 2, 1, 3)
    res_flag = out_flag.reshape(n, npar, f_out.size).transpose(0, 2, 1)
    return res, res_flag


def _interp_apply(x: np.ndarray, x_out: np.ndarray, y: np.ndarray, method: str) -> np.ndarray:
    """Interpolate y (e, len(x), k) from x to x_out; nearest value beyond the ends of x."""
    if x.size == 1:
        return np.repeat(y, x_out.size, axis=1)
    if x[-1] < x[0]:  # lower sideband: work in ascending frequency
        x, y = x[::-1], y[:, ::-1]
    pos = np.searchsorted(x, x_out, side="left")
    lo = np.clip(pos - 1, 0, x.size - 1)
    hi = np.clip(pos, 0, x.size - 1)
    if method == "nearest":
        nearer_hi = np.abs(x[hi] - x_out) < np.abs(x_out - x[lo])
        return y[:, np.where(nearer_hi, hi, lo)]
    span = x[hi] - x[lo]  # 0 beyond either end (lo == hi): the edge value
    frac = np.divide(x_out - x[lo], span, out=np.zeros_like(x_out), where=span > 0)
    return y[:, lo] * (1.0 - frac)[None, :, None] + y[:, hi] * frac[None, :, None]


def _registered_flags(flag_in: np.ndarray, f_in: np.ndarray, f_out: np.ndarray,
                      method: str) -> np.ndarray:
    """'flag' frequency modes: the flag of the table channel each data channel registers to
    (``CTPatchedInterp::resampleFlagsInFreq``)."""
    n = flag_in.size
    if method == "nearest" or n == 1:
        flreg = flag_in
    else:
        flreg = np.empty(n, bool)
        flreg[:-1] = flag_in[:-1] | flag_in[1:]
        flreg[-1] = flreg[-2]
    # casacore binarySearch: first element >= (ascending) or <= (descending) the value
    if f_in[-1] >= f_in[0]:
        ireg = np.searchsorted(f_in, f_out, side="left")
    else:
        ireg = np.searchsorted(-f_in, -f_out, side="left")
    ireg = np.minimum(np.where(ireg > 0, ireg - 1, ireg), n - 1)
    if n > 1:
        if method == "nearest":
            nxt = np.minimum(ireg + 1, n - 1)
            closer = np.abs(f_out - f_in[ireg]) > np.abs(f_in[nxt] - f_out)
            ireg = np.where((ireg < n - 1) & closer, nxt, ireg)
        else:
            ireg = np.where(ireg == n - 1, n - 2, ireg)
    return flreg[ireg]
