"""Spurious local minima of two-layer ReLU teacher-student networks: how often random inits end
in one, as the network grows and when the student is over-parameterized.

Claim reproduced (issue #7, teacher-student): Safran & Shamir (2018, "Spurious Local Minima are
Common in Two-Layer ReLU Neural Networks", ICML). For ``x ~ N(0, I_d)``, a teacher
``Σ_{i≤k} relu(v_i·x)`` with orthonormal ``v_i`` and a student ``Σ_{j≤n} relu(w_j·x)`` (second
layer fixed to ones) trained on the population squared loss, the loss has spurious (non-global)
local minima once k ≥ 6; the fraction of random initializations from which the optimizer ends in
one grows with k (from about 0 at k = 6 to a majority by k ≈ 12-20), and mild
over-parameterization (n = k + 1, k + 2) makes it much smaller.

Measured, per (k, n): ``num_seeds`` random inits (``toys.relu.teacher_student``, a fresh teacher
and student init per seed, d = k by default) trained on the closed-form population loss
(``toys.relu.teacher_student_loss``) by Adam with a cosine-decayed step, then polished by
(monotone) Newton steps (``optim.newton_step``, dense) — all seeds in one compiled program
(``vmap`` over seeds of ``lax.scan`` loops). Each end point is classified as *global* (loss <
``global_tol``), *spurious minimum* (loss > ``spurious_loss``, gradient norm < ``grad_tol`` and
the smallest eigenvalue of the dense Hessian (``hessian_matrix``) ≥ −``eig_tol``) or
*unresolved* (anything else: still moving, or near a saddle). Reported: the fraction of each,
the spurious fraction's binomial standard error ``√(p(1−p)/N)``, the distinct spurious loss
values, and the dense Hessian's eigenvalues at a few of them (at all of them with ``hessian_all``).

float64 throughout (``jax_enable_x64`` is switched on in ``main``): the Newton polish and the
Hessian check need it. Run ``python experiments/teacher_student.py`` (default, a few CPU
minutes) or with ``--quick`` (seconds; what the test suite runs); ``--ks 6 8 10 12 14 16 18 20
--seeds 1000`` scales it up (on a GPU). Results go to ``results.json`` in ``--out``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxscape import data_mesh, experiment, hessian_matrix, map_points
from jaxscape.optim import newton_step
from jaxscape.toys.relu import teacher_student, teacher_student_loss

NAME = "teacher_student"
QUICK = {
    "ks": [6, 9],  # n = k
    "overparam_ks": [9],  # also n = k + e for e in extra
    "extra": [2],
    "num_seeds": 48,
    "steps": 1000,
    "lr": 5e-2,
    "newton_steps": 0,  # Newton polish (dense Hessians: slow to compile)
    "hessian_all": False,  # smallest Hessian eigenvalue at every end point
    "global_tol": 1e-6,
    "spurious_loss": 1e-3,
    "grad_tol": 1e-6,
    "eig_tol": 1e-8,
    "num_hessian_checks": 3,
    "input_dim_extra": 0,  # d = k + this
}
FULL = {
    **QUICK,
    "ks": [6, 7, 8, 9, 10, 11, 12],
    "overparam_ks": [8, 10, 12],
    "extra": [1, 2],
    "num_seeds": 128,
    "steps": 1500,
    "newton_steps": 10,
    "hessian_all": True,
    "num_hessian_checks": 10,
}
# Safran & Shamir (2018), Table 1 (n = k): percent of 1000 inits ending at a spurious minimum,
# as we recall it — approximate, not re-checked against the paper in this session.
PAPER_RECALLED = {6: 0.3, 7: 5.5, 8: 12.6, 9: 21.8, 10: 33.5, 11: 45.4, 12: 55.0}


# --------------------------------------------------------------------------- training


def make_runner(cfg, k: int, n: int):
    """``run(keys) -> end-point statistics``: every seed's teacher, init, Adam, Newton and
    Hessian in one ``vmap``-ed, ``jit``-ed program, with the seeds split over all devices
    (``map_points``) when there are several."""
    d = k + cfg["input_dim_extra"]
    schedule = optax.cosine_decay_schedule(cfg["lr"], cfg["steps"], alpha=0.01)
    opt = optax.adam(schedule)
    value_and_grad = jax.value_and_grad(teacher_student_loss)

    def adam(W, V):
        def step(carry, _):
            W, state = carry
            loss, g = value_and_grad(W, V)
            updates, state = opt.update(g, state, W)
            return (optax.apply_updates(W, updates), state), loss

        (W, _), losses = jax.lax.scan(step, (W, opt.init(W)), None, length=cfg["steps"])
        return W, losses

    def newton(W, V):
        def step(W, _):  # monotone: a step that raises the loss is rejected
            new = W + newton_step(teacher_student_loss, W, V)
            ok = teacher_student_loss(new, V) <= teacher_student_loss(W, V)
            return jnp.where(ok, new, W), None

        return jax.lax.scan(step, W, None, length=cfg["newton_steps"])[0]

    def one(key):
        prob = teacher_student(key, input_dim=d, num_teacher=k, num_student=n, dtype=jnp.float64)
        W, losses = adam(prob.student, prob.teacher)
        adam_loss, adam_grad = value_and_grad(W, prob.teacher)
        if cfg["newton_steps"]:
            W = newton(W, prob.teacher)
        loss, g = value_and_grad(W, prob.teacher)
        if cfg["hessian_all"]:
            H = hessian_matrix(teacher_student_loss, W, prob.teacher)
            eig_min = jnp.linalg.eigvalsh(H)[0]
        else:  # only the few end points of ``hessian_check``
            eig_min = jnp.asarray(jnp.nan, W.dtype)
        return {
            "loss": loss,
            "grad_norm": jnp.linalg.norm(g),
            "eig_min": eig_min,
            "adam_loss": adam_loss,
            "adam_grad_norm": jnp.linalg.norm(adam_grad),
            "curve": losses[:: max(1, cfg["steps"] // 100)],
            "W": W,
            "V": prob.teacher,
        }

    mesh = data_mesh()  # with several devices (GPUs, hosts) the seeds are split over them
    if mesh.size == 1:
        return jax.jit(jax.vmap(one))
    return jax.jit(lambda keys: map_points(one, keys, mesh))


@jax.jit
def hessian_check(Ws, Vs):
    """Gradient norm and the dense Hessian's extreme eigenvalues (``hessian_matrix``, float64)
    at a stack of end points."""

    def one(W, V):
        eigs = jnp.linalg.eigvalsh(hessian_matrix(teacher_student_loss, W, V))
        g = jax.grad(teacher_student_loss)(W, V)
        return {"eig_min": eigs[0], "eig_max": eigs[-1], "grad_norm": jnp.linalg.norm(g)}

    return jax.vmap(one)(Ws, Vs)


def classify_ends(cfg, out) -> dict[str, np.ndarray]:
    glob = out["loss"] < cfg["global_tol"]
    spurious = (
        (out["loss"] > cfg["spurious_loss"])
        & (out["grad_norm"] < cfg["grad_tol"])
        & ~(out["eig_min"] < -cfg["eig_tol"])  # NaN: not computed (``hessian_all`` off)
    )
    return {"global": glob, "spurious": spurious, "unresolved": ~(glob | spurious)}


def config_stage(cfg, key, k: int, n: int):
    out = jax.tree.map(np.asarray, make_runner(cfg, k, n)(jax.random.split(key, cfg["num_seeds"])))
    kinds = classify_ends(cfg, out)
    N = cfg["num_seeds"]
    p = float(kinds["spurious"].mean())
    converged = int(kinds["global"].sum() + kinds["spurious"].sum())
    sp = kinds["spurious"]
    # the Hessian at a few spurious end points (all of them when ``hessian_all``)
    few = np.flatnonzero(sp)[: cfg["num_hessian_checks"]]
    checked = (
        jax.tree.map(np.asarray, hessian_check(out["W"][few], out["V"][few])) if few.size else None
    )
    results = {
        "k": k,
        "n": n,
        "d": k + cfg["input_dim_extra"],
        "num_seeds": N,
        "fraction": {name: float(m.mean()) for name, m in kinds.items()},
        "count": {name: int(m.sum()) for name, m in kinds.items()},
        "spurious_fraction": p,
        "spurious_stderr": math.sqrt(p * (1 - p) / N),
        "spurious_fraction_of_converged": (float(sp.sum() / converged) if converged else None),
        "spurious_losses": sorted({round(float(x), 6) for x in out["loss"][sp]}),
        "spurious_min_eig": (
            float(out["eig_min"][sp].min()) if sp.any() and cfg["hessian_all"] else None
        ),
        "spurious_max_grad_norm": float(out["grad_norm"][sp].max()) if sp.any() else None,
        "global_max_loss": (
            float(out["loss"][kinds["global"]].max()) if kinds["global"].any() else None
        ),
        "global_after_adam": float((out["adam_loss"] < cfg["global_tol"]).mean()),
        "checked_min_eig": [] if checked is None else checked["eig_min"].tolist(),
        "checked_max_eig": [] if checked is None else checked["eig_max"].tolist(),
        "checked_grad_norm": [] if checked is None else checked["grad_norm"].tolist(),
        "checked_all_minima": None if checked is None else bool(checked["eig_min"].min() > 0),
        "unresolved_grad_norm_median": (
            float(np.median(out["grad_norm"][kinds["unresolved"]]))
            if kinds["unresolved"].any()
            else None
        ),
    }
    arrays = {name: out[name] for name in ("loss", "grad_norm", "eig_min", "adam_loss", "curve")}
    return results, arrays


# --------------------------------------------------------------------------- figure


def make_figure(cfg, recs):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    ax = axes[0]
    by_extra = {}
    for r in recs:
        res = r.results
        by_extra.setdefault(res["n"] - res["k"], []).append(res)
    for e, rows in sorted(by_extra.items()):
        rows = sorted(rows, key=lambda x: x["k"])
        ax.errorbar(
            [x["k"] for x in rows],
            [100 * x["spurious_fraction"] for x in rows],
            yerr=[100 * x["spurious_stderr"] for x in rows],
            marker="os^"[min(e, 2)],
            capsize=3,
            label=f"n = k + {e}" if e else "n = k",
        )
    ks = [k for k in PAPER_RECALLED if k in cfg["ks"]]
    ax.plot(
        ks,
        [PAPER_RECALLED[k] for k in ks],
        "k:",
        marker="x",
        label="Safran & Shamir, n = k (recalled, approx.)",
    )
    ax.set(
        xlabel="teacher units k",
        ylabel="% of inits at a spurious minimum",
        title=f"spurious minima ({cfg['num_seeds']} inits each, ±1 s.e.)",
    )
    ax.legend(fontsize=8)

    ax = axes[1]
    for i, r in enumerate(recs):
        res = r.results
        if res["n"] != res["k"]:
            continue
        loss = np.maximum(r.arrays["loss"], 1e-18)
        ax.scatter(
            np.full(loss.size, res["k"]) + np.random.default_rng(i).uniform(-0.2, 0.2, loss.size),
            loss,
            s=6,
            alpha=0.5,
            color="C0",
        )
    ax.axhline(cfg["global_tol"], color="gray", ls=":", lw=1)
    ax.set(
        yscale="log",
        xlabel="k = n",
        ylabel="final loss (floored at 1e-18)",
        title="end points: global (bottom) vs spurious (top)",
    )

    ax = axes[2]
    for r in recs:
        res = r.results
        if res["n"] != res["k"] or not any(r.results["count"].values()):
            continue
        eig = r.arrays["eig_min"]
        sp = (r.arrays["loss"] > cfg["spurious_loss"]) & (r.arrays["grad_norm"] < cfg["grad_tol"])
        if sp.any():
            ax.scatter(np.full(sp.sum(), res["k"]), eig[sp], s=10, color="C3")
    ax.axhline(0, color="gray", lw=0.5)
    ax.set(
        xlabel="k = n",
        ylabel="smallest Hessian eigenvalue",
        title="Hessian at the spurious end points (> 0: minima)",
    )
    return fig


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    p = experiment.parser(NAME, __doc__)
    p.add_argument("--ks", type=experiment.positive(minimum=1), nargs="+", help="k = n sizes")
    p.add_argument(
        "--overparam-ks",
        type=experiment.positive(minimum=1),
        nargs="*",
        help="k values also run with n = k + extra",
    )
    p.add_argument(
        "--extra",
        type=experiment.positive(minimum=1),
        nargs="+",
        help="over-parameterization n - k",
    )
    p.add_argument(
        "--seeds",
        dest="num_seeds",
        type=experiment.positive(minimum=1),
        help="random inits per (k, n)",
    )
    p.add_argument("--steps", type=experiment.positive(minimum=1), help="Adam steps")
    p.add_argument(
        "--newton-steps", type=experiment.positive(minimum=0), help="Newton polish steps"
    )
    p.add_argument(
        "--input-dim-extra",
        type=experiment.positive(minimum=0),
        help="input dimension d = k + this",
    )
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # Newton polish and Hessians in float64
    cfg = experiment.settings(
        args,
        QUICK,
        FULL,
        (
            "ks",
            "overparam_ks",
            "extra",
            "num_seeds",
            "steps",
            "newton_steps",
            "input_dim_extra",
        ),
    )
    exp = experiment.Experiment(NAME, args, config=cfg)
    cfg, key = exp.config, jax.random.key(args.seed)
    pairs = [(k, k) for k in cfg["ks"]] + [
        (k, k + e) for k in cfg["overparam_ks"] for e in cfg["extra"]
    ]
    recs = []
    with jax.numpy_dtype_promotion("standard"):
        for k, n in pairs:
            sub = jax.random.fold_in(jax.random.fold_in(key, k), n)
            recs.append(
                exp.stage(
                    f"k{k}_n{n}",
                    {"k": k, "n": n},
                    lambda k=k, n=n, sub=sub: config_stage(cfg, sub, k, n),
                )
            )
    exp.figure(make_figure(cfg, recs), NAME)
    table = {f"k{r.results['k']}_n{r.results['n']}": r.results for r in recs}
    exact = [r.results for r in recs if r.results["n"] == r.results["k"]]
    exact.sort(key=lambda x: x["k"])
    over = {}
    for r in recs:
        res = r.results
        if res["n"] > res["k"] and f"k{res['k']}_n{res['k']}" in table:
            base = table[f"k{res['k']}_n{res['k']}"]["spurious_fraction"]
            over[f"k{res['k']}_n{res['n']}"] = {"n_eq_k": base, "over": res["spurious_fraction"]}
    exp.finish(
        {
            "configs": table,
            "spurious_vs_k": {str(x["k"]): x["spurious_fraction"] for x in exact},
            "overparameterized_vs_exact": over,
            "paper_recalled_percent": PAPER_RECALLED,
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
