"""Input validation shared by the public functions.

Every check runs on shapes and dtypes only (``jax.eval_shape``), so it costs nothing at run
time and works the same under ``jit``. Errors name the function, the argument, what was
expected and what was given.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def leaf_names(tree: Any) -> list[str]:
    """``'/'``-joined key paths of the leaves of ``tree`` (``'Dense_0/kernel'``)."""
    paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [jax.tree_util.keystr(path, simple=True, separator="/") or "<root>" for path, _ in paths]


def check_params(fn: str, params: Any, name: str = "params") -> None:
    """Params must be a non-empty pytree of floating-point arrays."""
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError(f"{fn}: `{name}` has no array leaves; expected a pytree of float arrays.")
    for path, leaf in zip(leaf_names(params), leaves, strict=True):
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{fn}: `{name}` leaf '{path}' has dtype {dtype}; curvature needs "
                f"floating-point parameters (cast it, or leave it out with `restrict`)."
            )


def check_like(fn: str, tree: Any, params: Any, name: str = "v") -> None:
    """``tree`` must have the structure, shapes and dtypes of ``params``."""
    want, got = jax.tree.structure(params), jax.tree.structure(tree)
    if want != got:
        raise ValueError(
            f"{fn}: `{name}` must be shaped like `params`; params has structure {want}, "
            f"{name} has {got}."
        )
    names = leaf_names(params)
    for path, p, t in zip(names, jax.tree.leaves(params), jax.tree.leaves(tree), strict=True):
        if jnp.shape(p) != jnp.shape(t):
            raise ValueError(
                f"{fn}: `{name}` leaf '{path}' has shape {jnp.shape(t)}, "
                f"expected {jnp.shape(p)} (the shape of the params leaf)."
            )
        if jnp.result_type(p) != jnp.result_type(t):
            raise TypeError(
                f"{fn}: `{name}` leaf '{path}' has dtype {jnp.result_type(t)}, expected "
                f"{jnp.result_type(p)} (the dtype of the params leaf)."
            )


def check_scalar_loss(fn: str, loss_fn: Any, params: Any, batch: Any) -> None:
    """``loss_fn(params, batch)`` must return a real scalar (checked on shapes only)."""
    if not callable(loss_fn):
        raise TypeError(
            f"{fn}: `loss_fn` must be callable as loss_fn(params, batch), got {loss_fn!r}."
        )
    out = jax.eval_shape(loss_fn, params, batch)
    if not hasattr(out, "shape") or out.shape != ():
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"{fn}: `loss_fn(params, batch)` must return a scalar, got {shape}. "
            f"Reduce it (e.g. `.mean()` over the batch) before passing it in."
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"{fn}: `loss_fn` must return a float scalar, got dtype {out.dtype}.")


def is_concrete(*trees: Any) -> bool:
    """True when no leaf is a tracer, i.e. we run eagerly and may inspect values."""
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(trees))


def raise_if_nonfinite(fn: str, tree: Any, what: str) -> None:
    """Eagerly raise ``FloatingPointError`` if ``tree`` holds NaN/inf (no-op under tracing)."""
    if not is_concrete(tree):
        return
    for path, leaf in zip(leaf_names(tree), jax.tree.leaves(tree), strict=True):
        if not bool(np.all(np.isfinite(np.asarray(leaf)))):
            raise FloatingPointError(
                f"{fn}: {what} contains NaN or inf (leaf '{path}'). Check that the loss is "
                f"finite at these params (e.g. a log of 0 or an overflow)."
            )


def check_positive_int(fn: str, name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{fn}: `{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_positive(fn: str, name: str, value: Any, *, allow_zero: bool = False) -> Any:
    """A number (or a concrete array of numbers) ``> 0``, or ``>= 0`` with ``allow_zero``;
    NaN fails. Traced values pass unchecked."""
    if not is_concrete(value):
        return value
    bound = ">=" if allow_zero else ">"
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: `{name}` must be a number {bound} 0, got {value!r}.") from None
    if not np.all(arr >= 0 if allow_zero else arr > 0):
        raise ValueError(f"{fn}: `{name}` must be {bound} 0, got {value!r}.")
    return value


def check_nonnegative(fn: str, name: str, value: Any) -> Any:
    return check_positive(fn, name, value, allow_zero=True)


def check_dense_size(fn: str, n: int, max_params: int, dtype: Any, hint: str) -> None:
    """Refuse a dense ``(n, n)`` Hessian above ``max_params``, stating the memory it needs."""
    if n > max_params:
        itemsize = np.dtype(dtype).itemsize
        raise ValueError(
            f"{fn}: params has {n:,} entries, more than max_params={max_params:,}; the dense "
            f"{np.dtype(dtype)} Hessian would need {format_bytes(n * n * itemsize)} ({n:,}² × "
            f"{itemsize} bytes). {hint}, or raise max_params."
        )


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError


def check_choice(fn: str, name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{fn}: `{name}` must be one of {choices}, got {value!r}.")
    return value


def check_key(fn: str, key: Any) -> None:
    """A PRNG key: a typed key array or a raw uint32[2] key."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return
    if getattr(key, "dtype", None) == jnp.uint32 and jnp.shape(key) == (2,):
        return
    raise TypeError(
        f"{fn}: `key` must be a jax.random key (jax.random.key(0) or PRNGKey(0)), got "
        f"{type(key).__name__} {getattr(key, 'shape', '')}. The key is always the first argument."
    )


def check_float_dtype(fn: str, dtype: Any) -> np.dtype:
    """A floating-point dtype; ``None`` means JAX's default float (float64 under x64)."""
    if dtype is None:
        return jnp.dtype(jnp.result_type(float))
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{fn}: `dtype` must be a floating-point dtype, got {dtype!r}.")
    return jnp.dtype(dtype)


def check_optimizer(fn: str, optimizer: Any) -> None:
    """An Optax ``GradientTransformation`` (anything with ``init`` and ``update``)."""
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError(f"{fn}: `optimizer` must be an optax.GradientTransformation.")
