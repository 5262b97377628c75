"""Curvature operators against dense float64 Hessians."""

from __future__ import annotations

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import EXACT, random_like, rel_err
from jax.flatten_util import ravel_pytree

import jaxscape as js


def dense_hvp(loss_fn, params, batch, v):
    H = js.hessian_matrix(loss_fn, params, batch)
    flat_v, unravel = ravel_pytree(v)
    return unravel(H @ flat_v)


@pytest.mark.parametrize("jit", [False, True])
def test_hvp_matches_dense_hessian(problem, jit):
    loss_fn, params, batch = problem
    v = random_like(jax.random.key(7), params)
    f = lambda p, b, v: js.hvp(loss_fn, p, b, v)  # noqa: E731
    got = (jax.jit(f) if jit else f)(params, batch, v)
    chex.assert_trees_all_equal_shapes_and_dtypes(got, params)
    assert rel_err(got, dense_hvp(loss_fn, params, batch, v)) < EXACT


def test_forward_over_reverse_equals_reverse_over_reverse(problem):
    loss_fn, params, batch = problem
    v = random_like(jax.random.key(8), params)
    fwd = js.hvp(loss_fn, params, batch, v, mode="fwd-rev")
    rev = js.hvp(loss_fn, params, batch, v, mode="rev-rev")
    assert rel_err(fwd, rev) < EXACT


@pytest.mark.parametrize("jit", [False, True])
def test_linearized_operator_equals_hvp(problem, jit):
    loss_fn, params, batch = problem
    vs = [random_like(jax.random.key(i), params) for i in range(3)]

    def products(p, b, vs):
        matvec = js.hessian_operator(loss_fn, p, b)
        return [matvec(v) for v in vs]  # one linearization, several products

    got = (jax.jit(products) if jit else products)(params, batch, vs)
    for g, v in zip(got, vs, strict=True):
        assert rel_err(g, js.hvp(loss_fn, params, batch, v)) < EXACT


def test_hessian_matrix_is_symmetric_and_ordered_like_ravel(mixed_problem):
    loss_fn, params, batch = mixed_problem
    H = np.asarray(js.hessian_matrix(loss_fn, params, batch))
    np.testing.assert_allclose(H, H.T, rtol=0, atol=1e-12 * np.abs(H).max())
    flat, unravel = ravel_pytree(params)
    e3 = jnp.zeros_like(flat).at[3].set(1.0)
    column = ravel_pytree(js.hvp(loss_fn, params, batch, unravel(e3)))[0]
    np.testing.assert_allclose(H[:, 3], column, rtol=1e-12, atol=1e-14)


def test_flat_array_params():
    A = jax.random.normal(jax.random.key(0), (6, 6))
    A = A @ A.T
    loss_fn = lambda w, _: 0.5 * w @ A @ w + jnp.sum(w**4)  # noqa: E731
    w = jnp.linspace(-1.0, 1.0, 6)
    expected = A + jnp.diag(12 * w**2)
    np.testing.assert_allclose(js.hessian_matrix(loss_fn, w, None), expected, rtol=1e-12)
    v = jnp.arange(6.0)
    np.testing.assert_allclose(js.hvp(loss_fn, w, None, v), expected @ v, rtol=1e-12)


# --------------------------------------------------------------------------- GGN


def test_ggn_equals_hessian_for_linear_model_with_squared_loss():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = {"w": jax.random.normal(k1, (4, 2)), "b": jax.random.normal(k2, (2,))}
    x = jax.random.normal(k3, (16, 4))
    y = jnp.sin(x[:, :2])
    apply_fn = lambda p, b: b[0] @ p["w"] + p["b"]  # noqa: E731
    out_loss = lambda out, b: 0.5 * jnp.mean(jnp.sum((out - b[1]) ** 2, -1))  # noqa: E731
    loss_fn = lambda p, b: out_loss(apply_fn(p, b), b)  # noqa: E731
    ggn = js.ggn_operator(apply_fn, out_loss, params, (x, y))
    for i in range(3):
        v = random_like(jax.random.key(10 + i), params)
        assert rel_err(ggn(v), js.hvp(loss_fn, params, (x, y), v)) < EXACT


def dense_operator(matvec, params):
    flat, unravel = ravel_pytree(params)
    eye = jnp.eye(flat.size, dtype=flat.dtype)
    return jax.vmap(lambda e: ravel_pytree(matvec(unravel(e)))[0])(eye)


def test_ggn_is_psd_where_hessian_is_not(mlp_problem):
    _, params, batch = mlp_problem
    from conftest import mlp_apply, xent

    apply_fn = lambda p, b: mlp_apply(p, b[0])  # noqa: E731
    out_loss = lambda logits, b: xent(logits, b[1])  # noqa: E731
    G = dense_operator(js.ggn_operator(apply_fn, out_loss, params, batch), params)
    H = js.hessian_matrix(lambda p, b: out_loss(apply_fn(p, b), b), params, batch)
    np.testing.assert_allclose(G, G.T, atol=1e-12)
    g_eigs, h_eigs = np.linalg.eigvalsh(G), np.linalg.eigvalsh(H)
    assert g_eigs.min() > -1e-10 * g_eigs.max()
    assert h_eigs.min() < -1e-3 * h_eigs.max()  # the Hessian is indefinite: the test can fail


