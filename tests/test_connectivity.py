"""Mode connectivity (curves, barrier) and permutation symmetry (permute, weight matching)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxscape import connectivity as cx
from jaxscape.models import CNN, MLP, init_model, model_loss
from jaxscape.train import fit

# --------------------------------------------------------------------------- curves


def _tree(key):
    k1, k2 = jax.random.split(key)
    return {"w": jax.random.normal(k1, (3, 2)), "b": jax.random.normal(k2, (2,))}


def test_curves_endpoints_line_and_vmap():
    a, m, b = _tree(jax.random.key(0)), _tree(jax.random.key(1)), _tree(jax.random.key(2))
    for name, path in cx.CURVES.items():
        chex_close(path(a, m, b, 0.0), a)
        chex_close(path(a, m, b, 1.0), b)
        mid = cx._midpoint(a, b)
        # with the midpoint bend both curves are the straight line (1 - t) a + t b
        line = jax.tree.map(lambda x, y: 0.3 * y + 0.7 * x, a, b)
        chex_close(path(a, mid, b, 0.3), line)
        stacked = jax.jit(jax.vmap(lambda t, path=path: path(a, m, b, t)))(jnp.array([0.2, 0.9]))
        chex_close(jax.tree.map(lambda x: x[1], stacked), path(a, m, b, 0.9))
        assert name in ("bezier", "polychain")
    chex_close(cx.polychain(a, m, b, 0.5), m)
    t = 0.25
    want = jax.tree.map(lambda x, y, z: 0.5625 * x + 0.375 * y + 0.0625 * z, a, m, b)
    chex_close(cx.bezier(a, m, b, t), want)


def chex_close(x, y, tol=1e-12):
    for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=tol, atol=tol)


def test_barrier_definition():
    ts = jnp.linspace(0.0, 1.0, 5)
    losses = 1.0 + ts + jnp.array([0.0, 0.2, 0.5, 0.1, 0.0])  # linear part 1 + t, bump on top
    assert float(cx.barrier(losses)) == pytest.approx(0.5, abs=1e-12)
    assert float(cx.barrier(losses, ts)) == pytest.approx(0.5, abs=1e-12)
    assert float(cx.barrier(1.0 + 2 * ts)) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="start at 0 and end at 1"):
        cx.barrier(losses, ts * 0.5)
    with pytest.raises(ValueError, match="1-D"):
        cx.barrier(jnp.ones((2, 2)))


def _valley(params, batch):
    """Minima at (±1, 0), loss 0; joined by the zero-loss valley y = c(1 − x²) (c = 1); the
    straight line y = 0 crosses (0, 0) where the loss is c² + ε = 1.01."""
    x, y = params["xy"][0], params["xy"][1]
    return (y - (1 - x**2)) ** 2 + 0.01 * (x**2 - 1) ** 2


def test_fit_bezier_passes_through_the_valley():
    a, b = {"xy": jnp.array([-1.0, 0.0])}, {"xy": jnp.array([1.0, 0.0])}
    with jax.numpy_dtype_promotion("standard"):
        curve = cx.fit_curve(
            jax.random.key(0), _valley, a, b, None, optax.adam(0.05), num_steps=400
        )
    ts = jnp.linspace(0.0, 1.0, 101)
    on_curve = cx.curve_losses(_valley, curve, None, ts)
    on_line = cx.line_losses(_valley, a, b, None, ts)
    chex_close(cx.curve_losses(_valley, curve, None, ts, chunk_size=7), on_curve)
    # measured: line max 1.01; fitted curve max ~0.01 (the ε term), bend near (0, 2)
    assert float(on_line.max()) == pytest.approx(1.01, abs=1e-9)
    assert float(on_curve.max()) < 0.1 * float(on_line.max())
    assert float(cx.barrier(on_curve, ts)) < 0.05 * float(cx.barrier(on_line, ts))
    assert curve.losses.shape == (400,) and curve.kind == "bezier"
    chex_close(curve.params_a, a)


def test_fit_polychain_lowers_the_barrier():
    a, b = {"xy": jnp.array([-1.0, 0.0])}, {"xy": jnp.array([1.0, 0.0])}
    with jax.numpy_dtype_promotion("standard"):
        curve = cx.fit_curve(
            jax.random.key(1),
            _valley,
            a,
            b,
            None,
            optax.adam(0.05),
            num_steps=300,
            curve="polychain",
            num_t_samples=4,
        )
    ts = jnp.linspace(0.0, 1.0, 101)
    # two straight segments cannot follow the parabola; still far below the line's 1.01
    assert float(cx.curve_losses(_valley, curve, None, ts).max()) < 0.5


def test_fit_curve_minibatches_model_loss():
    """fit_curve on a Flax MLP with minibatches: deterministic, and the bend moves off the line."""
    kx = jax.random.key(3)
    x = jax.random.normal(kx, (64, 3))
    data = (x, (x[:, 0] * x[:, 1] > 0).astype(jnp.int32))
    model = MLP((8, 2), dtype=jnp.float64)
    loss_fn = model_loss(model)
    a, b = _params(model, x[:1], seed=4), _params(model, x[:1], seed=5)

    def run(key):
        with jax.numpy_dtype_promotion("standard"):
            return cx.fit_curve(
                key, loss_fn, a, b, data, optax.sgd(0.1), num_steps=20, batch_size=16
            )

    c1, c2 = run(jax.random.key(0)), run(jax.random.key(0))
    chex_close(c1.bend, c2.bend, tol=0)
    assert np.all(np.isfinite(c1.losses))
    assert not np.allclose(c1.bend["Dense_0"]["kernel"], cx._midpoint(a, b)["Dense_0"]["kernel"])


def test_fit_curve_errors():
    a, b = {"xy": jnp.zeros(2)}, {"xy": jnp.ones(2)}
    opt = optax.sgd(0.1)
    with pytest.raises(ValueError, match="`curve` must be one of"):
        cx.fit_curve(jax.random.key(0), _valley, a, b, None, opt, num_steps=1, curve="spline")
    with pytest.raises(ValueError, match="params_b"):
        cx.fit_curve(jax.random.key(0), _valley, a, {"xy": jnp.ones(3)}, None, opt, num_steps=1)
    with pytest.raises(TypeError, match="key"):
        cx.fit_curve(0, _valley, a, b, None, opt, num_steps=1)
    with pytest.raises(ValueError, match="num_steps"):
        cx.fit_curve(jax.random.key(0), _valley, a, b, None, opt, num_steps=0)
    with pytest.raises(ValueError, match="data` is None"):
        cx.fit_curve(jax.random.key(0), _valley, a, b, None, opt, num_steps=1, batch_size=4)


# --------------------------------------------------------------------------- permutations


def _random_perms(seed, sizes):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.permutation(n)) for n in sizes]


def _params(model, x, seed, scale=0.5):
    """Random params in the model's layout (shapes from ``eval_shape``: no eager Flax init)."""
    shapes = jax.eval_shape(lambda: init_model(jax.random.key(0), model, x)[0])
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(scale * rng.normal(size=s.shape), s.dtype), shapes)


