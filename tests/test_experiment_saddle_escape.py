"""experiments/saddle_escape.py --quick: the scientific claims, read back from results.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from experiment_scripts import load


def _run(tmp_path, *flags):
    out = tmp_path / "run"
    assert load("saddle_escape").main([*flags, "--out", str(out), "--quiet"]) == 0
    assert (out / "saddle_escape.png").is_file()
    return json.loads((out / "results.json").read_text())


def test_saddle_escape_quick(tmp_path):
    run = _run(tmp_path, "--quick")
    res, cfg = run["results"], run["config"]

    # 1. deep linear net: plateaus at the saddle levels L_k = ½ Σ_{α>k} s_α², each with a
    # small but non-zero gradient and a negative Hessian eigenvalue (near a saddle)
    s2 = np.asarray(cfg["singular_values"]) ** 2
    np.testing.assert_allclose(res["linear"]["saddle_levels"], [s2[k:].sum() / 2 for k in range(3)])
    for depth in map(str, cfg["linear_depths"]):
        lin = res["linear"][depth]
        assert lin["final_loss"] < 0.02 * lin["initial_loss"]
        for plateau in lin["plateaus"][:2]:  # the origin and the rank-1 saddle
            assert plateau["records"] >= 3, plateau
            assert 1e-4 < plateau["min_grad_norm"] < 0.05 * lin["peak_grad_norm"], plateau
            assert plateau["max_lambda_min"] < -1e-2 and plateau["min_index"] > 0, plateau

    esc = res["escape"]
    # 2. strict saddle (depth-2 chain, λ = ±2): GD at the closed-form time, SFN faster; from
    # the exact saddle (zero gradient) only perturbed GD leaves
    chain2 = esc["chain2_origin"]
    np.testing.assert_allclose(chain2["hessian_eigenvalues"], [-2.0, 2.0], atol=1e-12)
    for row in chain2["rows"]:
        if row["delta"] > 0:
            assert abs(row["gd"] - row["gd_closed_form"]) <= 1, row
            assert row["saddle_free_newton"] < row["gd"] / 3, row
        else:
            assert row["gd"] is None and row["saddle_free_newton"] is None, row
            assert row["perturbed_gd"] is not None, row
    # 3. zero-Hessian saddle (depth-3 chain): GD does not escape in the steps in which it left
    # the strict saddle many times over; SFN escapes; perturbed GD leaves the exact saddle
    chain3 = esc["chain3_origin"]
    assert chain3["hessian_eigenvalues"] == [0.0, 0.0, 0.0] and not chain3["strict"]
    slowest_strict = max(r["gd"] for r in chain2["rows"] if r["gd"] is not None)
    assert chain3["num_steps"] > 5 * slowest_strict
    for row in chain3["rows"]:
        assert row["gd"] is None, row
        assert row["perturbed_gd"] is not None, row
        assert (row["saddle_free_newton"] is not None) == (row["delta"] > 0), row


@pytest.mark.slow
def test_saddle_escape_mlp(tmp_path):
    mlp = _run(tmp_path, "--quick", "--mlp", "--mlp-steps", "600")["results"]["mlp"]
    assert mlp["final_full_loss"] < 0.5 * mlp["initial_full_loss"]
    # training has not stopped at a critical point: the gradient is far from zero
    assert mlp["final_full_grad_norm"] > 1e-2
    assert mlp["index"][-1] > 0


def test_saddle_escape_rejects_bad_flags(capsys):
    with pytest.raises(SystemExit):
        load("saddle_escape").main(["--keys", "0"])
    assert "--keys" in capsys.readouterr().err
