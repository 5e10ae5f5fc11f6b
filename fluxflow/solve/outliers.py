"""Outlier flagging of the amplitude gain table (spec §5, pipeline PIPE-2155).

Rule, per field F of ``field_ids_to_check`` (in the given order):

1. statistics over every unflagged amplitude |CPARAM| of F (all spws, antennas, times,
   parameters): ``median_F = numpy.median``; ``MAD_F = median(|x − median(x)| / 0.6745)`` with NaNs
   ignored (the pipeline's ``adopted.MAD``);
2. for each science spw s valid for F (skipped when F has no rows in s or all are flagged), every
   unflagged element gets σ = |amp − median_F| / MAD_F and is an outlier when σ > ``sigma``;
3. each outlier gives one flag command; all commands are applied at once after all fields are
   evaluated (statistics never see flags set by this function). Net effect: FLAG=True on every
   parameter of the rows of (antenna, spw, F) whose TIME is within ±0.5 s of the outlier's time.

Amplitudes are computed in single precision from CPARAM cast to complex64, which is what CASA stores
and what the pipeline reads; median_F and σ stay in single precision and MAD_F is double, as in the
pipeline running on CASA's numpy 1.x, so σ values and the command text match the pipeline's.
Commands are generated in the pipeline's order: field, spw, then parameter-major over the table rows
(the pipeline indexes CASA-tool arrays shaped [par, chan, row]).

Guard (spec §5 note): when MAD_F = 0 nothing is flagged for F and an InsufficientDataWarning is
issued (the pipeline would flag every element differing from the median).
"""

from __future__ import annotations

import datetime as _dt
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fluxflow.errors import InsufficientDataWarning
from fluxflow.gains import GainTable

#: Normal-consistency constant of the MAD used by the pipeline.
MAD_CONSTANT = 0.6745
#: Half width of the flagged time range around an outlier, seconds.
HALF_WINDOW = 0.5

_MJD_EPOCH = _dt.date(1858, 11, 17)


def casa_ymd(mjd_seconds: float) -> str:
    """Format MJD seconds as CASA's ``qa.time(..., form=['ymd'])`` does: ``YYYY/MM/DD/hh:mm:ss``.

    Re-implements casacore's ``MVTime``/``MVAngle`` printing at the default precision (6 digits,
    i.e. whole seconds): the day is taken before rounding, the time of day is rounded to the
    nearest second with casacore's own arithmetic (so ``hh`` may read 24 just before midnight,
    exactly as casacore prints it).
    """
    days = mjd_seconds / 86400.0
    day = math.floor(days)
    turn = (days - day) * (2 * math.pi) / (2 * math.pi)  # MVAngle holds the day fraction in radians
    hours = (turn - math.floor(turn)) * 24.0
    step = 1.0 / 60.0 / 60.0
    t = abs((math.floor(abs(hours) / step + 0.5) + 0.1) * step)
    hh = math.floor(t)
    t = math.fmod(t, 1.0) * 60.0
    mm = math.floor(t)
    t = math.fmod(t, 1.0) * 60.0
    ss = math.floor(t)
    date = _MJD_EPOCH + _dt.timedelta(days=day)
    return f"{date.year:04d}/{date.month:02d}/{date.day:02d}/{hh:02d}:{mm:02d}:{ss:02d}"


@dataclass(frozen=True)
class FlagCommand:
    """One outlier flag command (pipeline flagdata syntax)."""

    antenna: str  # antenna name + '&&&'
    spw: int
    field: int
    timerange: str  # 'YYYY/MM/DD/hh:mm:ss~YYYY/MM/DD/hh:mm:ss'
    reason: str  # 'QA2:gfluxscale_amp_time_sigma=<σ with 6 decimals>'
    antenna_id: int
    time: float  # MJD seconds of the outlier solution
    sigma: float

    def to_casa(self) -> str:
        """The command line exactly as the pipeline writes it."""
        return (f"mode='manual' antenna='{self.antenna}' spw='{self.spw}' field='{self.field}' "
                f"timerange='{self.timerange}' reason='{self.reason}'")


def mad(values: np.ndarray) -> float:
    """The pipeline's MAD: median(|x − median(x)| / 0.6745) over the non-NaN values."""
    a = np.asarray(values, dtype=np.float64)
    a = a[a == a]
    d = np.median(a)
    return float(np.median(np.fabs(a - d) / MAD_CONSTANT))


def _amplitudes(table: GainTable) -> np.ndarray:
    return np.abs(np.asarray(table.cparam).astype(np.complex64))  # (row, chan, par) float32


def flag_amplitude_outliers(table: GainTable, field_ids_to_check: Sequence[int],
                            science_spws: Sequence[int],
                            valid_spws_per_field: dict[int, set[int]],
                            antenna_names: Sequence[str],
                            sigma: float = 50.0) -> tuple[GainTable, list[FlagCommand]]:
    """Spec §5: flag amplitude outliers; returns (table with the new flags, commands).

    ``valid_spws_per_field[F]`` lists the spws F was observed in; a field missing from the dict is
    treated as observed in every science spw. The input table is not modified.
    """
    amps = _amplitudes(table)
    flags = np.asarray(table.flag, dtype=bool)
    commands: list[FlagCommand] = []
    for field in field_ids_to_check:
        in_field = table.field_id == field
        field_amps = amps[in_field][~flags[in_field]]
        if field_amps.size == 0:
            continue
        median = np.median(field_amps)
        scale = mad(field_amps)
        if not scale > 0:
            warnings.warn(f"field {field}: MAD of the gain amplitudes is {scale}; "
                          "amplitude outlier flagging skipped for this field",
                          InsufficientDataWarning, stacklevel=2)
            continue
        valid = valid_spws_per_field.get(field)
        for spw in science_spws:
            if valid is not None and spw not in valid:
                continue
            rows = np.flatnonzero(in_field & (table.spw_id == spw))
            sub_flags = flags[rows]
            if np.all(sub_flags):  # also true when (field, spw) has no rows
                continue
            # Parameter-major element order, as the pipeline's np.where on [par, chan, row].
            par, chan, row = np.nonzero(np.transpose(~sub_flags, (2, 1, 0)))
            values = amps[rows[row], chan, par]
            # float32 throughout, as in the pipeline (numpy 1.x keeps a float32 array float32
            # when divided by a float64 scalar).
            sig = np.abs(values - median) / np.float32(scale)
            for k in np.flatnonzero(sig > sigma):
                r = rows[row[k]]
                t = float(table.time[r])
                ant = int(table.antenna1[r])
                commands.append(FlagCommand(
                    antenna=f"{antenna_names[ant]}&&&", spw=int(spw), field=int(field),
                    timerange=f"{casa_ymd(t - HALF_WINDOW)}~{casa_ymd(t + HALF_WINDOW)}",
                    reason=f"QA2:gfluxscale_amp_time_sigma={sig[k]:.6f}",
                    antenna_id=ant, time=t, sigma=float(sig[k])))
    return apply_flag_commands(table, commands), commands


def apply_flag_commands(table: GainTable, commands: Sequence[FlagCommand]) -> GainTable:
    """Set FLAG on all parameters of the rows matched by each command (antenna, spw, field,
    TIME within ±0.5 s of the command's time); returns a new table."""
    out = table.copy()
    for cmd in commands:
        hit = ((out.antenna1 == cmd.antenna_id) & (out.spw_id == cmd.spw)
               & (out.field_id == cmd.field) & (np.abs(out.time - cmd.time) <= HALF_WINDOW))
        out.flag[hit] = True
    return out
