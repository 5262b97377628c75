"""Optimizers near a saddle: who converges to it, who escapes, and how fast.

Near a non-degenerate saddle ``L ≈ L* + ½ Σ λ_i x_i²``, gradient descent multiplies the
coordinate along a negative eigenvalue by ``1 + η|λ|`` per step, so it escapes after about
``log(distance needed / distance now) / (η|λ_min|)`` steps: slowly when ``|λ_min|`` is small
(the Kramers-like ``1/|λ_min|`` law). Newton's step ``-H⁻¹g`` jumps to the critical point of
the quadratic model, whatever its kind: it is attracted to the saddle. Saddle-free Newton,
``-|H|⁻¹g``, flips the negative direction and leaves at a rate independent of ``|λ_min|``
(Dauphin et al. 2014). Perturbed gradient descent escapes even from exactly on the saddle,
where the gradient is zero (Jin et al. 2017). ``escape_saddle`` runs them all from one point
and measures it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from jaxscape import _checks
from jaxscape.curvature import LossFn, PyTree


class Escape(NamedTuple):
    """One optimizer's run from near a saddle.

    Attributes:
      path: params at steps ``0..num_steps`` (a leading time axis).
      loss: ``(num_steps + 1,)`` the loss along the path.
      grad_norm: ``(num_steps + 1,)`` gradient norms along the path.
      distance: ``(num_steps + 1,)`` Euclidean distance from the saddle.
      escape_step: first step ``t`` with ``loss[t] <= L(saddle) - drop``; ``-1`` if never.
      finite: False when the run produced NaN/inf and was stopped there.
    """

    path: PyTree
    loss: np.ndarray
    grad_norm: np.ndarray
    distance: np.ndarray
    escape_step: int
    finite: bool


def saddle_optimizers(
    key: jax.Array,
    learning_rate: float,
    *,
    momentum: float = 0.9,
    grad_threshold: float | None = None,
    radius: float | None = None,
) -> dict[str, optax.GradientTransformation]:
    """The standard cast for ``escape_saddle``: ``gd``, ``momentum`` (heavy ball), ``newton``
    and ``saddle_free_newton`` (dense, unit step, from ``jaxscape.optim``) and ``perturbed_gd``
    (a uniform kick of ``radius`` when ``‖g‖ <= grad_threshold``; Jin et al. 2017).

    Args:
      key: PRNG key for the perturbations.
      learning_rate: step size of the first-order methods.
      momentum: heavy-ball coefficient.
      grad_threshold, radius: ``perturbed_gd``'s; defaults ``1e-3`` and ``1e-2``.
    """
    from jaxscape import optim

    return {
        "gd": optax.sgd(learning_rate),
        "momentum": optax.sgd(learning_rate, momentum=momentum),
        "newton": optim.newton(),
        "saddle_free_newton": optim.saddle_free_newton(),
        "perturbed_gd": optim.perturbed_gd(
            key,
            learning_rate,
            grad_threshold=1e-3 if grad_threshold is None else grad_threshold,
            radius=1e-2 if radius is None else radius,
        ),
    }


def escape_saddle(
    loss_fn: LossFn,
    saddle: PyTree,
    start: PyTree,
    batch: Any = None,
    *,
    optimizers: Mapping[str, optax.GradientTransformation] | None = None,
    key: jax.Array | None = None,
    learning_rate: float = 0.05,
    num_steps: int = 100,
    drop: float = 1e-2,
) -> dict[str, Escape]:
    """Run each optimizer from ``start`` near ``saddle`` and measure when it escapes.

    Each run is ``jaxscape.fit`` (full batch, one record per step), so every optimizer sees the
    same loss and the second-order ones get ``value_fn``. The escape time is the first step at
    which the loss is ``drop`` below the saddle's: ``L(θ_t) <= L(θ*) - drop``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      saddle: the saddle point ``θ*`` (its loss is the reference, its position the origin of
        ``distance``).
      start: the starting point, e.g. ``saddle`` plus a small offset.
      batch: the data (``None`` for the toys).
      optimizers: ``{name: optax transformation}``; default ``saddle_optimizers(key,
        learning_rate)`` (GD, momentum, Newton, saddle-free Newton, perturbed GD).
      key: PRNG key for the default optimizers' perturbations (needed without ``optimizers``).
      learning_rate: step size of the default first-order optimizers.
      num_steps: steps per run.
      drop: how far below the saddle's loss counts as escaped (> 0).

    Returns:
      ``{name: Escape}``.

    Example:
      >>> s = saddle_problems()["quadratic_saddle"]
      >>> start = s.point + jnp.asarray([1e-3, 0.0])
      >>> runs = escape_saddle(s.loss_fn, s.point, start, key=jax.random.key(0))
      >>> {name: run.escape_step for name, run in runs.items()}  # newton: -1 (converges to it)
    """
    from jaxscape.train import fit

    fn = "escape_saddle"
    _checks.check_params(fn, saddle, "saddle")
    _checks.check_like(fn, start, saddle, "start")
    _checks.check_scalar_loss(fn, loss_fn, saddle, batch)
    num_steps = _checks.check_positive_int(fn, "num_steps", num_steps)
    _checks.check_positive(fn, "drop", drop)
    if optimizers is None:
        if key is None:
            raise ValueError(f"{fn}: pass `optimizers`, or a `key` for the default set.")
        optimizers = saddle_optimizers(key, learning_rate)
    if not isinstance(optimizers, Mapping) or not optimizers:
        raise TypeError(f"{fn}: `optimizers` must be a non-empty dict {{name: optax transform}}.")
    for name, opt in optimizers.items():
        _checks.check_optimizer(f"{fn} (optimizers[{name!r}])", opt)
    level = float(loss_fn(saddle, batch)) - drop
    center = ravel_pytree(saddle)[0]
    runs = {}
    for name, opt in optimizers.items():
        res = fit(
            jax.random.key(0),  # the minibatch key; unused with full-batch data
            loss_fn, start, opt, batch, num_steps=num_steps, record_every=1,
            progress=False, on_nonfinite="stop",
        )  # fmt: skip
        flat = jax.vmap(lambda p: ravel_pytree(p)[0])(res.history.params)
        loss = np.asarray(res.history.loss)
        below = np.flatnonzero(loss <= level)
        runs[name] = Escape(
            path=res.history.params,
            loss=loss,
            grad_norm=np.asarray(res.history.grad_norm),
            distance=np.asarray(jnp.linalg.norm(flat - center, axis=1)),
            escape_step=int(below[0]) if below.size else -1,
            finite=bool(res.finite),
        )
    return runs


def saddle_problems(*, dtype=None) -> dict:
    """The saddles of ``toys.critical_point_examples``: ``quadratic_saddle`` (−x² + 3y²),
    ``degenerate_saddle`` (x² − y⁴), ``monkey_saddle`` (x³ − 3xy²), ``chain2_origin`` (strict
    saddle of the depth-2 linear chain) and ``chain3_origin`` (its zero-Hessian depth-3
    saddle), each a ``CriticalPointExample`` with ``loss_fn`` and ``point``."""
    from jaxscape.toys import critical_point_examples

    examples = critical_point_examples(dtype=dtype)
    return {name: ex for name, ex in examples.items() if ex.kind == "saddle"}


def gd_escape_time(eigenvalue: float, offset: float, learning_rate: float, drop: float) -> int:
    """Steps gradient descent needs to fall ``drop`` below a quadratic saddle.

    Along the eigenvector of ``λ < 0`` with starting offset ``x₀`` (the other coordinates at
    their minimum), ``x_t = (1 + η|λ|)^t x₀`` and the loss is ``L* - ½|λ| x_t²``, so the first
    ``t`` with ``½|λ| x_t² >= drop`` is ``⌈log(√(2 drop / |λ|) / |x₀|) / log(1 + η|λ|)⌉`` ≈
    ``log(·) / (η|λ|)``: inversely proportional to ``|λ_min|``.

    Args:
      eigenvalue: the negative eigenvalue ``λ``.
      offset: ``x₀``, the start's coordinate along its eigenvector (non-zero).
      learning_rate: ``η``.
      drop: the loss decrease that counts as escaped.
    """
    if not eigenvalue < 0:
        raise ValueError(f"gd_escape_time: `eigenvalue` must be negative, got {eigenvalue!r}.")
    if offset == 0:
        raise ValueError("gd_escape_time: `offset` must be non-zero (GD never leaves x = 0).")
    a = abs(eigenvalue)
    need = math.log(math.sqrt(2 * drop / a) / abs(offset))
    return max(0, math.ceil(need / math.log1p(learning_rate * a)))


__all__ = ["Escape", "escape_saddle", "gd_escape_time", "saddle_optimizers", "saddle_problems"]
