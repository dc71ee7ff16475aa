"""The geometry package: grids from coordinates, periodicity declared by the simulators,
the one regular layout (observe and fit agree) and the one great-circle distance."""

from __future__ import annotations

import math
from importlib import resources

import numpy as np
import pytest
import torch

import xldensf as xl
from xldensf import observations, relief
from xldensf.assimilation import encoder_layout
from xldensf.filters.localization import pairwise_distance
from xldensf.geometry import (
    EARTH_RADIUS,
    GridGeometry,
    periodic_declaration,
    regular_indices,
    regular_layout,
)
from xldensf.simulators import CASES, sphere
from xldensf.simulators import relief as simulators_relief
from xldensf.simulators.tsunami import TsunamiConfig
from xldensf.surrogate import fit, load_model

FAST = {"steps": 2, "finetune_steps": 0, "latent_dim": 3, "dynamics_width": 8,
        "reconstruction_width": 16, "reconstruction_depth": 2, "fourier_features": 8}


@pytest.fixture(scope="module")
def tsunami_runs():
    return xl.simulate("tsunami", runs=2, seed=0, preset="small", n_outputs=3,
                       dtype="float32", progress=False)


# ------------------------------------------------------------------ from_coordinates
def test_from_coordinates_matches_from_dataset(tsunami_runs):
    model = xl.simulator("tsunami", preset="small")
    by_coordinates = GridGeometry.from_coordinates(
        {c.name: c.values for c in model.grid_coordinates},
        {c.name: c.attrs for c in model.grid_coordinates}, periodic=())
    by_dataset = GridGeometry.from_dataset(tsunami_runs)
    assert by_coordinates.dims == by_dataset.dims == ("y", "x")
    for mine, theirs in zip(by_coordinates.axes, by_dataset.axes):
        np.testing.assert_array_equal(mine.values, theirs.values)
        assert (mine.role, mine.units, mine.period) == (theirs.role, theirs.units, theirs.period)


def test_from_coordinates_periodicity_declared_or_detected():
    x = np.arange(8) * 2 * math.pi / 8
    detected = GridGeometry.from_coordinates({"x": x}, {"x": {"axis": "X"}})
    assert detected.axes[0].period == pytest.approx(2 * math.pi)  # a full 2 pi span
    bounded = GridGeometry.from_coordinates({"x": x}, {"x": {"axis": "X"}}, periodic="none")
    assert bounded.axes[0].period is None
    by_role = GridGeometry.from_coordinates({"k": np.arange(5.0)}, {"k": {"axis": "X"}},
                                            periodic=["X"])
    assert by_role.axes[0].period == 5.0
    with pytest.raises(xl.DataError, match="declared periodic axes"):
        GridGeometry.from_coordinates({"k": np.arange(5.0)}, {"k": {"axis": "X"}},
                                      periodic=["z"])


def test_field_order_is_the_order_of_the_coordinates():
    attrs = {"x": {"axis": "X", "units": "m"}, "y": {"axis": "Y", "units": "m"}}
    geometry = GridGeometry.from_coordinates({"x": [0.0, 1.0, 2.0], "y": [0.0, 1.0]}, attrs)
    assert geometry.dims == ("x", "y") and geometry.shape == (3, 2)


# ------------------------------------------------------------------ periodicity
def test_each_simulator_declares_its_periodic_dims():
    declared = {case: cls.periodic_dims for case, cls in CASES.items()}
    assert declared == {"lorenz96": ("k",), "kolmogorov": ("x", "y"),
                        "atmosphere": ("lon",), "tsunami": ()}
    for case in ("lorenz96", "kolmogorov", "tsunami"):
        geometry = GridGeometry.from_simulator(xl.simulator(case, preset="small"))
        periodic = {axis.name for axis in geometry.axes if axis.period is not None}
        assert periodic == set(declared[case])


