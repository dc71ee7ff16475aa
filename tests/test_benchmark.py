"""The LD-EnSF benchmark (xldensf.experiments and ``xldensf benchmark``), on a tiny Lorenz-96.

The surrogate here is trained for a few steps only: these tests check the pipeline (every
method runs on the same truths, the numbers are finite and consistent, the files are
written whole, bad input is refused), not the accuracy, which the recorded quick benchmark
in benchmarks/results measures.
"""

from __future__ import annotations

import json
import logging
import math

import pytest

import xldensf as xl
from xldensf.cli import main
from xldensf.errors import ConfigurationError, UnknownNameError
from xldensf.experiments import (
    METHODS,
    BenchmarkTruth,
    benchmark_truths,
    demo_report,
    markdown_report,
    prediction_step_seconds,
    regular_station_count,
    run_benchmark,
    summarize_runs,
)
from xldensf.experiments import methods as benchmark_methods
from xldensf.experiments.settings import OPTIONAL_METHODS
from xldensf.geometry import regular_layout
from xldensf.surrogate import fit, fit_vae

FRAMES = 5
#: Tiny settings of the opt-in methods (the recorded ones take minutes per truth).
TINY_VAE = {"steps": 20, "width": 16}
TINY_ENVAR = {"latent-envar": {"members": 4, "window": 2, "iterations": 2}}


@pytest.fixture(scope="module")
def surrogate():
    runs = xl.simulate("lorenz96", runs=6, seed=0, preset="small", n_outputs=FRAMES)
    return fit(runs, ["F"], stations=4, steps=30, finetune_steps=0, seed=0, latent_dim=4,
               reconstruction_width=16, encoder={"steps": 10}, progress=False)


@pytest.fixture(scope="module")
def result(surrogate, tmp_path_factory):
    output = tmp_path_factory.mktemp("benchmark")
    return run_benchmark("lorenz96", model=surrogate, truths=2, members=4, output=output,
                         progress=False), output


def test_regular_station_count_matches_the_paper_density():
    assert regular_station_count((150, 150)) == 100     # the paper's 10 x 10 (0.44 %)
    assert regular_station_count((64, 64)) == 16        # 4 x 4 = 0.39 %, nearest to 0.44 %
    assert regular_station_count((32, 64)) == 9         # 3 x 3 = 0.44 % of 2048
    assert regular_station_count((40,)) == 2            # at least 2 per dimension


def test_every_method_runs_on_every_truth(result):
    results, _ = result
    assert list(results["methods"]) == list(METHODS)
    assert results["stations"]["trained"] == 4           # the encoder's layout
    truths = {json.dumps(t) for t in results["truth_parameters"]}
    assert len(truths) == 2                              # two different held-out truths
    for method, entry in results["methods"].items():
        assert [run["truth"] for run in entry["runs"]] == [0, 1], method
        summary = entry["summary"]
        assert summary["runs"] == 2, (method, entry["runs"][0].get("failure"))
        curve = summary["relative_rmse"]["x"]
        assert len(curve) == FRAMES
        assert all(math.isfinite(value) and value >= 0 for value in curve)
        # the summary's final error is the mean of the truths' last frames
        finals = [run["final"]["x"] for run in entry["runs"]]
        assert summary["final"]["x"] == pytest.approx(sum(finals) / 2)
        assert summary["final"]["x"] == pytest.approx(curve[-1])
        assert 0 < summary["filter_seconds_per_cycle"] <= summary["seconds_per_cycle"]
        if method.startswith("ld-ensf"):   # the latent filter records its phases
            phases = entry["runs"][0]["phases"]
            assert set(phases) == {"forecast", "analysis", "decode"}
        # F's prior range is 4 wide; an error of 10 ranges would mean a runaway estimate
        # (the few-step surrogate here is not accurate, so no tighter bound is claimed)
        assert 0 <= summary["parameter_error"]["F"] < 10


