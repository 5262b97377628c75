"""Landscape geometry: the loss along lines and over planes, directions, and trajectory planes.

Every evaluation of many parameter points is one compiled program: the points are built from
coefficients inside ``jax.lax.map(..., batch_size=chunk_size)`` (``vmap`` within a chunk), so a
large grid runs in memory bounded by the chunk. Losses take any ``loss_fn(params, batch)``; a
data set is averaged by passing a stack of equal batches (``data.stack_batches``) with
``stacked=True``. Trajectories are params with a leading time axis (``fit``'s
``history.params``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh

from jaxscape._checks import (
    check_choice,
    check_key,
    check_like,
    check_params,
    check_positive_int,
    is_concrete,
)
from jaxscape._util import chunked_map
from jaxscape.distributed import check_fits

PyTree = Any
Metric = Callable[[PyTree, Any], jax.Array]


class Profile(NamedTuple):
    """Loss (and metrics) at ``coords``: ``(A,)`` for a line, ``(len(ys), len(xs))`` for a plane.

    Attributes:
      coords: ``alphas`` of a line, or ``(xs, ys)`` of a plane.
      loss: the loss at every point.
      metrics: ``{name: values}`` of the same shape.
    """

    coords: Any
    loss: jax.Array
    metrics: dict[str, jax.Array]


# --------------------------------------------------------------------------- evaluation


def _evaluator(loss_fn, metrics, stacked: bool):
    """``params, data -> {"loss": ..., **metrics}``, averaged over a stack of batches."""
    fns = {"loss": loss_fn, **dict(metrics or {})}

    def on_batch(params, batch):
        return {name: fn(params, batch) for name, fn in fns.items()}

    if not stacked:
        return on_batch

    def on_stack(params, batches):
        return jax.tree.map(jnp.mean, jax.lax.map(lambda b: on_batch(params, b), batches))

    return on_stack


def _grid_kernel(
    loss_fn, metric_items, stacked, chunk_size, mesh, center, directions, coeffs, data
):
    """``evaluate(center + Σ_i c_i d_i, data)`` for every row ``c`` of ``coeffs``, chunked (and
    split over the devices of ``mesh`` when one is given)."""
    evaluate = _evaluator(loss_fn, dict(metric_items), stacked)
    return chunked_map(
        lambda c: evaluate(_combine(center, tuple(c), directions), data),
        coeffs,
        chunk_size,
        mesh=mesh,
    )


_grid_jit = jax.jit(_grid_kernel, static_argnums=(0, 1, 2, 3, 4))


def _evaluate_grid(
    fn, loss_fn, metrics, stacked, chunk_size, center, directions, coeffs, data, mesh=None
):
    """Run ``_grid_kernel`` as one compiled program, cached per (loss_fn, metrics, options), so
    that eager callers do not dispatch the loss op by op. Losses that cannot be hashed (static
    arguments must be) are traced afresh on each call instead. Before it runs, XLA's memory
    plan of the program is compared with the device's free memory (``check_fits``)."""
    if chunk_size is not None:
        check_positive_int(fn, "chunk_size", chunk_size)
    static = (loss_fn, tuple((metrics or {}).items()), bool(stacked), chunk_size, mesh)
    args = (center, directions, coeffs, data)
    try:
        hash(static)
        kernel = None
    except TypeError:
        kernel = jax.jit(lambda *a: _grid_kernel(*static, *a))
    if not is_concrete(args):
        # inside the caller's jit: the memory is that of the caller's program
        return _grid_jit(*static, *args) if kernel is None else kernel(*args)
    lowered = _grid_jit.lower(*static, *args) if kernel is None else kernel.lower(*args)
    compiled = check_fits(
        fn,
        lowered.compile(),
        f"evaluating {coeffs.shape[0]} points"
        + ("" if chunk_size is None else f", {chunk_size} at a time,"),
        "Pass a smaller chunk_size (memory grows with it), mesh= to split the points over "
        "devices, or a batch sharded with distributed.shard_batch.",
    )
    return compiled(*args)


