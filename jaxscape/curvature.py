"""Curvature operators: Hessian- and Gauss-Newton-vector products of ``loss_fn(params, batch)``.

An operator is a plain function ``matvec(v) -> Hv`` from a params-shaped pytree to a
params-shaped pytree. Build operators inside the function you ``jax.jit``, with ``params`` and
``batch`` as its arguments: arrays captured from outside a ``jit`` are baked into the program
as constants, which XLA may spend minutes folding.

    >>> @jax.jit
    ... def top_eigenvalue(params, batch, key):
    ...     matvec = hessian_operator(loss_fn, params, batch)
    ...     return eigsh(key, matvec, params, k=1).eigenvalues[0]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree
from optax import tree_utils as otu

from jaxscape import _checks
from jaxscape.distributed import check_fits

PyTree = Any
LossFn = Callable[[PyTree, Any], jax.Array]
Matvec = Callable[[PyTree], PyTree]


def _grad_fn(loss_fn: LossFn, batch: Any) -> Callable[[PyTree], PyTree]:
    return lambda p: jax.grad(loss_fn)(p, batch)


def hvp(loss_fn: LossFn, params: PyTree, batch: Any, v: PyTree, *, mode: str = "fwd-rev") -> PyTree:
    """Hessian-vector product ``H v`` with ``H = ∇²_params loss_fn(params, batch)``.

    ``mode="fwd-rev"`` (default) is forward-over-reverse, ``jvp(grad(L))``: about 2-3 gradient
    evaluations and the memory of one (Pearlmutter 1994). ``mode="rev-rev"`` is
    reverse-over-reverse, ``grad(<grad(L), v>)``, kept as a cross-check and for benchmarks.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: any pytree of float arrays (the point where ``H`` is taken).
      batch: any pytree, passed through to ``loss_fn``.
      v: a pytree with the structure, shapes and dtypes of ``params``.
      mode: ``"fwd-rev"`` or ``"rev-rev"``.

    Returns:
      ``H v``, shaped like ``params``.

    Example:
      >>> hvp(lambda p, b: jnp.sum(p**3), jnp.ones(2), None, jnp.ones(2))  # 6 p * v
      Array([6., 6.], dtype=float32)
    """
    _validate("hvp", loss_fn, params, batch)
    _checks.check_like("hvp", v, params)
    _checks.check_choice("hvp", "mode", mode, ("fwd-rev", "rev-rev"))
    grad_fn = _grad_fn(loss_fn, batch)
    if mode == "fwd-rev":
        out = jax.jvp(grad_fn, (params,), (v,))[1]
    else:
        out = jax.grad(lambda p: otu.tree_vdot(grad_fn(p), v))(params)
    _checks.raise_if_nonfinite("hvp", out, "the Hessian-vector product")
    return out


def hessian_operator(loss_fn: LossFn, params: PyTree, batch: Any) -> Matvec:
    """The Hessian at ``params`` as a reusable operator ``v -> H v``.

    The gradient is linearized once (``jax.linearize``): the forward and backward passes run
    when the operator is built, and each product afterwards costs only the linear
    (tangent) part, typically 1.3-1.5 gradients instead of 2-3 for a fresh ``hvp``. The price
    is holding the linearization's residuals (about the activations of one backward pass).

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: the point, any pytree of float arrays.
      batch: any pytree.

    Returns:
      ``matvec(v) -> H v`` for ``v`` shaped like ``params``.
    """
    _validate("hessian_operator", loss_fn, params, batch)
    _, linear = jax.linearize(_grad_fn(loss_fn, batch), params)
    return _checked_operator("hessian_operator", linear, params)


def ggn_operator(
    apply_fn: Callable[[PyTree, Any], Any],
    output_loss_fn: Callable[[Any, Any], jax.Array],
    params: PyTree,
    batch: Any,
) -> Matvec:
    """Generalized Gauss-Newton operator ``G v = Jᵀ H_out J v`` (Schraudolph 2002).

    With ``loss = output_loss_fn(apply_fn(params, batch), batch)``, ``J`` is the Jacobian of the
    network outputs with respect to params and ``H_out`` the Hessian of ``output_loss_fn`` with
    respect to the outputs. ``G`` is positive semi-definite whenever ``output_loss_fn`` is
    convex in the outputs (squared error, softmax cross-entropy), and equals the Hessian when
    ``apply_fn`` is linear in params.

    Args:
      apply_fn: ``apply_fn(params, batch) -> outputs`` (any pytree of arrays).
      output_loss_fn: ``output_loss_fn(outputs, batch) -> scalar``, e.g. the mean cross-entropy
        of logits against ``batch["y"]``.
      params, batch: as for ``hessian_operator``.

    Returns:
      ``matvec(v) -> G v`` for ``v`` shaped like ``params``.
    """
    _checks.check_params("ggn_operator", params)
    outputs, jvp = jax.linearize(lambda p: apply_fn(p, batch), params)
    _checks.check_scalar_loss("ggn_operator", output_loss_fn, outputs, batch)
    vjp = jax.linear_transpose(jvp, params)
    _, h_out = jax.linearize(lambda o: jax.grad(output_loss_fn)(o, batch), outputs)
    return _checked_operator("ggn_operator", lambda v: vjp(h_out(jvp(v)))[0], params)


def averaged_operator(
    make_matvec: Callable[[Any], Matvec],
    batches: Any,
    *,
    weights: Any = None,
) -> Matvec:
    """The operator of a whole data set: ``v -> Σ_b w_b H_b v / Σ_b w_b``.

    For losses that are means over examples, weighting each batch by its number of examples
    gives exactly the operator of the concatenated data (summing per-batch operators, as
    loss-landscape's Hessian code does, scales the curvature by the number of batches).

    Args:
      make_matvec: ``batch -> matvec``, e.g. ``lambda b: hessian_operator(loss_fn, params, b)``.
        It is called inside every product, so only one batch's residuals are alive at a time.
      batches: either a Python ``list`` / iterator of batches (any sizes; unrolled), or one
        pytree whose leaves carry a leading *stack* axis ``(num_batches, batch_size, ...)``
        (equal sizes; evaluated with ``lax.scan``, compiled once).
      weights: per-batch weights. Default: the leading dimension of each batch's first leaf
        (its number of examples) for a list; equal weights for a stack. Pass the number of
        real examples when the last stacked batch is padded.

    Returns:
      ``matvec(v)`` shaped like the operators ``make_matvec`` returns.
    """
    if isinstance(batches, list | Iterator):
        return _averaged_list(make_matvec, list(batches), weights)
    leaves = jax.tree.leaves(batches)
    if not leaves or any(jnp.ndim(x) == 0 for x in leaves):
        raise ValueError(
            "averaged_operator: `batches` must be a list of batches or a pytree of arrays with "
            "a leading stack axis (num_batches, ...); got a pytree with no stacked leaves."
        )
    num = jnp.shape(leaves[0])[0]
    if any(jnp.shape(x)[0] != num for x in leaves):
        raise ValueError(
            "averaged_operator: the leaves of stacked `batches` disagree on the leading "
            f"(num_batches) axis: {[jnp.shape(x)[0] for x in leaves]}."
        )
    w = jnp.ones((num,)) if weights is None else jnp.asarray(weights)
    if w.shape != (num,):
        raise ValueError(f"averaged_operator: `weights` must have shape ({num},), got {w.shape}.")
    w = w / jnp.sum(w)

    def matvec(v):
        def body(acc, wb):
            wi, batch = wb
            return _add_scaled(acc, wi, make_matvec(batch)(v)), None

        return lax.scan(body, otu.tree_zeros_like(v), (w, batches))[0]

    return matvec


def _averaged_list(make_matvec, batches: list, weights) -> Matvec:
    if not batches:
        raise ValueError("averaged_operator: `batches` is an empty list.")
    if weights is None:
        weights = [
            np.shape(jax.tree.leaves(b)[0])[0] if jnp.ndim(jax.tree.leaves(b)[0]) else 1
            for b in batches
        ]
    if len(weights) != len(batches):
        raise ValueError(
            f"averaged_operator: got {len(weights)} weights for {len(batches)} batches."
        )
    total = float(sum(weights))
    if total <= 0:
        raise ValueError(
            f"averaged_operator: `weights` must sum to a positive number, got {total}."
        )

    def matvec(v):
        acc = otu.tree_zeros_like(v)
        for wi, batch in zip(weights, batches, strict=True):
            acc = _add_scaled(acc, float(wi) / total, make_matvec(batch)(v))
        return acc

    return matvec


def _add_scaled(acc: PyTree, w: Any, x: PyTree) -> PyTree:
    return jax.tree.map(lambda a, b: a + jnp.asarray(w, b.dtype) * b, acc, x)


def hessian_matrix(
    loss_fn: LossFn, params: PyTree, batch: Any, *, max_params: int = 10_000
) -> jax.Array:
    """Dense Hessian ``(n, n)`` of the loss over the raveled params (``ravel_pytree`` order).

    Meant for small models and for references in tests: memory is ``n² × itemsize`` bytes.

    Args:
      loss_fn, params, batch: as for ``hvp``.
      max_params: refuse (with the memory it would take) above this many parameters.

    Returns:
      The symmetric ``(n, n)`` matrix ``∂²L / ∂θ_i ∂θ_j`` with ``θ = ravel_pytree(params)[0]``.
    """
    _validate("hessian_matrix", loss_fn, params, batch)
    flat = ravel_pytree(params)[0]
    n = flat.size
    _checks.check_dense_size(
        "hessian_matrix", n, max_params, flat.dtype,
        "Use hessian_operator with eigsh / spectral_density",
    )  # fmt: skip
    if _checks.is_concrete(params, batch):  # refuse before running what cannot fit
        run = check_fits(
            "hessian_matrix",
            _dense_hessian.lower(loss_fn, params, batch).compile(),
            f"the dense {n:,} × {n:,} Hessian",
            "Use hessian_operator with eigsh / spectral_density instead.",
        )
        H = run(params, batch)
    else:
        H = _dense_hessian(loss_fn, params, batch)
    _checks.raise_if_nonfinite("hessian_matrix", H, "the Hessian")
    return H


@partial(jax.jit, static_argnames="loss_fn")
def _dense_hessian(loss_fn: LossFn, params: PyTree, batch: Any) -> jax.Array:
    flat, unravel = ravel_pytree(params)
    return jax.hessian(lambda x: loss_fn(unravel(x), batch))(flat)


def directional_curvature(loss_fn: LossFn, params: PyTree, batch: Any, d: PyTree) -> jax.Array:
    """Curvature of the loss along direction ``d``: the Rayleigh quotient ``dᵀ H d / dᵀ d``.

    Returns a scalar; it lies between the smallest and largest Hessian eigenvalue.
    """
    _checks.check_like("directional_curvature", d, params, name="d")
    dd = otu.tree_vdot(d, d)
    if _checks.is_concrete(dd) and not float(dd) > 0:
        raise ValueError("directional_curvature: direction `d` is zero (dᵀd = 0).")
    return otu.tree_vdot(d, hvp(loss_fn, params, batch, d)) / dd


class TaylorStep(NamedTuple):
    """Second-order model of one gradient step ``θ - η g`` (Goodfellow et al., Deep Learning §4.3).

    Attributes:
      loss: ``L(θ)``.
      grad_sq_norm: ``gᵀg``.
      curvature: ``gᵀHg`` (negative: the loss curves downward along the gradient).
      predicted_change: ``-η gᵀg + ½ η² gᵀHg``, the quadratic model's change.
      actual_change: ``L(θ - η g) - L(θ)``.
      optimal_learning_rate: ``gᵀg / gᵀHg``, the step that minimizes the quadratic model along
        ``-g``; ``inf`` where ``gᵀHg <= 0`` (the model has no minimum along ``-g``).
    """

    loss: jax.Array
    grad_sq_norm: jax.Array
    curvature: jax.Array
    predicted_change: jax.Array
    actual_change: jax.Array
    optimal_learning_rate: jax.Array


def taylor_step(loss_fn: LossFn, params: PyTree, batch: Any, learning_rate: float) -> TaylorStep:
    """Predicted vs actual loss change of a gradient step of size ``learning_rate``.

    ``L(θ - ηg) ≈ L(θ) - η gᵀg + ½ η² gᵀHg``; the quadratic model is minimized at
    ``η* = gᵀg / gᵀHg``. When ``η > 2 / λ_max`` gradient descent diverges along the top
    eigenvector; comparing ``predicted_change`` with ``actual_change`` shows where the
    quadratic model stops being trustworthy.
    """
    _validate("taylor_step", loss_fn, params, batch)
    loss, g = jax.value_and_grad(loss_fn)(params, batch)
    gg = otu.tree_vdot(g, g)
    gHg = otu.tree_vdot(g, jax.jvp(_grad_fn(loss_fn, batch), (params,), (g,))[1])
    eta = jnp.asarray(learning_rate, loss.dtype)
    stepped = jax.tree.map(lambda p, gi: p - eta.astype(p.dtype) * gi, params, g)
    return TaylorStep(
        loss=loss,
        grad_sq_norm=gg,
        curvature=gHg,
        predicted_change=-eta * gg + 0.5 * eta**2 * gHg,
        actual_change=loss_fn(stepped, batch) - loss,
        optimal_learning_rate=jnp.where(gHg > 0, gg / jnp.where(gHg > 0, gHg, 1), jnp.inf),
    )


# --------------------------------------------------------------------------- sub-blocks


def partition(params: PyTree, param_filter: Any) -> tuple[PyTree, PyTree]:
    """Split params into ``(selected, rest)``; each keeps the tree, with ``None`` elsewhere.

    ``param_filter`` is one of:
      - a regular expression, searched in each leaf's ``'/'``-joined path
        (``"Dense_1/"``, ``"kernel$"``);
      - a callable ``(path: str, leaf) -> bool``;
      - a pytree of bools shaped like ``params``.
    """
    names = _checks.leaf_names(params)
    leaves, treedef = jax.tree.flatten(params)
    if isinstance(param_filter, str):
        pattern = re.compile(param_filter)
        mask = [bool(pattern.search(name)) for name in names]
    elif callable(param_filter):
        mask = [bool(param_filter(name, leaf)) for name, leaf in zip(names, leaves, strict=True)]
    else:
        mask_leaves, mask_def = jax.tree.flatten(param_filter)
        if mask_def != treedef:
            raise ValueError(
                "partition: a pytree `param_filter` must have the structure of params; "
                f"params has {treedef}, the filter has {mask_def}."
            )
        mask = [bool(m) for m in mask_leaves]
    if not any(mask):
        raise ValueError(
            f"partition: `param_filter` {param_filter!r} selects no parameter; the leaves are "
            f"{names}."
        )
    selected = [x if m else None for x, m in zip(leaves, mask, strict=True)]
    rest = [None if m else x for x, m in zip(leaves, mask, strict=True)]
    return jax.tree.unflatten(treedef, selected), jax.tree.unflatten(treedef, rest)


def combine(selected: PyTree, rest: PyTree) -> PyTree:
    """Inverse of ``partition``: take each leaf from whichever side is not ``None``."""
    is_none = lambda x: x is None  # noqa: E731
    return jax.tree.map(lambda a, b: b if a is None else a, selected, rest, is_leaf=is_none)


def restrict(loss_fn: LossFn, params: PyTree, param_filter: Any) -> tuple[LossFn, PyTree]:
    """Restrict a loss to a subset of the parameters: per-layer / per-block curvature.

    Returns ``(sub_loss_fn, sub_params)`` where ``sub_loss_fn(sub_params, batch)`` evaluates
    ``loss_fn`` with the unselected leaves frozen at their values in ``params``. Every tool then
    works on the block: ``hessian_operator(sub_loss_fn, sub_params, batch)`` is the diagonal
    block ``H_BB`` of the Hessian, ``eigsh(key, that, sub_params)`` its spectrum.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: the full params.
      param_filter: see ``partition``; e.g. ``"Dense_0/"`` for the first Flax layer.

    Example:
      >>> sub_loss, sub = restrict(loss_fn, params, "Dense_1/kernel")
      >>> eigs = eigsh(key, hessian_operator(sub_loss, sub, batch), sub, k=3)
    """
    selected, rest = partition(params, param_filter)

    def sub_loss_fn(sub_params, batch):
        return loss_fn(combine(sub_params, rest), batch)

    return sub_loss_fn, selected


# --------------------------------------------------------------------------- helpers


def _validate(fn: str, loss_fn: LossFn, params: PyTree, batch: Any) -> None:
    _checks.check_params(fn, params)
    _checks.check_scalar_loss(fn, loss_fn, params, batch)


def _checked_operator(fn: str, linear: Callable, params: PyTree) -> Matvec:
    def matvec(v):
        _checks.check_like(fn, v, params)
        return linear(v)

    return matvec


def count_params(params: PyTree) -> int:
    """Total number of scalar parameters in a pytree."""
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))


__all__ = [
    "TaylorStep",
    "averaged_operator",
    "combine",
    "count_params",
    "directional_curvature",
    "ggn_operator",
    "hessian_matrix",
    "hessian_operator",
    "hvp",
    "partition",
    "restrict",
    "taylor_step",
]
