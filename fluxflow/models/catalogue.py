"""The flux catalogue file ``flux.csv`` and the flux-measurement record shared by the package.

Spec §7.1. ``flux.csv`` is written by hifa_importdata (catalogue fluxes per MS, field id and spw)
and, in the same layout, by the temporary fluxscale export of spec §3.10. Three headers exist:

* current:  ``ms,field,spw,I,Q,U,V,spix,uvmin,uvmax,comment``
* legacy:   ``ms,field,spw,I,Q,U,V,spix,comment`` (no uvmin/uvmax)
* Cycle 7:  ``ms,field,spw,I,Q,U,V,spix,origin,query_date,age,comment``

Any header holding the required columns ``ms, field, spw, I, Q, U, V`` is read. Fluxflow is
stricter than the pipeline (which skips bad rows silently): a malformed file raises
:class:`~fluxflow.errors.CatalogueError` naming the file, the line and the problem.
"""

from __future__ import annotations

import csv
import math
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Iterable

from fluxflow.errors import CatalogueError, CatalogueWarning, WriteError

ORIGIN_XML = "Source.xml"
ORIGIN_DB = "DB"
ORIGIN_ANALYSIS_UTILS = "analysisUtils"
#: Origins of catalogue (not derived) fluxes, as the pipeline's QA and weblog use them.
EXTERNAL_ORIGINS = (ORIGIN_ANALYSIS_UTILS, ORIGIN_DB, ORIGIN_XML)

CURRENT_COLUMNS = ("ms", "field", "spw", "I", "Q", "U", "V", "spix", "uvmin", "uvmax", "comment")
REQUIRED_COLUMNS = ("ms", "field", "spw", "I", "Q", "U", "V")

_ORIGIN_RE = re.compile(r"origin=(\S+)")
_AGE_RE = re.compile(r"(?<![A-Za-z0-9])age=(\S+)")
_BAND3AGE_RE = re.compile(r"Band3age=(\S+)")
_QUERIED_RE = re.compile(r"queried_at=(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} \w{3})")
_FIELD_RE = re.compile(r"field=(\S+)")
_QUOTED_NAME_RE = re.compile(r"^\s*'([^']*)'")


@dataclass(frozen=True)
class FluxMeasurement:
    """One Stokes-I flux density of a field in one spw (calvis, fluxscale, catalogue or adopted).

    ``I`` and ``I_err`` in Jy; ``freq`` in Hz (NaN if unknown); ``spix`` is the spectral index
    about ``freq``. ``origin`` is 'calvis' (spec §8), 'fluxscale' (§6), 'adopted' (§12) or a
    catalogue origin (:data:`EXTERNAL_ORIGINS`).
    """

    field_id: int
    field_name: str
    spw_id: int
    I: float  # noqa: E741 - Stokes name
    I_err: float
    origin: str = "calvis"
    spix: float = 0.0
    freq: float = float("nan")

    @property
    def snr(self) -> float:
        """I / I_err (inf when the uncertainty is zero)."""
        return self.I / self.I_err if self.I_err != 0 else math.inf


@dataclass(frozen=True)
class CatalogueRow:
    """One row of flux.csv (spec §7.1). Fluxes in Jy at the spw centre; uvmin/uvmax in kλ."""

    ms: str
    field_id: int
    spw_id: int
    I: float  # noqa: E741 - Stokes name
    Q: float = 0.0
    U: float = 0.0
    V: float = 0.0
    spix: float = 0.0
    uvmin: float = 0.0
    uvmax: float = 0.0
    comment: str = ""
    origin: str | None = None
    age: float | None = None
    field_name: str = ""
    queried_at: str | None = None
    line: int = field(default=0, compare=False)  # line in the file it was read from (0: not read)

    def to_measurement(self, freq: float = float("nan")) -> FluxMeasurement:
        """Catalogue flux as a :class:`FluxMeasurement` (uncertainty unknown: 0)."""
        return FluxMeasurement(self.field_id, self.field_name, self.spw_id, self.I, 0.0,
                               origin=self.origin or "N/A", spix=self.spix, freq=freq)


