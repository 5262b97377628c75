"""Teacher-student ReLU committees, single ReLU and sigmoid neurons, and a ReLU regression set with
a bad local minimum."""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxscape import _checks
from jaxscape._checks import check_float_dtype
from jaxscape.toys._common import (
    _normals,
    _orthonormalize,
    _vector,
)

# --------------------------------------------------------------------------- teacher-student


@jax.custom_jvp
def _arccos_profile(c):
    """``g(c) = sin θ + (π - θ) cos θ``, ``θ = arccos c``; smooth: ``g'(c) = π - θ``."""
    c = jnp.clip(c, -1, 1)
    return jnp.sqrt(1 - c**2) + (jnp.pi - jnp.arccos(c)) * c


@_arccos_profile.defjvp
def _arccos_profile_jvp(primals, tangents):
    (c,), (dc,) = primals, tangents
    return _arccos_profile(c), _pi_minus_angle(c) * dc


@jax.custom_jvp
def _pi_minus_angle(c):
    return jnp.pi - jnp.arccos(jnp.clip(c, -1, 1))


@_pi_minus_angle.defjvp
def _pi_minus_angle_jvp(primals, tangents):
    # d/dc = 1/√(1-c²), infinite at |c| = 1, where it only ever multiplies ∇c = 0 (parallel
    # vectors): there the true second-order term vanishes, so 0 is the right limit.
    (c,), (dc,) = primals, tangents
    inside = jnp.abs(c) < 1
    slope = jnp.where(inside, 1 / jnp.sqrt(jnp.where(inside, 1 - c**2, 1)), 0)
    return _pi_minus_angle(c), slope * dc


def _safe_norm(u: jax.Array) -> jax.Array:
    sq = jnp.sum(u**2, axis=-1)
    return jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1)), 0)


def relu_kernel(u, v) -> jax.Array:
    """``K_ij = E_x[relu(u_i·x) relu(v_j·x)]`` for ``x ~ N(0, I_d)``, rows ``u_i``, ``v_j``.

    ``= ‖u‖‖v‖ (sin θ + (π - θ) cos θ) / (2π)``, θ the angle between them (the degree-1
    arc-cosine kernel, Cho & Saul 2009); ``K_ii = ‖u_i‖²/2``. The cosine is clipped to
    [-1, 1] and the derivative of the profile is implemented as ``π - θ``, finite at θ = 0 and
    π, so gradients and Hessians are finite for (anti)parallel rows. A zero row gives 0 with
    zero gradient (the kernel is positively 1-homogeneous, not differentiable at 0).

    Args:
      u: ``(m, d)``. v: ``(n, d)``.

    Returns:
      ``(m, n)``.
    """
    if jnp.ndim(u) != 2 or jnp.ndim(v) != 2 or jnp.shape(u)[1] != jnp.shape(v)[1]:
        raise ValueError(
            f"relu_kernel: `u` and `v` must be (m, d) and (n, d) with the same d, got "
            f"{jnp.shape(u)} and {jnp.shape(v)}."
        )
    nu, nv = _safe_norm(u), _safe_norm(v)
    denom = nu[:, None] * nv[None, :]
    ok = denom > 0
    c = (u @ v.T) / jnp.where(ok, denom, 1)
    return jnp.where(ok, denom * _arccos_profile(c) / (2 * jnp.pi), 0)


class TeacherStudent(NamedTuple):
    """``teacher``: ``(k, d)`` orthonormal rows; ``student``: ``(n, d)`` initial weights."""

    teacher: jax.Array
    student: jax.Array


def teacher_student(
    key, *, input_dim: int, num_teacher: int, num_student: int, dtype=None
) -> TeacherStudent:
    """Two-layer ReLU committee ``f(x) = Σ_j relu(w_j·x)`` learning an orthonormal teacher.

    Setting of Safran & Shamir (2018, "Spurious local minima are common in two-layer ReLU
    neural networks"): ``x ~ N(0, I_d)``, target ``Σ_{k≤K} relu(v_k·x)`` with orthonormal
    ``v_k``, student with ``n ≥ K`` units, second layer fixed to ones, loss
    ``teacher_student_loss``. Known: any permutation of the teacher (padded with zero rows if
    n > K) is a global minimum with loss 0; for n = K with 6 ≤ K ≤ 20 they found spurious
    local minima by computer-assisted proof and gradient descent from random init hits one
    with probability growing with K; over-parameterization (n > K) makes that rarer.
    The student init has rows ``N(0, I/d)`` (norm ≈ 1 like the teacher's).
    """
    fn = "teacher_student"
    _checks.check_key(fn, key)
    d = _checks.check_positive_int(fn, "input_dim", input_dim)
    k = _checks.check_positive_int(fn, "num_teacher", num_teacher)
    n = _checks.check_positive_int(fn, "num_student", num_student)
    if d < k:
        raise ValueError(
            f"{fn}: an orthonormal teacher needs input_dim >= num_teacher, got input_dim={d} < "
            f"num_teacher={k}."
        )
    if n < k:
        raise ValueError(
            f"{fn}: `num_student` must be >= num_teacher={k} (the student must be able to "
            f"express the teacher), got num_student={n}."
        )
    return _sample_teacher_student(key, d=d, k=k, n=n, dtype=check_float_dtype(fn, dtype))


