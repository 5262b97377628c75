"""Mode connectivity and permutation symmetry: two independently trained MLPs are separated by a
barrier on the straight line, joined by a low-loss Bézier curve, and much closer to linearly
connected once the hidden units of one are permuted to match the other.

Claims reproduced (issue #7, mode connectivity):

1. **Straight-line barrier** (Goodfellow et al. 2015 observed the line between *one* init and
   its solution is benign; between two *independent* solutions it is not — Garipov et al. 2018,
   Draxler et al. 2018). Measured: the loss on ``(1−t)a + tb`` (``connectivity.line_losses``)
   and its barrier ``max_t [L(t) − ((1−t)L(a) + tL(b))]`` (``connectivity.barrier``, Entezari
   et al. 2022's definition), on the training and the test split.
2. **Mode connectivity** (Garipov, Izmailov, Podoprikhin, Vetrov & Wilson 2018, "Loss Surfaces,
   Mode Connectivity, and Fast Ensembling of DNNs", NeurIPS; Draxler, Veschgini, Salmhofer &
   Hamprecht 2018, "Essentially No Barriers in Neural Network Energy Landscape", ICML). A
   quadratic Bézier curve ``φ_θ(t) = (1−t)²a + 2t(1−t)θ + t²b`` with a trained bend ``θ``
   (``fit_curve``) has almost no barrier. Measured: max loss and barrier along the curve
   (``curve_losses``) vs the line, train and test; the loss on the plane through ``a, b, θ``.
3. **Permutation symmetry and re-basin** (Entezari, Sedghi, Saukh & Neyshabur 2022, "The Role of
   Permutation Invariance in Linear Mode Connectivity of Neural Networks", ICLR; Ainsworth,
   Hayase & Srinivasa 2023, "Git Re-Basin: Merging Models modulo Permutation Symmetries",
   ICLR). Permuting the hidden units of a layer (columns of its kernel and bias, rows of the next
   kernel) leaves the function unchanged, so every minimum has ``(h!)^L`` copies (L hidden layers
   of width h, generically distinct). Measured: ``|L(π(a)) − L(a)|`` for random permutations
   of every hidden layer (exact up to float rounding), the barrier on the line ``a → π(a)`` and
   ``log10 (h!)^L``; the straight-line
   barrier between ``a`` and ``π*(b)``, ``π*`` from weight matching (``connectivity.align``),
   before vs after, for a sweep of widths (Ainsworth et al.: the barrier after matching
   shrinks as the network gets wider).

Setting: ``jaxscape.builtin_problem(key, "mlp", "digits")`` — scikit-learn's 8×8 digits (1,438
train / 359 test), a tanh MLP 64-h-h-10 with softmax cross-entropy, two inits from different
keys (same data split), full-batch Adam. float32 by default (float64 when x64 is enabled, as in
the tests). Run ``python experiments/mode_connectivity.py`` (default, a few CPU minutes) or
with ``--quick`` (seconds; what the test suite runs); ``--widths 16 64 256 1024`` and
``--steps`` scale it up. Results go to ``results.json`` in ``--out``.
"""

from __future__ import annotations

import math
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

import jaxscape
from jaxscape import experiment
from jaxscape.connectivity import (
    Curve,
    align,
    barrier,
    curve_losses,
    fit_curve,
    line_losses,
    permute,
)
from jaxscape.landscape import surface
from jaxscape.train import fit

NAME = "mode_connectivity"
QUICK = {
    "width": 16,
    "widths": [16],
    "depth": 2,
    "num_examples": 600,  # first examples of digits, before the 80/20 split
    "steps": 300,
    "lr": 1e-2,
    "curve_steps": 200,
    "curve_lr": 1e-2,
    "curve_batch": None,  # full batch
    "curve_t_samples": 4,
    "num_ts": 11,
    "num_perm_trials": 3,
    "grid": 0,  # plane through a, b, θ: grid points per axis (0: skip)
}
FULL = {
    **QUICK,
    "width": 32,
    "widths": [4, 8, 16, 32, 64, 128, 256],
    "num_examples": None,  # all 1,797
    "steps": 1000,
    "lr": 3e-3,
    "curve_steps": 1000,
    "curve_batch": 128,
    "num_ts": 21,
    "num_perm_trials": 5,
    "grid": 21,
}


# --------------------------------------------------------------------------- training


def problem(cfg, width: int, key=None):
    """The digits MLP of this width from ``builtin_problem``; the fixed default key gives every
    width and both networks the same split (another key: another init, and another split)."""
    return jaxscape.builtin_problem(
        jax.random.key(0) if key is None else key,
        "mlp",
        "digits",
        width=width,
        depth=cfg["depth"],
        num_examples=cfg["num_examples"],
    )


