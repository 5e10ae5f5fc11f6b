"""examples/fluxflow_demo.ipynb: stored clean (no outputs), and runs top to bottom in a real
Jupyter kernel (nbclient) — on a LocalCluster, and with ``CLUSTER = "slurm"`` on the real
single-node SLURM (deploy/slurm-local.sh)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from slurm_fixture import slurm_cluster_available  # noqa: F401 - pytest fixture

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "fluxflow_demo.ipynb"
SETTING = 'CLUSTER = "local"  # or "slurm"'
#: flux table rows: 3 EBs x 3 transfer calibrators (PHASE, BANDPASS, CHECK) x 4 science spws
N_FLUX_ROWS = 3 * 3 * 4


def _cells(nb) -> dict:
    return {cell["id"]: cell for cell in nb.cells}


def _execute(workdir: Path, settings: dict[str, str] | None = None):
    """Run the notebook in a fresh python3 kernel with working directory ``workdir``; the
    ``settings`` cell's assignments ``NAME = value`` are replaced by ``settings`` (Python source)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cell = _cells(nb)["settings"]
    for name, value in (settings or {}).items():
        cell.source, n = re.subn(rf"^{name} = .*$", f"{name} = {value}", cell.source, flags=re.M)
        assert n == 1, f"no {name} setting in the notebook"
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    return nb


def _text(cell) -> str:
    """All text an executed cell showed (streams, text/plain and text/html results)."""
    parts = []
    for o in cell.outputs:
        if o.output_type == "stream":
            parts.append(o.text)
        elif o.output_type in ("execute_result", "display_data"):
            parts += [o.data.get("text/plain", ""), o.data.get("text/html", "")]
    return "\n".join(parts)


def _check_executed(nb, workdir: Path) -> None:
    cells = _cells(nb)
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
    html = "".join(o.data.get("text/html", "") for o in cells["fluxes"].outputs
                   if o.output_type == "execute_result")
    assert "<th>fluxscale_I</th>" in html and "<th>calibrated_I</th>" in html
    assert html.count(".ms</td>") == N_FLUX_ROWS
    for name in ("J0510+1800", "J0522-3627", "J0502+1338", "adopted"):
        assert name in html
    assert "<th>score</th>" in "".join(o.data.get("text/html", "") for o in cells["qa"].outputs
                                       if o.output_type == "execute_result")
    assert "exit code 0" in _text(cells["run"])
    assert "Dask dashboard: http" in _text(cells["dashboard"])
    images = [o for o in cells["plots"].outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert images
    out = workdir / "fluxflow-demo-nb" / "out"  # the notebook wrote into its working directory
    assert (out / "results.json").is_file() and (out / "derived_fluxes.csv").is_file()


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert set(nb.metadata) <= {"kernelspec", "language_info"}
    for cell in nb.cells:
        assert cell.metadata == {}, cell.id
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.id
    assert SETTING in _cells(nb)["settings"].source  # one setting switches to SLURM


@pytest.mark.filterwarnings("ignore:FigureCanvasAgg is non-interactive")
def test_plots_cell_falls_back_to_matplotlib_without_the_report(monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    class FakeResults:  # the fields of Results.flux_rows() the cell uses
        def flux_rows(self):
            return [{"field": f, "freq_GHz": nu, "fluxscale_I": s * (nu / 100) ** -0.7,
                     "fluxscale_err": 0.01} for f, s in (("A", 1.0), ("B", 0.3))
                    for nu in (90.5, 92.5, 102.5, 104.5)] + [
                {"field": "C", "freq_GHz": 90.5, "fluxscale_I": None, "fluxscale_err": None}]

    monkeypatch.setitem(sys.modules, "fluxflow.report", None)  # import fails: no report module
    plt.close("all")
    source = _cells(nbformat.read(NOTEBOOK, as_version=4))["plots"].source
    exec(source, {"OUTDIR": "unused", "res": FakeResults(), "os": os})
    (fig,) = [plt.figure(n) for n in plt.get_fignums()]
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["A", "B"]  # C has no flux
    assert ax.get_yscale() == "log"
    plt.close("all")


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_on_a_local_cluster(tmp_path):
    _check_executed(_execute(tmp_path), tmp_path)


@pytest.mark.slow
@pytest.mark.slurm
def test_notebook_runs_on_slurm(slurm_cluster_available, tmp_path):
    cfg = tmp_path / "slurm.yaml"
    cfg.write_text("\n".join([
        "partition: debug", "cores: 1", "memory: 2GB", "walltime: '00:10:00'", "interface: lo",
        f"log_directory: {tmp_path / 'logs'}", f"tls_directory: {tmp_path / 'tls'}",
        "dashboard_address: '127.0.0.1:0'", "worker_timeout: 60"]) + "\n")
    nb = _execute(tmp_path, {"CLUSTER": '"slurm"', "SLURM_CONFIG": repr(str(cfg))})
    _check_executed(nb, tmp_path)
    assert "tls://" in _text(_cells(nb)["cluster"])  # the Client's repr: TLS by default
    jobs = {m.group(1) for p in (tmp_path / "logs").glob("*.err")
            if (m := re.match(r"fluxflow-[0-9a-f]+-(\d+)\.err$", p.name))}
    assert len(jobs) == 2, jobs
    queued = set(subprocess.run(["squeue", "-h", "-o", "%A"], capture_output=True, text=True,
                                check=True).stdout.split())
    assert not jobs & queued  # the last cell closed the cluster: the worker jobs left the queue
    assert list((tmp_path / "tls").iterdir()) == []
