"""Trace and density estimators on operators whose spectra are known in closed form.

Monte Carlo checks are stated in standard errors: an estimate must fall within 4 of its own
reported standard errors of the truth (a 1-in-16,000 false alarm per check for a Gaussian).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxscape as js

Z = 4.0  # standard errors allowed for Monte Carlo checks


def goe(n, seed):
    """GOE scaled to the semicircle on [-2, 2]: off-diagonal variance 1/n."""
    a = np.random.default_rng(seed).standard_normal((n, n))
    return jnp.asarray((a + a.T) / np.sqrt(2 * n))


def wishart(n, m, seed):
    """XᵀX / m with X (m × n) Gaussian: Marchenko-Pastur with ratio q = n / m."""
    x = np.random.default_rng(seed).standard_normal((m, n))
    return jnp.asarray(x.T @ x / m)


def semicircle(t):
    return np.sqrt(np.clip(4 - t**2, 0, None)) / (2 * np.pi)


def marchenko_pastur(t, q):
    a, b = (1 - np.sqrt(q)) ** 2, (1 + np.sqrt(q)) ** 2
    inside = (t > a) & (t < b)
    safe_t = np.where(inside, t, 1.0)
    return np.where(
        inside, np.sqrt(np.clip((b - t) * (t - a), 0, None)) / (2 * np.pi * q * safe_t), 0
    )


def density_of(A, key, **kw):
    n = A.shape[0]
    return jax.jit(lambda key: js.spectral_density(key, lambda v: A @ v, jnp.zeros(n), **kw))(key)


# --------------------------------------------------------------------------- trace


def test_hutchinson_is_exact_on_a_diagonal():
    d = jnp.linspace(-3.0, 7.0, 200)
    est = js.estimate_trace(
        jax.random.key(0), lambda v: d * v, jnp.zeros(200), num_matvecs=5, method="hutchinson"
    )
    np.testing.assert_allclose(est.value, jnp.sum(d), rtol=1e-12)  # zᵢ² = 1: no variance
    assert float(est.stderr) < 1e-9


@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_trace_within_standard_errors_on_goe(method, seed):
    A = goe(300, seed)
    est = js.estimate_trace(
        jax.random.key(seed), lambda v: A @ v, jnp.zeros(300), num_matvecs=60, method=method
    )
    assert abs(float(est.value) - float(jnp.trace(A))) < Z * float(est.stderr)
    assert est.num_matvecs == 60


def test_hutchpp_beats_hutchinson_on_low_rank_plus_identity():
    n, r = 400, 8
    rng = np.random.default_rng(0)
    U = np.linalg.qr(rng.standard_normal((n, r)))[0]
    A = jnp.asarray(np.eye(n) + U @ np.diag(np.geomspace(50, 500, r)) @ U.T)
    mv, truth = (lambda v: A @ v), float(jnp.trace(A))
    errors = {"hutchinson": [], "hutch++": []}
    for seed in range(12):
        for method in errors:
            est = js.estimate_trace(
                jax.random.key(seed), mv, jnp.zeros(n), num_matvecs=36, method=method
            )
            errors[method].append(abs(float(est.value) - truth))
    assert np.mean(errors["hutch++"]) < 0.1 * np.mean(errors["hutchinson"]), errors


# --------------------------------------------------------------------------- density


def test_slq_moments_match_exact_moments():
    """Gauss quadrature is exact for degree < 2m: the only error left is the probes'."""
    A = goe(400, 4)
    dens = density_of(A, jax.random.key(4), num_probes=30, num_iters=20)
    exact = np.linalg.eigvalsh(np.asarray(A))
    for p in (1, 2, 3, 4):
        per_probe = np.sum(np.asarray(dens.weights) * np.asarray(dens.nodes) ** p, axis=1)
        se = per_probe.std(ddof=1) / np.sqrt(per_probe.size)
        assert abs(per_probe.mean() - np.mean(exact**p)) < Z * se + 1e-12, p


def test_slq_density_matches_semicircle():
    A = goe(1000, 5)
    grid = jnp.linspace(-2.5, 2.5, 201)
    dens = density_of(A, jax.random.key(5), num_probes=32, num_iters=60, sigma=0.08, grid=grid)
    got = np.asarray(dens.density)
    # Probe noise: a Rademacher probe's estimate of the σ-smoothed density at t has standard
    # deviation ≈ sqrt(2 ρ(t) / (2σ√π n)) ≈ 0.046, so 0.008 for 32 probes; the bound below is
    # about 6 of those (the max runs over ~40 independent grid cells). Broadening bias < 0.002.
    np.testing.assert_allclose(np.trapezoid(got, np.asarray(grid)), 1.0, atol=1e-3)
    interior = np.abs(np.asarray(grid)) < 1.6  # away from the edges, where broadening rounds
    err = np.abs(got - semicircle(np.asarray(grid)))[interior]
    assert err.max() < 0.05, err.max()
    assert np.abs(got[np.abs(np.asarray(grid)) > 2.4]).max() < 0.01


