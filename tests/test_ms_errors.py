"""Error paths of the MS layer (fluxflow.ms.tables and its callers), spec §15.

The AsdmStMan case is a real table: the tiny MS is written with DATA in its own
TiledShapeStMan, then the data-manager type in table.dat is renamed to AsdmStMan (see
conftest.patch_dm_type), which is what a lazily imported ALMA MS looks like to casacore.
Lock tests hold a casacore write lock in a separate python process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time

import casacore.tables as ct
import numpy as np
import pytest

from conftest import patch_dm_type
from fluxflow.errors import (
    CorruptTableError,
    FluxflowError,
    MissingColumnError,
    MissingTableError,
    NotAMeasurementSetError,
    TableLockedError,
    UnsupportedStorageManagerError,
)
from fluxflow.ms import open_ms, open_table, read_metadata, read_selection, write_model_data
from fluxflow.ms.tables import lock_timeout_default, storage_manager_problem


def test_missing_path(tmp_path):
    missing = str(tmp_path / "nope.ms")
    with pytest.raises(NotAMeasurementSetError, match="nope.ms: no such file"):
        read_metadata(missing)


def test_plain_directory_and_file(tmp_path):
    (tmp_path / "dir.ms").mkdir()
    (tmp_path / "file.ms").write_text("x")
    with pytest.raises(NotAMeasurementSetError, match="not a casacore table"):
        with open_ms(str(tmp_path / "dir.ms")):
            pass
    with pytest.raises(NotAMeasurementSetError, match="is a file"):
        read_metadata(str(tmp_path / "file.ms"))


def test_non_ms_table(tmp_path):
    path = str(tmp_path / "plain.tab")
    ct.table(path, ct.maketabdesc([ct.makescacoldesc("X", 0.0)]), nrow=2, ack=False).close()
    with open_table(path) as t:  # a casacore table is fine for open_table ...
        assert t.nrows() == 2
    with pytest.raises(NotAMeasurementSetError, match="not a MeasurementSet"):  # ... but not an MS
        read_metadata(path)


def test_missing_subtable(tiny_ms):
    path, _ = tiny_ms
    shutil.rmtree(os.path.join(path, "STATE"))
    with pytest.raises(MissingTableError, match="sub-table STATE"):
        read_metadata(path)


def test_missing_column(tiny_ms):
    path, _ = tiny_ms
    with ct.table(path, readonly=False, ack=False) as t:
        t.removecols(["FLAG_ROW"])
    with pytest.raises(MissingColumnError, match="FLAG_ROW"):
        read_selection(path, 0, 0)


def test_asdmstman(tiny_ms_factory):
    path, _ = tiny_ms_factory("lazy.ms", data_dm="TiledShapeStMan")
    with ct.table(path, ack=False) as t:  # the unpatched MS is readable
        assert t.getdminfo("DATA")["TYPE"] == "TiledShapeStMan"
    patch_dm_type(path, "TiledShapeStMan", "AsdmStMan")
    for call in (lambda: read_metadata(path), lambda: read_selection(path, 0, 0),
                 lambda: write_model_data(path, 0, 0, lambda u, f: np.ones((len(u), f.size)))):
        with pytest.raises(UnsupportedStorageManagerError) as err:
            call()
        msg = str(err.value)
        assert "AsdmStMan" in msg and "lazy=False" in msg and "mstransform" in msg and path in msg


def test_unknown_storage_manager(tiny_ms_factory):
    path, _ = tiny_ms_factory("odd.ms", data_dm="TiledShapeStMan")
    patch_dm_type(path, "TiledShapeStMan", "NoSuchStMan")
    with pytest.raises(UnsupportedStorageManagerError, match="cannot load"):
        read_metadata(path)


def test_storage_manager_problem_on_dminfo():
    assert "importasdm(lazy=False)" in storage_manager_problem("DATA", {"TYPE": "AsdmStMan", "NAME": "DATA"})
    assert storage_manager_problem("DATA", {"TYPE": "TiledShapeStMan"}) is None


def test_corrupt_table(tiny_ms):
    path, _ = tiny_ms
    dat = os.path.join(path, "table.dat")
    raw = open(dat, "rb").read()
    with open(dat, "wb") as fh:
        fh.write(raw[: len(raw) // 2])
    with pytest.raises(CorruptTableError, match="cannot be read"):
        read_metadata(path)


HOLD_LOCK = textwrap.dedent("""
    import sys, time
    import casacore.tables as ct
    t = ct.table(sys.argv[1], readonly=False, lockoptions="user", ack=False)
    t.lock(write=True, nattempts=1)
    assert t.haslock(True)
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    t.unlock()
    t.close()
""")


def _hold(path: str, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, path, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _unit(uvw, freq):
    return np.ones((uvw.shape[0], freq.size))


def test_lock_timeout_then_success(tiny_ms):
    path, _ = tiny_ms
    proc = _hold(path, 3.0)
    try:
        t0 = time.monotonic()
        with pytest.raises(TableLockedError) as err:
            write_model_data(path, 2, 0, _unit, lock_timeout=0.5)
        waited = time.monotonic() - t0
        assert 0.5 <= waited < 2.5
        assert f"pid {proc.pid}" in str(err.value) and "waited" in str(err.value)
        with pytest.raises(TableLockedError):
            read_selection(path, 2, 0, lock_timeout=0.2)
    finally:
        proc.wait(timeout=30)
    with ct.table(path, ack=False) as t:
        assert "MODEL_DATA" not in t.colnames()  # nothing was written

    proc = _hold(path, 1.5)
    try:
        t0 = time.monotonic()
        assert write_model_data(path, 2, 0, _unit, lock_timeout=20.0) == 45
        assert time.monotonic() - t0 >= 0.8  # it waited for the holder
    finally:
        proc.wait(timeout=30)
    assert read_selection(path, 2, 0).attrs["has_model_column"] is True


def test_lock_timeout_env(tiny_ms, monkeypatch):
    path, _ = tiny_ms
    monkeypatch.setenv("FLUXFLOW_LOCK_TIMEOUT", "0.3")
    assert lock_timeout_default() == 0.3
    proc = _hold(path, 2.0)
    try:
        t0 = time.monotonic()
        with pytest.raises(TableLockedError):
            read_metadata(path, warn=False)
        assert time.monotonic() - t0 < 1.5
    finally:
        proc.wait(timeout=30)
    monkeypatch.setenv("FLUXFLOW_LOCK_TIMEOUT", "soon")
    with pytest.raises(FluxflowError, match="FLUXFLOW_LOCK_TIMEOUT"):
        lock_timeout_default()
