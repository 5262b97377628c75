"""experiments/hessian_spectrum.py --quick: the scientific claims, read back from results.json.

The fast test runs the edge-of-stability part; the spectra (Lanczos top-k and stochastic Lanczos
quadrature compile for several seconds) are checked in the slow test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from experiment_scripts import load


def _run(tmp_path, *flags):
    out = tmp_path / "run"
    argv = ["--quick", "--out", str(out), "--quiet", *flags]
    assert load("hessian_spectrum").main(argv) == 0
    assert (out / "hessian_spectrum.png").is_file()
    return json.loads((out / "results.json").read_text())["results"]


def test_hessian_spectrum_edge_of_stability_quick(tmp_path):
    res = _run(tmp_path, "--parts", "edge")
    assert set(res) == {"edge_of_stability"}
    runs = res["edge_of_stability"]["runs"]
    assert set(runs) == {"1.0", "1.3"}
    for lr, run in runs.items():
        assert run["finite"] and run["threshold"] == pytest.approx(2 / float(lr))
        # the initial sharpness is above 2/η: gradient descent is unstable at first ...
        assert run["lambda_init"] > run["threshold"] and run["ratio_max"] > 1.1
        # ... and settles at the edge: λ_max within a few percent of 2/η at the end
        assert 0.9 < run["ratio_last_quarter_mean"] < 1.12, lr
        lo, hi = run["ratio_last_quarter_range"]
        assert 0.85 < lo <= hi < 1.15
        # while the loss keeps falling
        assert run["loss_final"] < run["loss_initial"] / 5
    # same initialization, two step sizes: the sharpness each settles at tracks 2/η
    ratio = runs["1.0"]["lambda_final"] / runs["1.3"]["lambda_final"]
    assert ratio == pytest.approx(1.3, rel=0.1)
    assert runs["1.0"]["lambda_init"] == runs["1.3"]["lambda_init"]


@pytest.mark.slow
def test_hessian_spectrum_spectra_quick(tmp_path):
    res = _run(tmp_path, "--parts", "spectrum")
    spec = res["spectrum_mlp"]
    first, last = spec["checkpoints"]["0"], spec["checkpoints"]["200"]
    assert last["train_loss"] < 0.05 < 2.0 < first["train_loss"]
    for point in (first, last):
        top = np.asarray(point["top"])
        assert top.shape == (20,) and np.all(np.diff(top) <= 0) and top[-1] > 0
        assert point["lambda_max"] == top[0]
        # a bulk concentrated near zero: most of the SLQ mass within 5% of λ_max of 0
        assert point["bulk_mass_near_zero"] > 0.85
        # a few outliers above the largest gap among the top 20: at most one per class
        assert 1 <= point["gap_count"] <= 10
    # training concentrates the bulk further and separates the outliers from it
    assert last["bulk_mass_near_zero"] > first["bulk_mass_near_zero"]
    assert spec["separation_growth"] > 1.2


def test_hessian_spectrum_rejects_bad_flags(capsys):
    script = load("hessian_spectrum")
    with pytest.raises(SystemExit):
        script.main(["--quick", "--k", "5"])
    assert "--k" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--quick", "--lrs", "-1"])
    assert "--lrs" in capsys.readouterr().err
