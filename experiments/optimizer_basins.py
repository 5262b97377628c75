"""Different optimizers, different minima: SGD, SGD + momentum and Adam from one initialization
(Im, Tao & Branson 2016).

Claim reproduced (issue #7): Daniel Jiwoong Im, Michael Tao & Kristin Branson (2016), "An
empirical analysis of the optimization of deep network loss surfaces" (arXiv:1612.04010).
Trained from the *same* initialization on the same data, different optimizers end in
*different* minima: the loss rises (a barrier) on the straight line between two solutions and
the solutions disagree on some predictions; and the minima of adaptive methods differ in
basin size from SGD's (the paper reports larger basins for Adam).

Setting: ``jaxscape.builtin_problem(key, "mlp", "digits")`` (a tanh MLP 64-W-…-W-10 on
scikit-learn's digits, 80/20 stratified split); for every seed ``s`` a new initialization and
split (key ``fold_in(seed, s)``), trained by ``compare_optimizers`` with SGD, SGD + momentum
(β = 0.9) and Adam on the same minibatch sequence (batch size ``batch_size``). Measured, per
seed and summarized as mean ± std over seeds:

- per solution: train and test loss, test accuracy, distance from θ₀; **basin width**
  (``basin_width``: distance along random directions until the train loss rises by
  ``basin_threshold``), with unit-norm Gaussian directions (parameter units) and with
  filter-normalized directions (Li et al. 2018; invariant to the per-neuron weight scale);
  **ε-sharpness** (``sharpness``, Keskar et al. 2017, ε = 1e-3 and 5e-4) on the train set.
- per pair of solutions: the train/test loss and test accuracy along the line
  ``(1 - α) a + α b`` (``interpolate``), the **barrier** (``barrier``: the largest rise above
  the chord between the end losses) and the **disagreement** (``disagreement``: share of test
  digits classified differently), and the distance ``‖a - b‖``.
- for the first seed: the train loss on the plane through the three solutions
  (``plane_through`` + ``surface``), the three solutions marked.

Float32 by default (the script does not enable float64; the tests run it in float64).
Run ``python experiments/optimizer_basins.py`` (a few CPU minutes) or with ``--quick``
(seconds; what the test suite runs); ``--seeds``, ``--epochs``, ``--width`` and ``--depth``
scale it up. Results go to ``results.json`` in ``--out``.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxscape import (
    barrier,
    basin_width,
    builtin_problem,
    disagreement,
    experiment,
    fit,
    interpolate,
    plane_through,
    surface,
)

NAME = "optimizer_basins"
OPTIMIZERS = ("sgd", "momentum", "adam")
LABELS = {"sgd": "SGD", "momentum": "SGD+momentum", "adam": "Adam"}
QUICK = {
    "seeds": 2,
    "width": 16,
    "depth": 1,
    "batch_size": 32,
    "epochs": 8,
    "lr_sgd": 0.5,  # = SGD+momentum's effective step lr / (1 - β)
    "lr_momentum": 0.05,
    "lr_adam": 3e-3,
    "basin_threshold": 0.1,
    "basin_directions": 4,
    "basin_max_distance": 40.0,
    "basin_max_filter": 4.0,
    "sharpness_epsilons": [1e-3, 5e-4],
    "sharpness_steps": 10,
    "alphas": 25,  # 6m + 1 points on [-0.25, 1.25]: α = 0 and 1 on the grid
    "grid": 15,
    "fast_compile": True,
}
FULL = {
    **QUICK,
    "seeds": 3,
    "width": 32,
    "depth": 2,
    "epochs": 60,
    "basin_directions": 16,
    "sharpness_steps": 20,
    "alphas": 49,
    "grid": 41,
    "fast_compile": False,
}


def _optimizers(cfg):
    return {
        "sgd": optax.sgd(cfg["lr_sgd"]),
        "momentum": optax.sgd(cfg["lr_momentum"], momentum=0.9),
        "adam": optax.adam(cfg["lr_adam"]),
    }


def _norm(tree):
    return optax.tree.norm(tree)


def make_analysis(cfg, loss_fn, apply_fn):
    """Jitted measurements, compiled once and reused for every seed and solution."""
    acc = experiment.accuracy(apply_fn)
    alphas = np.linspace(-0.25, 1.25, cfg["alphas"])
    inside = np.flatnonzero(np.abs(alphas - 0.5) <= 0.5 + 1e-9)
    if not (np.isclose(alphas[inside[0]], 0) and np.isclose(alphas[inside[-1]], 1)):
        raise ValueError(f"alphas = {cfg['alphas']} must be 6m + 1 (α = 0 and 1 on the grid)")

    def widths(key, params, train, normalization, max_distance):
        bw = basin_width(
            key,
            loss_fn,
            params,
            train,
            threshold=cfg["basin_threshold"],
            num_directions=cfg["basin_directions"],
            max_distance=max_distance,
            normalization=normalization,
        )
        return bw.mean, jnp.mean(bw.reached.astype(bw.mean.dtype))

    jit = experiment.jit(cfg["fast_compile"])

    @jit
    def point(key, params, params0, train, test):
        k_unit, k_filter, k_sharp = jax.random.split(key, 3)
        unit, unit_hit = widths(k_unit, params, train, None, cfg["basin_max_distance"])
        filt, filt_hit = widths(k_filter, params, train, "filter", cfg["basin_max_filter"])
        sharp = experiment.sharpness_curve(
            k_sharp, loss_fn, params, train, cfg["sharpness_epsilons"], cfg["sharpness_steps"]
        )
        return {
            "train_loss": loss_fn(params, train),
            "test_loss": loss_fn(params, test),
            "train_accuracy": acc(params, train),
            "test_accuracy": acc(params, test),
            "distance_from_init": _norm(jax.tree.map(jnp.subtract, params, params0)),
            "weight_norm": _norm(params),
            "basin_width_unit": unit,
            "basin_reached_unit": unit_hit,
            "basin_width_filter": filt,
            "basin_reached_filter": filt_hit,
            "sharpness": sharp,
        }

    @jit
    def pair(params_a, params_b, train, test):
        tr = interpolate(loss_fn, params_a, params_b, train, alphas)
        te = interpolate(loss_fn, params_a, params_b, test, alphas, metrics={"accuracy": acc})
        seg = tr.loss[inside[0] : inside[-1] + 1]  # α ∈ [0, 1]; both ends on the grid
        ends = jnp.stack([seg[0], seg[-1]])
        return {
            "train_loss": tr.loss,
            "test_loss": te.loss,
            "loss_at_ends": ends,
            "barrier_relative": barrier(seg) / jnp.mean(ends),
            "test_accuracy": te.metrics["accuracy"],
            "barrier": barrier(seg),
            "disagreement": disagreement(apply_fn, params_a, params_b, test.x),
            "distance": _norm(jax.tree.map(jnp.subtract, params_a, params_b)),
        }

    return alphas, point, pair


# --------------------------------------------------------------------------- stages


def joint_training(cfg, loss_fn):
    """``(loss, optimizer)`` that train the three optimizers' copies ``{name: θ}`` in one ``fit``.

    The joint loss is the sum of the copies' losses on the same minibatch, so each copy's
    gradient is exactly its own minibatch gradient, and ``optax.multi_transform`` gives each
    copy its own optimizer: the same runs as ``compare_optimizers`` (one θ₀, one minibatch
    sequence), compiled once instead of three times.
    """
    opts = _optimizers(cfg)

    def loss(copies, batch):
        return sum(loss_fn(copies[n], batch) for n in OPTIMIZERS)

    return loss, optax.multi_transform(opts, {n: n for n in OPTIMIZERS})


def train_and_measure(cfg, key):
    """Per seed: train the three optimizers from one θ₀, measure points and pairs."""
    base = builtin_problem(key, "mlp", "digits", width=cfg["width"], depth=cfg["depth"])
    loss_fn, apply_fn = base.loss_fn, base.apply_fn  # one set of functions: compiled once
    joint_loss, joint_opt = joint_training(cfg, loss_fn)
    alphas, point, pair = make_analysis(cfg, loss_fn, apply_fn)
    steps_per_epoch = base.train.y.shape[0] // cfg["batch_size"]
    num_steps = steps_per_epoch * cfg["epochs"]
    points, curve = {n: [] for n in OPTIMIZERS}, []
    pairs = {f"{a}-{b}": [] for a, b in itertools.combinations(OPTIMIZERS, 2)}
    for s in range(cfg["seeds"]):
        k_prob, k_fit, k_meas = jax.random.split(jax.random.fold_in(key, s), 3)
        prob = builtin_problem(k_prob, "mlp", "digits", width=cfg["width"], depth=cfg["depth"])
        run = fit(
            k_fit,
            joint_loss,
            {n: prob.params for n in OPTIMIZERS},
            joint_opt,
            prob.train,
            num_steps=num_steps,
            batch_size=cfg["batch_size"],
            record_every=steps_per_epoch,
            steps_per_chunk=num_steps,
            record_params=False,
            progress=False,
        )
        sol = run.params
        curve.append(np.asarray(run.history.loss))
        for n in OPTIMIZERS:
            m = point(k_meas, sol[n], prob.params, prob.train, prob.test)
            points[n].append(jax.tree.map(np.asarray, m))
        for a, b in itertools.combinations(OPTIMIZERS, 2):
            m = pair(sol[a], sol[b], prob.train, prob.test)
            pairs[f"{a}-{b}"].append(jax.tree.map(np.asarray, m))
        if s == 0:
            first, solutions = prob, [sol[n] for n in OPTIMIZERS]
    results, arrays = summarize(points, pairs)
    results["num_params"] = int(sum(x.size for x in jax.tree.leaves(first.params)))
    results["num_train"] = int(first.train.y.shape[0])
    results["num_test"] = int(first.test.y.shape[0])
    results["steps_per_optimizer"] = num_steps
    arrays["alphas"] = np.asarray(alphas)
    arrays["joint_minibatch_loss"] = np.stack(curve)  # Σ over the 3 copies, per epoch
    plane = plane_measure(cfg, loss_fn, first, solutions)
    results["plane"] = plane[0]
    arrays.update(plane[1])
    return results, arrays


def summarize(points, pairs):
    """mean ± std over seeds (and the per-seed values) of every scalar; stacked profiles."""
    results, arrays = {"solutions": {}, "pairs": {}}, {}
    for group, store in (("solutions", points), ("pairs", pairs)):
        for name, per_seed in store.items():
            out = {}
            for field in per_seed[0]:
                v = np.stack([m[field] for m in per_seed])
                if v.ndim == 2 and v.shape[1] > 2:  # a profile along α
                    arrays[f"{name}_{field}"] = v
                    continue
                out[field] = {"mean": v.mean(0), "std": v.std(0), "per_seed": v}
            results[group][name] = out
    return results, arrays


def plane_measure(cfg, loss_fn, prob, solutions):
    """Train loss on the plane through the three solutions of the first seed."""
    plane = plane_through(*solutions)
    pts = np.asarray(plane.points)
    span = np.ptp(pts, 0)
    pad = 0.35 * span.max()
    # uniform grids with the solutions' own coordinates added: the grid holds the 3 points
    xs = np.linspace(pts[:, 0].min() - pad, pts[:, 0].max() + pad, cfg["grid"])
    ys = np.linspace(pts[:, 1].min() - pad, pts[:, 1].max() + pad, cfg["grid"])
    xs, ys = np.union1d(xs, pts[:, 0]), np.union1d(ys, pts[:, 1])
    loss = np.asarray(surface(loss_fn, plane.center, plane.d1, plane.d2, prob.train, xs, ys).loss)
    at = [float(loss[np.searchsorted(ys, y), np.searchsorted(xs, x)]) for x, y in pts]
    results = {
        "points": pts,
        "loss_at_points": at,  # read off the surface grid
        "loss_direct": [float(loss_fn(p, prob.train)) for p in solutions],
        "min_loss": float(loss.min()),
        "max_loss": float(loss.max()),
    }
    return results, {"plane_xs": xs, "plane_ys": ys, "plane_loss": loss, "plane_points": pts}


# --------------------------------------------------------------------------- figure


def _pair_label(p):
    a, b = p.split("-")
    return f"{LABELS[a]} → {LABELS[b]}"


def make_figure(cfg, rec):
    import matplotlib.pyplot as plt

    res, arr = rec.results, rec.arrays
    pairs = list(res["pairs"])
    fig, axes = plt.subplots(2, 3, figsize=(14, 8))
    al = arr["alphas"]
    for col, (field, ylabel) in enumerate(
        [("train_loss", "train loss"), ("test_accuracy", "test accuracy")]
    ):
        ax = axes[0, col]
        for i, p in enumerate(pairs):
            v = arr[f"{p}_{field}"]
            m, s = v.mean(0), v.std(0)
            ax.plot(al, m, color=f"C{i}", label=_pair_label(p))
            ax.fill_between(al, m - s, m + s, color=f"C{i}", alpha=0.2)
        ax.axvline(0, color="gray", lw=0.5)
        ax.axvline(1, color="gray", lw=0.5)
        ax.set(xlabel="α  (θ = (1-α) a + α b)", ylabel=ylabel)
        ax.set_title(f"{ylabel} along the line between solutions (mean ± std)", fontsize=9)
        ax.legend(fontsize=7)
    axes[0, 0].set_yscale("log")

    ax = axes[0, 2]
    xs, ys, loss, pts = arr["plane_xs"], arr["plane_ys"], arr["plane_loss"], arr["plane_points"]
    levels = np.quantile(loss, np.linspace(0, 1, 25) ** 2)
    cs = ax.contourf(xs, ys, np.log10(loss), levels=np.log10(np.unique(levels)), cmap="viridis")
    fig.colorbar(cs, ax=ax, label="log10 train loss")
    for i, n in enumerate(OPTIMIZERS):
        ax.plot(*pts[i], "o", color="w", mec="k", ms=8)
        below = n == "momentum"  # on the x axis next to SGD: label it underneath
        ax.annotate(
            LABELS[n],
            pts[i],
            xytext=(0, -15) if below else (6, 6),
            textcoords="offset points",
            ha="center" if below else "left",
            color="w",
        )
    ax.set(xlabel="x (along SGD → SGD+momentum)", ylabel="y", title="plane through the 3 solutions")
    ax.set_aspect("equal", adjustable="box")

    sol = res["solutions"]
    x = np.arange(len(OPTIMIZERS))
    ax = axes[1, 0]
    w = 0.38
    for j, (key, lab) in enumerate(
        [("basin_width_unit", "unit directions"), ("basin_width_filter", "filter-normalized")]
    ):
        m = [sol[n][key]["mean"] for n in OPTIMIZERS]
        s = [sol[n][key]["std"] for n in OPTIMIZERS]
        base = m[0]
        ax.bar(x + (j - 0.5) * w, np.asarray(m) / base, w, yerr=np.asarray(s) / base, label=lab)
    ax.set_xticks(x, [LABELS[n] for n in OPTIMIZERS])
    ax.set(ylabel="basin width / SGD's", title=f"basin width (loss rise {cfg['basin_threshold']})")
    ax.legend(fontsize=7)

    ax = axes[1, 1]
    for j, eps in enumerate(cfg["sharpness_epsilons"]):
        m = [sol[n]["sharpness"]["mean"][j] for n in OPTIMIZERS]
        s = [sol[n]["sharpness"]["std"][j] for n in OPTIMIZERS]
        ax.bar(x + (j - 0.5) * w, m, w, yerr=s, label=f"ε = {eps:g}")
    ax.set_xticks(x, [LABELS[n] for n in OPTIMIZERS])
    ax.set(ylabel="ε-sharpness (train)", title="Keskar ε-sharpness")
    ax.legend(fontsize=7)

    ax = axes[1, 2]
    pr = res["pairs"]
    xp = np.arange(len(pairs))
    ax.bar(
        xp - w / 2,
        [100 * pr[p]["disagreement"]["mean"] for p in pairs],
        w,
        yerr=[100 * pr[p]["disagreement"]["std"] for p in pairs],
        label="test disagreement (%)",
    )
    ax2 = ax.twinx()
    ax2.bar(
        xp + w / 2,
        [pr[p]["barrier"]["mean"] for p in pairs],
        w,
        yerr=[pr[p]["barrier"]["std"] for p in pairs],
        color="C3",
        label="train-loss barrier",
    )
    ax.set_xticks(xp, [_pair_label(p).replace(" → ", "\n") for p in pairs], fontsize=7)
    ax.set_ylabel("disagreement on test (%)")
    ax2.set_ylabel("barrier (train loss)", color="C3")
    accs = ", ".join(
        f"{LABELS[n]} {100 * sol[n]['test_accuracy']['mean']:.1f}%" for n in OPTIMIZERS
    )
    ax.set_title(f"pairs; test acc: {accs}", fontsize=8)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7)
    return fig


def main(argv=None) -> int:
    p = experiment.parser(NAME, __doc__)
    p.add_argument("--seeds", type=experiment.positive(int), help="initializations (default 3)")
    p.add_argument("--epochs", type=experiment.positive(int), help="training epochs (default 60)")
    p.add_argument("--width", type=experiment.positive(int), help="hidden width (default 32)")
    p.add_argument("--depth", type=experiment.positive(int), help="hidden layers (default 2)")
    p.add_argument(
        "--batch-size", type=experiment.positive(int), help="minibatch size (default 32)"
    )
    args = p.parse_args(argv)
    cfg = experiment.settings(
        args, QUICK, FULL, ("seeds", "epochs", "width", "depth", "batch_size")
    )
    exp = experiment.Experiment(NAME, args, config=cfg)
    cfg, key = exp.config, jax.random.key(args.seed)
    with jax.numpy_dtype_promotion("standard"):
        rec = exp.stage("optimizers", {}, lambda: train_and_measure(cfg, key))
    exp.figure(make_figure(cfg, rec), NAME)
    exp.finish(rec.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