def _combine(center, coeffs, directions):
    """``center + Σ_i coeffs[i] · directions[i]`` leafwise, in the params' dtype."""

    def leaf(c, *ds):
        out = c
        for a, d in zip(coeffs, ds, strict=True):
            out = out + a.astype(c.dtype) * d
        return out

    return jax.tree.map(leaf, center, *directions)


def interpolate(
    loss_fn: Callable[[PyTree, Any], jax.Array],
    params_a: PyTree,
    params_b: PyTree,
    batch: Any,
    alphas: Any,
    *,
    metrics: Mapping[str, Metric] | None = None,
    stacked: bool = False,
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
) -> Profile:
    """Loss along the line ``θ(α) = (1 - α) a + α b`` (Goodfellow, Vinyals & Saxe 2015).

    ``α`` may leave [0, 1]: Goodfellow et al. plot α ∈ [-0.5, 1.5]; α = 2 with ``a = θ₀``,
    ``b = θ*`` is the point ``θ₀ + 2(θ* - θ₀)``. All points are one compiled evaluation.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params_a, params_b: the end points (same structure).
      batch: one batch, or with ``stacked=True`` a stack of equal batches (leading axis) whose
        mean is taken (e.g. ``data.stack_batches(dataset, batch_size=...)``).
      alphas: ``(A,)`` coefficients.
      metrics: ``{name: fn(params, batch) -> scalar}`` evaluated at the same points (accuracy).
      chunk_size: points evaluated together (``vmap``); ``None`` evaluates all at once. With
        a ``mesh``, points per device.
      mesh: spread the points over this mesh's devices (``distributed.data_mesh()``); each
        device evaluates its share with params and batch replicated. Without it, a batch
        sharded by ``distributed.shard_batch`` makes every point data-parallel instead.

    Returns:
      ``Profile(alphas, loss (A,), metrics)``.

    Example::

        prof = interpolate(loss_fn, params0, params_star, batch, jnp.linspace(-0.5, 1.5, 41))
    """
    fn = "interpolate"
    check_params(fn, params_a, "params_a")
    check_like(fn, params_b, params_a, "params_b")
    alphas = jnp.asarray(alphas)
    if alphas.ndim != 1:
        raise ValueError(f"{fn}: `alphas` must be 1-D, got shape {alphas.shape}.")
    delta = jax.tree.map(jnp.subtract, params_b, params_a)
    out = _evaluate_grid(
        fn, loss_fn, metrics, stacked, chunk_size, params_a, (delta,), alphas[:, None], batch,
        mesh,
    )  # fmt: skip
    return Profile(alphas, out.pop("loss"), out)


def surface(
    loss_fn: Callable[[PyTree, Any], jax.Array],
    center: PyTree,
    d1: PyTree,
    d2: PyTree,
    batch: Any,
    xs: Any,
    ys: Any,
    *,
    metrics: Mapping[str, Metric] | None = None,
    stacked: bool = False,
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
) -> Profile:
    """Loss on the plane ``θ(x, y) = center + x·d1 + y·d2`` (Li et al. 2018).

    Args:
      loss_fn, batch, metrics, stacked, chunk_size, mesh: as in ``interpolate``.
      center: the plane's origin (params).
      d1, d2: directions shaped like ``center`` (``random_direction``, ``pca_directions``,
        ``plane_through``).
      xs, ys: ``(X,)`` and ``(Y,)`` coordinates.

    Returns:
      ``Profile((xs, ys), loss (Y, X), metrics)``: row ``i`` is ``y = ys[i]``, as
      ``plt.contour(xs, ys, loss)`` expects.
    """
    fn = "surface"
    check_params(fn, center, "center")
    check_like(fn, d1, center, "d1")
    check_like(fn, d2, center, "d2")
    xs, ys = jnp.asarray(xs), jnp.asarray(ys)
    if xs.ndim != 1 or ys.ndim != 1:
        raise ValueError(f"{fn}: `xs` and `ys` must be 1-D, got {xs.shape} and {ys.shape}.")
    gx, gy = jnp.meshgrid(xs, ys)
    coeffs = jnp.stack([gx.ravel(), gy.ravel()], axis=1)
    out = _evaluate_grid(
        fn, loss_fn, metrics, stacked, chunk_size, center, (d1, d2), coeffs, batch, mesh
    )
    out = jax.tree.map(lambda v: v.reshape(len(ys), len(xs)), out)
    return Profile((xs, ys), out.pop("loss"), out)


