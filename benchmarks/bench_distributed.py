"""Scaling table: the same analyses on 1, 2, 4 and 8 devices, with the difference from one device.

On the CPU the devices are forced host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``, one subprocess per count). They share
this machine's cores, so the table checks **correctness and layout, not speed**: every row must
match the one-device numbers to float32 rounding, and the per-device memory of a data-parallel
HVP must fall as the batch is split. On a machine with several accelerators, run it with
``--real`` to time the real devices instead (one process, meshes over the first 1, 2, 4, ...
devices).

Per device count it reports, for workload W1 (MLP 784-512-512-10, batch 256; ``--quick``: W3,
MLP 64-32-32-10):
- ``hvp``: one HVP with the batch sharded (``shard_batch``); the ms, XLA's per-device memory
  plan (arguments + temporaries), and the relative difference from one device;
- ``eigsh k=5``: top-5 Hessian eigenvalues, batch sharded; and again with the Lanczos basis
  split along n over the devices (``basis_sharding=mesh``);
- ``surface``: a ``--grid``² surface with the points split over devices (``mesh=``);
- ``slq``: spectral density, ``--probes`` probes split over devices.

    python benchmarks/bench_distributed.py            # 1, 2, 4, 8 forced CPU devices
    python benchmarks/bench_distributed.py --quick    # small workload, 1 and 4 devices
    python benchmarks/bench_distributed.py --real     # accelerators: real devices
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np


def worker(num_devices: int, quick: bool, grid: int, probes: int, repeats: int) -> dict:
    """One device count, run in this process (JAX already started with that many devices)."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    sys.path.insert(0, str(Path(__file__).parent))
    import workloads as W
    from bench_hvp import timed

    import jaxscape as js
    from jaxscape import distributed

    wl = W.build("mlp-small" if quick else "mlp")
    params, batch, v = W.to_jax(wl)
    loss = W.jax_loss_fn(wl.layers)
    key = jax.random.key(0)
    d1 = js.random_direction(jax.random.key(1), params, filter_axis=0)
    d2 = js.random_direction(jax.random.key(2), params, filter_axis=0)
    xs = jnp.linspace(-1.0, 1.0, grid)
    mesh = js.data_mesh(jax.devices()[:num_devices])
    sharded = js.shard_batch(batch, mesh)
    num_iters = 20 if quick else 50

    def hvp(p, b, v):
        return js.hvp(loss, p, b, v)

    def eig(p, b):
        op = js.hessian_operator(loss, p, b)
        return js.eigsh(key, op, p, k=5, num_iters=num_iters, tol=0.0).eigenvalues

    def eig_sharded_basis(p, b):
        op = js.hessian_operator(loss, p, b)
        kw = dict(k=5, num_iters=num_iters, tol=0.0, basis_sharding=mesh)
        return js.eigsh(key, op, p, **kw).eigenvalues

    def surf(c, u, w, b, x):
        return js.surface(loss, c, u, w, b, x, x, mesh=mesh).loss

    def slq(p, b):
        op = js.hessian_operator(loss, p, b)
        kw = dict(num_probes=probes, num_iters=num_iters, mesh=mesh)
        return js.spectral_density(key, op, p, **kw).density

    rows = {
        "hvp": (hvp, (params, sharded, v)),
        "eigsh k=5": (eig, (params, sharded)),
        "eigsh k=5, basis sharded": (eig_sharded_basis, (params, sharded)),
        "surface": (surf, (params, d1, d2, batch, xs)),
        "slq": (slq, (params, batch)),
    }
    out: dict[str, Any] = {}
    for name, (fn, args) in rows.items():
        t = timed(fn, args, repeats)
        mem = distributed.memory_estimate(jax.jit(fn).lower(*args).compile())
        out[name] = {
            "ms": t["ms"],
            "compile_s": t["compile_s"],
            "repeats": t["repeats"],
            "bytes_per_device": mem.arguments + mem.temporaries,
            "value": np.asarray(ravel_pytree(t["out"])[0]).tolist(),
        }
    return {"num_devices": num_devices, "platform": jax.devices()[0].platform,
            "device_kind": jax.devices()[0].device_kind, "rows": out}  # fmt: skip


def run_forced(counts: list[int], args: argparse.Namespace) -> list[dict]:
    """One subprocess per device count (JAX fixes the count at start-up)."""
    results = []
    for n in counts:
        env = dict(os.environ)
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}"
        ).strip()
        cmd = [sys.executable, __file__, "--worker", str(n), "--grid", str(args.grid),
               "--probes", str(args.probes), "--repeats", str(args.repeats)]  # fmt: skip
        if args.quick:
            cmd.append("--quick")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode:
            raise SystemExit(f"worker for {n} devices failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"  {n} device(s) done", flush=True)
    return results


def relative_difference(a: list[float], b: list[float]) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def table(results: list[dict]) -> list[dict]:
    base = results[0]
    out = []
    for res in results:
        for name, row in res["rows"].items():
            ref = base["rows"][name]
            out.append({
                "operation": name, "devices": res["num_devices"], "ms": row["ms"],
                "bytes_per_device": row["bytes_per_device"],
                "memory_vs_1": row["bytes_per_device"] / ref["bytes_per_device"],
                "rel_diff_vs_1": relative_difference(row["value"], ref["value"]),
            })  # fmt: skip
    return out


def print_table(rows: list[dict], title: str) -> None:
    print(f"\n{title}\n")
    print("| operation | devices | ms | MiB per device | memory vs 1 device | rel. diff vs 1 |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: (r["operation"], r["devices"])):
        print(f"| {r['operation']} | {r['devices']} | {r['ms']:.2f} | "
              f"{r['bytes_per_device'] / 2**20:.2f} | {r['memory_vs_1']:.2f} | "
              f"{r['rel_diff_vs_1']:.2e} |")  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="W3 and 1, 4 devices (smoke test)")
    p.add_argument("--devices", default=None, help="comma-separated counts (default 1,2,4,8)")
    p.add_argument("--real", action="store_true", help="time the real devices (accelerators)")
    p.add_argument("--grid", type=int, default=None, help="surface points per axis")
    p.add_argument("--probes", type=int, default=None, help="SLQ probes")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per row")
    p.add_argument("--out", default="benchmarks/results", help="folder for the JSON")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.grid = args.grid or (5 if args.quick else 21)
    args.probes = args.probes or (4 if args.quick else 8)
    args.repeats = args.repeats or (3 if args.quick else 10)
    if args.worker is not None:
        res = worker(args.worker, args.quick, args.grid, args.probes, args.repeats)
        print(json.dumps(res))
        return res
    default = "1,4" if args.quick else "1,2,4,8"
    counts = [int(c) for c in (args.devices or default).split(",")]
    if counts[0] != 1:
        counts = [1, *counts]
    if args.real:
        import jax

        counts = [c for c in counts if c <= jax.device_count()]
        results = [worker(n, args.quick, args.grid, args.probes, args.repeats) for n in counts]
    else:
        results = run_forced(counts, args)
    rows = table(results)
    kind = "real" if args.real else "forced host"
    title = (f"{'W3' if args.quick else 'W1'} on {results[0]['platform']} "
             f"({results[0]['device_kind']}), {kind} devices {counts}")  # fmt: skip
    print_table(rows, title)
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_hvp import environment, result_path

    path = result_path(args.out, "bench_distributed", args.quick)
    report = {"title": title, "environment": environment(), "grid": args.grid,
              "probes": args.probes, "rows": rows}  # fmt: skip
    path.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {path}")
    return report


if __name__ == "__main__":
    main()
