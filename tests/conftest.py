"""Test configuration: float64 and strict dtype promotion, so reference comparisons are exact.

Every comparison against a dense reference runs in float64 (``jax_enable_x64``); strict
promotion turns an accidental float32/float64 mix inside jaxscape into an error instead of a
silent upcast. Problems below are small enough for a dense ``jax.hessian``.

XLA compiles with backend optimization level 0 (unless ``XLA_FLAGS`` already sets it): the
suite's programs are small and compiled once each, so compile time dominates and level 0 cuts
the suite's CPU time by about a sixth. Numbers do not depend on it (the same float operations;
tolerances are unchanged); speed is measured in ``benchmarks/``, never here.
"""

from __future__ import annotations

import itertools
import os

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")

import flax.linen as nn  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

EXACT = 1e-10  # relative tolerance for exact float64 algebra


def rel_err(a, b) -> float:
    a, b = np.asarray(ravel_pytree(a)[0]), np.asarray(ravel_pytree(b)[0])
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


# --------------------------------------------------------------------------- problems


def mlp_params(key, sizes):
    """A plain nested-dict MLP with biases: {"layer0": {"w": (in, out), "b": (out,)}, ...}."""
    params = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        key, kw, kb = jax.random.split(key, 3)
        params[f"layer{i}"] = {
            "w": jax.random.normal(kw, (fan_in, fan_out)) / np.sqrt(fan_in),
            "b": 0.1 * jax.random.normal(kb, (fan_out,)),
        }
    return params


def mlp_apply(params, x):
    n = len(params)
    for i in range(n):
        layer = params[f"layer{i}"]
        x = x @ layer["w"] + layer["b"]
        if i < n - 1:
            x = jnp.tanh(x)
    return x


def xent(logits, y):
    return jnp.mean(
        jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[:, None], -1)[:, 0]
    )


def mlp_loss(params, batch):
    x, y = batch
    return xent(mlp_apply(params, x), y)


def classification_batch(key, n, dim, num_classes):
    kx, ky = jax.random.split(key)
    return jax.random.normal(kx, (n, dim)), jax.random.randint(ky, (n,), 0, num_classes)


class TinyCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), param_dtype=jnp.float64, dtype=jnp.float64)(x)
        x = jnp.tanh(x)
        b, h, w, c = x.shape  # 2x2 mean pooling (flax's avg_pool breaks strict promotion)
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(3, param_dtype=jnp.float64, dtype=jnp.float64)(x)


@pytest.fixture
def mlp_problem():
    """(loss_fn, params, batch): nested-dict MLP 5-8-6-3 with biases, at a random point."""
    params = mlp_params(jax.random.key(0), [5, 8, 6, 3])
    batch = classification_batch(jax.random.key(1), 32, 5, 3)
    return mlp_loss, params, batch


@pytest.fixture
def cnn_problem():
    """(loss_fn, params, batch): Flax linen conv net on 6x6x2 images (several leaf shapes)."""
    model = TinyCNN()
    x = jax.random.normal(jax.random.key(2), (8, 6, 6, 2))
    y = jax.random.randint(jax.random.key(3), (8,), 0, 3)
    params = model.init(jax.random.key(4), x)["params"]

    def loss_fn(params, batch):
        x, y = batch
        return xent(model.apply({"params": params}, x), y)

    return loss_fn, params, (x, y)


@pytest.fixture
def mixed_problem():
    """(loss_fn, params, batch): a tuple / dict / scalar-leaf pytree with a non-quadratic loss."""
    k1, k2, k3 = jax.random.split(jax.random.key(5), 3)
    params = (
        {"a": jax.random.normal(k1, (3, 2)), "s": jnp.asarray(0.7)},
        [jax.random.normal(k2, (4,))],
    )
    batch = jax.random.normal(k3, (10, 3))

    def loss_fn(p, x):
        (d, (v,)) = p
        h = jnp.sin(x @ d["a"]) * d["s"]
        return jnp.mean(h**2) + jnp.sum(jnp.cos(v) * v[::-1]) * d["s"] ** 2

    return loss_fn, params, batch


@pytest.fixture(params=["mlp", "cnn", "mixed"])
def problem(request):
    return request.getfixturevalue(f"{request.param}_problem")


def random_like(key, params):
    flat, unravel = ravel_pytree(params)
    return unravel(jax.random.normal(key, flat.shape, flat.dtype))
