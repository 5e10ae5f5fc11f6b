"""The parameters of a fluxflow run: hifa_gfluxscale's names and defaults (spec §2) plus fluxflow's.

One typed object is shared by the Python API (:func:`fluxflow.gfluxscale`) and the CLI
(``fluxflow run``), so both have the same defaults and the same validation.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from fluxflow.errors import FluxflowError

DEFAULT_TRANSINTENT = "PHASE,BANDPASS,CHECK,DIFFGAINREF,DIFFGAINSRC,POLARIZATION,POLANGLE,POLLEAKAGE"


@dataclass(frozen=True)
class PhaseupOverride:
    """What hifa_spwphaseup would record for one (intent, field): spec §3.5 lookup P(intent, field)."""

    solint: str = "int"
    gaintype: str = "G"  # 'G' (per polarisation) or 'T' (shared)
    spwmap: tuple[int, ...] = ()
    combine_spw: bool = False

    def __post_init__(self) -> None:
        if self.gaintype not in ("G", "T"):
            raise FluxflowError(f"phase-up gaintype must be 'G' or 'T', not {self.gaintype!r}")


@dataclass(frozen=True)
class Params:
    """hifa_gfluxscale parameters (spec §2). Strings follow CASA syntax."""

    vis: tuple[str, ...] = ()
    reference: str = ""  # field names/ids, comma list; '' = fields with refintent
    transfer: str = ""  # '' = fields with (pruned) transintent, minus reference
    refintent: str = "AMPLITUDE"
    transintent: str = DEFAULT_TRANSINTENT
    refspwmap: tuple[int, ...] = ()  # () = no mapping ([-1])
    reffile: str = ""  # flux.csv; '' = <MS>.flux.csv or flux.csv beside the MS, if present
    phaseupsolint: str = "int"
    solint: str = "inf"
    minsnr: float = 2.0
    refant: str = ""  # ranked comma list; '' = automatic ranking (fluxflow.solve.refant)
    hm_resolvedcals: str = "automatic"
    antenna: str = ""
    uvrange: str = ""  # manual mode only
    peak_fraction: float = 0.2
    amp_outlier_sigma: float = 50.0
    # pre-applied calibration, gaincal's conventions (issue 8): one entry per table; a single
    # gainfield/interp/spwmap/calwt value applies to every table
    gaintable: tuple[str, ...] = ()
    gainfield: tuple[str, ...] = ()
    interp: tuple[str, ...] = ()
    spwmap: tuple[tuple[int, ...], ...] = ()
    calwt: tuple[bool, ...] = (True,)
    # fluxflow's own
    datacolumn: str = "DATA"
    phaseup: dict[str, PhaseupOverride] = field(default_factory=dict)  # key 'INTENT:field'
    resolved_diameter: dict[str, float] = field(default_factory=dict)  # field name -> arcsec
    spw: str = ""  # restrict to these science spws ('' = all)
    output_dir: str = "fluxflow-out"
    write_model: bool = True
    # rows per read chunk; None = as many as fit in ~256 MiB of arrays (fluxflow.ms.selection),
    # which bounds a solve task's memory whatever the selection's size
    chunk_rows: int | None = None
    # also save Dask's performance report (task stream, profiles) as dask-performance.html;
    # off by default: it costs about 0.5 s of client time per run and a few MB
    performance_report: bool = False

    def __post_init__(self) -> None:
        if self.hm_resolvedcals not in ("automatic", "manual"):
            raise FluxflowError(f"hm_resolvedcals must be 'automatic' or 'manual', not {self.hm_resolvedcals!r}")
        if self.datacolumn.upper() not in ("DATA", "CORRECTED_DATA"):
            raise FluxflowError(f"datacolumn must be DATA or CORRECTED_DATA, not {self.datacolumn!r}")
        if not 0.0 < self.peak_fraction < 1.0:
            raise FluxflowError(f"peak_fraction must be in (0, 1), not {self.peak_fraction}")
        if self.amp_outlier_sigma <= 0:
            raise FluxflowError(f"amp_outlier_sigma must be > 0, not {self.amp_outlier_sigma}")
        if self.minsnr < 0:
            raise FluxflowError(f"minsnr must be >= 0, not {self.minsnr}")
        if self.chunk_rows is not None and self.chunk_rows < 1:
            raise FluxflowError("chunk_rows must be >= 1")

    # -- derived ---------------------------------------------------------------------------
    @property
    def refintents(self) -> tuple[str, ...]:
        return split_list(self.refintent)

    @property
    def transintents(self) -> tuple[str, ...]:
        return split_list(self.transintent)

    def phaseup_for(self, intent: str, field_name: str) -> PhaseupOverride | None:
        """Spec §3.5 lookup: an exact (single intent, field name) match, else None (defaults)."""
        return self.phaseup.get(f"{intent}:{field_name}")

    def calapps(self) -> list:
        """The pre-apply tables as :class:`fluxflow.solve.preapply.CalApply` (gaincal semantics:
        a one-element gainfield/interp/spwmap/calwt list applies to every table)."""
        from fluxflow.solve.preapply import CalApply

        n = len(self.gaintable)

        def pick(values: tuple, i: int, default: Any) -> Any:
            if len(values) == 1:
                return values[0]
            return values[i] if i < len(values) else default

        for name in ("gainfield", "interp", "spwmap", "calwt"):
            if len(getattr(self, name)) > max(n, 1):
                raise FluxflowError(f"{name} has more entries ({len(getattr(self, name))}) than gaintable ({n})")
        return [CalApply(path=self.gaintable[i], gainfield=pick(self.gainfield, i, ""),
                         interp=pick(self.interp, i, ""), spwmap=tuple(pick(self.spwmap, i, ())),
                         calwt=bool(pick(self.calwt, i, True))) for i in range(n)]

    def replace(self, **changes: Any) -> "Params":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["vis"] = [os.path.abspath(v) for v in self.vis]
        return d


def split_list(s: str) -> tuple[str, ...]:
    """CASA-style comma list -> stripped, non-empty items."""
    return tuple(x.strip() for x in str(s).split(",") if x.strip())


def parse_int_list(s: str | list | tuple) -> tuple[int, ...]:
    """'1,1,3,3' or '[1,1,3,3]' or a sequence -> ints."""
    if isinstance(s, (list, tuple)):
        return tuple(int(x) for x in s)
    s = str(s).strip().strip("[]")
    try:
        return tuple(int(x) for x in split_list(s))
    except ValueError as exc:
        raise FluxflowError(f"expected a comma list of integers, got {s!r}") from exc


def parse_phaseup(items: list[str]) -> dict[str, PhaseupOverride]:
    """CLI form 'INTENT:FIELD:solint=60s,gaintype=T,spwmap=0;0;0;0,combine=spw'."""
    out: dict[str, PhaseupOverride] = {}
    for item in items:
        parts = item.split(":", 2)
        if len(parts) != 3:
            raise FluxflowError(f"--phaseup {item!r}: expected INTENT:FIELD:key=value,...")
        intent, fname, spec = parts
        kw: dict[str, Any] = {}
        for kv in split_list(spec):
            if "=" not in kv:
                raise FluxflowError(f"--phaseup {item!r}: {kv!r} is not key=value")
            k, v = (x.strip() for x in kv.split("=", 1))
            if k == "solint":
                kw["solint"] = v
            elif k == "gaintype":
                kw["gaintype"] = v.upper()
            elif k == "spwmap":
                kw["spwmap"] = tuple(int(x) for x in v.replace(";", " ").split())
            elif k == "combine":
                kw["combine_spw"] = v.lower() == "spw"
            else:
                raise FluxflowError(f"--phaseup {item!r}: unknown key {k!r}")
        out[f"{intent.upper()}:{fname}"] = PhaseupOverride(**kw)
    return out
