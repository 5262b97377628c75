"""Two-dimensional critical points, Rosenbrock valleys, an ill-conditioned quadratic, and the
registry of critical-point examples."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxscape import _checks
from jaxscape._checks import check_float_dtype
from jaxscape.toys._common import LossFn, _vector, _xy
from jaxscape.toys.linear import deep_linear_chain

# --------------------------------------------------------------------------- 2-D critical points


def quadratic_bowl(params, batch=None):
    """``f(x, y) = x² + 3y²``: a non-degenerate minimum at 0, Hessian ``diag(2, 6)``."""
    x, y = _xy("quadratic_bowl", params)
    return x**2 + 3 * y**2


def quadratic_saddle(params, batch=None):
    """``f(x, y) = -x² + 3y²``: a saddle at 0 (index 1), Hessian ``diag(-2, 6)``."""
    x, y = _xy("quadratic_saddle", params)
    return -(x**2) + 3 * y**2


def degenerate_minimum(params, batch=None):
    """``f(x, y) = x² + y⁴``: a minimum at 0 with the singular Hessian ``diag(2, 0)``.

    Same Hessian as ``degenerate_saddle`` (``x² - y⁴``), which is a saddle: a Hessian-based
    (second-order) test cannot tell the two apart; the quartic term decides.
    """
    x, y = _xy("degenerate_minimum", params)
    return x**2 + y**4


def degenerate_saddle(params, batch=None):
    """``f(x, y) = x² - y⁴``: a saddle at 0 whose Hessian ``diag(2, 0)`` is positive
    semi-definite, identical to that of the minimum ``x² + y⁴``."""
    x, y = _xy("degenerate_saddle", params)
    return x**2 - y**4


def quartic_maximum(params, batch=None):
    """``f(x, y) = -x⁴ - y⁴``: a strict maximum at 0 with a zero Hessian."""
    x, y = _xy("quartic_maximum", params)
    return -(x**4) - y**4


def monkey_saddle(params, batch=None):
    """``f(x, y) = x³ - 3xy²``: a saddle of order 3 at 0 (three descending valleys), zero
    Hessian; ``f = Re (x + iy)³``."""
    x, y = _xy("monkey_saddle", params)
    return x**3 - 3 * x * y**2


def rosenbrock(params, batch=None, *, a=1.0, b=100.0):
    """Rosenbrock's valley ``f(x) = Σ_{i<n} (a - x_i)² + b (x_{i+1} - x_i²)²``, ``n >= 2``.

    Known (Rosenbrock 1960): for n = 2 the only critical point is the global minimum
    ``(a, a²)`` with Hessian ``[[2 + 8ba², -4ba], [-4ba, 2b]]`` (``[[802, -400], [-400, 200]]``,
    condition number ≈ 2508, for a=1, b=100), at the bottom of a curved, flat-floored valley.
    For n ≥ 3 and a = 1 the global minimum is the all-ones vector; for 4 ≤ n ≤ 7 there is
    exactly one more local minimum, near ``(-1, 1, ..., 1)`` (Shang & Qiu 2006).

    Args:
      params: shape ``(n,)``, n ≥ 2.
      a, b: the valley's parameters (floats or traced scalars).
    """
    x = _vector("rosenbrock", params, min_size=2)
    head, tail = x[:-1], x[1:]
    return jnp.sum((a - head) ** 2 + b * (tail - head**2) ** 2)


def rosenbrock_hessian(params, *, a=1.0, b=100.0):
    """Closed-form (tridiagonal) Hessian of ``rosenbrock`` at any point.

    ``H_ii = [i<n](2 - 4b(x_{i+1} - x_i²) + 8b x_i²) + [i>1] 2b``, ``H_{i,i+1} = -4b x_i``.
    (It does not depend on ``a``, which is accepted only to mirror ``rosenbrock``.)
    """
    del a
    x = _vector("rosenbrock_hessian", params, min_size=2)
    head, tail = x[:-1], x[1:]
    diag = jnp.zeros_like(x).at[:-1].add(2 - 4 * b * (tail - head**2) + 8 * b * head**2)
    off = -4 * b * head
    return jnp.diag(diag.at[1:].add(2 * b)) + jnp.diag(off, 1) + jnp.diag(off, -1)


def rosenbrock_minimum(*, num_dims: int, a: float = 1.0, dtype=None) -> jax.Array:
    """The global minimum of ``rosenbrock``: ``(a, a²)`` for n = 2, ``(a, ..., a)`` for
    ``a in {0, 1}``; for n ≥ 3 and other ``a`` there is no closed form (ValueError)."""
    n = _checks.check_positive_int("rosenbrock_minimum", "num_dims", num_dims, minimum=2)
    dtype = check_float_dtype("rosenbrock_minimum", dtype)
    if n == 2:
        return jnp.asarray([a, a * a], dtype)
    if a not in (0.0, 1.0):
        raise ValueError(
            f"rosenbrock_minimum: for num_dims >= 3 the minimum is known in closed form only for "
            f"a = 0 or a = 1 (the all-a vector), got a={a!r} with num_dims={n}."
        )
    return jnp.full((n,), a, dtype)


def quadratic_valley(params, batch=None, *, condition_number=100.0, angle=math.pi / 6):
    """Rotated ill-conditioned quadratic ``f(p) = ½ pᵀ R diag(κ, 1) Rᵀ p``.

    ``R`` rotates by ``angle``; the minimum is 0, the Hessian ``R diag(κ, 1) Rᵀ`` has
    eigenvalues ``κ`` (across the valley, along ``(cos, sin)``) and 1 (along the valley floor),
    condition number ``κ``: gradient descent needs ``η < 2/κ`` to be stable across the valley,
    so along the floor its error shrinks by at best ``1 - 2/κ`` per step.
    """
    if not condition_number >= 1:
        raise ValueError(
            f"quadratic_valley: `condition_number` must be >= 1, got {condition_number!r}."
        )
    x, y = _xy("quadratic_valley", params)
    c, s = math.cos(angle), math.sin(angle)
    across, along = c * x + s * y, -s * x + c * y
    return 0.5 * (condition_number * across**2 + along**2)


class CriticalPointExample(NamedTuple):
    """A loss with one critical point whose nature is known.

    Attributes:
      name: registry key.
      loss_fn: ``loss_fn(params, batch=None)``.
      point: the critical point (params).
      kind: ``"minimum"``, ``"maximum"`` or ``"saddle"`` — the truth, not the Hessian's verdict.
      hessian: the exact Hessian at ``point``.
      degenerate: the Hessian is singular, so second-order tests cannot decide ``kind``.
    """

    name: str
    loss_fn: LossFn
    point: jax.Array
    kind: str
    hessian: jax.Array
    degenerate: bool


def critical_point_examples(*, dtype=None) -> dict[str, CriticalPointExample]:
    """Registry of critical points with known kind and Hessian, for testing classifiers.

    Contains the 2-D examples above (at 0; Rosenbrock at (1, 1); the valley with κ = 100 and
    angle π/6) and deep linear chains: the K=2 origin (a strict saddle, eigenvalues ±2), the K=3
    origin (a saddle with zero Hessian) and the K=2 global minimum (1, 1), a minimum with
    Hessian ``[[2, 2], [2, 2]]`` that is singular along the valley of minima ``w₁w₂ = 1``.

    Note ``degenerate_minimum`` / ``degenerate_saddle`` share the Hessian ``diag(2, 0)`` and
    ``quartic_maximum`` / ``monkey_saddle`` share the zero Hessian: any Hessian-based
    classification must answer "degenerate" (inconclusive) for them.
    """
    dtype = check_float_dtype("critical_point_examples", dtype)
    arr = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    valley = [[100 * c * c + s * s, 99 * c * s], [99 * c * s, 100 * s * s + c * c]]
    rows = [
        ("quadratic_bowl", quadratic_bowl, [0, 0], "minimum", [[2, 0], [0, 6]], False),
        ("quadratic_saddle", quadratic_saddle, [0, 0], "saddle", [[-2, 0], [0, 6]], False),
        ("degenerate_minimum", degenerate_minimum, [0, 0], "minimum", [[2, 0], [0, 0]], True),
        ("degenerate_saddle", degenerate_saddle, [0, 0], "saddle", [[2, 0], [0, 0]], True),
        ("quartic_maximum", quartic_maximum, [0, 0], "maximum", [[0, 0], [0, 0]], True),
        ("monkey_saddle", monkey_saddle, [0, 0], "saddle", [[0, 0], [0, 0]], True),
        ("rosenbrock", rosenbrock, [1, 1], "minimum", [[802, -400], [-400, 200]], False),
        ("quadratic_valley", quadratic_valley, [0, 0], "minimum", valley, False),
        ("chain2_origin", deep_linear_chain, [0, 0], "saddle", [[0, -2], [-2, 0]], False),
        ("chain3_origin", deep_linear_chain, [0, 0, 0], "saddle", [[0] * 3] * 3, True),
        ("chain2_minimum", deep_linear_chain, [1, 1], "minimum", [[2, 2], [2, 2]], True),
    ]
    return {
        name: CriticalPointExample(name, fn, arr(point), kind, arr(hess), degenerate)
        for name, fn, point, kind, hess, degenerate in rows
    }