@partial(jax.jit, static_argnames=("d", "k", "n", "dtype"))
def _sample_teacher_student(key, *, d, k, n, dtype) -> TeacherStudent:
    g_teacher, g_student = _normals(key, [(d, k), (n, d)], dtype)
    return TeacherStudent(_orthonormalize(g_teacher).T, g_student / math.sqrt(d))


def teacher_student_loss(params, batch):
    """Population loss ``½ E_x (Σ_j relu(w_j·x) - Σ_k relu(v_k·x))²``, in closed form:
    ``½ (Σ K(W, W) - 2 Σ K(W, V) + Σ K(V, V))`` with ``K = relu_kernel``.

    A ``loss_fn(params=W (n, d), batch=V (k, d))``; see ``teacher_student``.
    """
    W, V = _check_committee("teacher_student_loss", params, batch)
    total = jnp.sum(relu_kernel(W, W)) - 2 * jnp.sum(relu_kernel(W, V))
    return 0.5 * (total + jnp.sum(relu_kernel(V, V)))


def teacher_student_sampled_loss(params, batch):
    """Empirical loss ``½ mean_n (Σ_j relu(w_j·x_n) - y_n)²`` on ``batch = (x, y)``; an
    unbiased estimate of ``teacher_student_loss`` on data from ``teacher_student_data``."""
    x, y = batch
    _check_committee("teacher_student_sampled_loss", params, x)
    return 0.5 * jnp.mean((jnp.sum(jax.nn.relu(x @ params.T), axis=-1) - y) ** 2)


def teacher_student_data(key, teacher, *, num_examples: int):
    """``(x, y)``: ``x ~ N(0, I_d)`` of shape ``(num_examples, d)``, ``y = Σ_k relu(v_k·x)``."""
    _checks.check_key("teacher_student_data", key)
    n = _checks.check_positive_int("teacher_student_data", "num_examples", num_examples)
    x = jax.random.normal(key, (n, jnp.shape(teacher)[-1]), jnp.result_type(teacher))
    return x, jnp.sum(jax.nn.relu(x @ teacher.T), axis=-1)


def _check_committee(fn: str, W, V):
    if jnp.ndim(W) != 2 or jnp.ndim(V) != 2 or jnp.shape(W)[1] != jnp.shape(V)[1]:
        raise ValueError(
            f"{fn}: student weights (`params`) must be (n, d) and the teacher / inputs (k, d) "
            f"with the same d, got {jnp.shape(W)} and {jnp.shape(V)}."
        )
    return W, V


# --------------------------------------------------------------------------- single neurons


def relu_neuron_loss(params, batch):
    """Single ReLU neuron, Gaussian inputs: ``½ E (relu(w·x) - relu(w*·x))²``, ``batch = w*``.

    ``= ½ (‖w‖²/2 - 2 K(w, w*) + ‖w*‖²/2)`` (``relu_kernel``). Known (Tian 2017): the gradient
    is ``½w - ((π - θ) w* + ‖w*‖ sin θ ŵ)/(2π)`` (``relu_neuron_grad``), so w* is the only
    critical point with w ≠ 0; the loss is not differentiable at w = 0. Gradient flow from any
    w₀ not antiparallel to w* turns w towards w* (θ decreases) and converges to w*; on the
    antiparallel ray it shrinks into the origin.
    """
    w = _vector("relu_neuron_loss", params)
    _vector("relu_neuron_loss", batch, size=w.shape[0], name="batch")
    return teacher_student_loss(w[None], batch[None])


def relu_neuron_grad(params, teacher):
    """Closed-form population gradient of ``relu_neuron_loss`` (Tian 2017), for w ≠ 0."""
    w = _vector("relu_neuron_grad", params)
    _vector("relu_neuron_grad", teacher, size=w.shape[0], name="teacher")
    nw, nt = jnp.linalg.norm(w), jnp.linalg.norm(teacher)
    theta = jnp.arccos(jnp.clip(w @ teacher / (nw * nt), -1, 1))
    return 0.5 * w - ((jnp.pi - theta) * teacher + nt * jnp.sin(theta) * w / nw) / (2 * jnp.pi)


