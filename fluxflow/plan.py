"""Planning: from one MS's metadata, the parameters and the catalogue, decide every solve (spec §3).

Pure functions over :class:`~fluxflow.ms.types.MSMetadata`; no I/O. The result, an
:class:`MSPlan`, is small and picklable: it travels to the workers with the tasks built from it.

Task granularity: one :class:`FieldTask` per (MS, field, spw) — or per (MS, field, spw group)
when a phase-up override combines or maps spws — covering all of that field's calibrator intents.
The amplitude solve is per scan (solint 'inf', combine=''), so no data of one field/spw are needed
by any other task: each task reads its selection once, on the worker that solves it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from fluxflow.errors import FluxflowError, ResolvedCalibratorWarning, SelectionError
from fluxflow.models.catalogue import ORIGIN_DB, ORIGIN_XML, CatalogueRow, catalogue_lookup
from fluxflow.ms.types import MSMetadata
from fluxflow.params import Params, PhaseupOverride, split_list

PC_INTENTS = frozenset({"PHASE", "CHECK"})
#: spec §7.2: names setjy treats as solar-system bodies
SOLAR_SYSTEM_BODIES = frozenset({"Venus", "Mars", "Jupiter", "Uranus", "Neptune", "Pluto", "Io", "Europa",
                                 "Ganymede", "Callisto", "Titan", "Triton", "Ceres", "Pallas", "Vesta",
                                 "Juno", "Victoria", "Davida"})
#: spec §3.10: catalogue origins whose spectral index is used for BANDPASS models (not analysisUtils)
SPIX_ORIGINS = (ORIGIN_DB, ORIGIN_XML)


@dataclass(frozen=True)
class PhaseSolve:
    """One phase-only gaincal of spec §3.5 (solves A-D)."""

    label: str  # 'A' reference, 'B' PHASE/CHECK, 'C' PHASE with other intents, 'D' other transfer
    intents: frozenset[str]  # rows solved (by scan intent)
    apply_intents: frozenset[str]  # rows the solution is applied to in the amplitude solve
    solint: str
    gaintype: str
    spwmap: tuple[int, ...]
    combine_spw: bool
    minblperant: int
    antennas: tuple[int, ...] | None = None  # id list: baselines with at least one listed antenna
    uvmax_m: float | None = None  # projected uv distance limit (resolved calibrators)


@dataclass(frozen=True)
class ModelSpec:
    """The model a field/spw is solved against (spec §7.2-7.3)."""

    kind: str  # 'unit' | 'point' | 'disk' | 'column'
    I: float = 1.0
    spix: float = 0.0
    ref_freq: float = 0.0
    diameter_arcsec: float = 0.0


@dataclass(frozen=True)
class FieldTask:
    """Everything one worker needs to solve one field over one spw (group) of one MS."""

    ms: str
    ms_name: str
    field_id: int
    field_name: str
    role: str  # 'reference' | 'transfer'
    spw_ids: tuple[int, ...]
    intents: frozenset[str]  # all rows read: field's intents within refintent ∪ TI
    scan_intents: dict[int, frozenset[str]]
    phase_solves: tuple[PhaseSolve, ...]
    models: dict[int, ModelSpec]
    amp_solint: str
    minsnr: float
    refants: tuple[int, ...]
    antennas: tuple[int, ...] | None  # the `antenna` parameter (None = all)
    n_ant: int
    datacolumn: str
    chunk_rows: int | None
    calvis_intents: frozenset[str]  # transfer intents for the calibrated flux (empty: none)
    amp_time: bool  # compute the §10.4 amplitude-vs-time series (flux calibrator)
    preapply: tuple = ()  # CalApply entries applied in memory before solving (issue 8)
    field_directions: dict[int, tuple[float, float]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        spws = "-".join(str(s) for s in self.spw_ids)
        return f"{self.ms_name}-f{self.field_id}-s{spws}"


@dataclass
class MSPlan:
    ms: str
    ms_name: str
    reference_ids: list[int]
    transfer_ids: list[int]
    transintents: tuple[str, ...]  # pruned TI (§3.2)
    refintents: tuple[str, ...]
    refspwmap: tuple[int, ...]
    refant_names: list[str]
    resantenna: str  # '' or 'DA41,DV03,...&'
    uvrange: str
    field_names: dict[int, str]
    field_intents: dict[int, tuple[str, ...]]
    field_is_ephemeris: dict[int, bool]
    antenna_names: list[str]
    science_spws: list[int]
    spw_freqs: dict[int, float]  # centre frequencies
    spw_bandwidths: dict[int, float]
    spw_names: dict[int, str]
    valid_spws: dict[int, list[int]]  # field -> science spws it was observed in (any intent)
    expected_measurements: int  # §10.1
    catalogue: list[CatalogueRow]
    tasks: list[FieldTask] = field(default_factory=list)
    start_time: float = 0.0  # MJD seconds
    preapply: list[str] = field(default_factory=list)  # one line per pre-applied table
    adopt: bool = False  # no reference calibrator: adopt session fluxes (§12)
    warnings: list[str] = field(default_factory=list)
    resolved_info: dict = field(default_factory=dict)

    @property
    def n_ant(self) -> int:
        return len(self.antenna_names)


# --------------------------------------------------------------------------------------------
def resolve_fields(md: MSMetadata, spec: str, what: str) -> list[int]:
    """CASA-style field list (names or ids) -> field ids; unknown names are an error."""
    ids: list[int] = []
    for item in split_list(spec):
        hits = md.fields_named(item)
        if not hits:
            names = ", ".join(sorted({f.name for f in md.fields}))
            raise SelectionError(f"{md.name}: {what} field {item!r} is not in the MS (fields: {names})")
        ids.extend(f.id for f in hits)
    return sorted(set(ids))


def resolve_antennas(md: MSMetadata, spec: str) -> tuple[int, ...] | None:
    if not spec.strip():
        return None
    return tuple(md.antenna(a.strip().rstrip("&")).id for a in split_list(spec.replace("&", "")))


def choose_refants(md: MSMetadata, params: Params) -> list[str]:
    """User refant list, else the automatic ranking of :func:`fluxflow.solve.refant.rank_refants`."""
    if params.refant.strip():
        names = list(split_list(params.refant))
        for n in names:
            md.antenna(n)  # raises SelectionError naming the antenna
        return [md.antenna(n).name for n in names]
    from fluxflow.solve.refant import rank_refants

    pos = np.array([a.position for a in md.antennas], float)
    flagged = np.array([md.extra.get("antenna_flag_fraction", {}).get(a.id, 0.0) for a in md.antennas])
    return list(rank_refants(md.antenna_names, pos, flagged))


def default_minblperant(n_ant: int) -> int:
    """CASA's generic default (spec §2): 4, or max(2, N_ant - 1) with fewer than 5 antennas."""
    return 4 if n_ant >= 5 else max(2, n_ant - 1)


