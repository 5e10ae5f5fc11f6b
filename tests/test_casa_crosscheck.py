"""CASA cross-check at table level (spec §14 tier 2): CASA's own fluxscale task, run on the
amplitude caltable that fluxflow wrote, gives the flux densities fluxflow derived from it.
Skipped where CASA is not available (see tests/casa_helper.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap

import pytest
from casa_helper import CASA_PYTHON, casa_available, casa_env

import fluxflow
from fluxflow.simulate import simulate_ms

pytestmark = pytest.mark.skipif(not casa_available("casatasks"),
                                reason="CASA is not available (set FLUXFLOW_CASA_PYTHON)")

SCRIPT = textwrap.dedent("""
    import json, sys
    from casatasks import fluxscale
    vis, caltable, out, ref, transfer = sys.argv[1:6]
    r = fluxscale(vis=vis, caltable=caltable, fluxtable=out, reference=[ref],
                  transfer=transfer.split(","), refspwmap=[-1])
    res = {}
    for fid, v in r.items():
        if not isinstance(v, dict):
            continue
        for spw, e in v.items():
            if isinstance(e, dict) and "fluxd" in e and e["fluxd"][0] > 0:
                res[f"{fid}:{spw}"] = [float(e["fluxd"][0]), float(e["fluxdErr"][0]), int(e["numSol"][0])]
    print("RESULT " + json.dumps(res))
""")


def test_casa_fluxscale_on_fluxflow_amplitude_table(tmp_path):
    sim = simulate_ms(str(tmp_path / "x.ms"), seed=31, n_chan=8, n_cycles=2)
    res = fluxflow.gfluxscale([sim.ms_path], cluster="sync", output_dir=str(tmp_path / "out"),
                              reffile=sim.flux_csv, write_model=False)
    rec = res.records[0]
    ms_copy = str(tmp_path / "casa.ms")
    shutil.copytree(sim.ms_path, ms_copy)  # CASA may touch the MS it is given
    ref = next(iter(rec["plan"]["reference"].values()))
    transfer = ",".join(rec["plan"]["transfer"].values())
    run = subprocess.run([CASA_PYTHON, "-c", SCRIPT, ms_copy, rec["caltables"]["amp"],
                          str(tmp_path / "casa.fluxscaled"), ref, transfer],
                         capture_output=True, text=True, timeout=600, env=casa_env(), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(ln for ln in run.stdout.splitlines() if ln.startswith("RESULT "))
    casa = json.loads(line[len("RESULT "):])
    ours = {f"{m['field_id']}:{m['spw_id']}": m for m in rec["derived_fluxes"]}
    assert len(casa) == 12 and set(casa) == set(ours)
    for key, (fd, fderr, numsol) in casa.items():
        assert ours[key]["I"] == pytest.approx(fd, rel=1e-6), key
        assert ours[key]["I_err"] == pytest.approx(fderr, rel=1e-5, abs=1e-9), key
