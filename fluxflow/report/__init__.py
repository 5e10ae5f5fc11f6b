"""The HTML report of a run (spec §11 weblog, §10 QA): ``build_report(outdir) -> index.html``.

``fluxflow report OUTDIR`` calls :func:`build_report`, which reads only ``OUTDIR/results.json``.
"""

from fluxflow.report.build import (
    QA_BANDS,
    build_report,
    flux_table,
    format_flux,
    format_frequency,
    format_percent,
    qa_band,
)

__all__ = ["QA_BANDS", "build_report", "flux_table", "format_flux", "format_frequency", "format_percent",
           "qa_band"]