def _lookup(params: Params, intent: str, field_name: str) -> PhaseupOverride:
    """Spec §3.5 P(intent, field): an override record, else defaults with `phaseupsolint`."""
    rec = params.phaseup_for(intent, field_name)
    if rec is None:
        return PhaseupOverride(solint=params.phaseupsolint, gaintype="G")
    return rec


def _phase(label: str, rec: PhaseupOverride, intents: Iterable[str], apply: Iterable[str],
           minblperant: int, antennas=None, uvmax=None) -> PhaseSolve:
    return PhaseSolve(label=label, intents=frozenset(intents), apply_intents=frozenset(apply),
                      solint=rec.solint, gaintype=rec.gaintype, spwmap=tuple(rec.spwmap),
                      combine_spw=rec.combine_spw, minblperant=minblperant, antennas=antennas,
                      uvmax_m=uvmax)


def reference_model(md: MSMetadata, params: Params, catalogue: list[CatalogueRow], field_id: int,
                    spw_id: int) -> ModelSpec:
    """Spec §3 / §7.2: catalogue point source (disk when a diameter is known), else MODEL_DATA."""
    f = md.field(field_id)
    spw = md.spw(spw_id)
    row = catalogue_lookup(catalogue, md.name, field_id, spw_id)
    if row is None:
        if "MODEL_DATA" in md.data_columns:
            return ModelSpec(kind="column")
        hint = ("" if catalogue else f" (the catalogue has no rows for this MS at all: rows are matched "
                f"on the `ms` column, which must be {md.name!r})")
        raise FluxflowError(
            f"{md.name}: reference field {f.name} (id {field_id}) spw {spw_id} has no row in the flux "
            f"catalogue (reffile) and the MS has no MODEL_DATA: give its flux density in flux.csv{hint}")
    diameter = body_diameter(md, params, field_id)
    kind = "disk" if diameter > 0 else "point"
    if diameter <= 0 and f.name.split("_")[0].capitalize() in SOLAR_SYSTEM_BODIES:
        warnings.warn(f"{md.name}: reference field {f.name} looks like a solar-system body but its size "
                      "is unknown (no ephemeris table in the MS): it is modelled as a point source. "
                      f"Give its apparent diameter with --resolved-diameter {f.name}=ARCSEC.",
                      ResolvedCalibratorWarning, stacklevel=2)
    return ModelSpec(kind=kind, I=row.I, spix=row.spix, ref_freq=spw.centre_frequency,
                     diameter_arcsec=diameter)


