"""Sharded results equal single-device results (float64, 1e-10), on 4 and 8 forced host devices.

Each device count runs ``tests/distributed_checks.py`` once in a subprocess (JAX fixes its
device count at start-up, so it cannot change inside this process) and every check becomes
one test here: the relative error and the number of devices the work was laid out on.
The 8-device run covers the core checks only (``--core``), to keep the suite's time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import EXACT

import jaxscape as js
from jaxscape import distributed

SCRIPT = Path(__file__).with_name("distributed_checks.py")
CORE = [
    "batch layout", "loss", "hvp", "hessian_operator", "eigsh BE k=4",
    "interpolate (sharded batch)", "surface (sharded batch)", "ragged loss", "ragged hvp",
    "ragged eigsh", "interpolate (points over mesh)", "surface (points over mesh)",
    "spectral_density (probes over mesh)", "spectral_density (probes and sharded batch)",
    "spectral_density (8 probes per device, 40 steps)", "eigh_each (vmap and grad)",
    "map_points (training seeds)",
]  # fmt: skip
FULL = [
    *CORE, "ggn_operator", "averaged_operator (stacked)", "power_iteration", "estimate_trace",
    "spectral_density", "interpolate (stacked, sharded)", "ragged interpolate",
    "ragged surface", "interpolate (points, chunked)", "surface (points and sharded batch)",
    "curve_losses (points over mesh)", "estimate_trace (probes over mesh)",
    "find_critical_points (starts over mesh)", "map_points (explicit-axis mesh)",
]  # fmt: skip
RUNS = {4: FULL, 8: CORE}
_cache: dict[int, dict] = {}


def _run(num_devices: int) -> dict:
    if num_devices not in _cache:
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        args = [sys.executable, str(SCRIPT), str(num_devices)]
        if RUNS[num_devices] is CORE:
            args.append("--core")
        # a deadlock (see _util.eigh_each) shows as this timeout; a full run takes under a minute
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, proc.stderr[-4000:]
        _cache[num_devices] = json.loads(proc.stdout.strip().splitlines()[-1])
    return _cache[num_devices]


@pytest.mark.xdist_group("distributed-4")
@pytest.mark.parametrize("name", FULL)
def test_sharded_equals_single_device_4(name):
    _check(_run(4), name, 4)


@pytest.mark.xdist_group("distributed-8")
@pytest.mark.parametrize("name", CORE)
def test_sharded_equals_single_device_8(name):
    _check(_run(8), name, 8)


def _check(results: dict, name: str, num_devices: int) -> None:
    assert results["_meta"]["num_devices"] == num_devices
    assert name in results, f"check {name!r} did not run; ran {sorted(results)}"
    r = results[name]
    assert r["err"] <= EXACT, f"{name}: relative error {r['err']:.3g} on {num_devices} devices"
    # a scalar result, and a helper run on replicated inputs, have no layout to test
    if name not in ("estimate_trace (probes over mesh)", "eigh_each (vmap and grad)"):
        assert r["devices"] == num_devices, f"{name}: laid out on {r['devices']} devices"


# --------------------------------------------------------------------------- one process


def test_single_device_mesh_is_a_no_op():
    mesh = js.data_mesh()
    batch = {"x": jnp.arange(12.0).reshape(6, 2), "y": jnp.arange(6)}
    sharded = js.shard_batch(batch, mesh)
    np.testing.assert_array_equal(sharded["x"], batch["x"])
    f = lambda x: jnp.sum(jnp.sin(x) * batch["x"][0])  # noqa: E731
    xs = jnp.linspace(0, 1, 5)
    np.testing.assert_allclose(js.map_points(f, xs, mesh), jax.vmap(f)(xs), rtol=EXACT)


def test_ragged_loss_weights_the_parts_by_their_sizes():
    loss = lambda p, b: jnp.mean((b["x"] - p) ** 2)  # noqa: E731
    batch = {"x": jnp.arange(7.0)}
    parts = js.RaggedBatch({"x": batch["x"][:4]}, {"x": batch["x"][4:]})
    whole = loss(1.5, batch)
    assert float(js.ragged_loss(loss)(1.5, parts)) == pytest.approx(float(whole), rel=EXACT)
    # the naive mean of the two part means differs: the weights matter
    naive = (loss(1.5, parts.main) + loss(1.5, parts.rest)) / 2
    assert abs(float(naive) - float(whole)) > 1e-3
    assert js.ragged_loss(loss) == js.ragged_loss(loss)  # hashable: compiled programs reused
    assert js.ragged_loss(js.ragged_loss(loss)) == js.ragged_loss(loss)


def test_bad_input_is_named():
    mesh = js.data_mesh()
    with pytest.raises(TypeError, match=r"`mesh` must be a jax\.sharding\.Mesh"):
        js.shard_batch({"x": jnp.ones((4, 2))}, "gpu")
    with pytest.raises(TypeError, match=r"`mesh` must be a jax\.sharding\.Mesh"):
        js.interpolate(lambda p, b: jnp.sum(p), jnp.ones(2), jnp.zeros(2), None,
                       jnp.linspace(0, 1, 3), mesh=4)  # fmt: skip
    with pytest.raises(ValueError, match="disagree on the number of examples"):
        js.shard_batch({"x": jnp.ones((4, 2)), "y": jnp.ones(3)}, mesh)
    with pytest.raises(ValueError, match="example axis"):
        js.shard_batch({"x": jnp.ones(())}, mesh)
    with pytest.raises(ValueError, match="not an axis of the mesh"):
        js.shard_batch({"x": jnp.ones((4, 2))}, mesh, axis="model")
    with pytest.raises(ValueError, match="`chunk_size` must be an integer >= 1"):
        js.map_points(jnp.sin, jnp.ones(4), mesh, chunk_size=0)
    with pytest.raises(TypeError, match="`loss_fn` must be a function"):
        js.ragged_loss(3.0)


def test_memory_estimate_and_refusal():
    f = jax.jit(lambda w, x: jnp.sum(jnp.tanh(x @ w) ** 2))
    compiled = f.lower(jnp.ones((64, 64)), jnp.ones((32, 64))).compile()
    est = distributed.memory_estimate(compiled)
    assert est.arguments == (64 * 64 + 32 * 64) * 8
    assert est.total >= est.arguments and est.available > 0 and est.fits
    assert distributed.check_fits("f", compiled, "it", "hint") is compiled
    tiny = est._replace(available=est.total - 1)
    assert not tiny.fits


def test_grid_and_dense_hessian_refused_up_front(monkeypatch):
    """With the free memory made tiny, surface and hessian_matrix refuse before running, with
    the sizes and what to change; nothing is computed."""
    monkeypatch.setattr(distributed, "available_memory", lambda device=None: 1000)
    loss = lambda p, b: jnp.sum(jnp.tanh(p) ** 2)  # noqa: E731
    p = jnp.ones(50)
    with pytest.raises(MemoryError, match=r"surface: evaluating 9 points, 3 at a time, needs"):
        js.surface(loss, p, p, p, None, jnp.ones(3), jnp.ones(3), chunk_size=3)
    with pytest.raises(MemoryError, match="smaller chunk_size"):
        js.interpolate(loss, p, p, None, jnp.ones(4))
    with pytest.raises(MemoryError, match=r"hessian_matrix: the dense 50 × 50 Hessian"):
        js.hessian_matrix(loss, p, None)
    monkeypatch.undo()
    assert js.surface(loss, p, p, p, None, jnp.ones(3), jnp.ones(3)).loss.shape == (3, 3)


@pytest.mark.xdist_group("distributed-8")
def test_bench_distributed_quick_runs(tmp_path):
    """The scaling benchmark runs (1 and 2 forced devices), agrees with one device to float32
    rounding and splits the data-parallel HVP's memory."""
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_distributed.py"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, str(bench), "--quick", "--devices", "2", "--repeats", "1",
         "--out", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "bench_distributed_cpu_quick.json").read_text())["rows"]
    assert {(r["operation"], r["devices"]) for r in rows} == {
        (op, n)
        for op in ("hvp", "eigsh k=5", "eigsh k=5, basis sharded", "surface", "slq")
        for n in (1, 2)
    }
    for r in rows:
        assert r["rel_diff_vs_1"] < 1e-4, r
    by = {(r["operation"], r["devices"]): r for r in rows}
    assert by["hvp", 2]["memory_vs_1"] < 0.8
    assert (
        by["eigsh k=5, basis sharded", 2]["bytes_per_device"]
        < by["eigsh k=5", 2]["bytes_per_device"]
    )
