"""Second-order steps against dense references, the Optax transformations, SGLD's stationary
law, saddle escape, and bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import EXACT, rel_err
from jax.flatten_util import ravel_pytree

from jaxscape import data, models, optim, toys, train

F64 = jnp.float64
KRYLOV = 1e-8  # Lanczos with num_iters = n: exact up to rounding of an n-step recurrence


def same(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))


def spd(key, n, low=1.0, high=4.0):
    """A random symmetric matrix with eigenvalues evenly spread in [low, high]."""
    q = np.linalg.qr(np.asarray(jax.random.normal(key, (n, n), F64)))[0]
    return q @ np.diag(np.linspace(low, high, n)) @ q.T


def nested(flat):
    """A nested-dict pytree holding a flat vector of length 5."""
    return {"a": flat[:3], "b": {"c": flat[3:].reshape(1, 2)}}


def quadratic_loss(A, b):
    """½θᵀAθ - bᵀθ on the raveled params."""
    A, b = jnp.asarray(A), jnp.asarray(b)

    def loss(params, batch=None):
        x = ravel_pytree(params)[0]
        return 0.5 * x @ A @ x - b @ x

    return loss


def _nonconvex_problem():
    """A tiny tanh regression network, nested-dict params (n = 3·3 + 3 + 3 = 15), at a point
    where the Hessian is indefinite and no eigenvalue is near zero (checked in the tests)."""
    k = jax.random.split(jax.random.key(7), 5)
    params = {
        "hidden": {"w": jax.random.normal(k[0], (3, 3), F64), "b": jax.random.normal(k[1], (3,))},
        "out": {"w": jax.random.normal(k[2], (3,), F64)},
    }
    x, y = jax.random.normal(k[3], (12, 3), F64), jax.random.normal(k[4], (12,), F64)

    def loss(p, batch):
        x, y = batch
        h = jnp.tanh(x @ p["hidden"]["w"] + p["hidden"]["b"])
        return jnp.mean((h @ p["out"]["w"] - y) ** 2)

    return loss, params, (x, y)


NONCONVEX = _nonconvex_problem()  # one loss_fn object: the compiled steps are reused


@jax.jit(static_argnums=0)
def _dense_hessian_and_grad(loss, params, batch):
    flat, unravel = ravel_pytree(params)
    at = lambda x: loss(unravel(x), batch)  # noqa: E731
    return jax.hessian(at)(flat), jax.grad(at)(flat)


def dense_reference(loss, params, batch, f):
    """-Q f(Λ) Qᵀ g by numpy, in ravel_pytree order; also returns Λ."""
    H, g = map(np.asarray, _dense_hessian_and_grad(loss, params, batch))
    lam, Q = np.linalg.eigh(H)
    return lam, -Q @ (f(lam) * (Q.T @ g))


# --------------------------------------------------------------------------- step functions


@pytest.mark.parametrize("method", ["dense", "krylov"])
@pytest.mark.parametrize("damping", [0.0, 0.5])
def test_newton_solves_convex_quadratic(method, damping):
    A, b = spd(jax.random.key(0), 5), np.asarray(jax.random.normal(jax.random.key(1), (5,), F64))
    theta0 = np.asarray(jax.random.normal(jax.random.key(2), (5,), F64))
    loss = quadratic_loss(A, b)
    step = optim.newton_step(
        loss, nested(jnp.asarray(theta0)), None, damping=damping, method=method
    )
    want = -np.linalg.solve(A + damping * np.eye(5), A @ theta0 - b)
    assert rel_err(ravel_pytree(step)[0], want) < EXACT * 100
    if damping == 0:  # one undamped step lands on the minimum A⁻¹b
        landed = theta0 + np.asarray(ravel_pytree(step)[0])
        np.testing.assert_allclose(landed, np.linalg.solve(A, b), rtol=EXACT, atol=EXACT)


@pytest.mark.parametrize("method", ["dense", "krylov"])
def test_newton_is_attracted_by_the_saddle_saddle_free_newton_is_not(method):
    p = jnp.asarray([0.3, 0.2], F64)
    newton = p + optim.newton_step(toys.quadratic_saddle, p, None, method=method)
    np.testing.assert_allclose(newton, [0.0, 0.0], atol=EXACT)
    sfn = p + optim.saddle_free_newton_step(toys.quadratic_saddle, p, None, method=method)
    np.testing.assert_allclose(sfn, [0.6, 0.0], atol=EXACT)  # |x| doubles, y is solved


def test_saddle_free_newton_matches_numpy_on_a_nonconvex_loss():
    loss, params, batch = NONCONVEX
    lam, want = dense_reference(loss, params, batch, lambda lam: 1 / np.abs(lam))
    assert lam[0] < 0 < lam[-1] and np.min(np.abs(lam)) > 1e-4 * np.max(np.abs(lam))
    got = optim.saddle_free_newton_step(loss, params, batch)
    assert rel_err(ravel_pytree(got)[0], want) < EXACT
    _, want = dense_reference(loss, params, batch, lambda lam: 1 / (np.abs(lam) + 0.1))
    got = optim.saddle_free_newton_step(loss, params, batch, damping=0.1)
    assert rel_err(ravel_pytree(got)[0], want) < EXACT


@pytest.mark.parametrize(
    ("step_fn", "kwargs"),
    [
        (optim.newton_step, {}),
        (optim.saddle_free_newton_step, {}),
        (optim.saddle_free_newton_step, {"damping": 0.1}),
        (optim.saddle_free_newton_step, {"key": jax.random.key(3)}),
    ],
)
def test_krylov_with_full_dimension_equals_dense(step_fn, kwargs):
    loss, params, batch = NONCONVEX
    n = ravel_pytree(params)[0].size
    dense = step_fn(loss, params, batch, **{k: v for k, v in kwargs.items() if k != "key"})
    krylov = step_fn(loss, params, batch, method="krylov", num_iters=n, **kwargs)
    assert jax.tree.structure(krylov) == jax.tree.structure(params)
    assert rel_err(krylov, dense) < KRYLOV


def test_small_krylov_subspace_with_key_adds_a_gradient_step_outside_it():
    """With num_iters = 1 from a random v: Δ = -f(θ) v (vᵀg) - c (g - v vᵀg), θ = vᵀHv."""
    loss, params, batch = NONCONVEX
    flat = ravel_pytree(params)[0]
    key = jax.random.key(4)
    got = optim.saddle_free_newton_step(
        loss, params, batch, method="krylov", num_iters=1, key=key, complement_learning_rate=0.3
    )
    v = np.asarray(jax.random.normal(jax.random.split(key)[0], flat.shape, F64))
    v = v / np.linalg.norm(v)
    H, g = map(np.asarray, _dense_hessian_and_grad(loss, params, batch))
    want = -v * (v @ g) / abs(v @ H @ v) - 0.3 * (g - v * (v @ g))
    assert rel_err(ravel_pytree(got)[0], want) < EXACT * 100


@pytest.mark.parametrize("method", ["dense", "krylov"])
def test_pseudo_inverse_gives_the_minimum_norm_solution(method):
    """A = BBᵀ has rank 3 of 6 and b is not in its range: Δ = A⁺ b (np.linalg.pinv)."""
    B = np.asarray(jax.random.normal(jax.random.key(5), (6, 3), F64))
    A, b = B @ B.T, np.asarray(jax.random.normal(jax.random.key(6), (6,), F64))
    step = optim.newton_step(quadratic_loss(A, b), jnp.zeros(6, F64), None, method=method)
    want = np.linalg.pinv(A, hermitian=True) @ b
    np.testing.assert_allclose(want, np.linalg.lstsq(A, b, rcond=None)[0], rtol=1e-10)
    assert rel_err(step, want) < 1e-9


@pytest.mark.parametrize("method", ["dense", "krylov"])
def test_zero_gradient_gives_a_zero_step(method):
    zero = jnp.zeros(2, F64)
    for step_fn in (optim.newton_step, optim.saddle_free_newton_step):
        step = step_fn(toys.quadratic_saddle, zero, None, method=method)
        np.testing.assert_array_equal(step, zero)


def test_steps_compile_under_jit():
    loss, params, batch = NONCONVEX
    sfn = jax.jit(lambda p, b: optim.saddle_free_newton_step(loss, p, b, method="krylov"))
    want = optim.saddle_free_newton_step(loss, params, batch, method="krylov")
    assert rel_err(sfn(params, batch), want) < EXACT


# --------------------------------------------------------------------------- transformations

THETA_STAR = jnp.asarray([1.0, -2.0, 0.5, 3.0, -1.0], F64)
A5 = spd(jax.random.key(8), 5)


def bowl(params):
    """½(θ - θ*)ᵀA(θ - θ*), eigenvalues in [1, 4], on the nested pytree; minimum 0."""
    d = ravel_pytree(params)[0] - THETA_STAR
    return 0.5 * d @ jnp.asarray(A5) @ d


@jax.jit(static_argnums=0)
def run(name, key, params):
    """200 steps of TRANSFORMS[name](key) in a plain Optax loop (compiled once per name)."""
    opt = optax.with_extra_args_support(TRANSFORMS[name](key))

    def step(carry, _):
        p, s = carry
        value, g = jax.value_and_grad(bowl)(p)
        u, s = opt.update(g, s, p, value=value, grad=g, value_fn=bowl)
        return (optax.apply_updates(p, u), s), value

    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), length=200)
    return params, losses


TRANSFORMS = {
    "newton": lambda key: optim.newton(learning_rate=0.5),
    "newton_krylov_schedule": lambda key: optim.newton(
        learning_rate=optax.linear_schedule(0.2, 1.0, 10), method="krylov", num_iters=5
    ),
    "saddle_free_newton": lambda key: optim.saddle_free_newton(learning_rate=0.5, damping=0.1),
    "perturbed_gd": lambda key: optim.perturbed_gd(key, 0.2, grad_threshold=1e-6, radius=1e-8),
    "sgld": lambda key: optim.sgld(key, 0.1, temperature=1e-10),
    "entropy_sgd": lambda key: optim.entropy_sgd(key, 10.0),
}
RANDOM = {"perturbed_gd", "sgld", "entropy_sgd"}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_transformation_minimizes_a_convex_quadratic_deterministically(name):
    params = nested(jnp.zeros(5, F64))
    start = float(bowl(params))
    a_params, a_losses = run(name, jax.random.key(0), params)
    b_params, b_losses = run(name, jax.random.key(0), params)
    c_params, _ = run(name, jax.random.key(1), params)
    assert float(bowl(a_params)) < 1e-6 * start, float(bowl(a_params))
    assert a_losses[-1] < a_losses[0]
    assert same((a_params, a_losses), (b_params, b_losses))
    if name in RANDOM:
        assert not same(a_params, c_params)


def mixture_problem():
    x, y = data.gaussian_mixture(
        jax.random.key(0), num_examples=64, dim=3, num_classes=3, dtype=F64
    )
    model = models.MLP((4, 3), dtype=F64)
    params, _ = models.init_model(jax.random.key(1), model, x[:1])
    return models.cross_entropy_loss(model), params, (x, y)


def test_saddle_free_newton_trains_a_tanh_network_with_fit():
    loss_fn, params, batch = NONCONVEX
    opt = optim.saddle_free_newton(learning_rate=0.5, damping=0.1)
    res = train.fit(jax.random.key(3), loss_fn, params, opt, batch, num_steps=20, record_every=20)
    assert res.finite and res.history.loss[-1] < 0.5 * res.history.loss[0], res.history.loss


def test_entropy_sgd_trains_a_mixture_mlp_with_fit():
    loss_fn, params, batch = mixture_problem()
    opt = optim.entropy_sgd(jax.random.key(2), 10.0, num_inner_steps=10)
    res = train.fit(jax.random.key(3), loss_fn, params, opt, batch, num_steps=20, record_every=20)
    assert res.finite and res.history.loss[-1] < 0.8 * res.history.loss[0], res.history.loss


@pytest.mark.parametrize(
    "opt",
    [
        optim.newton(learning_rate=0.5, method="krylov", num_iters=2),
        optim.sgld(jax.random.key(2), 0.1, temperature=1e-8),
    ],
    ids=["newton_krylov", "sgld"],
)
def test_transformations_minimize_a_toy_with_fit(opt):
    p0 = jnp.asarray([1.0, -1.0], F64)
    res = train.fit(jax.random.key(3), toys.quadratic_bowl, p0, opt, num_steps=40)
    assert res.finite and res.history.loss[-1] < 1e-6 * res.history.loss[0], res.history.loss


def test_sgld_samples_the_gibbs_variance():
    """L = aθ²/2, a = 2, T = 0.5: Gibbs variance T/a = 0.25. η = 2e-3 (ηa = 4e-3) gives the
    Euler bias T/(a(1 - ηa/2)) - T/a = 5e-4, 0.18 standard errors of the variance estimate
    from N = 16000 chains (SE = 0.25·sqrt(2/N) = 2.8e-3; a noise variance off by 5% would be
    4.5 SE away). 2500 steps of burn-in are 10 relaxation times 1/(ηa): the start (θ = 0)
    is forgotten to a factor e^-20."""
    a, T, eta, N = 2.0, 0.5, 2e-3, 16000
    loss = lambda p: 0.5 * a * p**2  # noqa: E731

    def chain(key):
        opt = optim.sgld(key, eta, temperature=T)

        def step(carry, _):
            p, s = carry
            u, s = opt.update(jax.grad(loss)(p), s)
            return (p + u, s), None

        p0 = jnp.zeros((), F64)
        return jax.lax.scan(step, (p0, opt.init(p0)), length=2500)[0][0]

    samples = np.asarray(jax.jit(jax.vmap(chain))(jax.random.split(jax.random.key(0), N)))
    var, gibbs = samples.var(), T / a
    assert abs(var - gibbs) < 4 * gibbs * np.sqrt(2 / N), var
    assert abs(samples.mean()) < 4 * np.sqrt(gibbs / N), samples.mean()


def test_perturbed_gd_escapes_a_saddle_that_traps_gd():
    """At exactly (0, 0) of -x² + 3y² the gradient is 0: GD never moves. PGD perturbs by at
    most 0.1 and the x-component then grows by 1.2 per step (η = 0.1, curvature -2)."""
    p0 = jnp.zeros(2, F64)
    gd = train.fit(jax.random.key(0), toys.quadratic_saddle, p0, optax.sgd(0.1), num_steps=60)
    assert np.all(gd.history.loss == 0)
    opt = optim.perturbed_gd(jax.random.key(1), 0.1, grad_threshold=1e-3, radius=0.1)
    res = train.fit(jax.random.key(0), toys.quadratic_saddle, p0, opt, num_steps=60)
    assert res.history.loss[-1] < -1, res.history.loss[-1]


def test_curvature_callback_on_known_spectra():
    """quadratic_valley (κ = 100, dense path) and a 5-D quadratic (Lanczos path)."""
    key = jax.random.key(0)
    cb = optim.curvature_callback(key, toys.quadratic_valley, None, learning_rate=0.01)
    p0 = jnp.asarray([1.0, 1.0], F64)
    res = train.fit(key, toys.quadratic_valley, p0, optax.sgd(0.01), num_steps=4,
                    record_every=2, callbacks={"curv": cb})  # fmt: skip
    curv = res.history.metrics["curv"]
    np.testing.assert_allclose(curv.lambda_max, 100.0, rtol=EXACT)
    np.testing.assert_allclose(curv.lambda_min, 1.0, rtol=EXACT)
    np.testing.assert_allclose(curv.condition_number, 100.0, rtol=EXACT)

    loss = lambda p, b: bowl(p)  # noqa: E731
    params = nested(jnp.zeros(5, F64))
    cb = optim.curvature_callback(key, loss, None, learning_rate=0.1, num_iters=5)
    rec = jax.jit(cb)(params, None, 0)
    lam = np.linalg.eigvalsh(A5)
    np.testing.assert_allclose([rec.lambda_min, rec.lambda_max], lam[[0, -1]], rtol=1e-10)
    np.testing.assert_allclose(rec.condition_number, lam[-1] / lam[0], rtol=1e-10)
    g = -A5 @ np.asarray(THETA_STAR)
    np.testing.assert_allclose(rec.optimal_learning_rate, g @ g / (g @ A5 @ g), rtol=1e-10)
    # on a quadratic the second-order model is exact
    np.testing.assert_allclose(rec.actual_change, rec.predicted_change, rtol=1e-10)
    saddle = optim.curvature_callback(key, toys.quadratic_saddle, None, learning_rate=0.1)
    assert np.isinf(saddle(jnp.asarray([0.3, 0.2], F64), None, 0).condition_number)


# --------------------------------------------------------------------------- bad input


NOT_A_KEY = np.zeros(3)
P = jnp.asarray([0.3, 0.2], F64)
SADDLE = toys.quadratic_saddle


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: optim.newton_step(SADDLE, P, None, damping=-1.0), ValueError, "damping"),
        (lambda: optim.saddle_free_newton_step(SADDLE, P, None, damping=-1), ValueError, "damping"),
        (lambda: optim.newton_step(SADDLE, P, None, method="cg"), ValueError, "method"),
        (lambda: optim.newton_step(SADDLE, P, None, num_iters=0), ValueError, "num_iters"),
        (lambda: optim.newton_step(SADDLE, P, None, max_params=1), ValueError, "krylov"),
        (
            lambda: optim.saddle_free_newton_step(SADDLE, P, None, method="krylov", key=NOT_A_KEY),
            TypeError,
            "key",
        ),
        (lambda: optim.newton(damping=-1.0), ValueError, "damping"),
        (lambda: optim.saddle_free_newton(method="lbfgs"), ValueError, "method"),
        (lambda: optim.saddle_free_newton(num_iters=0), ValueError, "num_iters"),
        (lambda: optim.newton(learning_rate=0.0), ValueError, "learning_rate"),
        (lambda: optim.sgld(jax.random.key(0), -0.1), ValueError, "learning_rate"),
        (lambda: optim.sgld(jax.random.key(0), 0.1, temperature=0.0), ValueError, "temperature"),
        (lambda: optim.sgld(NOT_A_KEY, 0.1), TypeError, "key"),
        (
            lambda: optim.perturbed_gd(jax.random.key(0), 0.1, grad_threshold=0.1, radius=0.0),
            ValueError,
            "radius",
        ),
        (
            lambda: optim.perturbed_gd(NOT_A_KEY, 0.1, grad_threshold=0.1, radius=0.1),
            TypeError,
            "key",
        ),
        (lambda: optim.entropy_sgd(jax.random.key(0), 0.0), ValueError, "learning_rate"),
        (lambda: optim.entropy_sgd(jax.random.key(0), 1.0, gamma=0.0), ValueError, "gamma"),
        (lambda: optim.entropy_sgd(NOT_A_KEY, 1.0), TypeError, "key"),
        (
            lambda: optim.curvature_callback(jax.random.key(0), SADDLE, None, learning_rate=-1.0),
            ValueError,
            "learning_rate",
        ),
        (
            lambda: optim.curvature_callback(NOT_A_KEY, SADDLE, None, learning_rate=0.1),
            TypeError,
            "key",
        ),
    ],
)
def test_bad_input_names_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_nonfinite_gradient_raises():
    loss = lambda p, b: jnp.sum(jnp.sqrt(p))  # noqa: E731  # gradient inf at 0
    for step_fn in (optim.newton_step, optim.saddle_free_newton_step):
        with pytest.raises(FloatingPointError, match="gradient"):
            step_fn(loss, jnp.asarray([0.0, 1.0], F64), None)


@pytest.mark.parametrize("name", ["newton", "saddle_free_newton", "entropy_sgd"])
def test_missing_value_fn_says_how_to_pass_it(name):
    opt = TRANSFORMS[name](jax.random.key(0))
    params = nested(jnp.zeros(5, F64))
    with pytest.raises(TypeError, match=r"value_fn=lambda p: loss_fn\(p, batch\)"):
        opt.update(params, opt.init(params), params)