def make_comment(field_name: str, intents: Iterable[str], origin: str | None = None,
                 age: float | str | None = None, queried_at: str | None = None) -> str:
    """The pipeline's comment template of flux.csv (spec §7.1); missing items print as N/A."""
    def na(x: object) -> str:
        return "N/A" if x is None or x == "" else str(x)

    return (f"# field={field_name} intents={','.join(sorted(intents))} origin={na(origin)} "
            f"age={na(age)} queried_at={na(queried_at)}")


def _basename(ms: str) -> str:
    return os.path.basename(os.path.normpath(ms.strip())) if ms.strip() else ""


def _float_or_none(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _error(label: str, line: int, msg: str) -> CatalogueError:
    return CatalogueError(f"{label}, line {line}: {msg}")


def read_flux_csv(path: str | os.PathLike, ms_name: str | None = None) -> list[CatalogueRow]:
    """Read flux.csv; with `ms_name`, keep only rows whose ``ms`` basename matches it.

    Raises CatalogueError (file name, line, problem) for: unreadable or empty file, missing
    required columns, missing or non-integer field/spw, missing, non-numeric or non-finite
    I/Q/U/V, negative I, duplicate (ms, field, spw) rows. A missing or unparsable spix becomes 0
    with a :class:`CatalogueWarning`; unparsable uvmin/uvmax become 0 silently (as the pipeline).
    """
    name = os.fspath(path)
    label = os.path.basename(name)
    try:
        with open(name, "rt", encoding="utf-8", newline="") as fh:
            text = fh.read()
    except OSError as exc:
        raise CatalogueError(f"{name}: cannot read the flux catalogue ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise CatalogueError(f"{name}: not a UTF-8 text file ({exc.reason})") from exc

    reader = csv.reader(text.splitlines(keepends=True))
    header: list[str] | None = None
    rows: list[CatalogueRow] = []
    seen: dict[tuple[str, int, int], int] = {}
    want = _basename(ms_name) if ms_name is not None else None
    spix_column_warned = False
    last_line = 0
    for cells in reader:
        line = last_line + 1
        last_line = reader.line_num
        if not cells or all(not c.strip() for c in cells):
            continue
        if header is None:
            header = [c.strip() for c in cells]
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise CatalogueError(
                    f"{label}, line {line}: header lacks required column(s) {', '.join(missing)} "
                    f"(found: {','.join(header)}; expected: {','.join(CURRENT_COLUMNS)})")
            continue

        values = dict(zip(header, (c.strip() for c in cells)))
        if len(cells) > len(header):  # unquoted commas in the comment
            extra = ",".join(cells[len(header):])
            values["comment"] = f"{values.get('comment', '')},{extra}" if "comment" in header else extra

        for col in REQUIRED_COLUMNS:
            if values.get(col, "") == "":
                raise _error(label, line, f"missing value for column '{col}'")
        ms = values["ms"]
        ints = {}
        for col in ("field", "spw"):
            try:
                ints[col] = int(values[col])
            except ValueError:
                raise _error(label, line, f"{col} id {values[col]!r} is not an integer") from None
            if ints[col] < 0:
                raise _error(label, line, f"{col} id {ints[col]} is negative")
        stokes = {}
        for col in ("I", "Q", "U", "V"):
            try:
                stokes[col] = float(values[col])
            except ValueError:
                raise _error(label, line, f"Stokes {col} value {values[col]!r} is not a number") from None
            if not math.isfinite(stokes[col]):
                raise _error(label, line, f"Stokes {col} value {values[col]!r} is not finite")
        if stokes["I"] < 0:
            raise _error(label, line, f"Stokes I is negative ({values['I']})")

        if "spix" not in header:
            if not spix_column_warned:
                warnings.warn(f"{label}: no spix column; spectral indices set to 0", CatalogueWarning,
                              stacklevel=2)
                spix_column_warned = True
            spix = 0.0
        else:
            parsed = _float_or_none(values.get("spix"))
            if parsed is None:
                warnings.warn(f"{label}, line {line}: spix {values.get('spix')!r} is not a number; "
                              f"using 0", CatalogueWarning, stacklevel=2)
                parsed = 0.0
            spix = parsed
        uvmin = _float_or_none(values.get("uvmin")) or 0.0
        uvmax = _float_or_none(values.get("uvmax")) or 0.0
        comment = values.get("comment") or ""

        origin = values.get("origin") if "origin" in header else None
        if not origin:
            m = _ORIGIN_RE.search(comment)
            origin = m.group(1) if m else None
        if origin == "N/A":
            origin = None
        if "Jy, freq=" in comment:
            origin = ORIGIN_ANALYSIS_UTILS
        age_text = values.get("age") if "age" in header else None
        if not age_text:
            m = _AGE_RE.search(comment)
            age_text = m.group(1) if m else None
        age = _float_or_none(age_text)
        if age is None:
            m = _BAND3AGE_RE.search(comment)
            age = _float_or_none(m.group(1)) if m else None
        queried = values.get("query_date") or None
        if queried is None:
            m = _QUERIED_RE.search(comment)
            queried = m.group(1) if m else None
        if queried == "N/A":
            queried = None
        m = _FIELD_RE.search(comment) or _QUOTED_NAME_RE.search(comment)
        field_name = m.group(1) if m else ""

        key = (_basename(ms), ints["field"], ints["spw"])
        if key in seen:
            raise _error(label, line, f"duplicate row for ms {key[0]} field {key[1]} spw {key[2]} "
                        f"(first given at line {seen[key]})")
        seen[key] = line
        if want is not None and key[0] != want:
            continue
        rows.append(CatalogueRow(ms=ms, field_id=ints["field"], spw_id=ints["spw"], I=stokes["I"],
                                 Q=stokes["Q"], U=stokes["U"], V=stokes["V"], spix=spix, uvmin=uvmin,
                                 uvmax=uvmax, comment=comment, origin=origin, age=age,
                                 field_name=field_name, queried_at=queried, line=line))
    if header is None:
        raise CatalogueError(f"{label}: empty file (no header line)")
    return rows


def write_flux_csv(path: str | os.PathLike, rows: Iterable[CatalogueRow]) -> None:
    """Write rows in the current flux.csv layout, atomically (temporary file + rename).

    Fluxes are written with full precision (``repr``), spix with 3 decimals as the pipeline's
    fluxscale export does (spec §3.10), uvmin/uvmax as floats. Raises WriteError on failure.
    """
    name = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(name))
    tmp = None
    try:
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", newline="", dir=directory,
                                         prefix=".flux-", suffix=".csv.tmp", delete=False) as fh:
            tmp = fh.name
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(CURRENT_COLUMNS)
            for r in rows:
                writer.writerow([r.ms, int(r.field_id), int(r.spw_id), repr(float(r.I)),
                                 repr(float(r.Q)), repr(float(r.U)), repr(float(r.V)),
                                 f"{float(r.spix):.3f}", repr(float(r.uvmin)), repr(float(r.uvmax)),
                                 r.comment])
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, name)
        tmp = None
    except OSError as exc:
        raise WriteError(f"{name}: cannot write the flux catalogue ({exc.strerror or exc})") from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def catalogue_lookup(rows: Iterable[CatalogueRow], ms_name: str, field_id: int,
                     spw_id: int) -> CatalogueRow | None:
    """The row of (MS basename, field id, spw id), or None."""
    want = _basename(ms_name)
    for r in rows:
        if _basename(r.ms) == want and r.field_id == int(field_id) and r.spw_id == int(spw_id):
            return r
    return None