def train_pair(cfg, key, prob, width: int):
    """Two solutions ``a``, ``b`` from independent inits: ``a`` from ``prob``'s own init (fixed
    key), ``b`` from ``builtin_problem``'s init under ``key`` (only its params are used); same
    data, optimizer and steps."""
    k_b, k_fit = jax.random.split(key)
    inits = [prob.params, problem(cfg, width, k_b).params]
    opt = optax.adam(cfg["lr"])
    ends, hist = [], []
    for params in inits:
        run = fit(
            k_fit,
            prob.loss_fn,
            params,
            opt,
            prob.train,
            num_steps=cfg["steps"],
            record_params=False,
            progress=False,
            steps_per_chunk=cfg["steps"],
        )
        ends.append(run.params)
        hist.append(np.asarray(run.history.loss))
    return ends[0], ends[1], np.stack(hist)


@cache
def _line_fn(loss_fn):
    """``line_losses`` on several batches, compiled as one program (eager ``vmap`` would
    compile op by op)."""
    return jax.jit(lambda a, b, ds, t: [line_losses(loss_fn, a, b, d, t) for d in ds])


def _on_curve(loss_fn, curve, data, ts):
    """``curve_losses`` on the batches ``data``, compiled as one program (``kind`` static)."""

    def f(a, m, b, ds, t):
        c = Curve(curve.kind, a, m, b, curve.losses)
        return [curve_losses(loss_fn, c, d, t) for d in ds]

    return jax.jit(f)(curve.params_a, curve.bend, curve.params_b, data, ts)


def _path_summary(losses) -> dict:
    losses = np.asarray(losses)
    return {
        "barrier": float(barrier(jnp.asarray(losses))),
        "max": float(losses.max()),
        "endpoints": [float(losses[0]), float(losses[-1])],
        "max_over_endpoints": float(losses.max() - max(losses[0], losses[-1])),
    }


def width_stage(cfg, key, prob, width: int):
    """Train a pair, then the line before and after weight matching (train and test)."""
    a, b, hist = train_pair(cfg, key, prob, width)
    b_aligned, perms = align(a, b)
    ts, on_line = jnp.linspace(0, 1, cfg["num_ts"]), _line_fn(prob.loss_fn)
    results = {"width": width, "final_train_loss": [float(h[-1]) for h in hist]}
    arrays = {"ts": np.asarray(ts), "history": hist}
    splits = [prob.train, prob.test]
    lines, matches = on_line(a, b, splits, ts), on_line(a, b_aligned, splits, ts)
    for split, line, matched in zip(("train", "test"), lines, matches, strict=True):
        line, matched = np.asarray(line), np.asarray(matched)
        results[split] = {"line": _path_summary(line), "matched": _path_summary(matched)}
        arrays[f"line_{split}"], arrays[f"matched_{split}"] = line, matched
    results["matched_perm_fixed_points"] = [int(np.sum(p == np.arange(p.size))) for p in perms]
    flat = lambda p: np.asarray(ravel_pytree(p)[0])  # noqa: E731
    arrays.update(a=flat(a), b=flat(b), b_aligned=flat(b_aligned))
    results["distance"] = {
        "a_b": float(np.linalg.norm(arrays["a"] - arrays["b"])),
        "a_b_aligned": float(np.linalg.norm(arrays["a"] - arrays["b_aligned"])),
    }
    return results, arrays


# --------------------------------------------------------------------------- symmetry


def permutation_check(cfg, key, prob, rec):
    """Random permutations ``π`` of every hidden layer of ``a``: ``L(π(a)) = L(a)`` up to
    rounding, yet ``π(a)`` is another point, and the line ``a → π(a)`` crosses a barrier. The
    losses come from the width stage's compiled ``line_losses`` program (no new compilation)."""
    width, depth = cfg["width"], cfg["depth"]
    unravel = ravel_pytree(prob.params)[1]
    a = unravel(jnp.asarray(rec.arrays["a"]))
    dtype = jnp.result_type(rec.arrays["a"])
    eps = float(jnp.finfo(dtype).eps)
    on_line, ts = _line_fn(prob.loss_fn), jnp.linspace(0, 1, cfg["num_ts"])
    trials = []
    for i in range(cfg["num_perm_trials"]):
        keys = jax.random.split(jax.random.fold_in(key, i), depth)
        perms = [np.asarray(jax.random.permutation(k, width)) for k in keys]
        pa = permute(a, perms)
        train, test = (np.asarray(x) for x in on_line(a, pa, [prob.train, prob.test], ts))
        # t = 0 is evaluated at exactly the first point (a + 0·(b − a)): L(π(a)) from the
        # reversed line, so no interpolation rounding enters |ΔL|
        back = [np.asarray(x) for x in on_line(pa, a, [prob.train, prob.test], ts)]
        trials.append(
            {
                "train_abs_diff": float(abs(back[0][0] - train[0])),
                "test_abs_diff": float(abs(back[1][0] - test[0])),
                "line_barrier_train": float(barrier(jnp.asarray(train))),
                "param_distance": float(np.linalg.norm(ravel_pytree(pa)[0] - rec.arrays["a"])),
                "fixed_points": [int(np.sum(q == np.arange(width))) for q in perms],
            }
        )
    base = {"train": float(train[0]), "test": float(test[0])}
    log10_count = depth * math.lgamma(width + 1) / math.log(10)
    results = {
        "width": width,
        "depth": depth,
        "dtype": str(np.dtype(dtype)),
        "eps": eps,
        "loss": base,
        "trials": trials,
        "max_abs_loss_diff": max(max(t["train_abs_diff"], t["test_abs_diff"]) for t in trials),
        "min_line_barrier_train": min(t["line_barrier_train"] for t in trials),
        "min_param_distance": min(t["param_distance"] for t in trials),
        "log10_num_equivalent_minima": log10_count,
        "formula": f"(h!)^L = ({width}!)^{depth}",
    }
    return results, {}