def sigmoid_neuron_loss(params, batch):
    """Single sigmoid neuron with squared loss ``½ mean_n (σ(w·x_n) - y_n)²``, batch ``(x, y)``."""
    x, y = batch
    w = _vector("sigmoid_neuron_loss", params)
    if jnp.ndim(x) != 2 or jnp.shape(x)[1] != w.shape[0]:
        raise ValueError(
            f"sigmoid_neuron_loss: inputs x must have shape (N, {w.shape[0]}), got {jnp.shape(x)}."
        )
    return 0.5 * jnp.mean((jax.nn.sigmoid(x @ w) - y) ** 2)


def sigmoid_neuron_data(*, num_dims: int, dtype=None):
    """A dataset on which ``sigmoid_neuron_loss`` has ``2^num_dims`` local minima.

    In the style of Auer, Herbster & Warmuth (NeurIPS 1995, "Exponentially many local minima for
    single neurons"; our numbers, their idea): in 1-D the two examples ``(x, y) = (10, ½)`` and
    ``(1, σ(2))`` each want a different weight (w = 0 and w = 2), and each one's loss is flat
    (saturated sigmoid) where the other is fitted, so ``f(w)`` has two local minima, near
    w ≈ 0.015 (loss ≈ 0.036) and w ≈ 2.0 (loss ≈ 0.0625), separated by a barrier near w ≈ 0.43.
    Copying the pair onto each coordinate axis (``x = x₁ e_i``) makes the loss separable,
    ``L(w) = (1/d) Σ_i f(w_i)``, with a local minimum at each of the ``2^d`` corners.

    Returns:
      ``(x, y)`` with ``x`` of shape ``(2d, d)`` and ``y`` of shape ``(2d,)``.
    """
    d = _checks.check_positive_int("sigmoid_neuron_data", "num_dims", num_dims)
    dtype = check_float_dtype("sigmoid_neuron_data", dtype)
    x = np.kron(np.eye(d), [[10.0], [1.0]])
    y = np.tile([0.5, 1 / (1 + math.exp(-2.0))], d)
    return jnp.asarray(x, dtype), jnp.asarray(y, dtype)


# --------------------------------------------------------------------------- bad local minimum


def relu_regression_loss(params, batch):
    """One-hidden-layer ReLU net on 1-D inputs, ``f(x) = Σ_j v_j relu(w_j x + b_j) + c``, with
    loss ``½ mean_n (f(x_n) - y_n)²``. ``params = {"w", "b", "v": (m,), "c": ()}``,
    ``batch = (x, y)`` of shapes ``(N,)``."""
    x, y = batch
    hidden = jax.nn.relu(x[:, None] * params["w"] + params["b"])
    return 0.5 * jnp.mean((hidden @ params["v"] + params["c"] - y) ** 2)


class BadMinimum(NamedTuple):
    """``batch`` for ``relu_regression_loss``, a spurious ``local_minimum`` (loss 1/8) and a
    ``global_minimum`` (loss 0)."""

    batch: tuple[jax.Array, jax.Array]
    local_minimum: dict[str, jax.Array]
    global_minimum: dict[str, jax.Array]


def relu_bad_minimum(*, dtype=None) -> BadMinimum:
    """A 4-point 1-D regression set where a 2-unit ReLU net has a provably bad local minimum.

    Data ``y = |x|`` at ``x ∈ {-2, -1, 1, 2}``; the global minimum ``f = relu(x) + relu(-x)``
    fits it exactly (loss 0). At the local minimum unit 2 is dead on every example
    (``0·x - 1 < 0``: a "blind spot") and unit 1 is active on every example (``0·x + 1 > 0``),
    so the net is affine on the data; it sits at the best affine fit ``f ≡ 1.5`` (loss 1/8).
    Every parameter change smaller than 1/3 keeps both activation patterns, so the net stays
    affine on the data and the loss cannot go below 1/8: a local minimum (non-strict: the dead
    unit's weights are flat directions), with zero gradient and a positive semi-definite
    Hessian.

    This is a construction in the spirit of Swirszcz, Czarnecki & Pascanu (2016, "Local minima
    in training of neural networks": bad minima from blind spots and from data a sub-model
    cannot fit), not one of the paper's datasets.
    """
    dtype = check_float_dtype("relu_bad_minimum", dtype)
    arr = lambda v: jnp.asarray(v, dtype)  # noqa: E731
    x = arr([-2.0, -1.0, 1.0, 2.0])
    local = {"w": arr([0.0, 0.0]), "b": arr([1.0, -1.0]), "v": arr([1.0, 1.0]), "c": arr(0.5)}
    best = {"w": arr([1.0, -1.0]), "b": arr([0.0, 0.0]), "v": arr([1.0, 1.0]), "c": arr(0.0)}
    return BadMinimum((x, arr([2.0, 1.0, 1.0, 2.0])), local, best)
