"""Mode connectivity and permutation symmetry: curves between minima, and hidden-unit alignment.

Two solutions ``a`` and ``b`` of the same network are often separated by a loss barrier on the
straight line between them, yet joined by a simple low-loss curve (Garipov et al. 2018; Draxler
et al. 2018). ``fit_curve`` trains the bend ``θ`` of a quadratic Bézier curve or a polygonal
chain by sampling ``t ~ U(0, 1)`` and descending ``L(φ_θ(t))`` — for any ``loss_fn``: the curve
point is an ordinary params pytree, so the model is never rewritten in curve-aware layers.

Much of the straight-line barrier comes from the permutation symmetry of hidden units:
reordering the units of a layer (and the matching rows of the next layer) leaves the function
unchanged. ``align`` finds the permutation of ``b`` closest to ``a`` by weight matching (Ainsworth,
Hayase & Srinivasa 2023) so that solutions can be compared modulo that symmetry. Only params
are permuted: BatchNorm running statistics (the ``state`` of ``norm="batch"`` models) are not,
so recompute them after permuting (``models.recompute_batch_stats``); residual networks, whose
skips tie the permutations of layers together, are not supported.

    >>> curve = fit_curve(key, loss_fn, a, b, data, optax.adam(1e-2), num_steps=500)
    >>> ts = jnp.linspace(0, 1, 21)
    >>> on_curve = barrier(curve_losses(loss_fn, curve, data, ts))
    >>> on_line = barrier(line_losses(loss_fn, a, b, data, ts))
    >>> b_aligned, perms = align(a, b)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxscape._checks import (
    check_choice,
    check_key,
    check_like,
    check_optimizer,
    check_params,
    check_positive_int,
    check_scalar_loss,
    is_concrete,
)
from jaxscape._util import chunked_map
from jaxscape.data import minibatch
from jaxscape.landscape import interpolate

PyTree = Any
LossFn = Callable[[PyTree, Any], jax.Array]
# A permutation spec: leaf path (tuple of dict keys) -> per axis, the index of the permutation
# acting on that axis, or None (Ainsworth et al. 2023's ``axes_to_perm``).
PermutationSpec = dict[tuple[str, ...], tuple[int | None, ...]]

# --------------------------------------------------------------------------- curves


def bezier(params_a: PyTree, bend: PyTree, params_b: PyTree, t: Any) -> PyTree:
    """Quadratic Bézier curve ``φ_θ(t) = (1−t)² a + 2t(1−t) θ + t² b`` (Garipov et al. 2018).

    ``φ(0) = a``, ``φ(1) = b``; with ``θ = (a + b)/2`` it is exactly the straight line
    ``(1−t) a + t b``. ``t`` is a scalar (``vmap`` over it for many points); it is cast to each
    leaf's dtype.
    """
    return jax.tree.map(lambda a, m, b: _bezier_leaf(a, m, b, t), params_a, bend, params_b)


def _bezier_leaf(a, m, b, t):
    t = jnp.asarray(t, a.dtype)
    s = 1 - t
    return s * s * a + 2 * t * s * m + t * t * b


def polychain(params_a: PyTree, bend: PyTree, params_b: PyTree, t: Any) -> PyTree:
    """Polygonal chain ``a → θ → b`` (Garipov et al. 2018).

    ``φ_θ(t) = a + 2t (θ − a)`` for ``t ≤ ½`` and ``θ + (2t − 1)(b − θ)`` for ``t > ½``;
    ``φ(½) = θ``. ``t`` is a scalar, cast to each leaf's dtype.
    """
    return jax.tree.map(lambda a, m, b: _chain_leaf(a, m, b, t), params_a, bend, params_b)


def _chain_leaf(a, m, b, t):
    t = jnp.asarray(t, a.dtype)
    return jnp.where(t <= 0.5, a + 2 * t * (m - a), m + (2 * t - 1) * (b - m))


CURVES: dict[str, Callable[[PyTree, PyTree, PyTree, Any], PyTree]] = {
    "bezier": bezier,
    "polychain": polychain,
}


class Curve(NamedTuple):
    """A fitted curve: ``CURVES[kind](params_a, bend, params_b, t)``.

    Attributes:
      kind: ``"bezier"`` or ``"polychain"`` (a string: pass it as static under ``jit``).
      params_a, bend, params_b: the endpoints (fixed) and the trained bend ``θ``.
      losses: ``(num_steps,)`` training history, the minibatch loss averaged over the sampled
        ``t`` at each step (before that step's update).
    """

    kind: str
    params_a: PyTree
    bend: PyTree
    params_b: PyTree
    losses: jax.Array


def fit_curve(
    key: jax.Array,
    loss_fn: LossFn,
    params_a: PyTree,
    params_b: PyTree,
    data: PyTree,
    optimizer: optax.GradientTransformation,
    *,
    num_steps: int,
    curve: str = "bezier",
    batch_size: int | None = None,
    bend_init: PyTree = None,
    num_t_samples: int = 1,
) -> Curve:
    """Train a low-loss curve between two solutions (Garipov et al. 2018, "Loss Surfaces, Mode
    Connectivity, and Fast Ensembling of DNNs").

    Minimizes ``E_{t~U(0,1)} L(φ_θ(t))`` over the bend ``θ`` with the endpoints fixed, by
    stochastic gradients: step ``s`` draws ``num_t_samples`` values of ``t`` and the minibatch
    ``B_s`` and updates ``θ`` with ``∇_θ mean_t L_{B_s}(φ_θ(t))``. All steps run in one
    compiled ``lax.scan``; the same key gives the same curve.

    Args:
      key: PRNG key for the ``t`` samples and the minibatch order.
      loss_fn: ``loss_fn(params, batch) -> scalar``, any params pytree (no curve-aware layers).
      params_a, params_b: the endpoints, pytrees of float arrays of the same structure.
      data: a pytree of arrays with a leading example axis, or ``None`` (``loss_fn(p, None)``).
      optimizer: an ``optax.GradientTransformation`` for ``θ``.
      num_steps: optimizer steps.
      curve: ``"bezier"`` or ``"polychain"`` (see ``CURVES``).
      batch_size: minibatch size (``jaxscape.data.minibatch``); ``None`` is full batch.
      bend_init: initial ``θ``; default the midpoint ``(a + b)/2`` (the straight line).
      num_t_samples: values of ``t`` averaged per step.

    Returns:
      ``Curve(kind, params_a, bend, params_b, losses)``.
    """
    fn = "fit_curve"
    check_key(fn, key)
    check_params(fn, params_a, "params_a")
    check_like(fn, params_b, params_a, "params_b")
    path = CURVES[check_choice(fn, "curve", curve, tuple(CURVES))]
    num_steps = check_positive_int(fn, "num_steps", num_steps)
    num_t = check_positive_int(fn, "num_t_samples", num_t_samples)
    check_optimizer(fn, optimizer)
    if batch_size is not None:
        check_positive_int(fn, "batch_size", batch_size)
        if data is None:
            raise ValueError(f"{fn}: `batch_size` was given ({batch_size}) but `data` is None.")
    bend0 = _midpoint(params_a, params_b) if bend_init is None else bend_init
    check_like(fn, bend0, params_a, "bend_init")
    check_scalar_loss(fn, loss_fn, params_a, data if batch_size is None else _first(data))
    key_t, key_data = jax.random.split(key)

    def batch_at(data, step):
        if data is None or batch_size is None:
            return data
        return minibatch(key_data, data, step, batch_size=batch_size)

    def objective(bend, a, b, batch, ts):
        losses = jax.vmap(lambda t: loss_fn(path(a, bend, b, t), batch))(ts)
        return jnp.mean(losses)

    @jax.jit
    def run(a, b, bend, data):
        dtype = jnp.result_type(jax.tree.leaves(a)[0])

        def step(carry, s):
            bend, opt_state = carry
            ts = jax.random.uniform(jax.random.fold_in(key_t, s), (num_t,), dtype)
            loss, grad = jax.value_and_grad(objective)(bend, a, b, batch_at(data, s), ts)
            updates, opt_state = optimizer.update(grad, opt_state, bend)
            return (optax.apply_updates(bend, updates), opt_state), loss

        carry = (bend, optimizer.init(bend))
        (bend, _), losses = jax.lax.scan(step, carry, jnp.arange(num_steps))
        return bend, losses

    bend, losses = run(params_a, params_b, bend0, data)
    return Curve(curve, params_a, bend, params_b, losses)


def _midpoint(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(lambda x, y: (x + y) / 2, a, b)


def _first(data: PyTree) -> PyTree:
    return jax.tree.map(lambda x: x[:1], data)


def _check_ts(fn: str, ts: Any) -> jax.Array:
    ts = jnp.asarray(ts)
    if ts.ndim != 1:
        raise ValueError(f"{fn}: `ts` must be a 1-D array of positions, got shape {ts.shape}.")
    return ts


def _map_ts(fn: str, f: Callable[[jax.Array], jax.Array], ts: Any, chunk_size, mesh):
    return chunked_map(f, _check_ts(fn, ts), chunk_size, fn, mesh=mesh)


def curve_losses(
    loss_fn: LossFn,
    curve: Curve,
    batch: Any,
    ts: Any,
    *,
    chunk_size: int | None = None,
    mesh: Any = None,
) -> jax.Array:
    """Loss along a curve: ``[L(φ_θ(t)) for t in ts]`` on ``batch``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      curve: a ``Curve`` (from ``fit_curve``, or built by hand).
      batch: any pytree passed to ``loss_fn``.
      ts: 1-D array of positions in ``[0, 1]``.
      chunk_size: evaluate ``chunk_size`` positions at a time (``jax.lax.map``) to bound
        memory; ``None`` vmaps over all of them.
      mesh: a ``jax.sharding.Mesh`` to spread the positions over its devices
        (``distributed.data_mesh()``); ``chunk_size`` then counts positions per device.

    Returns:
      ``(len(ts),)`` losses.
    """
    path = CURVES[check_choice("curve_losses", "curve.kind", curve.kind, tuple(CURVES))]
    check_like("curve_losses", curve.bend, curve.params_a, "curve.bend")
    check_like("curve_losses", curve.params_b, curve.params_a, "curve.params_b")
    a, m, b = curve.params_a, curve.bend, curve.params_b
    return _map_ts("curve_losses", lambda t: loss_fn(path(a, m, b, t), batch), ts, chunk_size, mesh)


def line_losses(
    loss_fn: LossFn,
    params_a: PyTree,
    params_b: PyTree,
    batch: Any,
    ts: Any,
    *,
    chunk_size: int | None = None,
    mesh: Any = None,
) -> jax.Array:
    """Loss along the straight line ``(1−t) a + t b`` for ``t`` in ``ts``.

    The line is the Bézier curve (and the polygonal chain) with the midpoint bend
    ``θ = (a + b)/2``, i.e. the curve ``fit_curve`` starts from. Arguments and return value as
    in ``curve_losses``.
    """
    ts = _check_ts("line_losses", ts)
    return interpolate(
        loss_fn, params_a, params_b, batch, ts, chunk_size=chunk_size, mesh=mesh
    ).loss


def barrier(losses: Any, ts: Any = None) -> jax.Array:
    """Loss barrier of a path: ``max_t [L(t) − ((1−t) L(0) + t L(1))]``.

    The height of the path's loss above the linear interpolation of its endpoint losses
    (Entezari et al. 2022, "The Role of Permutation Invariance in Linear Mode Connectivity";
    Frankle et al. 2020 subtract the mean of the endpoint losses instead). It is ``≥ 0`` since
    the difference vanishes at the endpoints; ``0`` means the path is no worse than linear.

    Args:
      losses: ``(T,)`` losses along the path, ``losses[0] = L(a)``, ``losses[-1] = L(b)``.
      ts: ``(T,)`` positions, increasing from 0 to 1; default ``linspace(0, 1, T)``.

    Returns:
      the barrier, a scalar.
    """
    losses = jnp.asarray(losses)
    if losses.ndim != 1 or losses.shape[0] < 2:
        raise ValueError(f"barrier: `losses` must be 1-D with >= 2 entries, got {losses.shape}.")
    n = losses.shape[0]
    ts = jnp.linspace(0, 1, n, dtype=losses.dtype) if ts is None else jnp.asarray(ts, losses.dtype)
    if ts.shape != losses.shape:
        raise ValueError(f"barrier: `ts` has shape {ts.shape}, `losses` {losses.shape}.")
    if is_concrete(ts) and not (float(ts[0]) == 0.0 and float(ts[-1]) == 1.0):
        raise ValueError(
            f"barrier: `ts` must start at 0 and end at 1 (the endpoints), got "
            f"{float(ts[0])} … {float(ts[-1])}."
        )
    return jnp.max(losses - ((1 - ts) * losses[0] + ts * losses[-1]))


# --------------------------------------------------------------------------- permutations


def _indexed(params: Mapping, prefix: str) -> list[str]:
    names = [k for k in params if re.fullmatch(rf"{prefix}_\d+", str(k))]
    return sorted(names, key=lambda k: int(str(k).rsplit("_", 1)[1]))


def _norm_entries(params: Mapping, name: str, perm: int | None) -> PermutationSpec:
    return {(name, str(k)): (perm,) for k in params.get(name, {})}


def mlp_permutation_spec(params: PyTree) -> PermutationSpec:
    """Permutation spec of ``jaxscape.models.MLP`` params: hidden layer ``i`` (permutation ``i``)
    acts on ``Dense_i`` kernel columns and bias, ``Norm_i`` leaves, and ``Dense_{i+1}`` kernel rows.

    A *residual* MLP ties the units of consecutive equal-width layers through the skip
    connections; its layers cannot be permuted independently, and params alone do not show the
    skips: do not use this spec for ``MLP(residual=True)``.
    """
    if not isinstance(params, Mapping) or not _indexed(params, "Dense"):
        raise ValueError(
            "mlp_permutation_spec: expected jaxscape.models.MLP params, a dict with keys "
            f"'Dense_0', 'Dense_1', …; got {_describe(params)}."
        )
    dense = _indexed(params, "Dense")
    spec: PermutationSpec = {}
    for i, name in enumerate(dense):
        p_in = i - 1 if i > 0 else None
        p_out = i if i < len(dense) - 1 else None
        spec[(name, "kernel")] = (p_in, p_out)
        spec[(name, "bias")] = (p_out,)
        spec.update(_norm_entries(params, f"Norm_{i}", p_out))
    return spec


def cnn_permutation_spec(params: PyTree) -> PermutationSpec:
    """Permutation spec of ``jaxscape.models.CNN`` params (``residual=False``): the output channels
    of block ``b`` (permutation ``b``) index ``Conv_b`` kernel axis 3 and bias, ``Norm_b`` leaves,
    and the input channels of the next block (``Conv_{b+1}`` kernel axis 2) or, after the last
    block, the ``Head`` kernel rows (global pooling keeps the channel order).
    """
    convs = _indexed(params, "Conv") if isinstance(params, Mapping) else []
    if not convs or "Head" not in params:
        raise ValueError(
            "cnn_permutation_spec: expected jaxscape.models.CNN params with keys 'Conv_0', …, "
            f"'Head'; got {_describe(params)}."
        )
    extra = [str(k) for k in params if re.fullmatch(r"(Conv_\d+b|Skip_\d+)", str(k))]
    if extra:
        raise ValueError(
            "cnn_permutation_spec: residual CNN blocks (keys "
            f"{extra}) tie channels through the skip connections; only residual=False is supported."
        )
    spec: PermutationSpec = {}
    for b, name in enumerate(convs):
        spec[(name, "kernel")] = (None, None, b - 1 if b else None, b)
        spec[(name, "bias")] = (b,)
        spec.update(_norm_entries(params, f"Norm_{b}", b))
    spec[("Head", "kernel")] = (len(convs) - 1, None)
    spec[("Head", "bias")] = (None,)
    return spec


def _describe(params: Any) -> str:
    if isinstance(params, Mapping):
        return f"keys {sorted(map(str, params))}"
    return type(params).__name__


def _spec_for(fn: str, spec: Any, params: PyTree) -> PermutationSpec:
    if spec is None:
        is_cnn = isinstance(params, Mapping) and "Head" in params and _indexed(params, "Conv")
        spec = "cnn" if is_cnn else "mlp"
    if isinstance(spec, str):
        check_choice(fn, "spec", spec, ("mlp", "cnn"))
        return mlp_permutation_spec(params) if spec == "mlp" else cnn_permutation_spec(params)
    if not isinstance(spec, Mapping):
        raise TypeError(f"{fn}: `spec` must be 'mlp', 'cnn', None or a dict, got {spec!r}.")
    return dict(spec)


def _leaf_path(path: tuple) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _perm_sizes(fn: str, params: PyTree, spec: PermutationSpec) -> list[int]:
    """Size of each permutation, checked consistent across the leaves it acts on."""
    shapes = {_leaf_path(p): jnp.shape(x) for p, x in jax.tree_util.tree_leaves_with_path(params)}
    sizes: dict[int, int] = {}
    for path, axes in spec.items():
        if path not in shapes:
            raise ValueError(f"{fn}: the spec names leaf {'/'.join(path)}, absent from params.")
        if len(axes) != len(shapes[path]):
            raise ValueError(
                f"{fn}: spec for {'/'.join(path)} has {len(axes)} axes, the leaf has shape "
                f"{shapes[path]}."
            )
        for axis, k in enumerate(axes):
            if k is not None and sizes.setdefault(k, shapes[path][axis]) != shapes[path][axis]:
                raise ValueError(
                    f"{fn}: permutation {k} acts on axes of different sizes "
                    f"({sizes[k]} and {shapes[path][axis]} at {'/'.join(path)})."
                )
    if sorted(sizes) != list(range(len(sizes))):
        raise ValueError(f"{fn}: spec permutations must be numbered 0…n−1, got {sorted(sizes)}.")
    return [sizes[k] for k in range(len(sizes))]


def permute(params: PyTree, perms: Sequence[Any], spec: Any = None) -> PyTree:
    """Reorder hidden units: ``perms[k][j]`` is the old index of new unit ``j`` of layer ``k``.

    Every leaf axis that the spec ties to permutation ``k`` is indexed by ``perms[k]``
    (``leaf.take(perms[k], axis)``); other leaves are unchanged. For a network without
    residual connections the function is unchanged. Jit-compatible (the checks on the
    permutation values run only eagerly).

    Args:
      params: the network's params.
      perms: one index array per permutation (per hidden layer / conv block).
      spec: ``"mlp"``, ``"cnn"``, a ``PermutationSpec`` dict, or ``None`` to pick MLP or CNN
        from the params' keys.

    Returns:
      the permuted params, same structure, shapes and dtypes.
    """
    fn = "permute"
    spec = _spec_for(fn, spec, params)
    sizes = _perm_sizes(fn, params, spec)
    if len(perms) != len(sizes):
        raise ValueError(
            f"{fn}: expected {len(sizes)} permutations (one per hidden layer), got {len(perms)}."
        )
    perms = [jnp.asarray(p) for p in perms]
    for k, (p, n) in enumerate(zip(perms, sizes, strict=True)):
        if p.shape != (n,) or not jnp.issubdtype(p.dtype, jnp.integer):
            raise ValueError(f"{fn}: perms[{k}] must be {n} integers, got {p.dtype}{p.shape}.")
        if is_concrete(p) and not np.array_equal(np.sort(np.asarray(p)), np.arange(n)):
            raise ValueError(f"{fn}: perms[{k}] is not a permutation of 0…{n - 1}.")

    def leaf(path, x):
        for axis, k in enumerate(spec.get(_leaf_path(path), ())):
            if k is not None:
                x = jnp.take(x, perms[k], axis=axis)
        return x

    return jax.tree_util.tree_map_with_path(leaf, params)


def permute_mlp(params: PyTree, perms: Sequence[Any]) -> PyTree:
    """``permute`` with the ``jaxscape.models.MLP`` spec (``mlp_permutation_spec``)."""
    return permute(params, perms, "mlp")


def permute_cnn(params: PyTree, perms: Sequence[Any]) -> PyTree:
    """``permute`` with the ``jaxscape.models.CNN`` spec (``cnn_permutation_spec``)."""
    return permute(params, perms, "cnn")


# --------------------------------------------------------------------------- weight matching


class Alignment(NamedTuple):
    """``align``'s result: ``params`` (``b`` permuted to match ``a``) and the ``perms`` used."""

    params: PyTree
    perms: list[np.ndarray]


def weight_matching(
    params_a: PyTree, params_b: PyTree, *, spec: Any = None, num_iters: int = 100
) -> list[np.ndarray]:
    """Permutations of ``b``'s hidden units that best match ``a`` (Ainsworth, Hayase &
    Srinivasa 2023, "Git Re-Basin", weight matching).

    Maximizes ``Σ_leaves ⟨W_a, π(W_b)⟩`` over the permutations ``π`` of every hidden layer,
    biases and norm parameters included, by coordinate descent: each step fixes all but
    permutation ``k`` and solves the linear assignment problem
    ``max_P ⟨C_k, P⟩, C_k[i, j] = Σ_{leaves, axes tied to k} ⟨a unit i, π_{−k}(b) unit j⟩``
    exactly (``scipy.optimize.linear_sum_assignment``). Layers are visited in order, sweeps
    repeat until one changes nothing or ``num_iters`` sweeps ran. Deterministic; runs on the
    host in NumPy float64 (not jit-able).

    Args:
      params_a, params_b: two solutions of the same network.
      spec: ``"mlp"``, ``"cnn"``, a ``PermutationSpec`` or ``None`` (picked from the keys).
      num_iters: maximum number of sweeps over the layers.

    Returns:
      ``perms``, one int array per hidden layer, such that ``permute(params_b, perms)`` is
      aligned with ``params_a``.
    """
    from scipy.optimize import linear_sum_assignment  # here: SciPy costs ~0.5 s at import

    fn = "weight_matching"
    check_params(fn, params_a, "params_a")
    check_like(fn, params_b, params_a, "params_b")
    num_iters = check_positive_int(fn, "num_iters", num_iters)
    spec = _spec_for(fn, spec, params_a)
    sizes = _perm_sizes(fn, params_a, spec)
    a = {_leaf_path(p): np.asarray(x, np.float64) for p, x in _leaves(params_a)}
    b = {_leaf_path(p): np.asarray(x, np.float64) for p, x in _leaves(params_b)}
    perms = [np.arange(n) for n in sizes]
    for _ in range(num_iters):
        changed = False
        for k, n in enumerate(sizes):
            cost = np.zeros((n, n))
            for path, axes in spec.items():
                for axis, kk in enumerate(axes):
                    if kk == k:
                        wb = _permute_np(b[path], axes, perms, skip=axis)
                        wa = np.moveaxis(a[path], axis, 0).reshape(n, -1)
                        cost += wa @ np.moveaxis(wb, axis, 0).reshape(n, -1).T
            _, new = linear_sum_assignment(cost, maximize=True)
            old = perms[k]
            if cost[np.arange(n), new].sum() > cost[np.arange(n), old].sum() + 1e-12 * max(
                1.0, abs(cost[np.arange(n), old].sum())
            ):
                perms[k], changed = new, True
        if not changed:
            break
    return perms


def _leaves(params: PyTree) -> list:
    return jax.tree_util.tree_leaves_with_path(params)


def _permute_np(x: np.ndarray, axes: tuple, perms: list, skip: int) -> np.ndarray:
    for axis, k in enumerate(axes):
        if k is not None and axis != skip:
            x = np.take(x, perms[k], axis=axis)
    return x


def align(
    params_a: PyTree, params_b: PyTree, *, spec: Any = None, num_iters: int = 100
) -> Alignment:
    """Permute ``b``'s hidden units to match ``a`` (weight matching, see ``weight_matching``).

    The aligned ``b`` computes the same function as ``b`` (no residual connections), but sits
    in ``a``'s copy of the permutation-symmetric landscape: compare
    ``barrier(line_losses(loss_fn, a, b, ...))`` with the aligned pair's (Entezari et al. 2022;
    Ainsworth et al. 2023).

    Returns:
      ``Alignment(params, perms)`` with ``params = permute(params_b, perms, spec)``.
    """
    perms = weight_matching(params_a, params_b, spec=spec, num_iters=num_iters)
    return Alignment(permute(params_b, perms, spec), perms)
