"""HVP throughput and spectral-solver benchmark on the standard workloads (``workloads.json``).

For each workload, every operation is jitted with params, batch and vectors as *arguments*
(never closed over: XLA would constant-fold them), compiled once (compile time reported
separately), warmed up, and timed as the median of ``--repeats`` runs with
``block_until_ready``. It prints a table and writes JSON.

    python benchmarks/bench_hvp.py                   # all workloads, 20 repeats
    python benchmarks/bench_hvp.py --quick           # under a minute: mlp-small, 2 repeats
    python benchmarks/bench_hvp.py --workloads mlp --out benchmarks/results

The "linearized product" is the marginal cost of one more product with an operator from
``hessian_operator`` (linearized once): ``(T(1 + N products) - T(1 product)) / N``. The accuracy
section (``--accuracy``, on by default for ``mlp``) counts how many products Lanczos and power
iteration need to reach a relative error on the top eigenvalues.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import workloads as W

import jaxscape as js

# Reference eigenvalues of W1 at its init, measured with ARPACK on the same network in PyTorch
# (issue #2): the top is clustered, so these are a hard case for power iteration.
W1_ARPACK_TOP = [0.70014, 0.69894, 0.68751, 0.68483]


def timed(fn, args, repeats: int, budget_s: float = float("inf")) -> dict[str, float]:
    """Compile (timed), warm up, then the median wall time of the runs, in ms.

    Runs ``repeats`` times, or fewer (at least 3) once ``budget_s`` seconds of timed runs are
    spent: a CNN eigensolve on a 2-core CPU takes a minute. The count is reported.
    """
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    out = jax.block_until_ready(compiled(*args))  # warm-up
    times: list[float] = []
    while len(times) < repeats and (len(times) < 3 or sum(times) < budget_s):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    return {
        "ms": 1e3 * statistics.median(times),
        "ms_min": 1e3 * min(times),
        "compile_s": compile_s,
        "repeats": len(times),
        "out": out,
    }


def solver_settings(quick: bool) -> dict[str, dict[str, Any]]:
    if quick:
        return {
            "eigsh_k1": {"k": 1, "num_iters": 20},
            "eigsh_k5": {"k": 5, "num_iters": 40},
            "trace": {"num_matvecs": 9},
            "density": {"num_probes": 2, "num_iters": 10},
        }
    return {
        "eigsh_k1": {"k": 1, "num_iters": 50},
        "eigsh_k5": {"k": 5, "num_iters": 150},
        "trace": {"num_matvecs": 30},
        "density": {"num_probes": 4, "num_iters": 30},
    }


def bench_workload(name: str, repeats: int, quick: bool, budget_s: float) -> dict[str, Any]:
    wl = W.build(name)
    params, batch, v = W.to_jax(wl)
    loss = W.jax_loss_fn(wl.layers)
    key = jax.random.key(0)
    cfg = solver_settings(quick)
    n_extra = 3 if quick else 10

    def linearized(n):
        def f(p, b, v):
            matvec = js.hessian_operator(loss, p, b)
            return jax.lax.fori_loop(0, n, lambda i, x: matvec(x), v)

        return f

    ops = {
        "forward": (lambda p, b: loss(p, b), (params, batch)),
        "gradient": (jax.grad(loss), (params, batch)),
        "hvp (fwd-over-rev)": (lambda p, b, v: js.hvp(loss, p, b, v), (params, batch, v)),
        "hvp (rev-over-rev)": (
            lambda p, b, v: js.hvp(loss, p, b, v, mode="rev-rev"),
            (params, batch, v),
        ),
        "linearize + 1 product": (linearized(1), (params, batch, v)),
        f"linearize + {1 + n_extra} products": (linearized(1 + n_extra), (params, batch, v)),
        "eigsh k=1": (
            lambda p, b, key: js.eigsh(key, js.hessian_operator(loss, p, b), p, **cfg["eigsh_k1"]),
            (params, batch, key),
        ),
        "eigsh k=5": (
            lambda p, b, key: js.eigsh(key, js.hessian_operator(loss, p, b), p, **cfg["eigsh_k5"]),
            (params, batch, key),
        ),
        "estimate_trace hutch++": (
            lambda p, b, key: js.estimate_trace(
                key, js.hessian_operator(loss, p, b), p, **cfg["trace"]
            ),
            (params, batch, key),
        ),
        "spectral_density": (
            lambda p, b, key: js.spectral_density(
                key, js.hessian_operator(loss, p, b), p, **cfg["density"]
            ),
            (params, batch, key),
        ),
    }
    rows: dict[str, dict[str, Any]] = {}
    for op, (fn, args) in ops.items():
        r = timed(fn, args, repeats, budget_s)
        out = r.pop("out")
        if isinstance(out, js.Eigs):
            r["num_matvecs"] = int(out.num_matvecs)
            r["eigenvalues_desc"] = [float(x) for x in np.asarray(out.eigenvalues)[::-1]]
            r["converged"] = bool(out.converged)
        elif isinstance(out, js.TraceEstimate):
            r["num_matvecs"] = int(out.num_matvecs)
            r["value"], r["stderr"] = float(out.value), float(out.stderr)
        elif isinstance(out, js.Density):
            r["num_matvecs"] = cfg["density"]["num_probes"] * cfg["density"]["num_iters"]
            r["index"] = float(js.negative_fraction(out))
        rows[op] = r
        print(
            f"  {name:9s} {op:28s} {r['ms']:10.2f} ms  (compile {r['compile_s']:.1f} s)", flush=True
        )

    grad_ms = rows["gradient"]["ms"]
    marginal = (
        rows[f"linearize + {1 + n_extra} products"]["ms"] - rows["linearize + 1 product"]["ms"]
    )
    rows["linearized product (marginal)"] = {"ms": marginal / n_extra}
    for r in rows.values():
        r["x_gradient"] = r["ms"] / grad_ms
        if "num_matvecs" in r:
            r["ms_per_matvec"] = r["ms"] / max(r["num_matvecs"], 1)
    hvp_ms = rows["hvp (fwd-over-rev)"]["ms"]
    return {
        "title": wl.title,
        "conv_impl": W.default_conv_impl()
        if any(layer["type"] == "conv2d" for layer in wl.layers)
        else None,
        "num_params": wl.num_params,
        "batch": int(wl.x.shape[0]),
        "solver_settings": cfg,
        "hvps_per_s": 1e3 / hvp_ms,
        "ops": rows,
    }


def accuracy_study(name: str, quick: bool) -> dict[str, Any]:
    """Products needed by Lanczos and power iteration for a given accuracy on the top eigenvalues.

    The reference is a long float32 Lanczos run on the same operator (and, for W1, the ARPACK
    values quoted in the issue). Each budget is a separate run with ``tol=0``: the error after
    exactly that many products.
    """
    wl = W.build(name)
    params, batch, _ = W.to_jax(wl)
    loss = W.jax_loss_fn(wl.layers)
    key = jax.random.key(0)

    def top(method, k, num_iters):
        def f(p, b, key):
            matvec = js.hessian_operator(loss, p, b)
            if method == "lanczos":
                return js.eigsh(key, matvec, p, k=k, num_iters=num_iters, tol=0.0)
            return js.power_iteration(key, matvec, p, k=k, num_iters=num_iters, tol=0.0)

        out = jax.jit(f)(params, batch, key)
        return np.sort(np.asarray(out.eigenvalues))[::-1], int(out.num_matvecs)

    ref_iters = 120 if quick else 400
    reference, _ = top("lanczos", 6, ref_iters)
    result: dict[str, Any] = {"reference_top": reference[:5].tolist(), "reference_iters": ref_iters}
    if name == "mlp":
        result["arpack_top_quoted"] = W1_ARPACK_TOP
        result["reference_vs_arpack_rel"] = [
            float(abs(a - b) / abs(b)) for a, b in zip(reference, W1_ARPACK_TOP, strict=False)
        ]

    def sweep(method, k, budgets, target):
        rows = []
        for b in budgets:
            vals, used = top(method, k, b)
            err = float(np.max(np.abs(vals[:k] - reference[:k]) / np.abs(reference[:k])))
            rows.append({"num_iters": b, "num_matvecs": used, "max_rel_err": err})
        first = next((r["num_matvecs"] for r in rows if r["max_rel_err"] <= target), None)
        return {"target": target, "runs": rows, "matvecs_to_target": first}

    lanczos1 = [10, 20] if quick else [10, 20, 30, 40, 50, 60]
    lanczos5 = [30] if quick else [50, 75, 100, 125, 150]
    power1 = [25] if quick else [25, 50, 100, 200, 400, 800, 1600]
    power5 = [10] if quick else [50, 100, 200, 400]
    result["lanczos_top1"] = sweep("lanczos", 1, lanczos1, 1e-4)
    result["lanczos_top5"] = sweep("lanczos", 5, lanczos5, 1e-3)
    result["power_top1"] = sweep("power", 1, power1, 1e-4)
    result["power_top5"] = sweep("power", 5, power5, 1e-3)  # budgets are per eigenpair
    return result


def result_path(out: str | Path, stem: str, quick: bool) -> Path:
    """``out/<stem>_<platform>[_quick].json``, the folder created."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{stem}_{jax.devices()[0].platform}{'_quick' if quick else ''}.json"


