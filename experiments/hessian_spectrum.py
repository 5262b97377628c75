"""The Hessian's spectrum through training — a bulk near zero and a few outliers — and gradient
descent at the edge of stability.

Claims reproduced (issue #7, Hessian spectrum):

1. **Bulk and outliers** (Sagun et al. 2017/2018, "Empirical analysis of the Hessian of
   over-parametrized neural networks"; Ghorbani, Krishnan & Xiao 2019, "An investigation into
   neural net optimization via Hessian eigenvalue density", ICML; Papyan 2019, "Measurements of
   three-level hierarchical structure in the outliers in the spectrum of deepnet Hessians",
   ICML). The spectrum is a bulk concentrated near zero plus a few large outliers, about one
   per class (Papyan: C or C - 1 for C classes, here C = 10), which separate from the bulk as
   training proceeds. Measured for an MLP (and a small CNN) on digits at initialization and at
   a few points of SGD training: the density by stochastic Lanczos quadrature
   (``spectral_density``: the share of its mass within 5% of λ_max of zero, the share below
   -1% of λ_max, the trace), the top-k eigenvalues (``eigsh``, k = 20), the number of outliers read
   off the largest gap ``λ_i / λ_{i+1}`` among them, the ratio at the class count
   ``λ_C / λ_{C+1}`` and the separation ``λ_{C-1} / λ_{2C}`` (outliers over the bulk's edge).
2. **Edge of stability** (Cohen et al. 2021, "Gradient descent on neural networks typically
   occurs at the edge of stability", ICLR). Full-batch gradient descent with step η: the
   sharpness λ_max rises during training (progressive sharpening) until it reaches ``2/η`` and
   then hovers there instead of rising further, while the loss keeps decreasing
   (non-monotonically). Measured: λ_max along training (``top_eigenvalue_callback``, evaluated
   on the trajectory ``fit`` records)
   for a fixed subset of digits, a ReLU MLP and the mean squared error to one-hot targets (as
   Cohen et al.'s MSE runs), for a small reference η (whose 2/η is never reached) and larger
   η; the ratio ``λ_max / (2/η)`` over the last quarter of training, its maximum, and the step
   where it first reaches 0.9.

Setting: scikit-learn's 8×8 digits; float32. Spectrum: ``builtin_problem(key, "mlp",
"digits")`` (64-32-32-10 tanh, 3,466 params, cross-entropy, all 1,438 training digits for the
Hessian) trained by SGD with momentum; the CNN has two 3×3 conv blocks of 8 channels. Edge of
stability: 64-32-32-32-10 ReLU MLP on the first 500 digits. The papers: ResNets on CIFAR/
ImageNet (Ghorbani), VGG/ResNets on MNIST/CIFAR with C = 10 and 100 (Papyan), FC/CNN nets on a
5k subset of CIFAR-10 (Cohen).

Run ``python experiments/hessian_spectrum.py`` (default, a few CPU minutes) or with ``--quick``
(MLP 64-16-16-10 on 500 digits, full-batch, steps 0 and 200, no CNN; η = 1.0 and 1.3 for 300
steps; what the test suite runs, ``--parts edge`` in the fast test). Flags ``--width``,
``--steps``, ``--eos-steps``, ``--lrs``, ``--k``, ``--no-cnn``, ``--parts`` scale or select it.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxscape import (
    builtin_problem,
    datasets,
    eigsh,
    experiment,
    fit,
    hessian_operator,
    models,
    spectral_density,
    top_eigenvalue_callback,
)

NAME = "hessian_spectrum"
NUM_CLASSES = 10
PARTS = ("spectrum", "edge")
QUICK = {
    "spectrum": {
        "width": 16,
        "num_examples": 500,
        "lr": 0.1,
        "momentum": 0.9,
        "batch_size": None,  # full batch in the test (minibatch sampling is slow to compile)
        "steps": 200,
        "record_every": 100,
        "checkpoints": [0, 200],
        "k": 20,
        "num_iters": 60,
        "num_probes": 2,
        "slq_iters": 40,
    },
    "cnn": None,
    "eos": {
        "widths": [32, 32, 32],
        "num_examples": 500,
        "lrs": [1.0, 1.3],
        "steps": 300,
        "record_every": 25,
        "num_iters": 20,
    },
}
FULL = {
    "spectrum": {
        **QUICK["spectrum"],
        "width": 32,
        "num_examples": None,
        "batch_size": 64,
        "steps": 800,
        "record_every": 50,
        "checkpoints": [0, 50, 200, 800],
        "num_iters": 100,
        "num_probes": 4,
        "slq_iters": 80,
    },
    "cnn": {"width": 8, "steps": 400, "lr": 0.1},
    "eos": {
        **QUICK["eos"],
        "lrs": [0.1, 0.65, 1.0, 1.3],  # 0.1: the reference, its 2/η is never reached
        "steps": 2000,
        "record_every": 50,
    },
}


# --------------------------------------------------------------------------- 1. spectrum


def outlier_summary(top, slq, num_params: int) -> dict:
    """Outliers of the top-k eigenvalues (descending) and the bulk of the SLQ density."""
    top = np.sort(np.asarray(top))[::-1]
    c = NUM_CLASSES
    pos = top[top > 0]
    ratios = pos[:-1] / pos[1:]
    nodes, weights = np.asarray(slq.nodes).ravel(), np.asarray(slq.weights).ravel()
    num_probes = np.asarray(slq.nodes).shape[0]
    mass = lambda sel: float(weights[sel].sum() / num_probes)  # noqa: E731
    trace = float(num_params * np.sum(weights * nodes) / num_probes)
    return {
        "top": top,
        "lambda_max": float(top[0]),
        "gap_count": int(np.argmax(ratios) + 1),  # outliers above the largest gap
        "gap_ratio": float(ratios.max()),
        "ratio_at_C": float(top[c - 1] / top[c]),  # λ_C / λ_{C+1}
        "ratio_at_C_minus_1": float(top[c - 2] / top[c - 1]),  # λ_{C-1} / λ_C
        "separation": float(top[c - 2] / top[min(2 * c, len(top)) - 1]),  # λ_{C-1} / λ_{2C}
        "bulk_mass_near_zero": mass(np.abs(nodes) < 0.05 * top[0]),
        "negative_mass": mass(nodes < -0.01 * top[0]),  # below -1% of λ_max
        "trace": trace,
    }


def spectrum_of(key, loss_fn, params, batch, cfg):
    k_eig, k_slq = jax.random.split(key)
    matvec = hessian_operator(loss_fn, params, batch)
    top = eigsh(k_eig, matvec, params, k=cfg["k"], which="LA", num_iters=cfg["num_iters"])
    slq = spectral_density(
        k_slq, matvec, params, num_probes=cfg["num_probes"], num_iters=cfg["slq_iters"]
    )
    return top.eigenvalues, slq


def spectra(cfg, model: str, key):
    """Train ``model`` on digits and measure its spectrum at the checkpoints."""
    sc = cfg["spectrum"]
    net = {"width": sc["width"], "steps": sc["steps"], "lr": sc["lr"]}
    checkpoints, every = sc["checkpoints"], sc["record_every"]
    if model == "cnn":
        net = cfg["cnn"]
        checkpoints, every = [0, net["steps"]], net["steps"]
    k_prob, k_fit, k_spec = jax.random.split(key, 3)
    prob = builtin_problem(
        k_prob,
        model,
        "digits",
        dtype=jnp.float32,
        width=net["width"],
        num_examples=sc["num_examples"],
    )
    run = fit(
        k_fit,
        prob.loss_fn,
        prob.params,
        optax.sgd(net["lr"], momentum=sc["momentum"]),
        prob.train,
        num_steps=net["steps"],
        batch_size=sc["batch_size"],
        record_every=every,
        progress=False,
    )
    n = sum(x.size for x in jax.tree.leaves(prob.params))
    measure = jax.jit(lambda k, p: spectrum_of(k, prob.loss_fn, p, prob.train, sc))
    results = {"description": prob.description, "num_params": n, "checkpoints": {}}
    arrays = {"checkpoints": np.asarray(checkpoints)}
    steps = list(np.asarray(run.history.step))
    for t in checkpoints:
        i = steps.index(t)
        params = jax.tree.map(lambda a, i=i: a[i], run.history.params)
        top, slq = measure(jax.random.fold_in(k_spec, t), params)
        summary = outlier_summary(top, slq, n)
        summary["train_loss"] = float(prob.loss_fn(params, prob.train))
        results["checkpoints"][str(t)] = summary
        arrays |= {
            f"top_{t}": summary["top"],
            f"grid_{t}": np.asarray(slq.grid),
            f"density_{t}": np.asarray(slq.density),
        }
    first, last = (results["checkpoints"][str(t)] for t in (checkpoints[0], checkpoints[-1]))
    results["separation_growth"] = last["separation"] / first["separation"]
    return results, arrays


# --------------------------------------------------------------------------- 2. edge of stability


def edge_of_stability(cfg, key):
    ec = cfg["eos"]
    digits = datasets.load_digits(layout="flat", dtype=jnp.float32)
    x = digits.x[: ec["num_examples"]]
    batch = (x, jax.nn.one_hot(digits.y[: ec["num_examples"]], NUM_CLASSES, dtype=jnp.float32))
    net = models.MLP((*ec["widths"], NUM_CLASSES), activation=nn.relu)
    k_init, k_lanczos = jax.random.split(key)
    params, _ = models.init_model(k_init, net, x[:1])
    loss_fn = models.model_loss(net, "mse")
    # fit's callback, evaluated on the recorded trajectory: one compiled program for every η
    # (inside fit it would be compiled again with each optimizer)
    callback = top_eigenvalue_callback(k_lanczos, loss_fn, batch, num_iters=ec["num_iters"])
    sharpness = jax.jit(
        lambda traj, steps: jax.lax.map(lambda ps: callback(ps[0], None, ps[1]), (traj, steps))
    )
    results, arrays = {"num_params": sum(a.size for a in jax.tree.leaves(params))}, {}
    runs = {}
    for lr in ec["lrs"]:
        run = fit(
            jax.random.key(0),  # full batch: the key is unused
            loss_fn,
            params,
            optax.sgd(lr),
            batch,
            num_steps=ec["steps"],
            record_every=ec["record_every"],
            progress=False,
            on_nonfinite="stop",
        )
        steps = jnp.asarray(run.history.step)
        lam = np.asarray(sharpness(run.history.params, steps))
        loss = np.asarray(run.history.loss)
        ratio = lam * lr / 2
        last = ratio[-max(2, len(ratio) // 4) :]
        reached = np.flatnonzero(ratio >= 0.9)
        runs[str(lr)] = {
            "threshold": 2 / lr,
            "lambda_init": float(lam[0]),
            "lambda_final": float(lam[-1]),
            "lambda_max_over_training": float(lam.max()),
            "ratio_last_quarter_mean": float(last.mean()),
            "ratio_last_quarter_range": [float(last.min()), float(last.max())],
            "ratio_max": float(ratio.max()),
            "first_step_ratio_0.9": int(run.history.step[reached[0]]) if reached.size else None,
            "loss_initial": float(loss[0]),
            "loss_final": float(loss[-1]),
            "loss_increases": int(np.sum(np.diff(loss) > 0)),
            "finite": bool(run.finite),
        }
        arrays |= {f"lambda_{lr}": lam, f"loss_{lr}": loss, "step": np.asarray(run.history.step)}
    results["runs"] = runs
    ref = runs[str(ec["lrs"][0])]
    results["reference_lr"] = ec["lrs"][0]
    results["reference_sharpening"] = ref["lambda_max_over_training"] / ref["lambda_init"]
    return results, arrays


# --------------------------------------------------------------------------- figure


def make_figure(cfg, mlp, cnn, eos):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    if mlp is None:
        for ax in axes[0]:
            ax.axis("off")
    else:
        spectrum_panels(axes[0], mlp, cnn)
    if eos is None:
        for ax in axes[1]:
            ax.axis("off")
    else:
        edge_panels(axes[1], cfg, eos)
    return fig


def spectrum_panels(axes, mlp, cnn):
    import matplotlib.pyplot as plt

    colors = plt.cm.viridis(np.linspace(0, 0.9, len(mlp.arrays["checkpoints"])))
    ax = axes[0]
    for t, c in zip(mlp.arrays["checkpoints"], colors, strict=True):
        ax.semilogy(mlp.arrays[f"grid_{t}"], mlp.arrays[f"density_{t}"] + 1e-8, color=c)
        ax.plot([], [], color=c, label=f"step {t}")
    ax.set(xlabel="eigenvalue", ylabel="density (SLQ)", ylim=(1e-6, None), title="MLP: density")
    ax.legend(fontsize=8)

    ax = axes[1]
    for t, c in zip(mlp.arrays["checkpoints"], colors, strict=True):
        top = mlp.arrays[f"top_{t}"]
        gap = mlp.results["checkpoints"][str(t)]["gap_count"]
        ax.semilogy(np.arange(1, len(top) + 1), top, "o-", ms=3, color=c, label=f"{t}: gap {gap}")
    ax.axvline(NUM_CLASSES + 0.5, color="gray", ls=":", lw=1)
    ax.set(xlabel="index i", ylabel="λ_i", title="MLP: top-k eigenvalues (C = 10 dotted)")
    ax.legend(fontsize=8, title="step: outliers")

    ax = axes[2]
    if cnn is not None:
        for t, c in zip(cnn.arrays["checkpoints"], ("C0", "C3"), strict=True):
            top = cnn.arrays[f"top_{t}"]
            ax.semilogy(np.arange(1, len(top) + 1), top, "o-", ms=3, color=c, label=f"step {t}")
        ax.axvline(NUM_CLASSES + 0.5, color="gray", ls=":", lw=1)
        ax.set(xlabel="index i", ylabel="λ_i", title="CNN: top-k eigenvalues")
        ax.legend(fontsize=8)
    else:
        ax.axis("off")


def edge_panels(axes, cfg, eos):
    step = eos.arrays["step"]
    lrs = cfg["eos"]["lrs"]
    for i, lr in enumerate(lrs):
        c = f"C{i}"
        axes[0].plot(step, eos.arrays[f"lambda_{lr}"], color=c, label=f"η = {lr}")
        axes[0].axhline(2 / lr, color=c, ls="--", lw=1)
        axes[1].plot(step, eos.arrays[f"lambda_{lr}"] * lr / 2, color=c, label=f"η = {lr}")
        axes[2].semilogy(step, eos.arrays[f"loss_{lr}"], color=c, label=f"η = {lr}")
    top = max(eos.arrays[f"lambda_{lr}"].max() for lr in lrs)
    axes[0].set(
        xlabel="GD step", ylabel="λ_max", ylim=(0, 1.3 * top), title="sharpness; dashed 2/η"
    )
    axes[1].axhline(1, color="k", ls="--", lw=1)
    axes[1].set(xlabel="GD step", ylabel="λ_max / (2/η)", title="edge of stability")
    axes[2].set(xlabel="GD step", ylabel="train loss (MSE)", title="full-batch GD loss")
    for ax in axes:
        ax.legend(fontsize=8)


# --------------------------------------------------------------------------- main


def build_parser():
    p = experiment.parser(NAME, __doc__)
    p.add_argument("--width", type=experiment.positive(), help="MLP width for the spectrum")
    p.add_argument("--steps", type=experiment.positive(), help="SGD steps (spectrum)")
    p.add_argument("--eos-steps", type=experiment.positive(), help="GD steps (edge)")
    p.add_argument(
        "--lrs", type=experiment.positive(float), nargs="+", help="GD step sizes η (edge)"
    )
    p.add_argument("--k", type=experiment.positive(), help="top eigenvalues (>= 2C = 20)")
    p.add_argument("--no-cnn", action="store_true", help="skip the CNN")
    p.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="what to run: the spectra, the edge of stability, or both (default)",
    )
    return p


def resolve(args, parser) -> dict:
    base = QUICK if args.quick else FULL
    cfg = {"spectrum": dict(base["spectrum"]), "cnn": base["cnn"], "eos": dict(base["eos"])}
    sc, ec = cfg["spectrum"], cfg["eos"]
    if args.width is not None:
        sc["width"] = args.width
    if args.steps is not None:
        every = max(1, args.steps // 16)
        sc |= {"steps": every * 16, "record_every": every}
        sc["checkpoints"] = sorted({0, every, 4 * every, 16 * every})
    if args.k is not None:
        if args.k < 2 * NUM_CLASSES:
            parser.error(f"argument --k: must be >= {2 * NUM_CLASSES}, got {args.k}")
        sc["k"] = args.k
    if args.eos_steps is not None:
        ec["steps"] = max(1, args.eos_steps // ec["record_every"]) * ec["record_every"]
    if args.lrs is not None:
        ec["lrs"] = list(args.lrs)
    if args.no_cnn or "spectrum" not in args.parts:
        cfg["cnn"] = None
    if "spectrum" not in args.parts:
        cfg["spectrum"] = None
    if "edge" not in args.parts:
        cfg["eos"] = None
    return cfg


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    exp = experiment.Experiment(NAME, args, config=resolve(args, p))
    cfg, key = exp.config, jax.random.key(args.seed)
    k_mlp, k_cnn, k_eos = jax.random.split(key, 3)
    mlp = cnn = eos = None
    with jax.numpy_dtype_promotion("standard"):
        if cfg["spectrum"] is not None:
            mlp = exp.stage("spectrum_mlp", {}, lambda: spectra(cfg, "mlp", k_mlp))
        if cfg["cnn"] is not None:
            cnn = exp.stage("spectrum_cnn", {}, lambda: spectra(cfg, "cnn", k_cnn))
        if cfg["eos"] is not None:
            eos = exp.stage("edge_of_stability", {}, lambda: edge_of_stability(cfg, k_eos))
    exp.figure(make_figure(cfg, mlp, cnn, eos), NAME)
    names = {"spectrum_mlp": mlp, "spectrum_cnn": cnn, "edge_of_stability": eos}
    out = {name: rec.results for name, rec in names.items() if rec is not None}
    exp.finish(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
