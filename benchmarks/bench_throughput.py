"""Device throughput: HVPs/s at batch sizes that fill the device, FLOP/s against the device's
measured matmul rate, memory, and ``eigsh(k=10)`` / SLQ end to end.

This is the benchmark to run on an accelerator (it runs unchanged on a CPU, at smaller sizes):

- **Matmul rate.** The median time of a jitted float32 ``n × n`` matmul (``2 n³`` FLOPs), at
  JAX's default precision (which on NVIDIA Ampere and later GPUs may use TF32 for float32) and
  at ``precision="highest"``. It is the reference the achieved FLOP/s are divided by.
- **Batch sweep.** For each workload (``workloads.json``: W1 MLP, W2 CNN, W3 small MLP) the
  batch is doubled from the workload's own size until the examples per second gain less than
  ``--saturation`` over the previous size (the device is full), the HVP's memory plan would
  exceed ``--memory-fraction`` of the device's free memory (checked before it runs,
  ``jaxscape.distributed.memory_estimate``), or ``--max-batch-factor`` is reached. Per size:
  gradient and HVP (forward-over-reverse) ms, HVPs/s, examples/s, HVP ÷ gradient, XLA's FLOP
  count of one HVP (``compiled.cost_analysis()``), the achieved FLOP/s and their fraction of
  the default-precision matmul rate, XLA's memory plan (arguments + temporaries + outputs), and
  the device's peak bytes in use where the backend reports them (GPUs and TPUs; the peak is
  over the whole process, so it is that of the largest program so far).
- **Solvers end to end** at the workload's own batch (``--solver-batch-factor`` to scale it):
  ``eigsh(k=10)`` on ``hessian_operator`` (Lanczos, ``tol=1e-5``, at most ``--eigsh-iters``
  products) and ``spectral_density`` (``--probes`` probes × ``--slq-iters`` steps), with their
  products and ms per product, linearization and reorthogonalization included.

Timings are medians of ``--repeats`` runs after a warm-up run, compile time apart, with
params, batch and vectors passed as arguments. It prints a table and writes
``bench_throughput_<platform>[_quick].json`` as it goes.

    python benchmarks/bench_throughput.py            # W1, W2, W3
    python benchmarks/bench_throughput.py --quick    # W3, two batch sizes: seconds
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import workloads as W
from bench_hvp import environment, result_path, timed

import jaxscape as js
from jaxscape import distributed


def matmul_rate(n: int, repeats: int) -> dict[str, Any]:
    """FLOP/s of a float32 ``n × n`` matmul at the default and the highest precision."""
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    out: dict[str, Any] = {"n": n, "flops": 2.0 * n**3}
    for label, precision in (("default", None), ("highest", jax.lax.Precision.HIGHEST)):
        r = timed(lambda x, y, p=precision: jnp.matmul(x, y, precision=p), (a, b), repeats)
        out[f"{label}_ms"] = r["ms"]
        out[f"{label}_flop_per_s"] = out["flops"] / (r["ms"] / 1e3)
    return out


def xla_flops(compiled) -> float | None:
    """XLA's FLOP count of a compiled program (None where the backend gives none)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    flops = (cost or {}).get("flops")
    return float(flops) if flops is not None and flops > 0 else None


def peak_bytes() -> int | None:
    """The device's peak bytes in use so far (None where the backend does not report it)."""
    stats = jax.devices()[0].memory_stats()
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def hvp_program(loss, wl):
    """``(hvp, args, compiled)``: the HVP at ``wl``'s batch, its arguments, compiled once for
    XLA's memory plan and FLOP count (``timed`` compiles its own copy, to time the compile)."""
    args = W.to_jax(wl)

    def hvp(p, b, v):
        return js.hvp(loss, p, b, v)

    return hvp, args, jax.jit(hvp).lower(*args).compile()


