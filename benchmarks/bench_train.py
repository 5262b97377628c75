"""Cost of ``jaxscape.fit`` against a bare compiled training loop.

The problem is an MLP on scikit-learn's bundled digits (or a Gaussian mixture with the same
shapes when scikit-learn is missing), Adam, minibatches of 64 in the order of
``data.minibatch``. The baselines are loops written by hand: one jitted ``lax.scan`` over steps,
same minibatches, nothing recorded — drawing each step's batch with ``data.minibatch`` (a
permutation per step) or, like ``fit``, the epoch's index table once per epoch. Each
configuration is run for two step counts and the marginal cost per step is
``(T(n₂) - T(n₁)) / (n₂ - n₁)`` (medians of ``--repeats`` runs after a compiling run: ``fit``
reuses its compiled loop across calls with the same loss function, optimizer and options);
the fixed cost ``T(n₁) - n₁·marginal`` is the per-call overhead (checks, the last record,
checkpoint setup): small, so at these sizes it drowns in timing noise and can come out < 0.

    python benchmarks/bench_train.py            # about 2.5 minutes on 2 CPU cores
    python benchmarks/bench_train.py --quick    # the test suite runs this: QUICK rows only
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, str(Path(__file__).parent))
from bench_hvp import environment, result_path

import jaxscape as js
from jaxscape import data


def problem(width: int):
    try:
        x, y = data.load_digits(layout="flat")
    except ImportError:
        x, y = data.gaussian_mixture(jax.random.key(0), num_examples=1797, dim=64, num_classes=10)
    model = js.MLP((width, width, 10), activation=jax.nn.relu)
    params, _ = js.init_model(jax.random.key(1), model, x[:1])
    return js.cross_entropy_loss(model), params, data.Dataset(x, y)


@functools.cache
def bare_loop(loss_fn, optimizer, num_steps: int, batch_size: int, per_epoch_table: bool):
    """The hand-written loop: one jitted ``lax.scan`` over steps, nothing recorded.

    ``per_epoch_table=False`` calls ``data.minibatch`` at every step (one permutation, a sort,
    per step); ``True`` draws the epoch's index table once per epoch, as ``fit`` does.
    """

    @jax.jit
    def run(params, dataset, key):
        n = len(dataset.y)
        per_epoch = n // batch_size

        def table_of(t):
            return data.epoch_indices(key, t // per_epoch, num_examples=n, batch_size=batch_size)

        def step(carry, t):
            params, opt_state, table = carry
            if per_epoch_table:
                table = jax.lax.cond(t % per_epoch == 0, table_of, lambda _: table, t)
                batch = jax.tree.map(lambda a: a[table[t % per_epoch]], dataset)
            else:
                batch = data.minibatch(key, dataset, t, batch_size=batch_size)
            grad = jax.grad(loss_fn)(params, batch)
            updates, opt_state = optimizer.update(grad, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, table), None

        steps = jnp.arange(num_steps, dtype=jnp.int32)
        carry = (params, optimizer.init(params), table_of(jnp.int32(0)))
        return jax.lax.scan(step, carry, steps)[0][0]

    return run


def wall(fn) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def configurations(loss_fn, dataset, key) -> dict[str, dict[str, Any]]:
    eig = js.top_eigenvalue_callback(key, loss_fn, dataset, num_iters=20)
    return {
        "fit, record every 100": {"record_every": 100},
        "fit, record every 10": {"record_every": 10},
        "fit, record every step": {"record_every": 1},
        "fit, record every 100, no params": {"record_every": 100, "record_params": False},
        "fit, checkpoint every 1000": {"record_every": 100, "checkpoint": True},
        "fit, checkpoint every 200": {
            "record_every": 100,
            "steps_per_chunk": 200,
            "checkpoint": True,
        },
        "fit, λ_max (20 Lanczos) every 100": {
            "record_every": 100,
            "callbacks": {"lambda_max": eig},
        },
    }


# rows that cover every code path of fit (recording, no trajectory, chunks, checkpoints,
# callbacks); the others differ only in option values
QUICK = (
    "fit, record every 100, no params",
    "fit, checkpoint every 200",
    "fit, λ_max (20 Lanczos) every 100",
)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs=2, default=[1000, 5000], metavar=("N1", "N2"))
    parser.add_argument("--width", type=int, default=64, help="hidden width (two layers)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (median) per size")
    parser.add_argument(
        "--quick", action="store_true", help="tiny step counts, every code path once (smoke test)"
    )
    parser.add_argument("--out", default="benchmarks/results", help="folder for the JSON")
    args = parser.parse_args(argv)
    n1, n2 = (100, 300) if args.quick else args.steps
    args.repeats = 1 if args.quick else args.repeats
    if not 0 < n1 < n2 or n1 % 100 or n2 % 100:
        parser.error("--steps needs 0 < N1 < N2, both multiples of 100")

    loss_fn, params, dataset = problem(args.width)
    key, opt = jax.random.key(2), optax.adam(1e-3)
    b = args.batch_size
    rows: dict[str, dict[str, float]] = {}

    def measure(name, run):
        run(n1), run(n2)  # compile (fit caches its compiled loop across calls)
        t1 = statistics.median(wall(lambda: run(n1)) for _ in range(args.repeats))
        t2 = statistics.median(wall(lambda: run(n2)) for _ in range(args.repeats))
        per_step = (t2 - t1) / (n2 - n1)
        rows[name] = {
            "us_per_step": 1e6 * per_step,
            "fixed_ms": 1e3 * (t1 - n1 * per_step),
            "steps_per_s": n2 / t2,
            f"wall_s_{n1}": t1,
            f"wall_s_{n2}": t2,
        }
        print(
            f"{name:<42} {1e6 * per_step:8.1f} µs/step  {n2 / t2:8,.0f} steps/s  "
            f"fixed {1e3 * (t1 - n1 * per_step):7.1f} ms"
        )

    print(f"MLP 64-{args.width}-{args.width}-10 on {len(dataset.y)} examples, batch {b}, Adam")
    print(f"steps {n1} and {n2}; platform {jax.default_backend()}")
    for label, table in (("permutation per epoch", True), ("minibatch() per step", False)):
        measure(
            f"bare lax.scan loop, {label}",
            lambda n, table=table: bare_loop(loss_fn, opt, n, b, table)(params, dataset, key),
        )
    for name, cfg in configurations(loss_fn, dataset, key).items():
        if args.quick and name not in QUICK:
            continue
        cfg = dict(cfg)
        checkpoint = cfg.pop("checkpoint", False)

        def run(n, cfg=cfg, checkpoint=checkpoint):
            with tempfile.TemporaryDirectory() as folder:
                out = js.fit(
                    key,
                    loss_fn,
                    params,
                    opt,
                    dataset,
                    num_steps=n,
                    batch_size=b,
                    checkpoint_dir=folder if checkpoint else None,
                    progress=False,
                    **cfg,
                )
                return out.params

        measure(name, run)
    base = rows["bare lax.scan loop, permutation per epoch"]["us_per_step"]
    for row in rows.values():
        row["relative_to_bare"] = row["us_per_step"] / base
    result = {
        "benchmark": "train",
        "repeats": args.repeats,
        "problem": {
            "width": args.width,
            "batch_size": b,
            "steps": [n1, n2],
            "examples": len(dataset.y),
            "params": js.count_params(params),
        },
        "rows": rows,
        "environment": environment(),
    }
    path = result_path(args.out, "bench_train", args.quick)
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
