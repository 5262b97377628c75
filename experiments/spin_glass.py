"""Spherical 3-spin glass vs neural nets: minima concentrate in a band above the ground state,
the spread of their energies (and of nets' test losses) shrinks with size, and the index of
critical points grows with the energy.

Claims reproduced (issue #7, spin-glass item):

1. **Minima concentrate in a band** (Auffinger, Ben Arous & Černý 2013, "Random matrices and
   complexity of spin glasses", CPAM; Choromanska, Henaff, Mathieu, Ben Arous & LeCun 2015,
   "The loss surfaces of multilayer networks", AISTATS, Fig. 2 left). On the spherical p = 3
   spin glass (``jaxscape.toys.spin_glass``), Riemannian gradient descent from random starts
   ends at local minima whose energies per spin lie in a narrow band above the ground state
   ``-E₀ ≈ -1.657`` and, as N → ∞, approach the threshold ``-E_∞ = -2√((p-1)/p) ≈ -1.633``;
   the spread of those energies shrinks as N grows. Measured per N: the energies per spin
   (``p_spin_energy``) of the GD end points (``vmap`` over starts, several coupling tensors),
   their mean, standard deviation, minimum, the residual Riemannian gradient, and the index of
   the end points (``sphere_hessian_matrix``). The normalization is checked three ways: ``N ×
   Var E`` at random spins (1 for ``Var H = N``), the p = 2 ground state by GD against the
   exact ``λ_min((J + Jᵀ)/2)/√N`` and its limit ``-√2``, and the second moment of ``N ×`` the
   Riemannian Hessian's eigenvalues at random spins (``p(p - 1)``: the semicircle of radius
   ``2√(p(p-1))`` whose left edge reaches 0 exactly at ``E = -E_∞``).
2. **The same for neural nets** (Choromanska et al. 2015, Fig. 2 right / Fig. 3). One-hidden-
   layer tanh MLPs of growing width on scikit-learn's digits (``builtin_problem(key, "mlp",
   "digits", width=..., depth=1)``: one data split), trained by minibatch SGD with momentum
   from many random initializations (``vmap`` over seeds): measured the final test loss per
   seed; its standard deviation across seeds should shrink as the width grows.
3. **Index grows with energy** (Auffinger, Ben Arous & Černý 2013; Choromanska et al. 2015,
   Sec. 4; Dauphin et al. 2014). At small N, critical points of all kinds are found by
   Levenberg–Marquardt on ``½‖∇F‖²`` (``find_critical_points``) for the scale-invariant pullback
   ``F(x) = E(√N x/‖x‖)``, from random spins partly descended by GD (so the starts span the
   energies); their index is the number of negative eigenvalues of the Riemannian Hessian on
   the tangent space. Measured: energy and index of every distinct critical point, the mean
   energy per index k = 0, 1, 2, ..., and the index fraction against the semicircle
   prediction ``F_sc(pE / 2√(p(p-1)))`` (``F_sc`` the semicircle CDF on [-1, 1]).

Precision: GD on the spin glass and the MLPs in float32; the critical-point search and every
Hessian / index in float64 (``jax_enable_x64`` is switched on at ``main()`` start). Random keys
are JAX's ``"rbg"`` keys (threefry's programs take about a second each to compile on a CPU).

Run ``python experiments/spin_glass.py`` (default, a few CPU minutes) or with ``--quick``
(seconds; what the test suite runs); ``--sizes 100 200 250 --starts 512`` etc. scale it up
(``p_spin_glass`` refuses N³ > 2²⁴ couplings, N > 255).
Results go to ``results.json`` in ``--out``.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxscape import builtin_problem, classify, data, experiment, find_critical_points, models
from jaxscape.toys import spin_glass as sg

NAME = "spin_glass"
P = 3
GROUND_STATE = 1.657  # -E₀, p = 3 (Crisanti & Sommers 1992; Auffinger, Ben Arous & Černý 2013)
THRESHOLD = 2 * math.sqrt((P - 1) / P)  # -E_∞ ≈ -1.633
TW1_MEAN, TW1_STD = -1.2065, 1.2680  # Tracy-Widom β = 1 (largest GOE eigenvalue)

QUICK = {
    "sizes": [16, 32],
    "instances": 1,
    "starts": 32,
    "gd_steps": 300,
    "gd_lr": 0.15,
    "gd_dtype": "float64",  # quick: one dtype, so the stages share compiled programs
    "hessian_max_size": 16,
    "p2_size": 60,
    "widths": [4, 32],
    "seeds": 8,
    "mlp_steps": 300,
    "batch_size": 64,
    "mlp_lr": 0.05,
    "crit_size": 16,
    "crit_starts": 32,
    "crit_descent": [0, 1, 2, 4, 8, 30],
    "newton_steps": 60,
}
FULL = {
    **QUICK,
    "sizes": [25, 50, 100, 150],
    "instances": 2,
    "starts": 48,
    "gd_steps": 500,
    "gd_dtype": "float32",
    "hessian_max_size": 100,
    "p2_size": 150,
    "widths": [4, 8, 16, 32, 64, 128],
    "seeds": 24,
    "mlp_steps": 1500,
    "crit_size": 40,
    "crit_starts": 96,
    "crit_descent": [0, 1, 2, 3, 4, 6, 8, 12, 20, 40, 100, 300],
    "newton_steps": 100,
}


# --------------------------------------------------------------------------- 1. spin glass


@jax.jit
def descend(couplings, starts, lr, num_steps):
    """Riemannian GD on ``H = N E`` with step ``lr`` (projection retraction), ``vmap`` over
    ``starts`` (S, N); ``num_steps`` (S,) per start, traced (one compilation for all counts).
    Returns end points, their energies per spin, ``‖∇_S H‖/√N`` and the starts' energies."""
    n = starts.shape[1]

    def one(s0, k):
        def step(t, s):
            g = sg.sphere_gradient(sg.p_spin_energy, s, couplings)
            return jnp.where(t < k, sg.project_to_sphere(s - lr * n * g), s)

        s = jax.lax.fori_loop(0, jnp.max(num_steps), step, s0)
        g = sg.sphere_gradient(sg.p_spin_energy, s, couplings)
        e0 = sg.p_spin_energy(s0, couplings)
        return s, sg.p_spin_energy(s, couplings), jnp.linalg.norm(n * g) / math.sqrt(n), e0

    return jax.vmap(one)(starts, jnp.broadcast_to(num_steps, starts.shape[:1]))


