"""Hessian spectrum and a loss line of one model, on one process per host.

Launch one copy per host (see ``examples/README.md``). Every process derives the same global
data set from ``--seed`` and keeps its own slice: process ``i`` of ``P`` holds rows
``[i N/P, (i+1) N/P)``. ``shard_batch`` joins the slices into one global batch over every
device of every host, and the numbers are those of one process holding the whole batch.
Process 0 alone reads and writes the run folder ``--out``. A rerun with the same flags loads
the finished stages: process 0 decides and broadcasts the decision (``distributed.run_stage``),
so ``--out`` need not be on a filesystem the other hosts see.

    # two hosts (or two terminals on one machine, with --local-devices 2 each):
    python examples/multihost.py --coordinator HOST0:12345 --num-processes 2 --process-id 0
    python examples/multihost.py --coordinator HOST0:12345 --num-processes 2 --process-id 1
    # SLURM, Open MPI, Cloud TPU: flags left out are what jax.distributed.initialize() detects
    srun python examples/multihost.py --auto
    # one process (the reference): no flags and no cluster detected
    python examples/multihost.py

Stages: the full-batch loss and gradient norm; the top-k and bottom-k Hessian eigenvalues
(``eigsh``, ``which="BE"``); a spectral density (SLQ, probes split over the devices); and the
loss from θ₀ to θ₀ + a random filter-normalized direction (points split over the devices).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

STAGES = ("loss", "hessian", "density", "line")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--coordinator",
        help="HOST:PORT of the coordinator, on process 0's host (default: detected on a cluster)",
    )
    p.add_argument("--num-processes", type=int, help="default: detected on a cluster")
    p.add_argument("--process-id", type=int, help="this process's rank; default: detected")
    p.add_argument(
        "--auto",
        action="store_true",
        help="require jax.distributed.initialize() to detect the cluster (SLURM, Open MPI, "
        "TPU pods) instead of falling back to one process when it finds none",
    )
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
    flags = os.environ.get("XLA_FLAGS", "")
    if args.local_devices:  # XLA reads its flags once, at the first jax import
        flags += f" --xla_force_host_platform_device_count={args.local_devices}"
    if args.quick and "xla_backend_optimization_level" not in flags:
        flags += " --xla_backend_optimization_level=0"  # tiny programs: compiling is the cost
    os.environ["XLA_FLAGS"] = flags.strip()
    import jax

    if args.float64:
        jax.config.update("jax_enable_x64", True)
    initialize(args)
    return analyse(args)


def initialize(args) -> None:
    """``jax.distributed.initialize`` with the flags given; the others are detected."""
    import jax

    # CPU processes reach each other through gloo (the default in current JAX, named here for
    # older ones); GPUs and TPUs bring their own collectives (NCCL, ICI)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    given = {
        name: value
        for name, value in (
            ("coordinator_address", args.coordinator),
            ("num_processes", args.num_processes),
            ("process_id", args.process_id),
        )
        if value is not None
    }
    if given == {"num_processes": 1}:
        return
    if given or args.auto:
        jax.distributed.initialize(**given)
        return
    try:
        jax.distributed.initialize()
    except ValueError as err:  # no flags and no cluster environment: one process
        if "coordinator_address" not in str(err):
            raise
        print("no cluster detected and no --coordinator: running as one process", flush=True)


def analyse(args) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jaxscape as js
    from jaxscape import distributed
    from jaxscape.runfolder import RunFolder, versions

    start = time.perf_counter()
    sizes = (16, 32, 4) if args.quick else (64, 256, 10)
    num = 256 if args.quick else 8192
    iters = 30 if args.quick else 80
    dtype = np.float64 if args.float64 else np.float32

    rng = np.random.default_rng(args.seed)  # the same global data on every process
    x = rng.standard_normal((num, sizes[0])).astype(dtype)
    teacher = rng.standard_normal((sizes[0], sizes[2])).astype(dtype)
    y = np.argmax(x @ teacher + 0.5 * rng.standard_normal((num, sizes[2])), axis=1)
    procs, me = jax.process_count(), jax.process_index()
    if num % jax.device_count():
        raise SystemExit(f"{num} examples do not split over {jax.device_count()} devices")
    rows = slice(me * num // procs, (me + 1) * num // procs)  # this process's slice
    mesh = js.data_mesh()  # every device of every process
    batch = js.shard_batch({"x": x[rows], "y": y[rows]}, mesh)

    @jax.jit  # one compilation, not one per eager operation
    def init(key):
        k1, k2, k3 = jax.random.split(key, 3)
        params = {
            "w1": jax.random.normal(k1, sizes[:2], dtype) / np.sqrt(sizes[0]),
            "b1": jnp.zeros(sizes[1], dtype),
            "w2": jax.random.normal(k2, sizes[1:], dtype) / np.sqrt(sizes[1]),
        }
        return params, js.random_direction(k3, params)

    def loss_fn(params, b):
        logits = jnp.tanh(b["x"] @ params["w1"] + params["b1"]) @ params["w2"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, b["y"]).mean()

    key = jax.random.key(args.seed)
    params, direction = init(key)
    main = distributed.is_main_process()
    folder = RunFolder(args.out, command=sys.argv) if main else None
    options = {"seed": args.seed, "quick": args.quick, "float64": args.float64, "num": num,
               "sizes": sizes, "iters": iters}  # fmt: skip

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
        d = js.spectral_density(key, op, p, num_probes=8, num_iters=iters, mesh=mesh)
        return d.grid, d.density, js.negative_fraction(d)

    def stage_density():
        grid, dens, neg = distributed.gather(density(params, batch))
        return {"negative_fraction": float(neg)}, {"grid": grid, "density": dens}

    alphas = np.linspace(0.0, 1.0, 9 if args.quick else 41).astype(dtype)

    def stage_line():
        far = jax.tree.map(lambda p, d: p + d, params, direction)  # a random point
        prof = js.interpolate(loss_fn, params, far, batch, alphas, mesh=mesh)
        loss = distributed.gather(prof.loss)
        return {"alphas": alphas.tolist(), "loss": loss.tolist()}, {"loss": loss}

    records = {}
    computes = (stage_loss, stage_eigs, stage_density, stage_line)
    for name, compute in zip(STAGES, computes, strict=True):
        rec = distributed.run_stage(folder, name, options, compute)
        if main:  # results.json after every stage, so an interrupted run shows what it has
            records[name] = rec
            print(f"[{name}] " + ("cached" if rec.cached else f"{rec.seconds:.1f} s"), flush=True)
            _write_results(Path(args.out), records, versions())
    if main:
        print(f"results: {Path(args.out).resolve() / 'results.json'}")
    else:
        print(f"process {me} of {procs}: done; process 0 wrote the results", flush=True)
    print(f"process {me}: {time.perf_counter() - start:.1f} s", flush=True)
    return 0


def _write_results(out: Path, records: dict, versions: dict) -> None:
    from jaxscape import distributed

    doc = {
        "results": {name: rec.results for name, rec in records.items()},
        "cached": {name: bool(rec.cached) for name, rec in records.items()},
        "seconds": {name: rec.seconds for name, rec in records.items()},
        "devices": distributed.device_summary(),
        "versions": versions,
    }
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=False))
    os.replace(tmp, out / "results.json")  # never a half-written file


if __name__ == "__main__":
    sys.exit(main())
