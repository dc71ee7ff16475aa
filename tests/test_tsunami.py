"""Verification of the planar shallow-water ("tsunami") simulator.

Invariants (volume), an analytic solution (d'Alembert pulses: wave speed and shape),
convergence with resolution, equivalences (batched = single, float32 ~ float64,
advance = trajectory), the random initial perturbation, netCDF round trip and the errors.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
import xarray as xr

import xldensf as xl
from xldensf.simulators.relief import regional_depth
from xldensf.simulators.tsunami import TsunamiConfig, cell_centres

CENTRES = {"x0": [-2.0e5, -3.5e5], "y0": [-1.0e5, -4.0e5]}


def relative_volume_drift(model, frames: torch.Tensor) -> float:
    """max_t |V(t) - V(0)| / V(0) over runs, V = total water volume."""
    volume = model.total_volume(frames)
    return float(((volume - volume[:, :1]).abs() / volume[:, :1]).max())


def anomaly_volume_drift(model, frames: torch.Tensor) -> float:
    """max_t |sum eta(t) - sum eta(0)| / sum eta(0): the drift relative to the bump volume,
    which is 1e5 times stricter than relative to the whole basin."""
    eta_sum = frames[:, :, 2].sum(dim=(-2, -1))
    return float(((eta_sum - eta_sum[:, :1]).abs() / eta_sum[:, :1].abs()).max())


def test_small_dataset_is_cf_and_matches_the_paper_layout():
    ds = xl.simulate("tsunami", parameters=CENTRES, preset="small", n_outputs=3)
    assert ds["eta"].dims == ("run", "time", "y", "x")
    assert ds.sizes == {"run": 2, "time": 3, "y": 64, "x": 64}
    assert ds["x0"].attrs["units"] == "m" and ds["y0"].attrs["units"] == "m"
    assert ds["depth"].dims == ("y", "x") and float(ds["depth"].min()) == 100.0
    assert ds["depth"].attrs["standard_name"] == "sea_floor_depth_below_mean_sea_level"
    assert ds["x"].attrs["axis"] == "X" and ds["y"].attrs["units"] == "m"
    # cell centres of 64 equal cells over [-500 km, 500 km]
    np.testing.assert_allclose(ds["x"].values, cell_centres(64, 1.0e6))
    assert ds["x"].values[0] == pytest.approx(-5.0e5 + 0.5e6 / 64)
    # at rest at t = 0, moving afterwards
    assert float(np.abs(ds["u"].isel(time=0)).max()) == 0.0
    assert float(np.abs(ds["v"].isel(time=-1)).max()) > 0.0


def test_paper_and_small_presets_cover_the_same_twelve_hours():
    paper = xl.simulator("tsunami", preset="paper")
    small = xl.simulator("tsunami", preset="small")
    c = math.sqrt(9.81 * 100.0)
    assert paper.dt == pytest.approx(0.1 * (1.0e6 / 150) / c)  # the LD-EnSF step, ~21.3 s
    assert paper.n_outputs == small.n_outputs == 51
    assert paper.steps_per_output == 40
    np.testing.assert_allclose(small.output_times, paper.output_times, rtol=1e-12)
    assert paper.output_times[-1] / 3600 == pytest.approx(11.83, abs=0.01)


@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-10), ("float32", 1e-5)])
def test_volume_is_conserved_with_walls(dtype, tolerance):
    # float64: each face flux leaves one cell and enters the next, so only rounding
    # (~1e-16 per step, 400 steps) changes the volume; 1e-10 is the bound.
    # float32: same argument with eps ~6e-8 on a basin volume of 1e14 m3 -> bound 1e-5.
    model = xl.simulator("tsunami", preset="small", dtype=dtype)
    frames = model.trajectory(torch.tensor(list(zip(*CENTRES.values())), dtype=model.dtype))
    assert relative_volume_drift(model, frames) <= tolerance
    if dtype == "float64":
        # stricter: relative to the bump's own volume, rounding still stays below 1e-10
        assert anomaly_volume_drift(model, frames) <= 1e-10
    assert torch.isfinite(frames).all() and frames[:, -1, 2].abs().max() < 1.0


def test_volume_is_conserved_over_real_relief():
    depth = regional_depth(lon=-74.0, lat=-33.0, shape=(48, 48), min_depth=10.0)
    model = xl.simulator("tsunami", preset="small", depth=depth)
    frames = model.trajectory(torch.tensor([[-2.0e5, -2.0e5]], dtype=model.dtype))
    assert model.dt < xl.simulator("tsunami", preset="small").dt / 5  # deep ocean: c ~ 250 m/s
    # rounding only, as for constant depth (see above)
    assert relative_volume_drift(model, frames) <= 1e-10
    assert anomaly_volume_drift(model, frames) <= 1e-10
    assert torch.isfinite(frames).all()


def _ridge_pulse_run(depth: float, amplitude: float = 0.01):
    """A y-uniform Gaussian ridge of eta without rotation: the exact linear solution is two
    pulses 0.5 g(x -+ c t) moving at c = sqrt(g H) until they reach the walls."""
    n, sigma = 200, 5.0e4
    model = xl.simulator("tsunami", nx=n, ny=4, depth=depth, f0=0.0, beta=0.0,
                         output_every=20, n_outputs=60)
    x = cell_centres(n, 1.0e6)
    wave_speed = math.sqrt(9.81 * depth)

    def exact(time: float) -> np.ndarray:
        return 0.5 * amplitude * (np.exp(-((x - wave_speed * time) ** 2) / (2 * sigma**2))
                                  + np.exp(-((x + wave_speed * time) ** 2) / (2 * sigma**2)))

    state = torch.zeros(1, *model.state_shape, dtype=model.dtype)
    state[0, 2] = torch.from_numpy(exact(0.0))
    eta = model.trajectory(model.default_parameters(1), initial_state=state)[0, :, 2].numpy()
    times = model.output_times
    # pulses separated (4 sigma apart from the centre) and not yet at the walls
    window = (wave_speed * times > 4 * sigma) & (wave_speed * times < 5.0e5 - 4 * sigma)
    return x, times[window], eta[window], exact, wave_speed


@pytest.mark.parametrize("depth", [100.0, 400.0])
def test_wave_speed_is_sqrt_gH(depth):
    x, times, eta, exact, wave_speed = _ridge_pulse_run(depth)
    assert len(times) >= 5
    row = eta[:, 1]
    assert np.abs(eta - eta[:, :1]).max() == 0.0  # uniform in y stays uniform in y
    east = x > 0
    centroid = (row * east * x).sum(-1) / (row * east).sum(-1)
    speed = np.polyfit(times, centroid, 1)[0]
    # the C-grid phase-speed error for sigma/dx = 10 is ~(k dx)^2 / 24 < 1e-4;
    # measured 1.5e-5 (H = 100 m)
    assert speed / wave_speed == pytest.approx(1.0, abs=1e-3)
    # the pulse keeps its shape: 0.3 % of the amplitude measured (dispersion + the 1 %
    # nonlinearity of (H + eta) fluxes at amplitude 0.01 m is below that)
    worst = max(np.abs(row[k] - exact(t)).max() for k, t in enumerate(times)) / 0.01
    assert worst < 0.01


@pytest.mark.slow
def test_error_decreases_with_resolution_at_second_order():
    # Reference on 315 x 315 cells; 315 is an odd multiple of each coarse size, so coarse cell
    # centres coincide with reference centres (no interpolation error). Full physics (beta
    # plane, nonlinear continuity), 1 h, dt proportional to dx (CFL 0.2).
    duration, reference_cells, coarse_cells = 3600.0, 315, (35, 45, 63, 105)
    wave_speed = math.sqrt(9.81 * 100.0)

    def final_state(n: int) -> np.ndarray:
        steps = math.ceil(duration / (0.2 * (1.0e6 / n) / wave_speed))
        model = xl.simulator("tsunami", nx=n, ny=n, dt=duration / steps, output_every=steps,
                             n_outputs=2)
        return model.trajectory(torch.tensor([[-1.0e5, -5.0e4]], dtype=model.dtype))[0, -1]

    reference = final_state(reference_cells).numpy()
    errors = []
    for n in coarse_cells:
        k = reference_cells // n
        sampled = reference[:, k // 2::k, k // 2::k]
        error = final_state(n).numpy() - sampled
        errors.append(np.sqrt((error**2).mean(axis=(1, 2)) / (sampled**2).mean(axis=(1, 2))))
    errors = np.array(errors)  # (resolution, variable)
    assert (np.diff(errors, axis=0) < 0).all()  # every refinement helps, for u, v and eta
    orders = -np.polyfit(np.log(coarse_cells), np.log(errors), 1)[0]
    # centred second-order differences in space; the first-order time error of the
    # forward-backward scheme is small at CFL 0.2. Measured orders ~2.0 (u, v), ~1.7 (eta).
    assert (orders > 1.5).all(), orders


def test_batched_runs_equal_single_runs():
    model = xl.simulator("tsunami", preset="small", n_outputs=6)
    parameters = torch.tensor(list(zip(*CENTRES.values())), dtype=model.dtype)
    batched = model.trajectory(parameters)
    single = torch.cat([model.trajectory(parameters[i : i + 1]) for i in range(2)])
    # the step is elementwise over the batch (no reductions), so results are bit-identical
    assert torch.equal(batched, single)


def test_float32_agrees_with_float64():
    runs = {}
    for dtype in ("float32", "float64"):
        ds = xl.simulate("tsunami", parameters=CENTRES, preset="small", dtype=dtype)
        runs[dtype] = ds["eta"]
        assert ds.attrs["xldensf_dtype"] == dtype and ds["eta"].dtype == np.dtype(dtype)
    difference = float(np.abs(runs["float32"] - runs["float64"]).max())
    # float32 rounding (6e-8) amplified over 400 steps; measured ~1e-6 m on a 1 m bump
    assert difference < 1e-4


def test_advance_reproduces_the_trajectory():
    model = xl.simulator("tsunami", preset="small", n_outputs=4)
    parameters = torch.tensor([[-2.0e5, -1.0e5]], dtype=model.dtype)
    frames = model.trajectory(parameters)
    state = model.initial_state(parameters)
    # at rest, fields -> C grid is exact, so advancing the initial state reproduces frame 3
    later = model.advance(state, parameters, 0.0, 3 * model.steps_per_output * model.dt)
    assert torch.equal(later, frames[:, 3])
    # from a moving state the face velocities are re-interpolated from centres, which
    # smooths at the grid scale (O(dx^2)); measured 2 % (u, v) and 8 % (eta) of each
    # field's maximum two frames later on 64 x 64 cells
    resumed = model.advance(frames[:, 1], parameters, model.output_times[1],
                            2 * model.steps_per_output * model.dt)
    error = (resumed - frames[:, 3]).abs().amax(dim=(-2, -1))
    assert (error < 0.12 * frames[:, 3].abs().amax(dim=(-2, -1))).all()
    assert (error > 0).any()  # the smoothing is real, not an accidental exact copy


def test_initial_perturbation_is_random_smooth_and_volume_neutral():
    model = xl.simulator("tsunami", preset="small", initial_perturbation=0.05)
    parameters = torch.tensor([[-2.0e5, -1.0e5]] * 2, dtype=model.dtype)
    bump = xl.simulator("tsunami", preset="small").initial_state(parameters[:1])[0, 2]
    first = model.initial_state(parameters, torch.Generator().manual_seed(3))[:, 2] - bump
    again = model.initial_state(parameters, torch.Generator().manual_seed(3))[:, 2] - bump
    other = model.initial_state(parameters, torch.Generator().manual_seed(4))[:, 2] - bump
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert not torch.equal(first[0], first[1])  # each run draws its own
    rms = first.square().mean(dim=(-2, -1)).sqrt()
    torch.testing.assert_close(rms, torch.full_like(rms, 0.05))
    # zero-mean modes only: the volume is that of the bump (rounding: 1e-12 of the RMS)
    assert float(first.mean(dim=(-2, -1)).abs().max()) < 1e-12
    # smooth: cell-to-cell differences are a small part of the field (white noise would
    # give sqrt(2) times the RMS; a 100 km length scale on 15.6 km cells gives ~0.2)
    difference_rms = first.diff(dim=-1).square().mean(dim=(-2, -1)).sqrt()
    assert (difference_rms < 0.4 * rms).all()
    # default: deterministic, the seed does not matter
    ds_a = xl.simulate("tsunami", parameters=CENTRES, seed=1, preset="small", n_outputs=2)
    ds_b = xl.simulate("tsunami", parameters=CENTRES, seed=2, preset="small", n_outputs=2)
    xr.testing.assert_identical(ds_a["eta"], ds_b["eta"])


def test_depth_dataarray_in_other_units_and_resolution():
    constant = xl.simulate("tsunami", parameters=CENTRES, preset="small", n_outputs=3)
    coarse = xr.DataArray(
        np.full((10, 12), 0.1), dims=("y", "x"),
        coords={"y": ("y", cell_centres(10, 1.0e3), {"units": "km"}),
                "x": ("x", cell_centres(12, 1.0e3), {"units": "km"})},
        attrs={"units": "km"})
    as_array = xl.simulate("tsunami", parameters=CENTRES, preset="small", n_outputs=3,
                           depth=coarse.transpose("x", "y"))
    # 0.1 km everywhere is 100 m everywhere: exactly the same run
    xr.testing.assert_equal(as_array["eta"], constant["eta"])
    np.testing.assert_array_equal(as_array["depth"].values, 100.0)


def test_time_step_and_frames():
    ds = xl.simulate("tsunami", parameters=CENTRES, preset="small", n_outputs=4, dt=50.0)
    np.testing.assert_allclose(ds["time"].values, np.arange(4) * 8 * 50.0)
    assert ds["time"].attrs["units"] == "s"


@pytest.mark.parametrize(
    "config, error, words",
    [
        ({"dt": 400.0}, xl.ConfigurationError, "CFL"),
        ({"depth": 0.0}, xl.ConfigurationError, "depth"),
        ({"nx": 1}, xl.ConfigurationError, "nx"),
        ({"centre_prior": (-6.0e5, 0.0)}, xl.ConfigurationError, "centre_prior"),
        ({"initial_perturbation": -1.0}, xl.ConfigurationError, "initial_perturbation"),
        ({"dtype": "float16"}, xl.ConfigurationError, "dtype"),
        ({"depth": "deep"}, xl.ConfigurationError, "depth"),
    ],
)
def test_bad_configurations_say_what_was_expected(config, error, words):
    with pytest.raises(error, match=words) as info:
        xl.simulator("tsunami", preset="small", **config)
    assert "expected" in str(info.value) and "found" in str(info.value)


def test_cfl_limit_is_the_stability_limit():
    model = xl.simulator("tsunami", preset="small")
    dx = 1.0e6 / 64
    limit = 1.0 / (math.sqrt(9.81 * 100.0) * math.sqrt(2.0) / dx)
    # just inside the limit: accepted and stays bounded over the whole run
    stable = xl.simulator("tsunami", preset="small", dt=0.99 * limit)
    frames = stable.trajectory(torch.tensor([[-2.0e5, -1.0e5]], dtype=stable.dtype))
    assert float(frames[:, :, 2].abs().max()) <= 1.0
    with pytest.raises(xl.ConfigurationError, match="CFL"):
        xl.simulator("tsunami", preset="small", dt=1.01 * limit)
    assert model.dt < limit


def test_bump_centre_off_the_grid_is_a_parameter_error():
    with pytest.raises(xl.ParameterError, match="x0"):
        xl.simulate("tsunami", parameters={"x0": 6.0e5, "y0": 0.0}, preset="small")
    with pytest.raises(xl.ParameterError, match="y0.*expected"):
        xl.simulate("tsunami", parameters={"x0": 0.0, "y0": -5.5e5}, preset="small")


def test_dry_cells_are_a_data_error_naming_where():
    depth = xr.DataArray(np.full((8, 8), 50.0), dims=("y", "x"),
                         coords={"y": cell_centres(8, 1.0e6), "x": cell_centres(8, 1.0e6)},
                         attrs={"units": "m"})
    depth[2, 5] = -3.0  # an island
    with pytest.raises(xl.DataError, match=r"cells <= 0.*x = .* m, y = .* m"):
        xl.simulator("tsunami", preset="small", nx=8, ny=8, depth=depth)
    real = regional_depth(lon=143.0, lat=38.0, shape=(16, 16))  # Japan: land, no clipping
    with pytest.raises(xl.DataError, match="min_depth"):
        xl.simulator("tsunami", preset="small", depth=real)


def test_depth_must_cover_the_grid():
    small = xr.DataArray(np.full((4, 4), 50.0), dims=("y", "x"),
                         coords={"y": cell_centres(4, 5.0e5), "x": cell_centres(4, 5.0e5)})
    with pytest.raises(xl.DataError, match="covering the model grid"):
        xl.simulator("tsunami", preset="small", depth=small)


def test_netcdf_round_trip_is_exact(tmp_path):
    ds = xl.simulate("tsunami", parameters=CENTRES, preset="small", n_outputs=3,
                     depth=regional_depth(lon=-74.0, lat=-33.0, shape=(16, 16), min_depth=10.0))
    path = tmp_path / "tsunami.nc"
    ds.to_netcdf(path)
    with xr.open_dataset(path) as back:
        xr.testing.assert_equal(back, ds)  # values and coordinates bit for bit
        for name in ("eta", "depth", "x0", "x"):
            assert back[name].attrs["units"] == ds[name].attrs["units"]
        assert back.attrs["xldensf_config"] == ds.attrs["xldensf_config"]


def test_config_presets_are_frozen_dataclasses():
    config = TsunamiConfig.small()
    with pytest.raises(AttributeError):
        config.nx = 10  # type: ignore[misc]
    assert TsunamiConfig.paper().nx == 150 and config.nx == 64


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_step_equals_eager_step():
    options = {"preset": "small", "nx": 24, "ny": 24, "n_outputs": 3}
    eager = xl.simulator("tsunami", **options)
    compiled = xl.simulator("tsunami", compile_step=True, **options)
    parameters = torch.tensor([[-2.0e5, -1.0e5]], dtype=eager.dtype)
    # the same operations, fused; reassociation may change the last bits only
    torch.testing.assert_close(compiled.trajectory(parameters), eager.trajectory(parameters),
                               rtol=1e-12, atol=1e-14)


def _fused_kernel_or_skip():
    from xldensf.simulators import tsunami_kernel

    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("the fused tsunami kernel needs a C++ compiler")
    if tsunami_kernel.build() is None:
        pytest.skip(f"the fused tsunami kernel could not be built: "
                    f"{tsunami_kernel.build_error()}")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fused_step_equals_the_torch_step_and_numpy(dtype):
    # slow only the first time on a machine (a one-off C++ build, about a minute); cached after
    _fused_kernel_or_skip()
    options = {"preset": "small", "nx": 23, "ny": 17, "n_outputs": 5, "output_every": 6,
               "dtype": dtype}
    eager = xl.simulator("tsunami", kernel="eager", **options)
    fused = xl.simulator("tsunami", kernel="fused", **options)
    parameters = torch.tensor([[-2.0e5, -1.0e5], [1.0e5, -3.0e5], [0.0, 0.0]],
                              dtype=eager.dtype)
    internal = fused.initial_internal(parameters)
    assert fused._fused_step(internal) is not None  # the fused path really runs
    assert eager._fused_step(internal) is None
    # the same operations in the same order, no fused multiply-adds: bit-identical
    expected = eager.trajectory(parameters)
    assert torch.equal(fused.trajectory(parameters), expected)
    assert expected[:, -1].abs().amax() > 0.05  # the waves have moved
    moved = fused.advance(expected[:, 2], parameters, 0.0, 5 * fused.dt)
    assert torch.equal(moved, eager.advance(expected[:, 2], parameters, 0.0, 5 * fused.dt))
    if dtype == "float64":
        # the bound against the plain numpy scheme (measured 0 to 3e-16)
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
        from numpy_tsunami import numpy_tsunami

        plain = numpy_tsunami(-2.0e5, -1.0e5, nx=23, ny=17, dt=fused.dt, steps=24,
                              output_every=6)
        np.testing.assert_allclose(expected[0].numpy(), plain, rtol=0, atol=1e-12)


def test_fused_kernel_falls_back_to_torch_where_it_does_not_apply():
    model = xl.simulator("tsunami", preset="small", nx=8, ny=6, kernel="auto")
    u, v, eta = model.initial_internal(torch.tensor([[-2.0e5, -1.0e5]], dtype=model.dtype))
    # gradients: the torch kernel, differentiable
    eta = eta.clone().requires_grad_(True)
    assert model._fused_step((u, v, eta)) is None
    new = model.step((u, v, eta), None, 0.0)
    assert new[2].requires_grad
    # a non-contiguous state: the torch kernel
    assert model._fused_step((u, v, eta.detach().mT.contiguous().mT)) is None
    assert xl.simulator("tsunami", preset="small", kernel="eager")._fused_step((u, v, eta)) is None


def test_unknown_kernel_is_a_configuration_error():
    with pytest.raises(xl.ConfigurationError, match="kernel.*expected.*'auto'.*found.*'fast'"):
        xl.simulator("tsunami", preset="small", kernel="fast")