@pytest.mark.parametrize("case", ["lorenz96", "kolmogorov", "tsunami"])
def test_written_attribute_and_case_only_files_agree(case):
    ds = xl.simulate(case, runs=1, seed=0, preset="small", n_outputs=2, progress=False)
    assert ds.attrs["xldensf_periodic"] == (" ".join(CASES[case].periodic_dims) or "none")
    older = ds.copy()
    del older.attrs["xldensf_periodic"]  # an older file: only xldensf_case
    assert periodic_declaration(older.attrs) == CASES[case].periodic_dims
    new, old = GridGeometry.from_dataset(ds), GridGeometry.from_dataset(older)
    assert [a.period for a in new.axes] == [a.period for a in old.axes]


# ------------------------------------------------------------------ regular layout
def test_regular_indices_bounded_and_periodic():
    assert regular_indices((64,), [4]).ravel().tolist() == [13, 25, 38, 50]
    assert regular_indices((40,), [40], [True]).ravel().tolist() == list(range(40))
    with pytest.raises(xl.ParameterError, match="at most 38"):
        regular_indices((40,), [39])  # bounded: the two ends are left out


def test_fit_encoder_stations_equal_observe_regular_layout(tsunami_runs):
    model = fit(tsunami_runs, ["x0", "y0"], stations=16, seed=0, progress=False, **FAST)
    truth = tsunami_runs.isel(run=0)
    observed = truth.ldensf.observe(stations="4x4", noise=0.0, seed=0)
    trained = encoder_layout(model)
    for name in ("x", "y"):
        np.testing.assert_array_equal(trained[name].values, observed[name].values)


def test_shipped_model_stations_are_the_regular_layout(tsunami_runs):
    path = resources.files("xldensf") / "data" / "models" / "tsunami_small.ldensf"
    trained = encoder_layout(load_model(str(path)))
    layout = regular_layout(tsunami_runs, 4, 4)
    for name in ("x", "y"):
        np.testing.assert_array_equal(trained[name].values, layout[name].values)


# ------------------------------------------------------------------ distances, radius
def test_one_earth_radius():
    assert EARTH_RADIUS == sphere.EARTH_RADIUS == 6.37122e6
    assert observations.EARTH_RADIUS is EARTH_RADIUS and relief.EARTH_RADIUS is EARTH_RADIUS


def test_old_import_paths_still_work():
    from xldensf import geometry

    for name in ("GridAxis", "GridGeometry", "InterpolationOperator", "StationPositions",
                 "random_layout", "regular_layout"):
        assert getattr(observations, name) is getattr(geometry, name)
    assert relief.regional_depth is simulators_relief.regional_depth


def test_paper_basin_defaults_of_the_relief_match_the_simulator():
    assert simulators_relief.PAPER_SHAPE == (TsunamiConfig.paper().ny, TsunamiConfig.paper().nx)
    assert simulators_relief.PAPER_LENGTH == (TsunamiConfig.paper().length_y,
                                              TsunamiConfig.paper().length_x)


def test_great_circle_distance_by_hand():
    geometry = GridGeometry.from_coordinates(
        {"lat": np.linspace(-60.0, 60.0, 5), "lon": np.arange(0.0, 360.0, 30.0)},
        {"lat": {"units": "degrees_north"}, "lon": {"units": "degrees_east"}})
    assert geometry.sphere and geometry.dims == ("lat", "lon")
    # Hand values (cos d = sin a sin b + cos a cos b cos dlon): (0, 0) -> (0, 90): 90 deg;
    # (0, 0) -> (60, 0): 60 deg; (0, 0) -> (60, 180): 120 deg; (60, 0) -> (0, 90): 90 deg;
    # (60, 0) -> (60, 180): 60 deg over the pole.
    got = geometry.distances([[0.0, 0.0], [60.0, 0.0]],
                             [[0.0, 90.0], [60.0, 0.0], [60.0, 180.0]])
    degree = math.pi / 180 * 6.37122e6
    expected = [[90 * degree, 60 * degree, 120 * degree], [90 * degree, 0.0, 60 * degree]]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-6)
    quarter = 90 * degree
    # the kernel is the filters' one
    radians = torch.deg2rad(torch.tensor([[0.0, 0.0]], dtype=torch.float64))
    kernel = pairwise_distance(radians, torch.deg2rad(torch.tensor([[0.0, 90.0]],
                                                                   dtype=torch.float64)),
                               "sphere", sphere_radius=EARTH_RADIUS)
    assert float(kernel) == pytest.approx(quarter, rel=1e-12)
