"""Tests of the forced shallow-water model on the sphere (``"atmosphere"``).

Verification follows Williamson et al. (1992, JCP 102) cases 2 and 6 and Galewsky, Scott &
Polvani (2004, Tellus 56A); runs use coarse grids (64 x 32, T31) to stay fast.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import xldensf as xl
from xldensf.simulators.sphere import (
    DAY,
    EARTH_RADIUS,
    EARTH_ROTATION,
    GRAVITY,
    AtmosphereSimulator,
    galewsky_state,
    rossby_haurwitz_state,
    williamson2_state,
)

#: The unforced sphere: no mountain, no forcing, no spin-up.
UNFORCED = {"orography_height": 0.0, "forcing_time": None, "relaxation_time": None,
            "spinup_time": 0.0}
#: Williamson case 2: u0 = 2 pi a / 12 days, g h0 = 2.94e4 m2 s-2.
WILLIAMSON2 = {"jet_speed": 2 * math.pi * EARTH_RADIUS / (12 * DAY),
               "base_height": 2.94e4 / GRAVITY, "max_wind": 40.0}


@pytest.fixture(autouse=True)
def _one_thread():
    """The 64 x 32 transforms are tiny: on the shared 2-core machines two threads made a
    tendency evaluation 6x slower (106 ms vs 16 ms), so these tests run on one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def unforced_model(days: float, every_days: float, **config) -> AtmosphereSimulator:
    """A small-grid unforced model storing a frame every ``every_days`` for ``days``."""
    model = xl.simulator("atmosphere", preset="small", **{**UNFORCED, **config})
    return xl.simulator("atmosphere", preset="small", **{**UNFORCED, **config},
                        output_every=model.steps_for(every_days * DAY),
                        n_outputs=round(days / every_days) + 1)


def relative_l2(field: torch.Tensor, reference: torch.Tensor) -> float:
    return float(torch.linalg.norm(field - reference) / torch.linalg.norm(reference))


def test_grid_is_gaussian_north_to_south_and_round_trips():
    model = xl.simulator("atmosphere", preset="small")
    lat, lon = (coord.values for coord in model.grid_coordinates)
    assert lat.shape == (32,) and lon.shape == (64,)
    assert np.all(np.diff(lat) < 0)  # descending latitudes, documented
    assert lon[0] == 0.0 and lon[-1] < 360.0
    # Gauss nodes are the roots of P_32(sin(lat)); the area weights integrate 1 exactly.
    legendre = np.polynomial.legendre.Legendre.basis(32)
    assert np.abs(legendre(np.sin(np.radians(lat)))).max() < 1e-12
    assert model.area_weights.sum() == pytest.approx(1.0, abs=1e-14)
    fields = model.to_fields(model.from_fields(rossby_haurwitz_state(model)))
    # Band-limited fields survive grid -> spectral -> grid to rounding (1e-12 relative).
    assert relative_l2(model.to_fields(model.from_fields(fields)), fields) < 1e-12


def test_williamson2_steady_state_float64():
    # 48 x 24 (T23) is enough: the case-2 fields are degree <= 2 (CFL bound 2494 s).
    model = unforced_model(5, 5, hyperdiffusion_time=None, dt=2400.0, nlon=48, nlat=24,
                           **WILLIAMSON2)
    initial = williamson2_state(model)
    assert model.config.jet_speed == pytest.approx(38.61, abs=0.01)  # m s-1
    final = model.trajectory(model.default_parameters(1), initial_state=initial)[:, -1]
    # The exact solution is the initial state; the spectral tendency of it vanishes to
    # rounding, so only round-off accumulates: measured 8e-15 after 150 steps. The issue
    # asks for 1e-5; 1e-10 still leaves room for other BLAS summation orders.
    assert relative_l2(final[0, 0], initial[0, 0]) < 1e-10
    assert float((final[0, 1:] - initial[0, 1:]).abs().max()) < 1e-8  # m s-1, same reason


def test_mass_is_conserved_to_rounding_with_mountain_and_diffusion():
    model = unforced_model(1, 0.5, orography_height=2000.0)
    assert model.config.hyperdiffusion_time is not None
    frames = model.trajectory(model.default_parameters(1))
    mass = model.global_mean(frames[0, :, 0])
    # The mountain sets the flow in motion (Williamson case 5): it must not be a steady run.
    assert float((frames[0, -1, 2]).abs().max()) > 1.0
    # Degree 0 has no flux divergence and no diffusion: only round-off changes it.
    assert float((mass - mass[0]).abs().max() / mass[0]) < 1e-10


