"""Metrics against hand-computable and brute-force references."""

import numpy as np
import pytest
import xarray as xr

import xldensf as xl
from xldensf import metrics


def planar(values, name="u"):
    ny, nx = values.shape[-2:]
    dims = ("member", "time", "y", "x")[-values.ndim:]
    return xr.Dataset({name: (dims, values, {"units": "m s-1"})},
                      coords={"x": ("x", np.arange(nx), {"axis": "X"}),
                              "y": ("y", np.arange(ny), {"axis": "Y"}),
                              **({"time": ("time", np.arange(values.shape[-3]))}
                                 if values.ndim >= 3 else {})})


def test_relative_rmse_by_hand():
    truth = planar(np.full((3, 4, 5), 2.0))
    analysis = planar(np.full((2, 3, 4, 5), 2.2))  # every member 10% too high
    result = metrics.relative_rmse(analysis, truth)
    np.testing.assert_allclose(result["u"].values, 0.1, rtol=1e-12)
    assert result["u"].dims == ("time",)


def test_area_weights_on_the_sphere():
    lat = np.array([-60.0, 0.0, 60.0])
    lon = np.array([0.0, 120.0, 240.0])
    coords = {"lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
              "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude"})}
    truth = xr.Dataset({"h": (("lat", "lon"), np.ones((3, 3)))}, coords=coords)
    error = np.zeros((3, 3))
    error[0] = 1.0  # error only at 60 S, weight cos 60 = 0.5 of the equator's
    analysis = truth + xr.DataArray(error, dims=("lat", "lon"))
    expected = np.sqrt(0.5 * 3 / (0.5 * 3 + 3 + 0.5 * 3))
    np.testing.assert_allclose(float(metrics.relative_rmse(analysis, truth)["h"]), expected)


def test_crps_matches_brute_force():
    rng = np.random.default_rng(0)
    members, observed = rng.normal(size=(7, 50)), rng.normal(size=50)
    skill = np.abs(members - observed).mean(axis=0)
    pairs = np.abs(members[:, None] - members[None, :]).sum(axis=(0, 1))
    np.testing.assert_allclose(metrics.crps_ensemble_kernel(members, observed),
                               skill - pairs / (2 * 49), rtol=1e-12)
    np.testing.assert_allclose(metrics.crps_ensemble_kernel(members, observed, fair=True),
                               skill - pairs / (2 * 7 * 6), rtol=1e-12)


def test_calibrated_ensemble_has_unit_spread_skill_and_flat_ranks():
    rng = np.random.default_rng(1)
    # Truth and members are exchangeable draws: the ensemble is calibrated by construction.
    draws = rng.normal(size=(9, 1, 40, 40))
    truth, analysis = planar(draws[0, 0][None]), planar(draws[1:])
    ratio = float(metrics.spread_skill_ratio(analysis, truth)["u"].squeeze())
    # 1600 points: the sampling error of the ratio is a few per cent.
    assert abs(ratio - 1.0) < 0.08
    counts = metrics.rank_histogram(analysis, truth, "u").values
    expected = 1600 / 9
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 26.1  # 99.9% quantile of chi-square with 8 degrees of freedom
    above = metrics.rank_histogram(analysis, truth + 100.0, "u").values
    assert above[-1] == 1600 and above[:-1].sum() == 0


def test_accessor_scores_an_analysis_and_errors():
    truth = xl.simulate("lorenz96", runs=1, seed=1, preset="small", n_outputs=11).isel(run=0)
    obs = truth.ldensf.observe(stations=40, noise=0.1, seed=0)
    analysis = obs.ldensf.assimilate(xl.simulator("lorenz96", preset="small"), method="letkf",
                                     members=8, seed=0, localization=4.0, inflation=1.04)
    score = analysis.ldensf.relative_rmse(truth)
    assert score["x"].dims == ("time",)
    assert float(score["x"][-1]) < float(score["x"][0])  # assimilation reduces the error
    assert float(analysis.ldensf.crps(truth)["x"][-1]) > 0
    with pytest.raises(xl.DataError, match=r"analysis' \['x'\] in the truth"):
        analysis.ldensf.rmse(truth.rename({"x": "y"}))
    with pytest.raises(xl.DataError, match="variable 'x' in the truth"):
        metrics.relative_rmse(analysis, truth.rename({"x": "y"}), ["x"])
    with pytest.raises(xl.DataError, match="variable 'z' in the analysis"):
        metrics.relative_rmse(analysis, truth, ["z"])
    with pytest.raises(xl.DataError, match="member"):
        metrics.spread(analysis.isel(member=0))