# --------------------------------------------------------------------------- curve


def curve_stage(cfg, key, prob, rec):
    """Fit the Bézier bend between the pair of the main width; losses along it and the plane."""
    unravel = ravel_pytree(prob.params)[1]
    a, b = (unravel(jnp.asarray(rec.arrays[n])) for n in ("a", "b"))
    curve = fit_curve(
        key,
        prob.loss_fn,
        a,
        b,
        prob.train,
        optax.adam(cfg["curve_lr"]),
        num_steps=cfg["curve_steps"],
        batch_size=cfg["curve_batch"],
        num_t_samples=cfg["curve_t_samples"],
    )
    ts = jnp.linspace(0, 1, cfg["num_ts"])
    results, arrays = {}, {"ts": np.asarray(ts), "fit_losses": np.asarray(curve.losses)}
    both = _on_curve(prob.loss_fn, curve, [prob.train, prob.test], ts)
    for split, on_curve in zip(("train", "test"), both, strict=True):
        on_curve = np.asarray(on_curve)
        arrays[f"curve_{split}"] = on_curve
        results[split] = {"curve": _path_summary(on_curve)}
    theta = np.asarray(ravel_pytree(curve.bend)[0])
    mid = (rec.arrays["a"] + rec.arrays["b"]) / 2
    results["bend_distance_from_midpoint"] = float(np.linalg.norm(theta - mid))
    results["a_b_distance"] = float(np.linalg.norm(rec.arrays["a"] - rec.arrays["b"]))
    arrays["theta"] = theta
    if cfg["grid"]:
        arrays.update(plane(cfg, prob, rec.arrays["a"], rec.arrays["b"], theta, unravel))
    return results, arrays


def plane(cfg, prob, a, b, theta, unravel):
    """Train loss on the plane through ``a, b, θ`` (orthonormal coordinates, as Garipov et al.'s
    Fig. 1)."""
    u = b - a
    scale = np.linalg.norm(u)
    u = u / scale
    v = theta - a - ((theta - a) @ u) * u
    v = v / np.linalg.norm(v)
    coords = lambda p: ((p - a) @ u / scale, (p - a) @ v / scale)  # noqa: E731
    pts = np.array([coords(a), coords(b), coords(theta)])
    lo, hi = pts.min(0), pts.max(0)
    pad = 0.25 * (hi - lo).max()
    xs = np.linspace(lo[0] - pad, hi[0] + pad, cfg["grid"])
    ys = np.linspace(lo[1] - pad, hi[1] + pad, cfg["grid"])
    to = lambda w: unravel(jnp.asarray(w * scale, a.dtype))  # noqa: E731
    grid = surface(prob.loss_fn, unravel(jnp.asarray(a)), to(u), to(v), prob.train, xs, ys)
    return {
        "plane_xs": xs,
        "plane_ys": ys,
        "plane_loss": np.asarray(grid.loss),
        "plane_points": pts,
    }


# --------------------------------------------------------------------------- figure


