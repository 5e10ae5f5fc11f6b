"""Benchmark-local prototypes of proposed fluxflow fixes, applied as monkeypatches (``--patch NAME``).

Each patch replaces fluxflow functions at run time, in this process and (through ``client.run``)
in every Dask worker, so that io_floor.py, scaling.py and memory.py can measure a fix before it
is made. The prototypes measured in session 1 have since been merged into fluxflow and removed
from here (see git history of this file for their code and benchmarks/README.md for their
measurements):

* ``rowsel`` (numpy row selection instead of TaQL) -> fluxflow.ms.selection.select_rows (26faa30)
* ``scanindex`` (run-length dedup before np.unique) -> fluxflow.ms.metadata (d8960a3)
* ``modelwrite`` (UVW-independent MODEL_DATA cells built once) -> fluxflow.ms.model_data (1061b2e)
* ``rowsums`` (each chunk reduced to per-row channel sums) -> fluxflow.solve.rowsums, tasks (session 2)
* ``planpar`` (one planning task per MS on the workers) -> fluxflow.workflow.plan_all (session 2)
* ``reportoff``'s Dask performance report half -> now opt-in (Params.performance_report)

What remains:

* ``reportoff`` — skips the HTML report (matplotlib plots per MS and build_report, on the
  client after the graph) to measure what it costs.
"""

from __future__ import annotations

import sys


# --------------------------------------------------------------------------------------- reportoff
def _patch_reportoff() -> None:
    import fluxflow.report as rep

    rep.build_report = lambda outdir, results: "(skipped)"


PATCHES = {"reportoff": _patch_reportoff}


def apply_local(names: list[str]) -> None:
    """Apply the named patches in this process."""
    for n in names:
        if n not in PATCHES:
            raise SystemExit(f"unknown patch {n!r}; known: {', '.join(PATCHES)}")
        PATCHES[n]()


def apply_everywhere(client, names: list[str]) -> None:
    """Apply the named patches here and in every worker of `client`."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    apply_local(names)
    client.run(apply_local, names)
