"""Package-level behaviour: errors, options, registry, CLI, atomic files."""

import subprocess
import sys

import pytest

import xldensf as xl
from xldensf.cli import main


def test_unknown_case_lists_valid_ones():
    with pytest.raises(xl.UnknownNameError) as info:
        xl.simulate("tsunamii")
    message = str(info.value)
    for case in ("atmosphere", "kolmogorov", "lorenz96", "tsunami"):
        assert case in message
    assert "tsunamii" in message
    assert isinstance(info.value, xl.XLDEnSFError)
    assert isinstance(info.value, ValueError)


def test_unknown_preset_and_config_keys():
    with pytest.raises(xl.UnknownNameError, match="preset"):
        xl.simulator("lorenz96", preset="huge")
    with pytest.raises(xl.ConfigurationError, match="n_sitez"):
        xl.simulator("lorenz96", n_sitez=3)


@pytest.mark.parametrize("runs", [0, -3, 1.5])
def test_runs_must_be_positive_integer(runs):
    with pytest.raises(xl.ParameterError, match="runs"):
        xl.simulate("lorenz96", runs=runs, preset="small")


def test_parameter_names_checked():
    with pytest.raises(xl.ParameterError, match="missing"):
        xl.simulate("lorenz96", parameters={}, preset="small")
    with pytest.raises(xl.ParameterError, match="unknown"):
        xl.simulate("lorenz96", parameters={"F": 8.0, "G": 1.0}, preset="small")


def test_dtype_and_device_checked():
    with pytest.raises(xl.ConfigurationError, match="dtype"):
        xl.simulator("lorenz96", dtype="int32")
    with pytest.raises(xl.ConfigurationError, match="device"):
        xl.simulator("lorenz96", device="tpu:7")


def test_state_shape_dtype_checked_in_advance():
    import torch

    model = xl.simulator("lorenz96", preset="small")
    params = model.default_parameters(2)
    with pytest.raises(xl.ConfigurationError, match="state shape"):
        model.advance(torch.zeros(2, 1, 39, dtype=torch.float64), params, 0.0, 0.05)
    with pytest.raises(xl.ConfigurationError, match="dtype"):
        model.advance(torch.zeros(2, 1, 40, dtype=torch.float32), params, 0.0, 0.05)
    with pytest.raises(xl.ConfigurationError, match="multiple of dt"):
        model.advance(model.initial_state(params), params, 0.0, 0.07)


def test_set_options_validates_and_restores():
    assert xl.get_options()["progress"] is False  # the test fixture turns bars off
    with xl.set_options(progress=True):
        assert xl.get_options()["progress"] is True
    assert xl.get_options()["progress"] is False
    with pytest.raises(xl.UnknownNameError):
        xl.set_options(colour=True)
    with pytest.raises(xl.XLDEnSFError):
        xl.set_options(progress="yes")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.nc"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with xl.io.atomic_path(target) as temporary:
            temporary.write_text("partial")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.nc"]


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        with xl.io.atomic_path(tmp_path / "file.txt") as temporary:
            temporary.write_text("done")
    finally:
        os.umask(umask)
    assert (tmp_path / "file.txt").stat().st_mode & 0o777 == 0o644


def test_cli_simulate_and_error_exit_code(tmp_path, capsys):
    out = tmp_path / "l96.nc"
    assert main(["simulate", "lorenz96", "--seed", "1", "--quiet", "-o", str(out)]) == 0
    assert out.exists()
    assert main(["simulate", "lorenz96", "--runs", "0", "--quiet", "-o", str(out)]) == 1
    assert "runs" in capsys.readouterr().err


def test_cli_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "xldensf.cli", "--version"],
                          capture_output=True, text=True, check=True)
    assert xl.__version__ in done.stdout


def test_shipped_demo_model_matches_the_small_tsunami_grid():
    import numpy as np

    from xldensf.experiments import shipped_model_path

    model = xl.load_model(shipped_model_path())
    grid = xl.simulate("tsunami", runs=1, seed=0, preset="small", n_outputs=2)
    forecast = model.forecast({"x0": float(grid["x0"][0]), "y0": float(grid["y0"][0])})
    assert set(forecast.data_vars) >= {"u", "v", "eta"}
    np.testing.assert_allclose(forecast["x"].values, grid["x"].values)
    np.testing.assert_allclose(forecast["y"].values, grid["y"].values)
    assert forecast["eta"].attrs["units"] == "m"
