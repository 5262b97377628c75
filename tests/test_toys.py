"""Toy landscapes: every stated critical point, gradient, Hessian and learning curve against its
closed form. Monte Carlo checks allow Z standard errors (Z = 4: a 1-in-16,000 false alarm per
check for a Gaussian; 5 where a dozen coordinates are checked at once).

Autodiff runs under ``jax.jit`` (compiled once per function and shape) and test-side random
points come from NumPy: eager autodiff and eager ``jax.random`` compile per call and shape.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import EXACT, rel_err
from jax.flatten_util import ravel_pytree

from jaxscape import curvature
from jaxscape import toys as T

F64 = jnp.float64
Z = 4.0


@functools.cache
def _jitted(fn, what):
    programs = {
        "value": fn,
        "grad": jax.grad(fn),
        "hess": jax.hessian(fn),
        "both": lambda p, b: (jax.grad(fn)(p, b), jax.hessian(fn)(p, b)),
    }
    return jax.jit(programs[what])


def value(fn, params, batch=None):
    return _jitted(fn, "value")(params, batch)


def grad(fn, params, batch=None):
    return _jitted(fn, "grad")(params, batch)


def hess(fn, params, batch=None):
    return _jitted(fn, "hess")(params, batch)


def grad_hess(fn, params, batch=None):
    """Gradient and Hessian from one compiled program."""
    return _jitted(fn, "both")(params, batch)


def normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


# --------------------------------------------------------------------------- 2-D critical points

EXAMPLES = T.critical_point_examples(dtype=F64)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_registry_gradient_and_hessian_are_exact(name):
    ex = EXAMPLES[name]
    assert ex.name == name and ex.kind in ("minimum", "maximum", "saddle")
    g, H = grad_hess(ex.loss_fn, ex.point)
    np.testing.assert_allclose(g, 0, atol=1e-12)
    np.testing.assert_allclose(H, ex.hessian, rtol=EXACT, atol=1e-9)
    singular = np.min(np.abs(np.linalg.eigvalsh(np.asarray(ex.hessian)))) < 1e-9
    assert ex.degenerate == singular


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_registry_kind_is_the_truth_on_a_small_sphere(name):
    """The stated kind, checked without the Hessian: on a sphere of radius 0.01 around the point
    (2,000 directions) the loss is all above (minimum), all below (maximum) or both (saddle)."""
    ex = EXAMPLES[name]
    d = normal(0, (2000, ex.point.size))
    d = 1e-2 * d / jnp.linalg.norm(d, axis=1, keepdims=True)
    around = jax.jit(jax.vmap(ex.loss_fn, in_axes=(0, None)))(
        ex.point + jnp.concatenate([0 * d[:1], d]), None
    )
    delta = around[1:] - around[0]
    sides = (bool(jnp.any(delta > 1e-14)), bool(jnp.any(delta < -1e-14)))
    assert (
        sides
        == {"minimum": (True, False), "maximum": (False, True), "saddle": (True, True)}[ex.kind]
    )


def test_toys_plug_into_jaxscape_curvature():
    ex = EXAMPLES["rosenbrock"]
    dense = curvature.hessian_matrix(ex.loss_fn, ex.point, None)
    np.testing.assert_allclose(dense, ex.hessian, rtol=EXACT)
    v = jnp.asarray([1.0, -2.0], F64)
    hv = curvature.hvp(ex.loss_fn, ex.point, None, v)
    np.testing.assert_allclose(hv, ex.hessian @ v, rtol=EXACT)


def test_hessian_cannot_tell_degenerate_minimum_from_degenerate_saddle():
    lo, sa = EXAMPLES["degenerate_minimum"], EXAMPLES["degenerate_saddle"]
    np.testing.assert_array_equal(hess(lo.loss_fn, lo.point), hess(sa.loss_fn, sa.point))
    y = jnp.asarray([0.0, 0.1], F64)  # along the null direction the quartic term decides
    assert float(T.degenerate_minimum(y)) > 0 > float(T.degenerate_saddle(y))


def rosenbrock_ab(x, ab):
    return T.rosenbrock(x, a=ab[0], b=ab[1])


@pytest.mark.parametrize("n", [2, 3, 5])
def test_rosenbrock_hessian_closed_form_at_random_points(n):
    ab = jnp.asarray([1.3, 7.0], F64)
    closed = jax.jit(lambda x: T.rosenbrock_hessian(x, a=1.3, b=7.0))
    for seed in range(3):
        x = normal(seed, (n,))
        np.testing.assert_allclose(closed(x), grad_hess(rosenbrock_ab, x, ab)[1], rtol=EXACT)


@pytest.mark.parametrize(("n", "a", "b"), [(2, 1.0, 100.0), (2, -1.5, 7.0), (5, 1.0, 100.0)])
def test_rosenbrock_minimum(n, a, b):
    x, ab = T.rosenbrock_minimum(num_dims=n, a=a, dtype=F64), jnp.asarray([a, b], F64)
    assert float(value(rosenbrock_ab, x, ab)) == 0.0
    g, H = grad_hess(rosenbrock_ab, x, ab)
    np.testing.assert_allclose(g, 0, atol=1e-12)
    if n == 2:
        want = [[2 + 8 * b * a * a, -4 * b * a], [-4 * b * a, 2 * b]]
        np.testing.assert_allclose(H, want, rtol=EXACT)
    assert float(jnp.linalg.eigvalsh(H)[0]) > 0


def test_rosenbrock_4d_has_a_second_worse_local_minimum():
    """Newton from (-1, 1, 1, 1) lands on a local minimum with loss ≈ 3.70 > 0 (Shang & Qiu)."""

    @jax.jit
    def newton(x):
        def step(_, x):
            return x - jnp.linalg.solve(T.rosenbrock_hessian(x), jax.grad(T.rosenbrock)(x))

        return jax.lax.fori_loop(0, 30, step, x)

    x = newton(jnp.asarray([-1.0, 1.0, 1.0, 1.0], F64))
    g, H = (np.asarray(a) for a in grad_hess(T.rosenbrock, x))
    assert np.linalg.norm(g) < 1e-10 and np.linalg.eigvalsh(H)[0] > 0
    assert 3.6 < float(value(T.rosenbrock, x)) < 3.8 and float(x[0]) < -0.7


def test_quadratic_valley_condition_number():
    loss = lambda p, _: T.quadratic_valley(p, condition_number=1e3, angle=0.3)  # noqa: E731
    H = hess(loss, jnp.asarray([0.4, -2.0], F64))  # a quadratic: the same Hessian everywhere
    np.testing.assert_allclose(jnp.linalg.eigvalsh(H), [1.0, 1e3], rtol=EXACT)
    across = jnp.asarray([math.cos(0.3), math.sin(0.3)], F64)
    np.testing.assert_allclose(H @ across, 1e3 * across, rtol=EXACT)


def test_two_d_losses_jit_like_eager():
    p = jnp.asarray([0.3, -0.7], F64)
    for ex in EXAMPLES.values():
        if ex.point.size == 2:
            assert float(value(ex.loss_fn, p)) == pytest.approx(float(ex.loss_fn(p)), rel=EXACT)


# --------------------------------------------------------------------------- scalar deep chain


def chain(w, target):
    return T.deep_linear_chain(w, target=target)


@jax.jit
def chain_closed_forms(w, target):
    return T.deep_linear_chain_grad(w, target=target), T.deep_linear_chain_hessian(w, target=target)


@pytest.mark.parametrize("K", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("target", [1.0, -2.5])
def test_chain_gradient_and_hessian_closed_forms(K, target):
    """At the origin, a global minimum, random points and (K ≥ 3) a point with two zeros."""
    t = jnp.asarray(target, F64)
    w_min = jnp.full(K, abs(target) ** (1 / K), F64).at[0].multiply(np.sign(target))
    points = [jnp.zeros(K, F64), w_min] + [normal(seed, (K,)) for seed in range(3)]
    if K >= 3:
        points.append(normal(5, (K,)).at[jnp.asarray([0, 2])].set(0.0))
    for w in points:
        g, H = chain_closed_forms(w, t)
        g_auto, H_auto = grad_hess(chain, w, t)
        np.testing.assert_allclose(g_auto, g, rtol=EXACT, atol=1e-14)
        np.testing.assert_allclose(H_auto, H, rtol=EXACT, atol=1e-14)
    assert float(value(chain, w_min, t)) < 1e-28


@pytest.mark.parametrize("K", [2, 3, 4, 5])
def test_chain_origin_is_a_saddle_with_zero_hessian_beyond_depth_two(K):
    w, one = jnp.zeros(K, F64), jnp.asarray(1.0, F64)
    g, H = grad_hess(chain, w, one)
    np.testing.assert_array_equal(g, 0)
    if K == 2:
        np.testing.assert_allclose(H, [[0, -2], [-2, 0]], atol=1e-15)
        np.testing.assert_allclose(jnp.linalg.eigvalsh(H), [-2, 2], rtol=EXACT)
        H3 = grad_hess(chain, w, jnp.asarray(3.0, F64))[1]
        np.testing.assert_allclose(jnp.linalg.eigvalsh(H3), [-6, 6], rtol=EXACT)
    else:
        np.testing.assert_array_equal(H, 0)


@pytest.mark.parametrize("K", [1, 2, 3, 5])
def test_chain_global_minimum_has_rank_one_hessian(K):
    w, two = jnp.full(K, 2.0 ** (1 / K), F64), jnp.asarray(2.0, F64)
    eig = jnp.linalg.eigvalsh(grad_hess(chain, w, two)[1])
    q = 2.0 / w  # ∏_{k≠i} w_k at the minimum
    np.testing.assert_allclose(eig[-1], 2 * float(q @ q), rtol=EXACT)
    np.testing.assert_allclose(eig[:-1], 0, atol=1e-12)


# --------------------------------------------------------------------------- deep linear regression

SING = [3.0, 2.0, 1.0, 0.5]


@functools.cache
def saxe_problem(hidden_dim=4, num_layers=2, whiten=True, init_scale=1.0):
    return T.deep_linear_regression(
        jax.random.key(3),
        input_dim=5,
        output_dim=4,
        hidden_dim=hidden_dim,
        num_layers=num_layers,
        num_examples=40,
        singular_values=SING,
        whiten=whiten,
        init_scale=init_scale,
        dtype=F64,
    )


def test_deep_linear_problem_data():
    prob = saxe_problem(num_layers=3)
    x, y = (np.asarray(a) for a in prob.batch)
    np.testing.assert_allclose(x.T @ x / 40, np.eye(5), atol=1e-12)  # whitened
    corr = T.input_output_correlation(prob.batch)
    np.testing.assert_allclose(corr, y.T @ x / 40, rtol=EXACT)
    np.testing.assert_allclose(corr, prob.teacher, atol=1e-12)
    np.testing.assert_allclose(np.linalg.svd(np.asarray(corr), compute_uv=False), SING, rtol=1e-12)
    assert [w.shape for w in prob.params] == [(4, 5), (4, 4), (4, 4)]
    Ws = [np.asarray(w) for w in prob.params]
    np.testing.assert_allclose(
        T.deep_linear_product(prob.params), Ws[2] @ Ws[1] @ Ws[0], rtol=EXACT
    )
    at_teacher = SAXE_INIT(corr, hidden_dim=4, u0=jnp.asarray(SING, F64))  # u = s
    assert float(value(T.deep_linear_loss, at_teacher, prob.batch)) < 1e-25
    assert float(value(T.deep_linear_loss, prob.params, prob.batch)) > 0.5


def test_deep_linear_gradient_formula():
    prob = saxe_problem(num_layers=3, whiten=False)
    x, y = prob.batch
    Ws = prob.params
    resid = y.T @ x / 40 - T.deep_linear_product(Ws) @ (x.T @ x / 40)
    want = (-(Ws[2] @ Ws[1]).T @ resid, -Ws[2].T @ resid @ Ws[0].T, -resid @ (Ws[1] @ Ws[0]).T)
    assert rel_err(grad(T.deep_linear_loss, Ws, prob.batch), want) < EXACT


def test_deep_linear_origin_hessian():
    """K = 2: eigenvalues ±s_α, each `hidden_dim` times, zeros elsewhere; K = 3: zero Hessian."""
    prob = saxe_problem()
    zeros = jax.tree.map(jnp.zeros_like, prob.params)
    H = curvature.hessian_matrix(T.deep_linear_loss, zeros, prob.batch)
    nonzero = np.concatenate([-np.repeat(SING, 4), np.repeat(SING, 4)])
    want = np.sort(np.concatenate([nonzero, np.zeros(H.shape[0] - nonzero.size)]))
    np.testing.assert_allclose(np.linalg.eigvalsh(np.asarray(H)), want, atol=1e-10)
    prob3 = saxe_problem(num_layers=3)
    zeros3 = jax.tree.map(jnp.zeros_like, prob3.params)
    np.testing.assert_array_equal(
        curvature.hessian_matrix(T.deep_linear_loss, zeros3, prob3.batch), 0
    )


SAXE_INIT = jax.jit(T.saxe_init, static_argnames="hidden_dim")
SAXE_CURVE = jax.jit(T.saxe_learning_curve)


def test_saxe_curve_solves_its_ode():
    s, u0 = jnp.asarray([3.0, 1.0, 0.2, 0.0], F64), 1e-3
    t = jnp.linspace(0.0, 8.0, 33, dtype=F64)
    curve = SAXE_CURVE(s, u0, t)
    u = curve.mode_strengths
    np.testing.assert_allclose(u[0], u0, rtol=EXACT)
    velocity = jax.jit(jax.vmap(jax.jacfwd(lambda t: T.saxe_learning_curve(s, u0, t)[0])))(t)
    np.testing.assert_allclose(velocity, 2 * u * (s - u), rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(u[:, 3], u0 / (1 + 2 * u0 * t), rtol=EXACT)  # s = 0
    late = SAXE_CURVE(s, u0, jnp.full(4, 1e4, F64)).mode_strengths[0]
    np.testing.assert_allclose(late[:3], s[:3], rtol=EXACT)  # no overflow at large t
    half = T.saxe_half_time(s[:3], u0)
    at_half = SAXE_CURVE(s, u0, jnp.concatenate([half, jnp.ones(1, F64)])).mode_strengths
    np.testing.assert_allclose(jnp.diagonal(at_half)[:3], s[:3] / 2, rtol=EXACT)
    np.testing.assert_allclose(curve.loss, 0.5 * jnp.sum((s - u) ** 2, -1), rtol=EXACT)


@functools.partial(jax.jit, static_argnames="num_steps")
def rk4_products(params, batch, dt, *, num_steps):
    """Gradient flow dθ/dt = -∇L by classical RK4; the end-to-end matrix after every step."""

    def field(p):
        return jax.tree.map(jnp.negative, jax.grad(T.deep_linear_loss)(p, batch))

    def axpy(p, a, k):
        return jax.tree.map(lambda x, y: x + a * y, p, k)

    def step(p, _):
        k1 = field(p)
        k2 = field(axpy(p, dt / 2, k1))
        k3 = field(axpy(p, dt / 2, k2))
        k4 = field(axpy(p, dt, k3))
        p = axpy(p, dt / 6, jax.tree.map(lambda a, b, c, d: a + 2 * b + 2 * c + d, k1, k2, k3, k4))
        return p, T.deep_linear_product(p)

    return jax.lax.scan(step, params, None, length=num_steps)[1]


def test_saxe_closed_form_matches_gradient_flow_from_aligned_init():
    prob = saxe_problem()
    corr = T.input_output_correlation(prob.batch)
    dt, steps = 0.005, 2400
    init = SAXE_INIT(corr, hidden_dim=4, u0=1e-3)
    Ws = np.asarray(rk4_products(init, prob.batch, dt, num_steps=steps))
    U, s, Vt = np.linalg.svd(np.asarray(corr), full_matrices=False)
    modes = np.einsum("ia,tij,bj->tab", U, Ws, Vt)  # Uᵀ W(t) V: diagonal by the theory
    t = dt * np.arange(1, steps + 1)
    want = np.asarray(SAXE_CURVE(jnp.asarray(s), 1e-3, jnp.asarray(t)).mode_strengths)
    assert rel_err(np.diagonal(modes, axis1=1, axis2=2), want) < 1e-6
    assert np.max(np.abs(modes * (1 - np.eye(4)))) < 1e-9
    assert np.min(want[-1] / s) > 0.99  # the flow ran long enough to learn every mode


def test_saxe_half_times_hold_loosely_from_random_small_init():
    """From a random small init (neither balanced nor aligned) each mode is learned, within
    15%, at the closed-form half time with the effective u₀ = ‖W₁v_α + W₂ᵀu_α‖²/4 (the growing
    part of the flow linearized at 0)."""
    prob = saxe_problem(hidden_dim=24, init_scale=1e-3)
    U, s, Vt = np.linalg.svd(np.asarray(T.input_output_correlation(prob.batch)), False)
    W1, W2 = (np.asarray(w) for w in prob.params)
    u0 = np.sum((W1 @ Vt.T + W2.T @ U) ** 2, axis=0) / 4
    dt = 0.01
    Ws = np.asarray(rk4_products(prob.params, prob.batch, dt, num_steps=2000))
    modes = np.einsum("ia,tij,aj->ta", U, Ws, Vt)
    assert np.all(modes[-1] > s / 2)
    measured = dt * (1 + np.argmax(modes >= s / 2, axis=0))
    np.testing.assert_allclose(measured, np.log(s / u0 - 1) / (2 * s), rtol=0.15)
    np.testing.assert_allclose(T.saxe_half_time(s, u0), np.log(s / u0 - 1) / (2 * s), rtol=EXACT)


# --------------------------------------------------------------------------- p-spin glass


@functools.cache
def spins(n, seed):
    return T.random_spins(jax.random.key(seed), num_spins=n, dtype=F64)


@functools.cache
def couplings(n, p, seed=0):
    return T.p_spin_glass(jax.random.key(seed), num_spins=n, p=p, dtype=F64)


def test_p_spin_glass_couplings_are_iid_standard_normal():
    J = np.asarray(couplings(30, 2))
    assert J.shape == (30, 30) and J.dtype == np.float64
    assert abs(J.mean()) < Z / math.sqrt(J.size)
    assert abs(J.var() - 1) < Z * math.sqrt(2 / J.size)
    upper = np.triu_indices(30, 1)
    assert abs(np.mean(J[upper] * J.T[upper])) < Z / math.sqrt(upper[0].size)  # not symmetrized


@pytest.mark.parametrize("p", [2, 3, 4])
def test_p_spin_energy_has_the_stated_covariance(p):
    """E H = 0, E H(σ)H(σ') = N q^p at overlap q = σ·σ'/N, over 4,000 coupling draws."""
    n, m = 6, 4000
    sigma, other = spins(n, 0), T.project_to_sphere(spins(n, 0) + 0.8 * spins(n, 1))
    q = float(sigma @ other / n)
    draws = jnp.asarray(np.random.default_rng(p).standard_normal((m,) + (n,) * p))

    @jax.jit
    @jax.vmap
    def hamiltonians(J):
        return jnp.stack([T.p_spin_energy(sigma, J), T.p_spin_energy(other, J)]) * n

    H = np.asarray(hamiltonians(draws))
    var, cov = H[:, 0] ** 2, H[:, 0] * H[:, 1]
    assert abs(H[:, 0].mean()) < Z * H[:, 0].std() / math.sqrt(m)
    assert abs(var.mean() - n) < Z * var.std() / math.sqrt(m)
    assert abs(cov.mean() - n * q**p) < Z * cov.std() / math.sqrt(m)
    assert 0.1 < q**p < 0.9  # the covariance check is not vacuous


def test_p_spin_energy_contraction_euler_and_tangent_gradient():
    n, p = 6, 3
    J, sigma = couplings(n, p), spins(n, 0)
    energy = float(value(T.p_spin_energy, sigma, J))
    Jn, s = np.asarray(J), np.asarray(sigma)
    np.testing.assert_allclose(energy, np.einsum("ijk,i,j,k->", Jn, s, s, s) / n**2, rtol=EXACT)
    euler = s @ np.asarray(grad(T.p_spin_energy, sigma, J))
    np.testing.assert_allclose(euler, p * energy, rtol=EXACT)  # degree-p homogeneous
    g = np.asarray(jax.jit(T.sphere_gradient, static_argnums=0)(T.p_spin_energy, sigma, J))
    assert abs(g @ s) < 1e-14 * np.linalg.norm(g) * n
    assert np.linalg.norm(g) > 1e-3  # a random point is not critical
    np.testing.assert_allclose(s @ s, n, rtol=EXACT)


@pytest.mark.parametrize("p", [2, 3])
def test_sphere_hessian_is_the_hessian_of_the_retraction_pullback(p):
    """The projection retraction is second order, so the pullback's Hessian on the tangent
    space equals the Riemannian Hessian at every point, critical or not."""
    n = 6
    J, sigma = couplings(n, p), spins(n, 1)

    @jax.jit
    def both(v):
        pullback = lambda v: T.p_spin_energy(T.project_to_sphere(sigma + v), J)  # noqa: E731
        P = jnp.eye(n, dtype=F64) - jnp.outer(sigma, sigma) / n
        matvec = T.sphere_hessian_operator(T.p_spin_energy, sigma, J)
        riemann = T.sphere_hessian_matrix(T.p_spin_energy, sigma, J)
        return P @ jax.hessian(pullback)(jnp.zeros(n, F64)) @ P, riemann, matvec(v)

    v = normal(0, (n,))
    want, got, hv = both(v)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(hv, got @ v, rtol=EXACT)
    np.testing.assert_allclose(got @ sigma, 0, atol=1e-12)
    assert float(jnp.linalg.norm(got)) > 1e-2


def test_p2_ground_state_is_the_bottom_eigenvector():
    """p = 2: E = σᵀJσ/N^{3/2} is minimized by the bottom eigenvector of sym(J); there the
    Riemannian Hessian has eigenvalues 2(λ_i - λ_min)/N^{3/2} (λ_min itself: the normal 0)."""
    n = 30
    J = couplings(n, 2)
    lam, vecs = jnp.linalg.eigh((J + J.T) / 2)
    sigma = math.sqrt(n) * vecs[:, 0]
    np.testing.assert_allclose(value(T.p_spin_energy, sigma, J), lam[0] / math.sqrt(n), rtol=EXACT)
    g = jax.jit(T.sphere_gradient, static_argnums=0)(T.p_spin_energy, sigma, J)
    np.testing.assert_allclose(g, 0, atol=1e-13)
    riemann = jax.jit(T.sphere_hessian_matrix, static_argnums=0)(T.p_spin_energy, sigma, J)
    want = 2 * (lam - lam[0]) / n**1.5
    np.testing.assert_allclose(jnp.linalg.eigvalsh(riemann), want, atol=1e-12)
    assert -1.8 < float(lam[0]) / math.sqrt(n) < -1.1  # semicircle edge -√2, finite N


def test_p3_gradient_descent_finds_local_minima_near_the_threshold():
    """Riemannian gradient descent (N = 48, 6 starts) ends at local minima: zero Riemannian
    gradient, positive semi-definite Riemannian Hessian (its 0 is the normal direction), with
    energies per spin above the ground state -E₀ ≈ -1.657 (minus finite-N slack) and far below a
    random point's 0; the best start reaches (-1.75, -1.45) (threshold -E_∞ ≈ -1.633)."""
    n, starts = 48, 6

    @jax.jit
    def descend(key):
        J = T.p_spin_glass(key, num_spins=n, p=3, dtype=F64)

        def step(s, _):
            g = T.sphere_gradient(T.p_spin_energy, s, J)
            return T.project_to_sphere(s - 0.15 * n * g), None

        def one(k):
            s = jax.lax.scan(step, T.random_spins(k, num_spins=n, dtype=F64), None, length=1000)[0]
            lowest = jnp.linalg.eigvalsh(T.sphere_hessian_matrix(T.p_spin_energy, s, J))[:2]
            gnorm = jnp.linalg.norm(T.sphere_gradient(T.p_spin_energy, s, J))
            return T.p_spin_energy(s, J), gnorm * n, lowest * n

        return jax.vmap(one)(jax.random.split(jax.random.fold_in(key, 1), starts))

    energy, gnorm, lowest = (np.asarray(a) for a in descend(jax.random.key(3)))
    assert np.all(gnorm < 1e-6)
    assert np.all(np.abs(lowest[:, 0]) < 1e-8) and np.all(lowest[:, 1] > 1e-3)
    assert np.all((energy > -1.75) & (energy < -1.2))
    assert energy.min() < -1.45


# --------------------------------------------------------------------------- teacher-student


@functools.cache
def committee(input_dim, num_teacher, num_student, seed=0):
    return T.teacher_student(
        jax.random.key(seed),
        input_dim=input_dim,
        num_teacher=num_teacher,
        num_student=num_student,
        dtype=F64,
    )


def test_relu_kernel_known_values():
    u = jnp.asarray([[1.0, 2.0, -0.5]], F64)
    v = jnp.asarray([[2.0, -1.0, 0.0]], F64)  # orthogonal to u
    nu, nv = float(jnp.linalg.norm(u)), float(jnp.linalg.norm(v))
    kernel = jax.jit(T.relu_kernel)
    np.testing.assert_allclose(kernel(u, u), [[nu**2 / 2]], rtol=EXACT)
    np.testing.assert_allclose(kernel(u, -3 * u), [[0.0]], atol=1e-15)
    np.testing.assert_allclose(kernel(u, v), [[nu * nv / (2 * math.pi)]], rtol=EXACT)
    np.testing.assert_array_equal(kernel(u, jnp.zeros_like(u)), [[0.0]])
    zero_grad = jax.jit(jax.grad(lambda z: T.relu_kernel(z, u)[0, 0]))(0 * u)
    np.testing.assert_array_equal(zero_grad, 0)


def test_teacher_and_its_permutations_are_global_minima():
    ts = committee(6, 4, 4)
    V = np.asarray(ts.teacher)
    np.testing.assert_allclose(V @ V.T, np.eye(4), atol=1e-14)  # orthonormal rows
    assert float(value(T.teacher_student_loss, ts.student, ts.teacher)) > 0.05  # the init is not
    # n = k: permutations; n = 6 > k: two zero rows, or the first unit split into two halves
    candidates = [V[[0, 1, 2, 3]], V[[2, 0, 3, 1]], V[[3, 2, 1, 0]]]
    candidates += [np.concatenate([V, np.zeros((2, 6))])]
    candidates += [np.concatenate([V * [[0.5], [1], [1], [1]], 0.5 * V[:1], np.zeros((1, 6))])]
    for W in candidates:
        W = jnp.asarray(W)
        assert abs(float(value(T.teacher_student_loss, W, ts.teacher))) < 1e-14
        assert float(jnp.max(jnp.abs(grad(T.teacher_student_loss, W, ts.teacher)))) < 1e-14


def test_teacher_student_hessian_at_the_teacher_is_finite_and_matches_finite_differences():
    V = committee(6, 4, 4).teacher
    H = hess(T.teacher_student_loss, V, V).reshape(24, 24)
    assert np.all(np.isfinite(H)) and float(jnp.linalg.eigvalsh(H)[0]) > -1e-12
    eps, E = 1e-6, jnp.eye(24, dtype=F64).reshape(24, 4, 6)

    @jax.jit
    @jax.vmap
    def central_difference(e):
        g = jax.grad(T.teacher_student_loss)
        return ((g(V + eps * e, V) - g(V - eps * e, V)) / (2 * eps)).reshape(-1)

    np.testing.assert_allclose(H, central_difference(E), atol=1e-6)
    assert float(jnp.max(jnp.abs(H))) > 0.1


def test_sampled_loss_and_gradient_agree_with_the_closed_form():
    ts = committee(4, 2, 3)
    m = 20_000
    x, y = T.teacher_student_data(jax.random.key(3), ts.teacher, num_examples=m)
    W = ts.student

    @jax.jit
    @jax.vmap
    def per_example(xi, yi):
        batch = (xi[None], yi[None])
        loss, g = jax.value_and_grad(T.teacher_student_sampled_loss)(W, batch)
        return loss, g.reshape(-1)

    losses, grads = (np.asarray(a) for a in per_example(x, y))
    mean = float(value(T.teacher_student_sampled_loss, W, (x, y)))
    np.testing.assert_allclose(mean, losses.mean(), rtol=EXACT)
    pop = float(value(T.teacher_student_loss, W, ts.teacher))
    assert abs(mean - pop) < Z * losses.std() / math.sqrt(m)
    want = np.asarray(grad(T.teacher_student_loss, W, ts.teacher)).reshape(-1)
    assert np.all(np.abs(grads.mean(0) - want) < 5 * grads.std(0) / math.sqrt(m))


# --------------------------------------------------------------------------- single neurons

W_STAR = np.asarray([1.0, -0.5, 2.0])


def test_relu_neuron_closed_forms():
    w_star = jnp.asarray(W_STAR)
    assert abs(float(value(T.relu_neuron_loss, w_star, w_star))) < 1e-15
    np.testing.assert_allclose(grad(T.relu_neuron_loss, w_star, w_star), 0, atol=1e-15)
    closed = jax.jit(T.relu_neuron_grad)
    for seed in range(4):
        w = normal(seed, (3,))
        autodiff = grad(T.relu_neuron_loss, w, w_star)
        np.testing.assert_allclose(autodiff, closed(w, w_star), rtol=EXACT)
    np.testing.assert_allclose(closed(-2 * w_star, w_star), -w_star, rtol=EXACT)


def test_relu_neuron_gradient_descent_reaches_the_teacher():
    w_star = jnp.asarray(W_STAR)

    @jax.jit
    @jax.vmap
    def descend(w):
        step = lambda _, w: w - 0.5 * T.relu_neuron_grad(w, w_star)  # noqa: E731
        return jax.lax.fori_loop(0, 1000, step, w)

    nearly_antiparallel = -0.7 * w_star + 0.05 * jnp.asarray([2.0, 2.0, -0.5])  # θ ≈ π - 0.05
    ends = descend(jnp.concatenate([normal(0, (3, 3)), nearly_antiparallel[None]]))
    np.testing.assert_allclose(ends, jnp.tile(w_star, (4, 1)), atol=1e-8)


def sigmoid_1d(w, batch):
    return T.sigmoid_neuron_loss(jnp.reshape(w, (1,)), batch)


@jax.jit
def sigmoid_local_search(w, batch):
    """1,000 gradient steps then 8 Newton steps: a local minimizer, with its slope and curvature."""
    g, h = jax.grad(sigmoid_1d), jax.grad(jax.grad(sigmoid_1d))
    w = jax.lax.fori_loop(0, 1000, lambda _, w: w - 0.4 * g(w, batch), w)
    w = jax.lax.fori_loop(0, 8, lambda _, w: w - g(w, batch) / h(w, batch), w)
    return w, sigmoid_1d(w, batch), g(w, batch), h(w, batch)


@jax.jit
def sigmoid_corners(corners, batch):
    derivs = lambda w: (  # noqa: E731
        T.sigmoid_neuron_loss(w, batch),
        jax.grad(T.sigmoid_neuron_loss)(w, batch),
        jax.hessian(T.sigmoid_neuron_loss)(w, batch),
    )
    return jax.vmap(derivs)(corners)


def test_sigmoid_neuron_has_two_local_minima_in_1d_and_2_to_the_d_in_3d():
    batch = T.sigmoid_neuron_data(num_dims=1, dtype=F64)
    found = [sigmoid_local_search(jnp.asarray(w0, F64), batch) for w0 in (-1.0, 2.6)]
    (lo, f_lo, *_), (hi, f_hi, *_) = ((float(a) for a in r) for r in found)
    for _, _, slope, curvature_ in found:
        assert abs(float(slope)) < 1e-14 and float(curvature_) > 1e-3
    assert abs(lo - 0.015) < 0.01 and abs(hi - 2.0) < 0.05
    assert f_hi - f_lo > 0.02  # two minima, one strictly worse
    between = jnp.linspace(lo, hi, 200, dtype=F64)
    barrier = jax.jit(jax.vmap(sigmoid_1d, in_axes=(0, None)))(between, batch)
    assert float(jnp.max(barrier)) > f_hi + 0.01

    d = 3
    corners = jnp.asarray(list(itertools.product([lo, hi], repeat=d)), F64)
    losses, grads, hessians = sigmoid_corners(corners, T.sigmoid_neuron_data(num_dims=d, dtype=F64))
    assert float(jnp.max(jnp.abs(grads))) < 1e-14
    assert float(jnp.min(jnp.linalg.eigvalsh(hessians))) > 1e-4
    want = jnp.sum(jnp.where(corners == lo, f_lo, f_hi), axis=1) / d  # separable
    np.testing.assert_allclose(losses, want, rtol=EXACT)
    assert len({round(float(v), 10) for v in losses}) == d + 1


# --------------------------------------------------------------------------- bad local minimum


def test_relu_bad_minimum_is_a_local_minimum_above_the_global_one():
    ex = T.relu_bad_minimum(dtype=F64)
    bad, best, loss = ex.local_minimum, ex.global_minimum, T.relu_regression_loss
    assert float(value(loss, bad, ex.batch)) == pytest.approx(0.125, rel=EXACT)
    assert float(value(loss, best, ex.batch)) == 0.0
    np.testing.assert_array_equal(ravel_pytree(grad(loss, bad, ex.batch))[0], 0)
    eig = jnp.linalg.eigvalsh(curvature.hessian_matrix(loss, bad, ex.batch))
    assert float(eig[0]) > -1e-12 and float(jnp.min(jnp.abs(eig))) < 1e-12  # flat directions
    flat, unravel = ravel_pytree(bad)
    shifts = jnp.asarray(np.random.default_rng(0).uniform(-0.3, 0.3, (5000, flat.size)))
    nearby = jax.jit(jax.vmap(lambda v: loss(unravel(flat + v), ex.batch)))(shifts)
    assert float(jnp.min(nearby)) >= 0.125 - 1e-14
    # ... while the straight path to the global minimum does go below it, further out
    near_best = unravel(0.1 * flat + 0.9 * ravel_pytree(best)[0])
    assert float(value(loss, near_best, ex.batch)) < 0.125


# --------------------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"quadratic_bowl: `params` must be shape \(2,\), got"):
        T.quadratic_bowl(jnp.zeros(3))
    with pytest.raises(ValueError, match=r"`params` must be a 1-D array of length >= 2"):
        T.rosenbrock(jnp.zeros(1))
    with pytest.raises(ValueError, match="closed form only for a = 0 or a = 1"):
        T.rosenbrock_minimum(num_dims=3, a=2.0)
    with pytest.raises(ValueError, match=r"`condition_number` must be >= 1, got 0\.5"):
        T.quadratic_valley(jnp.zeros(2), condition_number=0.5)
    with pytest.raises(ValueError, match=r"deep_linear_chain: `params` must be a 1-D array"):
        T.deep_linear_chain(jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"must be 2-D matrices .* that chain, got shapes"):
        T.deep_linear_loss((jnp.zeros((3, 2)), jnp.zeros((1, 4))), (jnp.zeros((5, 2)),) * 2)
    with pytest.raises(ValueError, match=r"x of shape \(N, 2\) and y of shape \(N, 1\)"):
        T.deep_linear_loss((jnp.zeros((3, 2)), jnp.zeros((1, 3))), (jnp.zeros((5, 3)),) * 2)
    with pytest.raises(ValueError, match="non-empty tuple/list of weight matrices"):
        T.deep_linear_loss(jnp.zeros((3, 2)), (jnp.zeros((5, 2)), jnp.zeros((5, 3))))
    dims = dict(input_dim=5, output_dim=2, hidden_dim=2)
    with pytest.raises(ValueError, match="whitening needs num_examples >= input_dim"):
        T.deep_linear_regression(key, **dims, num_layers=2, num_examples=3)
    with pytest.raises(ValueError, match=r"`singular_values` must be 1-D of length 1\.\.2"):
        T.deep_linear_regression(
            key, **dims, num_layers=2, num_examples=9, singular_values=[1, 2, 3]
        )
    with pytest.raises(ValueError, match="`num_layers` must be an integer >= 1, got 0"):
        T.deep_linear_regression(key, **dims, num_layers=0, num_examples=9)
    with pytest.raises(ValueError, match="`p` must be an integer >= 2, got 1"):
        T.p_spin_glass(key, num_spins=5, p=1)
    with pytest.raises(ValueError, match=r"100\*\*5 = 10,000,000,000 entries"):
        T.p_spin_glass(key, num_spins=100, p=5)
    with pytest.raises(ValueError, match=r"shape \(N,\) \* p with N = 4"):
        T.p_spin_energy(jnp.ones(4), jnp.ones((5, 5, 5)))
    with pytest.raises(TypeError, match=r"`key` must be a jax\.random key"):
        T.p_spin_glass(0, num_spins=5, p=3)
    with pytest.raises(
        ValueError, match=r"`num_student` must be >= num_teacher=3 .*got num_student=2"
    ):
        T.teacher_student(key, input_dim=5, num_teacher=3, num_student=2)
    with pytest.raises(ValueError, match="needs input_dim >= num_teacher, got input_dim=2"):
        T.teacher_student(key, input_dim=2, num_teacher=3, num_student=3)
    with pytest.raises(ValueError, match=r"must be \(n, d\) .* got \(3, 4\) and \(2, 5\)"):
        T.teacher_student_loss(jnp.ones((3, 4)), jnp.ones((2, 5)))
    with pytest.raises(ValueError, match=r"relu_neuron_loss: `batch` must be shape \(3,\)"):
        T.relu_neuron_loss(jnp.ones(3), jnp.ones(4))
    with pytest.raises(ValueError, match=r"inputs x must have shape \(N, 2\)"):
        T.sigmoid_neuron_loss(jnp.ones(2), (jnp.ones((4, 3)), jnp.ones(4)))
    with pytest.raises(TypeError, match=r"`dtype` must be a floating-point dtype, got .*int32"):
        T.random_spins(key, num_spins=4, dtype=jnp.int32)
    with pytest.raises(ValueError, match="`hidden_dim` must be an integer >= 1, got 0"):
        T.saxe_init(jnp.ones((2, 3)), hidden_dim=0, u0=1e-3)