def test_spatial_anomaly_has_zero_area_weighted_mean_on_the_sphere():
    truth = xl.simulate("atmosphere", runs=1, seed=0, preset="small", n_outputs=2).isel(run=0)
    anomaly = metrics.spatial_anomaly(truth, ["h"])["h_anomaly"]
    weights = np.cos(np.deg2rad(truth["lat"]))
    weighted_mean = (anomaly * weights).sum(("lat", "lon")) / (weights.sum() * truth.sizes["lon"])
    # float64 sums of ~2000 values of ~100 m: round-off ~1e-12 m
    assert float(abs(weighted_mean).max()) < 1e-9
    shift = (anomaly - truth["h"]).std(("lat", "lon"))
    assert float(shift.max()) < 1e-9             # one constant per time: only the mean moved
    with pytest.raises(xl.DataError, match="variable 'q'"):
        metrics.spatial_anomaly(truth, ["q"])


# --- label alignment, units, options (issue 13) ------------------------------------------

LAT = {"units": "degrees_north", "standard_name": "latitude", "axis": "Y"}
LON = {"units": "degrees_east", "standard_name": "longitude", "axis": "X"}


def sphere(seed=0, members=6):
    """A truth on a lat/lon grid and an ensemble around it (members by standard_name)."""
    rng = np.random.default_rng(seed)
    lat, lon, time = np.linspace(-75.0, 75.0, 11), np.arange(0.0, 360.0, 20.0), [0.0, 60.0]
    coords = {"lat": ("lat", lat, LAT), "lon": ("lon", lon, LON),
              "time": ("time", time, {"axis": "T", "units": "s"})}
    attrs = {"units": "m s-1", "standard_name": "eastward_wind", "long_name": "eastward wind",
             "grid_mapping": "crs"}
    field = 10.0 + rng.normal(size=(2, 11, 18))
    truth = xr.Dataset({"u": (("time", "lat", "lon"), field, attrs)}, coords=coords)
    noise = rng.normal(scale=0.5, size=(members, 2, 11, 18)) + rng.normal(scale=0.3)
    analysis = xr.Dataset({"u": (("member", "time", "lat", "lon"), field + noise, attrs)},
                          coords={**coords, "member": ("member", np.arange(members),
                                                       {"standard_name": "realization"})},
                          attrs={"title": "analysis"})
    return analysis, truth


def by_hand(analysis, truth):
    """Area-weighted RMSE and relative RMSE of the mean per time, with numpy only."""
    mean = analysis["u"].values.mean(axis=0)
    weights = np.cos(np.deg2rad(truth["lat"].values))[None, :, None] * np.ones(mean.shape)
    error = ((mean - truth["u"].values) ** 2 * weights).sum(axis=(1, 2)) / weights.sum((1, 2))
    scale = (truth["u"].values ** 2 * weights).sum(axis=(1, 2)) / weights.sum(axis=(1, 2))
    return np.sqrt(error), np.sqrt(error / scale)


def test_rmse_and_relative_rmse_by_hand_on_the_sphere():
    analysis, truth = sphere()
    absolute, relative = by_hand(analysis, truth)
    np.testing.assert_allclose(metrics.rmse(analysis, truth)["u"].values, absolute, rtol=1e-12)
    np.testing.assert_allclose(metrics.relative_rmse(analysis, truth)["u"].values, relative,
                               rtol=1e-12)


