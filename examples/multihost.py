"""Hessian spectrum and a loss line of one model, on one process per host.

Launch one copy per host, each with its own ``--process-id``. Every process derives the same
global data set from ``--seed`` and keeps its own slice: process ``i`` of ``P`` holds rows
``[i N/P, (i+1) N/P)``. ``shard_batch`` joins the slices into one global batch over every
device of every host, and the numbers are those of one process holding the whole batch.
Process 0 alone writes the run folder. A rerun with the same flags loads the finished stages:
process 0 decides and broadcasts the decision (``distributed.run_stage``).

    # two hosts (or two terminals on one machine, with 2 CPU devices each):
    python examples/multihost.py --coordinator HOST0:12345 --num-processes 2 --process-id 0
    python examples/multihost.py --coordinator HOST0:12345 --num-processes 2 --process-id 1
    # SLURM, Cloud TPU, Kubernetes JobSet: jax.distributed.initialize() reads the cluster
    srun python examples/multihost.py --auto
    # one process (the reference):
    python examples/multihost.py

Stages: the full-batch loss and gradient norm; the top-k and bottom-k Hessian eigenvalues
(``eigsh``, ``which="BE"``); a spectral density (SLQ, probes split over the devices); and the
loss from θ₀ along a random filter-normalized direction (points split over the devices).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--coordinator", help="HOST:PORT of process 0 (omit for one process)")
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--auto", action="store_true", help="jax.distributed.initialize() from the "
                   "cluster's environment (SLURM, TPU pods, ...)")  # fmt: skip
    p.add_argument(
        "--local-devices",
        type=int,
        default=None,
        help="force this many CPU devices per process (testing on one machine)",
    )
    p.add_argument("--out", default="runs/multihost", help="run folder, written by process 0")
    p.add_argument("--quick", action="store_true", help="tiny sizes (the test suite)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--float64", action="store_true", help="compute in float64")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if args.local_devices:  # must precede the first jax import
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (
            f"{flags} --xla_force_host_platform_device_count={args.local_devices}"
        ).strip()
    import jax

    if args.float64:
        jax.config.update("jax_enable_x64", True)
    if args.coordinator or args.auto:
        # CPU processes need a collectives library to talk to each other; GPUs and TPUs
        # bring their own (NCCL, ICI)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        if args.auto:
            jax.distributed.initialize()
        else:
            jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    return analyse(args)


def analyse(args) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jaxscape as js
    from jaxscape import distributed
    from jaxscape.runfolder import RunFolder, _write_json, versions

    sizes = (16, 32, 4) if args.quick else (64, 256, 10)
    num = 256 if args.quick else 8192
    iters = 30 if args.quick else 80
    dtype = np.float64 if args.float64 else np.float32

    rng = np.random.default_rng(args.seed)  # the same global data on every process
    x = rng.standard_normal((num, sizes[0])).astype(dtype)
    teacher = rng.standard_normal((sizes[0], sizes[2])).astype(dtype)
    y = np.argmax(x @ teacher + 0.5 * rng.standard_normal((num, sizes[2])), axis=1)
    procs, me = jax.process_count(), jax.process_index()
    if num % procs:
        raise SystemExit(f"{num} examples do not split over {procs} processes")
    rows = slice(me * num // procs, (me + 1) * num // procs)
    mesh = js.data_mesh()
    batch = js.shard_batch({"x": x[rows], "y": y[rows]}, mesh)

    def init(key):
        k1, k2 = jax.random.split(key)
        return {
            "w1": jax.random.normal(k1, sizes[:2], dtype) / np.sqrt(sizes[0]),
            "b1": jnp.zeros(sizes[1], dtype),
            "w2": jax.random.normal(k2, sizes[1:], dtype) / np.sqrt(sizes[1]),
        }

    def loss_fn(params, b):
        logits = jnp.tanh(b["x"] @ params["w1"] + params["b1"]) @ params["w2"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, b["y"]).mean()

    key = jax.random.key(args.seed)
    params = init(key)
    folder = RunFolder(args.out, command=sys.argv) if distributed.is_main_process() else None
    options = {"seed": args.seed, "quick": args.quick, "float64": args.float64, "num": num,
               "sizes": sizes}  # fmt: skip

    @jax.jit
    def loss_and_grad(p, b):
        value, g = jax.value_and_grad(loss_fn)(p, b)
        return value, optax.tree_utils.tree_norm(g)

    def stage_loss():
        value, gnorm = distributed.gather(loss_and_grad(params, batch))
        return {"loss": float(value), "grad_norm": float(gnorm)}, {}

    @jax.jit
    def ends(p, b):
        eigs = js.eigsh(key, js.hessian_operator(loss_fn, p, b), p, k=6, which="BE",
                        num_iters=iters, tol=0.0)  # fmt: skip
        return eigs.eigenvalues, eigs.residuals

    def stage_eigs():
        values, resid = distributed.gather(ends(params, batch))
        return {"eigenvalues": values.tolist(), "residuals": resid.tolist()}, {}

    @jax.jit
    def density(p, b):
        op = js.hessian_operator(loss_fn, p, b)
        d = js.spectral_density(key, op, p, num_probes=8,
                                num_iters=iters, mesh=mesh)  # fmt: skip
        return d.grid, d.density, js.negative_fraction(d)

    def stage_density():
        grid, dens, neg = distributed.gather(density(params, batch))
        return {"negative_fraction": float(neg)}, {"grid": grid, "density": dens}

    direction = js.random_direction(jax.random.key(args.seed + 1), params)
    alphas = jnp.linspace(-1.0, 1.0, 9 if args.quick else 41, dtype=dtype)

    def stage_line():
        far = jax.tree.map(lambda p, d: p + d, params, direction)
        prof = js.interpolate(loss_fn, params, far, batch, alphas, mesh=mesh)
        loss = distributed.gather(prof.loss)
        return {"loss": loss.tolist()}, {"alphas": np.asarray(alphas), "loss": loss}

    records = {}
    for name, compute in (("loss", stage_loss), ("hessian", stage_eigs),
                          ("density", stage_density), ("line", stage_line)):  # fmt: skip
        rec = distributed.run_stage(folder, name, options, compute)
        if rec is not None:
            records[name] = rec
            state = "cached" if rec.cached else f"{rec.seconds:.1f} s"
            print(f"[{name}] {state}", flush=True)
    if distributed.is_main_process():
        out = {
            "results": {name: rec.results for name, rec in records.items()},
            "cached": {name: bool(rec.cached) for name, rec in records.items()},
            "devices": distributed.device_summary(),
            "versions": versions(),
        }
        _write_json(Path(args.out) / "results.json", out)
        print(f"results: {Path(args.out).resolve() / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
