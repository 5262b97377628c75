"""experiments/index_vs_loss.py --quick: the scientific claims, read back from results.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from experiment_scripts import load


def _run(tmp_path, *flags):
    out = tmp_path / "run"
    assert load("index_vs_loss").main([*flags, "--out", str(out), "--quiet"]) == 0
    assert (out / "index_vs_loss.png").is_file()
    return json.loads((out / "results.json").read_text())["results"]


def test_power_fit_recovers_known_law():
    script = load("index_vs_loss")
    eps = np.linspace(0.1, 1.0, 25)
    alpha = 0.3 * np.maximum(eps - 0.25, 0) ** 1.5
    fixed = script.power_fit(eps, alpha, 1.5)
    assert abs(fixed["eps_c"] - 0.25) < 2e-3 and abs(fixed["amplitude"] - 0.3) < 5e-3
    assert fixed["rms_residual"] < 1e-3
    free = script.power_fit(eps, alpha)
    assert abs(free["exponent"] - 1.5) < 0.05 and free["rms_residual"] < 2e-3
    assert script.spearman([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.5]) == pytest.approx(1.0)


def test_index_vs_loss_quick(tmp_path):
    res = _run(tmp_path, "--quick")
    pts, summ, n = res["points"], res["summary"], res["train"]["num_params"]
    loss, index = np.asarray(pts["loss"]), np.asarray(pts["index"])
    gnorm, crit = np.asarray(pts["grad_norm"]), np.asarray(pts["critical"])
    assert res["train"]["final_loss"] < 0.1 * res["train"]["initial_loss"]
    # the index is a count of negative eigenvalues over n; consistent with λ_min
    np.testing.assert_allclose(index * n, np.round(index * n), atol=1e-9)
    assert np.all((index > 0) == (np.asarray(pts["lambda_min"]) < 0))
    # "critical" is exactly the stated gradient threshold; classify agrees on the index there
    np.testing.assert_array_equal(crit, gnorm <= summ["grad_tol"])
    for c, ci, i in zip(crit, pts["classify_index"], index, strict=True):
        assert (ci is not None) == c and (not c or ci == pytest.approx(i, abs=1e-12))
    assert summ["count_below"]["1e-08"] >= 1  # some searches do converge (quadratically)
    assert summ["num_critical"] < summ["num_points"]  # ... and some stall: not critical
    # the claim: the index grows with the loss (rank correlation over all end points)
    assert summ["spearman_all"] > 0.7
    assert index[np.argmax(loss)] > index[np.argmin(loss)] + 0.1


@pytest.mark.slow
def test_index_vs_loss_medium(tmp_path):
    res = _run(tmp_path, "--trajectory-points", "4", "--search-steps", "150")
    summ = res["summary"]
    assert summ["num_critical"] >= 4
    assert summ["spearman_critical"] > 0.6
    assert summ["highest_loss_critical"]["index"] > summ["lowest_loss_critical"]["index"]
    # both fits describe the stored critical points: their residuals recomputed from the data
    crit = np.asarray(res["points"]["critical"])
    eps = np.asarray(res["points"]["loss"])[crit]
    alpha = np.asarray(res["points"]["index"])[crit]
    for fit in (summ["fit_fixed_3_2"], summ["fit_free"]):
        pred = fit["amplitude"] * np.maximum(eps - fit["eps_c"], 0) ** fit["exponent"]
        rms = np.sqrt(np.mean((alpha - pred) ** 2))
        assert rms == pytest.approx(fit["rms_residual"], rel=1e-9)
    assert summ["fit_fixed_3_2"]["exponent"] == 1.5


def test_index_vs_loss_rejects_bad_flags(capsys):
    with pytest.raises(SystemExit):
        load("index_vs_loss").main(["--hidden", "-3"])
    assert "--hidden" in capsys.readouterr().err
