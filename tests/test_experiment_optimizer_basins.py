"""experiments/optimizer_basins.py --quick: the scientific claims, read back from results.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from experiment_scripts import load

OPTIMIZERS = ("sgd", "momentum", "adam")
PAIRS = ("sgd-momentum", "sgd-adam", "momentum-adam")


def test_optimizer_basins_quick(tmp_path):
    out = tmp_path / "run"
    assert load("optimizer_basins").main(["--quick", "--out", str(out), "--quiet"]) == 0
    run = json.loads((out / "results.json").read_text())
    res, cfg = run["results"], run["config"]
    assert (out / "optimizer_basins.png").is_file()
    sol, pairs = res["solutions"], res["pairs"]
    seeds = cfg["seeds"]

    for n in OPTIMIZERS:
        s = sol[n]
        # every optimizer learns digits from ln 10 ≈ 2.3 (test accuracy well above 10 %)
        assert np.all(np.asarray(s["train_loss"]["per_seed"]) < 0.5), n
        assert np.all(np.asarray(s["test_accuracy"]["per_seed"]) > 0.85), n
        # basins: every direction leaves the basin within the scanned distance
        assert s["basin_reached_unit"]["mean"] == 1.0 and s["basin_reached_filter"]["mean"] == 1.0
        assert 0 < s["basin_width_unit"]["mean"] < cfg["basin_max_distance"]
        # ε-sharpness grows with ε, between linearly (gradient) and quadratically (curvature)
        sharp = np.asarray(s["sharpness"]["per_seed"])
        assert sharp.shape == (seeds, 2) and np.all(sharp > 0)
        ratio = sharp[:, 0] / sharp[:, 1]
        assert np.all((ratio > 1.5) & (ratio < 4.5)), ratio

    for p in PAIRS:
        a, b = p.split("-")
        r = pairs[p]
        # the interpolation's ends are the two solutions (same train loss, float64 exact)
        ends = np.asarray(r["loss_at_ends"]["per_seed"])
        np.testing.assert_allclose(ends[:, 0], sol[a]["train_loss"]["per_seed"], rtol=1e-9)
        np.testing.assert_allclose(ends[:, 1], sol[b]["train_loss"]["per_seed"], rtol=1e-9)
        # different optimizers, different points and predictions: the solutions lie apart (Adam's
        # a sizeable fraction of the distance travelled from θ₀; SGD and SGD+momentum, which take
        # the same effective step, closer) and disagree on some test digits ...
        dist = np.asarray(r["distance"]["per_seed"])
        travelled = np.asarray(sol[a]["distance_from_init"]["per_seed"])
        assert np.all(dist > (0.3 if b == "adam" else 0.05) * travelled), p
        assert np.all(np.asarray(r["disagreement"]["per_seed"]) > 0), p
        assert r["disagreement"]["mean"] < 0.15, p
        # ... but with no real loss barrier between them: at --quick size (8 epochs, not
        # converged) the line between two solutions stays below the chord (the default run
        # finds shallow barriers, 10-50 % of the end losses, < 1e-3 nats)
        assert r["barrier_relative"]["mean"] < 0.2, p

    # plane through the 3 solutions (seed 0): Gram-Schmidt coordinates match the distances,
    # and the surface grid read at the points gives the solutions' losses
    plane = res["plane"]
    pts = np.asarray(plane["points"])
    d = {p: pairs[p]["distance"]["per_seed"][0] for p in PAIRS}
    np.testing.assert_allclose(pts[0], [0, 0], atol=1e-12)
    np.testing.assert_allclose(pts[1], [d["sgd-momentum"], 0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(pts[2]), d["sgd-adam"], rtol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(pts[2] - pts[1]), d["momentum-adam"], rtol=1e-9)
    np.testing.assert_allclose(plane["loss_at_points"], plane["loss_direct"], rtol=1e-9)
    np.testing.assert_allclose(
        plane["loss_direct"], [sol[n]["train_loss"]["per_seed"][0] for n in OPTIMIZERS], rtol=1e-9
    )


def test_optimizer_basins_bad_flag(capsys):
    with pytest.raises(SystemExit):
        load("optimizer_basins").main(["--seeds", "0"])
    assert "--seeds" in capsys.readouterr().err
