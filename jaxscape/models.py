"""Models and the loss builders that turn them into ``loss_fn(params, batch)``.

Only what the spectrum job needs so far; the full model zoo (CNN, LSTM, deep linear nets,
BatchNorm state) is issue #3.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """Fully connected network: ``Dense → activation`` for each hidden width, then a linear head.

    Attributes:
      features: widths of every layer, the last one being the number of outputs.
      activation: nonlinearity between layers.
      dtype: parameter and computation dtype.
    """

    features: Sequence[int]
    activation: Callable[[jax.Array], jax.Array] = nn.tanh
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1).astype(self.dtype)
        for i, width in enumerate(self.features):
            x = nn.Dense(width, dtype=self.dtype, param_dtype=self.dtype, name=f"Dense_{i}")(x)
            if i < len(self.features) - 1:
                x = self.activation(x)
        return x


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean over the batch of ``logsumexp(logits) - logits[label]``."""
    picked = jnp.take_along_axis(logits, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - picked)


def classification_loss(model: nn.Module) -> Callable[[Any, Any], jax.Array]:
    """``loss_fn(params, (x, y))``: mean softmax cross-entropy of ``model`` (Flax linen)."""

    def loss_fn(params, batch):
        x, y = batch
        return softmax_cross_entropy(model.apply({"params": params}, x), y)

    return loss_fn


def accuracy(model: nn.Module) -> Callable[[Any, Any], jax.Array]:
    """``accuracy_fn(params, (x, y))``: fraction of correct argmax predictions."""

    def accuracy_fn(params, batch):
        x, y = batch
        return jnp.mean(jnp.argmax(model.apply({"params": params}, x), -1) == y)

    return accuracy_fn
