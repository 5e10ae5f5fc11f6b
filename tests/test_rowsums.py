"""Per-row channel sums (fluxflow.solve.rowsums) against the cube formulas they replace."""

from __future__ import annotations

import numpy as np
import pytest

from fluxflow.solve.gaincal import solve_gains
from fluxflow.solve.rowsums import RowSums, reduce_rows
from fluxflow.transfer.calvis import calvis_partials, channel_average

CORR = ("XX", "XY", "YX", "YY")


def _chunk(rng, nrow=60, nchan=16, ncorr=4, flag_frac=0.2):
    corr_on = [0, 3] if ncorr == 4 else [0, ncorr - 1]
    vis = (rng.normal(size=(nrow, nchan, ncorr)) + 1j * rng.normal(size=(nrow, nchan, ncorr))).astype(np.complex64)
    flag = rng.random((nrow, nchan, ncorr)) < flag_frac
    flag[3] = True  # a fully flagged row
    weight = rng.uniform(0.5, 2.0, size=(nrow, ncorr)).astype(np.float32)
    weight[5, 0] = 0.0
    spec = (2.0 * np.linspace(0.9, 1.1, nchan)).astype(np.complex64)
    model = np.zeros((nchan, ncorr), np.complex64)
    model[:, corr_on] = spec[:, None]
    return vis, flag, weight, model


def _cube_reference(vis, flag, weight, model):
    """The sums written out over full (row, chan, corr) cubes, in float64."""
    w = np.broadcast_to(weight[:, None, :] if weight.ndim == 2 else weight, vis.shape).astype(np.float64)
    m = np.broadcast_to(model, vis.shape).astype(np.complex128)
    v = vis.astype(np.complex128)
    usable = ~flag & (w > 0) & (m != 0) & np.isfinite(v)
    return {"sw": np.where(usable, w * np.abs(m) ** 2, 0).sum(axis=1),
            "sv": np.where(usable, w * v * np.conj(m), 0).sum(axis=1),
            "s1": np.where(~flag, v, 0).sum(axis=1), "n": (~flag).sum(axis=1),
            "wmean": w.mean(axis=1), "mabs": np.abs(m).sum(axis=1)}


@pytest.mark.parametrize("path", ["shared", "shared_complex", "unflagged", "cube_model", "spectral_weight",
                                  "nonfinite"])
def test_reduce_rows_equals_cube_sums(path):
    rng = np.random.default_rng(7)
    vis, flag, weight, model = _chunk(rng)
    if path == "shared_complex":  # not a Stokes-I spectrum: the einsum path
        model = model * np.exp(0.3j * np.arange(model.shape[1]))[None, :].astype(np.complex64)
    elif path == "unflagged":
        flag[:] = False
    elif path == "cube_model":
        model = np.broadcast_to(model, vis.shape) * rng.uniform(0.5, 1.5, size=(vis.shape[0], 1, 1))
        model = model.astype(np.complex64)
    elif path == "spectral_weight":
        weight = np.broadcast_to(weight[:, None, :], vis.shape) * rng.uniform(0.5, 1.5, vis.shape[:2])[:, :, None]
        weight = weight.astype(np.float32)
    elif path == "nonfinite":
        vis[7, 2, 0] = np.nan  # flagged: ignored everywhere; unflagged: not usable for the solve
        flag[7, 2, 0] = False
    ref = _cube_reference(vis, flag, weight, model)
    got = reduce_rows(vis.copy(), flag, weight, model)
    for k in ("sw", "sv", "n", "wmean", "mabs"):
        np.testing.assert_allclose(getattr(got, k), ref[k], rtol=2e-6, atol=1e-6, err_msg=k)
    if path != "nonfinite":
        np.testing.assert_allclose(got.s1, ref["s1"], rtol=2e-6, atol=1e-5)
    assert got.nchan == vis.shape[1]


