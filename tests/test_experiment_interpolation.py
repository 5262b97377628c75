"""experiments/interpolation.py --quick: the scientific claims, read back from results.json."""

from __future__ import annotations

import json

import pytest
from experiment_scripts import load


def test_interpolation_quick(tmp_path):
    out = tmp_path / "run"
    assert load("interpolation").main(["--quick", "--out", str(out), "--quiet"]) == 0
    run = json.loads((out / "results.json").read_text())
    assert (out / "interpolation.png").is_file()
    res = run["results"]["mlp"]

    # training worked: from ln 10 ≈ 2.30 at initialization to well below it
    line = res["init_to_solution_train"]
    assert line["loss_at_0"] == pytest.approx(2.30, abs=0.1)
    assert line["loss_at_1"] < 0.1 and res["final_train_loss"] == pytest.approx(
        line["loss_at_1"], rel=1e-5
    )  # float32: the eager loss and the compiled line differ in the sixth digit

    # 1. init → solution: monotone on [0, 1] for both runs on the training data, no rise at all;
    # on test data at most a small rise near the end (overfitting)
    for run_name in ("init_to_solution_train", "init_to_solution_b_train"):
        assert res[run_name]["monotone_strict"] and res[run_name]["largest_rise"] == 0.0
        assert res[run_name]["argmin_alpha"] >= 1.0  # the minimum lies at or beyond θ*
    for run_name in ("init_to_solution_test", "init_to_solution_b_test"):
        assert res[run_name]["monotone"] and res[run_name]["largest_rise_rel"] < 0.01

    # 2. two solutions from two initializations: a barrier far above both endpoints, peaking
    # in the middle of the line
    for split in ("train", "test"):
        between = res[f"between_solutions_{split}"]
        assert between["rise_above_endpoints"] > 0.3
        assert between["barrier"] >= between["rise_above_endpoints"]
        assert 0.2 <= between["argmax_alpha"] <= 0.8

    # 3. the SGD path is much straighter than a random walk with the same step lengths, and
    # descends where the walk does not; the projection is the plane's own coordinates
    # (for the walk: √(Σ ℓ²) / Σ ℓ, its steps being nearly orthogonal in 1,482 dimensions)
    sgd, walk = res["plane_sgd"], res["plane_walk"]
    assert walk["random_walk_straightness"] == pytest.approx(sgd["random_walk_straightness"])
    assert walk["straightness"] == pytest.approx(walk["random_walk_straightness"], rel=0.15)
    assert sgd["straightness"] > 2.5 * walk["straightness"]
    assert sgd["initial_loss"] == walk["initial_loss"]
    assert sgd["final_loss"] < 0.1 < 2.0 < walk["final_loss"]
    assert sgd["projection_error"] < 1e-4 and walk["projection_error"] < 1e-4


def test_interpolation_rejects_bad_flags(capsys):
    script = load("interpolation")
    with pytest.raises(SystemExit):
        script.main(["--quick", "--width", "-3"])
    assert "--width" in capsys.readouterr().err
