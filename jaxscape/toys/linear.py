"""Deep linear models: the scalar chain and matrix regression, with Saxe et al.'s closed-form
learning curves."""

from __future__ import annotations

import itertools
import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxscape import _checks
from jaxscape._checks import check_float_dtype
from jaxscape.toys._common import (
    _float_array,
    _normals,
    _orthonormalize,
    _vector,
)

# --------------------------------------------------------------------------- scalar linear chain


def deep_linear_chain(params, batch=None, *, target=1.0):
    """Scalar deep linear network ``L(w) = (t - w₁w₂⋯w_K)²``, params of shape ``(K,)``.

    Known: every local minimum is global (Kawaguchi 2016; Baldi & Hornik 1989 for K = 2): the
    minima are the set ``∏w = t``. For t ≠ 0 the other critical points are the points with at
    least two zero weights (the origin for K = 2), all saddles. At the origin the Hessian is
    ``[[0, -2t], [-2t, 0]]`` for K = 2 (eigenvalues ±2t: a strict saddle) and exactly zero for
    K ≥ 3 (a higher-order saddle, invisible to second-order tests).
    """
    w = _vector("deep_linear_chain", params)
    return (target - jnp.prod(w)) ** 2


def _products_without(w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``q_i = ∏_{k≠i} w_k`` and ``q_ij = ∏_{k∉{i,j}} w_k`` (0 on the diagonal), no division."""
    k = jnp.arange(w.shape[0])
    q1 = jnp.prod(jnp.where(k[None, :] == k[:, None], 1, w[None, :]), axis=-1)
    drop = (k[None, None, :] == k[:, None, None]) | (k[None, None, :] == k[None, :, None])
    q2 = jnp.prod(jnp.where(drop, 1, w[None, None, :]), axis=-1)
    return q1, jnp.where(k[:, None] == k[None, :], 0, q2)


def deep_linear_chain_grad(params, *, target=1.0):
    """Closed-form gradient of ``deep_linear_chain``: ``∂L/∂w_i = -2(t - P) ∏_{k≠i} w_k``."""
    w = _vector("deep_linear_chain_grad", params)
    q1, _ = _products_without(w)
    return -2 * (target - jnp.prod(w)) * q1


def deep_linear_chain_hessian(params, *, target=1.0):
    """Closed-form Hessian of ``deep_linear_chain``:
    ``H_ij = 2 q_i q_j - 2(t - P) q_ij`` with ``q_i = ∏_{k≠i} w_k``, ``q_ij = ∏_{k∉{i,j}} w_k``
    (``q_ii = 0``) and ``P = ∏ w``."""
    w = _vector("deep_linear_chain_hessian", params)
    q1, q2 = _products_without(w)
    return 2 * jnp.outer(q1, q1) - 2 * (target - jnp.prod(w)) * q2


# --------------------------------------------------------------------------- linear regression


class DeepLinearProblem(NamedTuple):
    """A synthetic deep linear regression problem.

    Attributes:
      params: initial weights ``(W₁, ..., W_K)``, ``W_k`` of shape ``(d_k, d_{k-1})``.
      batch: ``(x, y)`` with ``x`` of shape ``(N, d_in)`` and ``y`` of shape ``(N, d_out)``.
      teacher: the ``(d_out, d_in)`` matrix that generated ``y = x teacherᵀ (+ noise)``.
    """

    params: tuple[jax.Array, ...]
    batch: tuple[jax.Array, jax.Array]
    teacher: jax.Array


def deep_linear_loss(params, batch):
    """Deep linear regression ``L(W₁..W_K) = 1/(2N) Σ_n ‖y_n - W_K⋯W₁ x_n‖²``.

    With column-stacked data this is ``‖Y - W_K⋯W₁X‖²_F / (2N)``; its gradients are
    ``∂L/∂W_k = -(W_K⋯W_{k+1})ᵀ (Σ_yx - W Σ_xx) (W_{k-1}⋯W₁)ᵀ`` with ``Σ_yx = YXᵀ/N``,
    ``Σ_xx = XXᵀ/N``, ``W = W_K⋯W₁``.

    Known (Kawaguchi 2016, for full-rank ``Σ_xx`` and ``Σ_yx``): every local minimum is global,
    every other critical point is a saddle; for K = 2 every saddle has a negative Hessian
    eigenvalue (at W = 0 they are ±s_α, the singular values of ``Σ_yx``, each repeated
    ``hidden_dim`` times), while for K ≥ 3 the origin is a saddle with a zero Hessian.

    Args:
      params: a tuple / list ``(W₁, ..., W_K)`` of 2-D arrays, ``W_k`` of shape
        ``(d_k, d_{k-1})``.
      batch: ``(x, y)``, ``x`` of shape ``(N, d_0)``, ``y`` of shape ``(N, d_K)``.
    """
    x, y = _check_linear("deep_linear_loss", params, batch)
    pred = x
    for w in params:
        pred = pred @ w.T
    return jnp.sum((y - pred) ** 2) / (2 * x.shape[0])


def deep_linear_product(params) -> jax.Array:
    """The end-to-end matrix ``W_K⋯W₁`` of shape ``(d_K, d_0)``."""
    _check_linear("deep_linear_product", params, None)
    out = params[0]
    for w in params[1:]:
        out = w @ out
    return out


def _check_linear(fn: str, params, batch):
    if not isinstance(params, tuple | list) or not params:
        raise ValueError(
            f"{fn}: `params` must be a non-empty tuple/list of weight matrices (W₁, ..., W_K), "
            f"got {type(params).__name__}."
        )
    shapes = [jnp.shape(w) for w in params]
    ok = all(len(s) == 2 for s in shapes)
    ok = ok and all(b[1] == a[0] for a, b in itertools.pairwise(shapes))
    if not ok:
        raise ValueError(
            f"{fn}: `params` must be 2-D matrices W_k of shape (d_k, d_(k-1)) that chain, got "
            f"shapes {shapes}."
        )
    if batch is None:
        return None
    x, y = batch
    want_x, want_y = (None, shapes[0][1]), (None, shapes[-1][0])
    if jnp.ndim(x) != 2 or jnp.ndim(y) != 2 or x.shape[1] != want_x[1] or y.shape[1] != want_y[1]:
        raise ValueError(
            f"{fn}: `batch` must be (x, y) with x of shape (N, {want_x[1]}) and y of shape "
            f"(N, {want_y[1]}), got {jnp.shape(x)} and {jnp.shape(y)}."
        )
    return x, y


def deep_linear_regression(
    key,
    *,
    input_dim: int,
    output_dim: int,
    hidden_dim: int,
    num_layers: int,
    num_examples: int,
    singular_values=None,
    whiten: bool = True,
    noise: float = 0.0,
    init_scale: float = 1.0,
    dtype=None,
) -> DeepLinearProblem:
    """Synthetic regression for ``deep_linear_loss``: data, teacher and a random init.

    ``x`` is Gaussian, whitened to ``xᵀx/N = I`` exactly when ``whiten`` (the setting of Saxe
    et al. 2014); ``y = x teacherᵀ + noise·ε``. The teacher is ``U diag(s) Vᵀ`` with Haar
    ``U, V`` when ``singular_values`` is given, else a Gaussian matrix ``G/√d_in``. With
    whitened, noiseless data ``Σ_yx = yᵀx/N`` equals the teacher. The init has ``W_k`` entries
    ``N(0, init_scale² / d_{k-1})``; small ``init_scale`` is the rich (saddle-to-saddle) regime.

    Args:
      key: PRNG key.
      input_dim, output_dim, hidden_dim: ``d_0``, ``d_K`` and every hidden width.
      num_layers: K ≥ 1.
      num_examples: N (≥ input_dim when whitening).
      singular_values: optional teacher spectrum, length ≤ min(input_dim, output_dim).
      whiten, noise, init_scale, dtype: as above.
    """
    fn = "deep_linear_regression"
    _checks.check_key(fn, key)
    d_in, d_out, h, K, n = (
        _checks.check_positive_int(fn, name, value)
        for name, value in [
            ("input_dim", input_dim),
            ("output_dim", output_dim),
            ("hidden_dim", hidden_dim),
            ("num_layers", num_layers),
            ("num_examples", num_examples),
        ]
    )
    if whiten and n < d_in:
        raise ValueError(
            f"{fn}: whitening needs num_examples >= input_dim, got num_examples={n} < "
            f"input_dim={d_in}; pass whiten=False or more examples."
        )
    dtype = check_float_dtype(fn, dtype)
    s = None if singular_values is None else jnp.asarray(singular_values, dtype)
    if s is not None and (s.ndim != 1 or not 1 <= s.shape[0] <= min(d_in, d_out)):
        raise ValueError(
            f"{fn}: `singular_values` must be 1-D of length 1..{min(d_in, d_out)} "
            f"(min(input_dim, output_dim)), got shape {s.shape}."
        )
    dims = (d_in,) + (h,) * (K - 1) + (d_out,)
    return _sample_deep_linear(
        key, s, noise, init_scale, dims=dims, n=n, whiten=whiten, dtype=dtype
    )


@partial(jax.jit, static_argnames=("dims", "n", "whiten", "dtype"))
def _sample_deep_linear(key, s, noise, init_scale, *, dims, n, whiten, dtype):
    d_in, d_out = dims[0], dims[-1]
    teacher_shapes = [(d_out, d_in)] if s is None else [(d_out, s.shape[0]), (d_in, s.shape[0])]
    layer_shapes = [(b, a) for a, b in itertools.pairwise(dims)]
    draws = _normals(key, [*teacher_shapes, (n, d_in), (n, d_out), *layer_shapes], dtype)
    g_teacher, (x, eps, *gs) = draws[: len(teacher_shapes)], draws[len(teacher_shapes) :]
    if s is None:
        teacher = g_teacher[0] / math.sqrt(d_in)
    else:
        teacher = (_orthonormalize(g_teacher[0]) * s) @ _orthonormalize(g_teacher[1]).T
    if whiten:
        evals, evecs = jnp.linalg.eigh(x.T @ x / n)
        x = x @ (evecs / jnp.sqrt(evals)) @ evecs.T
    y = x @ teacher.T + noise * eps
    params = tuple(init_scale / math.sqrt(g.shape[1]) * g for g in gs)
    return DeepLinearProblem(params, (x, y), teacher)


def input_output_correlation(batch) -> jax.Array:
    """``Σ_yx = yᵀx / N`` of shape ``(d_out, d_in)``: the only statistic of whitened data that
    the deep linear loss (and its gradient flow) sees."""
    x, y = batch
    return y.T @ x / x.shape[0]


class SaxeCurve(NamedTuple):
    """Closed-form learning curve of a two-layer linear network.

    Attributes:
      mode_strengths: ``u_α(t) = U[:, α]ᵀ W₂W₁(t) V[:, α]``, shape ``t.shape + (r,)``.
      loss: the loss above its minimum, ``½ Σ_α (s_α - u_α(t))²``, shape ``t.shape``.
    """

    mode_strengths: jax.Array
    loss: jax.Array


def saxe_learning_curve(singular_values, u0, t) -> SaxeCurve:
    """Saxe, McClelland & Ganguli (2014) learning curve, in ``deep_linear_loss``'s convention.

    For ``L = 1/(2N)‖Y - W₂W₁X‖²`` with whitened inputs (``Σ_xx = I``), gradient flow
    ``dW/dt = -∇L`` (t = learning rate × number of gradient-descent steps; Saxe et al.'s
    ``t/τ``) from the balanced, aligned init of ``saxe_init`` keeps ``W₂W₁ = U diag(u) Vᵀ``
    where ``Σ_yx = U diag(s) Vᵀ``. Each mode obeys ``du/dt = 2u(s - u)``, so

        u(t) = s u₀ e^{2st} / (s - u₀ + u₀ e^{2st})  =  u₀ / (e^{-2st} + u₀(1 - e^{-2st})/s),

    a sigmoid from u₀ to s (``u₀ / (1 + 2u₀t)`` for s = 0), evaluated here in the second,
    overflow-free form. The loss is ``½(tr Σ_yy - Σ s²) + ½ Σ (s - u)²``; the first term is zero
    for noiseless full-rank teacher data and is left out of ``loss``.

    Args:
      singular_values: ``s``, shape ``(r,)``, non-negative.
      u0: initial mode strengths, a scalar or shape ``(r,)``, in ``[0, s]``.
      t: times, any shape.

    Returns:
      ``SaxeCurve(mode_strengths, loss)``.
    """
    s = _float_array(singular_values)
    _vector("saxe_learning_curve", s, name="singular_values")
    t = jnp.asarray(t, s.dtype)[..., None]
    u0 = jnp.broadcast_to(jnp.asarray(u0, s.dtype), s.shape)
    pos = s > 0
    rate = jnp.where(pos, -jnp.expm1(-2 * s * t) / jnp.where(pos, s, 1), 2 * t)
    u = u0 / (jnp.exp(-2 * s * t) + u0 * rate)
    return SaxeCurve(u, 0.5 * jnp.sum((s - u) ** 2, axis=-1))


def saxe_half_time(singular_values, u0) -> jax.Array:
    """Time at which each mode reaches half its strength, ``u(t½) = s/2``:
    ``t½ = ln(s/u₀ - 1) / (2s)`` for ``0 < u₀ < s`` — stronger modes are learned first, in time
    ∝ ``1/s`` (Saxe et al. 2014)."""
    s = _float_array(singular_values)
    return jnp.log(s / jnp.asarray(u0, s.dtype) - 1) / (2 * s)


def saxe_init(correlation, *, hidden_dim: int, u0) -> tuple[jax.Array, jax.Array]:
    """Balanced small init aligned with ``Σ_yx = U diag(s) Vᵀ``, for which
    ``saxe_learning_curve`` is exact: ``W₁ = Q diag(√u₀) Vᵀ``, ``W₂ = U diag(√u₀) Qᵀ``.

    ``Q`` is the first ``m = min(hidden_dim, rank)`` columns of the identity (any orthonormal
    ``Q`` works: hidden units can be rotated). ``W₁W₁ᵀ = W₂ᵀW₂`` (balanced), so the modes stay
    decoupled under gradient flow; modes beyond ``hidden_dim`` start (and stay) at 0.

    Args:
      correlation: ``Σ_yx`` of shape ``(d_out, d_in)`` (``input_output_correlation``).
      hidden_dim: width of the hidden layer.
      u0: initial strength ``u₀ = a₀²`` of every mode: a scalar or shape ``(m,)``.

    Returns:
      ``(W₁, W₂)`` of shapes ``(hidden_dim, d_in)`` and ``(d_out, hidden_dim)``.
    """
    h = _checks.check_positive_int("saxe_init", "hidden_dim", hidden_dim)
    if jnp.ndim(correlation) != 2:
        raise ValueError(
            f"saxe_init: `correlation` must be a (d_out, d_in) matrix, got shape "
            f"{jnp.shape(correlation)}."
        )
    U, _, Vt = jnp.linalg.svd(correlation, full_matrices=False)
    m = min(h, Vt.shape[0])
    a = jnp.sqrt(jnp.broadcast_to(jnp.asarray(u0, Vt.dtype), (m,)))
    W1 = jnp.zeros((h, Vt.shape[1]), Vt.dtype).at[:m].set(a[:, None] * Vt[:m])
    W2 = jnp.zeros((U.shape[0], h), U.dtype).at[:, :m].set(U[:, :m] * a)
    return W1, W2