# --------------------------------------------------------------------------- directions

NORMALIZATIONS = ("filter", "layer", "model", None)


def random_direction(
    key: jax.Array,
    params: PyTree,
    *,
    normalization: str | None = "filter",
    ignore_1d: bool = True,
    filter_axis: int = -1,
) -> PyTree:
    """A Gaussian direction ``d ~ N(0, I)`` shaped like ``params``, normalized to the weights.

    ``normalization``:

    - ``"filter"`` (Li et al. 2018): every filter ``d_f ← d_f / ‖d_f‖ · ‖θ_f‖``, a filter being
      a slice along ``filter_axis`` of a leaf with ``ndim ≥ 2``: one output unit of a dense
      kernel or one output channel of a conv kernel. Flax kernels are ``(..., in, out)``, so the
      default is the last axis; PyTorch's ``(out, in, ...)`` needs ``filter_axis=0``.
    - ``"layer"``: every leaf ``d_l ← d_l / ‖d_l‖ · ‖θ_l‖``.
    - ``"model"``: ``d ← d / ‖d‖ · ‖θ‖``.
    - ``None``: the raw Gaussian.

    1-D and scalar leaves (biases, norm scales) are zeroed with ``ignore_1d=True`` (Li et al.'s
    ``ignore='biasbn'``); with ``ignore_1d=False`` they are set equal to the weights under
    ``"filter"`` (as Li et al.'s code does) and normalized like any leaf otherwise. A filter of
    all-zero weights gets a zero direction.

    Returns:
      a pytree like ``params``.
    """
    fn = "random_direction"
    check_key(fn, key)
    check_params(fn, params)
    check_choice(fn, "normalization", normalization, NORMALIZATIONS)
    leaves, treedef = jax.tree.flatten(params)
    leaves = [jnp.asarray(w) for w in leaves]
    keys = jax.random.split(key, len(leaves))
    out = []
    for k, w in zip(keys, leaves, strict=True):
        x = jax.random.normal(k, w.shape, w.dtype)
        if w.ndim <= 1 and ignore_1d:
            x = jnp.zeros_like(w)
        elif normalization == "filter":
            x = w if w.ndim <= 1 else _per_filter(x, w, filter_axis)
        elif normalization == "layer":
            x = x * _safe_ratio(jnp.linalg.norm(w), jnp.linalg.norm(x))
        out.append(x)
    if normalization == "model":  # over the leaves that are not zeroed
        kept = [(w, x) for w, x in zip(leaves, out, strict=True) if w.ndim > 1 or not ignore_1d]
        scale = _safe_ratio(_norm([w for w, _ in kept]), _norm([x for _, x in kept]))
        out = [x * scale for x in out]
    return jax.tree.unflatten(treedef, out)


def _norm(leaves) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in leaves))


def _safe_ratio(num, den):
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1), 0)


def _per_filter(d: jax.Array, w: jax.Array, axis: int) -> jax.Array:
    axis = axis % w.ndim
    others = tuple(i for i in range(w.ndim) if i != axis)
    wn = jnp.sqrt(jnp.sum(jnp.square(w), axis=others, keepdims=True))
    dn = jnp.sqrt(jnp.sum(jnp.square(d), axis=others, keepdims=True))
    return d * _safe_ratio(wn, dn)


# --------------------------------------------------------------------------- planes


class Plane(NamedTuple):
    """A plane ``center + x·d1 + y·d2`` and the coordinates of the points that define it."""

    center: PyTree
    d1: PyTree
    d2: PyTree
    points: jax.Array


def _flat(tree) -> jax.Array:
    return ravel_pytree(tree)[0]


