"""Data that is there offline: synthetic tasks (the loaders for digits, MNIST and CIFAR files
come with issue #3)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gaussian_mixture(
    key: jax.Array,
    *,
    num_examples: int,
    dim: int = 8,
    num_classes: int = 4,
    separation: float = 2.0,
    dtype=jnp.float32,
) -> tuple[jax.Array, jax.Array]:
    """Classification data: class ``c`` is ``N(μ_c, I)`` with ``μ_c ~ separation · N(0, I/dim)``.

    Returns ``(x, y)`` with ``x`` of shape ``(num_examples, dim)`` and integer labels ``y``;
    classes overlap, so a network reaches a non-zero loss minimum (an interesting spectrum).
    """
    if num_examples < 1 or dim < 1 or num_classes < 2:
        raise ValueError(
            "gaussian_mixture: need num_examples >= 1, dim >= 1, num_classes >= 2; got "
            f"{num_examples}, {dim}, {num_classes}."
        )
    k_mu, k_y, k_x = jax.random.split(key, 3)
    means = separation * jax.random.normal(k_mu, (num_classes, dim), dtype) / jnp.sqrt(dim)
    y = jax.random.randint(k_y, (num_examples,), 0, num_classes)
    x = means[y] + jax.random.normal(k_x, (num_examples, dim), dtype)
    return x, y