def _apply(model, params, x):
    return jax.jit(lambda p: model.apply({"params": p}, x))(params)


@pytest.mark.parametrize("norm", [None, "layer"])
def test_permuted_mlp_same_outputs(norm):
    model = MLP((7, 6, 5, 3), norm=norm, dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(0), (10, 4))
    params = _params(model, x, seed=1)  # random biases and norm params: all must be permuted
    perms = _random_perms(2, [7, 6, 5])
    permuted = cx.permute_mlp(params, perms)
    assert not np.allclose(permuted["Dense_1"]["kernel"], params["Dense_1"]["kernel"])
    column = params["Dense_0"]["kernel"][:, perms[0][3]]
    np.testing.assert_array_equal(permuted["Dense_0"]["kernel"][:, 3], column)
    out, want = _apply(model, permuted, x), _apply(model, params, x)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("norm", [None, "layer"])
def test_permuted_cnn_same_outputs(norm):
    model = CNN((4, 5), num_classes=3, norm=norm, dtype=jnp.float64)
    x = jax.random.normal(jax.random.key(0), (3, 6, 6, 2))
    params = _params(model, x, seed=1)
    perms = _random_perms(2, [4, 5])
    permuted = jax.jit(cx.permute_cnn)(params, perms)
    assert not np.allclose(permuted["Conv_1"]["kernel"], params["Conv_1"]["kernel"])
    out, want = _apply(model, permuted, x), _apply(model, params, x)
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


