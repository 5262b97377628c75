"""jaxscape against PyHessian (PyTorch) on the standard workloads, side by side.

Each workload of ``workloads.json`` is rebuilt in PyTorch with the same float32 weights, data
and probe, and checked against the JAX network first (loss to ~1e-5, HVP to ~1e-4; a mismatch
aborts the run). Then, on the CPU: HVP wall time; top-1 / top-5 eigenvalues (PyHessian's
deflated power iteration at its defaults against ``js.eigsh``); and the trace (PyHessian's
Hutchinson at its defaults against ``js.estimate_trace`` Hutch++ with as many products). Errors
are against a dense float64 Hessian (mlp-small) or SciPy ARPACK on the float32 HVP (mlp, cnn).

    python benchmarks/compare_pyhessian.py [--workloads mlp,cnn,mlp-small] [--quick]

Needs the ``compare`` extra (``pip install -e '.[compare]'``); without it, it says so and
exits 0.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.metadata
import json
import os
import platform
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import scipy.linalg
import scipy.sparse.linalg
from jax.flatten_util import ravel_pytree

import jaxscape as js

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workloads as wl

try:
    import torch
    from pyhessian import hessian as PyHessian
except ImportError:
    torch = None

SKIP = "compare_pyhessian: skipped: install the compare extra: pip install -e '.[compare]'"
LOSS_RTOL, HVP_RTOL = 1e-5, 1e-4
RESULTS = Path(__file__).resolve().parent / "results"


class Config(NamedTuple):
    workloads: list[str]
    repeats: int
    warmup: int
    batch: int | None  # None: the workload's own batch size
    ph_max_iter: int  # PyHessian maxIter (its default: 100)
    k1_iters: int  # js.eigsh num_iters for k=1
    k5_iters: int  # js.eigsh num_iters for k=5


# --------------------------------------------------------------------------- PyTorch side


def torch_model(layers: list[dict[str, Any]], theta) -> torch.nn.Sequential:
    """``nn.Sequential`` per the layer list, weights copied from ``theta`` (float32, CPU)."""
    nn = torch.nn
    make = {
        "dense": lambda s: nn.Linear(s["in"], s["out"]),
        "conv2d": lambda s: nn.Conv2d(s["in"], s["out"], s["kernel"], padding=s["pad"]),
        "tanh": lambda s: nn.Tanh(),
        "relu": lambda s: nn.ReLU(),
        "maxpool2": lambda s: nn.MaxPool2d(2),
        "flatten": lambda s: nn.Flatten(),
    }
    model = nn.Sequential(*(make[s["type"]](s) for s in layers))
    weighted = [m for m in model if isinstance(m, nn.Linear | nn.Conv2d)]
    with torch.no_grad():
        for module, (W, b) in zip(weighted, theta, strict=True):
            module.weight.copy_(torch.from_numpy(W))
            module.bias.copy_(torch.from_numpy(b))
    return model.eval()


def torch_hvp(model, x, y, v) -> list:
    """Fresh double-backward HVP: forward, ``grad(create_graph=True)``, ``grad(<g, v>)``."""
    params = list(model.parameters())
    loss = torch.nn.functional.cross_entropy(model(x), y)
    g = torch.autograd.grad(loss, params, create_graph=True)
    return torch.autograd.grad(g, params, grad_outputs=v)


def torch_hvp_reused(model, x, y):
    """PyHessian's inner step: the gradient graph built once, ``v -> H v`` reusing it."""
    params = list(model.parameters())
    loss = torch.nn.functional.cross_entropy(model(x), y)
    g = torch.autograd.grad(loss, params, create_graph=True)
    return lambda v: torch.autograd.grad(g, params, grad_outputs=v, retain_graph=True)


@contextmanager
def counting_pyhessian_hvps():
    """Count PyHessian's HVPs: ``pyhessian/hessian.py`` calls ``hessian_vector_product`` once
    per product (``eigenvalues``, ``trace``), imported by name, so patch it in that module."""
    module, count = sys.modules["pyhessian.hessian"], [0]
    original = module.hessian_vector_product

    def counted(*args):
        count[0] += 1
        return original(*args)

    module.hessian_vector_product = counted
    try:
        yield count
    finally:
        module.hessian_vector_product = original


