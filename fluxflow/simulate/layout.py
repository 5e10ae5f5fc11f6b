"""ALMA-like antenna layouts: pad names, antenna names, WGS84 geodetic -> ITRF (ECEF) positions.

Pure numpy. The layout is random but reproducible (its own seed, so every EB of a session sees
the same array) with ALMA's compact-configuration character: a dense core, a minimum pad
separation of 15 m for 12 m dishes and a longest baseline near 500 m (about 50 m for 7 m dishes).
"""

from __future__ import annotations

import math

import numpy as np

from fluxflow.ms.types import Antenna

#: ALMA array reference point (geodetic, WGS84).
ALMA_LON_DEG = -67.7548
ALMA_LAT_DEG = -23.0234
ALMA_HEIGHT_M = 5050.0

_WGS84_A = 6378137.0
_WGS84_F = 1.0 / 298.257223563
_WGS84_E2 = _WGS84_F * (2.0 - _WGS84_F)


def geodetic_to_ecef(lon_deg: float | np.ndarray, lat_deg: float | np.ndarray,
                     height_m: float | np.ndarray) -> np.ndarray:
    """WGS84 geodetic longitude/latitude (deg) and ellipsoidal height (m) -> ECEF/ITRF (..., 3) m."""
    lon = np.radians(lon_deg)
    lat = np.radians(lat_deg)
    sin_lat = np.sin(lat)
    n = _WGS84_A / np.sqrt(1.0 - _WGS84_E2 * sin_lat**2)
    x = (n + height_m) * np.cos(lat) * np.cos(lon)
    y = (n + height_m) * np.cos(lat) * np.sin(lon)
    z = (n * (1.0 - _WGS84_E2) + height_m) * sin_lat
    return np.stack(np.broadcast_arrays(x, y, z), axis=-1)


def enu_to_ecef(enu: np.ndarray, lon_deg: float, lat_deg: float, height_m: float) -> np.ndarray:
    """Local east/north/up offsets (n, 3) about a geodetic reference point -> ECEF positions (n, 3)."""
    lon = math.radians(lon_deg)
    lat = math.radians(lat_deg)
    sl, cl = math.sin(lon), math.cos(lon)
    sp, cp = math.sin(lat), math.cos(lat)
    rot = np.array([[-sl, -sp * cl, cp * cl],
                    [cl, -sp * sl, cp * sl],
                    [0.0, cp, sp]])
    origin = geodetic_to_ecef(lon_deg, lat_deg, height_m)
    return origin + np.asarray(enu, float) @ rot.T


def spherical_form(position: np.ndarray) -> tuple[float, float, float]:
    """ITRF (x, y, z) -> (lon rad, geocentric lat rad, geocentric radius m), as spec §4 step 4 uses."""
    x, y, z = (float(v) for v in position)
    r = math.sqrt(x * x + y * y + z * z)
    return math.atan2(y, x), math.atan2(z, math.hypot(x, y)), r


def antenna_names(n_ant: int, dish: float) -> list[str]:
    """ALMA-style names: 12 m dishes DA41.., DV01.. interleaved then PM01..; 7 m dishes CM01.."""
    if dish < 10.0:
        return [f"CM{i + 1:02d}" for i in range(n_ant)]
    da = [f"DA{41 + i}" for i in range(25)]
    dv = [f"DV{i + 1:02d}" for i in range(25)]
    names = [n for pair in zip(da, dv) for n in pair] + [f"PM{i + 1:02d}" for i in range(4)]
    if n_ant > len(names):
        names += [f"DA{66 + i}" for i in range(n_ant - len(names))]
    return names[:n_ant]


def pad_names(enu: np.ndarray, core_radius: float) -> list[str]:
    """Pad names: A0xx inside the core radius, else by direction W2xx / S3xx / P4xx / N6xx."""
    counters = {"A": 0, "W": 200, "S": 300, "P": 400, "N": 600}
    out = []
    for e, n, _ in np.asarray(enu):
        if math.hypot(e, n) <= core_radius:
            key = "A"
        else:
            az = math.degrees(math.atan2(e, n)) % 360.0
            key = "N" if az < 45 or az >= 315 else "P" if az < 135 else "S" if az < 225 else "W"
        counters[key] += 1
        out.append(f"{key}{counters[key]:03d}")
    return out


def compact_enu(n_ant: int, dish: float, seed: int, max_baseline: float | None = None) -> np.ndarray:
    """Random compact configuration: (n_ant, 3) east/north/up offsets in metres.

    Minimum separation 1.25 dish (15 m for 12 m dishes); antenna 1 sits at exactly that distance
    from antenna 0 so the shortest baseline is the pad minimum; radial density falls off from the
    centre; longest baseline <= `max_baseline` (default 500 m for 12 m, 50 m for 7 m dishes,
    enlarged if the antennas would not fit).
    """
    rng = np.random.default_rng([int(seed), 7])
    min_sep = 1.25 * dish
    if max_baseline is None:
        max_baseline = 500.0 if dish >= 10.0 else 50.0
    radius = max(max_baseline / 2.0 - 5.0, 1.1 * min_sep * math.sqrt(max(n_ant, 1)))
    pts = [np.zeros(2)]
    if n_ant > 1:
        ang = rng.uniform(0, 2 * math.pi)
        pts.append(min_sep * np.array([math.cos(ang), math.sin(ang)]))
    tries = 0
    while len(pts) < n_ant:
        tries += 1
        if tries > 200000:
            raise ValueError(f"cannot place {n_ant} antennas of {dish} m within {radius:.0f} m")
        r = radius * rng.random() ** 0.75
        ang = rng.uniform(0, 2 * math.pi)
        cand = np.array([r * math.cos(ang), r * math.sin(ang)])
        if min(np.hypot(*(cand - p)) for p in pts) >= min_sep:
            pts.append(cand)
    en = np.array(pts[:n_ant])
    up = rng.normal(0.0, 0.5, size=(n_ant, 1))
    return np.hstack([en, up])


def alma_layout(n_ant: int = 12, dish: float = 12.0, seed: int = 2024,
                max_baseline: float | None = None) -> list[Antenna]:
    """Antennas of an ALMA-like compact configuration around the ALMA site."""
    if n_ant < 2:
        raise ValueError("an interferometer needs at least 2 antennas")
    enu = compact_enu(n_ant, dish, seed, max_baseline)
    xyz = enu_to_ecef(enu, ALMA_LON_DEG, ALMA_LAT_DEG, ALMA_HEIGHT_M)
    names = antenna_names(n_ant, dish)
    pads = pad_names(enu, core_radius=(150.0 if dish >= 10.0 else 20.0))
    out = []
    for i in range(n_ant):
        lon, lat, r = spherical_form(xyz[i])
        out.append(Antenna(id=i, name=names[i], station=pads[i], position=xyz[i].copy(),
                           diameter=float(dish), lon=lon, lat=lat, radius=r))
    return out