# --------------------------------------------------------------------------- averaging


def test_averaged_operator_equals_concatenated_batch(mlp_problem):
    loss_fn, params, (x, y) = mlp_problem
    v = random_like(jax.random.key(3), params)
    full = js.hvp(loss_fn, params, (x, y), v)
    make = lambda b: js.hessian_operator(loss_fn, params, b)  # noqa: E731

    stacked = (x.reshape(4, 8, -1), y.reshape(4, 8))
    assert rel_err(jax.jit(lambda v: js.averaged_operator(make, stacked)(v))(v), full) < EXACT

    cuts = [0, 3, 10, 21, 32]  # unequal sizes: 3, 7, 11, 11
    batches = [(x[a:b], y[a:b]) for a, b in itertools.pairwise(cuts)]
    by_list = jax.jit(lambda v, batches: js.averaged_operator(make, batches)(v))
    assert rel_err(by_list(v, batches), full) < EXACT
    assert (
        rel_err(js.averaged_operator(make, iter(batches[:2]))(v), by_list(v, batches[:2])) < EXACT
    )

    # the sum-of-batches bug (loss-landscape): this is what weighting prevents
    plain_mean = jax.tree.map(lambda *t: sum(t) / 4, *[make(b)(v) for b in batches])
    assert rel_err(plain_mean, full) > 1e-3


def test_averaged_operator_weights_for_padded_stack(mlp_problem):
    loss_fn, params, (x, y) = mlp_problem
    v = random_like(jax.random.key(4), params)
    make = lambda b: js.hessian_operator(loss_fn, params, b)  # noqa: E731
    stacked = (x[:24].reshape(3, 8, -1), y[:24].reshape(3, 8))
    weights = jnp.asarray([1.0, 2.0, 1.0])
    got = js.averaged_operator(make, stacked, weights=weights)(v)
    parts = [make((stacked[0][i], stacked[1][i]))(v) for i in range(3)]
    want = jax.tree.map(lambda a, b, c: (a + 2 * b + c) / 4, *parts)
    assert rel_err(got, want) < EXACT


# --------------------------------------------------------------------------- scalars


def test_directional_curvature_is_a_rayleigh_quotient(mixed_problem):
    loss_fn, params, batch = mixed_problem
    H = js.hessian_matrix(loss_fn, params, batch)
    d = random_like(jax.random.key(1), params)
    flat_d = ravel_pytree(d)[0]
    want = flat_d @ H @ flat_d / (flat_d @ flat_d)
    assert abs(js.directional_curvature(loss_fn, params, batch, d) - want) < EXACT * abs(want)


def test_taylor_step_is_exact_on_a_quadratic():
    A = jnp.diag(jnp.asarray([1.0, 4.0, 10.0]))
    loss_fn = lambda w, _: 0.5 * w @ A @ w  # noqa: E731
    w = jnp.asarray([1.0, -1.0, 0.5])
    step = js.taylor_step(loss_fn, w, None, 0.05)
    np.testing.assert_allclose(step.predicted_change, step.actual_change, rtol=1e-12)
    g = A @ w
    np.testing.assert_allclose(step.optimal_learning_rate, (g @ g) / (g @ A @ g), rtol=1e-12)
    concave = js.taylor_step(lambda w, _: -jnp.sum(w**2), w, None, 0.1)
    assert jnp.isinf(concave.optimal_learning_rate)


# --------------------------------------------------------------------------- sub-blocks


@pytest.mark.parametrize(
    "param_filter",
    ["layer1/", lambda path, leaf: path.endswith("/w"), "CALLABLE_MASK"],
)
def test_restrict_gives_the_diagonal_block(mlp_problem, param_filter):
    loss_fn, params, batch = mlp_problem
    if param_filter == "CALLABLE_MASK":
        param_filter = jax.tree.map(lambda x: x.ndim == 1, params)
    sub_loss, sub = js.restrict(loss_fn, params, param_filter)
    H_block = js.hessian_matrix(sub_loss, sub, batch)
    # the same block cut out of the full dense Hessian
    selected, _ = js.partition(params, param_filter)
    mask = ravel_pytree(jax.tree.map(lambda x: jnp.ones_like(x), selected))[0].size
    full_mask = ravel_pytree(
        js.combine(
            jax.tree.map(jnp.ones_like, selected),
            jax.tree.map(jnp.zeros_like, js.partition(params, param_filter)[1]),
        )
    )[0].astype(bool)
    assert int(full_mask.sum()) == mask
    H = js.hessian_matrix(loss_fn, params, batch)
    np.testing.assert_allclose(H_block, H[full_mask][:, full_mask], rtol=1e-12, atol=1e-14)
    assert js.count_params(sub) == mask < js.count_params(params)
