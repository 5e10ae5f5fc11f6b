"""STATE.OBS_MODE strings -> pipeline intents (spec §15, "Intent selection").

An ALMA OBS_MODE cell is a comma-separated list of ``MODE#SUBMODE`` elements, e.g.
``"CALIBRATE_PHASE#ON_SOURCE,CALIBRATE_WVR#ON_SOURCE"``. The mapping follows the ALMA pipeline
(``pipeline/domain/state.py``, class StateALMA, read 2026-07):

* only the listed (mode, submode) pairs give an intent; e.g. ``CALIBRATE_PHASE#OFF_SOURCE`` or
  ``CALIBRATE_WVR#OFF_SOURCE`` give none (the pipeline ignores them, so do we, silently);
* every element is mapped, so WVR is kept when it co-occurs (``State.intents``; only the
  pipeline's separate ``reduction_intents`` list drops it, and scans/fields use ``intents``);
* ``CALIBRATE_FLUX`` and ``CALIBRATE_AMPLI`` -> AMPLITUDE, ``CALIBRATE_DELAY#ON_SOURCE`` -> CHECK,
  ``OBSERVE_TARGET#OFF_SOURCE`` -> REFERENCE, ``CALIBRATE_DIFFGAIN`` only for the submodes
  REFERENCE (-> DIFFGAINREF) and ON_SOURCE (-> DIFFGAINSRC);
* ALMA Cycle 0 data (observed before 2013-01-21): PHASE is dropped from a state that also has
  BANDPASS or AMPLITUDE (the pipeline's StateALMACycle0 work-around for mislabelled scans).

Spellings: besides ``MODE#SUBMODE`` the pipeline accepts ``MODE.SUBMODE`` (CASA simulator) and
``MODE_SUBMODE`` for most pairs; we accept all three for every pair (superset, harmless).
Additions not in the ALMA table (they come from the pipeline's VLA table and name intents of
``types.KNOWN_INTENTS``): ``UNSPECIFIED#UNSPECIFIED`` -> UNSPECIFIED and
``SYSTEM_CONFIGURATION[#any]`` -> SYSTEM_CONFIGURATION.

An element whose *mode* is not known at all is kept verbatim as an intent and reported with
:class:`~fluxflow.errors.UnknownIntentWarning` (once per distinct element per call).
"""

from __future__ import annotations

import re
import warnings

from fluxflow.errors import UnknownIntentWarning

#: MJD seconds of 2013-01-21T00:00 UTC: ALMA data before this are Cycle 0 (pipeline StateFactory).
ALMA_CYCLE0_END_MJD_SEC = 56313 * 86400.0

_ANY = "*"

#: mode -> {submode -> intent}; submode "*" matches any submode (and none).
MODE_INTENTS: dict[str, dict[str, str]] = {
    "CALIBRATE_POLARIZATION": {"ON_SOURCE": "POLARIZATION"},
    "CALIBRATE_POL_ANGLE": {"ON_SOURCE": "POLANGLE"},
    "CALIBRATE_POL_LEAKAGE": {"ON_SOURCE": "POLLEAKAGE"},
    "CALIBRATE_BANDPASS": {"ON_SOURCE": "BANDPASS"},
    "CALIBRATE_AMPLI": {"ON_SOURCE": "AMPLITUDE"},
    "CALIBRATE_FLUX": {"ON_SOURCE": "AMPLITUDE"},
    "CALIBRATE_PHASE": {"ON_SOURCE": "PHASE"},
    "CALIBRATE_TARGET": {"ON_SOURCE": "TARGET"},
    "CALIBRATE_POINTING": {"ON_SOURCE": "POINTING"},
    "CALIBRATE_FOCUS": {"ON_SOURCE": "FOCUS"},
    "CALIBRATE_WVR": {"ON_SOURCE": "WVR"},
    "CALIBRATE_ATMOSPHERE": {s: "ATMOSPHERE" for s in ("ON_SOURCE", "OFF_SOURCE", "AMBIENT", "HOT", "TEST")},
    "CALIBRATE_SIDEBAND_RATIO": {"ON_SOURCE": "SIDEBAND", "OFF_SOURCE": "SIDEBAND"},
    "CALIBRATE_DIFFGAIN": {"REFERENCE": "DIFFGAINREF", "ON_SOURCE": "DIFFGAINSRC"},
    "CALIBRATE_DELAY": {"ON_SOURCE": "CHECK"},
    "OBSERVE_CHECK_SOURCE": {"ON_SOURCE": "CHECK"},
    "OBSERVE_TARGET": {"ON_SOURCE": "TARGET", "OFF_SOURCE": "REFERENCE"},
    "UNSPECIFIED": {"UNSPECIFIED": "UNSPECIFIED"},
    "SYSTEM_CONFIGURATION": {_ANY: "SYSTEM_CONFIGURATION"},
}

# Longest mode first, so "CALIBRATE_POL_ANGLE_ON_SOURCE" is not read as mode "CALIBRATE_POL...".
_MODES_BY_LENGTH = sorted(MODE_INTENTS, key=len, reverse=True)
_SEPARATORS = re.compile(r"[#.]")


def _split_element(element: str) -> tuple[str, str]:
    """(mode, submode) of one OBS_MODE element in any of the three spellings."""
    parts = _SEPARATORS.split(element, maxsplit=1)
    if len(parts) == 2:
        return parts[0], parts[1]
    for mode in _MODES_BY_LENGTH:
        if element == mode:
            return mode, ""
        if element.startswith(mode + "_"):
            return mode, element[len(mode) + 1:]
    return element, ""


def parse_obs_mode(obs_mode: str, cycle0: bool = False) -> tuple[frozenset[str], tuple[str, ...]]:
    """(intents, unknown elements) of one OBS_MODE string, without warning.

    Unknown elements (mode not in MODE_INTENTS) are included verbatim in the intents.
    `cycle0` applies the ALMA Cycle 0 PHASE work-around described in the module docstring.
    """
    intents: set[str] = set()
    unknown: list[str] = []
    for raw in str(obs_mode).split(","):
        element = raw.strip()
        if not element:
            continue
        mode, submode = _split_element(element)
        table = MODE_INTENTS.get(mode)
        if table is None:
            intents.add(element)
            if element not in unknown:
                unknown.append(element)
            continue
        intent = table.get(submode) or table.get(_ANY)
        if intent is not None:
            intents.add(intent)
    if cycle0 and "PHASE" in intents and intents & {"BANDPASS", "AMPLITUDE"}:
        intents.discard("PHASE")
    return frozenset(intents), tuple(unknown)


def warn_unknown(modes: tuple[str, ...] | list[str], context: str = "") -> None:
    """Emit one UnknownIntentWarning per distinct unknown OBS_MODE element."""
    where = f" in {context}" if context else ""
    for mode in dict.fromkeys(modes):
        warnings.warn(
            f"STATE.OBS_MODE element {mode!r}{where} maps to no known pipeline intent; "
            f"kept as intent {mode!r}", UnknownIntentWarning, stacklevel=3)


def obs_mode_to_intents(obs_mode: str, cycle0: bool = False) -> frozenset[str]:
    """Pipeline intents of one STATE.OBS_MODE string (see module docstring).

    Unknown modes are returned verbatim and reported with UnknownIntentWarning, once per
    distinct element in this string.
    """
    intents, unknown = parse_obs_mode(obs_mode, cycle0=cycle0)
    warn_unknown(unknown)
    return intents
