"""Models and loss builders: the functions they claim to compute, state handling, adapters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import EXACT, rel_err

import jaxscape
from jaxscape import models

F64 = jnp.float64


def images(key, n=6, hw=6, c=1):
    return jax.random.normal(key, (n, hw, hw, c), F64)


def labels(n=6, num_classes=3):
    return jnp.arange(n, dtype=jnp.int32) % num_classes


# --------------------------------------------------------------------------- architectures


def test_mlp_computes_dense_tanh_chain():
    model = models.MLP((4, 3), dtype=F64)
    x = jax.random.normal(jax.random.key(0), (5, 2, 3), F64)  # flattened to (5, 6)
    params, state = models.init_model(jax.random.key(1), model, x)
    assert state == {}
    d0, d1 = params["Dense_0"], params["Dense_1"]
    want = jnp.tanh(x.reshape(5, 6) @ d0["kernel"] + d0["bias"]) @ d1["kernel"] + d1["bias"]
    assert rel_err(model.apply({"params": params}, x), want) < EXACT


def test_mlp_residual_adds_skip_where_widths_match():
    x = jax.random.normal(jax.random.key(0), (5, 4), F64)
    plain, res = models.MLP((4, 4, 2), dtype=F64), models.MLP((4, 4, 2), residual=True, dtype=F64)
    params, _ = models.init_model(jax.random.key(1), res, x)
    p = {k: params[f"Dense_{i}"] for i, k in enumerate("abc")}
    h = x + jnp.tanh(x @ p["a"]["kernel"] + p["a"]["bias"])
    h = h + jnp.tanh(h @ p["b"]["kernel"] + p["b"]["bias"])
    want = h @ p["c"]["kernel"] + p["c"]["bias"]
    assert rel_err(res.apply({"params": params}, x), want) < EXACT
    assert rel_err(plain.apply({"params": params}, x), want) > 1e-3  # same params, no skips


def test_batchnorm_train_normalizes_and_moves_running_averages():
    model = models.MLP((8, 2), norm="batch", activation=lambda h: h, dtype=F64)
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (64, 5), F64)
    params, state = models.init_model(jax.random.key(1), model, x)
    assert set(state["batch_stats"]["Norm_0"]) == {"mean", "var"}
    _, new_state = model.apply(
        {"params": params, **state},
        x,
        train=True,
        mutable=["batch_stats", "intermediates"],
        capture_intermediates=lambda mdl, _: isinstance(mdl, models.BatchNorm),
    )
    z = new_state["intermediates"]["Norm_0"]["__call__"][0]
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.var(0), 1.0, rtol=1e-4)  # var / (var + eps)
    pre = x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]
    stats = new_state["batch_stats"]["Norm_0"]
    np.testing.assert_allclose(stats["mean"], 0.1 * pre.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * pre.var(0), rtol=1e-12)


def test_batchnorm_eval_loss_is_pure_function_of_params():
    model = models.CNN((3,), 3, norm="batch", dtype=F64)
    x, y = images(jax.random.key(0)), labels()
    params, state = models.init_model(jax.random.key(1), model, x)
    _, state = models.model_loss(model, train=True)(params, (x, y), state)
    loss_fn = models.cross_entropy_loss(model, state=state)
    # eval mode: a different batch composition leaves each example's output unchanged
    apply_fn = models.model_apply(model, state=state)
    full, half = apply_fn(params, (x, y)), apply_fn(params, (x[:3], y[:3]))
    assert rel_err(full[:3], half) < EXACT
    # and its Hessian is symmetric: uᵀ(Hv) = vᵀ(Hu) for the HVP of the eval-mode loss
    u = jax.tree.map(jnp.ones_like, params)
    v = jax.tree.map(lambda p: jnp.cos(jnp.arange(p.size, dtype=F64)).reshape(p.shape), params)
    matvec = jax.jit(jaxscape.hessian_operator(loss_fn, params, (x, y)))
    dot = lambda a, b: float(optax.tree_utils.tree_vdot(a, b))  # noqa: E731
    uhv, vhu = dot(u, matvec(v)), dot(v, matvec(u))
    assert abs(uhv - vhu) < 1e-10 * max(abs(uhv), 1.0) and abs(uhv) > 1e-6


def test_layernorm_normalizes_each_row():
    norm = models.LayerNorm(dtype=F64)
    x = 5.0 + 3.0 * jax.random.normal(jax.random.key(0), (4, 7), F64)
    y = norm.apply(norm.init(jax.random.key(1), x), x)
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("kernel_size", [1, 2, 3])
def test_conv_matmul_equals_xla(kernel_size):
    x = images(jax.random.key(0), n=2, hw=5, c=3)
    conv = models.Conv(4, kernel_size, impl="xla", dtype=F64)
    params = conv.init(jax.random.key(1), x)
    fast = models.Conv(4, kernel_size, impl="matmul", dtype=F64)
    assert rel_err(fast.apply(params, x), conv.apply(params, x)) < EXACT

    def f(mod):
        return lambda p: jnp.sum(jnp.sin(mod.apply(p, x)))

    assert rel_err(jax.grad(f(fast))(params), jax.grad(f(conv))(params)) < EXACT


@pytest.mark.parametrize("residual", [False, True])
def test_cnn_shapes_and_impls_agree(residual):
    x = images(jax.random.key(0), n=4, hw=8)
    kw = {"channels": (3, 5), "num_classes": 4, "residual": residual, "dtype": F64}
    model = models.CNN(**kw, conv_impl="xla")
    params, _ = models.init_model(jax.random.key(1), model, x)
    out = model.apply({"params": params}, x)
    assert out.shape == (4, 4)
    other = models.CNN(**kw, conv_impl="matmul").apply({"params": params}, x[..., 0])
    assert rel_err(other, out) < EXACT  # (N, H, W) read as one channel
    if residual:
        assert "Skip_1" in params and "Skip_0" in params  # 1 → 3 and 3 → 5 channels


def test_lstm_reads_rows_in_order():
    model = models.LSTMClassifier(hidden_size=6, num_classes=3, num_layers=2, dtype=F64)
    x = images(jax.random.key(0), n=3, hw=8)
    params, _ = models.init_model(jax.random.key(1), model, x)
    out = model.apply({"params": params}, x)
    assert out.shape == (3, 3)
    assert rel_err(model.apply({"params": params}, x[..., 0]), out) < EXACT
    assert rel_err(model.apply({"params": params}, x[:, ::-1]), out) > 1e-3  # order matters


@pytest.mark.parametrize("residual", [False, True])
def test_deep_linear_is_its_end_to_end_matrix(residual):
    model = models.DeepLinear((4, 4, 4), residual=residual, init_scale=0.5, dtype=F64)
    x = jax.random.normal(jax.random.key(0), (7, 4), F64)
    params, _ = models.init_model(jax.random.key(1), model, x)
    product = models.end_to_end(params, residual=residual)
    assert rel_err(model.apply({"params": params}, x), x @ product) < EXACT
    zero = models.DeepLinear((4, 4), residual=residual, init_scale=0.0, dtype=F64)
    p0, _ = models.init_model(jax.random.key(1), zero, x)
    expected = jnp.eye(4, dtype=F64) if residual else jnp.zeros((4, 4), F64)
    np.testing.assert_array_equal(models.end_to_end(p0, residual=residual), expected)


@pytest.mark.parametrize("depth", [2, 3])
def test_deep_linear_hessian_at_origin(depth):
    """Kawaguchi 2016: at W = 0 the Hessian vanishes for depth ≥ 3, not for depth 2."""
    model = models.DeepLinear((3,) * depth, init_scale=0.0, dtype=F64)
    x = jax.random.normal(jax.random.key(0), (10, 3), F64)
    params, _ = models.init_model(jax.random.key(1), model, x)
    hess = jaxscape.hessian_matrix(models.mse_loss(model), params, (x, x))
    if depth >= 3:
        assert np.max(np.abs(hess)) == 0.0
    else:
        eig = np.linalg.eigvalsh(hess)
        assert eig[0] < -1e-3 and eig[-1] > 1e-3  # a strict saddle


def test_deep_linear_residual_needs_square_layers():
    with pytest.raises(ValueError, match=r"residual=True\) needs every width equal"):
        models.init_model(
            jax.random.key(0), models.DeepLinear((4, 3), residual=True), jnp.ones((1, 4))
        )


# --------------------------------------------------------------------------- losses


def test_output_losses_by_hand():
    logits = jnp.asarray([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]], F64)
    y = jnp.asarray([0, 2], jnp.int32)
    lse = np.log(np.exp(logits).sum(-1))
    want = np.mean([lse[0] - 2.0, lse[1] - 0.0])
    assert abs(float(models.softmax_cross_entropy(logits, y)) - want) < 1e-12
    out = jnp.asarray([[1.0], [3.0]], F64)
    assert float(models.mean_squared_error(out, jnp.asarray([0.0, 1.0], F64))) == 2.5
    with pytest.raises(ValueError, match=r"outputs have shape \(2, 1\) but targets \(3,\)"):
        models.mean_squared_error(out, jnp.zeros(3, F64))


def test_accuracy_counts_argmax_hits():
    model = models.MLP((3,), dtype=F64)
    x = jax.random.normal(jax.random.key(0), (20, 4), F64)
    params, _ = models.init_model(jax.random.key(1), model, x)
    pred = np.argmax(model.apply({"params": params}, x), -1)
    y = jnp.asarray(np.where(np.arange(20) < 15, pred, (pred + 1) % 3), jnp.int32)
    assert float(models.accuracy(model)(params, (x, y))) == 0.75


def test_train_mode_loss_returns_new_state():
    model = models.MLP((5, 3), norm="batch", dtype=F64)
    x, y = jax.random.normal(jax.random.key(0), (9, 4), F64), labels(9)
    params, state = models.init_model(jax.random.key(1), model, x)
    loss, new_state = models.model_loss(model, train=True)(params, (x, y), state)
    assert loss.shape == () and jax.tree.structure(new_state) == jax.tree.structure(state)
    assert rel_err(new_state, state) > 1e-3
    eval_loss = models.cross_entropy_loss(model, state=state)(params, (x, y))
    assert abs(float(eval_loss) - float(loss)) > 1e-6  # batch vs running statistics


def test_unknown_output_loss():
    with pytest.raises(ValueError, match="`output_loss` must be one of"):
        models.model_loss(models.MLP((2,)), "hinge")


# --------------------------------------------------------------------------- adapters


def test_from_apply_plain_function():
    def apply_fn(params, x):
        return jnp.tanh(x @ params["w1"]) @ params["w2"]

    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = {"w1": jax.random.normal(k1, (3, 4), F64), "w2": jax.random.normal(k2, (4, 2), F64)}
    x = jax.random.normal(k3, (5, 3), F64)
    y = jnp.zeros((5, 2), F64)
    loss_fn = models.from_apply(apply_fn, "mse")
    assert abs(float(loss_fn(params, (x, y))) - float(jnp.mean(apply_fn(params, x) ** 2))) < 1e-14


def test_from_nnx_is_a_pure_loss_of_params():
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(4, 6, rngs=rngs, param_dtype=F64)
            self.b = nnx.Linear(6, 3, rngs=rngs, param_dtype=F64)

        def __call__(self, x):
            return self.b(jnp.tanh(self.a(x)))

    net = Net(nnx.Rngs(0))
    x, y = jax.random.normal(jax.random.key(1), (8, 4), F64), labels(8)
    nl = models.from_nnx(net, "cross_entropy")
    assert (
        abs(float(nl.loss_fn(nl.params, (x, y))) - float(models.softmax_cross_entropy(net(x), y)))
        < 1e-14
    )

    def direct(module):
        return models.softmax_cross_entropy(module(x), y)

    want = nnx.grad(direct)(net)
    got = jax.grad(nl.loss_fn)(nl.params, (x, y))
    assert rel_err(got, nnx.state(want, nnx.Param)) < EXACT
    # the whole curvature API takes the NNX state as params
    hess = jaxscape.hessian_matrix(nl.loss_fn, nl.params, (x, y))
    v = jax.tree.map(jnp.ones_like, nl.params)
    hv = jaxscape.hessian_operator(nl.loss_fn, nl.params, (x, y))(v)
    assert rel_err(jax.flatten_util.ravel_pytree(hv)[0], hess @ np.ones(hess.shape[0])) < 1e-9
    moved = jax.tree.map(lambda p: p + 1.0, nl.params)
    assert rel_err(nl.merge(moved)(x), nl.merge(nl.params)(x)) > 1e-3
    with pytest.raises(TypeError, match=r"expected a flax\.nnx\.Module"):
        models.from_nnx(lambda z: z)


def test_ggn_from_model_matches_dense_for_mse():
    """For MSE on a linear model the GGN is the exact Hessian."""
    model = models.DeepLinear((2,), dtype=F64)
    x = jax.random.normal(jax.random.key(0), (6, 3), F64)
    y = jax.random.normal(jax.random.key(1), (6, 2), F64)
    params, _ = models.init_model(jax.random.key(2), model, x)
    apply_fn, out_loss = models.model_apply(model), models.output_loss_fn("mse")
    v = jax.tree.map(jnp.ones_like, params)
    ggn = jaxscape.ggn_operator(apply_fn, out_loss, params, (x, y))(v)
    hess = jaxscape.hessian_matrix(models.mse_loss(model), params, (x, y))
    want = hess @ jax.flatten_util.ravel_pytree(v)[0]
    assert rel_err(jax.flatten_util.ravel_pytree(ggn)[0], want) < EXACT


def test_recomputed_batch_stats_and_the_two_path_losses():
    model = models.MLP((6, 3), norm="batch", activation=lambda h: h, dtype=F64)
    x, y = jax.random.normal(jax.random.key(0), (32, 4), F64), labels(32)
    params, state = models.init_model(jax.random.key(1), model, x)
    fresh = models.recompute_batch_stats(model, params, state, x)
    pre = x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]
    np.testing.assert_allclose(fresh["batch_stats"]["Norm_0"]["mean"], pre.mean(0), rtol=1e-12)
    np.testing.assert_allclose(fresh["batch_stats"]["Norm_0"]["var"], pre.var(0), rtol=1e-12)
    fixed = models.path_loss(model, state=state)
    refreshed = models.path_loss(model, state=state, stats_x=x)
    want = models.cross_entropy_loss(model, state=fresh)(params, (x, y))
    assert abs(float(refreshed(params, (x, y))) - float(want)) < 1e-12
    assert abs(float(fixed(params, (x, y))) - float(want)) > 1e-6  # init stats are 0 / 1
    with pytest.raises(TypeError, match="has no `bn_momentum` field"):
        models.recompute_batch_stats(models.LSTMClassifier(4, 2), params, state, x)
