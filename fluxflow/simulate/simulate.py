"""ALMA-like execution-block simulator: writes a real MS, a flux.csv catalogue and a truth JSON.

Visibilities per row, channel and correlation (Stokes I sky, cross hands 0):

    V_pq = g_{i,p}(t) · conj(g_{j,q}(t)) · S_pq(ν, uv) + noise,

    g_{a,p,s}(t) = A_{a,p,s} · (1 + D_{a,p}·(t − t_ref)/3600 h) · exp(i(φ_{a,p}(t) + ψ_{a,p,s})) · O,

with A ~ N(1, gain_amp_rms), D the optional drift, φ a random walk shared by the spws, ψ a
per-spw offset and O an injected outlier factor (1 elsewhere). Noise has σ = SEFD/sqrt(2·|Δν|·τ)
per real/imaginary part; WEIGHT = 1/σ² and SIGMA = σ per correlation (1 when noise-free).

Random numbers come from generators keyed by (seed, purpose, scan, integration), so the MS does
not depend on how rows are chunked. Rows are generated per integration and appended in chunks of
at most `max_chunk_bytes` of DATA, so memory stays bounded for multi-GB EBs.

The flux.csv follows spec §7.1; MODEL_DATA, when requested, is what hif_setmodels leaves before
hifa_gfluxscale (spec §3 preconditions): AMPLITUDE scans the catalogue model, BANDPASS scans a
model normalised to 1 Jy at the spw centre with the catalogue spix, everything else 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import numpy as np

from fluxflow.errors import WriteError
from fluxflow.models.catalogue import CURRENT_COLUMNS, CatalogueRow, read_flux_csv
from fluxflow.models.catalogue import write_flux_csv as write_catalogue
from fluxflow.ms.create import Ephemeris, MSWriter, create_ms
from fluxflow.ms.types import Antenna, Field, SpectralWindow
from fluxflow.simulate.config import CALIBRATOR_INTENTS, OBS_MODES, SimConfig, SourceSpec
from fluxflow.simulate.layout import ALMA_LON_DEG, alma_layout
from fluxflow.simulate.sky import (URANUS_RADII_KM, antenna_uvw, disk_rho_au, resolve_sources,
                                   source_visibility, spectral_flux, transit_start_mjd)

FLUX_CSV_HEADER = list(CURRENT_COLUMNS)
_DEFAULT_DAY_MJD = 60629  # 2024-11-15
_SPW_UID = "X83a7c2f1"
_WVR_FREQ_HZ = np.array([184.31e9, 185.31e9, 186.51e9, 188.11e9])
_WVR_WIDTH_HZ = np.array([0.16e9, 0.75e9, 1.25e9, 1.5e9])
_CORR_HANDS = {"XX": (0, 0), "XY": (0, 1), "YX": (1, 0), "YY": (1, 1)}


@dataclass
class SimResult:
    """Paths written by :func:`simulate_ms` and the truth dictionary (as in truth.json)."""

    ms_path: str
    flux_csv: str
    truth_json: str
    truth: dict


@dataclass
class SessionResult:
    """Outputs of :func:`simulate_session`: one combined flux.csv and one SimResult per EB."""

    outdir: str
    flux_csv: str
    results: list[SimResult] = field(default_factory=list)

    @property
    def ms_paths(self) -> list[str]:
        return [r.ms_path for r in self.results]


@dataclass(frozen=True)
class _Scan:
    number: int
    intent: str
    source: SourceSpec
    field_id: int
    state_id: int
    times: np.ndarray  # integration centres, MJD seconds
    with_extra: bool

    @property
    def start(self) -> float:
        return float(self.times[0])

    @property
    def n_int(self) -> int:
        return int(self.times.size)


@dataclass
class _SpwSetup:
    spws: list[SpectralWindow]
    science: list[int]  # science spw ids
    ch_avg: dict[int, int]  # science id -> CH_AVG id
    wvr: int | None


# ------------------------------------------------------------------------------------------------
# setup


def _build_spws(cfg: SimConfig) -> _SpwSetup:
    spws: list[SpectralWindow] = []
    science: list[int] = []
    ch_avg: dict[int, int] = {}
    wvr = None
    if cfg.with_wvr:
        wvr = 0
        spws.append(SpectralWindow(id=0, name="WVR#NOMINAL", chan_freq=_WVR_FREQ_HZ.copy(),
                                   chan_width=_WVR_WIDTH_HZ.copy(), ref_frequency=float(_WVR_FREQ_HZ[0]),
                                   total_bandwidth=float(_WVR_WIDTH_HZ.sum()), is_science=False, baseband=0))
    bw = cfg.bandwidth_ghz * 1e9
    for i, centre_ghz in enumerate(cfg.spw_centres_ghz[:cfg.n_spw]):
        centre = centre_ghz * 1e9
        lsb = cfg.lsb_negative_width and centre_ghz < cfg.lo_ghz
        width = -bw / cfg.n_chan if lsb else bw / cfg.n_chan
        chan = centre + (np.arange(cfg.n_chan) - (cfg.n_chan - 1) / 2.0) * width
        base = f"{_SPW_UID}#ALMA_RB_03#BB_{i + 1}#SW-01"
        sid = len(spws)
        spws.append(SpectralWindow(id=sid, name=base + "#FULL_RES", chan_freq=chan,
                                   chan_width=np.full(cfg.n_chan, width), ref_frequency=float(chan[0]),
                                   total_bandwidth=bw, is_science=True, baseband=i + 1))
        science.append(sid)
        if cfg.with_ch_avg:
            aid = len(spws)
            spws.append(SpectralWindow(id=aid, name=base + "#CH_AVG", chan_freq=np.array([centre]),
                                       chan_width=np.array([-bw if lsb else bw]), ref_frequency=centre,
                                       total_bandwidth=bw, is_science=False, baseband=i + 1))
            ch_avg[sid] = aid
    return _SpwSetup(spws, science, ch_avg, wvr)


def _scan_sequence(cfg: SimConfig, sources: list[SourceSpec]) -> list[tuple[str, SourceSpec, float]]:
    """(intent, source, length s) per scan, like an ALMA EB without ATMOSPHERE/pointing scans."""
    def first(intent: str) -> SourceSpec | None:
        return next((s for s in sources if intent in s.intents), None)

    bp, amp, ph, chk, tgt = (first(i) for i in ("BANDPASS", "AMPLITUDE", "PHASE", "CHECK", "TARGET"))
    seq: list[tuple[str, SourceSpec, float]] = []
    if bp is not None:
        seq.append(("BANDPASS", bp, cfg.bandpass_scan_s))
    if amp is not None:
        seq.append(("AMPLITUDE", amp, cfg.flux_scan_s))
    lengths = {"BANDPASS": cfg.bandpass_scan_s, "AMPLITUDE": cfg.flux_scan_s, "PHASE": cfg.phase_scan_s,
               "CHECK": cfg.check_scan_s, "TARGET": cfg.target_scan_s}
    scheduled = {id(s) for s in (bp, amp, ph, chk, tgt) if s is not None}
    for s in sources:  # sources the standard sequence does not cover get one scan here
        if id(s) not in scheduled:
            seq.append((s.intents[0], s, lengths.get(s.intents[0], cfg.phase_scan_s)))
    for c in range(cfg.n_cycles):
        if ph is not None:
            seq.append(("PHASE", ph, cfg.phase_scan_s))
        if tgt is not None:
            seq.append(("TARGET", tgt, cfg.target_scan_s))
        if chk is not None and c == (cfg.n_cycles - 1) // 2:
            seq.append(("CHECK", chk, cfg.check_scan_s))
    if ph is not None:
        seq.append(("PHASE", ph, cfg.phase_scan_s))
    if chk is not None and cfg.n_cycles == 0:
        seq.append(("CHECK", chk, cfg.check_scan_s))
    if not seq:
        raise ValueError("the configuration observes no source")
    return seq


def _duration(cfg: SimConfig, seq: list[tuple[str, SourceSpec, float]]) -> float:
    return sum(max(1, round(length / cfg.int_time)) * cfg.int_time for _, _, length in seq) \
        + cfg.scan_gap * (len(seq) - 1)


def _cycles_for_duration(cfg: SimConfig, sources: list[SourceSpec]) -> int:
    """Number of PHASE/TARGET cycles whose EB length is closest to `cfg.duration_s`."""
    lengths = [_duration(cfg, _scan_sequence(cfg.with_overrides(n_cycles=n), sources)) for n in (1, 2)]
    per_cycle = lengths[1] - lengths[0]
    return max(1, round(1 + (float(cfg.duration_s) - lengths[0]) / per_cycle))


def _plan(cfg: SimConfig, sources: list[SourceSpec]) -> tuple[list[_Scan], list[SourceSpec], list[str], float]:
    """Scans with times; fields in order of first observation; STATE obs modes; start (MJD s)."""
    if cfg.duration_s is not None:
        cfg = cfg.with_overrides(n_cycles=_cycles_for_duration(cfg, sources), duration_s=None)
    seq = _scan_sequence(cfg, sources)
    if cfg.start_mjd is None:
        tgt = next((s for s in sources if "TARGET" in s.intents), sources[-1])
        start_mjd = transit_start_mjd(tgt.ra_deg, ALMA_LON_DEG, _DEFAULT_DAY_MJD, _duration(cfg, seq))
        start_mjd = round(start_mjd * 86400.0) / 86400.0  # whole seconds
    else:
        start_mjd = float(cfg.start_mjd)
    t = start_mjd * 86400.0
    field_sources: list[SourceSpec] = []
    modes: list[str] = []
    scans = []
    for number, (intent, src, length) in enumerate(seq, start=1):
        if src not in field_sources:
            field_sources.append(src)
        mode = OBS_MODES.get(intent, f"{intent}#ON_SOURCE")
        if mode not in modes:
            modes.append(mode)
        n_int = max(1, round(length / cfg.int_time))
        times = t + (np.arange(n_int) + 0.5) * cfg.int_time
        extra = cfg.extra_spw_scans is None or number <= cfg.extra_spw_scans
        scans.append(_Scan(number, intent, src, field_sources.index(src), modes.index(mode), times, extra))
        t += n_int * cfg.int_time + cfg.scan_gap
    return scans, field_sources, modes, start_mjd * 86400.0


class GainModel:
    """Complex antenna gains g[a, p, s](t) of the module docstring; pure numpy, deterministic."""

    def __init__(self, cfg: SimConfig, n_ant: int, science: list[int], times: np.ndarray,
                 outliers: dict[tuple[int, int, int], float]):
        rng = np.random.default_rng([cfg.seed, 1])
        n_spw = len(science)
        self.science = list(science)
        self.amp = np.clip(1.0 + cfg.gain_amp_rms * rng.standard_normal((n_ant, 2, n_spw)), 0.05, None)
        self.drift = cfg.gain_amp_drift_rms * rng.standard_normal((n_ant, 2))
        self.offset = rng.uniform(-math.pi, math.pi, (n_ant, 2, n_spw))
        self.times = np.unique(np.asarray(times, float))
        step = math.radians(cfg.phase_rw_deg)
        dt = np.diff(self.times, prepend=self.times[0]) / cfg.int_time
        steps = rng.standard_normal((self.times.size, n_ant, 2)) * step * np.sqrt(dt)[:, None, None]
        steps[0] = rng.uniform(-math.pi, math.pi, (n_ant, 2))
        self.walk = np.cumsum(steps, axis=0)
        self.t_ref = float(self.times[0])
        self.outliers = dict(outliers)

    def gains(self, t: float, scan: int) -> np.ndarray:
        """(n_spw, n_ant, 2) complex gains at integration time `t` of scan `scan`."""
        ti = int(np.searchsorted(self.times, t))
        if ti >= self.times.size or self.times[ti] != t:
            raise KeyError(f"time {t} is not an integration time of this EB")
        amp = self.amp * (1.0 + self.drift[:, :, None] * (t - self.t_ref) / 3600.0)
        g = amp * np.exp(1j * (self.walk[ti][:, :, None] + self.offset))  # (ant, pol, spw)
        for (ant, spw, sc), factor in self.outliers.items():
            if sc == scan:
                g[ant, :, self.science.index(spw)] *= factor
        return np.transpose(g, (2, 0, 1))

    def to_json(self) -> dict:
        return {
            "model": "g = amp*(1+drift_per_hour*(t-t_ref)/3600)*exp(1j*(phase_walk[t]+spw_phase_offset))"
                     " * outlier factor; V_pq = g_ant1_p * conj(g_ant2_q) * S_pq",
            "pols": ["X", "Y"], "spw_ids": self.science, "amp": self.amp.tolist(),
            "drift_per_hour": self.drift.tolist(), "t_ref": self.t_ref, "times": self.times.tolist(),
            "phase_walk_rad": self.walk.tolist(), "spw_phase_offset_rad": self.offset.tolist(),
        }


def _ephemeris_for(src: SourceSpec, start: float, end: float) -> Ephemeris:
    """A constant-direction ephemeris spanning the EB ± 1 day, 6-hourly rows."""
    mjd0 = math.floor(start / 86400.0) - 1.0
    mjd = np.arange(mjd0, math.ceil(end / 86400.0) + 1.0 + 1e-9, 0.25)
    n = mjd.size
    rho = disk_rho_au(float(src.disk_diameter_arcsec), URANUS_RADII_KM)
    return Ephemeris(name=src.name, mjd=mjd, ra_deg=np.full(n, src.ra_deg), dec_deg=np.full(n, src.dec_deg),
                     rho_au=np.full(n, rho), radii_km=URANUS_RADII_KM)


# ------------------------------------------------------------------------------------------------
# visibilities


class _RowGenerator:
    """Generates the MAIN rows of one integration (pure numpy)."""

    def __init__(self, cfg: SimConfig, antennas: list[Antenna], setup: _SpwSetup, gains: GainModel,
                 flagged: tuple[int, int] | None):
        self.cfg = cfg
        self.positions = np.array([a.position for a in antennas])
        self.n_ant = len(antennas)
        self.a1, self.a2 = (np.array(x, np.int32) for x in zip(*[(i, j) for i in range(self.n_ant)
                                                               for j in range(i + 1, self.n_ant)]))
        self.nbl = self.a1.size
        self.setup = setup
        self.sci = [setup.spws[s] for s in setup.science]
        self.freq = np.array([s.chan_freq for s in self.sci])  # (n_spw, nchan)
        self.centre = np.array([s.centre_frequency for s in self.sci])
        sefd = cfg.effective_sefd
        self.sigma = np.array([sefd / math.sqrt(2.0 * abs(s.chan_width[0]) * cfg.int_time) if sefd > 0 else 0.0
                               for s in self.sci])
        self.corr = tuple(cfg.corr)
        self.par = np.array([c in ("XX", "YY") for c in self.corr])
        self.hand_p = np.array([_CORR_HANDS[c][0] for c in self.corr])
        self.hand_q = np.array([_CORR_HANDS[c][1] for c in self.corr])
        self.gains = gains
        self.flagged = flagged

    def _model(self, src: SourceSpec, uvw: np.ndarray) -> np.ndarray:
        """(n_spw, nbl, nchan) real parallel-hand sky visibility."""
        return np.stack([source_visibility(src, f, uvw) for f in self.freq])

    def _setmodels(self, scan: _Scan, sky: np.ndarray) -> np.ndarray:
        """hif_setmodels-like MODEL_DATA parallel-hand values (n_spw, nbl, nchan)."""
        src = scan.source
        if scan.intent == "AMPLITUDE":
            return sky
        if scan.intent == "BANDPASS":
            spix = round(src.spix, 3)
            norm = (self.freq / self.centre[:, None]) ** spix
            return np.broadcast_to(norm[:, None, :], sky.shape)
        return np.ones_like(sky)

    def rows(self, scan: _Scan, k: int) -> list[dict[str, np.ndarray]]:
        cfg = self.cfg
        t = float(scan.times[k])
        rng = np.random.default_rng([cfg.seed, 2, scan.number, k])
        src = scan.source
        ra, dec = math.radians(src.ra_deg), math.radians(src.dec_deg)
        ant_uvw = antenna_uvw(self.positions, ra, dec, t)
        uvw = ant_uvw[self.a2] - ant_uvw[self.a1]
        n_spw, nchan, ncorr = len(self.sci), self.freq.shape[1], len(self.corr)

        g = self.gains.gains(t, scan.number)  # (n_spw, n_ant, 2)
        gprod = g[:, self.a1][:, :, self.hand_p] * np.conj(g[:, self.a2][:, :, self.hand_q])  # (spw, bl, corr)
        sky = self._model(src, uvw)
        data = np.zeros((n_spw, self.nbl, nchan, ncorr), np.complex128)
        data[..., self.par] = gprod[:, :, None, self.par] * sky[..., None]
        if np.any(self.sigma > 0):
            noise = rng.standard_normal((n_spw, self.nbl, nchan, ncorr, 2), dtype=np.float32)
            data += self.sigma[:, None, None, None] * (noise[..., 0] + 1j * noise[..., 1])
            del noise
        flag = rng.random((n_spw, self.nbl, nchan, ncorr), dtype=np.float32) < cfg.flag_fraction
        if self.flagged is not None and self.flagged[1] == scan.number:
            bad = (self.a1 == self.flagged[0]) | (self.a2 == self.flagged[0])
            flag[:, bad] = True
        sig = np.where(self.sigma > 0, self.sigma, 1.0)  # (n_spw,)
        model = None
        if cfg.with_model_column:
            model = np.zeros_like(data)
            model[..., self.par] = self._setmodels(scan, sky)[..., None]

        common = {
            "FIELD_ID": scan.field_id, "STATE_ID": scan.state_id, "SCAN_NUMBER": scan.number,
        }
        sci_blocks = []
        for i, sid in enumerate(self.setup.science):
            blk = self._block(t, sid, self.a1, self.a2, uvw, data[i], flag[i],
                              np.full((self.nbl, ncorr), sig[i]), None if model is None else model[i], common)
            sci_blocks.append(blk)
        if not scan.with_extra:
            return [_concat(sci_blocks)]

        out = []
        if self.setup.wvr is not None:
            wvr_data = (30.0 + rng.standard_normal((self.n_ant, _WVR_FREQ_HZ.size, 1))).astype(np.complex128)
            ants = np.arange(self.n_ant, dtype=np.int32)
            out.append(self._block(t, self.setup.wvr, ants, ants, np.zeros((self.n_ant, 3)), wvr_data,
                                   np.zeros(wvr_data.shape, bool), np.ones((self.n_ant, 1)),
                                   None if model is None else np.ones_like(wvr_data), common))
        for i, sid in enumerate(self.setup.science):
            out.append(sci_blocks[i])
            if sid in self.setup.ch_avg:
                good = ~flag[i]
                ngood = good.sum(axis=1)  # (bl, corr)
                avg = np.where(ngood > 0, (data[i] * good).sum(axis=1) / np.maximum(ngood, 1), 0.0)
                s_avg = sig[i] / np.sqrt(np.maximum(ngood, 1)) if self.sigma[i] > 0 else np.ones(ngood.shape)
                m_avg = None if model is None else model[i].mean(axis=1)[:, None, :]
                out.append(self._block(t, self.setup.ch_avg[sid], self.a1, self.a2, uvw, avg[:, None, :],
                                       (ngood == 0)[:, None, :], s_avg, m_avg, common))
        return out

    def _block(self, t: float, spw: int, a1: np.ndarray, a2: np.ndarray, uvw: np.ndarray, data: np.ndarray,
               flag: np.ndarray, sigma: np.ndarray, model: np.ndarray | None, common: dict) -> dict:
        n = a1.size
        weight = (1.0 / sigma**2).astype(np.float32)
        blk = {
            "TIME": np.full(n, t), "INTERVAL": np.full(n, self.cfg.int_time),
            "EXPOSURE": np.full(n, self.cfg.int_time), "ANTENNA1": a1, "ANTENNA2": a2,
            "DATA_DESC_ID": np.full(n, spw, np.int32), "UVW": uvw,
            "DATA": data.astype(np.complex64), "FLAG": flag, "FLAG_ROW": flag.reshape(n, -1).all(axis=1),
            "WEIGHT": weight, "SIGMA": sigma.astype(np.float32),
        }
        for key, value in common.items():
            blk[key] = np.full(n, value, np.int32)
        if model is not None:
            blk["MODEL_DATA"] = model.astype(np.complex64)
        if self.cfg.with_weight_spectrum:
            blk["WEIGHT_SPECTRUM"] = np.broadcast_to(weight[:, None, :], data.shape).astype(np.float32)
        return blk


def _concat(blocks: list[dict]) -> dict:
    if len(blocks) == 1:
        return blocks[0]
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


class _ChunkBuffer:
    """Collects row blocks of one DATA shape and appends them in chunks of <= max_bytes of DATA."""

    def __init__(self, writer: MSWriter, max_bytes: int):
        self.writer = writer
        self.max_bytes = max(1, int(max_bytes))
        self.blocks: list[dict] = []
        self.nbytes = 0
        self.shape: tuple | None = None

    def add(self, block: dict) -> None:
        shape = block["DATA"].shape[1:]
        if self.blocks and shape != self.shape:
            self.flush()
        if self.blocks and self.nbytes + block["DATA"].nbytes > self.max_bytes:
            self.flush()
        self.blocks.append(block)
        self.shape = shape
        self.nbytes += block["DATA"].nbytes

    def flush(self) -> None:
        if self.blocks:
            self.writer.append(_concat(self.blocks))
        self.blocks, self.nbytes = [], 0


# ------------------------------------------------------------------------------------------------
# catalogue and truth


def _utc(mjd_seconds: float) -> datetime:
    return datetime(1858, 11, 17, tzinfo=timezone.utc) + timedelta(seconds=float(mjd_seconds))


def _catalogue_factor(cfg: SimConfig, src: SourceSpec) -> float:
    if "AMPLITUDE" in src.intents:
        return 1.0
    if isinstance(cfg.catalogue_error, dict):
        return float(cfg.catalogue_error.get(src.name, 1.0))
    return float(cfg.catalogue_error)


def _catalogue_rows(cfg: SimConfig, ms_name: str, field_sources: list[SourceSpec], setup: _SpwSetup,
                    start: float, field_intents: dict[int, set[str]]) -> list[CatalogueRow]:
    """flux.csv rows (spec §7.1) for every calibrator field and science spw."""
    rng = np.random.default_rng([cfg.seed, 3])
    queried = _utc(start).strftime("%Y-%m-%d %H:%M:%S") + " UTC"
    rows = []
    for fid, src in enumerate(field_sources):
        intents = field_intents[fid]
        age = round(float(rng.uniform(1.0, 30.0)), 1)
        if not intents & set(CALIBRATOR_INTENTS):
            continue
        factor = _catalogue_factor(cfg, src)
        comment = f"# field={src.name} intents={','.join(sorted(intents))} origin=DB age={age} queried_at={queried}"
        for sid in setup.science:
            centre = setup.spws[sid].centre_frequency
            flux = float(spectral_flux(src, centre)) * factor
            rows.append(CatalogueRow(ms=ms_name, field_id=fid, spw_id=sid, I=flux,
                                     spix=round(src.spix, 3), comment=comment))
    return rows


def write_flux_csv(path: str, rows: list[CatalogueRow]) -> str:
    """Write flux.csv rows in the current layout (spec §7.1); returns `path`."""
    write_catalogue(path, rows)
    return path


def _truth(cfg: SimConfig, ms_path: str, antennas: list[Antenna], setup: _SpwSetup, scans: list[_Scan],
           field_sources: list[SourceSpec], modes: list[str], gains: GainModel, gen: _RowGenerator,
           flagged: tuple[int, int] | None, outliers: dict, cat_rows: list[CatalogueRow]) -> dict:
    field_intents: dict[int, set[str]] = {i: set() for i in range(len(field_sources))}
    for sc in scans:
        field_intents[sc.field_id].add(sc.intent)
    catalogue: dict[str, dict[str, float]] = {}
    for row in cat_rows:
        catalogue.setdefault(field_sources[row.field_id].name, {})[str(row.spw_id)] = row.I
    spws = {}
    for s in setup.spws:
        kind = "science" if s.is_science else ("wvr" if s.id == setup.wvr else "ch_avg")
        spws[str(s.id)] = {"name": s.name, "kind": kind, "is_science": s.is_science,
                           "centre_hz": s.centre_frequency, "chan_freq_hz": s.chan_freq.tolist(),
                           "chan_width_hz": s.chan_width.tolist()}
    fields = {}
    for fid, src in enumerate(field_sources):
        fields[src.name] = {
            "id": fid, "intents": sorted(field_intents[fid]), "flux_jy_ref": src.flux_jy,
            "ref_freq_hz": src.ref_freq_ghz * 1e9, "spix": src.spix, "ra_deg": src.ra_deg,
            "dec_deg": src.dec_deg, "disk_diameter_arcsec": src.disk_diameter_arcsec,
            "ephemeris": bool(src.ephemeris),
            "flux": {str(sid): float(spectral_flux(src, setup.spws[sid].centre_frequency))
                             for sid in setup.science},
            "catalogue": catalogue.get(src.name, {}),
            "catalogue_factor": _catalogue_factor(cfg, src),
        }
    names = [a.name for a in antennas]
    return {
        "ms": os.path.basename(ms_path), "ms_path": ms_path, "seed": cfg.seed,
        "antennas": [{"id": a.id, "name": a.name, "station": a.station, "position": a.position.tolist(),
                      "diameter": a.diameter} for a in antennas],
        "corr": list(cfg.corr),
        "spws": spws, "science_spws": list(setup.science),
        "fields": fields,
        "scans": [{"number": sc.number, "field_id": sc.field_id, "field": sc.source.name, "intent": sc.intent,
                   "obs_mode": modes[sc.state_id], "state_id": sc.state_id, "n_int": sc.n_int,
                   "start": sc.start - cfg.int_time / 2, "end": float(sc.times[-1]) + cfg.int_time / 2,
                   "extra_spws": sc.with_extra} for sc in scans],
        "gains": gains.to_json(),
        "outliers": [{"antenna": a, "antenna_name": names[a], "spw": s, "scan": sc, "factor": f}
                     for (a, s, sc), f in outliers.items()],
        "flags": {"fraction": cfg.flag_fraction,
                  "antenna_scan": None if flagged is None else
                  {"antenna": flagged[0], "antenna_name": names[flagged[0]], "scan": flagged[1]}},
        "noise": {"sefd": cfg.effective_sefd, "int_time": cfg.int_time,
                  "sigma_per_spw": {str(sid): float(s) for sid, s in zip(setup.science, gen.sigma)}},
        "observation": {"start": scans[0].start - cfg.int_time / 2,
                        "end": float(scans[-1].times[-1]) + cfg.int_time / 2},
        "config": _jsonable(cfg.to_json()),
    }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# ------------------------------------------------------------------------------------------------
# public API


def _resolve_flagged(cfg: SimConfig, scans: list[_Scan]) -> tuple[int, int] | None:
    if cfg.flagged_antenna_scan is None:
        return None
    if cfg.flagged_antenna_scan == "auto":
        ant = int(np.random.default_rng([cfg.seed, 4]).integers(cfg.n_ant))
        phase = [sc.number for sc in scans if sc.intent == "PHASE"]
        return ant, (phase[1] if len(phase) > 1 else (phase or [scans[-1].number])[0])
    ant, scan = (int(x) for x in cfg.flagged_antenna_scan)
    if not 0 <= ant < cfg.n_ant or scan not in {sc.number for sc in scans}:
        raise ValueError(f"flagged_antenna_scan {cfg.flagged_antenna_scan}: no such antenna/scan")
    return ant, scan


def _resolve_outliers(cfg: SimConfig, scans: list[_Scan], science: list[int]) -> dict[tuple[int, int, int], float]:
    out = {}
    numbers = {sc.number for sc in scans}
    for ant, spw, scan, factor in cfg.outliers:
        if not 0 <= int(ant) < cfg.n_ant:
            raise ValueError(f"outlier antenna {ant} not in 0..{cfg.n_ant - 1}")
        if int(spw) not in science:
            raise ValueError(f"outlier spw {spw} is not a science spw {science}")
        if int(scan) not in numbers:
            raise ValueError(f"outlier scan {scan} does not exist (scans 1..{len(scans)})")
        key = (int(ant), int(spw), int(scan))
        out[key] = out.get(key, 1.0) * float(factor)
    return out


def _default_sidecar(ms_path: str, suffix: str) -> str:
    base = ms_path.rstrip("/")
    stem = base[:-3] if base.endswith(".ms") else base
    return stem + suffix


def simulate_ms(path: str, config: SimConfig | None = None, *, flux_csv: str | None = None,
                truth_json: str | None = None, overwrite: bool = False, **overrides: Any) -> SimResult:
    """Simulate one EB into the MS at `path`; write flux.csv and truth.json next to it.

    `overrides` replace SimConfig fields (e.g. ``n_ant=43``). Defaults for the side files:
    ``<ms stem>.flux.csv`` and ``<ms stem>.truth.json`` in the MS's directory.
    """
    cfg = (config or SimConfig()).with_overrides(**overrides)
    ms_path = os.path.abspath(path)
    flux_csv = os.path.abspath(flux_csv or _default_sidecar(ms_path, ".flux.csv"))
    truth_json = os.path.abspath(truth_json or _default_sidecar(ms_path, ".truth.json"))
    if os.path.exists(ms_path) and not overwrite:
        raise WriteError(f"{ms_path} exists; pass overwrite=True to replace it")
    os.makedirs(os.path.dirname(ms_path), exist_ok=True)

    antennas = alma_layout(cfg.n_ant, cfg.dish, cfg.layout_seed, cfg.max_baseline_m)
    setup = _build_spws(cfg)
    sources = resolve_sources(cfg)
    scans, field_sources, modes, start = _plan(cfg, sources)
    end = float(scans[-1].times[-1]) + cfg.int_time / 2
    outliers = _resolve_outliers(cfg, scans, setup.science)
    flagged = _resolve_flagged(cfg, scans)
    gains = GainModel(cfg, cfg.n_ant, setup.science, np.concatenate([sc.times for sc in scans]), outliers)
    gen = _RowGenerator(cfg, antennas, setup, gains, flagged)

    fields, ephemerides = [], {}
    for fid, src in enumerate(field_sources):
        eph_id = -1
        if src.ephemeris and src.disk_diameter_arcsec:
            eph_id = len(ephemerides)
            ephemerides[fid] = _ephemeris_for(src, start, end)
        fields.append(Field(id=fid, name=src.name, direction=np.radians([src.ra_deg, src.dec_deg]),
                            source_id=fid, ephemeris_id=eph_id))
    observation = {"telescope": "ALMA", "observer": cfg.observer, "project": cfg.project,
                   "time_range": (start, end), "schedule": [f"SchedulingBlock fluxflow-sim seed={cfg.seed}"]}
    per_spw = {setup.wvr: ("I",)} if setup.wvr is not None else {}
    create_ms(ms_path, antennas, setup.spws, tuple(cfg.corr), fields, modes, observation,
              with_weight_spectrum=cfg.with_weight_spectrum, with_model_column=cfg.with_model_column,
              overwrite=overwrite, corr_types_per_spw=per_spw, ephemerides=ephemerides)

    with MSWriter(ms_path) as writer:
        buf = _ChunkBuffer(writer, cfg.max_chunk_bytes)
        for block in _iter_blocks(gen, scans):
            buf.add(block)
        buf.flush()

    field_intents: dict[int, set[str]] = {i: set() for i in range(len(field_sources))}
    for sc in scans:
        field_intents[sc.field_id].add(sc.intent)
    cat_rows = _catalogue_rows(cfg, os.path.basename(ms_path), field_sources, setup, start, field_intents)
    write_flux_csv(flux_csv, cat_rows)
    truth = _truth(cfg, ms_path, antennas, setup, scans, field_sources, modes, gains, gen, flagged,
                   outliers, cat_rows)
    truth["flux_csv"] = flux_csv
    with open(truth_json, "w") as fh:
        json.dump(truth, fh, indent=1)
    return SimResult(ms_path=ms_path, flux_csv=flux_csv, truth_json=truth_json, truth=truth)


def _iter_blocks(gen: _RowGenerator, scans: list[_Scan]) -> Iterator[dict]:
    for sc in scans:
        for k in range(sc.n_int):
            yield from gen.rows(sc, k)


def simulate_session(outdir: str, n_ebs: int = 3, config: SimConfig | None = None, *,
                     overwrite: bool = False, **overrides: Any) -> SessionResult:
    """Several EBs of one session: same sky and array, seeds seed+k, consecutive in time.

    The last EB has no flux calibrator (AMPLITUDE scans dropped) when n_ebs > 1. Each EB gets its
    own ``.flux.csv``/``.truth.json``; ``<outdir>/flux.csv`` combines the rows of all EBs.
    """
    if n_ebs < 1:
        raise ValueError("n_ebs must be >= 1")
    cfg = (config or SimConfig()).with_overrides(**overrides)
    outdir = os.path.abspath(outdir)
    os.makedirs(outdir, exist_ok=True)
    stem = cfg.name or f"uid___A002_Xsim{cfg.seed:x}"
    results: list[SimResult] = []
    start_mjd = cfg.start_mjd
    for k in range(n_ebs):
        eb_cfg = cfg.with_overrides(seed=cfg.seed + k, start_mjd=start_mjd,
                                    with_flux_cal=cfg.with_flux_cal and not (n_ebs > 1 and k == n_ebs - 1))
        res = simulate_ms(os.path.join(outdir, f"{stem}_X{k + 1:x}.ms"), eb_cfg, overwrite=overwrite)
        results.append(res)
        start_mjd = (res.truth["observation"]["end"] + 600.0) / 86400.0
    rows = [r for res in results for r in read_flux_csv(res.flux_csv)]
    combined = write_flux_csv(os.path.join(outdir, "flux.csv"), rows)
    return SessionResult(outdir=outdir, flux_csv=combined, results=results)


# ------------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``fluxflow simulate`` (also used by :func:`main`)."""
    parser.add_argument("out", help="output MS path (a directory with --session)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--benchmark", action="store_true",
                        help="43 antennas, 4x128 channels, ~1 h (about 4.4 GB)")
    parser.add_argument("--n-ant", type=int)
    parser.add_argument("--dish", type=float)
    parser.add_argument("--n-spw", type=int)
    parser.add_argument("--n-chan", type=int)
    parser.add_argument("--full-pol", action="store_true", help="XX,XY,YX,YY instead of XX,YY")
    parser.add_argument("--int-time", type=float)
    parser.add_argument("--n-cycles", type=int)
    parser.add_argument("--no-check", action="store_true")
    parser.add_argument("--no-flux-cal", action="store_true")
    parser.add_argument("--bandpass-is-flux-cal", action="store_true")
    parser.add_argument("--disk", type=float, metavar="ARCSEC", help="uniform-disk flux calibrator diameter")
    parser.add_argument("--ephemeris", action="store_true", help="ephemeris table for the disk calibrator")
    parser.add_argument("--sefd", type=float, help="Jy; 0 = noise-free")
    parser.add_argument("--flag-fraction", type=float)
    parser.add_argument("--catalogue-error", type=float)
    parser.add_argument("--model-column", action="store_true")
    parser.add_argument("--session", type=int, metavar="N_EBS", help="write N EBs of one session into OUT/")
    parser.add_argument("--flux-csv")
    parser.add_argument("--truth-json")
    parser.add_argument("--overwrite", action="store_true")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """SimConfig from parsed :func:`add_arguments` options."""
    over: dict[str, Any] = {"seed": args.seed}
    for opt, name in (("n_ant", "n_ant"), ("dish", "dish"), ("n_spw", "n_spw"), ("n_chan", "n_chan"),
                      ("int_time", "int_time"), ("n_cycles", "n_cycles"), ("sefd", "sefd"),
                      ("flag_fraction", "flag_fraction"), ("catalogue_error", "catalogue_error"),
                      ("disk", "flux_cal_disk_diameter_arcsec")):
        if getattr(args, opt) is not None:
            over[name] = getattr(args, opt)
    if args.full_pol:
        over["corr"] = ("XX", "XY", "YX", "YY")
    if args.no_check:
        over["with_check"] = False
    if args.no_flux_cal:
        over["with_flux_cal"] = False
    if args.bandpass_is_flux_cal:
        over["bandpass_is_flux_cal"] = True
    if args.ephemeris:
        over["with_ephemeris"] = True
    if args.model_column:
        over["with_model_column"] = True
    return SimConfig.benchmark(**over) if args.benchmark else SimConfig(**over)


def run(args: argparse.Namespace) -> int:
    """Execute ``fluxflow simulate`` for parsed arguments; prints the outputs."""
    cfg = config_from_args(args)
    if args.session:
        res = simulate_session(args.out, n_ebs=args.session, config=cfg, overwrite=args.overwrite)
        for r in res.results:
            print(f"{r.ms_path}\n  truth: {r.truth_json}")
        print(f"flux.csv: {res.flux_csv}")
    else:
        r = simulate_ms(args.out, cfg, flux_csv=args.flux_csv, truth_json=args.truth_json,
                        overwrite=args.overwrite)
        print(f"{r.ms_path}\n  flux.csv: {r.flux_csv}\n  truth: {r.truth_json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point with the options of :func:`add_arguments`; returns the exit code."""
    parser = argparse.ArgumentParser(prog="fluxflow simulate", description="Simulate an ALMA-like EB")
    add_arguments(parser)
    return run(parser.parse_args(argv))
