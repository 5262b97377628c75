"""experiments/relu_pitfalls.py --quick: the scientific claims, read back from results.json."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from experiment_scripts import load


def test_relu_pitfalls_quick(tmp_path):
    script = load("relu_pitfalls")
    out = tmp_path / "run"
    assert script.main(["--quick", "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())["results"]
    assert (out / "relu_pitfalls.png").is_file()

    # 1. The constructed point: loss 1/8 (the best constant = best affine fit of |x|), zero
    # gradient, positive semi-definite Hessian with flat directions (the dead unit), which the
    # higher-order probe decides as a minimum; the global minimum fits exactly.
    local, best = res["bad_minimum"]["local"], res["bad_minimum"]["global"]
    assert local["loss"] == pytest.approx(1 / 8, abs=1e-15)
    assert local["grad_norm"] == 0.0
    assert local["dead_units"] == [False, True]
    lam = np.asarray(local["hessian_eigenvalues"])
    assert lam.min() > -1e-12 and local["num_zero_eigenvalues"] >= 3
    assert local["hessian_kind"] == "degenerate" and local["kind_with_probe"] == "minimum"
    assert 1 / 8 <= local["min_loss_on_sphere_radius_0.3"] < 0.2
    assert best["loss"] == 0.0 and best["grad_norm"] == 0.0

    # ... and gradient descent from random inits ends in bad minima often with 2 units, rarely
    # with more units.
    pw = res["random_inits"]["per_width"]
    widths = [str(m) for m in res["random_inits"]["widths"]]
    assert pw["2"]["fraction_bad_converged"] > 0.2
    assert pw[widths[-1]]["fraction_bad"] < pw["2"]["fraction_bad"] / 3
    for m in widths:
        assert pw[m]["fraction_diverged"] == 0.0
        assert pw[m]["fraction_bad"] + pw[m]["fraction_global"] == pytest.approx(1.0)

    # 2. Dead units: exactly zero gradient, exactly flat loss, exactly zero Hessian block,
    # parameters never move, never revived; more shift, more dead units; all dead → the
    # constant fit.
    blind = res["blind_spots"]
    shifts = [str(s) for s in blind["shifts"]]
    dead = [blind["per_shift"][s]["fraction_dead_init"] for s in shifts]
    assert all(b > a for a, b in itertools.pairwise(dead))
    for s in shifts:
        r = blind["per_shift"][s]
        assert r["max_abs_grad_dead_init"] == 0.0 and r["max_abs_grad_dead_final"] == 0.0
        assert r["max_param_change_dead"] == 0.0
        assert r["max_loss_change_dead_moves"] == 0.0
        assert r["max_abs_hessian_dead_block"] == 0.0
        assert r["dead_init_still_dead"] and r["revived_units"] == 0
        assert r["fraction_dead_final"] >= r["fraction_dead_init"]
    first, last = blind["per_shift"][shifts[0]], blind["per_shift"][shifts[-1]]
    assert last["final_loss_mean"] > 10 * first["final_loss_mean"]
    assert last["final_loss_median"] == pytest.approx(blind["constant_fit_loss"], abs=1e-6)


def test_relu_pitfalls_rejects_bad_flags(tmp_path):
    script = load("relu_pitfalls")
    for flags in (["--seeds", "0"], ["--widths", "-2"], ["--shifts", "-1"], ["--lr", "0"]):
        with pytest.raises(SystemExit):
            script.main(["--quick", "--out", str(tmp_path), *flags])
