"""The spherical p-spin glass, and Riemannian gradient / Hessian on the sphere."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxscape import _checks
from jaxscape._checks import check_float_dtype
from jaxscape.toys._common import LossFn, _vector

# --------------------------------------------------------------------------- p-spin glass


def p_spin_glass(key, *, num_spins: int, p: int, dtype=None, max_entries: int = 2**24):
    """Couplings ``J`` of the spherical pure p-spin glass: ``N^p`` iid ``N(0, 1)`` entries.

    The Hamiltonian ``H(σ) = N^{-(p-1)/2} Σ_{i₁..i_p} J_{i₁..i_p} σ_{i₁}⋯σ_{i_p}`` on the sphere
    ``‖σ‖² = N`` is a centered Gaussian field with covariance ``E H(σ)H(σ') = N (σ·σ'/N)^p``;
    in particular ``E H = 0``, ``Var H = N``. ``J`` is not symmetrized: H only sees its
    symmetric part, and the iid tensor gives exactly that covariance.

    Known (Auffinger, Ben Arous & Černý 2013; Choromanska et al. 2015 relate it to neural-net
    losses): the ground-state energy per spin ``min H/N → -E₀`` with ``E₀ ≈ 1.657`` for p = 3
    (Crisanti & Sommers 1992; ``√2`` for p = 2, the edge of the semicircle). For p ≥ 3
    exponentially many local minima lie in the band between ``-E₀`` and the threshold
    ``-E_∞ = -2√((p-1)/p)`` (≈ -1.633 for p = 3), where gradient descent from random starts ends
    as N → ∞ (at N ≈ 50 it typically stops between -1.4 and -1.6); below ``-E_∞`` critical
    points have a small index that grows with the energy.

    Args:
      key: PRNG key.
      num_spins: N ≥ 2.
      p: interaction order ≥ 2.
      dtype: couplings dtype.
      max_entries: refuse a dense tensor with more than this many entries.

    Returns:
      ``J`` of shape ``(N,) * p``; use it as the ``batch`` of ``p_spin_energy``.
    """
    fn = "p_spin_glass"
    _checks.check_key(fn, key)
    n = _checks.check_positive_int(fn, "num_spins", num_spins, minimum=2)
    p = _checks.check_positive_int(fn, "p", p, minimum=2)
    dtype = check_float_dtype(fn, dtype)
    if n**p > max_entries:
        raise ValueError(
            f"{fn}: the dense coupling tensor would have num_spins**p = {n}**{p} = {n**p:,} "
            f"entries, more than max_entries={max_entries:,} ({n**p * dtype.itemsize:,} bytes). "
            f"Use fewer spins, a smaller p, or raise max_entries."
        )
    return jax.random.normal(key, (n,) * p, dtype)


def p_spin_energy(params, batch):
    """Energy per spin ``E(σ) = H(σ)/N = N^{-(p+1)/2} Σ J_{i₁..i_p} σ_{i₁}⋯σ_{i_p}``.

    A ``loss_fn(params=σ, batch=J)``. It is homogeneous of degree p, so ``σ·∇E = p E`` (Euler),
    and only meaningful on the sphere ``‖σ‖² = N`` (``project_to_sphere``); use
    ``sphere_gradient`` / ``sphere_hessian_operator`` for its Riemannian derivatives.

    Args:
      params: σ, shape ``(N,)``.
      batch: couplings ``J`` of shape ``(N,) * p`` from ``p_spin_glass``.
    """
    n = _vector("p_spin_energy", params).shape[0]
    p = jnp.ndim(batch)
    if p < 2 or jnp.shape(batch) != (n,) * p:
        raise ValueError(
            f"p_spin_energy: couplings (`batch`) must have shape (N,) * p with N = {n} (the "
            f"number of spins) and p >= 2, got {jnp.shape(batch)}."
        )
    h = batch
    for _ in range(p):
        h = h @ params
    return h / n ** ((p + 1) / 2)


def project_to_sphere(x) -> jax.Array:
    """``√N x / ‖x‖``: the closest point of the sphere ``‖σ‖² = N`` (N = ``x.size``)."""
    x = _vector("project_to_sphere", x, name="x")
    return x * (math.sqrt(x.shape[0]) / jnp.linalg.norm(x))


def random_spins(key, *, num_spins: int, dtype=None) -> jax.Array:
    """A uniformly random point of the sphere ``‖σ‖² = N``."""
    _checks.check_key("random_spins", key)
    n = _checks.check_positive_int("random_spins", "num_spins", num_spins)
    return project_to_sphere(jax.random.normal(key, (n,), check_float_dtype("random_spins", dtype)))


def _tangent(x: jax.Array) -> Callable[[jax.Array], jax.Array]:
    return lambda v: v - (v @ x / (x @ x)) * x


def sphere_gradient(loss_fn: LossFn, params, batch) -> jax.Array:
    """Riemannian gradient on the sphere of radius ``‖x‖`` through ``x = params``:
    ``P ∇f`` with ``P = I - xxᵀ/‖x‖²`` (orthogonal to x)."""
    x = _vector("sphere_gradient", params)
    return _tangent(x)(jax.grad(loss_fn)(x, batch))


def sphere_hessian_operator(loss_fn: LossFn, params, batch) -> Callable[[jax.Array], jax.Array]:
    """Riemannian Hessian on the sphere of radius ``‖x‖``, as ``matvec(v)``:
    ``P (∇²f - (x·∇f / ‖x‖²) I) P v`` (Absil, Mahony & Sepulchre 2008, §5.5).

    It is the Hessian of the pullback ``v ↦ f(R_x(v))`` along the (second-order) projection
    retraction ``R_x(v) = ‖x‖ (x + v)/‖x + v‖``; its eigenvalues on the tangent space give the
    index of a critical point on the sphere, and the normal direction x is mapped to 0.
    """
    x = _vector("sphere_hessian_operator", params)
    g, hess = jax.linearize(lambda z: jax.grad(loss_fn)(z, batch), x)
    shift, proj = g @ x / (x @ x), _tangent(x)

    def matvec(v):
        pv = proj(v)
        return proj(hess(pv) - shift * pv)

    return matvec


def sphere_hessian_matrix(loss_fn: LossFn, params, batch) -> jax.Array:
    """Dense ``(N, N)`` Riemannian Hessian (``sphere_hessian_operator`` on the identity); its
    N - 1 tangent eigenvalues plus one 0 for the normal direction."""
    x = _vector("sphere_hessian_matrix", params)
    return jax.vmap(sphere_hessian_operator(loss_fn, x, batch))(jnp.eye(x.shape[0], dtype=x.dtype))