@pytest.mark.parametrize("name", ["reversed latitudes", "shuffled longitudes", "km/h",
                                  "larger grid", "more times", "float32 labels"])
def test_truth_is_paired_by_label_and_converted_to_analysis_units(name):
    analysis, truth = sphere()
    absolute, relative = by_hand(analysis, truth)
    crps = metrics.crps(analysis, truth)["u"].values
    if name == "reversed latitudes":
        other = truth.isel(lat=slice(None, None, -1))
    elif name == "shuffled longitudes":
        other = truth.isel(lon=np.random.default_rng(0).permutation(truth.sizes["lon"]))
    elif name == "km/h":
        other = truth.copy()
        other["u"] = (truth["u"] * 3.6).assign_attrs(truth["u"].attrs, units="km h-1")
    elif name == "larger grid":   # the analysis on a sub-grid of the truth
        analysis = analysis.isel(lat=slice(2, -2), lon=slice(None, None, 2))
        absolute, relative = by_hand(analysis, truth.sel(lat=analysis["lat"],
                                                         lon=analysis["lon"]))
        crps = metrics.crps(analysis, truth.sel(lat=analysis["lat"], lon=analysis["lon"]))[
            "u"].values
        other = truth
    elif name == "more times":
        other = xr.concat([truth, truth.assign_coords(time=truth["time"] + 1000.0)], "time")
        other = other.isel(time=[3, 1, 2, 0])
    else:
        other = truth.assign_coords(lat=truth["lat"].astype(np.float32).astype(np.float64),
                                    lon=truth["lon"] + 1e-6)
    rmse = metrics.rmse(analysis, other)
    np.testing.assert_allclose(rmse["u"].values, absolute, rtol=1e-10)
    assert rmse["u"].attrs["units"] == "m s-1"
    np.testing.assert_allclose(metrics.relative_rmse(analysis, other)["u"].values, relative,
                               rtol=1e-10)
    np.testing.assert_allclose(metrics.crps(analysis, other)["u"].values, crps, rtol=1e-10)
    np.testing.assert_allclose(analysis.ldensf.rmse(other)["u"].values, absolute, rtol=1e-10)
    np.testing.assert_allclose(analysis.ldensf.relative_rmse(other)["u"].values, relative,
                               rtol=1e-10)


def test_scores_match_xskillscore_on_shuffled_converted_and_sub_grid_truths():
    xs = pytest.importorskip("xskillscore")
    analysis, truth = sphere(seed=3)
    sub = analysis.isel(lat=slice(1, -1), lon=slice(None, None, 3))
    other = truth.isel(lat=slice(None, None, -1))
    other["u"] = (other["u"] * 3.6).assign_attrs(units="km h-1")
    on_sub = truth.sel(lat=sub["lat"], lon=sub["lon"])
    weights = np.cos(np.deg2rad(on_sub["lat"])).broadcast_like(on_sub["u"].isel(time=0))
    space = ["lat", "lon"]
    expected = xs.rmse(sub["u"].mean("member"), on_sub["u"], dim=space, weights=weights)
    np.testing.assert_allclose(metrics.rmse(sub, other)["u"].values, expected.values,
                               rtol=1e-10)
    expected = xs.crps_ensemble(on_sub["u"], sub["u"], member_dim="member", dim=space,
                                weights=weights)
    np.testing.assert_allclose(metrics.crps(sub, other)["u"].values, expected.values,
                               rtol=1e-10)
    np.testing.assert_allclose(metrics.crps(sub, other, engine="xskillscore")["u"].values,
                               expected.values, rtol=1e-10)
    expected = xs.rank_histogram(on_sub["u"], sub["u"], member_dim="member")
    counts = metrics.rank_histogram(sub, other, "u")
    np.testing.assert_array_equal(counts.values, expected.values)
    np.testing.assert_array_equal(
        metrics.rank_histogram(sub, other, "u", engine="xskillscore").values, expected.values)
    per_time = metrics.rank_histogram(sub, other, "u", dim=space)
    np.testing.assert_array_equal(
        per_time.values, xs.rank_histogram(on_sub["u"], sub["u"], dim=space).values)


