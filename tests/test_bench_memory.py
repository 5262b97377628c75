"""Smoke test: ``benchmarks/bench_memory.py --quick`` runs end to end (as ``test_cli`` runs the
other benchmarks) and shows remat's saving where the barriers are kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_memory_benchmark_quick(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    res = subprocess.run(
        [sys.executable, "benchmarks/bench_memory.py", "--quick", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = json.loads((tmp_path / "bench_memory_cpu_quick.json").read_text())["rows"]
    by = {(r["xla"], r["remat"]): r for r in rows}
    assert set(by) == {(x, r) for x in ("default", "keep barriers") for r in (False, True)}
    for r in rows:
        assert r["hvp_ms"] > 0 and r["hvp_rel_diff_vs_default_off"] < 1e-4, r
    off, on = by["keep barriers", False], by["keep barriers", True]
    assert on["hvp_temp_bytes"] < 0.75 * off["hvp_temp_bytes"]
    assert on["operator_temp_bytes"] < off["operator_temp_bytes"]
