"""experiments/critical_points_2d.py --quick: it runs, its claims hold, and a rerun resumes."""

from __future__ import annotations

import json

import numpy as np
from experiment_scripts import load


def test_critical_points_2d_quick(tmp_path):
    script = load("critical_points_2d")
    out = tmp_path / "run"
    assert script.main(["--quick", "--out", str(out), "--quiet"]) == 0
    path = out / "results.json"
    assert path.is_file()
    data = json.loads(path.read_text())
    res = data["results"]
    examples = res["examples"]
    assert set(examples) == set(script.EXAMPLES)

    # Every verdict with the higher-order probe is the known kind; without it the degenerate
    # ones are undecided and the non-degenerate ones already right.
    for name, r in examples.items():
        assert r["kind_with_probe"] == r["expected"], name
        assert r["agree"] is True
        want = "degenerate" if r["degenerate"] else r["expected"]
        assert r["kind_without_probe"] == want, name
        np.testing.assert_allclose(r["eigenvalues"], r["exact_eigenvalues"], atol=1e-8)
    # x² + y⁴ (minimum) and x² − y⁴ (saddle) have the same Hessian eigenvalues.
    np.testing.assert_allclose(
        examples["degenerate_minimum"]["eigenvalues"],
        examples["degenerate_saddle"]["eigenvalues"],
        atol=1e-12,
    )
    assert examples["degenerate_minimum"]["expected"] != examples["degenerate_saddle"]["expected"]

    # Newton is attracted to the saddle; SFN escapes faster than GD; GD follows the closed form.
    esc = res["escape"]
    opts = esc["optimizers"]
    assert opts["newton"]["escape_step"] is None
    assert opts["newton"]["final_distance"] < 1e-6
    gd, sfn = opts["gd"]["escape_step"], opts["saddle_free_newton"]["escape_step"]
    assert gd is not None and sfn is not None
    assert sfn < gd
    assert abs(gd - esc["gd_closed_form"]) <= 1
    for row in res["sweep"]:
        assert row["gd"] is not None and abs(row["gd"] - row["gd_closed_form"]) <= 1
        assert row["saddle_free_newton"] < row["gd"]
    assert all(res["summary"].values()), res["summary"]
    assert set(data["figures"]) == {"surfaces.png", "escape.png"}
    assert all((out / f).is_file() for f in data["figures"])
    assert not any(s["cached"] for s in data["stages"].values())

    # A second run with the same folder loads every recorded stage.
    assert script.main(["--quick", "--out", str(out), "--quiet"]) == 0
    again = json.loads(path.read_text())
    assert again["stages"] and all(s["cached"] for s in again["stages"].values())
    assert again["results"] == res