@pytest.mark.slow  # ~25 s on a loaded 2-core machine
def test_rossby_haurwitz_wave_keeps_amplitude_and_travels_east():
    days = 3
    model = unforced_model(days, 1, base_height=8000.0, max_wind=100.0, dt=960.0)
    frames = model.trajectory(model.default_parameters(1),
                              initial_state=rossby_haurwitz_state(model))[0].numpy()
    assert np.isfinite(frames).all()
    weights = model.area_weights[:, 0]
    amplitude = [np.sqrt((np.abs(np.fft.rfft(v, axis=-1)[:, 4]) ** 2 * weights).sum())
                 for v in frames[:, 2]]
    # The shallow-water RH4 wave is not an exact solution but keeps its shape for weeks;
    # measured amplitude change -1.3 % after 3 days (-2.2 % after 4), 5 % allowed.
    assert abs(amplitude[-1] / amplitude[0] - 1) < 0.05
    row = np.argmin(np.abs(np.degrees(model.latitudes) - 45.0))
    phase = [-np.angle(np.fft.rfft(h[row])[4]) / 4 for h in frames[:, 0]]
    speed = np.degrees(np.mean(np.diff(np.unwrap(np.array(phase) * 4) / 4)))  # deg/day
    R, K = 4, 7.848e-6
    nondivergent = np.degrees((R * (3 + R) * K - 2 * EARTH_ROTATION) / ((1 + R) * (2 + R)) * DAY)
    # Haurwitz's speed (12.2 deg/day) is for non-divergent flow; divergence slows the
    # shallow-water wave (measured 10.7-11.5 deg/day). Eastward and within 15 %.
    assert speed > 0
    assert abs(speed / nondivergent - 1) < 0.15


@pytest.mark.slow  # ~60 s on a loaded 2-core machine
def test_galewsky_jet_rolls_up_only_when_perturbed():
    config = {"nlon": 96, "nlat": 48, "truncation": 31, "dt": 900.0, "base_height": 10000.0,
              "max_wind": 100.0, "hyperdiffusion_time": DAY}
    model = unforced_model(6, 1, **config)
    initial = torch.cat((galewsky_state(model), galewsky_state(model, perturbation=0.0)))
    frames = model.trajectory(model.default_parameters(2), initial_state=initial)
    meridional = frames[:, :, 2].abs().amax(dim=(-2, -1))  # max |v| per run and day
    perturbed, balanced = meridional[0], meridional[1]
    # Criterion: the 120 m bump grows into eddies (measured max |v| 0.4 m/s at day 1,
    # 25.6 m/s at day 6 at this T31 resolution), while the balanced jet stays zonal
    # (measured < 0.01 m/s: only round-off and the truncation of the jet profile).
    assert float(perturbed[6]) > 10.0
    assert float(perturbed[6]) > 10 * float(perturbed[1])
    assert torch.all(perturbed[2:] > perturbed[1:-1])  # monotonic growth from day 1
    assert float(balanced.max()) < 0.1


def test_small_preset_forced_runs_as_dataset():
    ds = xl.simulate("atmosphere", parameters={"hf0": [0.0, 10.0, 20.0], "sigma": 2.0},
                     preset="small", seed=0, n_outputs=4)  # 1 day after spin-up
    assert ds["h"].dims == ("run", "time", "lat", "lon")
    assert ds["u"].attrs["standard_name"] == "eastward_wind"
    assert ds["h"].attrs["standard_name"] == "geopotential_height"
    assert ds["lat"].attrs["units"] == "degrees_north" and ds["lon"].attrs["axis"] == "X"
    assert ds["hf0"].attrs["units"] == "m" and ds["sigma"].attrs["units"] == "rad"
    assert ds["orography"].dims == ("lat", "lon") and float(ds["orography"].max()) > 1900.0
    np.testing.assert_allclose(ds["time"].values[1], 8 * 3600.0)
    assert np.isfinite(ds["h"].values).all() and float(ds["h"].min()) > 0
    # The forcing redistributes mass but creates none (its global mean is removed).
    weights = xl.simulator("atmosphere", preset="small").area_weights
    mass = (ds["h"].values * weights).sum(axis=(-2, -1))
    assert np.abs(mass / mass[0, 0] - 1).max() < 1e-10
    # Weak forcing -> linear response: the departure from the unforced run doubles with
    # hf0 (hf0 <= 20 m against a 6 km layer; 5 % allows the quadratic terms).
    response = [float(np.sqrt(((ds["h"][i] - ds["h"][0]) ** 2).mean())) for i in (1, 2)]
    assert response[0] > 0.1  # m: the forcing does something
    assert response[1] / response[0] == pytest.approx(2.0, rel=0.05)


def test_advance_matches_trajectory_and_batch_members_are_independent():
    model = xl.simulator("atmosphere", preset="small", spinup_time=0.0, n_outputs=2)
    parameters = model.tensor([[5.0, 1.5], [25.0, 3.5]])
    state = model.initial_state(parameters)
    frames = model.trajectory(parameters, initial_state=state)
    advanced = model.advance(state, parameters, t0=0.0, duration=8 * 3600.0)
    # The same arithmetic up to the spectral round trip of the initial state.
    torch.testing.assert_close(advanced, frames[:, 1], rtol=1e-10, atol=1e-8)
    alone = model.advance(state[1:], parameters[1:], t0=0.0, duration=8 * 3600.0)
    torch.testing.assert_close(alone, advanced[1:], rtol=1e-10, atol=1e-8)
    assert float((advanced[0] - advanced[1]).abs().max()) > 1e-3  # parameters matter


