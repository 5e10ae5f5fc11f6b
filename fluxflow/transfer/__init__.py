"""Flux-transfer kernels (pure numpy/scipy): fluxscale (spec §6), calibrated-visibility fluxes
(§8), the resolved-calibrator rule (§4), QA (§10, §14) and adopted session fluxes (§12)."""

from fluxflow.models.catalogue import FluxMeasurement
from fluxflow.transfer.adopted import adopt_session_fluxes
from fluxflow.transfer.calvis import (
    CalvisPartials,
    calvis_flux,
    calvis_flux_direct,
    calvis_partials,
    channel_average,
    select_correlations,
)
from fluxflow.transfer.fluxscale import (
    FluxscaleEntry,
    FluxscaleResult,
    SpectralFit,
    casacore_median,
    fluxscale,
    spectral_fit,
)
from fluxflow.transfer.qa import (
    QAScore,
    amp_time_score,
    amp_time_series,
    amp_time_spw_candidates,
    amp_time_variation,
    external_catalogue,
    linear_score,
    list_unity_message,
    regression_keys,
    score_amp_time_variation,
    score_derived_fluxes_snr,
    score_gfluxscale_k_spw,
    score_missing_derived_fluxes,
    select_reference_spw,
    snr_from_measurements,
    stage_score,
)
from fluxflow.transfer.resolved import (
    ResolvedSelection,
    disk_diameter_from_ephemeris,
    filter_refants,
    resolve_selection,
    resolved_antennas,
)

__all__ = [
    "FluxMeasurement", "adopt_session_fluxes",
    "CalvisPartials", "calvis_flux", "calvis_flux_direct", "calvis_partials", "channel_average",
    "select_correlations",
    "FluxscaleEntry", "FluxscaleResult", "SpectralFit", "casacore_median", "fluxscale", "spectral_fit",
    "QAScore", "amp_time_score", "amp_time_series", "amp_time_spw_candidates", "amp_time_variation",
    "external_catalogue", "linear_score", "list_unity_message", "regression_keys",
    "score_amp_time_variation", "score_derived_fluxes_snr", "score_gfluxscale_k_spw",
    "score_missing_derived_fluxes", "select_reference_spw", "snr_from_measurements", "stage_score",
    "ResolvedSelection", "disk_diameter_from_ephemeris", "filter_refants", "resolve_selection",
    "resolved_antennas",
]