def sweep_point(loss, program, repeats: int, budget_s: float, rate: float) -> dict[str, Any]:
    """Gradient and HVP of one batch size: times, FLOPs, FLOP/s, memory."""
    hvp, (params, batch, v), compiled = program
    grad = timed(jax.grad(loss), (params, batch), repeats, budget_s)
    h = timed(hvp, (params, batch, v), repeats, budget_s)
    flops = xla_flops(compiled)
    n = int(jax.tree.leaves(batch)[0].shape[0])
    row = {
        "batch": n,
        "gradient_ms": grad["ms"],
        "hvp_ms": h["ms"],
        "hvp_repeats": h["repeats"],
        "hvp_compile_s": h["compile_s"],
        "hvps_per_s": 1e3 / h["ms"],
        "examples_per_s": n * 1e3 / h["ms"],
        "hvp_x_gradient": h["ms"] / grad["ms"],
        "hvp_flops": flops,
        "hvp_flop_per_s": None if flops is None else flops / (h["ms"] / 1e3),
        "plan_bytes": distributed.memory_estimate(compiled).total,
        "peak_bytes_in_use": peak_bytes(),
    }
    row["fraction_of_matmul_rate"] = (
        None if row["hvp_flop_per_s"] is None else row["hvp_flop_per_s"] / rate
    )
    return row


def batch_sweep(name: str, args: argparse.Namespace, rate: float) -> dict[str, Any]:
    """Double the batch until throughput saturates, memory would not fit, or the cap."""
    base = W.build(name)
    loss = W.jax_loss_fn(base.layers)
    rows: list[dict[str, Any]] = []
    stop = f"reached --max-batch-factor {args.max_batch_factor}"
    factor = 1
    while factor <= args.max_batch_factor:
        wl = W.build(name, batch=base.x.shape[0] * factor)
        program = hvp_program(loss, wl)  # compiled, not run: the memory check comes first
        need = distributed.memory_estimate(program[2]).total
        free = distributed.available_memory()
        if need > args.memory_fraction * free:
            stop = (
                f"batch {wl.x.shape[0]}: the HVP plans {need / 2**20:,.0f} MiB, over "
                f"{args.memory_fraction:.0%} of {free / 2**20:,.0f} MiB free"
            )
            break
        row = sweep_point(loss, program, args.repeats, args.budget, rate)
        rows.append(row)
        print_row(name, row, flush=True)
        if len(rows) > 1 and row["examples_per_s"] < (1 + args.saturation) * max(
            r["examples_per_s"] for r in rows[:-1]
        ):
            stop = (
                f"examples/s grew less than {args.saturation:.0%} from batch "
                f"{rows[-2]['batch']} to {row['batch']}"
            )
            break
        factor *= 2
    best = max(rows, key=lambda r: r["examples_per_s"]) if rows else None
    return {
        "title": base.title,
        "num_params": base.num_params,
        "conv_impl": W.default_conv_impl()
        if any(layer["type"] == "conv2d" for layer in base.layers)
        else None,
        "rows": rows,
        "stopped": stop,
        "best_batch": None if best is None else best["batch"],
    }