def test_files_are_written_and_consistent(result):
    results, output = result
    loaded = json.loads((output / "ldensf_lorenz96_quick.json").read_text())
    assert loaded["methods"]["enkf"]["summary"]["final"] == \
        results["methods"]["enkf"]["summary"]["final"]
    table = (output / "ldensf_lorenz96_quick.md").read_text()
    for method in METHODS:
        assert f"| {method} |" in table
    assert "ratio full / latent" in table
    assert not list(output.glob("*.tmp*"))               # no temporary leftovers
    assert "targets" not in results                      # targets live in the docs
    assert "Targets" not in table


def test_benchmark_truths_are_the_truths_the_benchmark_ran(surrogate, result):
    found, _ = result
    truths = benchmark_truths("lorenz96", model=surrogate, last=2)
    prepared = list(truths)
    assert len(truths) == 2 and all(isinstance(one, BenchmarkTruth) for one in prepared)
    assert [one.parameters for one in prepared] == found["truth_parameters"]
    assert prepared[-1].observations["trained"].sizes["station"] == found["stations"]["trained"]
    assert truths.stations == found["stations"]["unseen"]
    # the documented seeds: truth 1000 + i, trained layout i, unseen layout 7919 + i
    second = prepared[1]
    assert second.index == second.seed == 1
    simulated = xl.simulate("lorenz96", runs=1, seed=1001, preset="small",
                            n_outputs=FRAMES).isel(run=0)
    assert second.truth.identical(simulated)
    unseen = simulated.ldensf.observe(stations=truths.stations, noise=0.1, seed=7920)
    assert second.observations["unseen"].identical(unseen)
    # a later slice is the same truths
    (again,) = benchmark_truths("lorenz96", model=surrogate, first=1, last=2)
    assert again.observations["trained"].identical(second.observations["trained"])
    with pytest.raises(ConfigurationError, match="first"):
        benchmark_truths("lorenz96", model=surrogate, first=2, last=2)
    with pytest.raises(ConfigurationError, match="surrogate"):
        benchmark_truths("kolmogorov", model=surrogate)
    with pytest.raises(ConfigurationError, match="shipped"):
        benchmark_truths("lorenz96")


def test_prediction_step_timing_is_positive(surrogate):
    times = prediction_step_seconds(surrogate, xl.simulator("lorenz96", preset="small"),
                                    members=4, repeats=2)
    assert times["latent_s_per_member"] > 0 and times["full_s_per_member"] > 0
    assert times["ratio"] == pytest.approx(
        times["full_s_per_member"] / times["latent_s_per_member"])


def test_the_old_import_paths_still_work():
    import xldensf.benchmark as old_benchmark
    import xldensf.demo as old_demo
    import xldensf.experiments as experiments

    for name in old_benchmark.__all__:
        assert getattr(old_benchmark, name) is getattr(experiments, name), name
    assert old_demo.run_demo is experiments.run_demo
    assert old_demo.shipped_model_path().name == "tsunami_small.ldensf"
    assert "moved to" in old_benchmark.__doc__.lower()
    assert "moved to" in old_demo.__doc__.lower()


def test_the_library_logs_progress_and_never_prints(surrogate, capsys, caplog):
    with caplog.at_level(logging.INFO, logger="xldensf.experiments"):
        run_benchmark("lorenz96", model=surrogate, truths=1, members=4,
                      methods=["enkf"], progress=True)
    captured = capsys.readouterr()
    assert "truth 1/1 enkf" not in captured.out + captured.err
    assert any("truth 1/1 enkf" in record.getMessage() for record in caplog.records)


def test_summaries_leave_failed_truths_out():
    ran = {"final": {"x": 0.2}, "mean": {"x": 0.3}, "spread_skill": {"x": 1.0},
           "parameter_error": {"F": 0.1}, "seconds_per_cycle": 2.0,
           "filter_seconds_per_cycle": 1.0, "relative_rmse": {"x": [1.0, 0.2]}}
    summary = summarize_runs([ran, {"failure": "FilterDivergenceError: diverged"}])
    assert summary["runs"] == 1 and summary["final"] == {"x": 0.2}
    assert summary["relative_rmse"] == {"x": [1.0, 0.2]}
    assert summarize_runs([{"failure": "skipped"}]) == {"runs": 0}


