"""experiments/teacher_student.py --quick: the scientific claims, read back from results.json."""

from __future__ import annotations

import json

import pytest
from experiment_scripts import load


def test_teacher_student_quick(tmp_path):
    out = tmp_path / "run"
    assert load("teacher_student").main(["--quick", "--out", str(out), "--quiet"]) == 0
    run = json.loads((out / "results.json").read_text())
    res, cfg = run["results"], run["config"]
    assert (out / "teacher_student.png").is_file()
    conf = res["configs"]
    small, big, over = conf["k6_n6"], conf["k9_n9"], conf["k9_n11"]
    for c in conf.values():
        assert c["num_seeds"] == cfg["num_seeds"]
        assert sum(c["count"].values()) == c["num_seeds"]
        # almost every run ends somewhere definite (global or a spurious minimum)
        assert c["fraction"]["unresolved"] <= 0.1, c
        if c["global_max_loss"] is not None:
            assert c["global_max_loss"] < cfg["global_tol"]
    # 1. spurious minima exist at k = n = 9: loss clearly > 0, gradient ~ 0, and the dense
    # Hessian there is positive definite (a strict minimum)
    assert big["count"]["spurious"] >= 2
    assert min(big["spurious_losses"]) > 1e-3
    assert big["spurious_max_grad_norm"] < cfg["grad_tol"]
    assert big["checked_all_minima"] is True
    assert min(big["checked_min_eig"]) > 1e-4
    assert max(big["checked_grad_norm"]) < cfg["grad_tol"]
    # 2. more spurious end points at k = 9 than at k = 6 (where Safran & Shamir saw ~0.3 %)
    assert small["spurious_fraction"] <= 0.05
    assert big["spurious_fraction"] > small["spurious_fraction"] + big["spurious_stderr"]
    # 3. over-parameterization (n = k + 2) reduces the fraction
    assert over["spurious_fraction"] < big["spurious_fraction"]
    # binomial standard error as stated
    p, n = big["spurious_fraction"], big["num_seeds"]
    assert big["spurious_stderr"] == pytest.approx((p * (1 - p) / n) ** 0.5)


def test_teacher_student_rejects_bad_flags(tmp_path):
    with pytest.raises(SystemExit):
        load("teacher_student").main(["--quick", "--seeds", "0", "--out", str(tmp_path)])


@pytest.mark.slow
def test_teacher_student_medium(tmp_path):
    """Medium size: k = 6 vs 10 (n = k) and n = 11, 12 at k = 10, with the Newton polish."""
    out = tmp_path / "run"
    args = ["--quick", "--ks", "6", "10", "--overparam-ks", "10", "--extra", "1", "2"]
    args += ["--seeds", "96", "--newton-steps", "6"]
    assert load("teacher_student").main([*args, "--out", str(out), "--quiet"]) == 0
    conf = json.loads((out / "results.json").read_text())["results"]["configs"]
    small, big = conf["k6_n6"], conf["k10_n10"]
    assert big["spurious_fraction"] > small["spurious_fraction"] + 3 * big["spurious_stderr"]
    for over in (conf["k10_n11"], conf["k10_n12"]):
        assert over["spurious_fraction"] < big["spurious_fraction"] - 3 * big["spurious_stderr"]
