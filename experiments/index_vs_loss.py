"""Index against loss at the critical points of a small network (Dauphin et al. 2014, Fig. 1;
Pennington & Bahri 2017).

Claims reproduced:

1. **The index grows with the loss** (Dauphin, Pascanu, Gulcehre, Cho, Ganguli & Bengio 2014,
   "Identifying and attacking the saddle point problem in high-dimensional non-convex
   optimization", NeurIPS, Fig. 1; after Bray & Dean 2007): critical points of a neural
   network's loss with a high loss are saddles with many descent directions (a large index α,
   the fraction of negative Hessian eigenvalues); those with a low loss are near-minima.
2. **The 3/2 law** (Pennington & Bahri 2017, "Geometry of neural network loss surfaces via
   random matrix theory", ICML): for a one-hidden-layer network with squared loss
   ``α(ε) ≈ α₀ |(ε − ε_c)/ε_c|^{3/2}`` above a critical loss ``ε_c`` below which critical points
   are minima. We fit ``α = A · max(ε − ε_c, 0)^p`` by least squares, once with ``p = 3/2`` fixed
   and once with ``p`` free (a grid over ``ε_c`` and ``p``, the amplitude in closed form), and
   report both with their residuals (``α₀ = A ε_c^p`` for the normalized form).

Setting: a tanh MLP ``d → hidden → classes`` (``models.MLP``, a few dozen parameters so that a
dense float64 Hessian is cheap) on a subset of scikit-learn's digits (``datasets.load_digits``,
the first ``classes`` classes, ``examples`` examples, inputs centred and projected on their top
``pca_dims`` principal components, standardized), mean squared error against one-hot targets
as in Pennington & Bahri. It is trained by full-batch gradient descent (``fit``); from
``trajectory_points`` points along the trajectory (geometrically spaced in steps), each also
perturbed by filter-normalized random directions (``random_direction``) of the relative sizes
``perturbations``, critical points are sought by minimizing ``½‖∇L‖²`` (``find_critical_points``,
dense Levenberg–Marquardt, ``search_steps`` iterations). At every end point the dense Hessian
(``hessian_matrix``, float64) gives the spectrum and the index (eigenvalues below
``-eps^(1/3) · max|λ|`` count as negative, ``classify``'s default tolerance).

Honesty about "critical": gradient-norm minimization often stalls at points that are not
critical (a minimum of ``‖∇L‖²`` with ``∇L ≠ 0``, or a slow crawl towards a degenerate critical
point). Every end point's ``‖∇L‖`` is reported; only those with ``‖∇L‖ <= grad_tol`` count as
critical points for the claims and the fits, the others are plotted hollow. The critical ones
are also passed through ``classify`` (with that ``grad_tol``) for their kind.

Measured: loss, ``‖∇L‖``, index and kind of every end point; the rank correlation of index and
loss over the critical points; the two fits. Float64 throughout (``jax_enable_x64``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from jaxscape import (
    classify,
    datasets,
    experiment,
    find_critical_points,
    fit,
    hessian_matrix,
    models,
    random_direction,
)

NAME = "index_vs_loss"
QUICK = {
    "classes": 4,
    "examples": 60,
    "pca_dims": 4,
    "hidden": 4,
    "learning_rate": 1.0,
    "train_steps": 400,
    "record_every": 4,
    "trajectory_points": 3,
    "perturbations": [0.0, 1.0],
    "search_steps": 30,
    "grad_tol": 1e-4,
}
FULL = {
    **QUICK,
    "examples": 100,
    "pca_dims": 5,
    "hidden": 5,
    "train_steps": 2000,
    "record_every": 10,
    "trajectory_points": 10,
    "perturbations": [0.0, 0.5, 1.5],
    "search_steps": 500,
}
FLAGS = {  # flag: (type, help); each overrides the config value of the same name
    "examples": (int, "training examples"),
    "hidden": (int, "hidden units"),
    "pca_dims": (int, "input dimensions (PCA)"),
    "trajectory_points": (int, "start points along the trajectory"),
    "search_steps": (int, "Levenberg-Marquardt iterations of the critical-point search"),
    "train_steps": (int, "gradient-descent steps of the training run"),
    "grad_tol": (float, "largest ||grad L|| that counts as a critical point"),
}
EIG_RTOL = float(np.finfo(np.float64).eps ** (1 / 3))  # classify's default eigenvalue tolerance


# --------------------------------------------------------------------------- data and model


def make_problem(cfg, key):
    """Digits subset, PCA inputs, one-hot targets; the MLP, its MSE loss and initial params."""
    digits = datasets.load_digits(layout="flat", dtype=jnp.float64)
    x, y = np.asarray(digits.x), np.asarray(digits.y)
    keep = np.flatnonzero(y < cfg["classes"])[: cfg["examples"]]
    x = x[keep] - x[keep].mean(0)
    vt = np.linalg.svd(x, full_matrices=False)[2]
    z = x @ vt[: cfg["pca_dims"]].T
    batch = (jnp.asarray(z / z.std(0)), jnp.asarray(np.eye(cfg["classes"])[y[keep]]))
    net = models.MLP((cfg["hidden"], cfg["classes"]), dtype=jnp.float64)
    params, _ = models.init_model(key, net, batch[0][:1])
    return models.model_loss(net, "mse"), params, batch


# --------------------------------------------------------------------------- 1. trajectory


def train(cfg, problem):
    loss_fn, params, batch = problem
    with jax.numpy_dtype_promotion("standard"):
        run = fit(
            jax.random.key(0),  # full batch: the minibatch key is unused
            loss_fn, params, optax.sgd(cfg["learning_rate"]), batch,
            num_steps=cfg["train_steps"], record_every=cfg["record_every"],
            progress=False, steps_per_chunk=cfg["train_steps"],
        )  # fmt: skip
    steps = np.asarray(run.history.step)
    picks = np.geomspace(1, len(steps), cfg["trajectory_points"]).round().astype(int) - 1
    picks = np.unique(picks)
    flat = jax.vmap(lambda p: ravel_pytree(p)[0])(run.history.params)
    results = {
        "num_params": int(flat.shape[1]),
        "initial_loss": float(run.history.loss[0]),
        "final_loss": float(run.history.loss[-1]),
        "final_grad_norm": float(run.history.grad_norm[-1]),
        "start_steps": steps[picks],
    }
    arrays = {
        "step": steps,
        "loss": np.asarray(run.history.loss),
        "grad_norm": np.asarray(run.history.grad_norm),
        "starts": np.asarray(flat[picks]),
    }
    return results, arrays


# --------------------------------------------------------------------------- 2. search


def _starts(cfg, key, template, trajectory):
    """Each trajectory point plus a filter-normalized random direction of each relative size."""
    unravel = ravel_pytree(template)[1]
    rows, labels = [], []
    for i, flat in enumerate(trajectory):
        point = unravel(jnp.asarray(flat))
        for j, size in enumerate(cfg["perturbations"]):
            d = random_direction(jax.random.fold_in(key, 1000 * i + j), point)
            rows.append(ravel_pytree(jax.tree.map(
                lambda p, q, s=size: p + s * q, point, d))[0])  # fmt: skip
            labels.append((i, float(size)))
    return jnp.stack(rows), labels


def _spectra(loss_fn, unravel, batch, flats):
    """Dense Hessian eigenvalues at every row of ``flats`` (one compiled, vmapped program)."""
    eig = jax.jit(jax.vmap(lambda f: jnp.linalg.eigvalsh(hessian_matrix(
        loss_fn, unravel(f), batch, max_params=f.size))))  # fmt: skip
    return np.asarray(eig(flats))


def index_of(eigenvalues: np.ndarray) -> np.ndarray:
    """Fraction of eigenvalues below ``-EIG_RTOL · max|λ|`` per row (classify's rule)."""
    tol = EIG_RTOL * np.max(np.abs(eigenvalues), axis=-1, keepdims=True)
    return np.mean(eigenvalues < -tol, axis=-1)


def search(cfg, key, problem, trajectory):
    loss_fn, template, batch = problem
    unravel = ravel_pytree(template)[1]
    flats, labels = _starts(cfg, key, template, trajectory)
    start_loss = np.asarray(jax.vmap(lambda f: loss_fn(unravel(f), batch))(flats))
    found = find_critical_points(
        loss_fn, jax.vmap(unravel)(flats), batch, method="newton",
        num_steps=cfg["search_steps"], grad_tol=1e-10, classify=False,
    )  # fmt: skip
    ends = jax.vmap(lambda p: ravel_pytree(p)[0])(found.params)
    lam = _spectra(loss_fn, unravel, batch, ends)
    loss, gnorm = np.asarray(found.loss), np.asarray(found.grad_norm)
    critical = gnorm <= cfg["grad_tol"]
    kinds, classify_index = [], []
    for i in range(len(labels)):
        if critical[i]:  # classify's own verdict at the accepted points
            point = classify(loss_fn, unravel(ends[i]), batch, grad_tol=cfg["grad_tol"])
            kinds.append(point.kind)
            classify_index.append(point.index)
        else:
            kinds.append("not-critical")
            classify_index.append(None)
    results = {
        "start_trajectory_index": [a for a, _ in labels],
        "start_perturbation": [b for _, b in labels],
        "start_loss": start_loss,
        "loss": loss,
        "grad_norm": gnorm,
        "index": index_of(lam),
        "classify_index": classify_index,
        "kind": kinds,
        "critical": critical,
        "lambda_min": lam[:, 0],
        "lambda_max": lam[:, -1],
    }
    arrays = {"eigenvalues": lam, "grad_norms": np.asarray(found.grad_norms)}
    return results, arrays


# --------------------------------------------------------------------------- 3. fits


def power_fit(loss, index, exponent=None):
    """Least-squares fit of ``α = A · max(ε − ε_c, 0)^p`` (``p = exponent`` fixed, or free on a
    grid in [0.05, 4]); ``ε_c`` on a grid below the largest loss, ``A`` in closed form."""
    eps, alpha = np.asarray(loss, float), np.asarray(index, float)
    if eps.size < 3 or np.ptp(eps) == 0:
        return None
    lo, hi = eps.min() - np.ptp(eps), eps.max()
    grid = np.linspace(max(lo, 0.0), hi, 801)[:-1]
    powers = [exponent] if exponent is not None else np.linspace(0.05, 4.0, 159)
    best = None
    for p in powers:
        basis = np.maximum(eps[None, :] - grid[:, None], 0.0) ** p  # (grid, points)
        norm = np.sum(basis**2, axis=1)
        amp = np.where(norm > 0, basis @ alpha / np.where(norm > 0, norm, 1), 0.0)
        sse = np.sum((alpha[None, :] - amp[:, None] * basis) ** 2, axis=1)
        i = int(np.argmin(sse))
        if best is None or sse[i] < best[0]:
            best = (float(sse[i]), float(grid[i]), float(amp[i]), float(p))
    sse, eps_c, amp, p = best
    return {
        "exponent": p,
        "eps_c": eps_c,
        "amplitude": amp,
        "alpha0": amp * eps_c**p if eps_c > 0 else None,
        "rms_residual": math.sqrt(sse / eps.size),
        "rms_index": float(np.sqrt(np.mean((alpha - alpha.mean()) ** 2))),
    }


def spearman(a, b) -> float | None:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 3:
        return None
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def summarize(cfg, found):
    r = found.results
    loss, index = np.asarray(r["loss"]), np.asarray(r["index"])
    gnorm, crit = np.asarray(r["grad_norm"]), np.asarray(r["critical"], bool)
    tols = sorted({cfg["grad_tol"], 1e-5, 1e-6, 1e-8})
    low, high = (np.argmin(np.where(crit, loss, np.inf)), np.argmax(np.where(crit, loss, -np.inf)))
    kinds = [k for k, c in zip(r["kind"], crit, strict=True) if c]
    return {
        "num_points": int(loss.size),
        "num_critical": int(crit.sum()),
        "grad_tol": cfg["grad_tol"],
        "count_below": {f"{t:g}": int(np.sum(gnorm <= t)) for t in tols},
        "grad_norm_median": float(np.median(gnorm)),
        "grad_norm_max": float(gnorm.max()),
        "kinds": {k: kinds.count(k) for k in sorted(set(kinds))},
        "spearman_critical": spearman(loss[crit], index[crit]),
        "spearman_all": spearman(loss, index),
        "lowest_loss_critical": None if not crit.any() else
            {"loss": float(loss[low]), "index": float(index[low])},
        "highest_loss_critical": None if not crit.any() else
            {"loss": float(loss[high]), "index": float(index[high])},
        "fit_fixed_3_2": power_fit(loss[crit], index[crit], 1.5),
        "fit_free": power_fit(loss[crit], index[crit]),
    }  # fmt: skip


# --------------------------------------------------------------------------- figure


def make_figure(cfg, traj, found, summary):
    import matplotlib.pyplot as plt

    r = found.results
    loss, index = np.asarray(r["loss"]), np.asarray(r["index"])
    gnorm, crit = np.asarray(r["grad_norm"]), np.asarray(r["critical"], bool)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.3))
    ax = axes[0]
    ax.scatter(loss[crit], index[crit], s=22, c="C0", label=f"‖∇L‖ ≤ {cfg['grad_tol']:g}")
    ax.scatter(
        loss[~crit], index[~crit], s=22, facecolors="none", edgecolors="C7",
        label="not critical (search stalled)",
    )  # fmt: skip
    grid = np.linspace(0, max(loss.max(), 1e-12) * 1.05, 300)
    for key, style, name in (("fit_fixed_3_2", "k-", "p = 3/2"), ("fit_free", "r--", "p free")):
        f = summary[key]
        if f is not None:
            curve = f["amplitude"] * np.maximum(grid - f["eps_c"], 0) ** f["exponent"]
            ax.plot(
                grid,
                curve,
                style,
                lw=1,
                label=f"{name}: ε_c={f['eps_c']:.3g}, p={f['exponent']:.2f}",
            )
    ax.set(xlabel="loss ε at the end point", ylabel="index α (fraction of λ < 0)",
           title="index vs loss (Dauphin et al. Fig. 1)")  # fmt: skip
    ax.legend(fontsize=7)

    ax = axes[1]
    ax.scatter(loss, gnorm, s=16, c=np.asarray(r["start_perturbation"]), cmap="viridis")
    ax.axhline(cfg["grad_tol"], color="k", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set(xlabel="loss ε at the end point", ylabel="‖∇L‖ at the end point",
           title="is it critical? (colour: perturbation size, dark = 0)")  # fmt: skip

    ax = axes[2]
    ax.loglog(traj.arrays["step"] + 1, traj.arrays["loss"], "C0-", lw=1, label="training loss")
    picks = np.asarray(traj.results["start_steps"])
    hit = np.searchsorted(traj.arrays["step"], picks)
    ax.loglog(picks + 1, traj.arrays["loss"][hit], "kx", label="start points")
    ax.set(
        xlabel="GD step + 1",
        ylabel="loss",
        title=f"training run ({traj.results['num_params']} params)",
    )
    ax.legend(fontsize=8)
    return fig


def main(argv=None) -> int:
    p = experiment.parser(NAME, __doc__)
    for flag, (kind, text) in FLAGS.items():
        p.add_argument(
            f"--{flag.replace('_', '-')}", type=experiment.positive(kind), help=f"{text} (> 0)"
        )
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # exact float64 Hessians
    cfg = experiment.settings(args, QUICK, FULL, FLAGS)
    exp = experiment.Experiment(NAME, args, config=cfg)
    cfg, key = exp.config, jax.random.key(args.seed)
    k_init, k_pert = jax.random.split(key)
    problem = make_problem(cfg, k_init)  # (loss_fn, initial params, batch)
    traj = exp.stage("train", {}, lambda: train(cfg, problem))
    found = exp.stage(
        "search", {}, lambda: search(cfg, k_pert, problem, traj.arrays["starts"]), [traj]
    )
    summary = summarize(cfg, found)
    exp.figure(make_figure(cfg, traj, found, summary), NAME)
    exp.say(
        f"  {summary['num_critical']}/{summary['num_points']} end points with ‖∇L‖ <= "
        f"{cfg['grad_tol']:g}; kinds {summary['kinds']}; Spearman(loss, index) "
        f"{summary['spearman_critical']}; fits {summary['fit_fixed_3_2']} / {summary['fit_free']}"
    )
    exp.finish({"train": traj.results, "summary": summary, "points": found.results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