def _orthonormal_plane(u, v) -> tuple[jax.Array, jax.Array]:
    """Gram-Schmidt of flat ``u``, ``v``: unit ``e1 ∥ u`` and unit ``e2 ⟂ e1``."""
    e1 = u / jnp.linalg.norm(u)
    r = v - jnp.dot(v, e1) * e1
    rn = jnp.linalg.norm(r)
    if bool(rn <= 1e-12 * jnp.linalg.norm(v)):
        raise ValueError("the points are collinear: they do not span a plane.")
    return e1, r / rn


def plane_through(params_a: PyTree, params_b: PyTree, params_c: PyTree) -> Plane:
    """The plane through three solutions (Garipov et al. 2018, Fig. 1).

    Orthonormal basis by Gram-Schmidt: ``d1 = (b - a)/‖b - a‖``, ``d2`` the unit part of
    ``c - a`` orthogonal to ``d1``; center ``a``. ``points`` holds the ``(x, y)`` coordinates
    of a, b, c: ``(0, 0)``, ``(‖b - a‖, 0)``, ``(⟨c - a, d1⟩, ⟨c - a, d2⟩)``, so that
    ``surface(..., xs, ys)`` over a box containing them shows all three.
    """
    fn = "plane_through"
    check_params(fn, params_a, "params_a")
    check_like(fn, params_b, params_a, "params_b")
    check_like(fn, params_c, params_a, "params_c")
    a, unravel = ravel_pytree(params_a)
    u, v = _flat(params_b) - a, _flat(params_c) - a
    if not bool(jnp.linalg.norm(u) > 0):
        raise ValueError(f"{fn}: `params_a` and `params_b` are the same point.")
    try:
        e1, e2 = _orthonormal_plane(u, v)
    except ValueError as err:
        raise ValueError(f"{fn}: {err}") from err
    points = jnp.asarray(
        [[0.0, 0.0], [jnp.linalg.norm(u), 0.0], [jnp.dot(v, e1), jnp.dot(v, e2)]], a.dtype
    )
    return Plane(params_a, unravel(e1), unravel(e2), points)


def _trajectory_matrix(
    fn: str, trajectory: PyTree, name: str = "trajectory", axis: str = "time"
) -> tuple[jax.Array, Callable]:
    """``(T, n)`` raveled rows of params stacked on a leading axis, and ``unravel``."""
    leaves = jax.tree.leaves(trajectory)
    if not leaves or any(jnp.ndim(x) < 1 for x in leaves):
        raise ValueError(f"{fn}: `{name}` must be params with a leading {axis} axis.")
    steps = {jnp.shape(x)[0] for x in leaves}
    if len(steps) != 1:
        raise ValueError(f"{fn}: `{name}` leaves have different lengths {sorted(steps)}.")
    first = jax.tree.map(lambda x: x[0], trajectory)
    unravel = ravel_pytree(first)[1]
    mat = jax.vmap(lambda p: ravel_pytree(p)[0])(trajectory)
    return mat, unravel


def pca_directions(
    trajectory: PyTree, center: PyTree | None = None, *, num_components: int = 2
) -> tuple[list[PyTree], jax.Array]:
    """Principal directions of a trajectory around ``center`` (Li et al. 2018, Sec. 7).

    PCA of the rows ``θ_t - center`` (default center: the last point, as Li et al.), computed
    from the ``T × T`` Gram matrix so memory stays ``O(T·n)``. The directions are unit vectors
    (orthonormal), ordered by explained variance.

    Returns:
      ``(directions, explained)``: a list of ``num_components`` params-shaped unit directions,
      and the fraction of the total squared deviation each explains (Li et al. report these).
    """
    fn = "pca_directions"
    mat, unravel = _trajectory_matrix(fn, trajectory)
    c = mat[-1] if center is None else _flat(center)
    if c.shape != mat.shape[1:]:
        raise ValueError(f"{fn}: `center` has {c.size} params, the trajectory {mat.shape[1]}.")
    m = mat - c
    if not 1 <= num_components <= min(m.shape):
        raise ValueError(
            f"{fn}: `num_components` must be in [1, {min(m.shape)}], got {num_components}."
        )
    evals, evecs = jnp.linalg.eigh(m @ m.T)
    order = jnp.argsort(evals)[::-1][:num_components]
    total = jnp.sum(jnp.clip(evals, 0))
    dirs = []
    for i in order:
        d = m.T @ evecs[:, i]
        dirs.append(unravel(d / jnp.linalg.norm(d)))
    return dirs, jnp.clip(evals[order], 0) / total