def environment() -> dict[str, Any]:
    dev = jax.devices()[0]
    return {
        "jax": jax.__version__,
        "device": f"{dev.platform}: {getattr(dev, 'device_kind', '')}",
        "num_devices": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "x64": bool(jax.config.jax_enable_x64),
    }


def print_tables(results: dict[str, Any]) -> None:
    for res in results["workloads"].values():
        print(f"\n{res['title']}  ({res['num_params']:,} params)  HVPs/s {res['hvps_per_s']:.1f}")
        print(
            f"  {'operation':32s} {'ms':>10s} {'runs':>5s} {'x grad':>8s} {'matvecs':>8s} "
            f"{'ms/matvec':>10s}"
        )
        for op, r in res["ops"].items():
            mv = r.get("num_matvecs", "")
            per = f"{r['ms_per_matvec']:.2f}" if "ms_per_matvec" in r else ""
            runs = r.get("repeats", "")
            print(
                f"  {op:32s} {r['ms']:10.2f} {runs!s:>5s} {r['x_gradient']:8.2f} {mv!s:>8s} "
                f"{per:>10s}"
            )
    for name, acc in results.get("accuracy", {}).items():
        print(f"\nAccuracy on {name}: reference top-5 {np.round(acc['reference_top'], 6).tolist()}")
        if "arpack_top_quoted" in acc:
            print(f"  ARPACK (PyTorch, quoted) {acc['arpack_top_quoted']}")
        for key in ("lanczos_top1", "lanczos_top5", "power_top1", "power_top5"):
            s = acc[key]
            runs = ", ".join(f"{r['num_matvecs']}:{r['max_rel_err']:.1e}" for r in s["runs"])
            print(
                f"  {key:13s} target {s['target']:.0e}: first at {s['matvecs_to_target']} "
                f"matvecs   [matvecs:max rel err] {runs}"
            )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workloads", default="mlp,cnn,mlp-small", help="comma-separated names from workloads.json"
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per operation")
    parser.add_argument(
        "--budget",
        type=float,
        default=120.0,
        help="seconds of timed runs per operation before stopping early (at least 3 runs)",
    )
    parser.add_argument(
        "--accuracy",
        default="mlp",
        help="workloads for the matvecs-to-accuracy study ('' for none)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny settings for the smoke test: mlp-small, 2 repeats",
    )
    parser.add_argument("--out", default="benchmarks/results", help="folder for the JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.workloads, args.repeats, args.accuracy = "mlp-small", 2, "mlp-small"
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    names = [w for w in args.workloads.split(",") if w]
    known = W.load_spec()["workloads"]
    for w in names + [w for w in args.accuracy.split(",") if w]:
        if w not in known:
            parser.error(f"unknown workload {w!r}; choose from {sorted(known)}")

    env = environment()
    print(f"jaxscape HVP benchmark on {env['device']} ({env['cpu_count']} CPUs), jax {env['jax']}")
    results: dict[str, Any] = {"environment": env, "workloads": {}, "accuracy": {}}
    stem = "bench_hvp" if names else "bench_accuracy"  # an accuracy-only run keeps its own file
    path = result_path(args.out, stem, args.quick)
    for name in names:
        results["workloads"][name] = bench_workload(name, args.repeats, args.quick, args.budget)
        path.write_text(json.dumps(results, indent=2))  # written as it goes
    for name in [w for w in args.accuracy.split(",") if w]:
        results["accuracy"][name] = accuracy_study(name, args.quick)
        path.write_text(json.dumps(results, indent=2))
    print_tables(results)
    print(f"\nwrote {path}")
    return results


if __name__ == "__main__":
    main()
