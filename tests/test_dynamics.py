"""Saddle dynamics: Newton is attracted, GD escapes in time ∝ 1/|λ_min|, SFN escapes fast."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxscape import toys
from jaxscape.dynamics import escape_saddle, gd_escape_time, saddle_optimizers, saddle_problems

KEY = jax.random.key(0)
LR, DROP = 0.05, 1e-2


@pytest.fixture(autouse=True)
def standard_promotion():
    """Optax's momentum mixes weak and strong dtypes; the rest stays strict-checked."""
    with jax.numpy_dtype_promotion("standard"):
        yield


def saddle_of(a):
    """``-½ a x² + 3y²``: a saddle at 0 with eigenvalues ``-a`` and 6."""
    return lambda p, b=None: -0.5 * a * p[0] ** 2 + 3 * p[1] ** 2


def test_newton_is_attracted_gd_escapes_on_schedule_sfn_escapes_fastest():
    start = jnp.asarray([1e-3, 0.0])
    runs = escape_saddle(
        toys.quadratic_saddle, jnp.zeros(2), start, optimizers=saddle_optimizers(KEY, LR),
        num_steps=80, drop=DROP,
    )  # fmt: skip
    newton, gd, sfn = runs["newton"], runs["gd"], runs["saddle_free_newton"]
    assert newton.escape_step == -1 and newton.distance[-1] < 1e-12  # one step onto the saddle
    assert gd.escape_step == gd_escape_time(-2.0, 1e-3, LR, DROP)  # 49 steps, closed form
    # |H|⁻¹ flips the descent direction: x doubles every step, log2(√0.01 / 1e-3) → 7 steps
    assert sfn.escape_step == 7
    assert 0 < sfn.escape_step < runs["momentum"].escape_step < gd.escape_step
    assert all(run.finite for run in runs.values())
    assert gd.path.shape == (81, 2) and gd.loss.shape == gd.distance.shape == (81,)


def test_gd_escape_time_is_inversely_proportional_to_the_negative_curvature():
    start = jnp.asarray([1e-3, 0.0])
    steps = {}
    for a in (0.25, 0.5, 1.0, 2.0):
        runs = escape_saddle(
            saddle_of(a), jnp.zeros(2), start, optimizers={"gd": optax.sgd(LR)},
            num_steps=2000, drop=1e-4,
        )  # fmt: skip
        steps[a] = runs["gd"].escape_step
        assert steps[a] == gd_escape_time(-a, 1e-3, LR, 1e-4)
    products = np.asarray([a * t for a, t in steps.items()])
    # t·|λ| ≈ log(√(2·drop/|λ|)/x₀)/η: constant up to the slowly varying log
    assert products.max() / products.min() < 1.5
    assert steps[0.25] > 6 * steps[2.0]


def test_only_the_perturbation_leaves_the_exact_saddle():
    runs = escape_saddle(
        toys.quadratic_saddle, jnp.zeros(2), jnp.zeros(2), optimizers=saddle_optimizers(KEY, LR),
        num_steps=150, drop=DROP,
    )  # fmt: skip
    for name in ("gd", "momentum", "newton", "saddle_free_newton"):
        assert runs[name].escape_step == -1 and runs[name].distance.max() == 0.0
    assert runs["perturbed_gd"].escape_step > 0


def test_deep_linear_chain_newton_converges_to_its_saddle_gd_leaves():
    start = jnp.asarray([0.01, -0.02])
    runs = escape_saddle(
        toys.deep_linear_chain, jnp.zeros(2), start, optimizers=saddle_optimizers(KEY, LR),
        num_steps=200, drop=0.5,
    )  # fmt: skip
    assert runs["newton"].escape_step == -1 and runs["newton"].distance[-1] < 1e-8
    assert runs["gd"].escape_step > 0 and runs["saddle_free_newton"].escape_step > 0
    assert runs["saddle_free_newton"].escape_step < runs["gd"].escape_step


def test_every_registered_saddle_attracts_newton_and_sfn_leaves_each_fast():
    """From 1e-2·(1, 2, ...) off each saddle, 300 steps: Newton converges onto every one; SFN
    escapes every one within 10 steps; GD escapes the strict saddles but is still trapped by the
    degenerate ones (x² − y⁴ and the depth-3 chain, where the escape is polynomially slow)."""
    escaped = {}
    for name, ex in saddle_problems().items():
        start = ex.point + 1e-2 * jnp.arange(1, ex.point.size + 1)
        runs = escape_saddle(ex.loss_fn, ex.point, start, key=KEY, num_steps=300, drop=1e-3)
        assert set(runs) == {"gd", "momentum", "newton", "saddle_free_newton", "perturbed_gd"}
        assert runs["newton"].escape_step == -1 and runs["newton"].distance[-1] < 1e-6, name
        assert 0 < runs["saddle_free_newton"].escape_step <= 10, name
        escaped[name] = runs["gd"].escape_step > 0
    assert escaped == {
        "quadratic_saddle": True, "chain2_origin": True, "monkey_saddle": True,
        "degenerate_saddle": False, "chain3_origin": False,
    }  # fmt: skip


def test_bad_input():
    opts = {"gd": optax.sgd(LR)}
    with pytest.raises(ValueError, match="drop"):
        escape_saddle(toys.quadratic_saddle, jnp.zeros(2), jnp.ones(2), optimizers=opts, drop=0)
    with pytest.raises(TypeError, match="optimizers"):
        escape_saddle(toys.quadratic_saddle, jnp.zeros(2), jnp.ones(2), optimizers={})
    with pytest.raises(ValueError, match="start"):
        escape_saddle(toys.quadratic_saddle, jnp.zeros(2), jnp.ones(3), optimizers=opts)
    with pytest.raises(ValueError, match="key"):
        escape_saddle(toys.quadratic_saddle, jnp.zeros(2), jnp.ones(2))
    with pytest.raises(ValueError, match="eigenvalue"):
        gd_escape_time(1.0, 1e-3, LR, DROP)