def test_rank_histogram_keeps_its_seeded_tie_breaking():
    analysis, truth = sphere(seed=4)
    analysis = analysis.round(0)
    truth = truth.round(0)    # many ties
    first = metrics.rank_histogram(analysis, truth, "u", seed=1)
    np.testing.assert_array_equal(first, metrics.rank_histogram(analysis, truth, "u", seed=1))
    assert int(first.sum()) == truth["u"].size
    assert first.dims == ("rank",) and first["rank"].values.tolist() == list(range(7))


def test_affine_units_of_the_truth_are_converted_as_values():
    analysis, truth = sphere()
    analysis["u"].attrs["units"] = "K"
    truth["u"].attrs["units"] = "K"
    reference = metrics.rmse(analysis, truth)["u"].values
    celsius = truth.copy()
    celsius["u"] = (truth["u"] - 273.15).assign_attrs(units="degC")
    np.testing.assert_allclose(metrics.rmse(analysis, celsius)["u"].values, reference,
                               rtol=1e-9)
    metres = truth.copy()
    metres["u"].attrs["units"] = "m"
    with pytest.raises(xl.UnitsError, match="truth's 'u'"):
        metrics.rmse(analysis, metres)


def test_truth_on_another_grid_is_refused_or_interpolated_on_request():
    analysis, truth = sphere()
    shifted = truth.assign_coords(lon=truth["lon"] + 5.0)
    with pytest.raises(xl.DataError, match=r"different grid; pass interpolate=True"):
        metrics.rmse(analysis, shifted)
    inside = analysis.isel(lon=slice(1, -1))
    interpolated = metrics.rmse(inside, shifted, interpolate=True)
    expected = metrics.rmse(inside, shifted.interp(lon=inside["lon"]))
    np.testing.assert_allclose(interpolated["u"].values, expected["u"].values, rtol=1e-12)
    with pytest.raises(xl.DataError, match="truth times"):
        metrics.rmse(analysis, truth.isel(time=[0]))
    nudged = truth.assign_coords(lat=truth["lat"] + 1e-6)   # within the default tolerance
    np.testing.assert_allclose(metrics.rmse(analysis, nudged)["u"].values,
                               metrics.rmse(analysis, truth)["u"].values)
    with pytest.raises(xl.DataError, match="truth grid"):
        metrics.rmse(analysis, nudged, tolerance=0.0)


def test_station_observations_as_truth_are_refused():
    truth = xl.simulate("lorenz96", runs=1, seed=1, preset="small", n_outputs=3).isel(run=0)
    analysis = truth.expand_dims(member=2)
    obs = truth.ldensf.observe(stations=5, noise=0.1, seed=0)
    with pytest.raises(xl.XLDEnSFError, match=r"spatial dims \['k'\].*station"):
        metrics.rmse(analysis, obs)
    with pytest.raises(xl.DataError, match="truth dims"):
        analysis.ldensf.crps(obs)


def test_member_dim_found_by_standard_name_or_given():
    analysis, truth = sphere()
    expected = metrics.spread_skill_ratio(analysis, truth)["u"].values
    renamed = analysis.rename(member="ens")
    np.testing.assert_allclose(metrics.spread_skill_ratio(renamed, truth)["u"].values,
                               expected)
    plain = renamed.drop_vars("ens")
    np.testing.assert_allclose(
        metrics.spread_skill_ratio(plain, truth, member_dim="ens")["u"].values, expected)
    np.testing.assert_allclose(metrics.crps(plain, truth, member_dim="ens")["u"].values,
                               metrics.crps(analysis, truth)["u"].values)
    with pytest.raises(xl.DataError, match="member_dim"):
        metrics.crps(analysis, truth, member_dim="realization")