def bandpass_spix(catalogue: list[CatalogueRow], ms_name: str, field_id: int, spw_id: int) -> float:
    """Spec §3.10/§7.3: a BANDPASS calibrator's spectral index, from a DB or Source.xml row; else 0."""
    row = catalogue_lookup(catalogue, ms_name, field_id, spw_id)
    return row.spix if (row is not None and row.origin in SPIX_ORIGINS) else 0.0


def transfer_model(md: MSMetadata, catalogue: list[CatalogueRow], field_id: int, spw_id: int,
                   intents: frozenset[str]) -> ModelSpec:
    """Spec §7.3: BANDPASS transfer fields 1 Jy at the spw centre with catalogue spix; else unit."""
    if "BANDPASS" in intents:
        return ModelSpec(kind="point", I=1.0, spix=bandpass_spix(catalogue, md.name, field_id, spw_id),
                         ref_freq=md.spw(spw_id).centre_frequency)
    return ModelSpec(kind="unit")


def body_diameter(md: MSMetadata, params: Params, field_id: int) -> float:
    """Apparent diameter (arcsec) of a resolved calibrator: user value, else ephemeris, else 0."""
    f = md.field(field_id)
    if f.name in params.resolved_diameter:
        return float(params.resolved_diameter[f.name])
    eph = md.extra.get("ephemeris_diameter_arcsec", {})
    return float(eph.get(field_id, 0.0))