def solvers(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """``eigsh(k=10)`` and SLQ end to end at the workload's batch × ``--solver-batch-factor``."""
    base = W.build(name)
    wl = W.build(name, batch=base.x.shape[0] * args.solver_batch_factor)
    params, batch, v = W.to_jax(wl)
    loss = W.jax_loss_fn(wl.layers)
    key = jax.random.key(0)

    def eig(p, b, key):
        op = js.hessian_operator(loss, p, b)
        return js.eigsh(key, op, p, k=10, num_iters=args.eigsh_iters, tol=1e-5)

    def slq(p, b, key):
        op = js.hessian_operator(loss, p, b)
        return js.spectral_density(key, op, p, num_probes=args.probes, num_iters=args.slq_iters)

    hvp = timed(lambda p, b, v: js.hvp(loss, p, b, v), (params, batch, v), args.repeats)
    out: dict[str, Any] = {"batch": int(wl.x.shape[0]), "hvp_ms": hvp["ms"]}
    for label, fn in (("eigsh k=10", eig), ("slq", slq)):
        r = timed(fn, (params, batch, key), args.solver_repeats, args.budget)
        res = r.pop("out")
        products = (
            int(res.num_matvecs) if isinstance(res, js.Eigs) else args.probes * args.slq_iters
        )
        row = {
            "ms": r["ms"],
            "repeats": r["repeats"],
            "compile_s": r["compile_s"],
            "products": products,
            "ms_per_product": r["ms"] / products,
            "per_product_x_hvp": r["ms"] / products / hvp["ms"],
        }
        if isinstance(res, js.Eigs):
            row["converged"] = bool(res.converged)
            row["top"] = [float(x) for x in np.sort(np.asarray(res.eigenvalues))[::-1][:3]]
        else:
            row["index"] = float(js.negative_fraction(res))
        out[label] = row
        print(
            f"  {name:9s} {label:11s} batch {out['batch']:6d} {row['ms']:10.1f} ms  "
            f"{products} products, {row['ms_per_product']:.2f} ms each "
            f"({row['per_product_x_hvp']:.2f}× an HVP)",
            flush=True,
        )
    return out


def _fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
    """``value / scale`` formatted with ``spec``; empty where the backend gave no number."""
    return "" if value is None else format(value / scale, spec)


def print_row(name: str, r: dict[str, Any], flush: bool = False) -> None:
    print(
        f"  {name:9s} batch {r['batch']:6d} grad {r['gradient_ms']:9.2f} ms  hvp "
        f"{r['hvp_ms']:9.2f} ms  {r['hvps_per_s']:9.1f} HVP/s  {r['examples_per_s']:11,.0f} ex/s  "
        f"×grad {r['hvp_x_gradient']:4.2f}  GFLOP/s {_fmt(r['hvp_flop_per_s'], '9.1f', 1e9):>9s} "
        f"{_fmt(r['fraction_of_matmul_rate'], '6.1%'):>6s}  plan {r['plan_bytes'] / 2**20:8.1f} MiB"
        f"  peak {_fmt(r['peak_bytes_in_use'], '9.0f', 2**20):>9s}",
        flush=flush,
    )


def print_tables(result: dict[str, Any]) -> None:
    mm = result["matmul"]
    print(
        f"\nMatmul {mm['n']}×{mm['n']} float32: {mm['default_flop_per_s'] / 1e9:,.1f} GFLOP/s at "
        f"the default precision, {mm['highest_flop_per_s'] / 1e9:,.1f} at the highest"
    )
    for name, res in result["workloads"].items():
        print(f"\n{res['title']} ({res['num_params']:,} params); sweep stopped: {res['stopped']}")
        print(
            "| batch | gradient ms | HVP ms | HVPs/s | examples/s | HVP ÷ gradient | "
            "HVP GFLOP (XLA) | GFLOP/s | of matmul rate | plan MiB | peak MiB |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in res["rows"]:
            cells = [
                str(r["batch"]),
                f"{r['gradient_ms']:.2f}",
                f"{r['hvp_ms']:.2f}",
                f"{r['hvps_per_s']:,.1f}",
                f"{r['examples_per_s']:,.0f}",
                f"{r['hvp_x_gradient']:.2f}",
                _fmt(r["hvp_flops"], ".3f", 1e9),
                _fmt(r["hvp_flop_per_s"], ",.1f", 1e9),
                _fmt(r["fraction_of_matmul_rate"], ".1%"),
                f"{r['plan_bytes'] / 2**20:,.1f}",
                _fmt(r["peak_bytes_in_use"], ",.0f", 2**20),
            ]
            print("| " + " | ".join(cells) + " |")
        s = result["solvers"].get(name)
        for label in ("eigsh k=10", "slq") if s else ():
            r = s[label]
            extra = (
                f", top {np.round(r['top'], 5).tolist()}, converged {r['converged']}"
                if "top" in r
                else f", index {r['index']:.3f}"
            )
            print(
                f"  {label} at batch {s['batch']}: {r['ms']:,.1f} ms, {r['products']} products, "
                f"{r['ms_per_product']:.2f} ms each = {r['per_product_x_hvp']:.2f} HVPs{extra}"
            )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    on_cpu = jax.default_backend() == "cpu"
    p.add_argument("--workloads", default="mlp,cnn,mlp-small", help="names in workloads.json")
    p.add_argument("--quick", action="store_true", help="W3, two batch sizes, tiny solvers")
    p.add_argument(
        "--matmul-n", type=int, default=2048 if on_cpu else 8192, help="matmul side length"
    )
    p.add_argument(
        "--max-batch-factor",
        type=int,
        default=4 if on_cpu else 256,
        help="largest batch as a multiple of the workload's (a power of two)",
    )
    p.add_argument(
        "--saturation", type=float, default=0.1, help="stop when examples/s grow less than this"
    )
    p.add_argument(
        "--memory-fraction", type=float, default=0.8, help="largest share of free memory to plan"
    )
    p.add_argument("--solver-batch-factor", type=int, default=1, help="solvers' batch multiple")
    p.add_argument("--eigsh-iters", type=int, default=200, help="eigsh k=10: most products")
    p.add_argument("--probes", type=int, default=4, help="SLQ probes")
    p.add_argument("--slq-iters", type=int, default=30, help="SLQ Lanczos steps per probe")
    p.add_argument("--repeats", type=int, default=20, help="timed runs per sweep point")
    p.add_argument("--solver-repeats", type=int, default=3, help="timed runs per solver")
    p.add_argument("--budget", type=float, default=60.0, help="seconds of timed runs per row")
    p.add_argument("--out", default="benchmarks/results", help="folder for the JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.workloads, args.matmul_n, args.max_batch_factor = "mlp-small", 256, 2
        args.eigsh_iters, args.probes, args.slq_iters = 30, 2, 10
        args.repeats, args.solver_repeats = 2, 1
        args.saturation = -1.0  # both sizes, whatever the gain
    for flag in (
        "matmul_n",
        "max_batch_factor",
        "solver_batch_factor",
        "eigsh_iters",
        "probes",
        "slq_iters",
        "repeats",
        "solver_repeats",
    ):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if not 0 < args.memory_fraction <= 1:
        p.error(f"--memory-fraction must be in (0, 1], got {args.memory_fraction}")
    names = [w for w in args.workloads.split(",") if w]
    known = W.load_spec()["workloads"]
    for w in names:
        if w not in known:
            p.error(f"unknown workload {w!r}; choose from {sorted(known)}")

    env = environment()
    print(f"jaxscape throughput benchmark on {env['device']}, jax {env['jax']}")
    path = result_path(args.out, "bench_throughput", args.quick)
    result: dict[str, Any] = {
        "environment": env,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "matmul": matmul_rate(args.matmul_n, max(args.repeats, 3)),
        "workloads": {},
        "solvers": {},
    }
    mm = result["matmul"]
    print(
        f"  matmul {mm['n']}² float32: {mm['default_flop_per_s'] / 1e9:,.1f} GFLOP/s (default "
        f"precision), {mm['highest_flop_per_s'] / 1e9:,.1f} (highest)",
        flush=True,
    )
    for name in names:
        result["workloads"][name] = batch_sweep(name, args, mm["default_flop_per_s"])
        path.write_text(json.dumps(result, indent=2))  # written as it goes
        result["solvers"][name] = solvers(name, args)
        path.write_text(json.dumps(result, indent=2))
    print_tables(result)
    print(f"\nwrote {path}")
    return result


if __name__ == "__main__":
    main()
