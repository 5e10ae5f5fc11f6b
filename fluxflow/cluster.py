"""Where the Dask graph runs: the one place that sets up clusters.

- ``"local"``: a :class:`distributed.LocalCluster` of worker *processes* with one thread each
  (python-casacore is not thread-safe, so fluxflow never runs two casacore calls in one process at
  once), sized to the machine.
- ``"sync"``: no cluster, dask's synchronous scheduler in this process (debugging, small tests).
- a scheduler address (``tcp://host:8786`` or ``tls://...``): join a running cluster.
- ``"slurm"``: dask-jobqueue's SLURMCluster, see :mod:`fluxflow.slurm`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

log = logging.getLogger("fluxflow")


@dataclass
class ClusterSpec:
    kind: str = "local"  # local | sync | slurm | address
    address: str | None = None
    n_workers: int | None = None
    memory_limit: str | None = None
    dashboard_address: str | None = "127.0.0.1:0"  # loopback only; reach it by SSH tunnel
    slurm: dict[str, Any] = field(default_factory=dict)
    security: Any = None  # distributed.Security for an existing TLS scheduler


def default_n_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        n = os.cpu_count() or 1
    return max(1, n)


@contextlib.contextmanager
def open_client(spec: ClusterSpec | None = None) -> Iterator[Any]:
    """Yield a distributed Client (or None for the synchronous scheduler); close what we opened."""
    spec = spec or ClusterSpec()
    if spec.kind == "sync":
        yield None
        return
    from distributed import Client, LocalCluster

    if spec.kind == "address" or spec.address:
        client = Client(spec.address, security=spec.security)
        try:
            yield client
        finally:
            client.close()
        return
    if spec.kind == "slurm":
        from fluxflow.slurm import slurm_client

        with slurm_client(spec) as client:
            yield client
        return
    if spec.kind != "local":
        raise ValueError(f"unknown cluster kind {spec.kind!r}")
    n = spec.n_workers or default_n_workers()
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           memory_limit=spec.memory_limit or "auto",
                           dashboard_address=spec.dashboard_address)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
