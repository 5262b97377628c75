"""Smoke tests: the demo job and the benchmark run end to end at tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--steps",
    "20",
    "--width",
    "8",
    "--num-examples",
    "64",
    "--num-iters",
    "20",
    "--num-probes",
    "2",
    "--trace-matvecs",
    "6",
    "--k",
    "2",
]


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


def test_spectrum_job_writes_results_and_resumes(tmp_path):
    out = tmp_path / "run"
    first = run("-m", "jaxscape", "spectrum", "--out", str(out), *TINY)
    assert first.returncode == 0, first.stderr
    assert f"output: {out}" in first.stdout
    report = json.loads((out / "results.json").read_text())
    for stage in ("init", "trained"):
        s = report[stage]
        assert len(s["top"]) == 2 and s["top"][0] >= s["bottom"][0]
        assert 0.0 <= s["index"] <= 1.0
    assert report["trained"]["loss"] < report["init"]["loss"]
    assert report["command"] == " ".join(["jaxscape", "spectrum", "--out", str(out), *TINY])
    for name in ("spectrum.png", "loss.png", "spectrum.npz"):
        assert (out / name).stat().st_size > 0

    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "stages").glob("*.npz")}
    again = run("-m", "jaxscape", "spectrum", "--out", str(out), *TINY)
    assert again.returncode == 0, again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (out / "stages").glob("*.npz")} == stamps
    assert json.loads((out / "results.json").read_text())["init"] == report["init"]

    changed = run("-m", "jaxscape", "spectrum", "--out", str(out), *TINY[2:], "--steps", "30")
    assert changed.returncode == 0, changed.stderr
    new = {p.name: p.stat().st_mtime_ns for p in (out / "stages").glob("*.npz")}
    assert new["init.npz"] == stamps["init.npz"]  # does not depend on --steps
    assert new["train.npz"] != stamps["train.npz"] and new["trained.npz"] != stamps["trained.npz"]


def test_bad_flags_are_refused():
    bad = run("-m", "jaxscape", "spectrum", "--k", "0")
    assert bad.returncode == 2 and "--k must be >= 1" in bad.stderr
    mixture = run("-m", "jaxscape", "spectrum", "--data", "mixture", "--num-classes", "1")
    assert mixture.returncode == 2 and "--num-classes must be >= 2" in mixture.stderr
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
