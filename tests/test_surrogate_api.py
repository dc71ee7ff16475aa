"""xarray layer of the surrogate: fit(Dataset) -> LatentModel -> forecast Dataset."""

from __future__ import annotations

import json
import warnings
from importlib import resources

import numpy as np
import pytest
import torch
import xarray as xr
from test_surrogate import _one_thread, travelling_wave  # noqa: F401  (fixture re-used)

import xldensf as xl
from xldensf.conventions import units
from xldensf.io import read_safetensors
from xldensf.surrogate import ExtrapolationWarning, LDNetConfig, fit, load_model

FAST = {"steps": 30, "finetune_steps": 5, "latent_dim": 3, "dynamics_width": 8,
        "reconstruction_width": 16, "reconstruction_depth": 2, "fourier_features": 8}


SHIPPED = resources.files("xldensf") / "data" / "models" / "tsunami_small.ldensf"


def wave_dataset(runs: int = 6, seed: int = 0) -> xr.Dataset:
    """A CF Dataset of travelling pulses: dims (run, time, x), parameters c [m s-1], x0 [km]."""
    generator = torch.Generator().manual_seed(seed)
    parameters = torch.tensor([0.2, 0.1]) + torch.tensor([0.3, 0.2]) * torch.rand(
        runs, 2, generator=generator)
    x, t = torch.linspace(0.0, 1.0, 24), torch.linspace(0.0, 1.0, 9)
    fields = travelling_wave(parameters, x, t).numpy().astype(np.float64)
    return xr.Dataset(
        {"h": (("run", "time", "x"), fields[:, :, 0], {"units": "m", "long_name": "height"}),
         "q": (("run", "time", "x"), fields[:, :, 1], {"units": "m2 s-1", "long_name": "flux"})},
        coords={"run": np.arange(runs),
                "time": ("time", t.numpy().astype(np.float64), {"units": "s", "axis": "T"}),
                "x": ("x", 1000.0 * x.numpy().astype(np.float64), {"units": "m", "axis": "X"}),
                "c": ("run", parameters[:, 0].numpy().astype(np.float64), {"units": "m s-1"}),
                "x0": ("run", parameters[:, 1].numpy().astype(np.float64), {"units": "km"})},
        attrs={"xldensf_case": "wave", "title": "test"},
    )


@pytest.fixture(scope="module")
def wave_model():
    return fit(wave_dataset(), parameters=["c", "x0"], stations=3, seed=0,
               encoder={"hidden_size": 4, "layers": 1, "steps": 5}, **FAST)


def test_forecast_is_a_dataset_like_the_training_data(wave_model):
    train = wave_dataset()
    forecast = wave_model.forecast({"c": train["c"].values[:2], "x0": train["x0"].values[:2]})
    assert forecast["h"].dims == ("run", "time", "x")
    assert forecast.sizes == {"run": 2, "time": 9, "x": 24}
    assert forecast["q"].attrs["units"] == "m2 s-1" and forecast["h"].attrs["long_name"] == "height"
    assert forecast["x0"].attrs["units"] == "km" and forecast["time"].attrs["axis"] == "T"
    np.testing.assert_array_equal(forecast["x"].values, train["x"].values)
    np.testing.assert_array_equal(forecast["c"].values, train["c"].values[:2])
    assert forecast.attrs["xldensf_case"] == "wave"
    # the values are the tensor-level decode, in physical units
    u = wave_model.normalize_parameters(torch.tensor(np.stack(
        [train["c"].values[:2], train["x0"].values[:2]], axis=-1)))
    with torch.no_grad():
        expected = wave_model.decode(wave_model.unroll(u))[:, :, 0]
    np.testing.assert_allclose(forecast["h"].values, expected.numpy(), rtol=1e-6)


