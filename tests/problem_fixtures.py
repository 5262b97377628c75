"""User problems for ``load_problem("problem_fixtures:...")``: the three examples of its docstring
(a Flax linen model, a Flax NNX model, plain JAX), each tiny (a few hundred params, 64 examples).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

import jaxscape as js


def linen_problem(seed=0):
    """A dict with a test set and ``apply_fn``: linen MLP 4-16-4 on a Gaussian mixture."""
    data = js.data.gaussian_mixture(jax.random.key(seed), num_examples=64, dim=4)
    split = js.data.train_test_split(jax.random.key(1), data, test_fraction=0.25)
    model = js.MLP((16, 4))
    params, _ = js.init_model(jax.random.key(2), model, split.train.x[:1])
    return {
        "loss_fn": js.cross_entropy_loss(model),
        "params": params,
        "train": split.train,
        "test": split.test,
        "apply_fn": lambda p, x: model.apply({"params": p}, x),
        "name": "linen-mlp",
    }


def nnx_problem():
    """A dict built with ``from_nnx``: NNX 4-16-4 network, params its ``nnx.Param`` state."""
    net = nnx.Sequential(
        nnx.Linear(4, 16, rngs=nnx.Rngs(0)), jnp.tanh, nnx.Linear(16, 4, rngs=nnx.Rngs(1))
    )
    nl = js.from_nnx(net)
    data = js.data.gaussian_mixture(jax.random.key(0), num_examples=64, dim=4)
    return {
        "loss_fn": nl.loss_fn,
        "params": nl.params,
        "train": data,
        "apply_fn": lambda p, x: nl.merge(p)(x),
    }


def plain_problem(num_examples=64):
    """A tuple ``(loss_fn, params, train)``: a dict of arrays and a regression loss."""
    x = jax.random.normal(jax.random.key(0), (num_examples, 3), jnp.float32)
    y = jnp.sin(x.sum(1))
    params = {"w": jnp.zeros((3, 8), jnp.float32), "v": jnp.full(8, 1 / 8, jnp.float32)}

    def loss_fn(params, batch):
        x, y = batch
        return jnp.mean((jnp.tanh(x @ params["w"]) @ params["v"] - y) ** 2)

    return loss_fn, params, (x, y)