def test_solves_on_row_sums_equal_solves_on_cubes():
    """gaincal on the one-channel cubes of RowSums gives the gains of gaincal on the full cubes."""
    rng = np.random.default_rng(3)
    n_ant, nchan, ntime = 6, 12, 10
    a1, a2 = np.triu_indices(n_ant, 1)
    nbl = a1.size
    g = np.exp(1j * rng.uniform(-1, 1, n_ant)) * rng.uniform(0.8, 1.2, n_ant)
    time = np.repeat(5e9 + 6.0 * np.arange(ntime), nbl)
    ant1, ant2 = np.tile(a1, ntime), np.tile(a2, ntime)
    scan = np.where(np.arange(time.size) < time.size // 2, 1, 2)
    spec = np.linspace(1.5, 2.5, nchan)
    model = np.zeros((nchan, 4), np.complex64)
    model[:, [0, 3]] = spec[:, None]
    true = (g[ant1] * np.conj(g[ant2]))[:, None, None] * model[None]
    vis = (true + 0.05 * (rng.normal(size=true.shape) + 1j * rng.normal(size=true.shape))).astype(np.complex64)
    flag = rng.random(vis.shape) < 0.1
    weight = rng.uniform(0.5, 2, size=(time.size, 4)).astype(np.float32)
    interval = np.full(time.size, 6.0)
    sums = reduce_rows(vis.copy(), flag, weight, model)
    v1, m1, f1, w1 = sums.solver_inputs()
    for solint, gaintype, calmode in (("int", "G", "p"), ("inf", "T", "a"), ("12s", "G", "ap")):
        kw = dict(n_ant=n_ant, corr_types=CORR, solint=solint, gaintype=gaintype, calmode=calmode,
                  refant=(0,), minblperant=2, minsnr=0.0)
        cube = solve_gains(vis, np.broadcast_to(model, vis.shape), flag, weight, time, interval, scan,
                           ant1, ant2, **kw)
        row = solve_gains(v1, m1, f1, w1, time, interval, scan, ant1, ant2, **kw)
        np.testing.assert_array_equal(row.flag, cube.flag)
        np.testing.assert_allclose(row.cparam, cube.cparam, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(row.snr, cube.snr, rtol=1e-4)


def test_channel_mean_feeds_calvis_like_the_cube():
    rng = np.random.default_rng(11)
    vis, flag, weight, model = _chunk(rng, nrow=40)
    a1 = rng.integers(0, 5, 40)
    a2 = a1 + 1
    scan = np.repeat([1, 2], 20)
    sums = reduce_rows(vis.copy(), flag, weight, model)
    vbar, fbar = sums.channel_mean()
    avg, avg_flag = channel_average(vis, flag)
    np.testing.assert_allclose(vbar[:, 0, :], avg, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fbar[:, 0, :], avg_flag)
    p_cube = calvis_partials(vis, flag, weight, a1, a2, scan, CORR)
    p_rows = calvis_partials(vbar, fbar, sums.wmean, a1, a2, scan, CORR)
    for k, v in vars(p_cube).items():
        if isinstance(v, np.ndarray):
            np.testing.assert_allclose(getattr(p_rows, k), v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_reduce_rows_is_bitwise_reproducible_whatever_the_memory_layout():
    """Same bits for the same rows whatever their alignment: workers give identical results."""
    rng = np.random.default_rng(5)
    vis, flag, weight, model = _chunk(rng, nrow=500, nchan=64)
    a = reduce_rows(vis.copy(), flag, weight, model)
    buf = np.empty(vis.nbytes + 64, np.uint8)
    off = (-buf.ctypes.data) % 32 + 8
    shifted = buf[off:off + vis.nbytes].view(np.complex64).reshape(vis.shape)
    shifted[...] = vis
    b = reduce_rows(shifted, flag, weight, model)
    for k in ("sw", "sv", "s1", "n"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k


def test_reduce_rows_is_bitwise_reproducible_whatever_the_thread_count(tmp_path):
    """The same chunk reduced in processes with 1 and 2 BLAS/OpenMP threads gives the same bits."""
    import os
    import subprocess
    import sys

    rng = np.random.default_rng(9)
    vis, flag, weight, model = _chunk(rng, nrow=20_000, nchan=128, ncorr=2)
    np.savez(tmp_path / "chunk.npz", vis=vis, flag=flag, weight=weight, model=model)
    code = ("import sys, numpy as np\n"
            "from fluxflow.solve.rowsums import reduce_rows\n"
            "d = np.load(sys.argv[1])\n"
            "r = reduce_rows(d['vis'].copy(), d['flag'], d['weight'], d['model'])\n"
            "np.savez(sys.argv[2], sv=r.sv, s1=r.s1, sw=r.sw, n=r.n)\n")
    out = []
    for threads in ("1", "2"):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        dest = tmp_path / f"out{threads}.npz"
        subprocess.run([sys.executable, "-c", code, str(tmp_path / "chunk.npz"), str(dest)], check=True, env=env)
        out.append(np.load(dest))
    for k in ("sv", "s1", "sw", "n"):
        assert np.array_equal(out[0][k], out[1][k]), k


def test_concat_and_shape_checks():
    rng = np.random.default_rng(1)
    vis, flag, weight, model = _chunk(rng, nrow=10)
    parts = [reduce_rows(vis[:4].copy(), flag[:4], weight[:4], model),
             reduce_rows(vis[4:].copy(), flag[4:], weight[4:], model)]
    whole = reduce_rows(vis.copy(), flag, weight, model)
    cat = RowSums.concat(parts, 4, vis.shape[1])
    assert cat.nrow == 10
    np.testing.assert_array_equal(cat.sv, whole.sv)
    assert RowSums.concat([], 4, 16).nrow == 0
    with pytest.raises(ValueError, match="weight"):
        reduce_rows(vis, flag, weight[:, :2], model)
    with pytest.raises(ValueError, match="model"):
        reduce_rows(vis, flag, weight, model[:3])
