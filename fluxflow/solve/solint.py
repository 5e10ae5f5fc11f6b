"""Solution intervals of a gain solve (spec §9 step 3; CASA ``solint`` semantics).

CASA rules followed here (read from casa6 ``SolvableVisCal::setSolve`` and ``MSIter2``):

* ``solint`` containing ``INF`` (any case) or empty → ``'inf'``; containing ``INT`` → ``'int'``;
  otherwise a number with an optional time unit parsed as a casacore quantity. A bare number is
  seconds. A unit that is not a time (e.g. ``'2m'`` = metres) is an error in CASA ("use 'min',
  not 'm', for minutes") and here.
* ``'int'``: every distinct TIME is its own interval.
* ``'inf'`` with ``combine=''``: one interval per scan (the caller passes one field and one spw).
* ``N`` seconds: CASA's ``MSSmartInterval`` bins times on a fixed grid that restarts at every
  scan: bin = floor((t − t_scan0) / N) with t_scan0 = (first TIME of the scan) − 0.001 s. This is a
  grid, not "a new interval when t − interval start ≥ N": with 10 s sampling and N = 25 s the
  intervals are {0,10,20}, {30,40}, {50,60,70}.
"""

from __future__ import annotations

import re

import numpy as np

#: Time units accepted for a numeric solint, in seconds (casacore unit names; ``sec`` is a
#: fluxflow extension: casacore rejects it, but its meaning is unambiguous).
_TIME_UNITS = {
    "": 1.0, "s": 1.0, "sec": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9, "ks": 1e3,
    "min": 60.0, "h": 3600.0,
}
_NUMBER_UNIT = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)\s*$")

#: Offset CASA subtracts from the first time of each scan to form the interval grid (MSIter2).
_SCAN_START_OFFSET = 0.001


def parse_solint(s: str) -> str | float:
    """Parse a CASA time solint: returns ``'int'``, ``'inf'`` or a duration in seconds (> 0).

    ``'0s'`` gives ``'int'`` (CASA treats a zero interval as per-integration).
    Raises ValueError for unparsable strings, non-time units or negative durations.
    """
    text = str(s).strip()
    upper = text.upper()
    if upper == "" or "INF" in upper:
        return "inf"
    if "INT" in upper:
        return "int"
    m = _NUMBER_UNIT.match(text)
    if m is None:
        raise ValueError(f"cannot parse solint {s!r}: expected 'int', 'inf' or e.g. '30s'")
    value, unit = float(m.group(1)), m.group(2)
    if unit not in _TIME_UNITS:
        hint = " (use 'min', not 'm', for minutes)" if unit == "m" else ""
        raise ValueError(f"unrecognised units {unit!r} in solint {s!r}{hint}")
    seconds = value * _TIME_UNITS[unit]
    if seconds < 0:
        raise ValueError(f"solint {s!r} is negative")
    return "int" if seconds == 0 else seconds


def solution_intervals(time: np.ndarray, interval: np.ndarray, scan: np.ndarray,
                       solint: str | float) -> np.ndarray:
    """Label each row with its solution-interval index (0..n-1, ordered by start time).

    ``time`` is the row TIME (MJD s), ``scan`` the SCAN_NUMBER. ``interval`` (row INTERVAL) is
    accepted so callers pass the MS columns uniformly; CASA's interval rule uses TIME only.
    ``solint`` is a string (parsed with :func:`parse_solint`) or a duration in seconds.
    """
    time = np.asarray(time, dtype=np.float64)
    scan = np.asarray(scan)
    if np.shape(interval) != time.shape or scan.shape != time.shape:
        raise ValueError("time, interval and scan must have the same shape")
    if time.size == 0:
        return np.zeros(0, dtype=np.int64)
    sol = parse_solint(solint if isinstance(solint, str) else f"{float(solint)!r}s")

    scan_ids, scan_idx = np.unique(scan, return_inverse=True)
    scan_t0 = np.full(scan_ids.size, np.inf)
    np.minimum.at(scan_t0, scan_idx, time)

    if sol == "inf":
        sub = np.zeros(time.size, dtype=np.int64)
    elif sol == "int":
        sub = np.unique(time, return_inverse=True)[1].astype(np.int64)
    else:
        origin = scan_t0[scan_idx] - _SCAN_START_OFFSET
        sub = np.floor((time - origin) / sol).astype(np.int64)

    # Intervals are (scan, sub-interval) pairs; number them by their earliest time.
    sub = sub - sub.min()
    pair = scan_idx.astype(np.int64) * (int(sub.max()) + 1) + sub
    uniq, inverse = np.unique(pair, return_inverse=True)
    start = np.full(uniq.size, np.inf)
    np.minimum.at(start, inverse, time)
    rank = np.empty(uniq.size, dtype=np.int64)
    rank[np.lexsort((np.arange(uniq.size), start))] = np.arange(uniq.size)
    return rank[inverse]
