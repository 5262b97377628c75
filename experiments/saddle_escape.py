"""Training stuck ≠ zero gradient; and how fast GD, perturbed GD and saddle-free Newton leave a
saddle.

Claims reproduced:

1. **Plateaus are near saddles, not at critical points** (Saxe, McClelland & Ganguli 2014;
   Dauphin et al. 2014, "Identifying and attacking the saddle point problem in high-dimensional
   non-convex optimization", NeurIPS). A deep linear regression net (``toys.linear``,
   depth 2 and 3, whitened data, teacher singular values ``s``) trained by full-batch gradient
   descent from a small init sits on plateaus at the loss levels ``L_k = ½ Σ_{α>k} s_α²`` of
   its saddles (``k`` modes learned). Measured at every record: the loss, ``‖∇L‖`` and the dense
   Hessian spectrum (``hessian_matrix``, float64; index = fraction of eigenvalues below
   ``-eps^(1/3) max|λ|``). On each plateau (records within ``plateau_rtol`` of a level ``L_k``,
   ``k < rank``) we report the smallest ``‖∇L‖`` (small, not zero) and ``λ_min`` (negative:
   a descent direction, i.e. near a saddle).
2. **Training stops at points that are not critical** (Goodfellow, Bengio & Courville 2016,
   *Deep Learning*, §8.2.3: the gradient norm does not shrink, often grows, during training).
   An MLP on digits (``builtin_problem("mlp", "digits")``, float64, cross-entropy) trained by
   minibatch SGD (``fit``): the full-batch ``‖∇L‖`` along training (callback) and the dense
   Hessian index at a few points; at the end ``‖∇L‖`` is compared with its initial value.
3. **Escape times** (Dauphin et al. 2014, Sec. 4; Jin, Ge, Netrapalli, Kakade & Jordan 2017,
   "How to escape saddle points efficiently", ICML). ``dynamics.escape_saddle`` with GD,
   perturbed GD (``optim.perturbed_gd``: kick of radius 0.01 when ``‖g‖ <= 10⁻³``) and
   dense saddle-free Newton (unit step), from ``θ* + δu`` (``u`` a random unit vector, one per
   key, ``δ`` in ``deltas``, and ``δ = 0``) at four saddles: the depth-2 scalar chain's origin
   (strict, ``λ_min = -2``), the depth-3 chain's origin (zero Hessian), a 2-layer matrix net's
   origin (strict, ``λ_min = -s₁``) and its rank-1 saddle (first mode learned,
   ``W₂W₁ = s₁u₁v₁ᵀ``, balanced). Escape = loss ``drop`` below the saddle's. GD is compared with
   ``dynamics.gd_escape_time(λ_min, offset, η, drop)`` (offset = length of the start's
   projection on the ``λ_min`` eigenspace) at the strict saddles.

Float64 throughout (``jax_enable_x64``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from jaxscape import (
    builtin_problem,
    escape_saddle,
    experiment,
    fit,
    gd_escape_time,
    hessian_matrix,
    saddle_optimizers,
    saddle_problems,
)
from jaxscape.toys import linear

NAME = "saddle_escape"
QUICK = {
    "linear_depths": [3],
    "linear_dim": 4,
    "linear_examples": 32,
    "singular_values": [3.0, 1.0, 0.3],
    "linear_init": 0.05,
    "linear_lr": 0.05,
    "linear_steps": 500,
    "linear_record_every": 10,
    "plateau_rtol": 0.05,
    "mlp": False,  # the digits MLP (seconds of compilation; the slow test runs it)
    "mlp_width": 3,
    "mlp_examples": 150,
    "mlp_lr": 0.1,
    "mlp_batch": 32,
    "mlp_steps": 200,
    "mlp_record_every": 10,
    "mlp_hessian_points": 2,
    "problems": ["chain2_origin", "chain3_origin"],
    "keys": 1,
    "deltas": [1e-5],
    "learning_rate": 0.05,
    "drop": 1e-2,
    "escape_steps": {"chain2_origin": 150, "chain3_origin": 1000, "matrix_origin": 300,
                     "matrix_rank1": 600},
}  # fmt: skip
FULL = {
    **QUICK,
    "linear_depths": [2, 3],
    "linear_steps": 2000,
    "deltas": [1e-2, 1e-4, 1e-6],
    "linear_dim": 6,
    "linear_examples": 64,
    "singular_values": [3.0, 1.5, 0.5],
    "linear_init": 0.02,
    "mlp": True,
    "mlp_width": 8,
    "mlp_examples": 500,
    "mlp_steps": 6000,
    "mlp_record_every": 50,
    "mlp_hessian_points": 7,
    "problems": ["chain2_origin", "chain3_origin", "matrix_origin", "matrix_rank1"],
    "keys": 5,
    "escape_steps": {"chain2_origin": 300, "chain3_origin": 20000, "matrix_origin": 400,
                     "matrix_rank1": 1000},
}  # fmt: skip
FLAGS = {  # flag: (type, help); each overrides the config value of the same name
    "keys": (int, "random starts (directions and perturbation keys) per saddle"),
    "mlp_width": (int, "hidden width of the digits MLP"),
    "mlp_steps": (int, "SGD steps of the digits MLP"),
    "mlp_examples": (int, "digits examples (before the 80/20 split)"),
    "linear_steps": (int, "GD steps of the deep linear nets"),
    "linear_dim": (int, "width of the deep linear nets"),
}
EIG_RTOL = float(np.finfo(np.float64).eps ** (1 / 3))  # classify's default eigenvalue tolerance


def index_of(lam: np.ndarray) -> np.ndarray:
    """Fraction of eigenvalues below ``-EIG_RTOL · max|λ|`` per row (classify's rule)."""
    tol = EIG_RTOL * np.max(np.abs(lam), axis=-1, keepdims=True)
    return np.mean(lam < -tol, axis=-1)


def _sgd(lr):
    return optax.sgd(lr)


# --------------------------------------------------------------------------- 1. deep linear


def _saddle_levels(s):
    s2 = np.asarray(s, float) ** 2
    return [0.5 * float(s2[k:].sum()) for k in range(len(s2))]


def deep_linear_plateaus(cfg, key):
    results, arrays = {}, {}
    d, s = cfg["linear_dim"], cfg["singular_values"]
    levels = _saddle_levels(s)
    for depth in cfg["linear_depths"]:
        prob = linear.deep_linear_regression(
            jax.random.fold_in(key, depth), input_dim=d, output_dim=d, hidden_dim=d,
            num_layers=depth, num_examples=cfg["linear_examples"], singular_values=s,
            init_scale=cfg["linear_init"], dtype=jnp.float64,
        )  # fmt: skip
        batch = prob.batch

        def spectrum(params, state, step, batch=batch):
            return jnp.linalg.eigvalsh(hessian_matrix(linear.deep_linear_loss, params, batch))

        run = fit(
            jax.random.key(0), linear.deep_linear_loss, prob.params, _sgd(cfg["linear_lr"]),
            batch, num_steps=cfg["linear_steps"], record_every=cfg["linear_record_every"],
            callbacks={"eigs": spectrum}, record_params=False, progress=False,
            steps_per_chunk=cfg["linear_steps"],
        )  # fmt: skip
        loss, gnorm = np.asarray(run.history.loss), np.asarray(run.history.grad_norm)
        lam = np.asarray(run.history.metrics["eigs"])
        index = index_of(lam)
        plateaus = []
        for k, level in enumerate(levels):
            on = np.flatnonzero(np.abs(loss - level) <= cfg["plateau_rtol"] * level)
            if on.size == 0:
                plateaus.append({"k": k, "level": level, "records": 0})
                continue
            steps = np.asarray(run.history.step)[on]
            plateaus.append(
                {
                    "k": k,
                    "level": level,
                    "records": int(on.size),
                    "first_step": int(steps[0]),
                    "last_step": int(steps[-1]),
                    "min_grad_norm": float(gnorm[on].min()),
                    "max_grad_norm": float(gnorm[on].max()),
                    "max_lambda_min": float(lam[on, 0].max()),
                    "min_lambda_min": float(lam[on, 0].min()),
                    "min_index": float(index[on].min()),
                    "max_index": float(index[on].max()),
                    "lambda_max": float(lam[on, -1].max()),
                }
            )
        results[str(depth)] = {
            "plateaus": plateaus,
            "initial_loss": float(loss[0]),
            "final_loss": float(loss[-1]),
            "final_grad_norm": float(gnorm[-1]),
            "final_lambda_min": float(lam[-1, 0]),
            "final_index": float(index[-1]),
            "peak_grad_norm": float(gnorm.max()),
        }
        arrays[f"step_{depth}"] = np.asarray(run.history.step)
        arrays[f"loss_{depth}"] = loss
        arrays[f"grad_norm_{depth}"] = gnorm
        arrays[f"lambda_min_{depth}"] = lam[:, 0]
        arrays[f"index_{depth}"] = index
    results["saddle_levels"] = levels
    return results, arrays


# --------------------------------------------------------------------------- 2. digits MLP


def mlp_training(cfg, key):
    k_prob, k_fit = jax.random.split(key)
    prob = builtin_problem(
        k_prob, "mlp", "digits", dtype=jnp.float64, width=cfg["mlp_width"], depth=1,
        num_examples=cfg["mlp_examples"],
    )  # fmt: skip
    train, loss_fn = prob.train, prob.loss_fn
    full = jax.value_and_grad(loss_fn)

    def full_batch(params, state, step):
        value, grad = full(params, train)
        return jnp.stack([value, optax.tree_utils.tree_norm(grad)])

    run = fit(
        k_fit, loss_fn, prob.params, _sgd(cfg["mlp_lr"]), train,
        num_steps=cfg["mlp_steps"], batch_size=cfg["mlp_batch"],
        record_every=cfg["mlp_record_every"], callbacks={"full": full_batch},
        progress=False,
    )  # fmt: skip
    step = np.asarray(run.history.step)
    fl = np.asarray(run.history.metrics["full"])
    picks = np.unique(np.linspace(0, step.size - 1, cfg["mlp_hessian_points"]).round().astype(int))
    points = jax.tree.map(lambda a: a[picks], run.history.params)
    eig = jax.jit(
        lambda ps: jax.lax.map(
            lambda p: jnp.linalg.eigvalsh(hessian_matrix(loss_fn, p, train, max_params=10**4)),
            ps,
        )
    )
    lam = np.asarray(eig(points))
    index = index_of(lam)
    gn = fl[:, 1]
    results = {
        "description": prob.description,
        "initial_full_loss": float(fl[0, 0]),
        "final_full_loss": float(fl[-1, 0]),
        "initial_full_grad_norm": float(gn[0]),
        "final_full_grad_norm": float(gn[-1]),
        "min_full_grad_norm": float(gn.min()),
        "max_full_grad_norm": float(gn.max()),
        "final_over_initial_grad_norm": float(gn[-1] / gn[0]),
        "hessian_steps": step[picks],
        "hessian_loss": fl[picks, 0],
        "hessian_grad_norm": gn[picks],
        "index": index,
        "lambda_min": lam[:, 0],
        "lambda_max": lam[:, -1],
        "num_params": int(lam.shape[1]),
    }
    arrays = {"step": step, "full_loss": fl[:, 0], "full_grad_norm": gn, "eigs": lam}
    return results, arrays


# --------------------------------------------------------------------------- 3. escape


def _matrix_saddles(key):
    """2-layer 3→3→3 net, whitened data, teacher s = (2, 1, 0.5): origin and rank-1 saddle."""
    prob = linear.deep_linear_regression(
        key, input_dim=3, output_dim=3, hidden_dim=3, num_layers=2, num_examples=16,
        singular_values=[2.0, 1.0, 0.5], dtype=jnp.float64,
    )  # fmt: skip
    batch = prob.batch
    U, s, Vt = jnp.linalg.svd(linear.input_output_correlation(batch))
    e1 = jnp.eye(3, dtype=jnp.float64)[0]
    root = jnp.sqrt(s[0])
    rank1 = (root * jnp.outer(e1, Vt[0]), root * jnp.outer(U[:, 0], e1))  # W₁ (h, d), W₂ (d, h)
    zero = tuple(jnp.zeros_like(w) for w in prob.params)

    def loss_fn(params, _=None):
        return linear.deep_linear_loss(params, batch)

    return {"matrix_origin": (loss_fn, zero), "matrix_rank1": (loss_fn, rank1)}


def _problem(key, name):
    """``(loss_fn, saddle)`` of one saddle (the matrix net is built only when asked for)."""
    if name.startswith("matrix"):
        return _matrix_saddles(key)[name]
    toy = saddle_problems(dtype=jnp.float64)[name]
    return toy.loss_fn, toy.point


def _unit(key, n):
    u = jax.random.normal(key, (n,), jnp.float64)
    return u / jnp.linalg.norm(u)


def escape_times(cfg, key, name):
    loss_fn, saddle = _problem(jax.random.key(7), name)
    flat, unravel = ravel_pytree(saddle)
    H = np.asarray(hessian_matrix(loss_fn, saddle, None))
    lam, Q = np.linalg.eigh(H)
    grad_norm = float(optax.tree_utils.tree_norm(jax.grad(loss_fn)(saddle, None)))
    strict = lam[0] < -EIG_RTOL * max(np.abs(lam).max(), 1e-300)
    span = Q[:, lam <= lam[0] + 1e-8] if strict else None
    lr, drop, steps = cfg["learning_rate"], cfg["drop"], cfg["escape_steps"][name]
    base = saddle_optimizers(jax.random.key(0), lr)
    fixed = {"gd": base["gd"], "saddle_free_newton": base["saddle_free_newton"]}

    keys = jax.random.split(key, cfg["keys"])
    kicks = [saddle_optimizers(jax.random.fold_in(k, 2), lr)["perturbed_gd"] for k in keys]

    def run(start, i):  # one optimizer object per key: fit compiles once per object
        opts = {**fixed, "perturbed_gd": kicks[i]}
        with jax.numpy_dtype_promotion("standard"):
            return escape_saddle(
                loss_fn, saddle, unravel(start), None, optimizers=opts, num_steps=steps,
                drop=drop,
            )  # fmt: skip

    rows, curves = [], {}
    for delta in [*cfg["deltas"], 0.0]:
        for i, k in enumerate(keys):
            u = _unit(jax.random.fold_in(k, 1), flat.size)
            start = flat + delta * u
            runs = run(start, i)
            offset = float(np.linalg.norm(span.T @ np.asarray(start - flat))) if strict else 0.0
            closed = (
                gd_escape_time(float(lam[0]), offset, lr, drop) if strict and offset > 0 else None
            )
            rows.append(
                {
                    "delta": delta,
                    "key": i,
                    "offset_on_lambda_min": offset,
                    "gd_closed_form": closed,
                    **{n: (r.escape_step if r.escape_step >= 0 else None) for n, r in runs.items()},
                    "finite": all(r.finite for r in runs.values()),
                }
            )
            if i == 0:
                for n, r in runs.items():
                    curves[f"{delta:g}.{n}"] = np.asarray(r.loss)
    results = {
        "num_params": int(flat.size),
        "saddle_loss": float(loss_fn(saddle, None)),
        "saddle_grad_norm": grad_norm,
        "hessian_eigenvalues": lam,
        "strict": bool(strict),
        "num_steps": steps,
        "rows": rows,
    }
    return results, curves


def escape_summary(cfg, rec):
    """Per δ and optimizer: how many runs escaped and the median / min / max escape step."""
    out = {}
    for delta in [*cfg["deltas"], 0.0]:
        rows = [r for r in rec["rows"] if r["delta"] == delta]
        entry = {}
        for n in ("gd", "perturbed_gd", "saddle_free_newton", "gd_closed_form"):
            vals = [r[n] for r in rows if r[n] is not None]
            entry[n] = {
                "escaped": len(vals),
                "runs": len(rows),
                "median": float(np.median(vals)) if vals else None,
                "min": min(vals) if vals else None,
                "max": max(vals) if vals else None,
            }
        gd_err = [
            abs(r["gd"] - r["gd_closed_form"]) / r["gd_closed_form"]
            for r in rows
            if r["gd"] is not None and r["gd_closed_form"]
        ]
        entry["gd_vs_closed_max_rel_error"] = max(gd_err) if gd_err else None
        out[f"{delta:g}"] = entry
    return out


# --------------------------------------------------------------------------- figure


def _mlp_panel(ax, mlp):
    step = mlp.arrays["step"]
    ax.semilogy(step, mlp.arrays["full_loss"], "C0", label="full-batch loss")
    ax.semilogy(step, mlp.arrays["full_grad_norm"], "C3", label="full-batch ‖∇L‖")
    hs = np.asarray(mlp.results["hessian_steps"])
    lmin = np.asarray(mlp.results["lambda_min"])
    ax.semilogy(hs, -np.minimum(lmin, 0), "kv", label="|λ_min| (λ_min < 0) at Hessian points")
    for s_, a, g in zip(hs, mlp.results["index"], mlp.results["hessian_grad_norm"], strict=True):
        ax.annotate(f"α={a:.3f}", (s_, g), fontsize=7, rotation=45)
    ax.set(xlabel="SGD step", title=f"digits MLP ({mlp.results['num_params']} params), SGD")
    ax.legend(fontsize=7)


def make_figure(cfg, lin, mlp, esc):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    ax = axes[0, 0]
    for i, depth in enumerate(cfg["linear_depths"]):
        step = lin.arrays[f"step_{depth}"]
        ax.semilogy(step, lin.arrays[f"loss_{depth}"], color=f"C{i}", label=f"loss, depth {depth}")
        ax.semilogy(step, lin.arrays[f"grad_norm_{depth}"], color=f"C{i}", ls="--",
                    label=f"‖∇L‖, depth {depth}")  # fmt: skip
    for level in lin.results["saddle_levels"]:
        ax.axhline(level, color="gray", lw=0.6, ls=":")
    ax.set(xlabel="GD step", title="deep linear: plateaus at saddle levels (dotted)")
    ax.legend(fontsize=7)

    ax = axes[0, 1]
    for i, depth in enumerate(cfg["linear_depths"]):
        step = lin.arrays[f"step_{depth}"]
        ax.plot(step, lin.arrays[f"index_{depth}"], color=f"C{i}", label=f"index, depth {depth}")
        lmin = lin.arrays[f"lambda_min_{depth}"]
        ax.plot(step, np.minimum(lmin, 0) / max(1e-300, -lmin.min()), color=f"C{i}", ls=":",
                label=f"λ_min / |min λ_min|, depth {depth}")  # fmt: skip
    ax.set(xlabel="GD step", title="deep linear: negative curvature along training")
    ax.legend(fontsize=7)

    ax = axes[0, 2]
    if mlp is None:
        ax.axis("off")
        ax.text(0.5, 0.5, "digits MLP not run (--quick)", ha="center")
    else:
        _mlp_panel(ax, mlp)

    ax = axes[1, 0]
    name = cfg["problems"][0]
    delta = cfg["deltas"][-1]
    curves = esc[name].arrays
    for i, n in enumerate(("gd", "perturbed_gd", "saddle_free_newton")):
        gap = curves[f"{delta:g}.{n}"] - esc[name].results["saddle_loss"]
        ax.plot(gap, color=f"C{i}", label=n)
    ax.set_yscale("symlog", linthresh=1e-8)
    ax.axhline(-cfg["drop"], color="gray", ls=":")
    ax.set(xlabel="step", ylabel="L − L(saddle)", title=f"{name}, δ = {delta:g}")
    ax.legend(fontsize=7)

    ax = axes[1, 1]
    marks = {"gd": "o", "perturbed_gd": "s", "saddle_free_newton": "^", "gd_closed_form": "x"}
    for j, name in enumerate(cfg["problems"]):
        summ = esc[name].results["summary"]
        for n, m in marks.items():
            xs, ys, lo, hi = [], [], [], []
            for delta in cfg["deltas"]:
                e = summ[f"{delta:g}"][n]
                if e["median"] is not None:
                    xs.append(delta * (1.15 ** (j - 1.5)))
                    ys.append(e["median"])
                    lo.append(e["median"] - e["min"])
                    hi.append(e["max"] - e["median"])
            stuck = [d for d in cfg["deltas"] if n == "gd" and summ[f"{d:g}"][n]["escaped"] == 0]
            if stuck:  # GD did not escape within the run: plotted at num_steps, as a bound
                steps = esc[name].results["num_steps"]
                ax.plot(stuck, [steps] * len(stuck), marker="$↑$", ls="none", color=f"C{j}", ms=9)
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], fmt=m, color=f"C{j}", ms=5, capsize=2,
                            label=f"{name}: {n}" if n == "gd" else None,
                            mfc="none" if n == "gd_closed_form" else None)  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="start distance δ",
           ylabel="escape step (median, min–max)",
           title="o GD, x closed form, s perturbed GD, ^ SFN, ↑ GD not escaped")  # fmt: skip
    ax.legend(fontsize=6)

    ax = axes[1, 2]
    ax.axis("off")
    lines = ["from the exact saddle (δ = 0): escaped / runs"]
    for name in cfg["problems"]:
        e = esc[name].results["summary"]["0"]
        lines.append(
            f"{name}: GD {e['gd']['escaped']}/{e['gd']['runs']}, "
            f"PGD {e['perturbed_gd']['escaped']}/{e['perturbed_gd']['runs']} "
            f"(median {e['perturbed_gd']['median']}), "
            f"SFN {e['saddle_free_newton']['escaped']}/{e['saddle_free_newton']['runs']}"
        )
    if mlp is not None:
        r = mlp.results
        lines += [
            "",
            f"digits MLP after {r['hessian_steps'][-1]} SGD steps:",
            f"  full-batch loss {r['final_full_loss']:.3g}, ‖∇L‖ {r['final_full_grad_norm']:.2g}"
            f" (initial {r['initial_full_grad_norm']:.2g})",
            f"  index {r['index'][-1]:.3f}, λ_min {r['lambda_min'][-1]:.2g},"
            f" λ_max {r['lambda_max'][-1]:.2g}",
        ]
    ax.text(0, 1, "\n".join(lines), va="top", fontsize=8, family="monospace")
    return fig