def project(trajectory: PyTree, center: PyTree, d1: PyTree, d2: PyTree) -> jax.Array:
    """Coordinates ``(x_t, y_t)`` of each point of a trajectory in the plane ``(center, d1, d2)``.

    Least squares ``argmin ‖θ_t - center - x·d1 - y·d2‖``; exact for points in the plane, and
    for orthonormal ``d1, d2`` (``pca_directions``, ``plane_through``) the orthogonal
    projection. Returns ``(T, 2)``.
    """
    fn = "project"
    mat, _ = _trajectory_matrix(fn, trajectory)
    basis = jnp.stack([_flat(d1), _flat(d2)], axis=1)
    coords, *_ = jnp.linalg.lstsq(basis, (mat - _flat(center)).T)
    return coords.T


def goodfellow_plane(trajectory: PyTree) -> Plane:
    """The plane of Goodfellow, Vinyals & Saxe (2015): the line from the first to the last point
    of the trajectory, and the main direction in which the trajectory leaves that line.

    ``d1 = (θ_T - θ_0)/‖θ_T - θ_0‖``; ``d2`` is the first principal direction of the points'
    components orthogonal to ``d1`` (measured from ``θ_0``). Center ``θ_0``; ``points`` holds
    the projected trajectory ``(T, 2)``.
    """
    fn = "goodfellow_plane"
    mat, unravel = _trajectory_matrix(fn, trajectory)
    m = mat - mat[0]
    u = m[-1]
    if not bool(jnp.linalg.norm(u) > 0):
        raise ValueError(f"{fn}: the trajectory ends where it starts.")
    e1 = u / jnp.linalg.norm(u)
    r = m - jnp.outer(m @ e1, e1)
    _, evecs = jnp.linalg.eigh(r @ r.T)
    d = r.T @ evecs[:, -1]
    if not bool(jnp.linalg.norm(d) > 1e-12 * jnp.linalg.norm(u)):
        raise ValueError(f"{fn}: the trajectory is a straight line: no second direction.")
    e2 = d / jnp.linalg.norm(d)
    coords = jnp.stack([m @ e1, m @ e2], axis=1)
    return Plane(unravel(mat[0]), unravel(e1), unravel(e2), coords)


def random_walk(key: jax.Array, trajectory: PyTree) -> PyTree:
    """A random path with the trajectory's step lengths (Goodfellow et al. 2015's control).

    Starts at ``θ_0``; step ``t`` moves ``‖θ_{t+1} - θ_t‖`` along an isotropic random unit
    direction. Projected onto the same plane, it shows what an unstructured path of the same
    length looks like. Returns params with the trajectory's leading time axis.
    """
    fn = "random_walk"
    check_key(fn, key)
    mat, unravel = _trajectory_matrix(fn, trajectory)
    lengths = jnp.linalg.norm(jnp.diff(mat, axis=0), axis=1)
    steps = jax.random.normal(key, (len(lengths), mat.shape[1]), mat.dtype)
    steps = steps * (lengths / jnp.linalg.norm(steps, axis=1))[:, None]
    path = jnp.concatenate([mat[:1], mat[0] + jnp.cumsum(steps, axis=0)])
    return jax.vmap(unravel)(path)


# --------------------------------------------------------------------------- sharpness, basins


class Sharpness(NamedTuple):
    """``sharpness`` result.

    Attributes:
      value: ``100 · (max_loss - loss) / (1 + loss)`` (Keskar et al.'s φ).
      max_loss: the largest loss found in the box.
      loss: the loss at ``params``.
      perturbation: the maximizing ``y`` (params-shaped; in the full space also with a
        subspace).
      num_steps: ascent steps taken (one gradient each).
    """

    value: jax.Array
    max_loss: jax.Array
    loss: jax.Array
    perturbation: PyTree
    num_steps: int


