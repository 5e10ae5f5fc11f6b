"""Antenna/uv selection for a resolved reference calibrator (``hm_resolvedcals``), spec §4.

The visibility of a uniform disk falls with baseline length; the reference-field phase solve
(spec §3.5 solve A) is restricted to antennas close to the reference antenna and to baselines
shorter than the length B_lim at which the disk's visibility drops below ``peak_fraction`` of
its value on the shortest baseline to the reference antenna.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.special import j1

from fluxflow.errors import ResolvedCalibratorWarning, SelectionError

#: Arcseconds per radian as the heuristic writes it (spec §4 step 6).
ARCSEC_PER_RAD_HEURISTIC = 206265.0
#: Arcseconds per radian as CASA's solar-system helper uses it (spec §4 step 2).
ARCSEC_PER_RAD_EPHEMERIS = 206264.8
AU_KM = 149597870.7
_SCAN_STEPS = 10000  # 1 m steps (spec §4 step 7)
_B_SHORT_CAP = 10000.0  # metres (spec §4 step 5)


@dataclass(frozen=True)
class ResolvedSelection:
    """Result of :func:`resolved_antennas`.

    ``antennas`` are the selected antenna names in antenna-table order (empty when unresolved
    or fewer than 3 antennas); ``uvrange`` is ``'<%.3fm' % b_lim`` or ''. ``b_lim``/``b_short``
    in metres (NaN when not computed). ``reason`` says why the result is what it is.
    """

    antennas: list[str] = field(default_factory=list)
    uvrange: str = ""
    b_lim: float = math.nan
    b_short: float = math.nan
    reason: str = ""

    @property
    def antenna_string(self) -> str:
        """CASA selection string as the pipeline returns it: 'A,B,C&' or ''."""
        return ",".join(self.antennas) + "&" if self.antennas else ""


def disk_diameter_from_ephemeris(radii_km: Sequence[float], distance_au: float,
                                 sub_observer_lat_rad: float = 0.0) -> float:
    """Apparent disk size θ = max(major, minor) in arcsec (spec §4 step 2).

    major = 2·R_eq/Δ, minor = 2·R_p,app/Δ with R_eq the mean of the two equatorial radii,
    R_p,app = sqrt(R_eq²·sin²β + R_p²·cos²β) (β the sub-observer latitude) and Δ the geocentric
    distance; 206264.8 arcsec per radian.
    """
    r = np.asarray(radii_km, dtype=np.float64)
    if r.shape != (3,):
        raise ValueError("radii_km must hold the three body radii (two equatorial, polar) in km")
    if not distance_au > 0:
        raise ValueError(f"distance must be positive, got {distance_au} AU")
    r_eq = (r[0] + r[1]) / 2.0
    beta = float(sub_observer_lat_rad)
    r_p_app = math.sqrt(r_eq ** 2 * math.sin(beta) ** 2 + r[2] ** 2 * math.cos(beta) ** 2)
    delta_km = float(distance_au) * AU_KM
    major = 2.0 * r_eq / delta_km * ARCSEC_PER_RAD_EPHEMERIS
    minor = 2.0 * r_p_app / delta_km * ARCSEC_PER_RAD_EPHEMERIS
    return float(max(major, minor))


def _disk_profile(u: np.ndarray) -> np.ndarray:
    """J1(u)/u with its limit 1/2 at u = 0."""
    u = np.asarray(u, dtype=np.float64)
    safe = np.where(u == 0.0, 1.0, u)
    return np.where(u == 0.0, 0.5, j1(safe) / safe)


def resolved_antennas(antenna_names: Sequence[str], lon: Sequence[float], lat: Sequence[float],
                      radius: Sequence[float], refant_name: str, theta_arcsec: float,
                      min_science_freq_hz: float, peak_fraction: float = 0.2) -> ResolvedSelection:
    """Spec §4 steps 3–10 for a calibrator of apparent size `theta_arcsec`.

    Antenna positions in spherical form (lon, lat in rad, radius in m); planar coordinates
    x = lon·cos(lat)·r, y = lat·r. θ = 0 means unresolved. The pipeline keeps the selected
    names in a Python set (arbitrary order); fluxflow returns them in antenna-table order.
    """
    names = list(antenna_names)
    if refant_name not in names:
        raise SelectionError(f"resolved-calibrator heuristic: reference antenna {refant_name!r} is not "
                             f"one of the MS antennas ({', '.join(names)})")
    if not theta_arcsec or not theta_arcsec > 0:
        return ResolvedSelection(reason="unresolved (no or zero calibrator size)")
    lon_a = np.asarray(lon, dtype=np.float64)
    lat_a = np.asarray(lat, dtype=np.float64)
    rad_a = np.asarray(radius, dtype=np.float64)
    x = lon_a * np.cos(lat_a) * rad_a
    y = lat_a * rad_a
    ref = names.index(refant_name)
    dist = np.hypot(x - x[ref], y - y[ref])
    others = np.array([n != refant_name for n in names])
    b_short = float(min(_B_SHORT_CAP, np.min(dist[others]))) if others.any() else _B_SHORT_CAP
    lambda_max = 3.0e8 / float(min_science_freq_hz)
    theta_rad = float(theta_arcsec) / ARCSEC_PER_RAD_HEURISTIC

    def profile(b: np.ndarray | float) -> np.ndarray:
        return _disk_profile(np.pi * np.asarray(b) * theta_rad / lambda_max)

    v_ref = float(profile(b_short))
    baselines = np.arange(_SCAN_STEPS) + b_short
    below = np.flatnonzero(profile(baselines) < peak_fraction * v_ref)
    b_lim = float(baselines[below[0]]) if below.size else b_short + _SCAN_STEPS
    chosen = [n for n, d in zip(names, dist) if d < b_lim]
    if len(chosen) < 3:
        warnings.warn(f"resolved calibrator: fewer than 3 antennas within {b_lim:.3f} m of "
                      f"{refant_name}; reverting to all antennas", ResolvedCalibratorWarning, stacklevel=2)
        return ResolvedSelection(b_lim=b_lim, b_short=b_short,
                                 reason=f"fewer than 3 antennas within {b_lim:.3f} m of {refant_name}")
    return ResolvedSelection(antennas=chosen, uvrange="<%.3fm" % b_lim, b_lim=b_lim, b_short=b_short,
                             reason=f"resolved ({theta_arcsec:.3f} arcsec): {len(chosen)} antennas "
                                    f"within {b_lim:.3f} m of {refant_name}")


def resolve_selection(mode: str, auto_result: ResolvedSelection | tuple[str, str], antenna_param: str,
                      uvrange_param: str, n_ant_ms: int) -> tuple[str, str]:
    """Task post-processing of spec §4: the (resantenna, uvrange) used by phase solve A.

    manual → the user's `antenna`/`uvrange`. automatic: ('', '') stays ('', '') (all antennas,
    no uv limit); if the selection names ≥ n_ant_ms antennas, resantenna = `antenna_param`
    but the uv limit is kept.
    """
    if mode == "manual":
        return antenna_param, uvrange_param
    if mode != "automatic":
        raise SelectionError(f"hm_resolvedcals must be 'automatic' or 'manual', got {mode!r}")
    if isinstance(auto_result, ResolvedSelection):
        resantenna, uvrange = auto_result.antenna_string, auto_result.uvrange
    else:
        resantenna, uvrange = auto_result
    if resantenna == "" and uvrange == "":
        return "", ""
    if len(resantenna.split(",")) >= n_ant_ms:
        resantenna = antenna_param
    return resantenna, uvrange


def filter_refants(refants: Sequence[str] | str, resantenna: str) -> list[str]:
    """Refants (ranked, order kept) that are in `resantenna` ('&' stripped); all if it is ''."""
    ranked = [r.strip() for r in refants.split(",")] if isinstance(refants, str) else list(refants)
    ranked = [r for r in ranked if r]
    if resantenna == "":
        return ranked
    allowed = {a.strip() for a in resantenna.replace("&", "").split(",") if a.strip()}
    return [r for r in ranked if r in allowed]