def main(argv=None) -> int:
    p = experiment.parser(NAME, __doc__)
    for flag, (_, text) in FLAGS.items():
        p.add_argument(
            f"--{flag.replace('_', '-')}", type=experiment.positive(int), help=f"{text} (> 0)"
        )
    p.add_argument("--mlp", action="store_true", help="run the digits MLP also with --quick")
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # exact float64 Hessians
    cfg = experiment.settings(args, QUICK, FULL, FLAGS)
    cfg["mlp"] = cfg["mlp"] or args.mlp
    exp = experiment.Experiment(NAME, args, config=cfg)
    cfg, key = exp.config, jax.random.key(args.seed)
    k_lin, k_mlp, k_esc = jax.random.split(key, 3)
    with jax.numpy_dtype_promotion("standard"):
        lin = exp.stage("linear", {}, lambda: deep_linear_plateaus(cfg, k_lin))
        mlp = exp.stage("mlp", {}, lambda: mlp_training(cfg, k_mlp)) if cfg["mlp"] else None
    esc = {}
    for i, name in enumerate(cfg["problems"]):

        def compute(name=name, i=i):
            results, curves = escape_times(cfg, jax.random.fold_in(k_esc, i), name)
            return {**results, "summary": escape_summary(cfg, results)}, curves

        esc[name] = exp.stage(f"escape_{name}", {}, compute)
    exp.figure(make_figure(cfg, lin, mlp, esc), NAME)
    exp.finish(
        {
            "linear": lin.results,
            "mlp": None if mlp is None else mlp.results,
            "escape": {n: {k: v for k, v in r.results.items()} for n, r in esc.items()},
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
