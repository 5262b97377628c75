"""Small helpers shared by the numerical modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from jaxscape._checks import check_positive_int


def chunked_map(
    f: Callable, xs: Any, chunk_size: int | None, fn: str = "lax.map", name: str = "chunk_size"
) -> Any:
    """``f`` over the leading axis of ``xs``: all at once under ``vmap`` (``chunk_size=None``) or
    ``chunk_size`` at a time (``lax.map(..., batch_size=)``), so memory follows the chunk.

    ``fn`` and ``name`` are the caller and its argument, named in the error for a bad size.
    """
    if chunk_size is None:
        return jax.vmap(f)(xs)
    return jax.lax.map(f, xs, batch_size=check_positive_int(fn, name, chunk_size))
