"""The main table's index columns, read once per process and MS and shared by every reader.

Selections (fluxflow.ms.selection), the refant flag sample (fluxflow.ms.flags) and the scan index
of the metadata (fluxflow.ms.metadata) select rows with numpy on these columns instead of TaQL,
so a worker that plans an MS has the index its solve tasks need.
"""

from __future__ import annotations

import os

import numpy as np

_INDEX_COLUMNS = ("FIELD_ID", "DATA_DESC_ID", "STATE_ID", "SCAN_NUMBER", "ANTENNA1", "ANTENNA2", "TIME")
_INDEX_CACHE: dict[tuple, dict[str, np.ndarray]] = {}
#: Bytes of index columns a process keeps (a 2.4 M-row EB takes 77 MB; the oldest MS goes first).
INDEX_CACHE_BYTES = 256 * 2**20


def _index_key(t, path: str) -> tuple:
    """Identity of the index columns' contents: the MS, its row count and the size and mtime of
    the storage-manager files that hold those columns. MODEL_DATA writes touch other files
    (and table.dat), so they do not invalidate the cache."""
    files = set()
    for col in _INDEX_COLUMNS:
        try:
            seq = int(t.getdminfo(col)["SEQNR"])
        except (RuntimeError, KeyError):
            continue
        files.add(f"table.f{seq}")
        files.add(f"table.f{seq}i")
    stats = []
    for name in sorted(files):
        try:
            st = os.stat(os.path.join(path, name))
        except OSError:
            continue
        stats.append((name, st.st_size, st.st_mtime_ns))
    return (os.path.abspath(path), t.nrows(), tuple(stats))


def row_index(t, path: str) -> dict[str, np.ndarray]:
    """The main table's index columns, read once per process and MS (fluxflow never writes them).

    A TaQL query per selection reads every index column of the whole table again (measured on a
    9 GB EB: about 0.4 s and 1.5 GB of page-cache reads per query); selecting with numpy on
    cached columns makes the reads of a task proportional to its own rows. A few MSs are kept
    (INDEX_CACHE_BYTES), so workers that alternate between EBs do not re-read them."""
    key = _index_key(t, path)
    idx = _INDEX_CACHE.pop(key, None)
    if idx is None:
        for old in [k for k in _INDEX_CACHE if k[0] == key[0]]:  # the same MS, since changed
            del _INDEX_CACHE[old]
        idx = {c: t.getcol(c) for c in _INDEX_COLUMNS}
    _INDEX_CACHE[key] = idx  # most recently used last
    size = lambda d: sum(a.nbytes for a in d.values())  # noqa: E731
    while len(_INDEX_CACHE) > 1 and sum(size(d) for d in _INDEX_CACHE.values()) > INDEX_CACHE_BYTES:
        _INDEX_CACHE.pop(next(iter(_INDEX_CACHE)))
    return idx


def clear_cache() -> None:
    """Forget every cached index (the next selection of each MS reads its index columns again)."""
    _INDEX_CACHE.clear()


def preload(ms_path: str) -> int:
    """Read the index columns of `ms_path` into this process's cache; returns the row count.
    (A worker that is going to solve selections of the MS can do this while another plans it.)"""
    from fluxflow.ms.tables import open_ms

    with open_ms(ms_path) as t:
        return int(next(iter(row_index(t, os.path.abspath(ms_path)).values())).size)