def run_pyhessian(model, x, y, what: str, max_iter: int, top_n: int = 1) -> dict[str, Any]:
    """PyHessian ``eigenvalues(top_n)`` or ``trace()`` (tol=1e-3): values, HVPs, wall time.

    The time includes building ``hessian`` (one forward/backward with ``create_graph``)."""
    torch.manual_seed(0)
    model.zero_grad(set_to_none=True)  # hessian() accumulates into .grad
    with counting_pyhessian_hvps() as count, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # backward(create_graph=True) reference-cycle warning
        t0 = time.perf_counter()
        hess = PyHessian(model, torch.nn.CrossEntropyLoss(), data=(x, y), cuda=False)
        if what == "eig":
            values = sorted(hess.eigenvalues(maxIter=max_iter, tol=1e-3, top_n=top_n)[0])[::-1]
        else:
            samples = hess.trace(maxIter=max_iter, tol=1e-3)  # the v^T H v, one per product
            values = [np.mean(samples)]
        seconds = time.perf_counter() - t0
    model.zero_grad(set_to_none=True)
    out = dict(values=[float(a) for a in values], num_hvps=count[0], time_s=seconds)
    if what == "trace":  # PyHessian reports none; the standard error of its samples
        out["stderr"] = float(np.std(samples, ddof=1) / np.sqrt(len(samples)))
    return out


def dense_hessian_f64(model, x, y) -> np.ndarray:
    """The exact Hessian in float64 (``vmap`` of forward-over-reverse over the identity)."""
    from torch.func import functional_call, grad, jvp, vmap

    m64 = copy.deepcopy(model).double()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().double().reshape(-1) for p in model.parameters()])
    x64 = x.double()

    def loss(flat):
        parts = torch.split(flat, [s.numel() for s in shapes])
        params = {n: p.view(s) for n, p, s in zip(names, parts, shapes, strict=True)}
        return torch.nn.functional.cross_entropy(functional_call(m64, params, (x64,)), y)

    eye = torch.eye(flat0.numel(), dtype=torch.float64)
    H = vmap(lambda e: jvp(grad(loss), (flat0,), (e,))[1], chunk_size=1024)(eye).numpy()
    return (H + H.T) / 2


# --------------------------------------------------------------------------- JAX side


def run_jax_eigs(loss, params, batch, k: int, num_iters: int) -> dict[str, Any]:
    """``js.eigsh`` (Lanczos, ``which="LA"``) on ``hessian_operator``, jitted; compile timed
    separately (AOT ``lower().compile()``), then one timed run."""

    def top(p, b, key):
        e = js.eigsh(key, js.hessian_operator(loss, p, b), p, k=k, num_iters=num_iters)
        return e.eigenvalues, e.num_matvecs, e.converged

    (vals, n, conv), compile_s, run_s = compiled_run(top, params, batch, jax.random.key(0))
    values = [float(a) for a in np.asarray(vals)[::-1]]
    return dict(
        values=values, num_hvps=int(n), converged=bool(conv), time_s=run_s, compile_s=compile_s
    )


def run_jax_trace(loss, params, batch, num_matvecs: int) -> dict[str, Any]:
    """``js.estimate_trace`` Hutch++ with ``num_matvecs`` products (8 at a time), jitted."""

    def trace(p, b, key):
        op = js.hessian_operator(loss, p, b)
        t = js.estimate_trace(key, op, p, num_matvecs=num_matvecs, batch_size=8)
        return t.value, t.stderr

    (value, stderr), compile_s, run_s = compiled_run(trace, params, batch, jax.random.key(0))
    return dict(
        values=[float(value)],
        stderr=float(stderr),
        num_hvps=num_matvecs,
        time_s=run_s,
        compile_s=compile_s,
    )


def compiled_run(f, *args) -> tuple[Any, float, float]:
    """``jax.jit(f)`` compiled ahead of time for ``args``, then run once:
    ``(output, compile_s, run_s)``."""
    t0 = time.perf_counter()
    compiled = jax.jit(f).lower(*args).compile()
    t1 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, t1 - t0, time.perf_counter() - t1


