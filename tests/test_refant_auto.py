"""Automatic refant: geometry and flagging (the pipeline's hif_refant rule), from a FLAG sample."""

from __future__ import annotations

import casacore.tables as ct
import numpy as np

from fluxflow.ms import antenna_flag_fraction, read_metadata
from fluxflow.params import Params
from fluxflow.plan import choose_refants
from fluxflow.simulate import simulate_ms


def test_flag_fraction_and_refant_avoids_flagged_antenna(tmp_path):
    sim = simulate_ms(str(tmp_path / "r.ms"), seed=4, n_chan=4, n_cycles=1, flag_fraction=0.0,
                      flagged_antenna_scan=None)
    md = read_metadata(sim.ms_path)
    md.extra["antenna_flag_fraction"] = antenna_flag_fraction(md)
    assert all(v == 0.0 for v in md.extra["antenna_flag_fraction"].values())
    best = choose_refants(md, Params())[0]
    best_id = md.antenna(best).id
    with ct.table(sim.ms_path, readonly=False, ack=False) as t:  # test input: flag the best antenna
        for dd in range(len(md.data_descriptions)):
            sub = t.query(f"DATA_DESC_ID=={dd} && (ANTENNA1=={best_id} || ANTENNA2=={best_id})")
            if sub.nrows():
                sub.putcol("FLAG", np.ones_like(sub.getcol("FLAG")))
            sub.close()
    frac = antenna_flag_fraction(md, rowincr=1)
    # exact: every baseline of `best` is flagged, no other baseline is
    n = len(md.antennas)
    assert frac[best_id] == 1.0
    assert all(abs(v - 1.0 / (n - 1)) < 1e-12 for a, v in frac.items() if a != best_id)
    md.extra["antenna_flag_fraction"] = frac
    ranked = choose_refants(md, Params())
    assert ranked[0] != best and ranked[-1] == best