def make_figure(cfg, widths, main, curve, perm):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    ts = main.arrays["ts"]
    for ax, split in zip(axes[:2], ("train", "test"), strict=True):
        ax.plot(ts, main.arrays[f"line_{split}"], "o-", ms=3, label="straight line a → b")
        ax.plot(ts, main.arrays[f"matched_{split}"], "s-", ms=3, label="line a → π*(b) (matched)")
        ax.plot(ts, curve.arrays[f"curve_{split}"], "^-", ms=3, label="Bézier curve (fitted)")
        ax.set(
            xlabel="t",
            ylabel=f"{split} loss",
            title=f"{split} loss along paths, width {cfg['width']}",
            yscale="log" if split == "train" else "linear",
        )
        ax.legend(fontsize=8)
    ax = axes[2]
    if "plane_loss" in curve.arrays:
        xs, ys, z = (curve.arrays[k] for k in ("plane_xs", "plane_ys", "plane_loss"))
        levels = np.quantile(np.log10(z), np.linspace(0, 1, 20))
        cs = ax.contourf(xs, ys, np.log10(z), levels=np.unique(levels), cmap="viridis")
        fig.colorbar(cs, ax=ax, label="log10 train loss")
        t = np.linspace(0, 1, 50)[:, None]
        p = curve.arrays["plane_points"]
        path = (1 - t) ** 2 * p[0] + 2 * t * (1 - t) * p[2] + t**2 * p[1]
        ax.plot(*path.T, "w-", lw=2, label="Bézier curve")
        ax.plot(*p[:2].T, "w--", lw=1, label="line")
        ax.plot(*p[:2].T, "r*", ms=12)
        ax.plot(*p[2], "wo", ms=5)
        ax.set(xlabel="along b − a (units of ‖b − a‖)", ylabel="towards θ", title="plane a, b, θ")
        ax.legend(fontsize=8, loc="upper left")
    else:
        ax.set_axis_off()
    ax = axes[3]
    ws = [r.results["width"] for r in widths]
    for split, mk in (("train", "o"), ("test", "s")):
        ax.plot(
            ws,
            [r.results[split]["line"]["barrier"] for r in widths],
            mk + "-",
            color="C0",
            label=f"line, {split}",
        )
        ax.plot(
            ws,
            [r.results[split]["matched"]["barrier"] for r in widths],
            mk + "--",
            color="C1",
            label=f"matched, {split}",
        )
    ax.set(
        xscale="log",
        xlabel="hidden width h",
        ylabel="straight-line barrier",
        title="straight-line barrier vs width",
    )
    ax.set_xticks(ws, [str(w) for w in ws])
    ax.legend(fontsize=8)
    res = perm.results
    ax.text(
        0.98,
        0.55,
        f"random π of all hidden units (h = {res['width']}):\n"
        f"max |ΔL| = {res['max_abs_loss_diff']:.1e}, {res['formula']} ≈ "
        f"10^{res['log10_num_equivalent_minima']:.1f}",
        transform=ax.transAxes,
        fontsize=7,
        ha="right",
        va="bottom",
    )
    return fig


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    p = experiment.parser(NAME, __doc__)
    p.add_argument("--width", type=experiment.positive(), help="hidden width of the main pair")
    p.add_argument("--widths", type=experiment.positive(), nargs="+", help="width sweep")
    p.add_argument("--depth", type=experiment.positive(), help="number of hidden layers")
    p.add_argument("--steps", type=experiment.positive(), help="Adam steps per network")
    p.add_argument("--curve-steps", type=experiment.positive(), help="steps of fit_curve")
    p.add_argument("--grid", type=experiment.positive(), help="plane grid points per axis")
    args = p.parse_args(argv)
    cfg = experiment.settings(
        args, QUICK, FULL, ("width", "widths", "depth", "steps", "curve_steps", "grid")
    )
    cfg["widths"] = sorted(set(cfg["widths"]) | {cfg["width"]})
    exp = experiment.Experiment(NAME, args, config=cfg)
    cfg, key = exp.config, jax.random.key(args.seed)
    k_pair, k_perm, k_curve = jax.random.split(key, 3)
    get = cache(lambda width: problem(cfg, width))  # built only for stages that run
    with jax.numpy_dtype_promotion("standard"):
        widths = [
            exp.stage(f"width_{w}", {"width": w}, lambda w=w: width_stage(cfg, k_pair, get(w), w))
            for w in cfg["widths"]
        ]
        main_rec = widths[cfg["widths"].index(cfg["width"])]
        perm = exp.stage(
            "permutation",
            {},
            lambda: permutation_check(cfg, k_perm, get(cfg["width"]), main_rec),
            [main_rec],
        )
        curve = exp.stage(
            "curve", {}, lambda: curve_stage(cfg, k_curve, get(cfg["width"]), main_rec), [main_rec]
        )
    exp.figure(make_figure(cfg, widths, main_rec, curve, perm), NAME)
    main_res = main_rec.results
    summary = {
        split: {
            "line_barrier": main_res[split]["line"]["barrier"],
            "matched_barrier": main_res[split]["matched"]["barrier"],
            "curve_barrier": curve.results[split]["curve"]["barrier"],
            "line_max": main_res[split]["line"]["max"],
            "curve_max": curve.results[split]["curve"]["max"],
            "endpoints": main_res[split]["line"]["endpoints"],
        }
        for split in ("train", "test")
    }
    exp.finish(
        {
            "summary": summary,
            "widths": {str(r.results["width"]): r.results for r in widths},
            "curve": curve.results,
            "permutation": perm.results,
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
