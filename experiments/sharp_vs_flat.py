"""Large-batch training finds sharper minima that generalize worse (Keskar et al. 2017).

Claim reproduced (issue #7): Nitish Shirish Keskar, Dheevatsa Mudigere, Jorge Nocedal, Mikhail
Smelyanskiy & Ping Tak Peter Tang (2017), "On large-batch training for deep learning:
generalization gap and sharp minima", ICLR. Trained to similar training loss, large-batch (LB)
solutions are *sharper* than small-batch (SB) ones — larger ε-sharpness (their Table 3, ε = 1e-3
and 5e-4), larger Hessian curvature — and *generalize worse* (a larger test–train gap); on the
line from the SB solution (α = 0) to the LB solution (α = 1) the loss rises more steeply
around the LB end (their Fig. 3, α ∈ [-1, 2]).

Setting: ``jaxscape.builtin_problem(key, "mlp", "digits")`` (a tanh MLP 64-W-…-W-10 on
scikit-learn's digits, one 80/20 stratified split for all seeds); per seed a new initialization
(shared by SB and LB) and minibatch order. Both are trained with Adam at the same learning rate
(as Keskar et al.), SB with ``small_batch`` examples per step and LB with ``large_batch``, each
**to the same training loss**: the first epoch (recorded every ``record_epochs``) at which the
full-train loss is below ``target_loss`` (within ``max_epochs_small`` / ``max_epochs_large``; a
run that does not get there keeps its last record and is flagged). Measured per solution, mean ±
std over seeds:

- train and test loss and accuracy, the generalization gap (test − train loss; train − test
  accuracy), epochs and steps used, weight norm;
- ε-sharpness (``sharpness``, ε = 1e-3 and 5e-4, full space, on the train set);
- the top Hessian eigenvalue λ_max of the train loss (``eigsh`` on ``hessian_operator``) and the
  Hessian trace (``estimate_trace``, Hutch++);
- the train/test loss and accuracy along ``(1 - α) θ_SB + α θ_LB``, α ∈ [-1, 2]
  (``interpolate``), and the loss rise one unit of ``‖θ_LB − θ_SB‖ / 4`` outside either end.

Float32 by default (the script does not enable float64; the tests run it in float64).
Run ``python experiments/sharp_vs_flat.py`` (a few CPU minutes) or with ``--quick`` (seconds;
what the test suite runs); ``--seeds``, ``--width``, ``--depth``, ``--small-batch``,
``--large-batch``, ``--learning-rate``, ``--target-loss`` change the setting. Results go to
``results.json`` in ``--out``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxscape import (
    builtin_problem,
    eigsh,
    estimate_trace,
    experiment,
    fit,
    hessian_operator,
    interpolate,
)

NAME = "sharp_vs_flat"
RUNS = ("small", "large")
QUICK = {
    "seeds": 2,
    "width": 16,
    "depth": 1,
    "small_batch": 32,
    "large_batch": 719,  # half the training set
    "learning_rate": 3e-3,
    "target_loss": 0.1,
    "max_epochs_small": 20,
    "max_epochs_large": 200,
    "record_epochs": 1,
    "sharpness_epsilons": [1e-3, 5e-4],
    "sharpness_steps": 10,
    "eigsh_iters": 20,
    "trace_matvecs": 30,
    "alphas": 31,  # on [-1, 2]: 3m + 1 points put α = 0 and 1 on the grid
    "fast_compile": True,
}
FULL = {
    **QUICK,
    "seeds": 3,
    "width": 32,
    "depth": 2,
    "learning_rate": 1e-3,
    "target_loss": 0.01,
    "max_epochs_small": 200,
    "max_epochs_large": 3000,
    "sharpness_steps": 20,
    "eigsh_iters": 40,
    "trace_matvecs": 90,
    "alphas": 61,
    "fast_compile": False,
}


def make_analysis(cfg, loss_fn, apply_fn):
    """Jitted measurements, compiled once and reused for every seed and solution."""
    acc = experiment.accuracy(apply_fn)
    alphas = np.linspace(-1.0, 2.0, cfg["alphas"])
    ends = np.flatnonzero(np.isclose(alphas, 0.0) | np.isclose(alphas, 1.0))
    if len(ends) != 2:
        raise ValueError(f"alphas = {cfg['alphas']} must be 3m + 1 (α = 0 and 1 on the grid)")
    jit = experiment.jit(cfg["fast_compile"])

    @jit
    def point(key, params, train, test):
        k_sharp, k_eig, k_trace = jax.random.split(key, 3)
        sharp = experiment.sharpness_curve(
            k_sharp, loss_fn, params, train, cfg["sharpness_epsilons"], cfg["sharpness_steps"]
        )
        hess = hessian_operator(loss_fn, params, train)
        top = eigsh(k_eig, hess, params, k=1, num_iters=cfg["eigsh_iters"])
        trace = estimate_trace(k_trace, hess, params, num_matvecs=cfg["trace_matvecs"])
        train_loss, test_loss = loss_fn(params, train), loss_fn(params, test)
        train_acc, test_acc = acc(params, train), acc(params, test)
        return {
            "train_loss": train_loss,
            "test_loss": test_loss,
            "train_accuracy": train_acc,
            "test_accuracy": test_acc,
            "loss_gap": test_loss - train_loss,
            "accuracy_gap": train_acc - test_acc,
            "sharpness": sharp,
            "lambda_max": top.eigenvalues[-1],
            "lambda_max_residual": top.residuals[-1],
            "trace": trace.value,
            "trace_stderr": trace.stderr,
            "weight_norm": optax.tree.norm(params),
        }

    @jit
    def line(params_small, params_large, train, test):
        tr = interpolate(loss_fn, params_small, params_large, train, alphas, metrics={"acc": acc})
        te = interpolate(loss_fn, params_small, params_large, test, alphas, metrics={"acc": acc})
        return {
            "train_loss": tr.loss,
            "test_loss": te.loss,
            "train_accuracy": tr.metrics["acc"],
            "test_accuracy": te.metrics["acc"],
        }

    return alphas, ends, point, line


def _stop_at(cfg, run, steps_per_epoch):
    """Index of the first record whose full-train loss is below the target (else the last)."""
    loss = np.asarray(run.history.metrics["train_loss"])
    hit = np.flatnonzero(loss < cfg["target_loss"])
    i = int(hit[0]) if hit.size else len(loss) - 1
    step = int(run.history.step[i])
    return i, {
        "reached_target": bool(hit.size),
        "steps": step,
        "epochs": step / steps_per_epoch,
        "train_loss_at_stop": float(loss[i]),
    }


# --------------------------------------------------------------------------- stage


def train_and_measure(cfg, key):
    base = builtin_problem(key, "mlp", "digits", width=cfg["width"], depth=cfg["depth"])
    loss_fn, apply_fn, train, test = base.loss_fn, base.apply_fn, base.train, base.test
    n = int(train.y.shape[0])
    for b in ("small_batch", "large_batch"):
        if cfg[b] > n:
            raise ValueError(f"--{b.replace('_', '-')} {cfg[b]} exceeds the {n} train examples")
    alphas, ends, point, line = make_analysis(cfg, loss_fn, apply_fn)
    opt = optax.adam(cfg["learning_rate"])
    callbacks = {"train_loss": lambda params, state, step: loss_fn(params, train)}
    per_run = {r: {"points": [], "stop": [], "curve": []} for r in RUNS}
    lines = []
    for s in range(cfg["seeds"]):
        k_init, k_fit, k_meas = jax.random.split(jax.random.fold_in(key, s), 3)
        params0 = builtin_problem(
            k_init, "mlp", "digits", width=cfg["width"], depth=cfg["depth"]
        ).params  # a new initialization; the data split stays the base one
        sol = {}
        for r in RUNS:
            batch = cfg[f"{r}_batch"]
            steps_per_epoch = n // batch
            every = steps_per_epoch * cfg["record_epochs"]
            run = fit(
                k_fit,
                loss_fn,
                params0,
                opt,
                train,
                num_steps=steps_per_epoch * cfg[f"max_epochs_{r}"],
                batch_size=batch,
                record_every=every,
                steps_per_chunk=steps_per_epoch * cfg[f"max_epochs_{r}"],
                callbacks=callbacks,
                progress=False,
            )
            i, stop = _stop_at(cfg, run, steps_per_epoch)
            sol[r] = jax.tree.map(lambda x, i=i: x[i], run.history.params)
            curve = np.full(cfg["max_epochs_large"] // cfg["record_epochs"] + 1, np.nan)
            recorded = np.asarray(run.history.metrics["train_loss"])
            curve[: len(recorded)] = recorded
            m = point(jax.random.fold_in(k_meas, RUNS.index(r)), sol[r], train, test)
            per_run[r]["points"].append(jax.tree.map(np.asarray, m))
            per_run[r]["stop"].append(stop)
            per_run[r]["curve"].append(curve)
        lines.append(jax.tree.map(np.asarray, line(sol["small"], sol["large"], train, test)))
        lines[-1]["distance"] = np.asarray(
            optax.tree.norm(jax.tree.map(jnp.subtract, sol["large"], sol["small"]))
        )
    return summarize(cfg, per_run, lines, alphas, ends, base)


def _stats(values):
    v = np.asarray(values, dtype=float)
    return {"mean": v.mean(0), "std": v.std(0), "per_seed": v}


def summarize(cfg, per_run, lines, alphas, ends, base):
    results, arrays = {"runs": {}}, {"alphas": alphas}
    for r in RUNS:
        pts, stops = per_run[r]["points"], per_run[r]["stop"]
        out = {f: _stats([p[f] for p in pts]) for f in pts[0]}
        for f in ("steps", "epochs", "train_loss_at_stop"):
            out[f] = _stats([st[f] for st in stops])
        out["reached_target"] = [st["reached_target"] for st in stops]
        results["runs"][r] = out
        arrays[f"curve_{r}"] = np.stack(per_run[r]["curve"])
    for f in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        arrays[f"line_{f}"] = np.stack([ln[f] for ln in lines])
    # loss rise a quarter of the SB–LB distance outside each end (Keskar Fig. 3: steeper at LB)
    i0, i1 = ends
    q = max(1, (i1 - i0) // 4)
    tr = arrays["line_train_loss"]
    rise_small = tr[:, i0 - q] - tr[:, i0]
    rise_large = tr[:, i1 + q] - tr[:, i1]
    results["line"] = {
        "distance": _stats([ln["distance"] for ln in lines]),
        "alpha_offset": float(alphas[i0] - alphas[i0 - q]),
        "rise_outside_small": _stats(rise_small),
        "rise_outside_large": _stats(rise_large),
        "max_train_loss_between": _stats(tr[:, i0 : i1 + 1].max(1)),
        "train_loss_at_ends": _stats(tr[:, [i0, i1]]),
    }
    small, large = results["runs"]["small"], results["runs"]["large"]
    ratio = {
        f: _stats(np.asarray(large[f]["per_seed"]) / np.asarray(small[f]["per_seed"]))
        for f in ("sharpness", "lambda_max", "trace")
    }
    results["large_over_small"] = ratio
    results["data"] = {
        "num_train": int(base.train.y.shape[0]),
        "num_test": int(base.test.y.shape[0]),
    }
    results["num_params"] = int(sum(x.size for x in jax.tree.leaves(base.params)))
    return results, arrays


# --------------------------------------------------------------------------- figure


def make_figure(cfg, rec):
    import matplotlib.pyplot as plt

    res, arr = rec.results, rec.arrays
    lab = {"small": f"SB ({cfg['small_batch']})", "large": f"LB ({cfg['large_batch']})"}
    fig, axes = plt.subplots(2, 3, figsize=(14, 8))

    ax = axes[0, 0]
    for i, r in enumerate(RUNS):
        c = arr[f"curve_{r}"]
        ep = np.arange(c.shape[1]) * cfg["record_epochs"]
        for j, row in enumerate(c):
            ax.loglog(ep[1:], row[1:], color=f"C{i}", alpha=0.6, label=lab[r] if j == 0 else None)
        stops = res["runs"][r]["epochs"]["per_seed"]
        ax.plot(stops, [cfg["target_loss"]] * len(stops), "o", color=f"C{i}")
    ax.axhline(cfg["target_loss"], color="gray", ls=":", lw=1)
    ax.set(xlabel="epoch", ylabel="full train loss", title="training to the same train loss")
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    al = arr["alphas"]
    for f, ls in (("train_loss", "-"), ("test_loss", "--")):
        v = arr[f"line_{f}"]
        m, s = v.mean(0), v.std(0)
        ax.semilogy(al, m, "k", ls=ls, label=f.replace("_", " "))
        ax.fill_between(al, m - s, m + s, color="gray", alpha=0.25)
    ax2 = ax.twinx()
    for f, ls in (("train_accuracy", "-"), ("test_accuracy", "--")):
        ax2.plot(al, arr[f"line_{f}"].mean(0), color="C3", ls=ls, label=f.replace("_", " "))
    ax2.set_ylabel("accuracy (red)", color="C3")
    for x, r in ((0, "small"), (1, "large")):
        ax.axvline(x, color=f"C{RUNS.index(r)}", lw=1)
    ax.set(xlabel="α  (0 = SB solution, 1 = LB solution)", ylabel="loss (black)")
    ax.set_title("θ = (1-α) θ_SB + α θ_LB (Keskar Fig. 3)", fontsize=9)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax2.legend(handles=handles, fontsize=7, loc="center left", framealpha=0.9)

    x = np.arange(2)
    ax = axes[0, 2]
    w = 0.38
    for j, eps in enumerate(cfg["sharpness_epsilons"]):
        m = [res["runs"][r]["sharpness"]["mean"][j] for r in RUNS]
        s = [res["runs"][r]["sharpness"]["std"][j] for r in RUNS]
        ax.bar(x + (j - 0.5) * w, m, w, yerr=s, label=f"ε = {eps:g}")
    ax.set_xticks(x, [lab[r] for r in RUNS])
    ax.set(ylabel="ε-sharpness (train)", title="Keskar ε-sharpness")
    ax.legend(fontsize=8)

    ax = axes[1, 0]
    for j, (f, name) in enumerate((("lambda_max", "λ_max"), ("trace", "trace / 10"))):
        scale = 0.1 if f == "trace" else 1.0
        m = [scale * res["runs"][r][f]["mean"] for r in RUNS]
        s = [scale * res["runs"][r][f]["std"] for r in RUNS]
        ax.bar(x + (j - 0.5) * w, m, w, yerr=s, label=name)
    ax.set_xticks(x, [lab[r] for r in RUNS])
    ax.set(ylabel="Hessian of the train loss", title="top eigenvalue (Lanczos), trace (Hutch++)")
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    for j, f in enumerate(("train_accuracy", "test_accuracy")):
        m = [100 * res["runs"][r][f]["mean"] for r in RUNS]
        s = [100 * res["runs"][r][f]["std"] for r in RUNS]
        ax.bar(x + (j - 0.5) * w, m, w, yerr=s, label=f.replace("_", " "))
    lo = min(100 * res["runs"][r]["test_accuracy"]["mean"] for r in RUNS)
    ax.set_ylim(max(0, lo - 5), 100.5)
    ax.set_xticks(x, [lab[r] for r in RUNS])
    ax.set(ylabel="accuracy (%)", title="train and test accuracy")
    ax.legend(fontsize=8, loc="lower right")

    ax = axes[1, 2]
    for i, r in enumerate(RUNS):
        sh = np.asarray(res["runs"][r]["sharpness"]["per_seed"])[:, 0]
        gap = res["runs"][r]["loss_gap"]["per_seed"]
        ax.plot(sh, gap, "o", color=f"C{i}", label=lab[r])
    ax.set(
        xlabel=f"ε-sharpness (ε = {cfg['sharpness_epsilons'][0]:g})",
        ylabel="test − train loss",
        title="sharpness vs generalization gap (per seed)",
    )
    ax.legend(fontsize=8)
    return fig


def main(argv=None) -> int:
    p = experiment.parser(NAME, __doc__)
    p.add_argument("--seeds", type=experiment.positive(int), help="initializations (default 3)")
    p.add_argument("--width", type=experiment.positive(int), help="hidden width (default 32)")
    p.add_argument("--depth", type=experiment.positive(int), help="hidden layers (default 2)")
    p.add_argument(
        "--small-batch", type=experiment.positive(int), help="SB batch size (default 32)"
    )
    p.add_argument(
        "--large-batch", type=experiment.positive(int), help="LB batch size (default 719)"
    )
    p.add_argument("--learning-rate", type=experiment.positive(float), help="Adam's (default 1e-3)")
    p.add_argument("--target-loss", type=experiment.positive(float), help="train loss to stop at")
    p.add_argument("--max-epochs-small", type=experiment.positive(int), help="SB epoch budget")
    p.add_argument("--max-epochs-large", type=experiment.positive(int), help="LB epoch budget")
    args = p.parse_args(argv)
    cfg = experiment.settings(
        args,
        QUICK,
        FULL,
        (
            "seeds",
            "width",
            "depth",
            "small_batch",
            "large_batch",
            "learning_rate",
            "target_loss",
            "max_epochs_small",
            "max_epochs_large",
        ),
    )
    if cfg["small_batch"] >= cfg["large_batch"]:
        p.error(f"--small-batch {cfg['small_batch']} must be below --large-batch")
    exp = experiment.Experiment(NAME, args, config=cfg)
    cfg, key = exp.config, jax.random.key(args.seed)
    with jax.numpy_dtype_promotion("standard"):
        rec = exp.stage("train", {}, lambda: train_and_measure(cfg, key))
    exp.figure(make_figure(cfg, rec), NAME)
    exp.finish(rec.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
