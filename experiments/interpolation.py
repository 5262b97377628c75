"""Straight lines from initialization to solution, between two solutions, and the plane of the
SGD path: Goodfellow, Vinyals & Saxe's qualitative picture of neural-network optimization.

Claims reproduced (issue #7, item 3; Goodfellow, Vinyals & Saxe 2015, "Qualitatively
characterizing neural network optimization problems", ICLR):

1. **No barrier from θ₀ to θ*.** For the networks they study (MLPs, CNNs, LSTMs), the loss along
   the straight line ``θ(α) = (1 - α) θ₀ + α θ*`` from the initialization to the SGD solution
   decreases monotonically on α ∈ [0, 1] (their Figs. 1-5), on training and test data; the test
   loss turns up near α = 1 when the net overfits. Measured for each net: the loss for
   α ∈ [-0.5, 1.5] (``jaxscape.interpolate``) on train and test data, whether it is monotone on
   [0, 1], its largest rise there (``max_α L(α) - min_{α' <= α} L(α')``, 0 for a monotone
   line), and where its minimum is.
2. **A barrier between two solutions.** Two solutions trained from two different random
   initializations are separated by a barrier along the straight line between them (their
   Sec. 3.3 / Fig. 7: the loss in the middle is high). Measured: the loss for α ∈ [0, 1], its
   rise above the higher endpoint, and ``jaxscape.barrier`` (height above the chord).
3. **The SGD path in the Goodfellow plane.** The plane through θ₀ and θ* and the main direction
   in which the recorded trajectory leaves that line (``goodfellow_plane``), the loss on it
   (``surface``) and the projected path (``project``), next to the control: a random walk with
   the same step lengths (``random_walk``) drawn on its own plane. Measured: each path's
   straightness (``‖θ_T - θ_0‖`` / path length), its largest excursion off the line
   (``max |y| / ‖θ_T - θ_0‖``), and the train loss at its end; the walk's straightness is
   checked against ``√(Σ ℓ_t²) / Σ ℓ_t``, its value for nearly orthogonal steps of lengths ℓ_t.

Setting: scikit-learn's 8×8 digits (``builtin_problem(key, model, "digits")``: MLP 64-32-32-10
tanh, CNN of two 3×3 conv blocks of 8 channels, LSTM of 16 units over the 8 image rows),
minibatch SGD with momentum 0.9 (batch 64), a few hundred steps, float32. The paper: MNIST and
CIFAR-10, maxout MLPs/CNNs, an LSTM language model, many epochs.

Run ``python experiments/interpolation.py`` (default, a few CPU minutes) or with ``--quick``
(the MLP 64-16-16-10 only, on 500 digits, full-batch gradient descent with momentum for 150
steps; what the test suite runs). Results go to ``results.json`` in
``--out``; flags ``--models``, ``--width``, ``--steps``, ``--grid``, ``--num-examples`` scale it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from jaxscape import (
    barrier,
    builtin_problem,
    experiment,
    fit,
    goodfellow_plane,
    interpolate,
    project,
    random_walk,
    surface,
)

NAME = "interpolation"
MODELS = ("mlp", "cnn", "lstm")
# per net: width, depth, learning rate, steps (SGD with momentum, batch 64)
NETS = {
    "mlp": {"width": 32, "depth": 2, "lr": 0.1, "steps": 400},
    "cnn": {"width": 8, "depth": 2, "lr": 0.1, "steps": 400},
    "lstm": {"width": 16, "depth": 1, "lr": 0.5, "steps": 300},
}
QUICK = {
    "models": ["mlp"],
    "nets": {"mlp": {**NETS["mlp"], "width": 16, "steps": 150}},
    "num_examples": 500,
    "batch_size": None,  # full-batch in the test: minibatch sampling costs seconds to compile
    "momentum": 0.9,
    "num_records": 30,  # trajectory points (the random walk has as many steps)
    "num_alphas": 10,  # grid points per unit of α (even)
    "grid": 9,
    "monotone_tol": 0.01,  # a rise below 1% of L(0) - min L still counts as monotone
}
FULL = {
    **QUICK,
    "models": list(MODELS),
    "nets": NETS,
    "num_examples": None,  # all 1,797 digits (1,438 train / 359 test)
    "num_records": 50,
    "num_alphas": 20,
    "grid": 21,
    "batch_size": 64,
}


# --------------------------------------------------------------------------- measurements


def line_summary(alphas, losses, tol: float) -> dict:
    """Monotonicity on [0, 1], the largest rise there and the minimum over all α."""
    alphas, losses = np.asarray(alphas), np.asarray(losses)
    inside = (alphas >= -1e-9) & (alphas <= 1 + 1e-9)
    seg = losses[inside]
    rise = float(np.max(seg - np.minimum.accumulate(seg)))
    drop = float(seg[0] - seg.min())
    return {
        "loss_at_0": float(seg[0]),
        "loss_at_1": float(seg[-1]),
        "largest_rise": rise,
        "largest_rise_rel": rise / max(drop, 1e-12),
        "monotone": rise <= tol * drop,
        "monotone_strict": rise <= 1e-6 * abs(float(seg[0])),
        "argmin_alpha": float(alphas[np.argmin(losses)]),
        "min_loss": float(losses.min()),
    }


def between_summary(alphas, losses) -> dict:
    """The line between two solutions on α ∈ [0, 1]: rise above the higher endpoint, and the
    chord barrier."""
    alphas, losses = np.asarray(alphas), np.asarray(losses)
    top = max(losses[0], losses[-1])
    return {
        "endpoint_losses": [float(losses[0]), float(losses[-1])],
        "max_loss": float(losses.max()),
        "rise_above_endpoints": float(losses.max() - top),
        "barrier": float(jax.jit(barrier)(jnp.asarray(losses))),
        "argmax_alpha": float(alphas[np.argmax(losses)]),
    }


def path_summary(coords, losses) -> dict:
    """Straightness and excursion of a path in its plane, and its final loss."""
    coords = np.asarray(coords)
    return {
        "final_loss": float(losses[-1]),
        "initial_loss": float(losses[0]),
        "max_excursion_rel": float(np.max(np.abs(coords[:, 1])) / abs(coords[-1, 0])),
    }


def straightness(trajectory) -> tuple[float, float]:
    """``‖θ_T - θ_0‖ / Σ_t ‖θ_{t+1} - θ_t‖`` (1 for a straight path), and its value for a random
    walk with the same step lengths ℓ_t in many dimensions, ``√(Σ ℓ_t²) / Σ ℓ_t`` (independent
    isotropic steps are nearly orthogonal)."""
    mat = jax.vmap(lambda p: ravel_pytree(p)[0])(trajectory)
    steps = jnp.linalg.norm(jnp.diff(mat, axis=0), axis=1)
    walk = jnp.sqrt(jnp.sum(steps**2)) / jnp.sum(steps)
    return float(jnp.linalg.norm(mat[-1] - mat[0]) / jnp.sum(steps)), float(walk)


def plane_box(coords, n: int):
    """Grid ``xs, ys`` around the projected path, with a margin."""
    coords = np.asarray(coords)
    span = abs(coords[-1, 0])
    x0, x1 = min(coords[:, 0].min(), 0.0), max(coords[:, 0].max(), span)
    y0, y1 = min(coords[:, 1].min(), 0.0), max(coords[:, 1].max(), 0.0)
    mx, my = 0.2 * (x1 - x0), max(0.3 * (y1 - y0), 0.1 * span)
    xs = np.linspace(x0 - mx, x1 + mx, n, dtype=np.float32)
    ys = np.linspace(y0 - my, y1 + my, n, dtype=np.float32)
    return xs, ys


def path_losses(loss_fn, trajectory, batch):
    """Loss at every point of a trajectory (one compiled map)."""
    return np.asarray(jax.jit(jax.vmap(loss_fn, in_axes=(0, None)))(trajectory, batch))


# --------------------------------------------------------------------------- one network


def study(cfg, model: str, key):
    net = cfg["nets"][model]
    k_prob, k_other, k_fit1, k_fit2, k_walk = jax.random.split(key, 5)

    def problem(k):
        return builtin_problem(
            k,
            model,
            "digits",
            dtype=jnp.float32,
            width=net["width"],
            depth=net["depth"],
            num_examples=cfg["num_examples"],
        )

    prob = problem(k_prob)
    theta0_b = problem(k_other).params  # another initialization of the same architecture
    loss_fn, train, test = prob.loss_fn, prob.train, prob.test
    steps = net["steps"]
    every = steps // cfg["num_records"]
    opt = optax.sgd(net["lr"], momentum=cfg["momentum"])

    def train_from(k, theta0):
        return fit(
            k,
            loss_fn,
            theta0,
            opt,
            train,
            num_steps=every * cfg["num_records"],
            batch_size=cfg["batch_size"],
            record_every=every,
            progress=False,
        )

    run_a = train_from(k_fit1, prob.params)
    run_b = train_from(k_fit2, theta0_b)

    m = cfg["num_alphas"]  # even: α = 0 and α = 1 are grid points
    alphas = jnp.asarray(np.arange(-m // 2, 3 * m // 2 + 1) / m, jnp.float32)
    tol = cfg["monotone_tol"]
    on_test = {"test": lambda p, _: loss_fn(p, test)}  # one compiled program for all lines
    arrays = {"alphas": np.asarray(alphas)}
    results = {"description": prob.description, "steps": every * cfg["num_records"], **net}
    lines = {
        "init_line": (prob.params, run_a.params),
        "init_line_b": (theta0_b, run_b.params),
        "between": (run_a.params, run_b.params),
    }
    # jitted here: the library evaluates eagerly, op by op, which costs a compilation per op
    line = jax.jit(lambda a, b: interpolate(loss_fn, a, b, train, alphas, metrics=on_test))
    for name, (a, b) in lines.items():
        prof = line(a, b)
        arrays[f"{name}_train"] = np.asarray(prof.loss)
        arrays[f"{name}_test"] = np.asarray(prof.metrics["test"])
    inside = (arrays["alphas"] >= 0) & (arrays["alphas"] <= 1)
    for split in ("train", "test"):
        for name, out in (("init_line", "init_to_solution"), ("init_line_b", "init_to_solution_b")):
            results[f"{out}_{split}"] = line_summary(alphas, arrays[f"{name}_{split}"], tol)
        results[f"between_solutions_{split}"] = between_summary(
            arrays["alphas"][inside], arrays[f"between_{split}"][inside]
        )

    # the Goodfellow plane of the SGD path, and of a random walk with the same step lengths
    walk = jax.jit(random_walk)(k_walk, run_a.history.params)
    plane_loss = jax.jit(
        lambda c, d1, d2, xs, ys: surface(loss_fn, c, d1, d2, train, xs, ys, chunk_size=64).loss
    )
    for name, path in (("sgd", run_a.history.params), ("walk", walk)):
        plane = goodfellow_plane(path)
        coords = np.asarray(project(path, plane.center, plane.d1, plane.d2))
        xs, ys = plane_box(coords, cfg["grid"])
        surf = plane_loss(plane.center, plane.d1, plane.d2, xs, ys)
        losses = path_losses(loss_fn, path, train)
        arrays |= {
            f"{name}_xs": xs,
            f"{name}_ys": ys,
            f"{name}_surface": np.asarray(surf),
            f"{name}_coords": coords,
            f"{name}_losses": losses,
        }
        straight, walk_expected = straightness(path)
        results[f"plane_{name}"] = {
            **path_summary(coords, losses),
            "straightness": straight,
            "random_walk_straightness": walk_expected,
            "projection_error": float(np.max(np.abs(coords - np.asarray(plane.points)))),
        }
    results["final_train_loss"] = float(loss_fn(run_a.params, train))
    results["final_test_loss"] = float(loss_fn(run_a.params, test))
    results["final_train_loss_b"] = float(loss_fn(run_b.params, train))
    arrays["sgd_minibatch_loss"] = np.asarray(run_a.history.loss)
    return results, arrays


# --------------------------------------------------------------------------- figure


def make_figure(cfg, recs):
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    models = cfg["models"]
    fig, axes = plt.subplots(len(models), 4, figsize=(15, 3.3 * len(models)), squeeze=False)
    for row, model in zip(axes, models, strict=True):
        a, r = recs[model].arrays, recs[model].results
        ax = row[0]
        for split, c in (("train", "C0"), ("test", "C1")):
            ax.plot(a["alphas"], a[f"init_line_{split}"], color=c, label=f"{split}, run A")
            ax.plot(a["alphas"], a[f"init_line_b_{split}"], color=c, ls=":", label=f"{split}, B")
        for x in (0, 1):
            ax.axvline(x, color="gray", lw=0.5)
        mono = "yes" if r["init_to_solution_train"]["monotone"] else "no"
        ax.set(
            xlabel="α  (θ = (1-α)θ₀ + αθ*)",
            ylabel="loss",
            title=f"{model}: init → solution (monotone: {mono})",
        )
        ax.legend(fontsize=7)

        ax = row[1]
        for split, c in (("train", "C0"), ("test", "C1")):
            ax.plot(a["alphas"], a[f"between_{split}"], color=c, label=split)
        for x in (0, 1):
            ax.axvline(x, color="gray", lw=0.5)
        rise = r["between_solutions_train"]["rise_above_endpoints"]
        ax.set(
            xlabel="α  (θ = (1-α)θ*_A + αθ*_B)",
            ylabel="loss",
            title=f"{model}: solution A → solution B (rise {rise:.2f})",
        )
        ax.legend(fontsize=7)

        for ax, name, title in (
            (row[2], "sgd", "SGD path, Goodfellow plane"),
            (row[3], "walk", "random walk, same step lengths"),
        ):
            surf = a[f"{name}_surface"]
            lo, hi = max(float(surf.min()), 1e-3), float(surf.max())
            levels = np.geomspace(lo, hi, 14)
            cs = ax.contourf(
                a[f"{name}_xs"], a[f"{name}_ys"], np.clip(surf, lo, hi), levels, norm=LogNorm()
            )
            fig.colorbar(cs, ax=ax, format="%.2g")
            xy = a[f"{name}_coords"]
            ax.plot(xy[:, 0], xy[:, 1], "w.-", ms=3, lw=1)
            ax.plot(*xy[0], "wo", ms=6)
            ax.plot(*xy[-1], "w*", ms=10)
            s = r[f"plane_{name}"]["straightness"]
            ax.set(xlabel="along θ_T - θ₀", ylabel="orthogonal", title=f"{model}: {title}")
            ax.text(0.02, 0.03, f"straightness {s:.2f}", transform=ax.transAxes, color="w")
    return fig


# --------------------------------------------------------------------------- main


def build_parser():
    p = experiment.parser(NAME, __doc__)
    p.add_argument("--models", nargs="+", choices=MODELS, help="nets to study")
    p.add_argument("--width", type=experiment.positive(), help="hidden width for every net")
    p.add_argument("--steps", type=experiment.positive(), help="SGD steps for every net")
    p.add_argument("--grid", type=experiment.positive(minimum=3), help="plane grid points per axis")
    p.add_argument(
        "--num-examples", type=experiment.positive(minimum=20), help="digits used (all: 1797)"
    )
    return p


def resolve(args, parser) -> dict:
    cfg = dict(QUICK if args.quick else FULL)
    models = args.models or cfg["models"]
    nets = {m: dict(cfg["nets"].get(m, NETS[m])) for m in models}
    for net in nets.values():
        if args.width is not None:
            net["width"] = args.width
        if args.steps is not None:
            net["steps"] = args.steps
    cfg |= {"models": list(models), "nets": nets}
    if args.grid is not None:
        cfg["grid"] = args.grid
    if args.num_examples is not None:
        cfg["num_examples"] = args.num_examples
    for m, net in nets.items():
        if net["steps"] < cfg["num_records"]:
            parser.error(
                f"argument --steps: {m} needs at least {cfg['num_records']} steps (one per "
                f"trajectory record), got {net['steps']}"
            )
    return cfg


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cfg = resolve(args, parser)
    exp = experiment.Experiment(NAME, args, config=cfg)
    cfg, key = exp.config, jax.random.key(args.seed)
    recs = {}
    with jax.numpy_dtype_promotion("standard"):
        for i, model in enumerate(cfg["models"]):
            k = jax.random.fold_in(key, i)
            recs[model] = exp.stage(model, {}, lambda model=model, k=k: study(cfg, model, k))
    exp.figure(make_figure(cfg, recs), NAME)
    exp.finish({m: rec.results for m, rec in recs.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
