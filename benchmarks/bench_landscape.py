"""Loss-landscape evaluation throughput on the standard workloads (``workloads.json``).

For each workload: a 51-point interpolation from ``theta0`` to ``theta1`` and a 21×21 surface
around ``theta0`` (filter-normalized random directions; the workloads use PyTorch layouts, so
``filter_axis=0``), each (a) as one compiled ``interpolate`` / ``surface`` call (chunks of
``--chunk`` points under ``vmap``) and (b) as a Python loop of jitted single-point evaluations,
in the same run. Cost per point is reported relative to one forward pass (loss) on the same
batch, dispatched back to back like the loop's calls: every point needs one, so 1.0 is the
floor for a single evaluation (a vmapped chunk can go below it by batching the matrix products
of several points). Timings are medians of ``--repeats`` runs
after a compiling run. The memory section compiles a 101×101 surface on the MLP with several
chunk sizes and reports XLA's temporary-buffer size (``memory_analysis``): bounded by the chunk,
not the grid.

    python benchmarks/bench_landscape.py                  # all workloads
    python benchmarks/bench_landscape.py --quick          # mlp-small, few points (smoke test)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).parent))
import workloads as W
from bench_hvp import environment, result_path, timed

import jaxscape as js


def median_wall(fn, repeats: int) -> float:
    fn()  # compile / warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_workload(name: str, num_line: int, grid: int, chunk: int, repeats: int) -> dict:
    wl = W.build(name)
    params, batch, _ = W.to_jax(wl)
    theta1 = W.to_jax(wl._replace(theta0=wl.theta1))[0]
    loss = W.jax_loss_fn(wl.layers)
    k1, k2 = jax.random.split(jax.random.key(0))
    d1 = js.random_direction(k1, params, filter_axis=0)
    d2 = js.random_direction(k2, params, filter_axis=0)
    alphas = jnp.linspace(-0.5, 1.5, num_line)
    xs = ys = jnp.linspace(-1.0, 1.0, grid)

    forward = timed(loss, (params, batch), repeats)
    fwd = jax.jit(loss)
    # the reference: forward passes dispatched back to back, as the Python-loop rows do
    fwd_s = median_wall(lambda: [fwd(params, batch) for _ in range(num_line)], repeats) / num_line
    print(f"  forward pass: {1e3 * fwd_s:.2f} ms (back to back), {forward['ms']:.2f} ms (alone)")

    line = jax.jit(lambda a, b, d, al: js.interpolate(loss, a, b, d, al, chunk_size=chunk).loss)
    plane = jax.jit(
        lambda c, u, v, d, x, y: js.surface(loss, c, u, v, d, x, y, chunk_size=chunk).loss
    )
    one_line = jax.jit(
        lambda a, b, d, al: loss(jax.tree.map(lambda p, q: p + al * (q - p), a, b), d)
    )
    one_point = jax.jit(
        lambda c, u, v, d, x, y: loss(jax.tree.map(lambda p, e, f: p + x * e + y * f, c, u, v), d)
    )

    def loop_line():
        return [one_line(params, theta1, batch, a) for a in alphas]

    def loop_plane():
        return [one_point(params, d1, d2, batch, x, y) for y in ys for x in xs]

    rows = {}
    for label, run, points in (
        (
            f"interpolate, {num_line} points, compiled",
            lambda: line(params, theta1, batch, alphas),
            num_line,
        ),
        (f"interpolate, {num_line} points, Python loop", loop_line, num_line),
        (
            f"surface {grid}x{grid}, compiled",
            lambda: plane(params, d1, d2, batch, xs, ys),
            grid * grid,
        ),
        (f"surface {grid}x{grid}, Python loop", loop_plane, grid * grid),
    ):
        wall = median_wall(run, repeats)
        rows[label] = {
            "seconds": wall,
            "points_per_s": points / wall,
            "forward_passes_per_point": wall / points / fwd_s,
        }
        print(
            f"  {label:<38} {wall:8.3f} s  {points / wall:9.1f} points/s  "
            f"{wall / points / fwd_s:5.2f} forward passes per point"
        )
    # the compiled line agrees with the loop (same function)
    diff = float(jnp.max(jnp.abs(line(params, theta1, batch, alphas) - jnp.stack(loop_line()))))
    return {
        "forward_ms": 1e3 * fwd_s,
        "forward_alone_ms": forward["ms"],
        "num_params": wl.num_params,
        "rows": rows,
        "max_abs_diff_line_vs_loop": diff,
    }


def memory_study(name: str, grid: int, chunks: list[int]) -> dict[str, Any]:
    wl = W.build(name)
    params, batch, _ = W.to_jax(wl)
    loss = W.jax_loss_fn(wl.layers)
    k1, k2 = jax.random.split(jax.random.key(0))
    d1 = js.random_direction(k1, params, filter_axis=0)
    d2 = js.random_direction(k2, params, filter_axis=0)
    xs = ys = jnp.linspace(-1.0, 1.0, grid)
    out = {}
    for chunk in chunks:
        fn = jax.jit(
            lambda c, u, v, d, x, y, chunk=chunk: (
                js.surface(loss, c, u, v, d, x, y, chunk_size=chunk).loss
            )
        )
        mem = fn.lower(params, d1, d2, batch, xs, ys).compile().memory_analysis()
        temp = getattr(mem, "temp_size_in_bytes", None)
        out[str(chunk)] = {"temp_bytes": temp}
        print(f"  {grid}x{grid} surface, chunk {chunk:>5}: XLA temporaries {temp / 2**20:9.1f} MiB")
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="mlp,cnn,mlp-small")
    parser.add_argument("--chunk", type=int, default=8, help="points per vmap chunk")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="mlp-small, 5 and 3x3 points")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the JSON")
    args = parser.parse_args(argv)
    names = ["mlp-small"] if args.quick else [n for n in args.workloads.split(",") if n]
    num_line, grid, repeats = (5, 3, 1) if args.quick else (51, 21, args.repeats)
    result: dict[str, Any] = {
        "benchmark": "landscape",
        "environment": environment(),
        "chunk": args.chunk,
        "workloads": {},
    }
    path = result_path(args.out, "bench_landscape", args.quick)
    for name in names:
        print(f"{name}:")
        result["workloads"][name] = bench_workload(name, num_line, grid, args.chunk, repeats)
        path.write_text(json.dumps(result, indent=2))  # written as it goes
    mem_name = "mlp-small" if args.quick else "mlp"
    mem_grid, chunks = (11, [4, 121]) if args.quick else (101, [8, 64, 512, 101 * 101])
    print(f"memory ({mem_name}):")
    result["memory"] = {mem_name: memory_study(mem_name, mem_grid, chunks)}
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