def test_the_demo_table_is_formatted_from_the_summary():
    row = {"method": "LD-EnSF (latent)", "eta_final": 0.41, "eta_mean": 0.6, "u_final": 0.5,
           "v_final": 0.4, "x0_error": 0.05, "y0_error": 0.02, "seconds_per_cycle": 0.3}
    table = demo_report({"stations": 16, "stations_fraction": 16 / 4096, "noise": 0.1,
                         "members": 20, "rows": [row], "truth": "out/t.nc",
                         "analysis": "out/a.nc", "figure": "out/a.png"}).splitlines()
    assert table[0] == ("xldensf demo: small tsunami, 16 stations (0.39% of the grid), "
                        "10% noise, 20 members")
    assert table[2] == ("    LD-EnSF (latent) |     0.410 |     0.600 |     0.500 |     0.400"
                        " |     0.050 |     0.020 |     0.300")
    assert table[-1] == "  wrote out/t.nc, out/a.nc and out/a.png"


def test_a_skipped_method_is_reported_not_hidden():
    report = markdown_report({
        "case": "lorenz96", "setting": {"name": "quick", "truths": 1, "members": 4,
                                        "noise": 0.1},
        "model": "given", "variables": ["x"], "parameters": {"F": 4.0},
        "stations": {"trained": 2, "unseen": 2, "grid_points": 40, "fraction": 0.05},
        "methods": {"ld-ensf-encoder": {"runs": [{"failure": "skipped: no encoder"}],
                                        "summary": {"runs": 0}}},
        "prediction_step": {"latent_s_per_member": 1e-6, "full_s_per_member": 1e-4,
                            "ratio": 100.0}})
    assert "| ld-ensf-encoder | - |" in report and "skipped: no encoder" in report


def test_bad_input_is_refused(surrogate):
    with pytest.raises(UnknownNameError, match="case"):
        run_benchmark("ocean", model=surrogate)
    with pytest.raises(UnknownNameError, match="method"):
        run_benchmark("lorenz96", model=surrogate, methods=["kalman"])
    with pytest.raises(ConfigurationError, match="truths"):
        run_benchmark("lorenz96", model=surrogate, truths=0)
    with pytest.raises(ConfigurationError, match="members"):
        run_benchmark("lorenz96", model=surrogate, members=1)
    with pytest.raises(ConfigurationError, match="surrogate variables"):
        run_benchmark("kolmogorov", model=surrogate, progress=False)