# --------------------------------------------------------------------------------------------
def plan_ms(md: MSMetadata, params: Params, catalogue: list[CatalogueRow]) -> MSPlan:
    """Spec §3.1-§3.6 decisions for one MS."""
    refintents = params.refintents
    all_ti = params.transintents
    fint = {f.id: md.field_intents(f.id) for f in md.fields}

    # §2 / §3.1 reference fields
    if params.reference.strip():
        ref_ids = resolve_fields(md, params.reference, "reference")
    else:
        ref_ids = sorted(f.id for f in md.fields if fint[f.id] & set(refintents))
    # §3.2 prune transfer intents observed on a reference field
    ref_intents = set().union(*(fint[i] for i in ref_ids)) if ref_ids else set()
    ti = tuple(i for i in all_ti if i not in ref_intents)
    if params.transfer.strip():
        tr_ids = [i for i in resolve_fields(md, params.transfer, "transfer") if i not in ref_ids]
    else:
        cand = [f for f in md.fields if fint[f.id] & set(ti) and f.id not in ref_ids]
        tr_ids = [f.id for f in sorted(cand, key=lambda f: (f.name, f.id))]

    sci = [s.id for s in md.science_spws]
    if params.spw.strip():
        want = [int(x) for x in split_list(params.spw)]
        for s in want:
            if s not in sci:
                raise SelectionError(f"{md.name}: spw {s} is not a science spectral window "
                                     f"(science spws: {sci})")
        sci = [s for s in sci if s in want]
    valid = {f.id: [s for s in md.spws_for(f.id) if s in sci] for f in md.fields}

    refspwmap = params.refspwmap or (-1,)
    ref_spws = {s for r in ref_ids for s in md.spws_for(r, refintents)}
    for i, s in enumerate(refspwmap):
        if s < 0 or (len(refspwmap) > 1 and s == i):
            continue
        if s not in [x.id for x in md.spws]:
            raise SelectionError(f"{md.name}: refspwmap names spw {s}, which the MS does not have")
        if ref_ids and s not in ref_spws:
            raise SelectionError(f"{md.name}: refspwmap maps spw {i} to spw {s}, which has no "
                                 f"{','.join(refintents)} data on the reference field(s) "
                                 f"(spws with data: {sorted(ref_spws)})")

    plan = MSPlan(
        ms=md.path, ms_name=md.name, reference_ids=ref_ids, transfer_ids=tr_ids, transintents=ti,
        refintents=refintents, refspwmap=tuple(refspwmap), refant_names=[], resantenna="",
        uvrange="", field_names={f.id: f.name for f in md.fields},
        field_intents={f.id: tuple(sorted(fint[f.id])) for f in md.fields},
        field_is_ephemeris={f.id: f.is_ephemeris for f in md.fields},
        antenna_names=md.antenna_names, science_spws=sci,
        spw_freqs={s.id: s.centre_frequency for s in md.spws},
        spw_bandwidths={s.id: s.total_bandwidth for s in md.spws},
        spw_names={s.id: s.name for s in md.spws}, valid_spws=valid,
        expected_measurements=sum(len([s for s in md.spws_for(f, fint[f] & set(ti)) if s in sci])
                                  for f in tr_ids),
        catalogue=catalogue, start_time=md.start_time,
    )
    if not ref_ids:
        plan.adopt = True  # §3.1 guard; the session reduction may adopt fluxes (§12)
        plan.warnings.append(f"no data with reference intent {','.join(refintents)}")
        return plan
    if not tr_ids:
        plan.warnings.append(f"no transfer calibrators (intents {','.join(ti)})")

    if len(md.antennas) < 3:
        from fluxflow.errors import SolveError

        raise SolveError(f"{md.name}: only {len(md.antennas)} antennas; antenna-based gain solutions "
                         "need at least 3")
    # §3.3 refant, §3.4 resolved calibrator
    refants = choose_refants(md, params)
    resantenna, uvrange, info = resolved_selection(md, params, ref_ids, refants[0], sci)
    plan.resantenna, plan.uvrange, plan.resolved_info = resantenna, uvrange, info
    from fluxflow.transfer.resolved import filter_refants

    plan.refant_names = list(filter_refants(refants, resantenna))
    refant_ids = tuple(md.antenna(n).id for n in plan.refant_names)
    antennas = resolve_antennas(md, params.antenna)
    res_ids = resolve_antennas(md, resantenna) if resantenna else antennas
    uvmax = float(uvrange.lstrip("<").rstrip("m")) if uvrange else None

    # §3.5 phase solves, per field
    npc = [i for i in ti if i not in PC_INTENTS]
    excl = set(refintents) | set(npc)
    mbl = default_minblperant(len(md.antennas))
    solves: dict[int, list[PhaseSolve]] = {}
    for r in ref_ids:
        name = md.field(r).name
        rec = _lookup(params, "BANDPASS", name) if "BANDPASS" in fint[r] else _lookup(params, refintents[0], name)
        solves.setdefault(r, []).append(
            _phase("A", rec, set(refintents) & fint[r], (set(refintents) | set(npc)) & fint[r], 2,
                   antennas=res_ids, uvmax=uvmax))
    for t in tr_ids:
        f_int = fint[t]
        name = md.field(t).name
        lst = solves.setdefault(t, [])
        for intent in [i for i in ti if i in PC_INTENTS and i in f_int]:
            label = "C" if (intent == "PHASE" and f_int & excl) else "B"
            if intent == "CHECK" and f_int & excl:
                continue  # B covers only fields without EXCL intents; D handles the rest
            lst.append(_phase(label, _lookup(params, intent, name), {intent}, {intent}, mbl, antennas))
        fi = [i for i in npc if i in f_int]
        if fi:
            if "DIFFGAINSRC" in fi and "BANDPASS" in fi:
                lst.append(_phase("D", _lookup(params, "BANDPASS", name), fi, fi, mbl, antennas))
            elif "DIFFGAINSRC" in fi:
                for i in ("DIFFGAINREF", "DIFFGAINSRC"):
                    if i in fi:
                        lst.append(_phase("D", _lookup(params, i, name), {i}, {i}, mbl, antennas))
                rest = [i for i in fi if i not in ("DIFFGAINREF", "DIFFGAINSRC")]
                if rest:
                    lst.append(_phase("D", _lookup(params, ",".join(rest), name), rest, rest, mbl, antennas))
            else:
                lst.append(_phase("D", _lookup(params, ",".join(fi), name), fi, fi, mbl, antennas))
        # CHECK on a field carrying EXCL intents: solved with the D group of that field
        if "CHECK" in f_int and "CHECK" in ti and f_int & excl and not any("CHECK" in p.intents for p in lst):
            lst.append(_phase("D", _lookup(params, "CHECK", name), {"CHECK"}, {"CHECK"}, mbl, antennas))

    # FieldTasks: one per (field, spw), or per (field, spw group) when phase-ups link spws
    scan_intents = {sc.number: sc.intents for sc in md.scans}
    for fid in ref_ids + tr_ids:
        role = "reference" if fid in ref_ids else "transfer"
        read_intents = fint[fid] & (set(refintents) | set(ti)) if role == "reference" else fint[fid] & set(ti)
        spws = [s for s in md.spws_for(fid, read_intents) if s in sci]
        if not spws:
            plan.warnings.append(f"field {md.field(fid).name} has no science spw with "
                                 f"intents {','.join(sorted(read_intents))}")
            continue
        pls = tuple(solves.get(fid, []))
        linked = any(p.combine_spw or p.spwmap for p in pls)
        groups = [tuple(spws)] if linked else [(s,) for s in spws]
        for grp in groups:
            models = {}
            for s in grp:
                if role == "reference":
                    models[s] = reference_model(md, params, catalogue, fid, s)
                else:
                    models[s] = transfer_model(md, catalogue, fid, s, fint[fid] & set(ti))
            plan.tasks.append(FieldTask(
                ms=md.path, ms_name=md.name, field_id=fid, field_name=md.field(fid).name, role=role,
                spw_ids=grp, intents=frozenset(read_intents), scan_intents=scan_intents,
                phase_solves=pls, models=models, amp_solint=params.solint, minsnr=params.minsnr,
                refants=refant_ids, antennas=antennas, n_ant=len(md.antennas),
                datacolumn=params.datacolumn.upper(), chunk_rows=params.chunk_rows,
                calvis_intents=frozenset(fint[fid] & set(ti)) if role == "transfer" else frozenset(),
                amp_time=(role == "reference" and "AMPLITUDE" in fint[fid]
                          and not md.field(fid).is_ephemeris),
                preapply=tuple(params.calapps()),
                field_directions={f.id: (float(f.direction[0]), float(f.direction[1])) for f in md.fields}))
    return plan