@jax.jit
def tangent_spectra(couplings, spins):
    """``N ×`` the N - 1 tangent eigenvalues of the Riemannian Hessian of E, per row of spins
    (the normal direction, mapped to 0, is removed by an orthonormal tangent basis)."""
    n = spins.shape[1]

    def one(s):
        H = sg.sphere_hessian_matrix(sg.p_spin_energy, s, couplings)
        u = _tangent_basis(s)
        return n * jnp.linalg.eigvalsh(u.T @ H @ u)

    return jax.vmap(one)(spins)


def _tangent_basis(s):
    """An orthonormal basis (N, N - 1) of the tangent space ``{v : v·s = 0}``."""
    n = s.shape[0]
    q = jnp.linalg.qr(jnp.concatenate([s[:, None], jnp.eye(n, dtype=s.dtype)[:, : n - 1]], 1))[0]
    return q[:, 1:]


@partial(jax.jit, static_argnames=("n", "p", "num", "dtype"))
def sample(key, *, n, p, num, dtype):
    """Couplings ``J`` (``p_spin_glass``) and ``num`` uniformly random spins (``random_spins``)."""
    kj, ks = jax.random.split(key)
    J = sg.p_spin_glass(kj, num_spins=n, p=p, dtype=dtype)
    starts = jax.vmap(lambda k: sg.random_spins(k, num_spins=n, dtype=dtype))(
        jax.random.split(ks, num)
    )
    return J, starts