def test_forecast_times_equal_the_training_times_exactly():
    """Times like 0.7 + 0.1 k are not t0 + k dt to the last bit; the forecast must carry the
    stored training times so that it aligns with the data by value (and ``t0 + k dt``
    beyond the training span)."""
    dataset = wave_dataset()
    times = 0.7 + 0.1 * np.arange(dataset.sizes["time"])
    assert not np.array_equal(times[0] + np.arange(len(times)) * (times[1] - times[0]), times)
    dataset = dataset.assign_coords(time=("time", times, dataset["time"].attrs))
    model = fit(dataset, parameters=["c", "x0"], seed=0, **FAST)
    forecast = model.forecast({"c": dataset["c"].values, "x0": dataset["x0"].values})
    np.testing.assert_array_equal(forecast["time"].values, times)
    xl.metrics.relative_rmse(forecast, dataset)       # aligns by time value: no DataError
    with pytest.warns(ExtrapolationWarning):
        later = model.forecast({"c": 0.3, "x0": 0.2}, times=[times[-1], times[-1] + 0.1])
    np.testing.assert_allclose(later["time"].values, [times[-1], times[-1] + 0.1], rtol=1e-12)


def test_forecast_converts_parameter_units_and_decodes_anywhere(wave_model):
    train = wave_dataset()
    c, x0 = float(train["c"][0]), float(train["x0"][0])
    reference = wave_model.forecast({"c": c, "x0": x0})
    converted = wave_model.forecast({"c": units.Quantity(3.6 * c, "km h-1"),
                                     "x0": xr.DataArray(1000.0 * x0, attrs={"units": "m"})})
    np.testing.assert_allclose(converted["h"].values, reference["h"].values, rtol=1e-5)
    stations = xr.DataArray(train["x"].values[[3, 10]] / 1000.0, dims="station",
                            attrs={"units": "km"})
    at_points = wave_model.forecast({"c": c, "x0": x0}, times=[0.25, 0.5],
                                    coords={"x": stations})
    assert at_points["h"].dims == ("run", "time", "station")
    np.testing.assert_allclose(at_points["h"].values,
                               reference["h"].isel(time=[2, 4], x=[3, 10]).values, rtol=1e-5,
                               atol=1e-6)  # float32 decode: same points, same result


def test_forecast_warns_outside_and_refuses_far_outside_the_training_range(wave_model):
    train = wave_dataset()
    low, high = float(train["c"].min()), float(train["c"].max())
    x0 = float(train["x0"][0])
    with pytest.warns(ExtrapolationWarning, match="outside the training range") as record:
        wave_model.forecast({"c": high + 0.1 * (high - low), "x0": x0})
    assert record[0].filename == __file__  # stacklevel points at the caller
    with pytest.raises(xl.ParameterError, match="training range"):
        wave_model.forecast({"c": high + (high - low), "x0": x0})
    with pytest.warns(ExtrapolationWarning, match="beyond the training span"):
        wave_model.forecast({"c": low, "x0": x0}, times=[1.25])
    with pytest.raises(xl.ConfigurationError, match="times"):
        wave_model.forecast({"c": low, "x0": x0}, times=[0.3])
    with pytest.raises(xl.ParameterError, match="keys"):
        wave_model.forecast({"c": low})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wave_model.forecast({"c": [low, high], "x0": x0})     # the range itself is fine


def test_stations_give_an_encoder_and_survive_save_load(wave_model, tmp_path):
    assert wave_model.encoder is not None and len(wave_model.metadata.stations) == 3
    path = tmp_path / "wave.ldensf"
    wave_model.save(path)
    loaded = load_model(path)
    parameters = {"c": 0.3, "x0": 0.2}
    xr.testing.assert_identical(loaded.forecast(parameters), wave_model.forecast(parameters))
    observations = torch.rand(2, 9, 3, 2)
    for expected, found in zip(wave_model.encode(observations), loaded.encode(observations)):
        assert torch.equal(expected, found)


def test_model_file_header_is_the_former_one(wave_model, tmp_path):
    """The header written through ``model_file_header`` has the keys and values that
    ``LatentModel.save`` wrote by hand before it existed (files stay readable both ways)."""
    path = tmp_path / "wave.ldensf"
    wave_model.save(path)
    _, header = read_safetensors(path, "model file")
    former = {
        "format": "xldensf-latent-model",
        "format_version": "1",
        "config": json.dumps(wave_model.config.to_dict()),
        "encoder_config": json.dumps(wave_model.encoder_config.to_dict()),
        "metadata": json.dumps(wave_model.metadata.to_dict()),
        "seed": str(wave_model.seed),
        "xldensf_version": xl.__version__,
        "torch_version": torch.__version__,
    }
    assert header == former
    _, shipped = read_safetensors(str(SHIPPED), "model file")  # written before the helper
    assert set(shipped) == set(former)


