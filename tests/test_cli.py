"""The ``xldensf`` command line on files: simulate -> observe -> assimilate -> score,
netCDF and zarr, ``--config`` / ``--set`` precedence, exit codes and atomic outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import xldensf as xl
from xldensf.cli import build_parser, main

pytest.importorskip("zarr")


def _run(*argv: str | Path) -> int:
    return main([str(arg) for arg in argv])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small Lorenz-96 truth (11 frames) and its observations, written by the CLI."""
    directory = tmp_path_factory.mktemp("cli")
    truth, obs = directory / "truth.nc", directory / "obs.nc"
    assert _run("simulate", "lorenz96", "--seed", "1", "--quiet", "--set", "n_outputs=11",
                "-o", truth) == 0
    assert _run("observe", truth, "--stations", "20", "--noise", "0.1", "--seed", "0",
                "-o", obs) == 0
    return directory, truth, obs


def test_round_trip_matches_the_library(files, capsys):
    directory, truth_path, obs_path = files
    analysis_path = directory / "analysis.nc"
    assert _run("assimilate", obs_path, "--model", "lorenz96", "--method", "etkf",
                "--members", "6", "--seed", "0", "--quiet", "-o", analysis_path) == 0
    truth = xr.open_dataset(truth_path).load().isel(run=0)
    expected_obs = truth.ldensf.observe(20, noise=0.1, seed=0)
    expected = expected_obs.ldensf.assimilate(xl.simulator("lorenz96", "small"), method="etkf",
                                              members=6, seed=0, progress=False)
    with xr.open_dataset(obs_path) as obs, xr.open_dataset(analysis_path) as analysis:
        np.testing.assert_array_equal(obs["x"].values, expected_obs["x"].values)
        np.testing.assert_allclose(analysis["x"].values, expected["x"].values)

    capsys.readouterr()
    assert _run("score", analysis_path, truth_path) == 0
    table = capsys.readouterr().out
    rmse = float(xl.metrics.rmse(expected, truth)["x"].mean())
    assert "x_rmse" in table and "x_crps" in table and "mean over time" in table
    assert f"{rmse:.4g}" in table

    assert _run("score", analysis_path, truth_path, "--metric", "rmse", "crps",
                "-o", directory / "scores.json") == 0
    scores = json.loads((directory / "scores.json").read_text())
    assert set(scores["data_vars"]) == {"x_rmse", "x_crps"}
    np.testing.assert_allclose(scores["data_vars"]["x_rmse"]["data"],
                               xl.metrics.rmse(expected, truth)["x"].values)
    assert _run("score", analysis_path, truth_path, "-o", directory / "scores.csv") == 0
    header = (directory / "scores.csv").read_text().splitlines()[0]
    assert "x_relative_rmse" in header and "x_spread_skill" in header
    assert _run("score", analysis_path, truth_path, "-o", directory / "scores.nc") == 0
    with xr.open_dataset(directory / "scores.nc") as written:
        assert written["x_rmse"].dims == ("time",)


def test_zarr_in_and_out(files):
    directory, truth_path, _ = files
    truth_zarr, obs_zarr = directory / "truth.zarr", directory / "obs.zarr"
    assert _run("simulate", "lorenz96", "--seed", "1", "--quiet", "--set", "n_outputs=11",
                "-o", truth_zarr) == 0
    assert truth_zarr.is_dir()  # a zarr store, not a netCDF file named .zarr
    with xr.open_zarr(truth_zarr) as from_zarr, xr.open_dataset(truth_path) as from_nc:
        xr.testing.assert_identical(from_zarr.load(), from_nc.load())
    assert _run("observe", truth_zarr, "--layout", "8", "--seed", "0", "-o", obs_zarr) == 0
    assert _run("observe", truth_zarr, "--layout", "8", "--seed", "0", "-o", obs_zarr) == 0
    analysis_zarr = directory / "analysis.zarr"
    assert _run("assimilate", obs_zarr, "--model", "lorenz96", "--method", "etkf",
                "--members", "4", "--seed", "0", "--quiet", "-o", analysis_zarr) == 0
    with xr.open_zarr(analysis_zarr) as analysis:
        assert analysis["x"].dims == ("time", "member", "k")
    assert _run("score", analysis_zarr, truth_zarr, "-o", directory / "scores.zarr") == 0
    assert [p.name for p in directory.iterdir() if p.name.startswith(".")] == []


