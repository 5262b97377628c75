"""Shared argument checks of the toy problems."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any
LossFn = Callable[[PyTree, Any], jax.Array]


# --------------------------------------------------------------------------- helpers


def _vector(fn: str, x: Any, *, size: int | None = None, min_size: int = 1, name="params"):
    shape = jnp.shape(x)
    if len(shape) != 1 or (size is not None and shape[0] != size) or shape[0] < min_size:
        want = f"shape ({size},)" if size else f"a 1-D array of length >= {min_size}"
        raise ValueError(f"{fn}: `{name}` must be {want}, got shape {shape}.")
    return x


def _float_array(x: Any) -> jax.Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def _xy(fn: str, params: Any) -> tuple[jax.Array, jax.Array]:
    p = _vector(fn, params, size=2)
    return p[0], p[1]


def _normals(key, shapes: list[tuple[int, ...]], dtype) -> list[jax.Array]:
    """Standard normal arrays of the given shapes, cut from one draw (one compiled sampler)."""
    sizes = [math.prod(shape) for shape in shapes]
    flat = jax.random.normal(key, (sum(sizes),), dtype)
    ends = list(itertools.accumulate(sizes))
    return [flat[e - n : e].reshape(shape) for e, n, shape in zip(ends, sizes, shapes, strict=True)]


def _orthonormalize(g: jax.Array) -> jax.Array:
    """Haar-distributed orthonormal columns from a Gaussian ``(rows, cols)``, rows ≥ cols."""
    q, r = jnp.linalg.qr(g)
    return q * jnp.where(jnp.diagonal(r) < 0, -1, 1).astype(g.dtype)