def test_slq_density_matches_marchenko_pastur():
    q = 0.5
    A = wishart(600, 1200, 6)
    grid = jnp.linspace(0.0, 3.5, 281)
    dens = density_of(A, jax.random.key(6), num_probes=16, num_iters=60, sigma=0.05, grid=grid)
    t = np.asarray(grid)
    got, want = np.asarray(dens.density), marchenko_pastur(t, q)
    interior = (t > 0.4) & (t < 2.6)
    assert np.abs(got - want)[interior].max() < 0.06, np.abs(got - want)[interior].max()


def test_negative_fraction_of_goe():
    A = goe(500, 7)
    exact = float(np.mean(np.linalg.eigvalsh(np.asarray(A)) < 0))
    dens = density_of(A, jax.random.key(7), num_probes=40, num_iters=40)
    masses = np.sum(np.where(np.asarray(dens.nodes) < 0, np.asarray(dens.weights), 0), axis=1)
    se = masses.std(ddof=1) / np.sqrt(masses.size)
    assert abs(float(js.negative_fraction(dens)) - exact) < Z * se
    assert float(js.negative_fraction(jnp.linalg.eigvalsh(A))) == pytest.approx(exact)


def test_negative_fraction_of_shifted_diagonal():
    d = jnp.concatenate([-jnp.ones(30), jnp.ones(70)])
    dens = js.spectral_density(
        jax.random.key(0), lambda v: d * v, jnp.zeros(100), num_probes=200, num_iters=10
    )
    masses = np.sum(np.where(np.asarray(dens.nodes) < 0, np.asarray(dens.weights), 0), axis=1)
    se = masses.std(ddof=1) / np.sqrt(masses.size)
    assert abs(float(js.negative_fraction(dens)) - 0.3) < Z * se + 1e-12  # Rademacher: se = 0


def test_eigsh_on_diagonal_with_a_cluster():
    d = jnp.concatenate([jnp.asarray([5.0, 4.999, 4.998]), jnp.linspace(-1.0, 1.0, 297)])
    eigs = js.eigsh(
        jax.random.key(0), lambda v: d * v, jnp.zeros(300), k=3, num_iters=200, tol=1e-10
    )
    np.testing.assert_allclose(eigs.eigenvalues, [4.998, 4.999, 5.0], rtol=1e-9)


def test_spectral_density_is_rank_deficient_safe():
    B = np.random.default_rng(0).standard_normal((80, 2))
    A = jnp.asarray(B @ B.T)
    dens = density_of(A, jax.random.key(0), num_probes=3, num_iters=30)
    assert np.all(np.isfinite(np.asarray(dens.density)))
    np.testing.assert_allclose(np.asarray(dens.weights).sum(axis=1), 1.0, rtol=1e-10)
    top = np.linalg.eigvalsh(np.asarray(A))[-1]
    assert np.isclose(np.asarray(dens.nodes).max(), top, rtol=1e-8)


def test_eigsh_fifty_eigenpairs():
    d = jnp.linspace(-1.0, 3.0, 400) ** 3  # distinct, with a spread-out top
    eigs = jax.jit(
        lambda key: js.eigsh(key, lambda v: d * v, jnp.zeros(400), k=50, num_iters=400, tol=1e-10)
    )(jax.random.key(0))
    np.testing.assert_allclose(eigs.eigenvalues, np.sort(np.asarray(d))[-50:], rtol=1e-9, atol=1e-9)
    assert bool(eigs.converged)


@pytest.mark.parametrize("estimator", ["trace", "density"])
def test_same_key_same_probes_other_key_other_probes(estimator):
    A = goe(60, 9)

    def run(seed):
        key = jax.random.key(seed)
        if estimator == "trace":
            return np.asarray(
                js.estimate_trace(key, lambda v: A @ v, jnp.zeros(60), num_matvecs=9).value
            )
        return np.asarray(
            js.spectral_density(
                key, lambda v: A @ v, jnp.zeros(60), num_probes=3, num_iters=5
            ).nodes
        )

    np.testing.assert_array_equal(run(0), run(0))
    assert not np.array_equal(run(0), run(1))