def test_float32_follows_float64():
    results = []
    for dtype in ("float32", "float64"):
        model = xl.simulator("atmosphere", preset="small", spinup_time=0.0, dtype=dtype)
        parameters = model.tensor([[20.0, 2.0]])
        state = model.initial_state(parameters)
        results.append(model.advance(state, parameters, 0.0, 8 * 3600.0).double())
    assert results[0].dtype == torch.float64
    # 24 steps in single precision: relative L2 error ~1e-6 expected, 1e-4 allowed.
    assert relative_l2(results[0], results[1]) < 1e-4


def test_initial_perturbation_is_seeded_and_off_by_default():
    def initial(seed: int, amplitude: float) -> torch.Tensor:
        model = xl.simulator("atmosphere", preset="small", spinup_time=0.0,
                             initial_perturbation=amplitude)
        generator = torch.Generator().manual_seed(seed)
        return model.initial_state(model.default_parameters(2), generator)

    torch.testing.assert_close(initial(0, 0.0), initial(1, 0.0))
    first, again, other = initial(0, 5.0), initial(0, 5.0), initial(1, 5.0)
    torch.testing.assert_close(first, again)
    assert float((first - other).abs().max()) > 1.0
    base = initial(0, 0.0)
    model = xl.simulator("atmosphere", preset="small")
    rms = torch.sqrt(model.global_mean((first[:, 0] - base[:, 0]) ** 2))
    torch.testing.assert_close(rms, torch.full_like(rms, 5.0))  # RMS as configured [m]
    assert float((first[0] - first[1]).abs().max()) > 1.0  # members differ


def test_forcing_moves_west_once_a_day():
    model = xl.simulator("atmosphere", preset="small")
    parameters = model.tensor([[30.0, 1.0]])
    lat, lon = (coord.values for coord in model.grid_coordinates)
    for hours, expected_lon in ((0, 0.0), (6, 270.0), (12, 180.0), (24, 0.0)):
        forcing = model.forcing_height(parameters, hours * 3600.0)[0].numpy()
        row, column = np.unravel_index(forcing.argmax(), forcing.shape)
        assert lon[column] == pytest.approx(expected_lon)
        assert abs(lat[row]) < 5.0  # equatorial peak, phi_c = 0.4 sin(2 pi t / year) ~ 0
    assert forcing.max() <= 30.0


def test_cfl_violation_and_parameter_range_raise():
    with pytest.raises(xl.ConfigurationError, match="CFL"):
        xl.simulator("atmosphere", preset="small", dt=2400.0)
    with pytest.raises(xl.ConfigurationError, match="spinup_time"):
        xl.simulator("atmosphere", preset="small", spinup_time=1000.0)
    model = xl.simulator("atmosphere", preset="small")
    for bad in ([[-1.0, 2.0]], [[10.0, 0.0]], [[10.0, 20.0]]):
        with pytest.raises(xl.ParameterError):
            model.check_parameters(torch.tensor(bad))
    low, high = model.parameter_specs[0].prior_low, model.parameter_specs[0].prior_high
    assert (low, high) == (0.1, 30.0)
    drawn = model.draw_parameters(50, torch.Generator().manual_seed(0))
    assert float(drawn[:, 1].min()) >= 1.0 and float(drawn[:, 1].max()) <= 4.0


def test_spinup_parameters_share_frame_zero_and_are_checked():
    options = {"spinup_time": 3 * 1200.0, "n_outputs": 2, "output_every": 1}
    parameters = {"hf0": [1.0, 29.0], "sigma": [1.0, 4.0]}
    shared = xl.simulate("atmosphere", parameters=parameters, preset="small", **options)
    assert xl.simulator("atmosphere", preset="small").config.spinup_parameters == (15.05, 2.5)
    # One spin-up copied to every run: frame 0 equal bit for bit, later frames differ.
    np.testing.assert_array_equal(shared["h"][0, 0].values, shared["h"][1, 0].values)
    assert float(abs(shared["h"][0, 1] - shared["h"][1, 1]).max()) > 1e-3
    own = xl.simulate("atmosphere", parameters=parameters, preset="small",
                      spinup_parameters=None, **options)
    assert float(abs(own["h"][0, 0] - own["h"][1, 0]).max()) > 1e-3  # own spin-ups differ
    with pytest.raises(xl.ConfigurationError, match="spinup_parameters"):
        xl.simulator("atmosphere", preset="small", spinup_parameters=(15.0, 0.0))
