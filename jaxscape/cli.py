"""The ``jaxscape`` command (also ``python -m jaxscape``).

``jaxscape spectrum``: the Hessian spectrum of a small MLP on scikit-learn's bundled 8×8
digits (or, with ``--data mixture``, a synthetic Gaussian mixture), at its random
initialization and after training with Adam: top and bottom eigenvalues (Lanczos), trace
(Hutch++), spectral density and index (SLQ). Writes ``results.json``, ``spectrum.npz`` and
PNG figures into ``--out``. Each stage is saved when it finishes; rerunning with the same
folder and options skips finished stages, and a changed option recomputes only the stages
that depend on it. (The full landscape report, ``jaxscape report``, is issue #6.)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

STAGES = ("init", "train", "trained")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxscape", description="Loss-landscape tools for JAX.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sp = sub.add_parser(
        "spectrum",
        help="Hessian spectrum of a small MLP at init and after training",
        description=__doc__.split("\n\n")[1],
    )
    sp.add_argument("--out", default="runs/spectrum", help="output folder (default %(default)s)")
    sp.add_argument("--seed", type=int, default=0, help="PRNG seed for data, init and probes")
    sp.add_argument("--steps", type=int, default=500, help="Adam steps (full batch)")
    sp.add_argument("--learning-rate", type=float, default=1e-2)
    sp.add_argument("--width", type=int, default=32, help="hidden width")
    sp.add_argument("--depth", type=int, default=2, help="number of hidden layers")
    sp.add_argument(
        "--data",
        choices=("digits", "mixture"),
        default="digits",
        help="scikit-learn's bundled 8x8 digits (1,797 examples, extra 'data') or a synthetic "
        "Gaussian mixture (default %(default)s)",
    )
    sp.add_argument(
        "--num-examples",
        type=int,
        default=None,
        help="examples used (default: all 1,797 digits; 1,024 mixture examples)",
    )
    sp.add_argument("--dim", type=int, default=8, help="mixture input dimension")
    sp.add_argument("--num-classes", type=int, default=4, help="mixture classes")
    sp.add_argument("--k", type=int, default=5, help="eigenvalues from each end")
    sp.add_argument("--num-iters", type=int, default=100, help="Lanczos steps (eigsh and SLQ)")
    sp.add_argument("--num-probes", type=int, default=8, help="SLQ probes")
    sp.add_argument("--trace-matvecs", type=int, default=60, help="Hutch++ products")
    sp.add_argument(
        "--index-tol",
        type=float,
        default=1e-3,
        help="also report the index counting only eigenvalues below "
        "-index_tol * top eigenvalue (SLQ nodes of the bulk near 0 straddle 0)",
    )
    sp.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    sp.add_argument("--quiet", action="store_true", help="print only the output path")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded in results.json as the exact command
    for name in (
        "steps",
        "width",
        "depth",
        "num_examples",
        "dim",
        "k",
        "num_iters",
        "num_probes",
        "trace_matvecs",
    ):
        minimum = 0 if name == "steps" else 1
        if getattr(args, name) is not None and getattr(args, name) < minimum:
            flag = "--" + name.replace("_", "-")
            print(
                f"jaxscape: error: {flag} must be >= {minimum}, got {getattr(args, name)}",
                file=sys.stderr,
            )
            return 2
    if args.num_classes < 2:
        print("jaxscape: error: --num-classes must be >= 2", file=sys.stderr)
        return 2
    if args.command == "spectrum":
        try:
            run_spectrum(args)
        except ImportError as err:  # e.g. --data digits without scikit-learn
            print(f"jaxscape: error: {err}", file=sys.stderr)
            return 2
    return 0


# --------------------------------------------------------------------------- the job


def run_spectrum(args: argparse.Namespace) -> Path:
    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jaxscape as js
    from jaxscape import plot
    from jaxscape.data import gaussian_mixture, load_digits
    from jaxscape.models import MLP, classification_loss
    from jaxscape.train import fit

    say = (lambda *a: None) if args.quiet else print
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dtype = jnp.float32 if args.dtype == "float32" else jnp.float64
    device = jax.devices()[0]
    say(
        f"jaxscape spectrum on {device.platform} ({getattr(device, 'device_kind', '')}), "
        f"jax {jax.__version__}, {args.dtype}"
    )

    key = jax.random.key(args.seed)
    k_data, k_init, k_probe = jax.random.split(key, 3)
    if args.data == "digits":
        x, y = load_digits(layout="flat", dtype=dtype)
        args.num_examples = min(args.num_examples or len(y), len(y))
        args.dim, args.num_classes = x.shape[1], 10
        batch = (x[: args.num_examples], y[: args.num_examples])
    else:
        args.num_examples = args.num_examples or 1024
        batch = gaussian_mixture(
            k_data,
            num_examples=args.num_examples,
            dim=args.dim,
            num_classes=args.num_classes,
            dtype=dtype,
        )
    model = MLP(features=(args.width,) * args.depth + (args.num_classes,), dtype=dtype)
    params0 = model.init(k_init, batch[0][:1])["params"]
    loss_fn = classification_loss(model)
    n = js.count_params(params0)
    k = min(args.k, (n - 1) // 2)
    say(
        f"MLP {args.dim}-{'-'.join([str(args.width)] * args.depth)}-{args.num_classes}: "
        f"{n:,} params; {args.num_examples} {args.data} examples"
    )

    problem = {
        key: getattr(args, key)
        for key in ("seed", "data", "width", "depth", "num_examples", "dim", "num_classes", "dtype")
    }
    solver = {
        "k": k,
        "num_iters": args.num_iters,
        "num_probes": args.num_probes,
        "trace_matvecs": args.trace_matvecs,
        "index_tol": args.index_tol,
    }
    # "recorded": losses at steps 0..steps (fit's history), not the pre-0.2 per-step list
    training = {"steps": args.steps, "learning_rate": args.learning_rate, "recorded": "fit"}
    store = StageStore(out)

    @jax.jit
    def spectrum_at(params, batch, key):
        matvec = js.hessian_operator(loss_fn, params, batch)
        k_eig, k_trace, k_slq = jax.random.split(key, 3)
        both = js.eigsh(k_eig, matvec, params, k=2 * k, which="BE", num_iters=args.num_iters)
        trace = js.estimate_trace(k_trace, matvec, params, num_matvecs=args.trace_matvecs)
        dens = js.spectral_density(
            k_slq, matvec, params, num_probes=args.num_probes, num_iters=args.num_iters
        )
        loss, grad = jax.value_and_grad(loss_fn)(params, batch)
        return {
            "loss": loss,
            "grad_norm": optax.tree_utils.tree_norm(grad),
            "eigenvalues": both.eigenvalues,
            "residuals": both.residuals,
            "eig_converged": both.converged,
            "eig_matvecs": both.num_matvecs,
            "trace": trace.value,
            "trace_stderr": trace.stderr,
            "index": js.negative_fraction(dens),
            "index_tol": js.negative_fraction(dens, tol=args.index_tol * both.eigenvalues[-1]),
            "grid": dens.grid,
            "density": dens.density,
            "nodes": dens.nodes,
            "weights": dens.weights,
            "finite": both.finite & trace.finite & dens.finite,
        }

    def spectrum_stage(name: str, params) -> dict[str, Any]:
        t0 = time.perf_counter()
        res = jax.device_get(spectrum_at(params, batch, k_probe))
        if not res["finite"]:
            raise FloatingPointError(f"jaxscape spectrum: NaN/inf in the Hessian at {name}.")
        evals = np.asarray(res["eigenvalues"])
        summary = {
            "loss": float(res["loss"]),
            "grad_norm": float(res["grad_norm"]),
            "top": evals[::-1][:k].tolist(),
            "bottom": evals[:k].tolist(),
            "max_residual": float(np.max(res["residuals"])),
            "eigsh_converged": bool(res["eig_converged"]),
            "eigsh_matvecs": int(res["eig_matvecs"]),
            "trace": float(res["trace"]),
            "trace_stderr": float(res["trace_stderr"]),
            "index": float(res["index"]),
            "index_tol": float(res["index_tol"]),
            "seconds": time.perf_counter() - t0,
        }
        arrays = {key: np.asarray(res[key]) for key in ("grid", "density", "nodes", "weights")}
        say(
            f"[{name}] loss {summary['loss']:.4f}  top {summary['top'][0]:.4g}  "
            f"bottom {summary['bottom'][0]:.4g}  trace {summary['trace']:.4g} ± "
            f"{summary['trace_stderr']:.2g}  index {100 * summary['index']:.2f}% "
            f"({100 * summary['index_tol']:.2f}% below -{args.index_tol:g}·top)  "
            f"({summary['seconds']:.1f} s)"
        )
        return {"summary": summary, "arrays": arrays}

    def train_stage() -> dict[str, Any]:
        t0 = time.perf_counter()
        fitted = fit(
            k_data,  # full batch: fit draws no minibatches from it
            loss_fn,
            params0,
            optax.adam(args.learning_rate),
            batch,
            num_steps=args.steps,
            record_every=1,
            record_params=False,
        )
        params, losses = jax.device_get(fitted.params), fitted.history.loss
        flat = {f"param/{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(params))}
        final = float(losses[-1])
        say(f"[train] {args.steps} Adam steps: loss {final:.4f} ({time.perf_counter() - t0:.1f} s)")
        return {
            "summary": {"final_loss": final, "seconds": time.perf_counter() - t0},
            "arrays": {"losses": np.asarray(losses), **flat},
        }

    results = {
        "init": store.run("init", {**problem, **solver}, lambda: spectrum_stage("init", params0))
    }
    results["train"] = store.run("train", {**problem, **training}, train_stage)
    leaves = [
        jnp.asarray(results["train"]["arrays"][f"param/{i}"])
        for i in range(len(jax.tree.leaves(params0)))
    ]
    params_star = jax.tree.unflatten(jax.tree.structure(params0), leaves)
    results["trained"] = store.run(
        "trained", {**problem, **solver, **training}, lambda: spectrum_stage("trained", params_star)
    )

    panels = {
        f"{name} (loss {results[name]['summary']['loss']:.3f})": {
            **results[name]["arrays"],
            "top": results[name]["summary"]["top"],
            "bottom": results[name]["summary"]["bottom"],
        }
        for name in ("init", "trained")
    }
    plot.spectrum_figure(
        panels, out / "spectrum.png", title=f"Hessian spectral density, MLP with {n:,} params"
    )
    plot.loss_curve_figure(results["train"]["arrays"]["losses"], out / "loss.png")
    np.savez(
        out / "spectrum.npz",
        **{
            f"{stage}/{key}": value
            for stage in ("init", "trained")
            for key, value in results[stage]["arrays"].items()
        },
        losses=results["train"]["arrays"]["losses"],
    )
    report = {
        "command": " ".join(["jaxscape", *args.argv]),
        "versions": {"jax": jax.__version__, "jaxscape": js.__version__},
        "device": f"{device.platform}: {getattr(device, 'device_kind', '')}",
        "num_params": n,
        "options": {**problem, **solver, **training},
        **{name: results[name]["summary"] for name in STAGES},
        "files": ["results.json", "spectrum.npz", "spectrum.png", "loss.png"],
    }
    atomic_write(out / "results.json", json.dumps(report, indent=2).encode())
    say(f"output: {out.resolve()}  (results.json, spectrum.png, loss.png, spectrum.npz)")
    if args.quiet:
        print(out.resolve())
    return out


# --------------------------------------------------------------------------- resumable stages


class StageStore:
    """Finished stages on disk: ``stages/NAME.json`` (summary + config hash) and ``.npz``.

    ``run(name, config, compute)`` returns the saved stage when its config is unchanged and
    otherwise computes it and saves it atomically (write to a temporary file, then rename), so
    an interrupted run leaves either the old stage or the new one, never half of one. Stages
    that depend on a recomputed one include its config in theirs, so they are redone too.
    """

    def __init__(self, root: Path):
        self.dir = root / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, config: dict[str, Any], compute) -> dict[str, Any]:
        import numpy as np

        digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
        meta, arrays = self.dir / f"{name}.json", self.dir / f"{name}.npz"
        if meta.exists() and arrays.exists():
            saved = json.loads(meta.read_text())
            if saved.get("config_hash") == digest:
                with np.load(arrays) as data:
                    return {"summary": saved["summary"], "arrays": dict(data)}
        result = compute()
        buffer = io.BytesIO()
        np.savez(buffer, **result["arrays"])
        atomic_write(arrays, buffer.getvalue())
        payload = {"config": config, "config_hash": digest, "summary": result["summary"]}
        atomic_write(meta, json.dumps(payload, indent=2).encode())
        return result


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


if __name__ == "__main__":
    raise SystemExit(main())