def test_permute_errors():
    params = _params(MLP((4, 3, 2)), jnp.ones((1, 2)), seed=0)
    with pytest.raises(ValueError, match="expected 2 permutations"):
        cx.permute_mlp(params, [jnp.arange(4)])
    with pytest.raises(ValueError, match="not a permutation"):
        cx.permute_mlp(params, [jnp.array([0, 0, 1, 2]), jnp.arange(3)])
    with pytest.raises(ValueError, match=r"perms\[1\] must be 3 integers"):
        cx.permute_mlp(params, [jnp.arange(4), jnp.arange(4)])
    with pytest.raises(ValueError, match="MLP params"):
        cx.permute_mlp({"w": jnp.ones(2)}, [])
    residual = _params(CNN((4,), residual=True), jnp.ones((1, 4, 4, 1)), seed=0)
    with pytest.raises(ValueError, match="residual"):
        cx.permute_cnn(residual, [jnp.arange(4)])
    with pytest.raises(ValueError, match="`spec` must be one of"):
        cx.align(params, params, spec="lstm")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weight_matching_recovers_permutation(seed):
    model = MLP((16, 12, 10, 3), norm="layer", dtype=jnp.float64)
    a = _params(model, jnp.ones((1, 6)), seed=seed)
    true = _random_perms(seed + 20, [16, 12, 10])
    b = cx.permute_mlp(a, true)
    aligned, perms = cx.align(a, b)
    for p, q in zip(perms, true, strict=True):  # the inverse of the permutation applied
        np.testing.assert_array_equal(p, np.argsort(np.asarray(q)))
    chex_close(aligned, a, tol=0)
    # noise on b (5% of the weights' scale): the same permutation is still the best match
    rng = np.random.default_rng(seed + 30)
    noisy = jax.tree.map(lambda p: p + 0.025 * rng.normal(size=p.shape), b)
    for p, q in zip(cx.weight_matching(a, noisy), true, strict=True):
        np.testing.assert_array_equal(p, np.argsort(np.asarray(q)))


def test_weight_matching_cnn():
    model = CNN((6, 8), num_classes=3, norm="layer", dtype=jnp.float64)
    a = _params(model, jnp.ones((1, 6, 6, 2)), seed=0)
    true = _random_perms(1, [6, 8])
    aligned, perms = cx.align(a, cx.permute_cnn(a, true))
    chex_close(aligned, a, tol=0)
    for p, q in zip(perms, true, strict=True):
        np.testing.assert_array_equal(p, np.argsort(np.asarray(q)))


def test_alignment_lowers_the_barrier():
    """Two MLPs trained from different inits on XOR-like data: barrier on the line before and
    after aligning b to a. Weak, honest check: aligned barrier <= unaligned barrier."""
    x = jax.random.normal(jax.random.key(0), (256, 2))
    data = (x, (x[:, 0] * x[:, 1] > 0).astype(jnp.int32))
    model = MLP((32, 32, 2), dtype=jnp.float64)
    loss_fn = model_loss(model)
    opt = optax.adam(1e-2)

    def train(seed):
        params = jax.jit(model.init)(jax.random.key(seed), x[:1])["params"]
        with jax.numpy_dtype_promotion("standard"):
            result = fit(jax.random.key(seed), loss_fn, params, opt, data, num_steps=300)
        return result.params

    a, b = train(1), train(2)
    ts = jnp.linspace(0.0, 1.0, 25)
    before = float(cx.barrier(cx.line_losses(loss_fn, a, b, data, ts)))
    aligned = cx.align(a, b).params
    chex_close(model.apply({"params": aligned}, x), model.apply({"params": b}, x), tol=1e-10)
    after = float(cx.barrier(cx.line_losses(loss_fn, a, aligned, data, ts)))
    print(f"barrier before {before:.4f}, after alignment {after:.4f}")
    assert before > 0.0
    assert after <= before
