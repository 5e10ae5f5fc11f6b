"""fluxflow: ALMA hifa_gfluxscale flux-scale transfer for many MeasurementSets, on Dask.

    >>> import fluxflow
    >>> res = fluxflow.gfluxscale(vis=["uid_A.ms", "uid_B.ms"], refant="DA41")
    >>> res.fluxes()          # pandas DataFrame of derived / calibrated / catalogue fluxes
"""

__version__ = "0.1.0"

__all__ = ["gfluxscale", "Params", "Results", "simulate_ms", "__version__"]


def __getattr__(name):  # lazy: `import fluxflow` stays cheap (no dask/casacore import)
    if name == "gfluxscale":
        from fluxflow.workflow import gfluxscale

        return gfluxscale
    if name == "Params":
        from fluxflow.params import Params

        return Params
    if name == "Results":
        from fluxflow.results import Results

        return Results
    if name == "simulate_ms":
        from fluxflow.simulate import simulate_ms

        return simulate_ms
    raise AttributeError(name)