def spin_minima(cfg, key):
    """GD minima per N (see the module docstring); at the largest N with Hessians, also the
    Hessian spectrum at the random starts (the normalization check of claim 1)."""
    results, arrays = {"sizes": cfg["sizes"], "per_size": {}}, {}
    dtype = jnp.dtype(cfg["gd_dtype"])
    hess_sizes = [n for n in cfg["sizes"] if n <= cfg["hessian_max_size"]]
    for n in cfg["sizes"]:
        energies, grads, start_e, lam_min, index0 = [], [], [], [], []
        for i in range(cfg["instances"]):
            k = jax.random.fold_in(jax.random.fold_in(key, n), i)
            J, starts = sample(k, n=n, p=P, num=cfg["starts"], dtype=dtype)
            steps = jnp.full(cfg["starts"], cfg["gd_steps"], jnp.int32)  # same types as below
            s, e, g, e0 = descend(J, starts, cfg["gd_lr"], steps)
            energies.append(np.asarray(e))
            grads.append(np.asarray(g))
            start_e.append(np.asarray(e0))
            if n in hess_sizes:
                J64 = J.astype(jnp.float64)
                lam = np.asarray(tangent_spectra(J64, s.astype(jnp.float64)))
                lam_min.append(lam[:, 0])
                index0.append(np.sum(lam < -1e-3, axis=1) == 0)
                if n == hess_sizes[-1] and i == 0:  # W = N·Hess + pE at random spins
                    w = np.asarray(tangent_spectra(J64, starts.astype(jnp.float64)))
                    w = w + P * np.asarray(e0, np.float64)[:, None]
                    arrays["random_hessian_eigs"] = w.ravel()
                    results["random_hessian"] = {
                        "size": n,
                        "second_moment": float(np.mean(w**2)),
                        "second_moment_expected": P * (P - 1),
                    }
        e, g, e0 = (np.concatenate(x) for x in (energies, grads, start_e))
        arrays[f"energies_{n}"] = e
        rec = {
            "num_minima": int(e.size),
            "mean": float(e.mean()),
            "std": float(e.std(ddof=1)),
            "iqr": float(np.subtract(*np.percentile(e, [75, 25]))),
            "min": float(e.min()),
            "max": float(e.max()),
            "within_instance_std": float(np.mean([np.std(x, ddof=1) for x in energies])),
            "grad_norm_median": float(np.median(g)),
            "grad_norm_max": float(g.max()),
            "start_energy_var_times_n": float(n * np.var(e0)),
        }
        if lam_min:
            rec["hessian_min_eig_median"] = float(np.median(np.concatenate(lam_min)))
            rec["fraction_index0"] = float(np.mean(np.concatenate(index0)))
        results["per_size"][str(n)] = rec
    ns = np.asarray(cfg["sizes"], float)
    stds = np.asarray([results["per_size"][str(n)]["std"] for n in cfg["sizes"]])
    results["std_slope_loglog"] = float(np.polyfit(np.log(ns), np.log(stds), 1)[0])
    results["ground_state"] = -GROUND_STATE
    results["threshold"] = -THRESHOLD
    return results, arrays


@partial(jax.jit, static_argnames="n")
def p2_run(key, *, n):
    """p = 2: the library's energy at ``√N v_min`` (v_min the bottom eigenvector of
    ``(J + Jᵀ)/2``), which is the ground state on the sphere, and ``λ_min/√N``."""
    J = sg.p_spin_glass(key, num_spins=n, p=2, dtype=jnp.float64)
    lam, vecs = jnp.linalg.eigh((J + J.T) / 2)
    return sg.p_spin_energy(math.sqrt(n) * vecs[:, 0], J), lam[0] / math.sqrt(n)


def normalization_checks(cfg, key):
    """p = 2 ground state from the library's energy vs the closed form (module docstring)."""
    n = cfg["p2_size"]
    energy, exact = (float(v) for v in p2_run(key, n=n))
    results = {
        "p2_size": n,
        "p2_energy_at_bottom_eigenvector": energy,
        "p2_exact_ground_state": exact,
        "p2_limit": -math.sqrt(2),
        # GOE edge with off-diagonal variance 1/2: λ_min/√N ≈ -√2 - TW₁ N^{-2/3}/√2
        "p2_tracy_widom_mean": -math.sqrt(2) - TW1_MEAN * n ** (-2 / 3) / math.sqrt(2),
        "p2_tracy_widom_std": TW1_STD * n ** (-2 / 3) / math.sqrt(2),
    }
    return results, {}


