"""Smoke test of ``benchmarks/compare_pyhessian.py --quick`` (needs the ``compare`` extra).

Runs as a subprocess: the script is float32 throughout, while ``conftest.py`` turns on
``jax_enable_x64`` and strict promotion for this process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("pyhessian")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_pyhessian.py"


def test_quick_run_writes_json_and_networks_agree(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "compare_pyhessian.json").read_text())
    assert doc["versions"]["torch"] and doc["versions"]["jax"]
    (res,) = doc["workloads"]
    assert res["name"] == "mlp-small"
    check = res["check"]
    assert check["passed"]
    assert check["loss_rel_err"] <= 1e-5 and check["hvp_rel_err"] <= 1e-4
    # The dense float64 reference, and both sides produced finite numbers against it.
    ref = res["reference"]
    assert len(ref["top"]) == 6 and ref["trace"] > 0
    for row, k in (("top1", 1), ("top5", 5), ("trace", 1)):
        for who in ("pyhessian", "jaxscape"):
            r = res[row][who]
            assert len(r["values"]) == k and r["num_hvps"] > 0
            assert r["max_rel_err"] is not None and r["max_rel_err"] < 1.0
    # Lanczos from the same budget lands on the top eigenvalue.
    assert res["top1"]["jaxscape"]["max_rel_err"] < 1e-2
    assert res["hvp_time"]["jax_ms"] > 0 and res["hvp_time"]["torch_ms"] > 0