def median_time(fn, repeats: int, warmup: int) -> float:
    """Median wall time of ``fn()`` (which must block until its result is ready)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


# --------------------------------------------------------------------------- references


def dense_reference(model, x, y) -> dict[str, Any]:
    """Top-6 eigenvalues and exact trace of the dense float64 Hessian."""
    t0 = time.perf_counter()
    H = dense_hessian_f64(model, x, y)
    n = H.shape[0]
    top = scipy.linalg.eigvalsh(H, subset_by_index=[n - 6, n - 1])[::-1]
    return dict(
        kind="dense float64 Hessian (torch)",
        top=[float(a) for a in top],
        trace=float(np.trace(H)),
        num_hvps=n,
        converged=True,
        time_s=time.perf_counter() - t0,
    )


def arpack_reference(loss, params, batch) -> dict[str, Any]:
    """Top-6 by SciPy ARPACK (``k=6, which="LA", tol=1e-6``, float64 Lanczos) on the float32
    ``js.hvp`` (checked against PyTorch's HVP before this runs)."""
    flat, unravel = ravel_pytree(params)
    hvp = jax.jit(lambda p, b, v: ravel_pytree(js.hvp(loss, p, b, unravel(v)))[0])
    count = [0]

    def matvec(v):
        count[0] += 1
        return np.asarray(hvp(params, batch, np.asarray(v, np.float32).ravel()), np.float64)

    n = flat.size
    op = scipy.sparse.linalg.LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(0).standard_normal(n)
    t0 = time.perf_counter()
    try:
        top = scipy.sparse.linalg.eigsh(
            op, k=6, which="LA", tol=1e-6, v0=v0, maxiter=60, return_eigenvectors=False
        )
        converged = True
    except scipy.sparse.linalg.ArpackNoConvergence as err:
        top, converged = err.eigenvalues, False
    return dict(
        kind="ARPACK eigsh(k=6, LA, tol=1e-6) on float32 js.hvp",
        top=[float(a) for a in np.sort(top)[::-1]],
        trace=None,
        num_hvps=count[0],
        converged=converged,
        time_s=time.perf_counter() - t0,
    )


# --------------------------------------------------------------------------- one workload

# SciPy ARPACK on W1 at theta0, as quoted in the issue that asked for this comparison.
ISSUE_W1_TOP = [0.70014, 0.69894, 0.68751, 0.68483]


def agreement(model, x, y, v_torch, loss, params, batch, v) -> dict[str, Any]:
    """Loss and HVP (probe ``v``) of the PyTorch and the JAX network at theta0."""
    with torch.no_grad():
        loss_t = float(torch.nn.functional.cross_entropy(model(x), y))
    loss_j = float(loss(params, batch))
    hv_t = np.concatenate([a.numpy().ravel() for a in torch_hvp(model, x, y, v_torch)])
    hv_j = np.asarray(ravel_pytree(js.hvp(loss, params, batch, v))[0])
    loss_rel = abs(loss_t - loss_j) / abs(loss_j)
    hvp_rel = float(np.linalg.norm(hv_t - hv_j) / np.linalg.norm(hv_j))
    return dict(
        loss_torch=loss_t,
        loss_jax=loss_j,
        loss_rel_err=loss_rel,
        hvp_norm_torch=float(np.linalg.norm(hv_t)),
        hvp_norm_jax=float(np.linalg.norm(hv_j)),
        hvp_rel_err=hvp_rel,
        passed=loss_rel <= LOSS_RTOL and hvp_rel <= HVP_RTOL,
    )


def max_rel_err(values: list[float], ref: list[float] | None) -> float | None:
    """``max_i |values_i - ref_i| / |ref_i|`` over the leading entries (both descending)."""
    if ref is None:
        return None
    return max(abs(a - b) / abs(b) for a, b in zip(values, ref, strict=False))


def hvp_timings(model, x, y, v_torch, loss, params, batch, v, cfg: Config) -> dict[str, Any]:
    """Median HVP wall times (ms): fresh torch double backward, torch reusing the gradient
    graph (PyHessian's per-product cost), and jitted ``js.hvp`` with all inputs as arguments."""
    jax_hvp = jax.jit(lambda p, b, u: js.hvp(loss, p, b, u))
    reused = torch_hvp_reused(model, x, y)
    runs = {
        "torch_ms": lambda: torch_hvp(model, x, y, v_torch),
        "torch_reused_graph_ms": lambda: reused(v_torch),
        "jax_ms": lambda: jax.block_until_ready(jax_hvp(params, batch, v)),
    }
    ms = {k: 1e3 * median_time(f, cfg.repeats, cfg.warmup) for k, f in runs.items()}
    return ms | {"ratio_torch_over_jax": ms["torch_ms"] / ms["jax_ms"], "repeats": cfg.repeats}


def note(name: str, what: str) -> None:
    """A progress line on stderr (the table goes to stdout)."""
    print(f"  [{name}] {what} ...", file=sys.stderr, flush=True)


def run_workload(name: str, cfg: Config) -> dict[str, Any]:
    """Everything for one workload; exits (non-zero) if the two networks disagree."""
    w = wl.build(name, batch=cfg.batch)
    model = torch_model(w.layers, w.theta0)
    x, y = torch.from_numpy(w.x), torch.from_numpy(w.y)
    v_torch = [torch.from_numpy(a) for layer in w.v for a in layer]
    loss = wl.jax_loss_fn(w.layers)
    params, batch, v = wl.to_jax(w)
    res = dict(name=name, title=w.title, num_params=w.num_params, batch=int(w.x.shape[0]))

    has_conv = any(layer["type"] == "conv2d" for layer in w.layers)
    convs = f"; JAX convs: {wl.default_conv_impl()} (workloads.jax_loss_fn)" if has_conv else ""
    res["check"] = check = agreement(model, x, y, v_torch, loss, params, batch, v)
    print(
        f"\n== {name}: {w.title} ==\n{w.num_params:,} params, batch {res['batch']}"
        f"{'' if cfg.batch is None else ' (batch overridden by --quick)'}"
        f"{convs}\n"
        f"check: loss torch {check['loss_torch']:.8f} jax {check['loss_jax']:.8f} "
        f"(rel {check['loss_rel_err']:.1e}); |Hv| torch {check['hvp_norm_torch']:.6f} jax "
        f"{check['hvp_norm_jax']:.6f} (rel diff {check['hvp_rel_err']:.1e})",
        flush=True,
    )
    if not check["passed"]:
        raise SystemExit(
            f"compare_pyhessian: FAILED: PyTorch and JAX disagree on {name}: "
            f"loss rel {check['loss_rel_err']:.2e} (tol {LOSS_RTOL:g}), HVP rel "
            f"{check['hvp_rel_err']:.2e} (tol {HVP_RTOL:g})"
        )

    note(name, "timing HVPs")
    res["hvp_time"] = hvp_timings(model, x, y, v_torch, loss, params, batch, v, cfg)

    dense = name == "mlp-small"
    note(name, "reference: " + ("dense float64 Hessian" if dense else "ARPACK"))
    res["reference"] = ref = (
        dense_reference(model, x, y) if dense else arpack_reference(loss, params, batch)
    )
    for k, iters in ((1, cfg.k1_iters), (5, cfg.k5_iters)):
        note(name, f"top-{k} eigenvalues")
        ph = run_pyhessian(model, x, y, "eig", cfg.ph_max_iter, top_n=k)
        ph["method"] = f"PyHessian power top_n={k} (maxIter={cfg.ph_max_iter}, tol=1e-3)"
        jx = run_jax_eigs(loss, params, batch, k, iters)
        jx["method"] = f"jaxscape eigsh k={k} (num_iters={iters})"
        for r in (ph, jx):
            r["max_rel_err"] = max_rel_err(r["values"], ref["top"][:k])
        res[f"top{k}"] = {"pyhessian": ph, "jaxscape": jx}

    note(name, "trace")
    ph = run_pyhessian(model, x, y, "trace", cfg.ph_max_iter)
    ph["method"] = f"PyHessian Hutchinson (maxIter={cfg.ph_max_iter}, tol=1e-3)"
    m = max(3, 3 * -(-ph["num_hvps"] // 3))  # as many products, rounded up to a multiple of 3
    jx = run_jax_trace(loss, params, batch, m)
    jx["method"] = "jaxscape Hutch++ (as many HVPs)"
    exact = None if ref["trace"] is None else [ref["trace"]]
    for r in (ph, jx):
        r["max_rel_err"] = max_rel_err(r["values"], exact)
    res["trace"] = {"pyhessian": ph, "jaxscape": jx}
    return res


# --------------------------------------------------------------------------- output


def _fmt_err(e: float | None) -> str:
    return "n/a" if e is None else f"{e:.1e}"


def format_workload(res: dict[str, Any]) -> str:
    """The side-by-side table for one workload."""
    t, ref = res["hvp_time"], res["reference"]
    lines = [
        f"HVP: torch {t['torch_ms']:.2f} ms (graph reused, as in PyHessian: "
        f"{t['torch_reused_graph_ms']:.2f} ms) | jaxscape {t['jax_ms']:.2f} ms | "
        f"torch/jax {t['ratio_torch_over_jax']:.2f}x  (median of {t['repeats']})",
        f"reference: {ref['kind']}: {ref['num_hvps']} HVPs, {ref['time_s']:.1f} s, "
        f"converged {ref['converged']}",
        "  top-6: "
        + " ".join(f"{a:.5f}" for a in ref["top"])
        + ("" if ref["trace"] is None else f"; trace {ref['trace']:.5f}"),
    ]
    if res["name"] == "mlp" and res["batch"] == 256:
        err = max_rel_err(ref["top"][:4], ISSUE_W1_TOP)
        lines.append(f"  issue's ARPACK top-4 {ISSUE_W1_TOP}: max rel diff {err:.1e}")
    head = f"{'':6} {'method':48} {'HVPs':>5} {'time s':>8} {'compile s':>9} {'rel err':>8}  values"
    lines += [head, "-" * len(head)]
    for row in ("top1", "top5", "trace"):
        for who in ("pyhessian", "jaxscape"):
            r = res[row][who]
            comp = f"{r['compile_s']:9.2f}" if "compile_s" in r else f"{'-':>9}"
            vals = " ".join(f"{a:.5f}" for a in r["values"])
            if "stderr" in r:
                vals += f" ± {r['stderr']:.5f}"
            lines.append(
                f"{row:6} {r['method']:48} {r['num_hvps']:5d} {r['time_s']:8.2f} {comp} "
                f"{_fmt_err(r['max_rel_err']):>8}  {vals}"
            )
    return "\n".join(lines)


def _cpu_model() -> str:
    """``model name`` from ``/proc/cpuinfo`` (``platform.processor()`` is often empty)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")


def environment() -> dict[str, Any]:
    """Versions, CPU and a timestamp for the JSON."""
    return {
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": {
            name: importlib.metadata.version(name)
            for name in ("jax", "jaxlib", "jaxscape", "torch", "pyhessian", "numpy", "scipy")
        },
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "jax_devices": [str(d) for d in jax.devices()],
        "jax_conv_impl": wl.default_conv_impl(),  # how workloads.jax_loss_fn runs convs
    }


def parse_config(argv: list[str] | None) -> tuple[Config, Path]:
    """Command line -> (``Config``, output directory)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add("--workloads", default="mlp,cnn,mlp-small", help="comma-separated (default: all three)")
    add("--repeats", type=int, default=20, help="HVP timing runs, median (default: 20)")
    add(
        "--out",
        default=str(RESULTS),
        help="directory for compare_pyhessian.json (default: benchmarks/results)",
    )
    add(
        "--quick",
        action="store_true",
        help="smoke run (overrides the above but --out): "
        "mlp-small at batch 128, 3 repeats, maxIter/num_iters 20/20/40",
    )
    a = p.parse_args(argv)
    if a.quick:
        return Config(["mlp-small"], 3, 1, 128, 20, 20, 40), Path(a.out)
    names = [n.strip() for n in a.workloads.split(",") if n.strip()]
    unknown = sorted(set(names) - set(wl.load_spec()["workloads"]))
    if unknown or not names:
        p.error(f"--workloads: unknown {unknown or names}; choose from mlp, cnn, mlp-small")
    return Config(names, a.repeats, 3, None, 100, 50, 150), Path(a.out)


def main(argv: list[str] | None = None) -> int:
    cfg, out = parse_config(argv)
    if torch is None:
        print(SKIP)
        return 0
    t0 = time.perf_counter()
    results = []
    for name in cfg.workloads:
        res = run_workload(name, cfg)
        print(format_workload(res), flush=True)
        results.append(res)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "compare_pyhessian.json"
    doc = environment() | dict(config=cfg._asdict(), wall_s=time.perf_counter() - t0)
    doc["workloads"] = results
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {path} ({doc['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