def test_command_line(surrogate, tmp_path, capsys):
    path = tmp_path / "l96.ldensf"
    surrogate.save(path)
    status = main(["benchmark", "lorenz96", "--quick", "--truths", "1", "--members", "4",
                   "--methods", "enkf", "ld-ensf-decoder", "--model", str(path),
                   "--output", str(tmp_path / "out"), "--quiet"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "| enkf |" in printed and "| ld-ensf-decoder |" in printed
    assert (tmp_path / "out" / "ldensf_lorenz96_quick.json").is_file()
    assert main(["benchmark", "lorenz96", "--quick", "--truths", "0", "--model", str(path),
                 "--quiet"]) == 1
    assert "truths" in capsys.readouterr().err


@pytest.fixture(scope="module")
def optional_result(surrogate, tmp_path_factory):
    output = tmp_path_factory.mktemp("optional")
    return run_benchmark("lorenz96", model=surrogate, truths=1, members=4, output=output,
                         methods=[*OPTIONAL_METHODS, "enkf"], progress=False,
                         vae_settings=TINY_VAE, filter_settings=TINY_ENVAR), output


def test_the_opt_in_methods_record_the_fields_of_the_others(optional_result):
    results, output = optional_result
    assert list(results["methods"]) == [*OPTIONAL_METHODS, "enkf"]
    fields = set(results["methods"]["enkf"]["runs"][0])
    for method in OPTIONAL_METHODS:
        run = results["methods"][method]["runs"][0]
        assert "failure" not in run, (method, run.get("failure"))
        # latent-envar also keeps its windows' variance factors, one per observation time
        assert set(run) - {"phases", "variance_factor", "calibration_factor"} == fields, method
        for key in ("final", "mean", "parameter_error"):
            assert all(math.isfinite(value) for value in run[key].values()), (method, key)
        assert len(run["relative_rmse"]["x"]) == FRAMES
        assert run["call_seconds"] > 0 and run["seconds"] >= run["call_seconds"]
        assert results["methods"][method]["summary"]["runs"] == 1
    assert results["methods"]["latent-envar"]["runs"][0]["members"] == 4   # its own size
    assert set(results["methods"]["latent-envar"]["runs"][0]["phases"]) == {"analysis",
                                                                          "decode"}
    envar_run = results["methods"]["latent-envar"]["runs"][0]
    assert len(envar_run["variance_factor"]) == len(envar_run["calibration_factor"]) == FRAMES
    assert all(value > 0 for value in envar_run["variance_factor"])
    assert results["methods"]["4dvar"]["runs"][0]["members"] == 1   # the plain analysis
    assert results["filter_settings"]["latent-envar"] == TINY_ENVAR["latent-envar"]
    assert results["vae"] == f"trained: {output / 'lorenz96_small.vae'}"
    table = (output / "ldensf_lorenz96_quick.md").read_text()
    for method in OPTIONAL_METHODS:
        assert f"| {method} |" in table
    assert "Latent-EnSF VAE: trained" in table


def test_the_default_methods_leave_the_opt_in_ones_out(result):
    results, _ = result
    assert not set(OPTIONAL_METHODS) & set(results["methods"])
    assert "vae" not in results


def test_a_vae_trained_once_is_reused(surrogate, optional_result, monkeypatch):
    results, output = optional_result

    def refuse(*args, **kwargs):
        raise AssertionError("the saved VAE should have been reused")

    monkeypatch.setattr(benchmark_methods, "fit_vae", refuse)
    again = run_benchmark("lorenz96", model=surrogate, truths=1, members=4, output=output,
                          methods=["latent-ensf"], progress=False, vae_settings=TINY_VAE)
    assert again["vae"] == f"reused: {output / 'lorenz96_small.vae'}"
    assert again["methods"]["latent-ensf"]["runs"][0]["final"] == \
        results["methods"]["latent-ensf"]["runs"][0]["final"]


def test_an_inapplicable_vae_is_a_recorded_failure(surrogate):
    runs = xl.simulate("lorenz96", runs=3, seed=0, preset="small", n_outputs=FRAMES)
    other = fit_vae(runs, stations=regular_layout(runs, 10), seed=0, **TINY_VAE)
    results = run_benchmark("lorenz96", model=surrogate, truths=1, members=4,
                            methods=["latent-ensf"], vae=other, progress=False)
    assert results["vae"] == "given"
    failure = results["methods"]["latent-ensf"]["runs"][0]["failure"]
    assert failure.startswith("ConfigurationError") and "station layout" in failure
    assert results["methods"]["latent-ensf"]["summary"] == {"runs": 0}
    assert "| latent-ensf | - |" in markdown_report(results)


def test_a_vae_that_cannot_be_trained_is_a_recorded_failure(surrogate):
    results = run_benchmark("lorenz96", model=surrogate, truths=1, members=4,
                            methods=["latent-ensf"], vae_settings={"variables": ["nope"]},
                            progress=False)
    assert results["vae"].startswith("failure: UnknownNameError")
    assert results["methods"]["latent-ensf"]["runs"][0]["failure"].startswith(
        "skipped: no VAE")


def test_filter_settings_of_unknown_methods_are_refused(surrogate):
    with pytest.raises(UnknownNameError, match="filter_settings"):
        run_benchmark("lorenz96", model=surrogate, truths=1, members=4, methods=["enkf"],
                      filter_settings={"kalman": {}}, progress=False)


def test_command_line_runs_an_opt_in_method(surrogate, tmp_path, capsys):
    path = tmp_path / "l96.ldensf"
    surrogate.save(path)
    assert main(["benchmark", "lorenz96", "--quick", "--truths", "1", "--members", "4",
                 "--methods", "4dvar", "--model", str(path), "--output", str(tmp_path),
                 "--quiet"]) == 0
    assert "| 4dvar |" in capsys.readouterr().out
