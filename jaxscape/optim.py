"""Second-order and noisy optimizers for studying saddles and flat regions.

Two layers, as elsewhere in jaxscape: eager step functions that return the update ``Δ`` to
*add* to params (``newton_step``, ``saddle_free_newton_step``), and Optax transformations built
on them or on noise (``newton``, ``saddle_free_newton``, ``perturbed_gd``, ``sgld``,
``entropy_sgd``) that plug into ``jaxscape.fit`` or a plain Optax loop. Transformations return
final updates (learning rate and sign included, like ``optax.sgd``). Those that need the loss
are ``optax.GradientTransformationExtraArgs`` and read ``value_fn`` (``fit`` passes it).

Random transformations close over their key and draw step ``t``'s noise from
``fold_in(key, t)``: a run is a pure function of the key (same key, same bits), and the
optimizer state holds only integers, so ``fit`` can checkpoint it.

The second-order transformations compile their step once per ``value_fn`` object: inside
``fit`` or a ``jax.jit``-ed training step that is once; an eager Python loop that builds a new
``value_fn`` lambda every step recompiles every step, so jit the step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax
from jax.flatten_util import ravel_pytree
from optax import tree_utils as otu

from jaxscape import _checks, _krylov
from jaxscape._util import eigh_each
from jaxscape.curvature import (
    LossFn,
    PyTree,
    _validate,
    count_params,
    hessian_matrix,
    hessian_operator,
    taylor_step,
)
from jaxscape.spectrum import _flatten, eigsh

METHODS = ("dense", "krylov")
LearningRate = float | Callable[[jax.Array], jax.Array]


# --------------------------------------------------------------------------- step functions


def newton_step(
    loss_fn: LossFn,
    params: PyTree,
    batch: Any,
    *,
    damping: float = 0.0,
    method: str = "dense",
    num_iters: int = 20,
    max_params: int = 5000,
    rcond: float | None = None,
) -> PyTree:
    """The damped Newton update ``Δ = -(H + δI)⁻¹ g`` (to add to params).

    With ``H = Σ λ_i q_i q_iᵀ``: ``Δ = -Σ_i f(λ_i) q_i (q_iᵀ g)``, ``f(λ) = 1/(λ + δ)``, as a
    pseudo-inverse: components with ``|λ + δ| <= rcond · max|λ|`` get ``f = 0``. On a
    non-degenerate quadratic one undamped step lands on the critical point, whatever its kind:
    Newton's method is *attracted* by saddles (Dauphin et al. 2014).

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: the point, any pytree of float arrays.
      batch: any pytree, passed to ``loss_fn``.
      damping: ``δ >= 0``, added to every eigenvalue.
      method: ``"dense"``: ``eigh`` of ``hessian_matrix`` (exact, ``n³``). ``"krylov"``:
        Lanczos subspace of dimension ``num_iters`` started from ``g``, Ritz pairs
        ``(θ_i, y_i)`` in place of ``(λ_i, q_i)``; exact once the subspace holds ``g``'s
        Krylov space (``num_iters >= n``), one Hessian-vector product per iteration.
      num_iters: Krylov subspace dimension (``min(num_iters, n)`` is used).
      max_params: refuse ``method="dense"`` above this many parameters.
      rcond: relative cutoff of the pseudo-inverse; default ``n · eps`` of the params' dtype.

    Returns:
      ``Δ``, shaped like ``params``. Zero when ``g = 0``.

    Example:
      >>> quadratic_saddle = lambda p, _: -p[0] ** 2 + 3 * p[1] ** 2
      >>> newton_step(quadratic_saddle, jnp.array([0.3, 0.2]), None)  # onto the saddle: Δ = -p
      Array([-0.3       , -0.20000002], dtype=float32)
    """
    fn = "newton_step"
    damping = _check_nonnegative(fn, "damping", damping)
    return _second_order_step(
        fn, loss_fn, params, batch, False, damping, method, num_iters, max_params, rcond
    )


def saddle_free_newton_step(
    loss_fn: LossFn,
    params: PyTree,
    batch: Any,
    *,
    damping: float = 0.0,
    method: str = "dense",
    num_iters: int = 20,
    key: jax.Array | None = None,
    complement_learning_rate: float | None = None,
    max_params: int = 5000,
    rcond: float | None = None,
) -> PyTree:
    """The saddle-free Newton update ``Δ = -(|H| + δI)⁻¹ g`` (Dauphin et al. 2014, Alg. 1).

    ``|H| = Σ |λ_i| q_i q_iᵀ``, i.e. ``f(λ) = 1/(|λ| + δ)``: along positive curvature it is a
    Newton step, along negative curvature it moves *away* from the saddle as far as Newton
    would have moved towards it ("Identifying and attacking the saddle point problem in
    high-dimensional non-convex optimization", NeurIPS 2014). Pseudo-inverse as in
    ``newton_step``.

    ``method="krylov"`` starts Lanczos from ``g``. With ``key`` it starts from a random vector
    instead (as Dauphin et al. do, to see curvature ``g`` does not excite); the part of ``g``
    outside the subspace ``V`` then gets a plain gradient step ``-c (g - V Vᵀ g)``.

    Args:
      loss_fn, params, batch, damping, method, num_iters, max_params, rcond: as for
        ``newton_step``.
      key: PRNG key for a random Krylov start vector (``method="krylov"`` only).
      complement_learning_rate: ``c``; default ``1 / max|θ|`` over the Ritz values.

    Returns:
      ``Δ``, shaped like ``params``.

    Example:
      >>> quadratic_saddle = lambda p, _: -p[0] ** 2 + 3 * p[1] ** 2
      >>> saddle_free_newton_step(quadratic_saddle, jnp.array([0.3, 0.2]), None)  # x away
      Array([ 0.3       , -0.20000002], dtype=float32)
    """
    fn = "saddle_free_newton_step"
    damping = _check_nonnegative(fn, "damping", damping)
    if key is not None:
        _checks.check_key(fn, key)
        if method != "krylov":
            raise ValueError(f"{fn}: `key` is used only with method='krylov', got {method!r}.")
    if complement_learning_rate is not None:
        _check_positive(fn, "complement_learning_rate", complement_learning_rate)
    return _second_order_step(
        fn, loss_fn, params, batch, True, damping, method, num_iters, max_params, rcond,
        key=key, complement_learning_rate=complement_learning_rate,
    )  # fmt: skip


def _second_order_step(fn, loss_fn, params, batch, absolute, damping, method, num_iters,
                       max_params, rcond, key=None, complement_learning_rate=None):  # fmt: skip
    """Validate, then ``-f(H) g`` compiled once per ``loss_fn`` (``_step_impl``)."""
    _validate(fn, loss_fn, params, batch)
    _checks.check_choice(fn, "method", method, METHODS)
    num_iters = _checks.check_positive_int(fn, "num_iters", num_iters)
    n = count_params(params)
    dtype = ravel_pytree(params)[0].dtype
    if method == "dense":
        _checks.check_dense_size(fn, n, max_params, dtype, "Use method='krylov'")
    rcond = n * float(jnp.finfo(dtype).eps) if rcond is None else rcond
    rcond = _check_nonnegative(fn, "rcond", rcond)
    step, g, finite = _step_impl(
        loss_fn, params, batch, damping, rcond, key, complement_learning_rate,
        absolute=absolute, method=method, num_iters=min(num_iters, n),
    )  # fmt: skip
    _checks.raise_if_nonfinite(fn, g, "the gradient")
    if _checks.is_concrete(finite) and not bool(finite):
        raise FloatingPointError(f"{fn}: the Hessian (or a Hessian-vector product) is not finite.")
    return step


@partial(jax.jit, static_argnames=("loss_fn", "absolute", "method", "num_iters"))
def _step_impl(loss_fn, params, batch, damping, rcond, key, c, *, absolute, method, num_iters):
    """``(Δ, g, finite)``: ``Δ = -Σ f(θ_i) y_i y_iᵀ g`` over the eigenpairs of ``H`` (dense) or
    the Ritz pairs of a Lanczos subspace, ``f(θ) = 1/(θ + δ)`` or ``1/(|θ| + δ)``."""
    g = jax.grad(loss_fn)(params, batch)
    g_flat, unravel = ravel_pytree(g)
    damping = jnp.asarray(damping, g_flat.dtype)
    denominator = lambda t: (jnp.abs(t) if absolute else t) + damping  # noqa: E731
    if method == "dense":
        H = hessian_matrix(loss_fn, params, batch, max_params=g_flat.size)
        lam, Q = eigh_each(H)  # vmapped over seeds in map_points: see eigh_each
        step = _spectral_apply(lam, Q, jnp.ones_like(lam, bool), g_flat, denominator, rcond)
        return unravel(step), g, jnp.all(jnp.isfinite(H))
    matvec = hessian_operator(loss_fn, params, batch)
    flat_mv = _flatten("_step_impl", matvec, params)[0]
    if key is None:  # g = 0: any start vector; the result is Y (f Yᵀ 0) = 0
        v0 = jnp.where(jnp.linalg.norm(g_flat) > 0, g_flat, jnp.ones_like(g_flat))
        state = _krylov.lanczos(flat_mv, v0, num_iters)
    else:
        key_start, key_restart = jax.random.split(key)
        v0 = jax.random.normal(key_start, g_flat.shape, g_flat.dtype)
        state = _krylov.lanczos(flat_mv, v0, num_iters, key=key_restart)
    T, bound = _krylov.tridiagonal(state.alphas, state.betas, state.step)
    theta, U = eigh_each(T)
    valid = theta <= bound  # values above `bound` belong to unfilled rows
    V = state.basis[:num_iters]  # (m, n); unfilled rows are zero
    step = _spectral_apply(theta, V.T @ U, valid, g_flat, denominator, rcond)
    if key is not None:  # the part of g outside span(V): a gradient step of size c
        if c is None:
            scale = jnp.max(jnp.where(valid, jnp.abs(theta), 0))
            c = jnp.where(scale > 0, 1 / jnp.where(scale > 0, scale, 1), 0)
        step = step - jnp.asarray(c, g_flat.dtype) * (g_flat - V.T @ (V @ g_flat))
    return unravel(step), g, state.finite


def _spectral_apply(theta, Y, valid, g, denominator, rcond):
    """``-Y f(θ) Yᵀ g`` with ``f = 1/denominator(θ)``, zero where the denominator is below
    ``rcond · max|θ|`` (pseudo-inverse) or ``θ`` is not a valid (Ritz) value."""
    d = denominator(theta)
    scale = jnp.max(jnp.where(valid, jnp.abs(theta), 0))
    keep = valid & (jnp.abs(d) > jnp.asarray(rcond, d.dtype) * scale)
    f = jnp.where(keep, 1 / jnp.where(keep, d, 1), 0)
    return -(Y @ (f * (Y.T @ g)))


# --------------------------------------------------------------------------- Newton as Optax


class CountState(NamedTuple):
    """State of ``newton``, ``saddle_free_newton``, ``sgld`` and ``entropy_sgd``: ``count``, the
    updates made (the argument of a schedule; random ones draw step ``t`` from
    ``fold_in(key, t)``)."""

    count: jax.Array


def _init_count(params: PyTree) -> CountState:
    del params
    return CountState(jnp.zeros((), jnp.int32))


def newton(
    *,
    learning_rate: LearningRate = 1.0,
    damping: float = 0.0,
    method: str = "dense",
    num_iters: int = 20,
    max_params: int = 5000,
) -> optax.GradientTransformationExtraArgs:
    """Damped Newton as an Optax transformation: ``update = η_t · newton_step(value_fn, θ)``.

    ``update(updates, state, params, *, value_fn)`` ignores ``updates`` and takes the gradient
    and Hessian of ``value_fn`` (``fit`` passes the minibatch loss). State: ``CountState``.

    Args:
      learning_rate: ``η``, a float or an Optax schedule of the step count.
      damping, method, num_iters, max_params: as for ``newton_step``.

    Example:
      >>> opt = newton(damping=1e-3)
      >>> fit(key, loss_fn, params, opt, data, num_steps=10)
    """
    args = (learning_rate, damping, method, num_iters, max_params)
    return _curvature_transformation("newton", newton_step, *args)


def saddle_free_newton(
    *,
    learning_rate: LearningRate = 1.0,
    damping: float = 0.0,
    method: str = "dense",
    num_iters: int = 20,
    max_params: int = 5000,
) -> optax.GradientTransformationExtraArgs:
    """Saddle-free Newton (Dauphin et al. 2014) as an Optax transformation:
    ``update = -η_t (|H| + δI)⁻¹ g`` of ``value_fn``; see ``saddle_free_newton_step``.

    The Krylov variant starts from ``g`` (deterministic, no key). State: ``CountState``.

    Example:
      >>> opt = saddle_free_newton(damping=1e-2, method="krylov", num_iters=30)
      >>> fit(key, loss_fn, params, opt, data, num_steps=50)
    """
    args = (learning_rate, damping, method, num_iters, max_params)
    return _curvature_transformation("saddle_free_newton", saddle_free_newton_step, *args)


def _curvature_transformation(fn, step_fn, learning_rate, damping, method, num_iters, max_params):
    _check_positive(fn, "learning_rate", learning_rate)
    _check_nonnegative(fn, "damping", damping)
    _checks.check_choice(fn, "method", method, METHODS)
    _checks.check_positive_int(fn, "num_iters", num_iters)
    kwargs = dict(damping=damping, method=method, num_iters=num_iters, max_params=max_params)

    def update(updates, state, params=None, *, value_fn=None, **extra):
        del updates, extra
        _require_value_fn(fn, value_fn, params)
        step = step_fn(lambda p, _: value_fn(p), params, None, **kwargs)
        lr = _learning_rate(learning_rate, state.count)
        return _scale(lr, step), CountState(optax.safe_increment(state.count))

    return optax.GradientTransformationExtraArgs(_init_count, update)


# --------------------------------------------------------------------------- noisy methods


class PerturbedGDState(NamedTuple):
    """State of ``perturbed_gd``.

    Attributes:
      count: updates made; step ``t`` draws its noise from ``fold_in(key, t)``.
      last_perturbation: the step of the last perturbation (``-wait`` before the first).
    """

    count: jax.Array
    last_perturbation: jax.Array


def perturbed_gd(
    key: jax.Array,
    learning_rate: LearningRate,
    *,
    grad_threshold: float,
    radius: float,
    wait: int = 10,
) -> optax.GradientTransformation:
    """Perturbed gradient descent (Jin, Ge, Netrapalli, Kakade & Jordan 2017).

    ``Δ = -η g + [‖g‖ <= grad_threshold and t - t_last >= wait] ξ`` with ``ξ`` uniform in the
    ball of radius ``radius`` in the full parameter space (direction ``z/‖z‖``, ``z`` normal,
    length ``radius · u^(1/n)``). Plain gradient descent started exactly at a saddle stays
    there; the perturbation makes it escape with high probability, in a number of steps
    polylogarithmic in the dimension ("How to escape saddle points efficiently", ICML 2017).
    Unlike the paper, the perturbation is added in the same update as the gradient step
    (taken at the unperturbed point, where ``‖g‖`` is small anyway). State:
    ``PerturbedGDState``.

    Args:
      key: PRNG key of the perturbations.
      learning_rate: ``η``, a float or an Optax schedule.
      grad_threshold: ``‖g‖`` at or below which a perturbation may happen (``>= 0``).
      radius: radius of the perturbation ball (``> 0``).
      wait: at least this many steps between perturbations.

    Example:
      >>> opt = perturbed_gd(key, 0.1, grad_threshold=1e-3, radius=1e-2)
      >>> fit(key, jaxscape.toys.quadratic_saddle, jnp.zeros(2), opt, num_steps=50)
    """
    fn = "perturbed_gd"
    _checks.check_key(fn, key)
    _check_positive(fn, "learning_rate", learning_rate)
    grad_threshold = _check_nonnegative(fn, "grad_threshold", grad_threshold)
    radius = _check_positive(fn, "radius", radius)
    wait = _checks.check_positive_int(fn, "wait", wait, minimum=0)

    def init(params):
        del params
        return PerturbedGDState(jnp.zeros((), jnp.int32), jnp.asarray(-wait, jnp.int32))

    def update(updates, state, params=None):
        del params
        t = state.count
        perturb = (otu.tree_norm(updates) <= grad_threshold) & (t - state.last_perturbation >= wait)
        xi = _ball_sample(jax.random.fold_in(key, t), updates, radius)
        lr = _learning_rate(learning_rate, t)
        out = jax.tree.map(lambda g, x: jnp.where(perturb, x, 0) - _cast(lr, g) * g, updates, xi)
        last = jnp.where(perturb, t, state.last_perturbation)
        return out, PerturbedGDState(optax.safe_increment(t), last)

    return optax.GradientTransformation(init, update)


def sgld(
    key: jax.Array, learning_rate: LearningRate, *, temperature: float = 1.0
) -> optax.GradientTransformation:
    """Stochastic gradient Langevin dynamics (Welling & Teh 2011).

    ``Δ = -η g + sqrt(2 η T) ξ``, ``ξ ~ N(0, I)``: as ``η → 0`` the iterates sample the Gibbs
    density ``∝ exp(-L/T)`` ("Bayesian learning via stochastic gradient Langevin dynamics",
    ICML 2011). At finite ``η`` the Euler scheme is biased by ``O(η)``: on ``L = a θ²/2`` its
    stationary variance is ``T / (a (1 - η a / 2))`` instead of ``T / a``. State:
    ``CountState``.

    Args:
      key: PRNG key of the noise.
      learning_rate: ``η``, a float or an Optax schedule.
      temperature: ``T > 0``.

    Example:
      >>> opt = sgld(key, 1e-3, temperature=0.1)
      >>> fit(key, loss_fn, params, opt, data, num_steps=1000)
    """
    fn = "sgld"
    _checks.check_key(fn, key)
    _check_positive(fn, "learning_rate", learning_rate)
    temperature = _check_positive(fn, "temperature", temperature)

    def update(updates, state, params=None):
        del params
        lr = _learning_rate(learning_rate, state.count)
        xi = _normal_like(jax.random.fold_in(key, state.count), updates)
        sd = jnp.sqrt(2 * lr * temperature)
        out = jax.tree.map(lambda g, x: _cast(sd, x) * x - _cast(lr, g) * g, updates, xi)
        return out, CountState(optax.safe_increment(state.count))

    return optax.GradientTransformation(_init_count, update)


def entropy_sgd(
    key: jax.Array,
    learning_rate: LearningRate,
    *,
    gamma: float = 0.03,
    num_inner_steps: int = 20,
    inner_learning_rate: float = 0.1,
    noise: float = 1e-4,
    alpha: float = 0.75,
) -> optax.GradientTransformationExtraArgs:
    """Entropy-SGD (Chaudhari et al. 2017, Algorithm 1): descend the local entropy.

    From ``x' = μ = x``, ``num_inner_steps`` Langevin steps on ``f(x') + γ/2 ‖x - x'‖²``:
    ``x' ← x' - η' (∇f(x') - γ (x - x')) + sqrt(η') ε ξ``, ``μ ← (1 - α) μ + α x'``; then
    ``Δ = -η γ (x - μ)``, a step along the gradient of the negative local entropy, which
    favours wide valleys ("Entropy-SGD: biasing gradient descent into wide valleys", ICLR
    2017). ``updates`` is ignored; each step costs ``num_inner_steps`` gradients of
    ``value_fn``. State: ``CountState``.

    Args:
      key: PRNG key of the Langevin noise.
      learning_rate: outer ``η``, a float or an Optax schedule.
      gamma: coupling ``γ > 0`` (the scope; smaller looks wider).
      num_inner_steps: Langevin steps per update.
      inner_learning_rate: ``η' > 0``.
      noise: thermal noise ``ε >= 0``.
      alpha: averaging weight, ``0 < α <= 1``.

    Example:
      >>> opt = entropy_sgd(key, 1.0, gamma=0.03)
      >>> fit(key, loss_fn, params, opt, data, num_steps=100)
    """
    fn = "entropy_sgd"
    _checks.check_key(fn, key)
    _check_positive(fn, "learning_rate", learning_rate)
    gamma = _check_positive(fn, "gamma", gamma)
    num_inner = _checks.check_positive_int(fn, "num_inner_steps", num_inner_steps)
    inner_lr = _check_positive(fn, "inner_learning_rate", inner_learning_rate)
    noise = _check_nonnegative(fn, "noise", noise)
    if not 0 < float(alpha) <= 1:
        raise ValueError(f"{fn}: `alpha` must be in (0, 1], got {alpha!r}.")

    def update(updates, state, params=None, *, value_fn=None, **extra):
        del updates, extra
        _require_value_fn(fn, value_fn, params)
        grad_fn, step_key = jax.grad(value_fn), jax.random.fold_in(key, state.count)
        sd = math.sqrt(inner_lr) * noise

        def inner(i, carry):
            xp, mu = carry
            xi = _normal_like(jax.random.fold_in(step_key, i), xp)
            drift = otu.tree_add_scale(grad_fn(xp), -gamma, otu.tree_sub(params, xp))
            xp = otu.tree_add_scale(otu.tree_add_scale(xp, -inner_lr, drift), sd, xi)
            return xp, jax.tree.map(lambda m, x: m + _cast(alpha, m) * (x - m), mu, xp)

        _, mu = lax.fori_loop(0, num_inner, inner, (params, params))
        lr = _learning_rate(learning_rate, state.count)
        return _scale(-lr * gamma, otu.tree_sub(params, mu)), CountState(
            optax.safe_increment(state.count)
        )

    return optax.GradientTransformationExtraArgs(_init_count, update)


# --------------------------------------------------------------------------- step-size tools


class CurvatureRecord(NamedTuple):
    """What ``curvature_callback`` records at each point.

    Attributes:
      lambda_max, lambda_min: extreme Hessian eigenvalues (Lanczos, ``which="BE"``).
      condition_number: ``λ_max / λ_min``; ``inf`` when ``λ_min <= 0``.
      optimal_learning_rate: ``gᵀg / gᵀHg`` (``taylor_step``); ``inf`` when ``gᵀHg <= 0``.
      predicted_change, actual_change: of a gradient step of the callback's ``learning_rate``.
    """

    lambda_max: jax.Array
    lambda_min: jax.Array
    condition_number: jax.Array
    optimal_learning_rate: jax.Array
    predicted_change: jax.Array
    actual_change: jax.Array


def curvature_callback(
    key: jax.Array, loss_fn: LossFn, batch: Any, *, learning_rate: float, num_iters: int = 20
) -> Callable[[PyTree, PyTree, jax.Array], CurvatureRecord]:
    """Callback for ``fit``: the curvature that decides whether a step size is safe.

    At each record, ``eigsh(which="BE", k=2)`` gives ``λ_max`` and ``λ_min`` (dense ``eigh``
    for ``n <= 2`` parameters), and ``taylor_step`` the optimal step ``gᵀg / gᵀHg`` along
    ``-g`` and the predicted vs actual change of a step of ``learning_rate``. Gradient descent
    is stable along the top eigenvector only while ``η < 2 / λ_max``; its convergence rate on
    a quadratic is governed by the condition number.

    Args:
      key: PRNG key for Lanczos (folded with the step).
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      batch: the batch to measure on.
      learning_rate: the ``η`` of the predicted/actual change (``> 0``).
      num_iters: Lanczos products per record (``>= 2``).

    Returns:
      ``callback(params, state, step) -> CurvatureRecord``; ``fit`` stores each field with a
      leading record axis (``history.metrics[name].lambda_max``).

    Example:
      >>> cb = curvature_callback(key, loss_fn, batch, learning_rate=0.1)
      >>> res = fit(key, loss_fn, params, optax.sgd(0.1), batch, num_steps=100,
      ...           callbacks={"curv": cb})
      >>> res.history.metrics["curv"].condition_number
    """
    fn = "curvature_callback"
    _checks.check_key(fn, key)
    lr = _check_positive(fn, "learning_rate", learning_rate)
    num_iters = _checks.check_positive_int(fn, "num_iters", num_iters, minimum=2)

    def callback(params, state, step):
        del state
        if count_params(params) <= 2:
            lam = jnp.linalg.eigvalsh(hessian_matrix(loss_fn, params, batch))
        else:
            matvec = hessian_operator(loss_fn, params, batch)
            k = jax.random.fold_in(key, step)
            eigs = eigsh(k, matvec, params, k=2, which="BE", num_iters=num_iters, tol=0.0)
            lam = eigs.eigenvalues
        lo, hi = lam[0], lam[-1]
        cond = jnp.where(lo > 0, hi / jnp.where(lo > 0, lo, 1), jnp.inf)
        t = taylor_step(loss_fn, params, batch, lr)
        return CurvatureRecord(
            hi, lo, cond, t.optimal_learning_rate, t.predicted_change, t.actual_change
        )

    return callback


# --------------------------------------------------------------------------- helpers


_check_nonnegative = _checks.check_nonnegative


def _check_positive(fn: str, name: str, value: Any) -> Any:
    """A positive number; a callable (a schedule of the step count) is not checked."""
    return value if callable(value) else _checks.check_positive(fn, name, value)


def _require_value_fn(fn: str, value_fn: Any, params: Any) -> None:
    if value_fn is None or params is None:
        raise TypeError(
            f"{fn}: update needs `params` and the loss as `value_fn`: call "
            f"update(grads, state, params, value_fn=lambda p: loss_fn(p, batch)) "
            f"(jaxscape.fit does this automatically)."
        )


def _learning_rate(learning_rate: LearningRate, count: jax.Array) -> Any:
    return learning_rate(count) if callable(learning_rate) else learning_rate


def _cast(scalar: Any, like: jax.Array) -> jax.Array:
    return jnp.asarray(scalar, jnp.result_type(like))


def _scale(scalar: Any, tree: PyTree) -> PyTree:
    return jax.tree.map(lambda x: _cast(scalar, x) * x, tree)


def _normal_like(key: jax.Array, tree: PyTree) -> PyTree:
    """Independent standard normal draws shaped like ``tree``'s leaves."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    draws = [
        jax.random.normal(k, jnp.shape(x), jnp.result_type(x))
        for k, x in zip(keys, leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, draws)


def _ball_sample(key: jax.Array, tree: PyTree, radius: float) -> PyTree:
    """Uniform in the ball of ``radius`` in the space of all of ``tree``'s entries."""
    key_dir, key_len = jax.random.split(key)
    z = _normal_like(key_dir, tree)
    n = count_params(tree)
    dtype = jnp.result_type(jax.tree.leaves(tree)[0])
    length = radius * jax.random.uniform(key_len, (), dtype) ** (1 / n)
    return _scale(length / otu.tree_norm(z), z)


__all__ = [
    "CountState",
    "CurvatureRecord",
    "PerturbedGDState",
    "curvature_callback",
    "entropy_sgd",
    "newton",
    "newton_step",
    "perturbed_gd",
    "saddle_free_newton",
    "saddle_free_newton_step",
    "sgld",
]
