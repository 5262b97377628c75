"""Critical points: classification against known answers and dense eigh, and the search."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import mlp_apply, mlp_params
from jax.flatten_util import ravel_pytree

from jaxscape import hessian_matrix, toys
from jaxscape.critical import classify, find_critical_point, find_critical_points

EXAMPLES = toys.critical_point_examples()
KEY = jax.random.key(0)


def peano(params, batch=None):
    """``(x - y²)(x - 2y²)``: a minimum along every line through 0, yet a saddle there."""
    x, y = params[0], params[1]
    return (x - y**2) * (x - 2 * y**2)


# --------------------------------------------------------------------------- classification


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_hessian_verdict_and_spectrum_match_the_exact_hessian(name):
    ex = EXAMPLES[name]
    point = classify(ex.loss_fn, ex.point, None)
    exact = np.linalg.eigvalsh(np.asarray(ex.hessian))
    np.testing.assert_allclose(point.eigenvalues, exact, atol=1e-10 * max(1, abs(exact).max()))
    assert point.probe is None  # no key: no probe
    # every degenerate example has a semi-definite Hessian: the second-order test is undecided
    assert point.kind == ("degenerate" if ex.degenerate else ex.kind)
    assert point.index == pytest.approx(np.mean(exact < -point.eig_tol))
    assert point.num_negative + point.num_zero + point.num_positive == exact.size


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_probe_decides_every_seed_toy(name):
    ex = EXAMPLES[name]
    point = classify(ex.loss_fn, ex.point, None, key=KEY)
    assert point.kind == ex.kind
    if ex.degenerate and ex.name != "chain2_origin":
        assert point.hessian_kind == "degenerate"
        assert point.probe is not None and point.probe.kind == ex.kind


def test_degenerate_pair_and_monkey_saddle_need_the_probe():
    zero = jnp.zeros(2)
    for fn in (toys.degenerate_minimum, toys.degenerate_saddle, toys.monkey_saddle):
        assert classify(fn, zero, None).kind == "degenerate"
    assert classify(toys.degenerate_minimum, zero, None, key=KEY).kind == "minimum"
    assert classify(toys.degenerate_saddle, zero, None, key=KEY).kind == "saddle"
    monkey = classify(toys.monkey_saddle, zero, None, key=KEY)
    assert (monkey.hessian_kind, monkey.kind) == ("degenerate", "saddle")
    probe = monkey.probe
    assert probe.min_change < -probe.noise < probe.noise < probe.max_change


def test_probe_minimizes_over_the_range_so_peano_is_a_saddle():
    point = classify(peano, jnp.zeros(2), None, key=KEY)
    assert point.hessian_kind == "degenerate"
    assert point.kind == "saddle"
    # along the null direction alone (x = 0) the loss rises as 2y⁴: only the reduction sees descent
    r = point.probe.radius
    assert peano(jnp.asarray([0.0, r])) > 0 > point.probe.min_change


@pytest.mark.parametrize("depth", [2, 3, 4, 5])
def test_deep_linear_chain_origin(depth):
    point = classify(toys.deep_linear_chain, jnp.zeros(depth), None, key=KEY)
    assert point.kind == "saddle"
    if depth == 2:  # strict saddle, eigenvalues ±2
        assert point.hessian_kind == "saddle" and point.probe is None
        np.testing.assert_allclose(point.eigenvalues, [-2.0, 2.0], atol=1e-12)
    else:  # zero Hessian: only the higher-order probe sees the saddle
        assert point.hessian_kind == "degenerate"
        np.testing.assert_array_equal(point.eigenvalues, np.zeros(depth))
        assert point.probe.min_change < 0 < point.probe.max_change


def test_not_critical_reports_the_gradient_and_the_curvature():
    point = classify(toys.quadratic_saddle, jnp.asarray([0.5, 0.0]), None)
    assert point.kind == "not-critical"
    assert point.hessian_kind == "saddle"
    assert point.grad_norm == pytest.approx(1.0)
    assert classify(toys.quadratic_saddle, jnp.asarray([0.5, 0.0]), None, grad_tol=2.0).kind == (
        "saddle"
    )


def test_tolerances_are_relative_to_the_spectrum_scale():
    """The same shape at any scale gets the same verdict; the result states the tolerances."""
    for s in (1e-6, 1.0, 1e6):
        fn = lambda p, b, s=s: s * (p[0] ** 2 + 1e-9 * p[1] ** 2)  # noqa: E731
        point = classify(fn, jnp.zeros(2), None, eig_rtol=1e-6)
        assert point.kind == "degenerate"
        assert point.scale == pytest.approx(2 * s) and point.eig_tol == pytest.approx(2e-6 * s)
        assert classify(fn, jnp.zeros(2), None, eig_rtol=1e-12).kind == "minimum"


def test_float32_uses_looser_default_tolerances():
    point = classify(toys.quadratic_bowl, jnp.asarray([1e-4, 0.0], jnp.float32), None)
    assert point.kind == "minimum"  # ‖g‖ = 2e-4 < eps32^(1/3) ≈ 4.9e-3
    assert point.grad_tol == pytest.approx(np.finfo(np.float32).eps ** (1 / 3))


# --------------------------------------------------------------------------- a small MLP


def mlp_problem():
    """tanh MLP 3-5-2 with squared error and weight decay 1e-2 on a smooth regression task."""
    x = jax.random.normal(jax.random.key(1), (64, 3))
    y = jnp.stack([jnp.sin(2 * x[:, 0]), x[:, 1] * x[:, 2]], -1)

    def loss_fn(params, batch):
        x, y = batch
        fit = 0.5 * jnp.mean(jnp.sum((mlp_apply(params, x) - y) ** 2, -1))
        return fit + 0.5e-2 * jnp.sum(ravel_pytree(params)[0] ** 2)

    return loss_fn, mlp_params(jax.random.key(0), [3, 5, 2]), (x, y)


@pytest.fixture(scope="module")
def mlp_saddle():
    loss_fn, params, batch = mlp_problem()
    found = find_critical_point(loss_fn, params, batch, num_steps=100)
    return loss_fn, found, batch


def test_newton_search_converges_on_the_mlp_and_classify_agrees_with_eigh(mlp_saddle):
    loss_fn, found, batch = mlp_saddle
    assert bool(found.converged) and found.grad_norm <= found.point.grad_tol
    assert int(found.num_steps) < 100
    norm = np.linalg.norm(ravel_pytree(jax.grad(loss_fn)(found.params, batch))[0])
    assert norm == pytest.approx(float(found.grad_norm), rel=1e-8)
    exact = np.linalg.eigvalsh(np.asarray(hessian_matrix(loss_fn, found.params, batch)))
    np.testing.assert_allclose(found.point.eigenvalues, exact, atol=1e-10 * abs(exact).max())
    assert found.point.kind == "saddle"  # from this initialization: index 11/32
    assert found.point.index == pytest.approx(np.mean(exact < 0))
    hist = np.asarray(found.grad_norms)
    assert hist[0] > hist[int(found.num_steps)] and np.all(np.diff(hist) <= 0)


def test_lanczos_classification_matches_dense(mlp_saddle):
    loss_fn, found, batch = mlp_saddle
    dense = found.point
    lanczos = classify(loss_fn, found.params, batch, method="lanczos", key=KEY, num_probes=64)
    assert lanczos.kind == dense.kind and lanczos.num_negative is None
    k = lanczos.eigenvalues.size // 2
    ends = np.concatenate([dense.eigenvalues[:k], dense.eigenvalues[-k:]])
    np.testing.assert_allclose(lanczos.eigenvalues, ends, atol=1e-8 * dense.scale)
    # SLQ with num_iters >= n is exact quadrature per probe: the index estimate is the mean of
    # z'P_neg z / n over 64 Rademacher probes; its standard error here is below 0.02
    assert abs(lanczos.index - dense.index) < 0.08


def test_batch_search_equals_single_searches():
    loss_fn, params, batch = mlp_problem()
    other = mlp_params(jax.random.key(7), [3, 5, 2])
    starts = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, other)
    many = find_critical_points(loss_fn, starts, batch, num_steps=40)
    assert len(many.point) == 2 and many.grad_norms.shape == (2, 41)
    for i in range(2):
        one = find_critical_point(loss_fn, jax.tree.map(lambda x, i=i: x[i], starts), batch,
                                  num_steps=40)  # fmt: skip
        np.testing.assert_allclose(
            ravel_pytree(jax.tree.map(lambda x, i=i: x[i], many.params))[0],
            ravel_pytree(one.params)[0], rtol=1e-10, atol=1e-12,
        )  # fmt: skip
        assert many.point[i].kind == one.point.kind


# --------------------------------------------------------------------------- search on toys


@pytest.mark.parametrize("method", ["newton", "newton-cg", "gd"])
def test_search_from_near_the_saddle_converges_to_it(method):
    start = jnp.asarray([0.3, -0.2])
    with jax.numpy_dtype_promotion("standard"):  # optax's adam in the "gd" method
        found = find_critical_point(
            toys.quadratic_saddle, start, None, method=method, num_steps=5000,
            optimizer=optax.adam(1e-2) if method == "gd" else None,
        )  # fmt: skip
    assert bool(found.converged)
    assert found.point.kind == "saddle"
    # ‖∇L‖ = ‖(-2x, 6y)‖ <= grad_tol puts the point within grad_tol / 2 of the saddle
    assert float(jnp.linalg.norm(found.params)) <= found.point.grad_tol / 2 + 1e-15


def test_search_stalls_honestly_where_the_gradient_norm_has_a_non_critical_minimum():
    """``L(x) = x³/3 + x``: ``L' = x² + 1`` never vanishes, and ``½L'²`` has its minimum at
    ``x = 0`` with ``L' = 1`` (there ``H = 0``, so ``H∇L = 0``)."""
    loss = lambda p, b: jnp.sum(p**3 / 3 + p)  # noqa: E731
    found = find_critical_point(loss, jnp.asarray([0.7]), None, num_steps=50)
    assert not bool(found.converged)
    assert found.point.kind == "not-critical"
    assert float(found.grad_norm) == pytest.approx(1.0, abs=1e-6)


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_named():
    bad = lambda p, b: jnp.sum(jnp.log(p))  # noqa: E731
    with pytest.raises(FloatingPointError, match="params"):
        classify(bad, jnp.asarray([-1.0, 1.0]), None)
    with pytest.raises(FloatingPointError, match="start `params`"):
        find_critical_point(bad, jnp.asarray([-1.0, 1.0]), None)
    big = jnp.zeros(3000)
    with pytest.raises(ValueError, match=r"max_params.*method='lanczos'"):
        classify(lambda p, b: jnp.sum(p**2), big, None)
    with pytest.raises(ValueError, match="max_params"):
        find_critical_point(lambda p, b: jnp.sum(p**2), big, None)
    for name in ("grad_tol", "eig_rtol"):
        with pytest.raises(ValueError, match=name):
            classify(toys.quadratic_bowl, jnp.zeros(2), None, **{name: 0.0})
    with pytest.raises(ValueError, match="grad_tol"):
        find_critical_point(toys.quadratic_bowl, jnp.zeros(2), None, grad_tol=-1.0)
    with pytest.raises(ValueError, match="damping"):
        find_critical_point(toys.quadratic_bowl, jnp.zeros(2), None, damping=-1.0)
    with pytest.raises(ValueError, match="needs `key`"):
        classify(toys.quadratic_bowl, jnp.zeros(2), None, method="lanczos")
    with pytest.raises(ValueError, match="method"):
        classify(toys.quadratic_bowl, jnp.zeros(2), None, method="eig")
    with pytest.raises(ValueError, match="method"):
        find_critical_point(toys.quadratic_bowl, jnp.zeros(2), None, method="bfgs")
    with pytest.raises(ValueError, match="probe_radius"):
        classify(toys.degenerate_saddle, jnp.zeros(2), None, key=KEY, probe_radius=0.0)
    with pytest.raises(ValueError, match="leading start-point axis"):
        find_critical_points(toys.quadratic_bowl, jnp.asarray(1.0), None)