def sharpness(
    key: jax.Array,
    loss_fn: Callable[[PyTree, Any], jax.Array],
    params: PyTree,
    batch: Any,
    *,
    epsilon: float = 1e-3,
    num_steps: int = 20,
    step_size: float = 0.25,
    subspace_dim: int | None = None,
) -> Sharpness:
    """Keskar et al. (2017) ε-sharpness: ``φ = 100 · (max_{y ∈ C} f(x + A y) - f(x)) / (1 + f(x))``.

    The box is ``C = {y : |y_i| ≤ ε (|(A⁺x)_i| + 1)}``; ``A = I`` by default, or with
    ``subspace_dim = p`` a random Gaussian ``n × p`` matrix (their random-subspace variant,
    ``A⁺`` its pseudo-inverse). The maximum is sought by projected sign-gradient ascent,
    ``y ← clip(y + step_size · b ⊙ sign(∇_y f), -b, b)`` with ``b`` the box half-widths, for
    ``num_steps`` gradients, **started from a uniform random point of the box**: at an exact
    minimizer the gradient at ``y = 0`` is zero and an ascent started there reports 0. The
    largest loss seen along the way is returned. (Keskar et al. used L-BFGS-B; their code was
    not released.) A lower bound on the true maximum, like any local search.

    Args:
      key: PRNG key for the start (and the subspace).
      loss_fn, params, batch: the loss and the point ``x``.
      epsilon: box size ``ε`` (Keskar et al. report 1e-3 and 5e-4).
      num_steps: gradient evaluations.
      step_size: fraction of the box width per step.
      subspace_dim: ``p`` for the random-subspace variant; ``None`` is the full space.

    Returns:
      ``Sharpness(value, max_loss, loss, perturbation, num_steps)``.
    """
    fn = "sharpness"
    check_key(fn, key)
    check_params(fn, params)
    x, unravel = ravel_pytree(params)
    k_start, k_sub = jax.random.split(key)
    if subspace_dim is None:
        a = None
        center = x
    else:
        p = check_positive_int(fn, "subspace_dim", subspace_dim)
        a = jax.random.normal(k_sub, (x.size, p), x.dtype) / jnp.sqrt(x.size)
        center = jnp.linalg.lstsq(a, x)[0]  # A⁺x
    bound = epsilon * (jnp.abs(center) + 1)

    def loss_at(y):
        return loss_fn(unravel(x + (y if a is None else a @ y)), batch)

    def step(carry, _):
        y, best_y, best = carry
        value, grad = jax.value_and_grad(loss_at)(y)
        better = value > best
        best_y, best = jnp.where(better, y, best_y), jnp.where(better, value, best)
        y = jnp.clip(y + step_size * bound * jnp.sign(grad), -bound, bound)
        return (y, best_y, best), None

    y0 = jax.random.uniform(k_start, bound.shape, bound.dtype, -1, 1) * bound
    start = (y0, y0, jnp.asarray(-jnp.inf, jnp.result_type(loss_at(y0))))
    y, best_y, best = jax.lax.scan(step, start, None, length=num_steps)[0]
    last = loss_at(y)
    best_y, best = jnp.where(last > best, y, best_y), jnp.maximum(last, best)
    f0 = loss_fn(params, batch)
    shift = best_y if a is None else a @ best_y
    return Sharpness(100 * (best - f0) / (1 + f0), best, f0, unravel(shift), num_steps)


class BasinWidth(NamedTuple):
    """``basin_width`` result.

    Attributes:
      widths: ``(num_directions,)`` distance along each direction at which the loss first
        exceeds ``loss + threshold``; ``inf`` where it does not within ``max_distance``.
      mean, std: over the directions that reached the threshold.
      reached: ``(num_directions,)`` whether each did.
      loss: the loss at ``params``.
    """

    widths: jax.Array
    mean: jax.Array
    std: jax.Array
    reached: jax.Array
    loss: jax.Array


