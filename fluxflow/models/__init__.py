"""Flux catalogue (flux.csv), flux measurements and calibrator visibility models (spec §7)."""

from fluxflow.models.catalogue import (
    CURRENT_COLUMNS,
    EXTERNAL_ORIGINS,
    ORIGIN_ANALYSIS_UTILS,
    ORIGIN_DB,
    ORIGIN_XML,
    CatalogueRow,
    FluxMeasurement,
    catalogue_lookup,
    make_comment,
    read_flux_csv,
    write_flux_csv,
)
from fluxflow.models.sky import (
    disk_model,
    normalised_bandpass_model,
    point_model,
    to_correlations,
    unit_model,
)

__all__ = [
    "CURRENT_COLUMNS", "EXTERNAL_ORIGINS", "ORIGIN_ANALYSIS_UTILS", "ORIGIN_DB", "ORIGIN_XML",
    "CatalogueRow", "FluxMeasurement", "catalogue_lookup", "make_comment", "read_flux_csv",
    "write_flux_csv", "disk_model", "normalised_bandpass_model", "point_model", "to_correlations",
    "unit_model",
]
