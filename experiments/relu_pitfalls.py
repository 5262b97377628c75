"""Small ReLU nets on tiny 1-D data: a provably bad local minimum, the fraction of random
initializations that gradient descent brings to bad minima, and dead units ("blind spots")
whose parameters sit in exactly flat regions that gradient descent never leaves.

Claims reproduced (issue #7, ReLU-pitfalls item; Swirszcz, Czarnecki & Pascanu 2016, "Local
minima in training of neural networks", arXiv:1611.06310):

1. **Bad local minima exist and are reached.** On ``toys.relu_bad_minimum`` (``y = |x|`` at
   ``x ∈ {-2, -1, 1, 2}``, a one-hidden-layer ReLU net ``f(x) = Σ_j v_j relu(w_j x + b_j) + c``
   with 2 units, loss ``relu_regression_loss`` = ½ mean squared error) the point with one unit
   dead on every example and the other active on every example is a local minimum with loss
   1/8 while the global minimum has loss 0. Measured: the loss and gradient norm at both
   points, the Hessian eigenvalues and ``classify``'s verdict (with and without its
   higher-order probe), the fitted functions, and, for nets of m = 2 … 16 units, the fraction
   of random initializations (``vmap`` over seeds) whose full-batch gradient descent ends at
   a bad critical point (final loss above ``bad_loss``, gradient converged) — the paper's
   point that on small data sets a sizable fraction of inits ends in bad minima.
2. **Blind spots / dead units.** A unit with ``w_j x_n + b_j ≤ 0`` on every example is dead:
   the gradients of its ``w_j, b_j, v_j`` are exactly 0 (its output and ReLU derivative are 0
   on all data), the loss is exactly constant when those parameters move (as long as the unit
   stays dead), so gradient descent never revives it. Initializing the biases shifted by
   ``-shift`` kills units; measured per shift: the fraction of dead units at init, the max
   |gradient| over dead units' parameters (0.0 exactly), the fraction still dead after
   training (the same units), the largest loss change along random moves of the dead units'
   parameters (``interpolate``; 0.0 exactly), the dead block of the Hessian
   (``hessian_matrix``; 0.0 exactly), and the final loss (which rises to the constant fit,
   ½ Var y, when every unit is dead).

Float64 throughout (``jax_enable_x64`` at ``main()`` start): the nets are tiny, and "exactly
zero" is checked bit for bit. Random keys are JAX's ``"rbg"`` keys (threefry's programs take
about a second each to compile on a CPU).

Run ``python experiments/relu_pitfalls.py`` (default, about a CPU minute) or with ``--quick``
(seconds; what the test suite runs); ``--seeds 10000 --steps 50000`` scales it up. Results go
to ``results.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import math
from functools import partial

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from jaxscape import classify, experiment, hessian_matrix, interpolate
from jaxscape.toys import relu

NAME = "relu_pitfalls"
QUICK = {
    "widths": [2, 8],
    "seeds": 64,
    "steps": 3000,
    "lr": 0.05,
    "bad_loss": 1e-3,
    "converged_grad": 1e-3,
    "blind_width": 8,  # = widths[-1], seeds: shares the compiled training program
    "blind_seeds": 64,
    "shifts": [0.0, 2.0, 5.0],
    "probe": True,
}
FULL = {
    **QUICK,
    "widths": [2, 3, 4, 8, 16],
    "seeds": 1000,
    "steps": 20000,
    "blind_width": 16,
    "blind_seeds": 200,
    "shifts": [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0],
}


# --------------------------------------------------------------------------- helpers


def init_params(key, width, shift=0.0):
    """``w ~ N(0, 1)``, ``b ~ N(-shift, 1)``, ``v ~ N(0, 1/m)``, ``c = 0`` (float64)."""
    kw, kb, kv = jax.random.split(key, 3)
    f64 = jnp.float64
    return {
        "w": jax.random.normal(kw, (width,), f64),
        "b": jax.random.normal(kb, (width,), f64) - shift,
        "v": jax.random.normal(kv, (width,), f64) / math.sqrt(width),
        "c": jnp.zeros((), f64),
    }


def dead_units(params, x):
    """Units with ``w x_n + b ≤ 0`` on every example (ReLU output and derivative 0 on all)."""
    return jnp.all(x[:, None] * params["w"] + params["b"] <= 0, axis=0)


def _grad_norm(params, batch):
    return optax.tree_utils.tree_norm(jax.grad(relu.relu_regression_loss)(params, batch))


@partial(jax.jit, static_argnames=("width", "num_seeds", "num_steps"))
def train_many(key, batch, shift, lr, *, width, num_seeds, num_steps):
    """Full-batch GD from ``num_seeds`` random inits (``vmap``): init and final params."""
    inits = jax.vmap(lambda k: init_params(k, width, shift))(jax.random.split(key, num_seeds))
    opt = optax.sgd(lr)

    def one(p0):
        def step(carry, _):
            p, s = carry
            g = jax.grad(relu.relu_regression_loss)(p, batch)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(step, (p0, opt.init(p0)), None, length=num_steps)
        return p

    return inits, jax.vmap(one)(inits)


def _summary(params, batch):
    """Per seed: loss, gradient norm, dead-unit mask, and max |grad| over dead units."""

    def one(p):
        g = jax.grad(relu.relu_regression_loss)(p, batch)
        dead = dead_units(p, batch[0])
        dead_grad = jnp.max(jnp.where(dead, jnp.abs(g["w"]) + jnp.abs(g["b"]) + jnp.abs(g["v"]), 0))
        return relu.relu_regression_loss(p, batch), _grad_norm(p, batch), dead, dead_grad

    return jax.vmap(one)(params)


summarize = jax.jit(_summary)


# --------------------------------------------------------------------------- 1. bad minimum


def bad_minimum(cfg, key):
    bm = relu.relu_bad_minimum(dtype=jnp.float64)
    results = {}
    for name, p in (("local", bm.local_minimum), ("global", bm.global_minimum)):
        probe = cfg["probe"] and name == "local"  # the global one is a minimum (loss 0)
        point = classify(relu.relu_regression_loss, p, bm.batch, key=key, probe=probe)
        results[name] = {
            "loss": point.loss,
            "grad_norm": point.grad_norm,
            "hessian_eigenvalues": point.eigenvalues,
            "num_zero_eigenvalues": point.num_zero,
            "hessian_kind": point.hessian_kind,  # the second-order test alone
            "kind_with_probe": point.kind if probe else None,
            "dead_units": np.asarray(dead_units(p, bm.batch[0])),
            "params": {k: np.asarray(v) for k, v in p.items()},
        }
    # sampled certificate: the loss stays >= 1/8 on a sphere of radius 0.3 < 1/3 around it
    results["local"]["min_loss_on_sphere_radius_0.3"] = float(
        _min_on_sphere(key, bm.local_minimum, bm.batch, 0.3)
    )
    # fitted functions on a grid (data: x = -2, -1, 1, 2)
    grid = jnp.linspace(-2.5, 2.5, 201)
    arrays = {
        "grid": np.asarray(grid),
        "fit_local": np.asarray(_net(bm.local_minimum, grid)),
        "fit_global": np.asarray(_net(bm.global_minimum, grid)),
        "x": np.asarray(bm.batch[0]),
        "y": np.asarray(bm.batch[1]),
    }
    return results, arrays


@partial(jax.jit, static_argnames="num")
def _min_on_sphere(key, params, batch, radius, num=256):
    """Smallest loss over ``num`` random points at distance ``radius`` from ``params``."""
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    d = jax.random.normal(key, (num, flat.size), flat.dtype)
    d = radius * d / jnp.linalg.norm(d, axis=1, keepdims=True)
    return jnp.min(jax.vmap(lambda u: relu.relu_regression_loss(unravel(flat + u), batch))(d))


def _net(params, x):
    return jax.nn.relu(x[:, None] * params["w"] + params["b"]) @ params["v"] + params["c"]


def random_inits(cfg, key):
    bm = relu.relu_bad_minimum(dtype=jnp.float64)
    results, arrays = {"widths": cfg["widths"], "per_width": {}}, {}
    for m in cfg["widths"]:
        _, final = train_many(
            jax.random.fold_in(key, m), bm.batch, 0.0, cfg["lr"],
            width=m, num_seeds=cfg["seeds"], num_steps=cfg["steps"],
        )  # fmt: skip
        loss, gnorm, dead, _ = (np.asarray(a) for a in summarize(final, bm.batch))
        finite = np.isfinite(loss)
        bad = finite & (loss > cfg["bad_loss"])
        converged = finite & (gnorm < cfg["converged_grad"])
        arrays[f"final_loss_{m}"] = loss
        results["per_width"][str(m)] = {
            "fraction_bad": float(bad.mean()),
            "fraction_bad_converged": float((bad & converged).mean()),
            "fraction_global": float((finite & ~bad).mean()),
            "fraction_diverged": float((~finite).mean()),
            "fraction_converged": float(converged.mean()),
            "bad_loss_values": np.unique(np.round(loss[bad & converged], 4))[:10],
            "fraction_bad_with_dead_unit": float(
                np.mean(dead[bad].any(axis=1)) if bad.any() else 0.0
            ),
            "fraction_bad_at_one_eighth": float(np.mean(np.abs(loss - 0.125) < 1e-4)),
        }
    return results, arrays


# --------------------------------------------------------------------------- 2. blind spots


def blind_spots(cfg, key):
    bm = relu.relu_bad_minimum(dtype=jnp.float64)
    y = bm.batch[1]
    m = cfg["blind_width"]
    constant_fit = float(0.5 * jnp.var(y))
    results = {
        "width": m,
        "shifts": cfg["shifts"],
        "constant_fit_loss": constant_fit,
        "per_shift": {},
    }
    arrays = {}
    for i, shift in enumerate(cfg["shifts"]):
        inits, final = train_many(
            jax.random.fold_in(key, i), bm.batch, shift, cfg["lr"],
            width=m, num_seeds=cfg["blind_seeds"], num_steps=cfg["steps"],
        )  # fmt: skip
        loss0, _, dead0, dead_grad0 = (np.asarray(a) for a in summarize(inits, bm.batch))
        loss, _, dead1, dead_grad1 = (np.asarray(a) for a in summarize(final, bm.batch))
        moved = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)), inits, final)
        frozen = float(max(np.max(np.where(dead0, moved[k], 0)) for k in ("w", "b", "v")))
        flat, hess_dead = _flatness(jax.random.fold_in(key, 100 + i), inits, dead0, bm.batch)
        arrays[f"final_loss_{i}"] = loss
        results["per_shift"][str(shift)] = {
            "fraction_dead_init": float(dead0.mean()),
            "fraction_dead_final": float(dead1.mean()),
            "dead_init_still_dead": bool(np.all(dead1[dead0])),
            "revived_units": int(np.sum(dead0 & ~dead1)),
            "max_abs_grad_dead_init": float(np.max(dead_grad0)),
            "max_abs_grad_dead_final": float(np.max(dead_grad1)),
            "max_param_change_dead": frozen,
            "max_loss_change_dead_moves": flat,
            "max_abs_hessian_dead_block": hess_dead,
            "fraction_all_dead_init": float(np.mean(dead0.all(axis=1))),
            "final_loss_mean": float(np.nanmean(loss)),
            "final_loss_median": float(np.nanmedian(loss)),
            "init_loss_mean": float(np.mean(loss0)),
        }
    return results, arrays


def _flatness(key, inits, dead, batch):
    """Largest |ΔL| when moving only the dead units' params (along 8 random directions, steps
    up to 0.1, shrinking w and pushing b down so they stay dead), and the largest |entry| of
    the Hessian rows of dead-unit parameters, over the seeds that have a dead unit."""
    rows = np.flatnonzero(dead.any(axis=1))[:8]
    if rows.size == 0:
        return None, None
    worst_loss, worst_h = 0.0, 0.0
    alphas = jnp.linspace(0.0, 1.0, 11)
    for r in rows:
        p = jax.tree.map(lambda a, r=r: a[r], inits)
        mask = jnp.asarray(dead[r], jnp.float64)
        k1, k2 = jax.random.split(jax.random.fold_in(key, int(r)))
        d = {
            "w": -0.1 * mask * p["w"],  # shrink |w| …
            "b": -0.1 * mask * jnp.abs(jax.random.normal(k1, mask.shape, jnp.float64)),  # … b ↓
            "v": 0.1 * mask * jax.random.normal(k2, mask.shape, jnp.float64),
            "c": jnp.zeros((), jnp.float64),
        }
        end = jax.tree.map(jnp.add, p, d)
        losses = np.asarray(interpolate(relu.relu_regression_loss, p, end, batch, alphas).loss)
        worst_loss = max(worst_loss, float(np.max(np.abs(losses - losses[0]))))
        H = np.asarray(hessian_matrix(relu.relu_regression_loss, p, batch))
        flat_dead = np.concatenate(  # ravel_pytree order: b, c, v, w (sorted keys)
            [np.asarray(dead[r]), [False], np.asarray(dead[r]), np.asarray(dead[r])]
        )
        worst_h = max(worst_h, float(np.max(np.abs(H[flat_dead]))))
    return worst_loss, worst_h


# --------------------------------------------------------------------------- figure


def make_figure(cfg, bad, inits, blind):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    ax = axes[0]
    a = bad.arrays
    ax.plot(a["x"], a["y"], "ko", label="data (y = |x|)")
    ax.plot(a["grid"], a["fit_global"], "C0-", label="global min (loss 0)")
    ax.plot(a["grid"], a["fit_local"], "C3--", label="bad local min (loss 1/8)")
    ax.set(xlabel="x", ylabel="f(x)", title="2-unit ReLU net: global vs bad minimum")
    ax.legend(fontsize=7)

    ax = axes[1]
    pw = inits.results["per_width"]
    widths = cfg["widths"]
    ax.bar(range(len(widths)), [pw[str(m)]["fraction_bad"] for m in widths], color="C3")
    ax.set_xticks(range(len(widths)), [str(m) for m in widths])
    ax.set(xlabel="hidden units m", ylabel="fraction of inits ending in a bad minimum",
           title=f"GD from {cfg['seeds']} random inits, |x| data")  # fmt: skip

    ax = axes[2]
    losses = {m: inits.arrays[f"final_loss_{m}"] for m in widths}
    bad_levels = np.concatenate([np.round(v[v > cfg["bad_loss"]], 4) for v in losses.values()])
    levels = [lv for lv in np.unique(bad_levels) if np.sum(bad_levels == lv) >= 3]
    step = 0.8 / len(widths)
    for i, m in enumerate(widths):
        frac = [np.mean(np.abs(losses[m] - lv) < 1e-4) for lv in levels]
        ax.bar(np.arange(len(levels)) + i * step, frac, step, label=f"m = {m}", color=f"C{i}")
    ax.set_xticks(np.arange(len(levels)) + 0.4 - step / 2, [f"{lv:.4g}" for lv in levels])
    ax.set(xlabel="final loss of the bad minimum", ylabel="fraction of inits",
           title="which bad minima (global: loss 0)")  # fmt: skip
    ax.legend(fontsize=7)

    ax = axes[3]
    shifts = cfg["shifts"]
    ps = blind.results["per_shift"]
    ax.plot(shifts, [ps[str(s)]["fraction_dead_init"] for s in shifts], "o-", label="dead at init")
    ax.plot(shifts, [ps[str(s)]["fraction_dead_final"] for s in shifts], "x--",
            label="dead after GD")  # fmt: skip
    ax.set(xlabel="initial bias shift", ylabel="fraction of dead units",
           title=f"blind spots, m = {blind.results['width']}")  # fmt: skip
    ax2 = ax.twinx()
    ax2.plot(shifts, [ps[str(s)]["final_loss_mean"] for s in shifts], "s-", color="C3",
             label="final loss (mean)")  # fmt: skip
    ax2.axhline(blind.results["constant_fit_loss"], color="C3", ls=":", lw=1)
    ax2.set_ylabel("final loss", color="C3")
    ax.legend(fontsize=7, loc="center right")
    return fig


# --------------------------------------------------------------------------- main


def _shift(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {value}")
    return value


FLAGS = {  # flag -> (config key, type, nargs)
    "--widths": ("widths", experiment.positive(int), "+"),
    "--seeds": ("seeds", experiment.positive(int), None),
    "--steps": ("steps", experiment.positive(int), None),
    "--lr": ("lr", experiment.positive(float), None),
    "--blind-width": ("blind_width", experiment.positive(int), None),
    "--blind-seeds": ("blind_seeds", experiment.positive(int), None),
    "--shifts": ("shifts", _shift, "+"),
}


def main(argv=None) -> int:
    p = experiment.parser(NAME, __doc__)
    for flag, (dest, kind, nargs) in FLAGS.items():
        p.add_argument(flag, dest=dest, type=kind, nargs=nargs, help=f"override config {dest}")
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # exact zeros, exact Hessians
    cfg = experiment.settings(args, QUICK, FULL, [d for d, *_ in FLAGS.values()])
    exp = experiment.Experiment(NAME, args, config=cfg)
    # "rbg" keys: the threefry random-number programs take ~1 s each to compile on a CPU
    cfg, key = exp.config, jax.random.key(args.seed, impl="rbg")
    keys = jax.random.split(key, 3)
    with jax.numpy_dtype_promotion("standard"):
        bad = exp.stage("bad_minimum", {}, lambda: bad_minimum(cfg, keys[0]))
        inits = exp.stage("random_inits", {}, lambda: random_inits(cfg, keys[1]))
        blind = exp.stage("blind_spots", {}, lambda: blind_spots(cfg, keys[2]))
    exp.figure(make_figure(cfg, bad, inits, blind), NAME)
    exp.finish(
        {"bad_minimum": bad.results, "random_inits": inits.results, "blind_spots": blind.results}
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