def basin_width(
    key: jax.Array,
    loss_fn: Callable[[PyTree, Any], jax.Array],
    params: PyTree,
    batch: Any,
    *,
    threshold: float,
    num_directions: int = 10,
    max_distance: float = 1.0,
    num_points: int = 33,
    num_bisections: int = 30,
    normalization: str | None = None,
    chunk_size: int | None = None,
) -> BasinWidth:
    """Distance to the basin's rim along random directions (the width measure of Im, Tao &
    Branson 2016: "Adam finds larger basins").

    Along each direction ``d`` the loss ``L(θ + r d)`` is scanned on ``num_points`` distances in
    ``[0, max_distance]``; the first ``r`` where ``L ≥ L(θ) + threshold`` is bracketed and then
    refined by ``num_bisections`` bisections. Directions are Gaussian rescaled to unit norm
    (``normalization=None``, distances in parameter units), or ``random_direction``'s
    ``"filter"``/``"layer"``/``"model"`` normalization (distances in units of the direction).
    For ``L = ½λ‖θ‖²`` at its minimum and unit directions the width is ``√(2·threshold/λ)``.

    Returns:
      ``BasinWidth(widths, mean, std, reached, loss)``.
    """
    fn = "basin_width"
    check_key(fn, key)
    check_params(fn, params)
    check_positive_int(fn, "num_directions", num_directions)
    if normalization is None:
        dirs = [
            random_direction(k, params, normalization=None, ignore_1d=False)
            for k in jax.random.split(key, num_directions)
        ]
        norms = [_norm(jax.tree.leaves(d)) for d in dirs]
        dirs = [jax.tree.map(lambda v, n=n: v / n, d) for d, n in zip(dirs, norms, strict=True)]
    else:
        dirs = [
            random_direction(k, params, normalization=normalization)
            for k in jax.random.split(key, num_directions)
        ]
    stacked = jax.tree.map(lambda *ds: jnp.stack(ds), *dirs)
    f0 = loss_fn(params, batch)
    level = f0 + threshold
    radii = jnp.linspace(0.0, max_distance, num_points, dtype=jnp.result_type(f0))

    def along(d):
        def loss_at(r):
            return loss_fn(_combine(params, (r,), (d,)), batch)

        above = jax.vmap(loss_at)(radii) >= level
        first = jnp.argmax(above)
        hit = jnp.any(above)
        lo, hi = radii[jnp.maximum(first - 1, 0)], radii[first]

        def bisect(_, bracket):
            lo, hi = bracket
            mid = 0.5 * (lo + hi)
            up = loss_at(mid) >= level
            return jnp.where(up, lo, mid), jnp.where(up, mid, hi)

        lo, hi = jax.lax.fori_loop(0, num_bisections, bisect, (lo, hi))
        return jnp.where(hit, 0.5 * (lo + hi), jnp.inf), hit

    widths, reached = jax.lax.map(along, stacked, batch_size=chunk_size)
    finite = jnp.where(reached, widths, 0.0)
    count = jnp.maximum(jnp.sum(reached), 1).astype(widths.dtype)
    mean = jnp.sum(finite) / count
    std = jnp.sqrt(jnp.sum(jnp.where(reached, (widths - mean) ** 2, 0.0)) / count)
    nan = jnp.asarray(jnp.nan, mean.dtype)
    any_hit = jnp.any(reached)
    return BasinWidth(
        widths, jnp.where(any_hit, mean, nan), jnp.where(any_hit, std, nan), reached, f0
    )


def disagreement(
    apply_fn: Callable[[PyTree, jax.Array], jax.Array], params_a: PyTree, params_b: PyTree, x: Any
) -> jax.Array:
    """Fraction of inputs on which two solutions predict different classes (argmax of
    ``apply_fn(params, x)``): how differently two solutions — e.g. those Adam and SGD reach
    from one initialization — behave on the same data, beyond their loss and accuracy."""
    pa, pb = jnp.argmax(apply_fn(params_a, x), -1), jnp.argmax(apply_fn(params_b, x), -1)
    return jnp.mean((pa != pb).astype(jnp.result_type(float)))
