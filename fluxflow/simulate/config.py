"""Configuration of the ALMA-like simulator: :class:`SimConfig` and :class:`SourceSpec`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

#: Pipeline intent -> STATE.OBS_MODE string written for scans with that intent (spec §15).
OBS_MODES = {
    "BANDPASS": "CALIBRATE_BANDPASS#ON_SOURCE,CALIBRATE_WVR#ON_SOURCE",
    "AMPLITUDE": "CALIBRATE_FLUX#ON_SOURCE,CALIBRATE_WVR#ON_SOURCE",
    "PHASE": "CALIBRATE_PHASE#ON_SOURCE,CALIBRATE_WVR#ON_SOURCE",
    "CHECK": "OBSERVE_CHECK_SOURCE#ON_SOURCE",
    "TARGET": "OBSERVE_TARGET#ON_SOURCE",
}

#: Calibrator intents that get flux.csv rows (spec §7.1).
CALIBRATOR_INTENTS = ("AMPLITUDE", "BANDPASS", "PHASE", "CHECK")


@dataclass(frozen=True)
class SourceSpec:
    """One sky source: Stokes I `flux_jy` at `ref_freq_ghz` with S ∝ ν^spix.

    `disk_diameter_arcsec` makes it a uniform disk (V = S·2J1(x)/x, x = π θ |uv|/λ);
    `ephemeris` gives its field an ephemeris table (only meaningful for a disk).
    `ref_freq_ghz` None means the config's `ref_freq_ghz`.
    """

    name: str
    intents: tuple[str, ...]
    flux_jy: float
    spix: float
    ra_deg: float
    dec_deg: float
    ref_freq_ghz: float | None = None
    disk_diameter_arcsec: float | None = None
    ephemeris: bool = False


#: Default sky (flux at 100 GHz, spectral index) — ALMA grid-style quasars around RA 5h.
DEFAULT_SOURCES = (
    SourceSpec("J0423-0120", ("AMPLITUDE",), 1.0, -0.6, 65.8158363, -1.3425182),
    SourceSpec("J0522-3627", ("BANDPASS",), 4.0, -0.3, 80.7416027, -36.4585698),
    SourceSpec("J0510+1800", ("PHASE",), 0.8, -0.7, 77.5098708, 18.0115500),
    SourceSpec("J0502+1338", ("CHECK",), 0.3, -0.5, 75.6384121, 13.6363769),
    SourceSpec("NGC1808", ("TARGET",), 0.05, 0.0, 76.9264167, -37.5130500),
)

#: Uranus-like direction used when the flux calibrator is a disk.
DISK_CAL_RA_DEG = 52.6
DISK_CAL_DEC_DEG = 18.5


@dataclass(frozen=True)
class SimConfig:
    """Everything that defines one simulated execution block (EB); deterministic for `seed`.

    Spws: `n_spw` science windows of `n_chan` channels over `bandwidth_ghz` centred on
    `spw_centres_ghz`; windows below `lo_ghz` are lower sideband (negative CHAN_WIDTH, as ALMA
    writes them, if `lsb_negative_width`). `with_wvr` adds spw 0 'WVR#NOMINAL' (4 chans, corr I,
    auto-correlations); `with_ch_avg` adds a 1-channel '#CH_AVG' window after each science window.
    Those extra windows get rows only in the first `extra_spw_scans` scans (None = every scan).

    Scans: BANDPASS, AMPLITUDE (if `with_flux_cal`), then `n_cycles` × (PHASE, TARGET), a CHECK
    scan after the middle cycle (if `with_check`) and a closing PHASE scan. `duration_s`, if set,
    replaces `n_cycles` by the number of cycles that brings the EB closest to that length.
    `bandpass_is_flux_cal` observes the flux calibrator for the BANDPASS scan too (a reference
    field with a transfer intent, spec §3.2). `flux_cal_disk_diameter_arcsec` replaces the flux
    calibrator by a uniform disk named `disk_cal_name` (`with_ephemeris` adds its ephemeris table).

    Corruptions (spec-independent): gain amplitude per (antenna, pol, spw) ~ N(1, gain_amp_rms),
    optional linear drift (fraction per hour, rms over antennas/pols), phase random walk
    `phase_rw_deg` per integration per (antenna, pol) plus a per-spw offset; thermal noise
    σ = sefd/sqrt(2·|Δν|·τ) per real/imaginary part (sefd None: 2500 Jy·(12/dish)², 0: noise-free);
    random flags of a fraction of (row, chan, corr) and one antenna flagged in one scan
    (`flagged_antenna_scan`: 'auto', (antenna id, scan number) or None); `outliers`: (antenna id,
    spw id, scan number, factor) multiplying that antenna's gain.
    `catalogue_error`: factor applied to the flux.csv values of non-AMPLITUDE calibrators (a float
    or a dict field name -> factor).

    Output: `name` is the base name of the EB MSs of :func:`simulate_session`; `layout_seed` fixes
    the array (shared by all EBs); `max_chunk_bytes` bounds the DATA bytes per MS append.
    """

    seed: int = 1
    name: str | None = None
    # array
    n_ant: int = 12
    dish: float = 12.0
    layout_seed: int = 2024
    max_baseline_m: float | None = None
    # spectral setup
    n_spw: int = 4
    n_chan: int = 16
    spw_centres_ghz: tuple[float, ...] = (90.5, 92.5, 102.5, 104.5)
    bandwidth_ghz: float = 1.875
    lo_ghz: float = 97.5
    lsb_negative_width: bool = True
    with_wvr: bool = True
    with_ch_avg: bool = True
    extra_spw_scans: int | None = 2
    corr: tuple[str, ...] = ("XX", "YY")
    # timing
    start_mjd: float | None = None
    int_time: float = 6.0
    scan_gap: float = 12.0
    bandpass_scan_s: float = 60.0
    flux_scan_s: float = 60.0
    phase_scan_s: float = 30.0
    target_scan_s: float = 60.0
    check_scan_s: float = 30.0
    n_cycles: int = 3
    duration_s: float | None = None
    # sky
    with_check: bool = True
    with_flux_cal: bool = True
    bandpass_is_flux_cal: bool = False
    flux_cal_disk_diameter_arcsec: float | None = None
    disk_cal_name: str = "Uranus"
    disk_cal_flux_jy: float = 8.0
    disk_cal_spix: float = 1.9
    with_ephemeris: bool = False
    sources: tuple[SourceSpec, ...] | None = None
    fluxes: dict[str, tuple[float, float]] = field(default_factory=dict)
    ref_freq_ghz: float = 100.0
    # corruptions
    gain_amp_rms: float = 0.1
    gain_amp_drift_rms: float = 0.0
    phase_rw_deg: float = 1.0
    sefd: float | None = None
    flag_fraction: float = 0.01
    flagged_antenna_scan: tuple[int, int] | str | None = "auto"
    outliers: tuple[tuple[int, int, int, float], ...] = ()
    catalogue_error: float | dict[str, float] = 1.0
    # output
    with_model_column: bool = False
    with_weight_spectrum: bool = False
    observer: str = "fluxflow"
    project: str = "2024.1.00001.S"
    max_chunk_bytes: int = 64 * 2**20

    def __post_init__(self) -> None:
        if self.n_ant < 2:
            raise ValueError("n_ant must be >= 2")
        if self.n_spw < 1 or self.n_spw > len(self.spw_centres_ghz):
            raise ValueError(f"n_spw={self.n_spw} needs as many spw_centres_ghz (have {len(self.spw_centres_ghz)})")
        if self.n_chan < 1:
            raise ValueError("n_chan must be >= 1")
        if tuple(self.corr) not in (("XX", "YY"), ("XX", "XY", "YX", "YY")):
            raise ValueError(f"corr must be ('XX','YY') or ('XX','XY','YX','YY'), got {self.corr}")
        if self.int_time <= 0:
            raise ValueError("int_time must be > 0")
        if not 0.0 <= self.flag_fraction < 1.0:
            raise ValueError("flag_fraction must be in [0, 1)")
        if self.with_ephemeris and self.flux_cal_disk_diameter_arcsec is None and not any(
                s.ephemeris for s in (self.sources or ())):
            raise ValueError("with_ephemeris needs a disk flux calibrator (flux_cal_disk_diameter_arcsec)")

    @property
    def effective_sefd(self) -> float:
        """SEFD in Jy: the configured value or 2500 Jy scaled by collecting area for 7 m dishes."""
        return 2500.0 * (12.0 / self.dish) ** 2 if self.sefd is None else float(self.sefd)

    def with_overrides(self, **overrides: Any) -> "SimConfig":
        """A copy with fields replaced; unknown names raise TypeError."""
        known = {f.name for f in fields(self)}
        bad = sorted(set(overrides) - known)
        if bad:
            raise TypeError(f"unknown SimConfig field(s): {', '.join(bad)}")
        return replace(self, **overrides)

    @classmethod
    def benchmark(cls, **overrides: Any) -> "SimConfig":
        """A ~1 h, 43-antenna, 4×128-channel EB (about 4.4 GB of DATA)."""
        base = cls(n_ant=43, n_chan=128, bandpass_scan_s=300.0, flux_scan_s=180.0,
                   phase_scan_s=40.0, target_scan_s=450.0, check_scan_s=60.0, n_cycles=6)
        return base.with_overrides(**overrides)

    def to_json(self) -> dict:
        """Plain JSON-able dict of the configuration (tuples become lists)."""
        return asdict(self)