# --------------------------------------------------------------------------- 2. MLPs


def mlp_losses(cfg, key):
    """Final test loss of depth-1 tanh MLPs per width, ``vmap`` over initializations."""
    kprob, kinit, kbatch = jax.random.split(key, 3)
    results, arrays = {"widths": cfg["widths"], "per_width": {}}, {}
    opt = optax.sgd(cfg["mlp_lr"], momentum=0.9)
    # one data split for every width (builtin_problem's split depends only on kprob)
    prob = builtin_problem(kprob, "mlp", "digits", width=cfg["widths"][0], depth=1,
                           dtype=jnp.float32)  # fmt: skip
    train, test = prob.train, prob.test
    normals, order = _draws(
        kinit, kbatch, cfg["seeds"], train.x.shape[1], max(cfg["widths"]), len(train.y),
        cfg["mlp_steps"], cfg["batch_size"],
    )  # fmt: skip
    shapes = jax.eval_shape(lambda: lecun_inits(normals, cfg["widths"][0]))
    if jax.tree.structure(shapes) != _stacked(prob.params):
        raise RuntimeError(f"{NAME}: init tree differs from builtin_problem's MLP params")
    for w in cfg["widths"]:
        net = models.MLP((w, 10), dtype=jnp.float32)
        num_params, test_loss, acc, train_loss = jax.device_get(
            _mlp_run(net, opt, normals, train, test, order)
        )
        arrays[f"test_loss_{w}"] = test_loss
        results["per_width"][str(w)] = {
            "num_params": int(num_params),
            "test_loss_mean": float(test_loss.mean()),
            "test_loss_std": float(test_loss.std(ddof=1)),
            "test_loss_min": float(test_loss.min()),
            "test_loss_max": float(test_loss.max()),
            "train_loss_mean": float(train_loss.mean()),
            "test_accuracy_mean": float(acc.mean()),
        }
    stds = [results["per_width"][str(w)]["test_loss_std"] for w in cfg["widths"]]
    results["std_slope_loglog"] = float(
        np.polyfit(np.log(np.asarray(cfg["widths"], float)), np.log(stds), 1)[0]
    )
    results["setting"] = prob.description.split(";")[0].replace(f"-{cfg['widths'][0]}-", "-WIDTH-")
    return results, arrays


