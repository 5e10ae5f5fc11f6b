"""The CASA reference chain of hifa_gfluxscale on one MS, run by CASA's own Python (casatasks).

Started by casa_reference.py in a separate process (never import python-casacore and casatools
in one process); reads a job JSON written by casa_reference.py and writes a result JSON:

    <casa python> benchmarks/casa_chain.py job.json result.json

Steps (pipeline-equivalent parameters, spec §3.5-§3.11, §7.2, §8), each timed:
 1. setjy       reference field, AMPLITUDE scans, per spw: manual point source with the flux.csv I
                at the spw centre and its spix (scalebychan, usescratch=True); BANDPASS field: 1 Jy
                at the spw centre with the catalogue spix (the hif_setmodels state that the
                amplitude solve expects, spec §3 preconditions). job["setjy_mode"] = "per-field"
                instead makes one call for the reference field (all spws: flux.csv I of the first
                spw at its centre and the catalogue spix) and leaves the BANDPASS model at 1 Jy:
                the fewest setjy calls a hand-run chain would use (timing comparison only)
 2. gaincal p   all calibrator fields and intents, calmode='p', gaintype='G', solint='int',
                refant as given, minblperant=2, minsnr=2
 3. gaincal a   same data, calmode='a', gaintype='T', solint='inf', combine='', phase table
                applied (gainfield='nearest', interp='linear')
 4. fluxscale   reference -> transfer fields, refspwmap [-1], incremental=False, fitorder=1
 5. setjy       transfer fields, transfer intents, per spw: the derived flux, spix 0 (spec §3.10);
                "per-field" mode: one call per field with fluxscale's fitted flux and index
 6. calvis      applycal (phase table + fluxscaled amplitude table, calflagstrict, calwt
                False/True as registered) on the transfer fields, then the vector-averaged
                calibrated flux of spec §8 per (field, spw) computed from CORRECTED_DATA.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy as np


def _timed(times: dict, name: str, fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    times[name] = times.get(name, 0.0) + time.perf_counter() - t0
    return out


def calvis_flux(tb, ms: str, field_id: int, ddid: int, states: list[int]) -> tuple[float, float, int]:
    """Spec §8 steps 1-6 on CORRECTED_DATA of (field, data description, states)."""
    where = (f"FIELD_ID=={field_id} && DATA_DESC_ID=={ddid} && ANTENNA1!=ANTENNA2 && "
             f"STATE_ID IN [{','.join(map(str, states))}]")
    tb.open(ms)
    try:
        sub = tb.query(where)
        try:
            if sub.nrows() == 0:
                return 0.0, 0.0, 0
            data = sub.getcol("CORRECTED_DATA")  # (corr, chan, row)
            flag = sub.getcol("FLAG")
            weight = sub.getcol("WEIGHT")  # (corr, row)
            a1, a2 = sub.getcol("ANTENNA1"), sub.getcol("ANTENNA2")
        finally:
            sub.close()
    finally:
        tb.close()
    ncorr = data.shape[0]
    use = list(range(ncorr)) if ncorr <= 2 else [0, 3]
    good = ~flag
    n = good.sum(axis=1)  # (corr, row)
    avg = np.where(n > 0, (data * good).sum(axis=1) / np.maximum(n, 1), 0)
    means, vars_ = [], []
    for c in use:
        keep = (n[c] > 0) & np.isfinite(avg[c])
        if not keep.any():
            continue
        v, w = avg[c][keep], weight[c][keep]
        nvis = int(keep.sum())
        ants = np.union1d(a1[keep], a2[keep])
        nant = ants.size
        nbl = nant * (nant - 1) // 2
        nint = nvis // nbl if nbl else 0
        mean = abs((w * v).sum() / w.sum())
        k = (nvis + nint * nant) / 2.0
        var = ((w * (np.abs(v) - mean) ** 2).sum() / w.sum()) / k
        means.append(mean)
        vars_.append(var)
    if not means:
        return 0.0, 0.0, 0
    return float(np.mean(means)), float(math.sqrt(np.mean(vars_))), int(data.shape[2])


def main(job_path: str, out_path: str) -> int:
    t_start = time.perf_counter()
    import casatools
    from casatasks import applycal, fluxscale, gaincal, setjy

    t_import = time.perf_counter() - t_start
    job = json.load(open(job_path))
    ms = job["ms"]
    work = job["workdir"]
    os.makedirs(work, exist_ok=True)
    os.chdir(work)
    times: dict[str, float] = {}
    ref = job["reference"]  # {"name", "id", "intent_sel"}
    transfer = job["transfer"]  # [{"name", "id", "intent_sel", "states"}]
    spws = job["spws"]  # [{"id", "centre_hz", "ddid"}]
    cat = {(int(r["field"]), int(r["spw"])): r for r in job["catalogue"]}

    per_field = job.get("setjy_mode", "per-spw") == "per-field"
    # 1. setjy: reference field (AMPLITUDE scans) and the normalised BANDPASS model
    if per_field:
        s0 = spws[0]
        r = cat[(ref["id"], s0["id"])]
        _timed(times, "1_setjy_ref", setjy, vis=ms, field=str(ref["id"]), spw=",".join(str(s["id"]) for s in spws),
               selectdata=True, intent=ref["intent_sel"], standard="manual", fluxdensity=[r["I"], 0, 0, 0],
               spix=[r["spix"]], reffreq=f"{s0['centre_hz']}Hz", scalebychan=True, usescratch=True)
    for s in ([] if per_field else spws):
        r = cat[(ref["id"], s["id"])]
        _timed(times, "1_setjy_ref", setjy, vis=ms, field=str(ref["id"]), spw=str(s["id"]),
               selectdata=True, intent=ref["intent_sel"], standard="manual",
               fluxdensity=[r["I"], 0, 0, 0], spix=[r["spix"]], reffreq=f"{s['centre_hz']}Hz",
               scalebychan=True, usescratch=True)
    for tr in ([] if per_field else transfer):
        if not tr["bandpass"]:
            continue
        for s in spws:
            r = cat.get((tr["id"], s["id"]))
            spix = r["spix"] if r else 0.0
            _timed(times, "1_setjy_ref", setjy, vis=ms, field=str(tr["id"]), spw=str(s["id"]),
                   selectdata=True, intent=tr["intent_sel"], standard="manual", fluxdensity=[1.0, 0, 0, 0],
                   spix=[spix], reffreq=f"{s['centre_hz']}Hz", scalebychan=True, usescratch=True)

    fields = ",".join(str(f["id"]) for f in [ref] + transfer)
    intents = ",".join([ref["intent_sel"]] + [t["intent_sel"] for t in transfer])
    spw_sel = ",".join(str(s["id"]) for s in spws)
    ptab, atab, ftab = (os.path.join(work, n) for n in ("phase.G", "amp.T", "flux.T"))
    for p in (ptab, atab, ftab):
        os.system(f"rm -rf '{p}'")
    # 2. phase-only gaincal
    _timed(times, "2_gaincal_p", gaincal, vis=ms, caltable=ptab, field=fields, intent=intents, spw=spw_sel,
           solint="int", combine="", refant=job["refant"], minblperant=2, minsnr=2.0, gaintype="G",
           calmode="p", solnorm=False)
    # 3. amplitude-only T, phase table applied
    _timed(times, "3_gaincal_a", gaincal, vis=ms, caltable=atab, field=fields, intent=intents, spw=spw_sel,
           solint="inf", combine="", refant=job["refant"], minblperant=2, minsnr=2.0, gaintype="T",
           calmode="a", solnorm=False, gaintable=[ptab], gainfield=["nearest"], interp=["linear"])
    # 4. fluxscale
    fs = _timed(times, "4_fluxscale", fluxscale, vis=ms, caltable=atab, fluxtable=ftab, reference=ref["name"],
                transfer=",".join(t["name"] for t in transfer), refspwmap=[-1], incremental=False,
                fitorder=1)
    derived = []
    for tr in transfer:
        rec = fs.get(str(tr["id"]), {})
        for s in spws:
            d = rec.get(str(s["id"]), {})
            fd = d.get("fluxd", [-1])[0] if isinstance(d, dict) else -1
            err = d.get("fluxdErr", [-1])[0] if isinstance(d, dict) else -1
            if fd is not None and fd > 0:
                derived.append({"field": tr["name"], "field_id": tr["id"], "spw": s["id"], "I": float(fd),
                                "I_err": float(err)})
    # 5. setjy of the derived fluxes on the transfer fields' transfer intents
    for tr in (transfer if per_field else []):
        rec = fs.get(str(tr["id"]), {})
        if "fitFluxd" not in rec or "spidx" not in rec:
            continue
        alpha = float(np.atleast_1d(rec["spidx"])[1]) if np.size(rec["spidx"]) > 1 else 0.0
        _timed(times, "5_setjy_transfer", setjy, vis=ms, field=str(tr["id"]),
               spw=",".join(str(s["id"]) for s in spws), selectdata=True, intent=tr["intent_sel"],
               standard="manual", fluxdensity=[float(rec["fitFluxd"]), 0, 0, 0], spix=[alpha],
               reffreq=f"{float(rec['fitRefFreq'])}Hz", scalebychan=True, usescratch=True)
    for d in ([] if per_field else derived):
        tr = next(t for t in transfer if t["id"] == d["field_id"])
        s = next(x for x in spws if x["id"] == d["spw"])
        _timed(times, "5_setjy_transfer", setjy, vis=ms, field=str(d["field_id"]), spw=str(d["spw"]),
               selectdata=True, intent=tr["intent_sel"], standard="manual", fluxdensity=[d["I"], 0, 0, 0],
               spix=[0.0], reffreq=f"{s['centre_hz']}Hz", scalebychan=True, usescratch=True)
    five = sum(v for k, v in times.items() if k[0] in "12345")
    # 6. calibrated-visibility fluxes
    tfields = ",".join(str(t["id"]) for t in transfer)
    tint = ",".join(t["intent_sel"] for t in transfer)
    _timed(times, "6_applycal", applycal, vis=ms, field=tfields, intent=tint, spw=spw_sel,
           gaintable=[ptab, ftab], gainfield=["nearest", "nearest"], interp=["linear", "linear"],
           calwt=[False, True], applymode="calflagstrict", flagbackup=False)
    tb = casatools.table()
    calvis = []
    for tr in transfer:
        for s in spws:
            flux, sig, nrow = _timed(times, "6_calvis_read", calvis_flux, tb, ms, tr["id"], s["ddid"], tr["states"])
            if flux > 0:
                calvis.append({"field": tr["name"], "field_id": tr["id"], "spw": s["id"], "I": flux,
                               "I_err": sig, "nrows": nrow})
    out = {"casatools": casatools.version_string(), "setjy_mode": "per-field" if per_field else "per-spw", "import_s": t_import, "step_s": times,
           "five_step_s": five, "calvis_s": times.get("6_applycal", 0) + times.get("6_calvis_read", 0),
           "total_s": time.perf_counter() - t_start, "derived": derived, "calvis": calvis,
           "fluxscale_spidx": {k: {kk: vv for kk, vv in v.items() if kk in ("spidx", "spidxerr", "fitFluxd")}
                               for k, v in fs.items() if isinstance(v, dict) and "spidx" in v}}
    with open(out_path, "w") as fh:
        json.dump(out, fh, indent=1, default=lambda x: x.tolist() if hasattr(x, "tolist") else str(x))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) == 2 else 2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
