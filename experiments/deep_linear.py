"""Deep linear networks: saddles at the origin, depth-long plateaus, Saxe's closed form, and the
residual reparameterization that removes the plateau.

Claims reproduced (issue #7, item 2):

1. **Hessian at the origin** (Kawaguchi 2016, "Deep learning without poor local minima"; Baldi &
   Hornik 1989 for depth 2). For the scalar chain ``L(w) = (1 - w₁w₂⋯w_K)²``
   (``jaxscape.toys.deep_linear_chain``, no ½: its Hessian at 0 is ``[[0, -2], [-2, 0]]`` for
   K = 2) the origin is a strict saddle (eigenvalues ±2) at depth 2 and a saddle with an exactly
   zero Hessian from depth 3 on, invisible to second-order tests. Measured: the dense float64
   Hessian (``hessian_matrix``) per depth K = 1…10, checked against the closed form
   ``deep_linear_chain_hessian``, and ``critical.classify``'s verdict (with its higher-order
   probe). The same for a matrix deep linear regression net (``deep_linear_loss``): at depth 2
   the eigenvalues are ±s_α (singular values of Σ_yx), each ``hidden_dim`` times; zero from 3 on.
2. **Plateaus grow with depth** (Saxe, McClelland & Ganguli 2014; Kawaguchi 2016). Full-batch
   gradient descent at a fixed learning rate from the small balanced init ``w_k = a₀``:
   measured the number of steps until ``L < threshold`` per depth, against the gradient-flow
   time of the balanced chain ``da/dt = 2a^{K-1}(1 - a^K)`` (integrated numerically, divided by
   the learning rate), and the growth factor per extra layer.
3. **Two-layer learning curves** (Saxe, McClelland & Ganguli 2014, "Exact solutions to the
   nonlinear dynamics of learning in deep linear neural networks"). A two-layer matrix net on
   whitened data with a teacher of singular values s, trained by gradient descent from the
   balanced aligned small init ``saxe_init``: measured mode strengths ``u_α = U_αᵀ W₂W₁ V_α``
   and the loss against ``saxe_learning_curve`` (t = learning rate × steps), the max deviation,
   and the measured half-times against ``saxe_half_time``.
4. **Residual reparameterization** (Hardt & Ma 2017, "Identity matters in deep learning").
   ``models.DeepLinear`` of the same depth, width and init scale, plain ``W_H⋯W_1`` vs residual
   ``(I + W_H)⋯(I + W_1)``, fit to a target ``A = I + 0.5·G/√d`` by full-batch gradient descent:
   measured steps until the loss is below ``threshold ×`` the loss of the zero map, for both.

Run ``python experiments/deep_linear.py`` (default, a couple of minutes on a laptop CPU) or with
``--quick`` (seconds; what the test suite runs). Results go to ``results.json`` in ``--out``.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxscape import experiment, hessian_matrix, models
from jaxscape.critical import classify
from jaxscape.toys import linear
from jaxscape.train import fit

NAME = "deep_linear"
QUICK = {
    "hessian_depths": [2, 3],
    "matrix_depths": [2],
    "probe": False,  # classify's higher-order probe at degenerate points (seconds per depth)
    "chain_depths": [1, 2, 3, 4, 5],
    "chain_init": 0.4,
    "chain_lr": 0.05,
    "chain_steps": 200,
    "threshold": 1e-2,
    "saxe_singular_values": [3.0, 2.0, 1.0, 0.5],
    "saxe_dims": [8, 6, 6],  # input, output, hidden
    "saxe_examples": 64,
    "saxe_u0": 1e-3,
    "saxe_lr": 0.01,
    "saxe_steps": 1000,
    "saxe_record_every": 20,
    "residual_depths": [3],
    "residual_width": 4,
    "residual_init_scale": 0.5,
    "residual_lr": 0.1,
    "residual_steps": 500,
    "residual_record_every": 10,
}
FULL = {
    **QUICK,
    "hessian_depths": list(range(1, 11)),
    "matrix_depths": [2, 3, 4],
    "probe": True,
    "chain_depths": list(range(1, 11)),
    "chain_steps": 4000,
    "saxe_steps": 2000,
    "saxe_record_every": 5,
    "residual_depths": [2, 4, 6],
    "residual_steps": 10000,
}


def _sgd(lr: float):
    return optax.sgd(lr)


def _first_below(steps, values, level):
    """First recorded step with ``values < level`` (``None`` if never)."""
    hit = np.flatnonzero(np.asarray(values) < level)
    return None if hit.size == 0 else int(np.asarray(steps)[hit[0]])


# --------------------------------------------------------------------------- 1. Hessian


def hessian_at_origin(cfg, key):
    results, arrays = {"chain": {}, "matrix": {}}, {}
    for k in cfg["hessian_depths"]:
        w = jnp.zeros(k, jnp.float64)
        H = np.asarray(hessian_matrix(linear.deep_linear_chain, w, None))
        closed = np.asarray(linear.deep_linear_chain_hessian(w))
        probe_key = jax.random.fold_in(key, k) if cfg["probe"] else None
        point = classify(linear.deep_linear_chain, w, None, key=probe_key)
        lam = np.linalg.eigvalsh(H)
        arrays[f"chain_eigs_{k}"] = lam
        results["chain"][str(k)] = {
            "eigenvalues": lam,
            "max_abs_diff_closed_form": float(np.max(np.abs(H - closed))),
            "num_zero": int(np.sum(lam == 0.0)),
            "grad_norm": point.grad_norm,
            "kind": point.kind,
            "hessian_kind": point.hessian_kind,
        }
    d_in, d_out, h = 3, 3, 3
    s = jnp.asarray([3.0, 2.0, 1.0])
    for k in cfg["matrix_depths"]:
        prob = linear.deep_linear_regression(
            jax.random.fold_in(key, 100 + k),
            input_dim=d_in,
            output_dim=d_out,
            hidden_dim=h,
            num_layers=k,
            num_examples=32,
            singular_values=s,
            dtype=jnp.float64,
        )
        zero = tuple(jnp.zeros_like(w) for w in prob.params)
        H = np.asarray(hessian_matrix(linear.deep_linear_loss, zero, prob.batch))
        lam = np.linalg.eigvalsh(H)
        point = classify(linear.deep_linear_loss, zero, prob.batch)  # second-order test only
        sv = np.linalg.svd(np.asarray(linear.input_output_correlation(prob.batch)))[1]
        expected = np.sort(np.concatenate([-sv, sv]).repeat(h)) if k == 2 else np.zeros(lam.size)
        pad = lam.size - expected.size  # depth 2: the rest of the eigenvalues are zero
        expected = np.sort(np.concatenate([expected, np.zeros(pad)]))
        arrays[f"matrix_eigs_{k}"] = lam
        results["matrix"][str(k)] = {
            "num_params": int(lam.size),
            "eigenvalues": lam,
            "max_abs_diff_expected": float(np.max(np.abs(lam - expected))),
            "num_zero": int(np.sum(np.abs(lam) <= 1e-12)),
            "hessian_kind": point.hessian_kind,
            "kind": point.kind,
        }
    results["matrix_setting"] = {"dims": [d_in, d_out, h], "singular_values": s}
    return results, arrays


# --------------------------------------------------------------------------- 2. plateaus


def flow_time(depth: int, a0: float, threshold: float) -> float:
    """Gradient-flow time for the balanced chain ``w_k = a`` (``da/dt = 2a^{K-1}(1 - a^K)``)
    to reach ``L = (1 - a^K)² < threshold`` from ``a₀`` (trapezoid rule in ``a``)."""
    a_end = (1 - math.sqrt(threshold)) ** (1 / depth)
    if a0 >= a_end:
        return 0.0
    a = np.linspace(a0, a_end, 200_001)
    f = 1 / (2 * a ** (depth - 1) * (1 - a**depth))
    return float(np.sum((f[1:] + f[:-1]) * np.diff(a)) / 2)


def chain_plateaus(cfg, key):
    del key  # the balanced init is deterministic
    lr, thr, a0, n = cfg["chain_lr"], cfg["threshold"], cfg["chain_init"], cfg["chain_steps"]
    losses, steps_to, predicted = [], [], []
    opt = _sgd(lr)
    for k in cfg["chain_depths"]:
        w0 = jnp.full(k, a0, jnp.float64)
        run = fit(
            jax.random.key(0),
            linear.deep_linear_chain,
            w0,
            opt,
            None,
            num_steps=n,
            record_every=1,
            record_params=False,
            progress=False,
            steps_per_chunk=n,
        )
        losses.append(np.asarray(run.history.loss))
        steps_to.append(_first_below(run.history.step, run.history.loss, thr))
        predicted.append(flow_time(k, a0, thr) / lr)
    deep = [(k, s) for k, s in zip(cfg["chain_depths"], steps_to, strict=True) if k >= 3 and s]
    growth = None
    if len(deep) >= 2:
        ks, ss = np.asarray(deep, dtype=float).T
        growth = float(np.exp(np.polyfit(ks, np.log(ss), 1)[0]))
    results = {
        "depths": cfg["chain_depths"],
        "steps_to_threshold": steps_to,
        "gradient_flow_steps": predicted,
        "growth_factor_per_layer": growth,
        "monotone": all(
            a is not None and b is not None and b > a for a, b in itertools.pairwise(steps_to)
        ),
        "initial_loss": [float(x[0]) for x in losses],
    }
    return results, {"loss": np.stack(losses)}


# --------------------------------------------------------------------------- 3. Saxe


def saxe_curves(cfg, key):
    d_in, d_out, h = cfg["saxe_dims"]
    prob = linear.deep_linear_regression(
        key,
        input_dim=d_in,
        output_dim=d_out,
        hidden_dim=h,
        num_layers=2,
        num_examples=cfg["saxe_examples"],
        singular_values=cfg["saxe_singular_values"],
        dtype=jnp.float64,
    )
    corr = linear.input_output_correlation(prob.batch)
    U, s, Vt = jnp.linalg.svd(corr, full_matrices=False)
    r = len(cfg["saxe_singular_values"])
    U, s, Vt = U[:, :r], s[:r], Vt[:r]
    u0, lr = cfg["saxe_u0"], cfg["saxe_lr"]
    params = linear.saxe_init(corr, hidden_dim=h, u0=u0)

    def modes(p, state, step):
        return jnp.diagonal(U.T @ linear.deep_linear_product(p) @ Vt.T)

    run = fit(
        jax.random.key(0),
        linear.deep_linear_loss,
        params,
        _sgd(lr),
        prob.batch,
        num_steps=cfg["saxe_steps"],
        record_every=cfg["saxe_record_every"],
        callbacks={"modes": modes},
        record_params=False,
        progress=False,
        steps_per_chunk=cfg["saxe_steps"],
    )
    t = lr * np.asarray(run.history.step, dtype=float)
    measured = np.asarray(run.history.metrics["modes"])
    closed = linear.saxe_learning_curve(s, u0, t)
    u_closed, loss_closed = np.asarray(closed.mode_strengths), np.asarray(closed.loss)
    loss = np.asarray(run.history.loss)  # noiseless full-rank data: min loss 0
    s_np = np.asarray(s)
    half_closed = np.asarray(linear.saxe_half_time(s, u0))
    half_measured = [
        float(np.interp(sa / 2, measured[:, a], t)) for a, sa in enumerate(s_np)
    ]  # u rises monotonically from u0 to s
    results = {
        "singular_values": s_np,
        "u0": u0,
        "learning_rate": lr,
        "max_mode_deviation": float(np.max(np.abs(measured - u_closed))),
        "max_mode_deviation_rel": float(np.max(np.abs(measured - u_closed)) / s_np.max()),
        "max_loss_deviation_rel": float(np.max(np.abs(loss - loss_closed)) / loss_closed[0]),
        "half_time_closed": half_closed,
        "half_time_measured": half_measured,
        "final_mode_strengths": measured[-1],
    }
    arrays = {
        "t": t,
        "measured": measured,
        "closed": u_closed,
        "loss": loss,
        "loss_closed": loss_closed,
    }
    return results, arrays


# --------------------------------------------------------------------------- 4. residual


def residual_vs_plain(cfg, key):
    d, lr, thr = cfg["residual_width"], cfg["residual_lr"], cfg["threshold"]
    kx, ka, kp = jax.random.split(key, 3)
    x = linear.deep_linear_regression(
        kx,
        input_dim=d,
        output_dim=d,
        hidden_dim=d,
        num_layers=1,
        num_examples=64,
        dtype=jnp.float64,
    ).batch[0]  # whitened Gaussian inputs
    A = jnp.eye(d) + 0.5 * jax.random.normal(ka, (d, d), jnp.float64) / math.sqrt(d)
    batch = (x, x @ A)  # row vectors: the net computes x ↦ x M, target M = A
    base = float(jnp.mean(batch[1] ** 2))  # loss of the zero map
    results = {
        "target_det": float(jnp.linalg.det(A)),
        "target_dist_from_identity": float(jnp.linalg.norm(A - jnp.eye(d), 2)),
        "depths": cfg["residual_depths"],
    }
    arrays = {}
    for k in cfg["residual_depths"]:
        for residual in (False, True):
            net = models.DeepLinear(
                (d,) * k,
                residual=residual,
                init_scale=cfg["residual_init_scale"],
                dtype=jnp.float64,
            )
            params, _ = models.init_model(kp, net, x)
            run = fit(
                jax.random.key(0),
                models.model_loss(net, "mse"),
                params,
                _sgd(lr),
                batch,
                num_steps=cfg["residual_steps"],
                record_every=cfg["residual_record_every"],
                record_params=False,
                progress=False,
                on_nonfinite="stop",
                steps_per_chunk=cfg["residual_steps"],
            )
            rel = np.asarray(run.history.loss) / base
            name = "residual" if residual else "plain"
            results.setdefault(name, {})[str(k)] = {
                "steps_to_threshold": _first_below(run.history.step, rel, thr),
                "initial_rel_loss": float(rel[0]),
                "final_rel_loss": float(rel[-1]),
                "finite": bool(run.finite),
            }
            arrays[f"{name}_{k}"] = rel
            arrays["step"] = np.asarray(run.history.step)
    return results, arrays


# --------------------------------------------------------------------------- figure


def make_figure(cfg, hess, chain, saxe, resid):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    ax = axes[0, 0]
    ks = cfg["hessian_depths"]
    for k in ks:
        lam = hess.arrays[f"chain_eigs_{k}"]
        ax.scatter(
            np.full(lam.size, k), lam, s=18, color="C0", label="chain" if k == ks[0] else None
        )
    for k in cfg["matrix_depths"]:
        lam = hess.arrays[f"matrix_eigs_{k}"]
        ax.scatter(
            np.full(lam.size, k + 0.2),
            lam,
            s=12,
            marker="x",
            color="C3",
            label="matrix net (s = 3, 2, 1)" if k == cfg["matrix_depths"][0] else None,
        )
    ax.axhline(0, color="gray", lw=0.5)
    ax.set(
        xlabel="depth K", ylabel="Hessian eigenvalue at the origin", title="Hessian at the origin"
    )
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    chain_r = hess.results["chain"]
    frac = [chain_r[str(k)]["num_zero"] / k for k in ks]
    ax.bar(ks, frac, color="C0")
    for k, f in zip(ks, frac, strict=True):
        kind = chain_r[str(k)]["kind"]
        ax.text(k, f + 0.02, kind, ha="center", va="bottom", rotation=90, fontsize=7)
    ax.set(
        xlabel="depth K",
        ylabel="fraction of zero eigenvalues",
        ylim=(0, 1.6),
        title="chain: zero eigenvalues; classify's verdict",
    )

    ax = axes[0, 2]
    loss = chain.arrays["loss"]
    for i, k in enumerate(cfg["chain_depths"]):
        ax.loglog(
            np.arange(1, loss.shape[1] + 1),
            loss[i],
            label=f"K={k}",
            color=plt.cm.viridis(i / max(1, len(cfg["chain_depths"]) - 1)),
        )
    ax.axhline(cfg["threshold"], color="gray", ls=":", lw=1)
    ax.set(
        xlabel="GD step + 1",
        ylabel="loss",
        ylim=(1e-6, 2),
        title=f"chain, w₀ = {cfg['chain_init']}, lr = {cfg['chain_lr']}",
    )
    ax.legend(fontsize=7, ncol=2)

    ax = axes[1, 0]
    steps = chain.results["steps_to_threshold"]
    ax.semilogy(
        cfg["chain_depths"],
        [np.nan if s is None else s for s in steps],
        "o-",
        label="measured (GD)",
    )
    ax.semilogy(
        cfg["chain_depths"], chain.results["gradient_flow_steps"], "k--", label="gradient flow / lr"
    )
    ax.set(
        xlabel="depth K",
        ylabel=f"steps to loss < {cfg['threshold']}",
        title="plateau length vs depth",
    )
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    t = saxe.arrays["t"]
    for a, sa in enumerate(saxe.results["singular_values"]):
        ax.plot(t, saxe.arrays["closed"][:, a], "k-", lw=1, label="closed form" if a == 0 else None)
        ax.plot(
            t[:: max(1, len(t) // 40)],
            saxe.arrays["measured"][:: max(1, len(t) // 40), a],
            "o",
            ms=3,
            color=f"C{a}",
            label=f"GD, s = {sa:g}",
        )
    ax.set(
        xlabel="t = lr × steps",
        ylabel="mode strength u_α",
        title="two-layer net vs Saxe et al. 2014",
    )
    ax.legend(fontsize=7)

    ax = axes[1, 2]
    step = resid.arrays["step"]
    for i, k in enumerate(cfg["residual_depths"]):
        ax.semilogy(step, resid.arrays[f"plain_{k}"], color=f"C{i}", label=f"plain, depth {k}")
        ax.semilogy(
            step,
            resid.arrays[f"residual_{k}"],
            color=f"C{i}",
            ls="--",
            label=f"residual, depth {k}",
        )
    ax.axhline(cfg["threshold"], color="gray", ls=":", lw=1)
    ax.set_xscale("symlog", linthresh=10)
    ax.set(
        xlabel="GD step",
        ylabel="loss / loss of zero map",
        xlim=(0, step[-1]),
        ylim=(1e-8, 10),
        title="plain W vs residual I + W (Hardt & Ma)",
    )
    ax.legend(fontsize=7)
    return fig


def main(argv=None) -> int:
    args = experiment.parser(NAME, __doc__).parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # exact float64 Hessians
    exp = experiment.Experiment(NAME, args, config=QUICK if args.quick else FULL)
    cfg, key = exp.config, jax.random.key(args.seed)
    keys = jax.random.split(key, 4)
    with jax.numpy_dtype_promotion("standard"):
        hess = exp.stage("hessian", {}, lambda: hessian_at_origin(cfg, keys[0]))
        chain = exp.stage("plateaus", {}, lambda: chain_plateaus(cfg, keys[1]))
        saxe = exp.stage("saxe", {}, lambda: saxe_curves(cfg, keys[2]))
        resid = exp.stage("residual", {}, lambda: residual_vs_plain(cfg, keys[3]))
    exp.figure(make_figure(cfg, hess, chain, saxe, resid), NAME)
    exp.finish(
        {
            "hessian": hess.results,
            "plateaus": chain.results,
            "saxe": saxe.results,
            "residual": resid.results,
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