@partial(jax.jit, static_argnums=range(2, 8))
def _draws(kinit, kbatch, seeds, d_in, width, num_examples, num_steps, batch_size):
    """Standard normals for ``lecun_inits`` (the widest net; narrower ones use the first
    units) and the ``(num_steps, batch_size)`` example indices, ``data.epoch_indices`` epoch
    after epoch: one program for all the randomness."""
    k1, k2 = jax.random.split(kinit)
    normals = (
        jax.random.normal(k1, (seeds, d_in, width), jnp.float32),
        jax.random.normal(k2, (seeds, width, 10), jnp.float32),
    )
    per_epoch = num_examples // batch_size
    epochs = jnp.arange(-(-num_steps // per_epoch))
    order = jax.vmap(
        lambda e: data.epoch_indices(kbatch, e, num_examples=num_examples, batch_size=batch_size)
    )(epochs)
    return normals, order.reshape(-1, batch_size)[:num_steps]


def lecun_inits(normals, width):
    """Stacked params of ``models.MLP((width, 10))``: kernels ``N(0, 1/fan_in)`` (LeCun normal,
    untruncated; Flax's default truncates at 2σ), zero biases. Width w uses the first w
    hidden units of the same draws, so one random-number program serves every width (the
    vmapped Flax ``init`` compiles for seconds per width)."""
    w1, w2 = normals[0][:, :, :width], normals[1][:, :width, :]
    zeros = lambda *shape: jnp.zeros(shape, jnp.float32)  # noqa: E731
    return {
        "Dense_0": {"kernel": w1 / math.sqrt(w1.shape[1]), "bias": zeros(len(w1), width)},
        "Dense_1": {"kernel": w2 / math.sqrt(width), "bias": zeros(len(w1), 10)},
    }


def _stacked(params):
    return jax.tree.structure(jax.tree.map(lambda x: x[None], params))


@partial(jax.jit, static_argnums=(0, 1))
def _mlp_run(net, opt, normals, train, test, order):
    """Initialize (``lecun_inits``), train (``train_seeds``) and evaluate: one program."""
    inits = lecun_inits(normals, net.features[0])
    final = train_seeds(models.model_loss(net, "cross_entropy"), opt, inits, train, order)
    loss_fn, acc_fn = models.model_loss(net, "cross_entropy"), models.accuracy(net)
    per = lambda f, d: jax.vmap(f, (0, None))(final, d)  # noqa: E731
    num_params = sum(x[0].size for x in jax.tree.leaves(inits))
    return num_params, per(loss_fn, test), per(acc_fn, test), per(loss_fn, train)


def train_seeds(loss_fn, opt, inits, train, order):
    """Minibatch training of a stack of initializations on the same batch sequence ``order``
    (``(num_steps, batch_size)`` indices), ``vmap`` over the leading axis (``jaxscape.fit``
    trains one initialization per call)."""

    def one(params):
        def step(carry, idx):
            params, state = carry
            grad = jax.grad(loss_fn)(params, jax.tree.map(lambda a: a[idx], train))
            updates, state = opt.update(grad, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), order)
        return params

    return jax.vmap(one)(inits)


# --------------------------------------------------------------------------- 3. index


def pullback_energy(x, couplings):
    """``F(x) = E(√N x/‖x‖)``: scale-invariant, so its critical points are rays through the
    critical points on the sphere and its Hessian there is the Riemannian one (plus a zero
    eigenvalue along x)."""
    return sg.p_spin_energy(sg.project_to_sphere(x), couplings)


def semicircle_index(energy, p=P):
    """Index fraction at energy per spin E: semicircle CDF of radius ``2√(p(p-1))`` at pE."""
    u = np.clip(p * np.asarray(energy) / (2 * math.sqrt(p * (p - 1))), -1, 1)
    return 0.5 + (u * np.sqrt(1 - u**2) + np.arcsin(u)) / np.pi


def critical_indices(cfg, key):
    n, s = cfg["crit_size"], cfg["crit_starts"]
    descent = np.asarray(cfg["crit_descent"])[np.arange(s) % len(cfg["crit_descent"])]
    J, starts = sample(key, n=n, p=P, num=s, dtype=jnp.dtype(cfg["gd_dtype"]))
    J, starts = J.astype(jnp.float64), starts.astype(jnp.float64)
    starts = descend(J, starts, 0.1, jnp.asarray(descent, jnp.int32))[0]
    found = find_critical_points(
        pullback_energy, starts, J, method="newton", num_steps=cfg["newton_steps"], classify=False
    )
    conv = np.asarray(found.converged)
    raw = np.asarray(found.params)  # F is scale-invariant: ‖raw‖ drifts a little from √N
    x = np.asarray(jax.vmap(sg.project_to_sphere)(found.params))
    e = np.asarray(found.loss)
    lam = np.asarray(tangent_spectra(J, jnp.asarray(x)))
    scale = np.max(np.abs(lam), axis=1, keepdims=True)
    index = np.sum(lam < -1e-8 * scale, axis=1)
    zero = np.sum(np.abs(lam) <= 1e-8 * scale, axis=1)
    keep = _distinct(x, e, conv & (zero == 0))
    e_k, idx_k = e[keep], index[keep]
    by_index = {}
    for k in np.unique(idx_k)[:8]:
        by_index[str(int(k))] = {
            "count": int(np.sum(idx_k == k)),
            "mean_energy": float(e_k[idx_k == k].mean()),
            "min_energy": float(e_k[idx_k == k].min()),
            "max_energy": float(e_k[idx_k == k].max()),
        }
    frac = idx_k / (n - 1)
    pred = semicircle_index(e_k)
    low = np.sort(np.unique(idx_k))[: min(4, len(np.unique(idx_k)))]
    means = [by_index[str(int(k))]["mean_energy"] for k in low]
    results = {
        "size": n,
        "num_starts": s,
        "num_converged": int(conv.sum()),
        "num_distinct": int(keep.sum()),
        "classify_check": _classify_check(J, raw, e, index, keep),
        "by_index": by_index,
        "spearman_energy_index": _spearman(e_k, idx_k),
        "low_index_means_increasing": bool(np.all(np.diff(means) > 0)),
        "minima_lowest": bool(
            np.sum(idx_k == 0) > 0 and e_k[idx_k == 0].min() <= e_k.min() + 1e-12
        ),
        "index_fraction_vs_semicircle_mae": float(np.mean(np.abs(frac - pred))),
        "energy_range": [float(e_k.min()), float(e_k.max())],
    }
    return results, {"energy": e_k, "index": idx_k, "index_fraction": frac}


def _classify_check(J, x, e, index, keep):
    """``classify`` on F at the lowest distinct critical point and the highest: its count of
    negative eigenvalues must equal the Riemannian index, and it sees the one zero (radial)."""
    rows = np.flatnonzero(keep)
    out = []
    for i in (rows[np.argmin(e[rows])], rows[np.argmax(e[rows])]):
        point = classify(pullback_energy, jnp.asarray(x[i]), J)
        out.append({"energy": float(e[i]), "index": int(index[i]), "kind": point.kind,
                    "num_negative": point.num_negative, "num_zero": point.num_zero})  # fmt: skip
    return out


def _distinct(x, e, ok, tol=1e-6):
    keep = np.zeros(len(e), bool)
    chosen = []
    for i in np.flatnonzero(ok):
        u = x[i] / np.linalg.norm(x[i])
        if all(u @ v < 1 - tol for v in chosen):
            chosen.append(u)
            keep[i] = True
    return keep


def _spearman(a, b):
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.asarray([np.mean(np.flatnonzero(np.sort(b) == v)) for v in b])
    return float(np.corrcoef(ra, rb)[0, 1])


# --------------------------------------------------------------------------- figure


def make_figure(cfg, minima, norm, mlp, crit):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(14, 8))
    ax = axes[0, 0]
    sizes = cfg["sizes"]
    for i, n in enumerate(sizes):
        e = minima.arrays[f"energies_{n}"]
        ax.hist(e, bins=25, density=True, histtype="step", lw=1.5, label=f"N = {n}",
                color=plt.cm.viridis(i / max(1, len(sizes) - 1)))  # fmt: skip
    ax.axvline(-GROUND_STATE, color="k", ls="--", lw=1, label="-E₀ (ground state)")
    ax.axvline(-THRESHOLD, color="r", ls=":", lw=1, label="-E_∞ (threshold)")
    ax.set(xlabel="energy per spin of the GD minimum", ylabel="density",
           title="p = 3 spin glass: minima from random starts")  # fmt: skip
    ax.legend(fontsize=7)

    ax = axes[0, 1]
    per = minima.results["per_size"]
    ax.errorbar(sizes, [per[str(n)]["mean"] for n in sizes], [per[str(n)]["std"] for n in sizes],
                fmt="o-", capsize=3, label="mean ± std")  # fmt: skip
    ax.plot(sizes, [per[str(n)]["min"] for n in sizes], "v", label="lowest found")
    ax.axhline(-GROUND_STATE, color="k", ls="--", lw=1)
    ax.axhline(-THRESHOLD, color="r", ls=":", lw=1)
    ax.set(xlabel="N", ylabel="energy per spin", title="band of minima vs N")
    ax.legend(fontsize=7)

    ax = axes[0, 2]
    lam = minima.arrays["random_hessian_eigs"]
    r = 2 * math.sqrt(P * (P - 1))
    ax.hist(lam, bins=30, density=True, alpha=0.6, label="N·Hess + pE at random σ")
    u = np.linspace(-r, r, 200)
    ax.plot(u, 2 * np.sqrt(r**2 - u**2) / (np.pi * r**2), "k-", label="semicircle, radius 2√6")
    ax.set(
        xlabel="eigenvalue",
        title=f"check: Hessian at random σ, N = {minima.results['random_hessian']['size']}",
    )
    ax.legend(fontsize=7)

    ax = axes[1, 0]
    widths = cfg["widths"]
    if mlp is None:
        ax.text(0.5, 0.5, "MLPs skipped (--skip-mlp)", ha="center", transform=ax.transAxes)
    else:
        data_ = [mlp.arrays[f"test_loss_{w}"] for w in widths]
        ax.boxplot(data_, positions=range(len(widths)))
        ax.set_xticks(range(len(widths)), [str(w) for w in widths])
    ax.set(xlabel="hidden width", ylabel="final test loss (cross-entropy)",
           title=f"digits MLPs, {cfg['seeds']} inits per width")  # fmt: skip

    ax = axes[1, 1]
    if mlp is not None:
        pw = mlp.results["per_width"]
        ax.loglog(widths, [pw[str(w)]["test_loss_std"] for w in widths], "o-",
                  label="MLP test loss")  # fmt: skip
    ax.loglog(sizes, [per[str(n)]["std"] for n in sizes], "s-", label="spin glass energy (N)")
    ax.set(xlabel="width / N", ylabel="std across starts", title="spread shrinks with size")
    ax.legend(fontsize=7)

    ax = axes[1, 2]
    e, idx = crit.arrays["energy"], crit.arrays["index_fraction"]
    ax.scatter(e, idx, s=12, label="critical points (LM on ‖∇F‖²)")
    grid = np.linspace(min(e.min(), -GROUND_STATE), max(e.max(), 0.1), 200)
    ax.plot(grid, semicircle_index(grid), "k-", lw=1, label="semicircle prediction")
    ax.axvline(-THRESHOLD, color="r", ls=":", lw=1)
    ax.set(xlabel="energy per spin", ylabel="index / (N - 1)",
           title=f"index vs energy, N = {crit.results['size']}")  # fmt: skip
    ax.legend(fontsize=7)
    return fig


