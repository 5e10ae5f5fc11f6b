"""Session mode: MSs without an AMPLITUDE calibrator adopt fluxes from the session (spec §12).

For each MS without amplitude calibrator, per common field name and spw name, the flux is the
mean of the other MSs' measurements; its uncertainty is the single measurement's own, or, for
several, the standard error of the mean (sample std with ddof = 1 over sqrt(n)), as the
pipeline's session task (``calc_averages_per_field``).
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from typing import Mapping

import numpy as np

from fluxflow.errors import InsufficientDataWarning, SelectionError
from fluxflow.models.catalogue import FluxMeasurement


def _name_to_id(ms: str, names: Mapping[int, str]) -> dict[str, int]:
    inverse: dict[str, int] = {}
    for spw_id, name in names.items():
        if name in inverse:
            raise SelectionError(f"{ms}: spw name {name!r} names spws {inverse[name]} and {spw_id}; "
                                 f"adopted fluxes need spw names that identify one science spw")
        inverse[name] = int(spw_id)
    return inverse


def adopt_session_fluxes(per_ms_measurements: Mapping[str, list[FluxMeasurement]],
                         ms_without_amplitude: list[str],
                         spw_names: Mapping[str, Mapping[int, str]],
                         field_ids: Mapping[str, Mapping[str, int]] | None = None,
                         ) -> dict[str, list[FluxMeasurement]]:
    """Adopted fluxes for every MS in `ms_without_amplitude` (keys of the result).

    `per_ms_measurements` holds the calibrated-visibility measurements of the MSs that have an
    amplitude calibrator (entries of MSs without one are ignored). `spw_names` maps, per MS,
    science spw id → spw name (names must be unique within an MS). `field_ids` maps, per MS
    without amplitude calibrator, field name → field id: only those fields adopt a flux and get
    that id. Without it every averaged field is adopted with field_id −1 (the pipeline keys
    adopted results by field name). An MS that can adopt nothing gets an empty list and an
    InsufficientDataWarning.
    """
    targets = list(dict.fromkeys(ms_without_amplitude))
    groups: dict[tuple[str, str], list[FluxMeasurement]] = defaultdict(list)
    for ms, measurements in per_ms_measurements.items():
        if ms in targets:
            continue
        names = spw_names.get(ms)
        if names is None:
            raise SelectionError(f"{ms}: no spw names given for adopting fluxes")
        _name_to_id(ms, names)
        for m in measurements:
            if m.spw_id not in names:
                raise SelectionError(f"{ms}: measurement of field {m.field_name} in spw {m.spw_id}, "
                                     f"which has no name in the spw table given")
            groups[(m.field_name, names[m.spw_id])].append(m)

    averaged: dict[tuple[str, str], tuple[float, float, float]] = {}
    for key, ms_list in groups.items():
        values = np.array([m.I for m in ms_list], dtype=np.float64)
        mean = float(np.mean(values))
        if len(ms_list) == 1:
            err = float(ms_list[0].I_err)
        else:
            err = float(np.std(values, ddof=1) / math.sqrt(len(values)))
        averaged[key] = (mean, err, float(np.mean([m.spix for m in ms_list])))

    result: dict[str, list[FluxMeasurement]] = {}
    for ms in targets:
        names = spw_names.get(ms)
        if names is None:
            raise SelectionError(f"{ms}: no spw names given for adopting fluxes")
        name_to_id = _name_to_id(ms, names)
        wanted = field_ids.get(ms, {}) if field_ids is not None else None
        adopted: list[FluxMeasurement] = []
        for (field_name, spw_name), (mean, err, spix) in sorted(averaged.items()):
            if spw_name not in name_to_id:
                continue
            if wanted is not None and field_name not in wanted:
                continue
            fid = int(wanted[field_name]) if wanted is not None else -1
            adopted.append(FluxMeasurement(fid, field_name, name_to_id[spw_name], mean, err,
                                           origin="adopted", spix=spix))
        if not adopted:
            warnings.warn(f"{ms}: could not find a flux calibration to adopt", InsufficientDataWarning,
                          stacklevel=2)
        result[ms] = sorted(adopted, key=lambda m: (m.field_id, m.field_name, m.spw_id))
    return result
