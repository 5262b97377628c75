"""experiments/spin_glass.py --quick: the scientific claims, read back from results.json."""

from __future__ import annotations

import json
import math

import pytest
from experiment_scripts import load


def _run(tmp_path, *flags):
    out = tmp_path / "run"
    assert load("spin_glass").main(["--quick", "--out", str(out), "--quiet", *flags]) == 0
    assert (out / "spin_glass.png").is_file()
    return json.loads((out / "results.json").read_text())["results"]


def test_spin_glass_quick(tmp_path):
    # the MLP part (4-5 s of compilation) runs in the slow test below: the 10 s budget
    res = _run(tmp_path, "--skip-mlp")
    assert res["mlp"] is None

    # Normalization: the library's p = 2 energy at the bottom eigenvector is λ_min/√N exactly,
    # within 3 Tracy-Widom standard deviations of the finite-N edge (→ -√2); the Gaussian part
    # of N × the Riemannian Hessian at random spins has second moment p(p - 1) = 6.
    norm = res["normalization"]
    assert norm["p2_energy_at_bottom_eigenvector"] == pytest.approx(
        norm["p2_exact_ground_state"], abs=1e-12
    )
    assert abs(norm["p2_exact_ground_state"] - norm["p2_tracy_widom_mean"]) < (
        3 * norm["p2_tracy_widom_std"]
    )
    assert norm["p2_limit"] == pytest.approx(-math.sqrt(2))
    minima = res["minima"]
    rh = minima["random_hessian"]
    assert rh["second_moment_expected"] == 6
    assert rh["second_moment"] == pytest.approx(6, rel=0.2)
    assert minima["threshold"] == pytest.approx(-2 * math.sqrt(2 / 3))

    # 1. GD ends at converged local minima (index 0 where checked) in a band above the ground
    # state, and the spread of their energies shrinks with N.
    per = minima["per_size"]
    sizes = [str(n) for n in minima["sizes"]]
    for n in sizes:
        r = per[n]
        assert r["grad_norm_median"] < 1e-3, n
        assert -1.8 < r["min"] and r["max"] < -1.0, n
        assert 0.3 < r["start_energy_var_times_n"] < 3, n  # Var H = N at random spins
    assert per[sizes[0]]["fraction_index0"] == 1.0
    assert per[sizes[-1]]["std"] < per[sizes[0]]["std"]
    assert per[sizes[-1]]["mean"] < per[sizes[0]]["mean"] < minima["threshold"] + 0.4

    # 3. Critical points: the index grows with the energy, minima are the lowest, the index
    # fraction follows the semicircle prediction, and classify's count agrees.
    idx = res["index"]
    assert idx["num_distinct"] >= 10
    assert idx["spearman_energy_index"] > 0.8
    assert idx["minima_lowest"]
    assert idx["index_fraction_vs_semicircle_mae"] < 0.1
    for check in idx["classify_check"]:
        assert check["num_negative"] == check["index"] and check["num_zero"] == 1
    energies = [idx["by_index"][k]["mean_energy"] for k in sorted(idx["by_index"], key=int)]
    assert energies[0] == min(energies) and energies[-1] == max(energies)


@pytest.mark.slow
def test_spin_glass_quick_mlp(tmp_path):
    res = _run(tmp_path)
    # 2. MLP test losses: the spread across initializations shrinks with width.
    pw = res["mlp"]["per_width"]
    widths = [str(w) for w in res["mlp"]["widths"]]
    assert pw[widths[-1]]["test_loss_std"] < 0.5 * pw[widths[0]]["test_loss_std"]
    assert pw[widths[-1]]["test_accuracy_mean"] > 0.9


def test_spin_glass_rejects_bad_flags(tmp_path):
    script = load("spin_glass")
    with pytest.raises(SystemExit):
        script.main(["--quick", "--out", str(tmp_path), "--widths", "0"])
    with pytest.raises(SystemExit):
        script.main(["--quick", "--out", str(tmp_path), "--sizes", "2"])
