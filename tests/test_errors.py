"""Bad input gets a clear error naming the argument, never an XLA traceback or a silent NaN."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxscape as js

PARAMS = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
BATCH = jnp.ones((4, 3))


def loss(p, x):
    return jnp.mean((x @ p["w"] + p["b"]) ** 2)


def nan_loss(p, x):
    return jnp.mean(jnp.log(x @ p["w"] - 3.0))  # log(0) = -inf: inf and NaN in the products


def test_non_scalar_loss():
    per_example = lambda p, x: (x @ p["w"] + p["b"]) ** 2  # noqa: E731
    for fn in (js.hvp, js.hessian_matrix):
        args = (per_example, PARAMS, BATCH) + ((PARAMS,) if fn is js.hvp else ())
        with pytest.raises(ValueError, match=r"must return a scalar, got \(4, 2\)"):
            fn(*args)
    with pytest.raises(ValueError, match="must return a scalar"):
        js.hessian_operator(per_example, PARAMS, BATCH)


def test_v_not_shaped_like_params():
    bad_shape = {"w": jnp.ones((2, 3)), "b": jnp.zeros(2)}
    with pytest.raises(ValueError, match=r"`v` leaf 'w' has shape \(2, 3\), expected \(3, 2\)"):
        js.hvp(loss, PARAMS, BATCH, bad_shape)
    with pytest.raises(ValueError, match="`v` must be shaped like `params`"):
        js.hvp(loss, PARAMS, BATCH, {"w": jnp.ones((3, 2))})
    matvec = js.hessian_operator(loss, PARAMS, BATCH)
    with pytest.raises(ValueError, match="leaf 'w' has shape"):
        matvec(bad_shape)
    with pytest.raises(TypeError, match="`v` leaf 'b' has dtype float32, expected float64"):
        js.hvp(loss, PARAMS, BATCH, {"w": jnp.ones((3, 2)), "b": jnp.zeros(2, jnp.float32)})


def test_integer_params():
    with pytest.raises(TypeError, match="leaf 'w' has dtype int"):
        js.hvp(loss, {"w": jnp.ones((3, 2), int), "b": jnp.zeros(2)}, BATCH, PARAMS)


def test_k_at_least_n():
    matvec = js.hessian_operator(loss, PARAMS, BATCH)
    with pytest.raises(
        ValueError, match=r"`k` must be smaller than the number of parameters \(8\)"
    ):
        js.eigsh(jax.random.key(0), matvec, PARAMS, k=8)
    with pytest.raises(ValueError, match="`k` must be an integer >= 1"):
        js.eigsh(jax.random.key(0), matvec, PARAMS, k=0)
    with pytest.raises(ValueError, match="`k` must be smaller"):
        js.power_iteration(jax.random.key(0), matvec, PARAMS, k=9)


def test_unknown_options_list_the_valid_ones():
    matvec = js.hessian_operator(loss, PARAMS, BATCH)
    with pytest.raises(ValueError, match=r"`which` must be one of \('LA', 'SA', 'LM', 'BE'\)"):
        js.eigsh(jax.random.key(0), matvec, PARAMS, which="largest")
    with pytest.raises(ValueError, match="`method` must be one of"):
        js.estimate_trace(jax.random.key(0), matvec, PARAMS, num_matvecs=6, method="exact")
    with pytest.raises(ValueError, match="`num_matvecs` must be an integer >= 3"):
        js.estimate_trace(jax.random.key(0), matvec, PARAMS, num_matvecs=2)


def test_key_must_be_a_key():
    matvec = js.hessian_operator(loss, PARAMS, BATCH)
    with pytest.raises(TypeError, match=r"`key` must be a jax\.random key"):
        js.eigsh(0, matvec, PARAMS)
    js.eigsh(jax.random.PRNGKey(0), matvec, PARAMS, k=1)  # raw uint32 keys are accepted


def test_matvec_that_changes_shape():
    with pytest.raises(ValueError, match="must map params-shaped pytrees"):
        js.eigsh(jax.random.key(0), lambda v: v["w"], PARAMS)


def test_hessian_matrix_over_max_params_states_the_memory():
    big = {"w": jnp.ones((300, 100))}
    with pytest.raises(ValueError, match=r"30,000 entries.*would need 7.2 GB"):
        js.hessian_matrix(lambda p, b: jnp.sum(p["w"] ** 3), big, None)
    H = js.hessian_matrix(lambda p, b: jnp.sum(p["w"] ** 3), {"w": jnp.ones(5)}, None, max_params=5)
    assert H.shape == (5, 5)


def test_nan_raises_eagerly():
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        js.hvp(nan_loss, PARAMS, BATCH, PARAMS)
    matvec = js.hessian_operator(nan_loss, PARAMS, BATCH)
    key = jax.random.key(0)
    with pytest.raises(FloatingPointError, match="eigsh: the operator returned NaN or inf"):
        js.eigsh(key, matvec, PARAMS)
    with pytest.raises(FloatingPointError, match="power_iteration"):
        js.power_iteration(key, matvec, PARAMS)
    with pytest.raises(FloatingPointError, match="estimate_trace"):
        js.estimate_trace(key, matvec, PARAMS, num_matvecs=6)
    with pytest.raises(FloatingPointError, match="spectral_density"):
        js.spectral_density(key, matvec, PARAMS, num_probes=2, num_iters=4)
    with pytest.raises(FloatingPointError, match="hessian_matrix"):
        js.hessian_matrix(nan_loss, PARAMS, BATCH)


def test_nan_is_flagged_under_jit():
    @jax.jit
    def solve(params, batch, key):
        matvec = js.hessian_operator(nan_loss, params, batch)
        return (
            js.eigsh(key, matvec, params, k=2),
            js.estimate_trace(key, matvec, params, num_matvecs=6),
            js.spectral_density(key, matvec, params, num_probes=2, num_iters=4),
        )

    eigs, trace, density = solve(PARAMS, BATCH, jax.random.key(0))
    assert not bool(eigs.finite) and not bool(eigs.converged)
    assert np.all(np.isnan(eigs.eigenvalues))  # NaN, never a finite-looking wrong number
    assert not bool(trace.finite)
    assert not bool(density.finite) and np.all(np.isnan(density.nodes))


def test_negative_fraction_refuses_a_partial_spectrum():
    d = jnp.linspace(-1.0, 1.0, 10)
    eigs = js.eigsh(jax.random.key(0), lambda v: d * v, jnp.zeros(10), k=3)
    with pytest.raises(ValueError, match="holds 3 of 10 eigenvalues"):
        js.negative_fraction(eigs)
    with pytest.raises(ValueError, match="1-D array of eigenvalues"):
        js.negative_fraction(jnp.ones((2, 2)))


def test_param_filter_that_selects_nothing():
    with pytest.raises(ValueError, match=r"selects no parameter; the leaves are \['b', 'w'\]"):
        js.restrict(loss, PARAMS, "Dense_7")


def test_averaged_operator_bad_batches():
    make = lambda b: js.hessian_operator(loss, PARAMS, b)  # noqa: E731
    with pytest.raises(ValueError, match="empty list"):
        js.averaged_operator(make, [])
    with pytest.raises(ValueError, match="disagree on the leading"):
        js.averaged_operator(make, (jnp.ones((3, 4, 3)), jnp.ones((2, 4))))
    with pytest.raises(ValueError, match=r"`weights` must have shape \(3,\)"):
        js.averaged_operator(make, jnp.ones((3, 4, 3)), weights=[1.0, 2.0])


def test_zero_direction():
    with pytest.raises(ValueError, match="direction `d` is zero"):
        js.directional_curvature(loss, PARAMS, BATCH, jax.tree.map(jnp.zeros_like, PARAMS))
