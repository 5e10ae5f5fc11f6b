"""Field ephemeris tables (FIELD/EPHEM<id>_<name>.tab): the apparent size of a solar-system body.

Spec §4 step 2 takes the body size from CASA's solar-system helper; ALMA MSs of ephemeris objects
carry the same information in the field's ephemeris table (``radii`` keyword in km, geocentric
distance column ``Rho`` in AU, optional sub-observer latitude ``DiskLat`` in degrees), which is
what fluxflow reads.
"""

from __future__ import annotations

import numpy as np

from fluxflow.errors import FluxflowError


def read_ephemeris(table_path: str, mjd: float) -> tuple[np.ndarray, float, float] | None:
    """(radii_km (3,), geocentric distance AU, sub-observer latitude rad) at `mjd` (days), or None
    when the table lacks the radii or the distance."""
    from casacore.tables import table

    try:
        with table(table_path, ack=False) as t:
            kw = t.getkeywords()
            radii = kw.get("radii")
            if isinstance(radii, dict):
                radii = radii.get("value")
            if radii is None or "Rho" not in t.colnames() or t.nrows() == 0:
                return None
            times = t.getcol("MJD")
            rho = t.getcol("Rho")
            lat = t.getcol("DiskLat") if "DiskLat" in t.colnames() else np.zeros_like(rho)
    except RuntimeError as exc:
        raise FluxflowError(f"cannot read ephemeris table {table_path}: {exc}") from exc
    dist = float(np.interp(mjd, times, rho))
    sub_lat = float(np.deg2rad(np.interp(mjd, times, lat)))
    return np.asarray(radii, float), dist, sub_lat