def test_config_file_set_and_flags_in_that_order(files, tmp_path):
    _, truth, _ = files
    config = tmp_path / "xldensf.toml"
    config.write_text('seed = 3\nmembers = 99\n\n[observe]\nstations = 5\nnoise = 0.2\n\n'
                      '[simulate]\nn_outputs = 4\n')
    out = tmp_path / "obs.nc"

    def stations(*extra: str) -> xr.Dataset:
        assert _run("observe", truth, "-o", out, "--config", config, *extra) == 0
        return xr.open_dataset(out).load()

    obs = stations()
    assert obs.sizes["station"] == 5 and obs.attrs["xldensf_seed"] == 3  # shared seed
    assert obs.x_error_std.attrs and "0.2" in obs.attrs["xldensf_noise"]
    assert stations("--set", "stations=7").sizes["station"] == 7
    assert stations("--set", "stations=7", "--stations", "9").sizes["station"] == 9
    # the station options are one choice: a higher level's --layout replaces stations = 5
    assert stations("--layout", "8").attrs["xldensf_layout"] == "regular 8"
    assert stations("--set", "layout=4").attrs["xldensf_layout"] == "regular 4"
    with pytest.raises(SystemExit) as exit_info:  # two in one level
        stations("--set", "layout=4", "--set", "stations=3")
    assert exit_info.value.code == 2
    # the simulator's own configuration through the [simulate] table
    assert _run("simulate", "lorenz96", "--quiet", "--config", config,
                "-o", tmp_path / "t.nc") == 0
    with xr.open_dataset(tmp_path / "t.nc") as simulated:
        assert simulated.sizes["time"] == 4 and simulated.attrs["xldensf_seed"] == 3
    # an output may come from the file as well
    config.write_text(f'[observe]\noutput = "{tmp_path / "from_config.nc"}"\n')
    assert _run("observe", truth, "--config", config) == 0
    assert (tmp_path / "from_config.nc").is_file()


