"""Smoke tests: ``python -m jaxscape`` and the benchmarks run end to end at tiny sizes (the
report job itself is tested in ``test_report``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args, timeout=300):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_bad_flags_are_refused():
    bad = run("-m", "jaxscape", "spectrum", "--k", "0")
    assert bad.returncode == 2 and "--k must be an integer >= 1, got 0" in bad.stderr
    unknown = run("-m", "jaxscape", "spectra")
    assert unknown.returncode == 2 and "invalid choice: 'spectra'" in unknown.stderr


def test_benchmark_quick(tmp_path):
    res = run("benchmarks/bench_hvp.py", "--quick", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    data = json.loads((tmp_path / "bench_hvp_cpu_quick.json").read_text())
    ops = data["workloads"]["mlp-small"]["ops"]
    assert ops["hvp (fwd-over-rev)"]["ms"] > 0 and ops["eigsh k=5"]["num_matvecs"] <= 40
    acc = data["accuracy"]["mlp-small"]
    assert acc["lanczos_top1"]["runs"][-1]["max_rel_err"] < 1e-3  # Lanczos does converge


def test_train_benchmark_quick(tmp_path):
    res = run("benchmarks/bench_train.py", "--quick", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    rows = json.loads((tmp_path / "bench_train_cpu_quick.json").read_text())["rows"]
    assert len(rows) == 5
    assert rows["bare lax.scan loop, permutation per epoch"]["relative_to_bare"] == 1.0
    assert all(r["wall_s_300"] > 0 for r in rows.values())


def test_landscape_benchmark_quick(tmp_path):
    res = run("benchmarks/bench_landscape.py", "--quick", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    data = json.loads((tmp_path / "bench_landscape_cpu_quick.json").read_text())
    wl = data["workloads"]["mlp-small"]
    assert len(wl["rows"]) == 4 and wl["max_abs_diff_line_vs_loop"] < 1e-5
    mem = data["memory"]["mlp-small"]
    assert mem["4"]["temp_bytes"] < mem["121"]["temp_bytes"]  # bounded by the chunk


def test_workload_conv_implementations_agree():
    import sys

    import jax
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import workloads as W

    wl = W.build("cnn", batch=4)
    params, batch, _ = W.to_jax(wl)
    xla = jax.grad(W.jax_loss_fn(wl.layers, "xla"))(params, batch)
    mm = jax.grad(W.jax_loss_fn(wl.layers, "matmul"))(params, batch)
    for a, b in zip(jax.tree.leaves(xla), jax.tree.leaves(mm), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_import_leaves_the_report_stack_for_first_use():
    code = (
        "import sys, jaxscape as js\n"
        "heavy = ('matplotlib', 'scipy.optimize', 'jaxscape.report')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert js.Report is js.report.Report and 'ReportOptions' in dir(js)\n"
        "from jaxscape import ReportOptions\n"
        "assert 'matplotlib' in sys.modules\n"
        "try:\n"
        "    js.no_such_name\n"
        "except AttributeError as e:\n"
        "    assert 'no_such_name' in str(e)\n"
        "else:\n"
        "    raise SystemExit('no AttributeError')\n"
    )
    res = run("-c", code)
    assert res.returncode == 0, res.stderr


def test_throughput_benchmark_quick(tmp_path):
    res = run("benchmarks/bench_throughput.py", "--quick", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    data = json.loads((tmp_path / "bench_throughput_cpu_quick.json").read_text())
    mm = data["matmul"]
    assert mm["n"] == 256 and mm["default_flop_per_s"] > 0 and mm["highest_flop_per_s"] > 0
    rows = data["workloads"]["mlp-small"]["rows"]
    assert [r["batch"] for r in rows] == [512, 1024]  # the quick sweep: W3's batch, then 2×
    for r in rows:
        assert r["hvp_ms"] > 0 and r["hvp_flops"] > 0 and r["plan_bytes"] > 0
        # XLA's count of one HVP is a few forward passes' worth: 2 FLOPs per weight and example
        # make a forward pass, and the HVP is within 2-20 of it
        forward = 2 * data["workloads"]["mlp-small"]["num_params"] * r["batch"]
        assert 2 < r["hvp_flops"] / forward < 20, r
        assert r["hvp_flop_per_s"] == pytest.approx(r["hvp_flops"] / (r["hvp_ms"] / 1e3))
    assert rows[1]["hvp_flops"] == pytest.approx(2 * rows[0]["hvp_flops"], rel=0.05)
    solvers = data["solvers"]["mlp-small"]
    assert 10 <= solvers["eigsh k=10"]["products"] <= 30 and solvers["slq"]["products"] == 20
    assert "top" in solvers["eigsh k=10"] and len(solvers["eigsh k=10"]["top"]) == 3
