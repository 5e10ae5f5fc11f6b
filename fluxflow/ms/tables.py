"""Opening casacore tables: one place for the path checks, locking and error translation.

Every table fluxflow reads or writes is opened through :func:`open_table` (any table) or
:func:`open_ms` (a MeasurementSet main table plus the structural checks of spec §15), so that
all callers share one locking policy and get :mod:`fluxflow.errors` exceptions instead of
casacore ``RuntimeError`` strings.

Locking policy. Tables are opened with casacore *user* locking and the lock is taken
explicitly: a read lock for reading, a write lock for writing, both retried until
``lock_timeout`` seconds have passed, then :class:`~fluxflow.errors.TableLockedError`.
Deviation from plain ``lockoptions='user'``: with ``'user'`` the casacore open itself waits
without any timeout while another process holds a write lock (measured with python-casacore
3.8), so the open uses ``'usernoread'`` (same user locking, but reading the table
description needs no lock) and the timed :func:`acquire_lock` loop does the waiting. casacore
re-synchronises the table with the files when the lock is acquired, so reads under the lock
see a consistent table.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Iterator

import casacore.tables as ct

from fluxflow.errors import (
    CorruptTableError,
    FluxflowError,
    MissingColumnError,
    MissingTableError,
    NotAMeasurementSetError,
    TableLockedError,
    UnsupportedStorageManagerError,
    WriteError,
)

#: Lock timeout (seconds) used when neither the caller nor FLUXFLOW_LOCK_TIMEOUT sets one.
DEFAULT_LOCK_TIMEOUT = 30.0
#: Environment variable that overrides DEFAULT_LOCK_TIMEOUT.
LOCK_TIMEOUT_ENV = "FLUXFLOW_LOCK_TIMEOUT"
#: Seconds between two lock attempts.
LOCK_POLL_INTERVAL = 0.1

#: Sub-tables fluxflow needs in every MS.
REQUIRED_SUBTABLES = ("ANTENNA", "SPECTRAL_WINDOW", "FIELD", "DATA_DESCRIPTION", "POLARIZATION", "STATE")
#: Main-table columns fluxflow needs in every MS (besides one visibility column).
REQUIRED_COLUMNS = (
    "TIME", "INTERVAL", "ANTENNA1", "ANTENNA2", "DATA_DESC_ID", "FIELD_ID", "SCAN_NUMBER",
    "STATE_ID", "UVW", "FLAG", "FLAG_ROW", "WEIGHT",
)
#: Visibility columns fluxflow knows, in the order they are listed.
VISIBILITY_COLUMNS = ("DATA", "CORRECTED_DATA", "MODEL_DATA")
#: Storage managers of casacore itself: a read failure with one of them means a damaged table.
CASACORE_STORAGE_MANAGERS = frozenset({
    "StandardStMan", "IncrementalStMan", "StManAipsIO", "MemoryStMan", "TiledColumnStMan",
    "TiledShapeStMan", "TiledCellStMan", "TiledDataStMan",
})

_ASDM_ADVICE = (
    "ALMA MeasurementSets imported with importasdm(lazy=True) keep DATA in the ASDM files through "
    "CASA's AsdmStMan storage manager, which python-casacore cannot read. Re-import the ASDM with "
    "importasdm(lazy=False), or make a filled copy first with CASA's mstransform or split "
    "(e.g. mstransform(vis=..., outputvis=..., datacolumn='data'))."
)


def lock_timeout_default() -> float:
    """Lock timeout in seconds: FLUXFLOW_LOCK_TIMEOUT if set, else DEFAULT_LOCK_TIMEOUT."""
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_LOCK_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise FluxflowError(f"{LOCK_TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if value < 0:
        raise FluxflowError(f"{LOCK_TIMEOUT_ENV}={raw!r} must not be negative")
    return value


def _lock_holders(path: str, write: bool) -> list[int]:
    """Pids of other processes holding a casacore table lock that blocks ours (Linux only).

    casacore locks byte 0 of ``table.lock`` with fcntl (shared for read, exclusive for write).
    The holders are read from /proc/locks rather than with F_GETLK, because opening and
    closing our own descriptor on the lock file would drop the POSIX locks this process holds.
    """
    try:
        st = os.stat(os.path.join(path, "table.lock"))
        with open("/proc/locks", encoding="ascii") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids: set[int] = set()
    for line in lines:
        parts = line.split()
        if "->" in parts:  # a waiting request, not a held lock
            continue
        try:
            kind, pid, ident, start = parts[3], int(parts[4]), parts[5], parts[6]
        except (IndexError, ValueError):
            continue
        if ident != dev or start != "0" or pid == os.getpid():
            continue
        if write or kind == "WRITE":
            pids.add(pid)
    return sorted(pids)


def acquire_lock(t: ct.table, path: str, write: bool, timeout: float) -> None:
    """Take a read (write=False) or write lock on `t`, retrying until `timeout` seconds passed."""
    start = time.monotonic()
    while True:
        if not t.haslock(write):
            t.lock(write=write, nattempts=1)
        if t.haslock(write):
            return
        waited = time.monotonic() - start
        if waited >= timeout:
            holders = _lock_holders(path, write)
            who = f"pid {', '.join(map(str, holders))}" if holders else "pid unknown"
            raise TableLockedError(
                f"{path} is locked by another process ({who}); waited {waited:.1f} s for a "
                f"{'write' if write else 'read'} lock (set {LOCK_TIMEOUT_ENV} to wait longer)")
        time.sleep(min(LOCK_POLL_INTERVAL, max(timeout - waited, 0.0)))


def ensure_lock(t: ct.table, path: str, write: bool, timeout: float | None = None) -> None:
    """Re-take the lock if python-casacore dropped it.

    Some python-casacore calls that build temporary table objects (``rownumbers``,
    ``selectrows``) release the user lock of the parent table; every read/write loop calls this
    before touching the table.
    """
    if not t.haslock(write):
        acquire_lock(t, path, write, lock_timeout_default() if timeout is None else timeout)


def storage_manager_problem(column: str, dminfo: dict) -> str | None:
    """Why `column` (with data-manager info `dminfo` from ``getdminfo``) cannot be read, or None."""
    dm_type = str(dminfo.get("TYPE", ""))
    if dm_type.lower() == "asdmstman":
        return f"column {column} is stored with AsdmStMan. {_ASDM_ADVICE}"
    return None


def _classify_open_error(path: str, err: RuntimeError) -> FluxflowError:
    msg = str(err)
    low = msg.lower()
    if "asdmstman" in low:
        return UnsupportedStorageManagerError(
            f"{path}: a column is stored with CASA's AsdmStMan ({msg.strip()}). {_ASDM_ADVICE}")
    if ("not registered" in low or "datamanager error" in low
            or ("shared library" in low and "not found" in low)):
        return UnsupportedStorageManagerError(
            f"{path}: a column uses a storage manager this casacore cannot load "
            f"({msg.strip()}). Copy the MS with CASA's mstransform/split into standard storage "
            f"managers first.")
    return CorruptTableError(f"{path}: the table exists but cannot be read (truncated or corrupt?): "
                             f"{msg.strip()}")


def _check_table_path(path: str) -> None:
    if not os.path.exists(path):
        raise NotAMeasurementSetError(f"{path}: no such file or directory")
    if not os.path.isdir(path):
        raise NotAMeasurementSetError(f"{path}: is a file, not a casacore table directory")
    if not os.path.isfile(os.path.join(path, "table.dat")):
        raise NotAMeasurementSetError(f"{path}: is a directory but not a casacore table (no table.dat)")
    if not os.access(path, os.R_OK | os.X_OK):
        raise NotAMeasurementSetError(f"{path}: is not readable (permission denied)")


@contextmanager
def open_table(path: str, readonly: bool = True, lock_timeout: float | None = None) -> Iterator[ct.table]:
    """Open a casacore table with a read (or write) lock; unlock and close on exit.

    `lock_timeout` None means :func:`lock_timeout_default` (FLUXFLOW_LOCK_TIMEOUT or 30 s).
    Raises NotAMeasurementSetError (no table at `path`), UnsupportedStorageManagerError,
    CorruptTableError, TableLockedError, WriteError (not writable).
    """
    path = os.path.abspath(os.fspath(path))
    timeout = lock_timeout_default() if lock_timeout is None else float(lock_timeout)
    _check_table_path(path)
    if not readonly and not os.access(path, os.W_OK):
        raise WriteError(f"{path}: no write permission")
    try:
        t = ct.table(path, readonly=readonly, lockoptions="usernoread", ack=False)
    except RuntimeError as err:
        raise _classify_open_error(path, err) from err
    try:
        acquire_lock(t, path, write=not readonly, timeout=timeout)
        yield t
    finally:
        try:
            if not readonly and t.haslock(True):
                t.flush()
            t.unlock()
        finally:
            t.close()


def _check_ms_structure(t: ct.table, path: str) -> None:
    keywords = t.getkeywords()
    is_ms = "MS_VERSION" in keywords or t.info().get("type") == "Measurement Set"
    if not is_ms:
        raise NotAMeasurementSetError(
            f"{path}: is a casacore table but not a MeasurementSet (no MS_VERSION keyword)")
    for name in REQUIRED_SUBTABLES:
        sub = os.path.join(path, name)
        if name not in keywords or not os.path.isfile(os.path.join(sub, "table.dat")):
            raise MissingTableError(f"{path}: required sub-table {name} is missing")
    present = set(t.colnames())
    missing = [c for c in REQUIRED_COLUMNS if c not in present]
    if missing:
        raise MissingColumnError(f"{path}: required main-table column(s) missing: {', '.join(missing)}")
    if not present & {"DATA", "CORRECTED_DATA"}:
        raise MissingColumnError(f"{path}: has neither a DATA nor a CORRECTED_DATA column")
    for col in ("DATA", "CORRECTED_DATA"):
        if col not in present:
            continue
        dminfo = t.getdminfo(col)
        problem = storage_manager_problem(col, dminfo)
        if problem:
            raise UnsupportedStorageManagerError(f"{path}: {problem}")
        if t.nrows() == 0 or not t.iscelldefined(col, 0):
            continue
        try:
            t.getcell(col, 0)
        except RuntimeError as err:
            dm_type = str(dminfo.get("TYPE", "?"))
            if dm_type in CASACORE_STORAGE_MANAGERS:
                raise CorruptTableError(f"{path}: cannot read column {col} ({dm_type}): {err}") from err
            raise UnsupportedStorageManagerError(
                f"{path}: column {col} uses storage manager {dm_type}, which casacore cannot read "
                f"({err}). Copy the MS with CASA's mstransform/split first.") from err


@contextmanager
def open_ms(path: str, readonly: bool = True, lock_timeout: float | None = None) -> Iterator[ct.table]:
    """:func:`open_table` for a MeasurementSet main table, after the structural checks.

    Checks (spec §15): MS_VERSION keyword (else NotAMeasurementSetError), the sub-tables
    REQUIRED_SUBTABLES (MissingTableError), the columns REQUIRED_COLUMNS and one of DATA /
    CORRECTED_DATA (MissingColumnError), and that DATA / CORRECTED_DATA are readable
    (UnsupportedStorageManagerError for AsdmStMan or an unknown manager, CorruptTableError).
    """
    with open_table(path, readonly=readonly, lock_timeout=lock_timeout) as t:
        _check_ms_structure(t, os.path.abspath(os.fspath(path)))
        yield t


def subtable_path(ms_path: str, name: str) -> str:
    """Path of the sub-table `name` (e.g. 'ANTENNA') of the MS at `ms_path`."""
    return os.path.join(os.path.abspath(os.fspath(ms_path)), name)