def test_settings_are_typed_like_flags():
    parser = build_parser()
    args = parser.parse_args(["observe", "t.nc", "-o", "o.nc", "--noise", "0.05 m"])
    assert str(args.noise.units) == "meter"
    with pytest.raises(SystemExit) as exit_info:
        main(["observe", "t.nc", "-o", "o.nc", "--set", "stations=many"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["observe", "t.nc", "-o", "o.nc", "--set", "inflation=1.1"])  # not an option
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["score", "a.nc", "t.nc", "--set", "metric=['rmse', 'bias']"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("argv, message", [
    (["score", "missing.nc", "missing.nc"], "analysis: expected an existing file"),
    (["observe", "{truth}", "-o", "{dir}/o.nc", "--variables", "y"], "variable: expected one of"),
    (["observe", "{truth}", "-o", "{dir}/no/such/dir/o.nc"], "output directory"),
    (["observe", "{truth}", "-o", "{dir}/o.nc", "--config", "{dir}/none.toml"],
     "config file"),
    (["assimilate", "{truth}", "--model", "no-such-model", "-o", "{dir}/a.nc"], "model"),
    (["score", "{truth}", "{truth}", "-o", "{dir}/s.txt"], "suffix"),
    (["score", "{bad}", "{truth}"], "analysis: expected a netCDF file xarray can read"),
    (["score", "{truth}", "{bad}.zarr"], "truth: expected an existing file"),
])
def test_data_errors_exit_1_with_one_line(files, tmp_path, capsys, argv, message):
    directory, truth, _ = files
    bad = directory / "bad.nc"
    bad.write_text("not a netCDF file")
    argv = [a.format(truth=truth, dir=tmp_path, bad=bad) for a in argv]
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("xldensf: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_usage_errors_exit_2(capsys):
    for argv in (["observe"], ["score", "a.nc", "t.nc", "--metric", "bias"],
                 ["assimilate", "obs.nc", "-o", "a.nc"],  # --model is required
                 ["observe", "t.nc", "--set", "no-equals-sign"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert "--model" in capsys.readouterr().err


def test_help_shows_defaults(capsys):
    for command in ("simulate", "observe", "assimilate", "score", "benchmark"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "(default:" in text and "--config" in text and "--verbose" in text


def test_failed_write_leaves_no_partial_output(files, tmp_path, monkeypatch):
    _, truth, _ = files
    old = tmp_path / "old.zarr"
    assert _run("observe", truth, "--stations", "3", "--seed", "0", "-o", old) == 0

    def broken(self, path, *args, **kwargs):
        Path(path, "partial").write_text("half")
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_zarr", broken)
    assert _run("observe", truth, "--stations", "4", "--seed", "0", "-o", old) == 1
    assert _run("observe", truth, "--stations", "4", "-o", tmp_path / "new.zarr") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.zarr"]
    with xr.open_zarr(old) as kept:
        assert kept.sizes["station"] == 3

    def broken_netcdf(self, path, *args, **kwargs):
        Path(path).write_text("half")
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken_netcdf)
    assert _run("observe", truth, "--stations", "4", "-o", tmp_path / "new.nc") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.zarr"]


def test_console_entry_point(tmp_path):
    script = Path(sys.executable).with_name("xldensf")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "xldensf.cli"]
    done = subprocess.run([*command, "score", str(tmp_path / "a.nc"), str(tmp_path / "t.nc")],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.startswith("xldensf: error: analysis: expected an existing file")
    assert "Traceback" not in done.stderr
    done = subprocess.run([*command, "score", "--metric", "bias"], capture_output=True,
                          text=True)
    assert done.returncode == 2


def test_assimilate_with_a_saved_latent_model(tmp_path, capsys):
    from xldensf.experiments import shipped_model_path

    model = shipped_model_path("tsunami", "small")
    truth, obs, analysis = tmp_path / "t.nc", tmp_path / "o.nc", tmp_path / "a.nc"
    assert _run("simulate", "tsunami", "--seed", "7", "--quiet", "--set", "n_outputs=3",
                "-o", truth) == 0
    assert _run("observe", truth, "--layout", "5x5", "--seed", "0", "-o", obs) == 0
    assert _run("assimilate", obs, "--model", model, "--members", "4", "--seed", "0",
                "--quiet", "-o", analysis) == 0
    with xr.open_dataset(obs) as observations, xr.open_dataset(analysis) as written:
        expected = observations.load().ldensf.assimilate(xl.load_model(model), members=4,
                                                         seed=0, progress=False)
        assert written.attrs["xldensf_method"] == "ld-ensf"
        np.testing.assert_allclose(written["eta"].values, expected["eta"].values)
    capsys.readouterr()
    assert _run("score", analysis, truth, "--metric", "rmse") == 0
    table = capsys.readouterr().out
    assert "eta_rmse" in table and "m s-1" in table  # units of the u, v scores


def test_verbose_logs_settings_and_the_traceback(files, capsys):
    _, truth, _ = files
    assert main(["score", str(truth), str(truth), "--set", "run=5", "-v"]) == 1
    err = capsys.readouterr().err
    assert "DEBUG xldensf.cli: settings of score" in err and "Traceback" in err
    assert "xldensf: error: truth run: expected an index below 1, found 5" in err


def test_zarr_without_zarr_installed_is_a_data_error(files, tmp_path, monkeypatch, capsys):
    import importlib.util

    _, truth, _ = files
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "zarr" else find_spec(name, *a))
    assert main(["observe", str(truth), "-o", str(tmp_path / "o.zarr")]) == 1
    assert "xldensf[dask]" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
