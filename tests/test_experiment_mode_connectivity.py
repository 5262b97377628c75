"""experiments/mode_connectivity.py --quick: the scientific claims, read back from results.json."""

from __future__ import annotations

import json
import math

import pytest
from experiment_scripts import load


def test_mode_connectivity_quick(tmp_path):
    out = tmp_path / "run"
    assert load("mode_connectivity").main(["--quick", "--out", str(out), "--quiet"]) == 0
    run = json.loads((out / "results.json").read_text())
    res, cfg = run["results"], run["config"]
    assert (out / "mode_connectivity.png").is_file()
    summ = res["summary"]
    for split in ("train", "test"):
        s = summ[split]
        # 1. the straight line between two independent solutions has a barrier far above the
        # endpoint losses (train endpoints are fitted: loss < 0.05)
        assert s["line_barrier"] > 0.3 and s["line_barrier"] > 5 * max(s["endpoints"]), split
        # 2. the fitted Bézier curve removes (almost) all of it
        assert s["curve_barrier"] < 0.2 * s["line_barrier"], split
        assert s["curve_max"] < 0.2 * s["line_max"] + max(s["endpoints"]), split
        # 3. weight matching lowers the straight-line barrier by more than half
        assert s["matched_barrier"] < 0.5 * s["line_barrier"], split
    assert max(summ["train"]["endpoints"]) < 0.05
    # the line's barrier is measured against the library's definition: barrier ≥ 0, ≤ max loss
    w = res["widths"][str(cfg["width"])]
    assert 0 <= w["train"]["line"]["barrier"] <= w["train"]["line"]["max"]

    # 4. random hidden-unit permutations are exact symmetries (float rounding only), move the
    # point far away, and there are (h!)^L of them
    perm = res["permutation"]
    eps = perm["eps"]
    assert perm["max_abs_loss_diff"] <= 100 * eps * max(1.0, perm["loss"]["test"])
    # ... yet π(a) is a different minimum: the straight line a → π(a) has a barrier
    assert perm["min_line_barrier_train"] > 10 * max(perm["loss"]["train"], 1e-3)
    assert perm["min_param_distance"] > 1.0
    h, depth = cfg["width"], cfg["depth"]
    assert perm["log10_num_equivalent_minima"] == pytest.approx(
        depth * math.log10(math.factorial(h)), rel=1e-12
    )


def test_mode_connectivity_rejects_bad_width(tmp_path):
    with pytest.raises(SystemExit):
        load("mode_connectivity").main(["--quick", "--width", "-3", "--out", str(tmp_path)])


@pytest.mark.slow
def test_mode_connectivity_width_sweep(tmp_path):
    """Medium size: weight matching helps more for wider nets (Ainsworth et al. 2023)."""
    out = tmp_path / "run"
    args = ["--quick", "--widths", "4", "64", "--width", "16", "--steps", "600"]
    assert load("mode_connectivity").main([*args, "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())["results"]["widths"]
    narrow, wide = res["4"]["train"], res["64"]["train"]
    assert wide["matched"]["barrier"] < narrow["matched"]["barrier"]
    assert wide["matched"]["barrier"] < 0.25 * wide["line"]["barrier"]