def resolved_selection(md: MSMetadata, params: Params, ref_ids: list[int], refant: str,
                       sci: list[int]) -> tuple[str, str, dict]:
    """Spec §4 with the task's post-processing: (resantenna, uvrange, info for the report)."""
    from fluxflow.transfer.resolved import resolve_selection, resolved_antennas

    if params.hm_resolvedcals == "manual":
        return resolve_selection("manual", None, params.antenna, params.uvrange, len(md.antennas)) + (
            {"mode": "manual"},)
    # a single reference name is a candidate body (§4 step 2); several fields are not
    theta = body_diameter(md, params, ref_ids[0]) if len({md.field(i).name for i in ref_ids}) == 1 else 0.0
    lon = np.array([a.lon for a in md.antennas])
    lat = np.array([a.lat for a in md.antennas])
    rad = np.array([a.radius for a in md.antennas])
    fmin = min(md.spw(s).centre_frequency for s in sci) if sci else 0.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResolvedCalibratorWarning)
        auto = resolved_antennas(md.antenna_names, lon, lat, rad, refant, theta, fmin,
                                 params.peak_fraction)
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=2)
    resantenna, uvrange = resolve_selection("automatic", auto, params.antenna, params.uvrange,
                                            len(md.antennas))
    info = {"mode": "automatic", "diameter_arcsec": theta, "b_lim": getattr(auto, "b_lim", None),
            "b_short": getattr(auto, "b_short", None), "reason": getattr(auto, "reason", "")}
    return resantenna, uvrange, info
