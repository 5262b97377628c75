"""Memory and time of HVPs on deep MLPs with and without ``remat`` (``jax.checkpoint`` per layer).

For each MLP (``depth`` hidden layers of ``width`` units, ``tanh``, no norm or LayerNorm, a
10-way head, float32, a batch of ``batch`` Gaussian inputs) and ``remat`` off / on (same params),
three programs are compiled with params, batch and vector as arguments: the gradient, one HVP
(``jaxscape.hvp``, forward-over-reverse) and a ``hessian_operator`` built once and applied
``n`` times in a ``fori_loop`` (``n`` an argument too: one compilation runs ``1`` and ``1 + N``).
Reported: XLA's temporary-buffer size of each program (``memory_analysis().temp_size_in_bytes``:
activations, tangents, residuals; params, batch and outputs are arguments and results, not
temporaries), the median wall time of one HVP and the marginal time of one more operator
product, ``(T(1 + N) - T(1)) / N``, medians of ``--repeats`` runs after a warm-up run.

On CPU every program is compiled twice: with XLA's default options and with
``remat_compiler_options()`` ("keep barriers"). XLA:CPU drops ``jax.checkpoint``'s optimization
barriers early, and its later passes merge or schedule each recomputation back into the
forward pass, so with the default options remat saves nothing and can cost memory (see
``jaxscape.models.remat_compiler_options``). Other backends keep the barriers by
default and get only the default rows.

    python benchmarks/bench_memory.py            # depths 16 and 32, width 256, batch 256
    python benchmarks/bench_memory.py --quick    # a LayerNorm MLP 3x16, batch 16: seconds
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

sys.path.insert(0, str(Path(__file__).parent))
from bench_hvp import environment, result_path
from bench_landscape import median_wall

import jaxscape as js
from jaxscape import models


def problem(depth: int, width: int, batch: int, norm: str | None):
    """``(make_loss(remat), params, batch, v)`` for a deep MLP; params from the remat-off model."""
    kx, ky, kp, kv = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(kx, (batch, width), jnp.float32)
    y = jax.random.randint(ky, (batch,), 0, 10)

    def model(remat):
        return models.MLP((width,) * depth + (10,), norm=norm, remat=remat)

    params = jax.jit(lambda k, x: models.init_model(k, model(False), x)[0])(kp, x[:1])
    flat, unravel = ravel_pytree(params)
    v = unravel(jax.random.normal(kv, flat.shape, flat.dtype))
    return (lambda remat: models.cross_entropy_loss(model(remat))), params, (x, y), v


def programs(loss) -> dict[str, Any]:
    """The compiled programs; ``operator`` takes the number of products as an argument (a
    ``fori_loop`` with a traced bound), so one compilation times both ``1`` and ``1 + N``."""

    def operator(p, b, v, n):
        matvec = js.hessian_operator(loss, p, b)
        return jax.lax.fori_loop(0, n, lambda i, w: matvec(w), v)

    return {
        "grad": lambda p, b, v: jax.grad(loss)(p, b),
        "hvp": lambda p, b, v: js.hvp(loss, p, b, v),
        "operator": operator,
    }


def measure(loss, args, options: dict[str, str], products: int, repeats: int) -> dict[str, Any]:
    """Temporaries of each program; HVP time, marginal operator-product time, the HVP."""
    row: dict[str, Any] = {}
    for name, fn in programs(loss).items():
        call_args = (*args, 1) if name == "operator" else args
        compiled = jax.jit(fn, compiler_options=options).lower(*call_args).compile()
        row[f"{name}_temp_bytes"] = compiled.memory_analysis().temp_size_in_bytes
        if name == "hvp":
            row["hvp_ms"] = 1e3 * wall(compiled, args, repeats)
            row["hvp_out"] = compiled(*args)
        if name == "operator":
            t = [wall(compiled, (*args, n), repeats) for n in (1, 1 + products)]
            row["operator_ms_per_product"] = 1e3 * (t[1] - t[0]) / products
    return row


def wall(compiled, args, repeats: int) -> float:
    """Median seconds of ``compiled(*args)`` after a (blocking) warm-up run."""
    return median_wall(lambda: jax.block_until_ready(compiled(*args)), repeats)


def rel_diff(a, b) -> float:
    a, b = ravel_pytree(a)[0], ravel_pytree(b)[0]
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def bench_config(depth, width, batch, norm, products, repeats) -> list[dict[str, Any]]:
    make_loss, params, data, v = problem(depth, width, batch, norm)
    settings = {"default": {}}
    if models.remat_compiler_options():
        settings["keep barriers"] = models.remat_compiler_options()
    rows, reference = [], None
    for label, options in settings.items():
        for remat in (False, True):
            r = measure(make_loss(remat), (params, data, v), options, products, repeats)
            out = r.pop("hvp_out")
            reference = out if reference is None else reference
            row = {
                "depth": depth,
                "width": width,
                "batch": batch,
                "norm": norm,
                "remat": remat,
                "xla": label,
                "num_params": int(ravel_pytree(params)[0].size),
                **r,
                "hvp_rel_diff_vs_default_off": rel_diff(out, reference),
            }
            rows.append(row)
            print_row(row, flush=True)
    return rows


HEADER = (
    f"  {'model':22s} {'xla':13s} {'remat':5s} {'grad MiB':>9s} {'hvp MiB':>9s} "
    f"{'op MiB':>9s} {'hvp ms':>9s} {'op ms/prod':>10s}"
)


def print_row(r: dict[str, Any], flush: bool = False) -> None:
    mib = 2.0**20
    model = f"MLP {r['depth']}x{r['width']} {r['norm'] or 'no norm'}"
    print(
        f"  {model:22s} {r['xla']:13s} {'on' if r['remat'] else 'off':5s} "
        f"{r['grad_temp_bytes'] / mib:9.3f} {r['hvp_temp_bytes'] / mib:9.3f} "
        f"{r['operator_temp_bytes'] / mib:9.3f} {r['hvp_ms']:9.2f} "
        f"{r['operator_ms_per_product']:10.2f}",
        flush=flush,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="16,32", help="comma-separated hidden-layer counts")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--norms", default="none,layer", help="comma-separated: none, layer")
    parser.add_argument("--products", type=int, default=5, help="N in the operator's 1 + N")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per program")
    parser.add_argument("--quick", action="store_true", help="LayerNorm MLP 3x16, batch 16, 2 runs")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.depths, args.width, args.batch, args.norms = "3", 16, 16, "layer"
        args.products, args.repeats = 2, 2
    if args.repeats < 1 or args.products < 1:
        parser.error("--repeats and --products must be >= 1")
    depths = [int(d) for d in args.depths.split(",") if d]
    norms = [None if n == "none" else n for n in args.norms.split(",") if n]
    for n in norms:
        if n not in (None, "layer"):
            parser.error(f"unknown norm {n!r}; choose from none, layer")

    env = environment()
    print(f"jaxscape remat memory benchmark on {env['device']}, jax {env['jax']}")
    print(HEADER)
    result: dict[str, Any] = {
        "benchmark": "memory",
        "environment": env,
        "settings": {"products": args.products, "repeats": args.repeats},
        "rows": [],
    }
    path = result_path(args.out, "bench_memory", args.quick)
    for norm in norms:
        for depth in depths:
            result["rows"] += bench_config(
                depth, args.width, args.batch, norm, args.products, args.repeats
            )
            path.write_text(json.dumps(result, indent=2))  # written as it goes
    print(f"\nwrote {path}")
    return result


if __name__ == "__main__":
    main()