def test_station_coordinates_snap_to_the_nearest_grid_point():
    train = wave_dataset()
    stations = {"x": xr.DataArray([0.05, 0.52], dims="station", attrs={"units": "km"})}
    model = fit(train, parameters="c", stations=stations, seed=0, variables="h",
                encoder={"hidden_size": 4, "layers": 1, "steps": 2}, **{**FAST, "steps": 2})
    grid = train["x"].values
    expected = grid[[np.abs(grid - 50.0).argmin(), np.abs(grid - 520.0).argmin()]]
    np.testing.assert_array_equal(np.ravel(model.metadata.stations), expected)
    assert model.metadata.variables == ("h",)


def test_fit_on_the_lorenz96_case():
    train = xl.simulate("lorenz96", runs=4, seed=0, preset="small", n_outputs=6)
    model = fit(train, parameters=["F"], seed=0, **FAST)
    assert model.metadata.grid_shape == (40,)
    assert model.metadata.parameter_attrs["F"]["long_name"] == "Lorenz-96 forcing"
    assert model.forecast({"F": train["F"].values})["x"].shape == (4, 6, 40)


@pytest.mark.parametrize("case, latent_dim", [("kolmogorov", 9), ("wave", 10)])
def test_paper_preset_takes_the_sizes_of_the_dataset_case(case, latent_dim):
    """REFERENCES §2 sizes of the simulated case; the tsunami's for other data."""
    dataset = wave_dataset().assign_attrs(xldensf_case=case)
    model = fit(dataset, parameters=["c", "x0"], preset="paper", seed=0, steps=0,
                finetune_steps=0)
    assert model.config == LDNetConfig.paper(case if case == "kolmogorov" else "tsunami").replace(
        steps=0, finetune_steps=0)
    assert model.config.latent_dim == latent_dim


@pytest.mark.parametrize(("case", "fourier_scale"), [("kolmogorov", 2.0), ("tsunami", 0.5),
                                                     (None, 0.5)])
def test_small_preset_takes_the_changes_of_the_dataset_case(case, fourier_scale):
    """SMALL_CHANGES: the Kolmogorov flow's finer Fourier features; others unchanged."""
    dataset = wave_dataset()
    if case is not None:
        dataset = dataset.assign_attrs(xldensf_case=case)
    model = fit(dataset, parameters=["c", "x0"], preset="small", seed=0, steps=0,
                finetune_steps=0)
    assert model.config.fourier_scale == fourier_scale
    assert model.config == LDNetConfig.small(case).replace(steps=0, finetune_steps=0)


def _drop_units(dataset: xr.Dataset, name: str) -> xr.Dataset:
    dataset[name].attrs.pop("units")
    return dataset


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        (lambda ds: ds, xl.DataError, "coordinate along 'run'"),          # parameter "nope"
        (lambda ds: _drop_units(ds, "h"), xl.UnitsError, "variable 'h'"),
        (lambda ds: _drop_units(ds, "c"), xl.UnitsError, "parameter 'c'"),
        (lambda ds: ds.isel(run=[0]), xl.DataError, "number of runs"),
        (lambda ds: ds.where(ds["x"] < 900.0), xl.DataError, "finite"),
        (lambda ds: ds.isel(run=0), xl.DataError, "dimensions"),
    ],
)
def test_bad_training_datasets_raise(mutate, error, match):
    parameters = ["nope"] if match.startswith("coordinate") else ["c"]
    with pytest.raises(error, match=match):
        fit(mutate(wave_dataset()), parameters=parameters, seed=0, **FAST)


def test_bad_names_and_settings_raise():
    train = wave_dataset()
    with pytest.raises(xl.UnknownNameError):
        fit(train, parameters="c", variables="zeta", seed=0)
    with pytest.raises(xl.UnknownNameError):
        fit(train, parameters="c", preset="huge", seed=0)
    with pytest.raises(xl.ConfigurationError, match="fields"):
        fit(train, parameters="c", seed=0, latent_size=3)
    with pytest.raises(xl.ConfigurationError, match="stations"):
        fit(train, parameters="c", seed=0, stations=30, **FAST)