# --------------------------------------------------------------------------- main


FLAGS = {  # flag -> (config key, type, nargs)
    "--sizes": ("sizes", experiment.positive(int), "+"),
    "--instances": ("instances", experiment.positive(int), None),
    "--starts": ("starts", experiment.positive(int), None),
    "--gd-steps": ("gd_steps", experiment.positive(int), None),
    "--gd-lr": ("gd_lr", experiment.positive(float), None),
    "--widths": ("widths", experiment.positive(int), "+"),
    "--seeds": ("seeds", experiment.positive(int), None),
    "--mlp-steps": ("mlp_steps", experiment.positive(int), None),
    "--crit-size": ("crit_size", experiment.positive(int), None),
    "--crit-starts": ("crit_starts", experiment.positive(int), None),
}


def main(argv=None) -> int:
    p = experiment.parser(NAME, __doc__)
    for flag, (dest, kind, nargs) in FLAGS.items():
        p.add_argument(flag, dest=dest, type=kind, nargs=nargs, help=f"override config {dest}")
    p.add_argument("--skip-mlp", action="store_true", help="skip part 2 (the digits MLPs)")
    args = p.parse_args(argv)
    for dest in ("sizes", "crit_size"):
        values = getattr(args, dest)
        if values is not None and min(np.atleast_1d(values)) < 3:
            p.error(f"--{dest.replace('_', '-')}: the spin glass needs N >= 3")
    jax.config.update("jax_enable_x64", True)  # exact float64 Hessians
    cfg = experiment.settings(args, QUICK, FULL, [d for d, *_ in FLAGS.values()])
    exp = experiment.Experiment(NAME, args, config=cfg)
    # "rbg" keys: the threefry random-number programs take ~1 s each to compile on a CPU
    cfg, key = exp.config, jax.random.key(args.seed, impl="rbg")
    keys = jax.random.split(key, 4)
    with jax.numpy_dtype_promotion("standard"):
        norm = exp.stage("normalization", {}, lambda: normalization_checks(cfg, keys[0]))
        minima = exp.stage("minima", {}, lambda: spin_minima(cfg, keys[1]))
        mlp = None if args.skip_mlp else exp.stage("mlp", {}, lambda: mlp_losses(cfg, keys[2]))
        crit = exp.stage("index", {}, lambda: critical_indices(cfg, keys[3]))
    exp.figure(make_figure(cfg, minima, norm, mlp, crit), NAME)
    exp.finish(
        {
            "normalization": norm.results,
            "minima": minima.results,
            "mlp": None if mlp is None else mlp.results,
            "index": crit.results,
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