def test_weights_and_dim_options():
    analysis, truth = sphere()
    mean = analysis["u"].mean("member")
    equal = np.sqrt(((mean - truth["u"]) ** 2).mean(("lat", "lon"))).values
    np.testing.assert_allclose(metrics.rmse(analysis, truth, weights=None)["u"].values, equal)
    custom = xr.DataArray(np.linspace(1.0, 2.0, 18), dims="lon")
    squared = ((mean - truth["u"]) ** 2 * custom).sum(("lat", "lon")) / (custom.sum() * 11)
    np.testing.assert_allclose(metrics.rmse(analysis, truth, weights=custom)["u"].values,
                               np.sqrt(squared.values))
    overall = metrics.rmse(analysis, truth, dim=["time", "lat", "lon"])["u"]
    assert overall.dims == ()
    np.testing.assert_allclose(float(overall), np.sqrt(np.mean(by_hand(analysis, truth)[0] ** 2)))
    per_lat = metrics.rmse(analysis, truth, dim="lon")["u"]
    assert set(per_lat.dims) == {"time", "lat"}
    with pytest.raises(xl.DataError, match="dim"):
        metrics.rmse(analysis, truth, dim="member")
    with pytest.raises(xl.DataError, match="weights"):
        metrics.rmse(analysis, truth, weights="cosine")


def test_output_attributes_and_keep_attrs():
    analysis, truth = sphere()
    relative = metrics.relative_rmse(analysis, truth)["u"]
    assert relative.attrs == {"long_name": "relative RMSE of u", "units": "1"}
    assert metrics.rmse(analysis, truth)["u"].attrs["units"] == "m s-1"
    assert metrics.crps(analysis, truth)["u"].attrs["units"] == "m s-1"
    ratio = analysis.ldensf.spread_skill(truth)["u"]
    assert ratio.attrs["units"] == "1" and "dimensionless" in ratio.attrs["long_name"]
    kept = metrics.relative_rmse(analysis, truth, keep_attrs=True)
    assert kept.attrs == {"title": "analysis"}
    assert kept["u"].attrs == {"grid_mapping": "crs", "long_name": "relative RMSE of u",
                               "units": "1"}
    assert "standard_name" not in metrics.rmse(analysis, truth, keep_attrs=True)["u"].attrs
    assert metrics.rmse(analysis, truth).attrs == {}


def test_accessor_names_rmse_absolute_and_relative_rmse_relative():
    analysis, truth = sphere()
    absolute, relative = by_hand(analysis, truth)
    np.testing.assert_allclose(analysis.ldensf.rmse(truth)["u"].values, absolute)
    np.testing.assert_allclose(analysis.ldensf.relative_rmse(truth)["u"].values, relative)
    accessor = xl.accessor.LDEnSFAccessor
    assert "xldensf.metrics.rmse" in accessor.rmse.__doc__
    assert "xldensf.metrics.relative_rmse" in accessor.relative_rmse.__doc__
    assert "Parameters" in accessor.relative_rmse.__doc__


def test_scalar_time_analysis_is_scored_at_its_own_time():
    """``analysis.isel(time=-1)`` keeps a scalar time coordinate: it must be scored against the
    truth at that time only (it was scored against every truth time, without an error)."""
    import numpy as np
    import xarray as xr

    import xldensf as xl

    coords = {"time": ("time", np.arange(5.0), {"axis": "T", "units": "s"}),
              "x": ("x", [0.0, 1.0, 2.0], {"axis": "X", "units": "m"})}
    truth = xr.Dataset({"u": (("time", "x"), np.arange(15.0).reshape(5, 3))}, coords=coords)
    analysis = truth.expand_dims(member=2) + xr.DataArray(np.arange(5.0), dims="time")
    scalar = xl.metrics.rmse(analysis.isel(time=-1), truth)
    assert scalar["u"].dims == ()
    assert float(scalar["u"]) == 4.0  # the error at time 4 only
    assert float(scalar["time"]) == 4.0
    kept = xl.metrics.rmse(analysis.isel(time=[-1]), truth)
    assert float(kept["u"].squeeze()) == 4.0
    with pytest.raises(xl.DataError, match="analysis time"):
        xl.metrics.rmse(analysis.isel(time=-1).assign_coords(time=9.5), truth)
