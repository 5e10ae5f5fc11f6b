"""Sky model and geometry of the simulator: sources, sidereal time, UVW, source visibilities.

Pure numpy/scipy. A point source at the phase centre has V = I(ν) = S_ref·(ν/ν_ref)^spix on the
parallel hands; a uniform disk of diameter θ has V = I(ν)·2J1(x)/x with x = π·θ·|uv|/λ
(|uv| the projected baseline length without w), the model setjy writes for solar-system bodies
(spec §7.2) and the profile the resolved-calibrator heuristic assumes (spec §4 step 6).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from scipy.special import j1

from fluxflow.simulate.config import (DEFAULT_SOURCES, DISK_CAL_DEC_DEG, DISK_CAL_RA_DEG,
                                      SimConfig, SourceSpec)

C_LIGHT = 299792458.0
ARCSEC = math.pi / (180.0 * 3600.0)
AU_KM = 1.495978707e8
#: Uranus radii (km): two equatorial, one polar — used for the disk calibrator's ephemeris.
URANUS_RADII_KM = (25559.0, 25559.0, 24973.0)


def resolve_sources(config: SimConfig) -> list[SourceSpec]:
    """The sources observed in this EB, after the config's flags and overrides.

    Order: flux/bandpass/phase/check calibrators then target (as in DEFAULT_SOURCES); the
    AMPLITUDE source is dropped when `with_flux_cal` is False (or keeps only BANDPASS when it is
    also the bandpass calibrator); CHECK dropped when `with_check` is False.
    """
    srcs = list(config.sources if config.sources is not None else DEFAULT_SOURCES)
    out: list[SourceSpec] = []
    if config.bandpass_is_flux_cal:
        amp = [s for s in srcs if "AMPLITUDE" in s.intents]
        srcs = [s for s in srcs if not ("BANDPASS" in s.intents and "AMPLITUDE" not in s.intents)]
        srcs = [replace(s, intents=tuple(sorted(set(s.intents) | {"BANDPASS"}))) if s in amp else s
                for s in srcs]
    for s in srcs:
        if "AMPLITUDE" in s.intents:
            if config.flux_cal_disk_diameter_arcsec is not None:
                s = replace(s, name=config.disk_cal_name, flux_jy=config.disk_cal_flux_jy,
                            spix=config.disk_cal_spix, ra_deg=DISK_CAL_RA_DEG, dec_deg=DISK_CAL_DEC_DEG,
                            disk_diameter_arcsec=float(config.flux_cal_disk_diameter_arcsec),
                            ephemeris=bool(config.with_ephemeris))
            if not config.with_flux_cal:
                rest = tuple(i for i in s.intents if i != "AMPLITUDE")
                if not rest:
                    continue
                s = replace(s, intents=rest)
        if "CHECK" in s.intents and not config.with_check:
            rest = tuple(i for i in s.intents if i != "CHECK")
            if not rest:
                continue
            s = replace(s, intents=rest)
        if s.name in config.fluxes:
            flux, spix = config.fluxes[s.name]
            s = replace(s, flux_jy=float(flux), spix=float(spix))
        if s.ref_freq_ghz is None:
            s = replace(s, ref_freq_ghz=float(config.ref_freq_ghz))
        out.append(s)
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate source names: {names}")
    return out


def gmst_rad(mjd_seconds: float | np.ndarray) -> float | np.ndarray:
    """Greenwich mean sidereal time (rad), the usual linear approximation in days since J2000."""
    d = np.asarray(mjd_seconds, float) / 86400.0 - 51544.5
    hours = 18.697374558 + 24.06570982441908 * d
    return np.mod(hours, 24.0) * (math.pi / 12.0)


def transit_start_mjd(ra_deg: float, lon_deg: float, mjd_day: int, duration_s: float) -> float:
    """Start (MJD days) of an observation of `duration_s` centred on the transit of `ra_deg`."""
    gmst0 = float(gmst_rad(mjd_day * 86400.0))
    lst0 = gmst0 + math.radians(lon_deg)
    dh = (math.radians(ra_deg) - lst0) % (2 * math.pi)  # sidereal radians until transit
    t_transit = dh / (2 * math.pi) * 86164.0905  # seconds of UT
    return mjd_day + (t_transit - duration_s / 2.0) / 86400.0


def antenna_uvw(positions: np.ndarray, ra: float, dec: float, mjd_seconds: float) -> np.ndarray:
    """UVW (n_ant, 3) m of each antenna (ITRF positions about their mean) towards (ra, dec) rad.

    Uses the Greenwich hour angle H = GMST − RA with the ECEF axes (Thompson, Moran & Swenson
    eq. 4.1 with the baseline in the Greenwich-referenced equatorial frame). A baseline's UVW is
    the difference of its antennas' rows (ANTENNA2 − ANTENNA1, the MS convention).
    """
    xyz = np.asarray(positions, float) - np.mean(positions, axis=0)
    h = float(gmst_rad(mjd_seconds)) - ra
    sh, ch = math.sin(h), math.cos(h)
    sd, cd = math.sin(dec), math.cos(dec)
    rot = np.array([[sh, ch, 0.0],
                    [-sd * ch, sd * sh, cd],
                    [cd * ch, -cd * sh, sd]])
    return xyz @ rot.T


def spectral_flux(src: SourceSpec, freq_hz: np.ndarray | float) -> np.ndarray:
    """Total Stokes I flux density (Jy) of a source at `freq_hz`."""
    return src.flux_jy * (np.asarray(freq_hz, float) / (src.ref_freq_ghz * 1e9)) ** src.spix


def disk_profile(uvdist_m: np.ndarray, freq_hz: np.ndarray, diameter_arcsec: float) -> np.ndarray:
    """2J1(x)/x of a uniform disk; `uvdist_m` (nrow,), `freq_hz` (nchan,) -> (nrow, nchan)."""
    x = math.pi * diameter_arcsec * ARCSEC * np.outer(uvdist_m, np.asarray(freq_hz, float) / C_LIGHT)
    out = np.ones_like(x)
    nz = x > 1e-12
    out[nz] = 2.0 * j1(x[nz]) / x[nz]
    return out


def source_visibility(src: SourceSpec, freq_hz: np.ndarray, uvw: np.ndarray) -> np.ndarray:
    """Parallel-hand model visibility (nrow, nchan), real, of a source at the phase centre."""
    flux = spectral_flux(src, freq_hz)
    nrow = uvw.shape[0]
    if src.disk_diameter_arcsec:
        uvdist = np.hypot(uvw[:, 0], uvw[:, 1])
        return flux[None, :] * disk_profile(uvdist, freq_hz, src.disk_diameter_arcsec)
    return np.broadcast_to(flux[None, :], (nrow, flux.size))


def disk_rho_au(diameter_arcsec: float, radii_km: tuple[float, float, float] = URANUS_RADII_KM) -> float:
    """Geocentric distance (AU) at which a body of these radii shows `diameter_arcsec` (2·R_eq/Δ)."""
    r_eq = (radii_km[0] + radii_km[1]) / 2.0
    return 2.0 * r_eq / (diameter_arcsec * ARCSEC) / AU_KM
