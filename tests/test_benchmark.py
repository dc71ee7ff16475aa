"""The LD-EnSF benchmark (xldensf.benchmark and ``xldensf benchmark``), on a tiny Lorenz-96.

The surrogate here is trained for a few steps only: these tests check the pipeline (every
method runs on the same truths, the numbers are finite and consistent, the files are
written whole, bad input is refused), not the accuracy, which the recorded quick benchmark
in benchmarks/results measures.
"""

from __future__ import annotations

import json
import math

import pytest

import xldensf as xl
from xldensf.benchmark import (
    METHODS,
    _targets,
    markdown_report,
    prediction_step_seconds,
    regular_station_count,
    run_benchmark,
)
from xldensf.cli import main
from xldensf.errors import ConfigurationError, UnknownNameError
from xldensf.surrogate import fit

FRAMES = 5


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
    assert "targets" not in results                      # targets are for the quick tsunami


def test_prediction_step_timing_is_positive(surrogate):
    times = prediction_step_seconds(surrogate, xl.simulator("lorenz96", preset="small"),
                                    members=4, repeats=2)
    assert times["latent_s_per_member"] > 0 and times["full_s_per_member"] > 0
    assert times["ratio"] == pytest.approx(
        times["full_s_per_member"] / times["latent_s_per_member"])


def _summary(final: float, parameter: float, seconds: float) -> dict:
    return {"summary": {"runs": 1, "final": {"eta": final, "u": final},
                        "parameter_error": {"x0": parameter}, "seconds_per_cycle": 2 * seconds,
                        "filter_seconds_per_cycle": seconds}}


def test_targets_are_judged_from_the_numbers():
    results = {"methods": {"ld-ensf-decoder": _summary(0.04, 0.01, 0.01),
                           "letkf": _summary(0.2, 0.1, 0.5),
                           "ld-ensf-decoder-unseen": _summary(0.08, 0.01, 0.01)}}
    targets = _targets(results)
    assert targets["final_relative_rmse<=0.05"]["met"]
    assert targets["lower_final_error_than_letkf"]["met"]
    assert targets["filter_time_per_cycle_speedup>=20"]["value"] == pytest.approx(50)
    assert targets["total_time_per_cycle_speedup>=20"]["value"] == pytest.approx(50)
    assert not targets["unseen_layout_error_ratio<=1.5"]["met"]   # 0.08 / 0.04 = 2
    assert targets["ld-ensf (default likelihood on the trained layout)"]["value"] == \
        "ld-ensf-decoder"                       # no encoder ran: the decoder is the default
    results["methods"]["ld-ensf-encoder"] = _summary(0.06, 0.01, 0.01)
    targets = _targets(results)
    assert targets["ld-ensf (default likelihood on the trained layout)"]["value"] == \
        "ld-ensf-encoder"
    assert targets["unseen_layout_error_ratio<=1.5"]["value"] == pytest.approx(0.08 / 0.06)
    assert not targets["final_relative_rmse<=0.05"]["met"]
    results["methods"]["letkf"] = _summary(0.03, 0.1, 0.1)
    targets = _targets(results)
    assert not targets["lower_final_error_than_letkf"]["met"]
    assert not targets["filter_time_per_cycle_speedup>=20"]["met"]


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
                 "--quiet"]) == 2
    assert "truths" in capsys.readouterr().err
