"""dask: lazy observations, analyses written to zarr, the benchmark on dask.distributed, and
the package without dask.

The distributed tests use an in-process ``LocalCluster(processes=False)`` to stay fast; the
recorded speed-up with worker processes is in benchmarks/results/benchmark_distributed.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import xarray as xr

import xldensf as xl
from xldensf.cli import main
from xldensf.conventions import units
from xldensf.errors import ConfigurationError
from xldensf.experiments import run_benchmark
from xldensf.experiments.benchmark import distributed_client
from xldensf.observations import observe
from xldensf.surrogate import fit

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

FRAMES = 5
#: Per-record keys that are wall times (they differ between any two runs).
TIMES = {"seconds", "seconds_per_cycle", "filter_seconds_per_cycle", "call_seconds",
         "phases"}


@pytest.fixture(scope="module")
def truth() -> xr.Dataset:
    return xl.simulate("lorenz96", runs=1, seed=3, preset="small", n_outputs=21,
                       progress=False).isel(run=0)


@pytest.fixture(scope="module")
def surrogate():
    runs = xl.simulate("lorenz96", runs=6, seed=0, preset="small", n_outputs=FRAMES,
                       progress=False)
    return fit(runs, ["F"], stations=4, steps=30, finetune_steps=0, seed=0, latent_dim=4,
               reconstruction_width=16, encoder={"steps": 10}, progress=False)


# ------------------------------------------------------------------------ lazy observe
@pytest.mark.parametrize("noise", [0.1, 0.3 * units.dimensionless, 0.0])
def test_observe_on_a_chunked_dataset_stays_lazy_and_equals_the_eager_result(truth, noise):
    eager = observe(truth, 7, noise=noise, seed=2, every=2)
    lazy = observe(truth.chunk({"time": 5}), 7, noise=noise, seed=2, every=2)
    assert lazy["x"].chunks is not None                      # dask-backed until computed
    assert lazy["x"].chunks[0] == (3, 2, 3, 2, 1)            # the input's time chunks, every 2
    assert eager["x"].chunks is None
    computed = lazy.compute()
    xr.testing.assert_identical(computed, eager)             # to 0, attrs included
    assert np.array_equal(computed["x"].values, eager["x"].values)


def test_lazy_moving_stations_use_the_positions_of_their_own_time_chunk(truth):
    times = truth.time.values
    positions = (np.array([1.5, 10.25, 30.0]) + np.arange(len(times))[:, None]) % 40.0
    layout = xr.Dataset(coords={"time": ("time", times),
                                "k": (("time", "station"), positions, truth.k.attrs)})
    eager = observe(truth, layout, noise=0.0)
    lazy = observe(truth.chunk({"time": 4}), layout, noise=0.0)
    assert lazy["x"].chunks is not None
    np.testing.assert_array_equal(lazy["x"].values, eager["x"].values)


def test_lazy_observations_assimilate_as_the_eager_ones(truth):
    model = xl.simulator("lorenz96", preset="small")
    settings = {"method": "enkf", "members": 4, "seed": 0, "progress": False}
    eager = observe(truth, 10, noise=0.1, seed=1, every=4).ldensf.assimilate(model, **settings)
    lazy = observe(truth.chunk({"time": 5}), 10, noise=0.1, seed=1, every=4)
    analysis = lazy.ldensf.assimilate(model, **settings)
    np.testing.assert_array_equal(analysis["x"].values, eager["x"].values)


# ------------------------------------------------------------------------------- zarr
def _round_trip(dataset: xr.Dataset, path) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # zarr 3 notes that consolidated metadata is not v3
        dataset.to_zarr(path)
        return xr.open_zarr(path).load()


def _check_written(dataset: xr.Dataset, back: xr.Dataset) -> None:
    assert not [name for name, var in dataset.variables.items() if var.dtype == object]
    assert back.attrs == dataset.attrs
    for name, variable in dataset.variables.items():
        assert back[name].attrs == variable.attrs, name
        if np.issubdtype(variable.dtype, np.datetime64):
            # times are encoded as float "seconds since <origin>" (CF): exact to 1 ns
            delta = np.abs(back[name].values - variable.values).max()
            assert delta <= np.timedelta64(1, "us"), name
        else:
            np.testing.assert_array_equal(back[name].values, variable.values, err_msg=name)


def test_lazy_latent_and_full_order_analyses_write_to_zarr(surrogate, tmp_path):
    numeric = xl.simulate("lorenz96", runs=1, seed=1001, preset="small", n_outputs=FRAMES,
                          progress=False).isel(run=0)
    obs = numeric.chunk({"time": 2}).ldensf.observe(stations=8, noise=0.1, seed=0)
    latent = obs.ldensf.assimilate(surrogate, members=6, seed=0, progress=False)
    assert latent.attrs["xldensf_output"] == "lazy" and latent["x"].chunks is not None
    _check_written(latent.load(), _round_trip(latent, tmp_path / "latent.zarr"))

    dated = xl.simulate("lorenz96", runs=1, seed=1001, preset="small", n_outputs=FRAMES,
                        start="2011-03-11T05:46:00", progress=False).isel(run=0)
    obs = dated.chunk({"time": 2}).ldensf.observe(stations=8, noise=0.1, seed=0)
    full = obs.ldensf.assimilate(xl.simulator("lorenz96", preset="small"), method="letkf",
                                 members=4, seed=0, localization=4.0, progress=False,
                                 return_forecasts=True)
    for name, dataset in {"full": full, "obs": obs}.items():
        back = _round_trip(dataset, tmp_path / f"{name}.zarr")
        assert np.issubdtype(back.time.dtype, np.datetime64)
        assert back.time.encoding["units"].startswith("seconds since 2011-03-11")
        _check_written(dataset.load(), back)


# -------------------------------------------------------------------- dask.distributed
def _scores(result: dict) -> dict:
    """The result without wall times and environment: what must not depend on workers."""
    methods = {method: [{k: v for k, v in run.items() if k not in TIMES}
                        for run in entry["runs"]] for method, entry in result["methods"].items()}
    return {"methods": methods, "truth_parameters": result["truth_parameters"],
            "stations": result["stations"]}


def test_the_benchmark_on_a_distributed_client_equals_the_serial_run(surrogate):
    settings = {"model": surrogate, "truths": 2, "members": 4, "latent_members": 8,
                "methods": ["ld-ensf-decoder", "ld-ensf-decoder-unseen", "enkf", "letkf"],
                "progress": False}
    serial = run_benchmark("lorenz96", **settings)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        parallel = run_benchmark("lorenz96", client=client, **settings)
    assert json.dumps(_scores(parallel)) == json.dumps(_scores(serial))   # NaN == NaN
    assert parallel["environment"]["workers"] == 2 and serial["environment"]["workers"] is None
    assert [run["truth"] for run in parallel["methods"]["enkf"]["runs"]] == [0, 1]


@pytest.mark.slow  # starts worker processes: ~30-60 s on a loaded 2-core machine
def test_the_command_line_runs_the_benchmark_on_worker_processes(surrogate, tmp_path):
    path = tmp_path / "l96.ldensf"
    surrogate.save(path)
    arguments = ["benchmark", "lorenz96", "--quick", "--truths", "2", "--members", "4",
                 "--methods", "enkf", "ld-ensf-decoder", "--model", str(path), "--quiet"]
    assert main([*arguments, "--output", str(tmp_path / "serial")]) == 0
    assert main([*arguments, "--output", str(tmp_path / "workers"), "--workers", "2"]) == 0
    serial, parallel = (json.loads((tmp_path / name / "ldensf_lorenz96_quick.json").read_text())
                        for name in ("serial", "workers"))
    assert json.dumps(_scores(parallel)) == json.dumps(_scores(serial))
    assert parallel["environment"]["workers"] == 2


def test_distributed_client_options_are_checked(surrogate, tmp_path, capsys):
    with distributed_client() as client:
        assert client is None
    with pytest.raises(ConfigurationError, match="one of them"):
        with distributed_client(workers=2, scheduler="tcp://localhost:1"):
            pass
    with pytest.raises(ConfigurationError, match="workers"):
        with distributed_client(workers=0):
            pass
    path = tmp_path / "l96.ldensf"
    surrogate.save(path)
    assert main(["benchmark", "lorenz96", "--quick", "--model", str(path), "--workers", "0",
                 "--quiet"]) == 1  # an XLDEnSFError: exit 1 (docs/cli.md)
    assert "workers" in capsys.readouterr().err
    with pytest.raises(SystemExit):   # argparse: mutually exclusive
        main(["benchmark", "lorenz96", "--workers", "2", "--scheduler", "tcp://x:1"])


# ------------------------------------------------------------------------ without dask
def test_the_package_works_without_dask(tmp_path):
    script = textwrap.dedent("""
        import sys
        for name in ("dask", "dask.array", "distributed"):
            sys.modules[name] = None          # hidden: importing them raises ImportError
        import xldensf as xl
        from xldensf.errors import ConfigurationError
        from xldensf.experiments.benchmark import distributed_client
        truth = xl.simulate("lorenz96", runs=1, seed=0, preset="small", n_outputs=4,
                            progress=False).isel(run=0)
        obs = truth.ldensf.observe(stations=5, noise=0.1, seed=0)
        assert obs["x"].chunks is None
        analysis = obs.ldensf.assimilate(xl.simulator("lorenz96", preset="small"),
                                         method="enkf", members=4, seed=0, progress=False)
        assert analysis["x"].chunks is None
        try:
            with distributed_client(workers=2):
                pass
        except ConfigurationError as error:
            assert "distributed" in str(error)
        else:
            raise AssertionError("no error without distributed")
        assert not any(name.startswith(("dask", "distributed")) and module is not None
                       for name, module in sys.modules.items())
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
