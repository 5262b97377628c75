"""Scale-out through JAX's own SPMD engine: sharded batches, points spread over devices, memory
checked before a program runs, and the few helpers a multi-host run needs.

jaxscape has no scheduler, MPI layer or file locking. There are two ways to use many devices,
and both return the numbers of a one-device run:

- **Data parallelism.** ``shard_batch`` lays a batch out over a ``jax.sharding.Mesh``, one
  slice of the examples per device. Nothing else changes. ``hessian_operator``,
  ``ggn_operator``, ``eigsh``, ``spectral_density``, ``interpolate`` and ``surface`` take the
  sharded batch as they take any batch. Under ``jit`` XLA's partitioner (GSPMD) runs the loss
  on each slice and all-reduces the mean, so the loss is still the mean over the *global*
  batch. A batch that does not divide evenly over the devices goes through ``split_batch``
  and ``ragged_loss``: the divisible part is sharded, the few examples left over are
  replicated, and the two means are recombined with weights ``n_main / n`` and ``n_rest / n``.
  This is exact for any loss that is a mean over examples.
- **Point parallelism.** ``map_points`` (and the ``mesh=`` argument of ``interpolate``,
  ``surface``, ``curve_losses``, ``line_losses``, ``estimate_trace``, ``spectral_density``
  and ``find_critical_points``) splits interpolation coefficients, grid points, SLQ probes,
  start points or training seeds over the devices: the points are cut into one block per
  device, and XLA's partitioner runs each block on its device (``with_sharding_constraint``
  on the block axis). Each device evaluates its share, ``chunk_size`` points at a time, and
  XLA moves what the points need (params, a batch, even one sharded over the same mesh).

Memory: ``eigsh(..., basis_sharding=mesh)`` splits the Lanczos basis over the devices, and
``basis_memory="host"`` keeps it in host memory. Dense Hessians and grid evaluations are
checked against free device memory before they run (``check_fits``).

Several hosts: start one process per host and call ``jax.distributed.initialize()`` before
anything else (see ``examples/multihost.py``). ``jax.devices()`` and so ``data_mesh()`` then
span all hosts. ``shard_batch`` takes each process's own slice of the data, so the global
batch is the concatenation over processes (every process must have the same number of local
devices). ``gather`` brings results to every host, and only
``is_main_process()`` writes files.

    >>> mesh = data_mesh()                                # every device, one "data" axis
    >>> batch = shard_batch(batch, mesh)                  # examples split over devices
    >>> top = jax.jit(lambda p, b: eigsh(key, hessian_operator(loss_fn, p, b), p).eigenvalues)
    >>> prof = interpolate(loss_fn, a, b, batch, alphas, mesh=mesh)  # α split over devices
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxscape._checks import check_positive_int, format_bytes
from jaxscape._util import check_mesh, sharded_map

PyTree = Any


# --------------------------------------------------------------------------- meshes, batches


def data_mesh(devices: Sequence[jax.Device] | None = None, *, axis_name: str = "data") -> Mesh:
    """A one-axis mesh over ``devices`` (default: every device of every process).

    Its axis type is ``Auto``, so XLA's partitioner places intermediate values itself. This is
    what makes the unchanged operators data-parallel.

    Args:
      devices: the devices, e.g. ``jax.devices()[:4]``; default ``jax.devices()``.
      axis_name: the mesh axis that batches are split along.

    Returns:
      ``jax.sharding.Mesh`` of shape ``{axis_name: len(devices)}``.
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("data_mesh: `devices` is empty.")
    return Mesh(np.asarray(devices), (axis_name,))


def _axes(mesh: Mesh, axis: str | tuple[str, ...] | None) -> tuple[str, ...]:
    axes = tuple(mesh.axis_names) if axis is None else ((axis,) if isinstance(axis, str) else axis)
    unknown = [a for a in axes if a not in mesh.axis_names]
    if unknown:
        raise ValueError(f"`axis` {unknown} is not an axis of the mesh {mesh.axis_names}.")
    return axes


def num_examples(batch: PyTree, *, stacked: bool = False) -> int:
    """Number of examples in ``batch``: the shared leading dimension of its leaves (the second
    one with ``stacked=True``: ``(num_batches, batch_size, ...)``)."""
    dim = 1 if stacked else 0
    leaves = jax.tree.leaves(batch)
    if not leaves or any(np.ndim(x) <= dim for x in leaves):
        raise ValueError(
            f"the batch must be a pytree of arrays with an example axis (axis {dim}); got "
            f"leaves of shapes {[np.shape(x) for x in leaves]}."
        )
    sizes = {int(np.shape(x)[dim]) for x in leaves}
    if len(sizes) != 1:
        raise ValueError(
            f"the leaves of the batch disagree on the number of examples (axis {dim}): "
            f"{[np.shape(x) for x in leaves]}."
        )
    return sizes.pop()


def shard_batch(
    batch: PyTree,
    mesh: Mesh,
    *,
    axis: str | tuple[str, ...] | None = None,
    stacked: bool = False,
) -> PyTree:
    """Place ``batch`` on ``mesh`` with its examples split over the devices.

    Every leaf gets ``NamedSharding(mesh, P(axis))`` on its example axis: axis 0, or axis 1
    with ``stacked=True`` for a stack ``(num_batches, batch_size, ...)`` such as
    ``data.stack_batches`` builds for ``averaged_operator`` or ``interpolate(stacked=True)``.
    In a multi-process run each process passes its own slice, and the result is the global
    array made of all of them (``jax.make_array_from_process_local_data``).

    Args:
      batch: a pytree of arrays sharing the example axis.
      mesh: the mesh, e.g. ``data_mesh()``.
      axis: mesh axis (or axes) to split over; default all of them.
      stacked: split axis 1 instead of axis 0.

    Returns:
      The batch as sharded ``jax.Array``s, the same values.

    Raises:
      ValueError: when the number of examples does not divide over the devices. Then use
        ``split_batch`` and ``ragged_loss``, or drop the remainder yourself.
    """
    fn = "shard_batch"
    mesh = check_mesh(fn, mesh)
    axes = _axes(mesh, axis)
    size = int(np.prod([mesh.shape[a] for a in axes]))
    n = num_examples(batch, stacked=stacked)
    local = size // jax.process_count() if jax.process_count() > 1 else size
    if n % local:
        raise ValueError(
            f"{fn}: {n} examples do not split evenly over {local} devices ({n % local} left "
            f"over). Use split_batch(batch, mesh) with ragged_loss(loss_fn), which handles the "
            f"remainder exactly, or pass {n - n % local} examples."
        )
    spec = PartitionSpec(None, axes) if stacked else PartitionSpec(axes)
    sharding = NamedSharding(mesh, spec)
    if jax.process_count() > 1:
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
        )
    return jax.device_put(batch, sharding)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Place a copy of ``tree`` (params, directions) on every device of ``mesh``."""
    return jax.device_put(tree, NamedSharding(check_mesh("replicate", mesh), PartitionSpec()))


class RaggedBatch(NamedTuple):
    """A batch split into a part that shards evenly and a remainder.

    Attributes:
      main: the first ``n - n % devices`` examples, sharded over the mesh.
      rest: the last ``n % devices`` examples, replicated; ``None`` when there are none.
    """

    main: PyTree
    rest: PyTree


def split_batch(batch: PyTree, mesh: Mesh, *, axis: str | tuple[str, ...] | None = None):
    """``RaggedBatch(main, rest)``: the largest evenly divisible part of ``batch`` sharded over
    ``mesh``, and the remaining ``n mod devices`` examples replicated.

    Use it with ``ragged_loss(loss_fn)``, whose value on the ``RaggedBatch`` equals
    ``loss_fn`` on the whole batch. Padding instead would change a mean loss, and dropping
    would change the data. Only single-process runs are supported; in a multi-host run give
    each process a slice that divides its device count.

    Args:
      batch: a pytree of arrays with a shared leading example axis, ``n >= devices``.
      mesh, axis: as for ``shard_batch``.

    Returns:
      ``RaggedBatch``.
    """
    fn = "split_batch"
    mesh = check_mesh(fn, mesh)
    if jax.process_count() > 1:
        raise ValueError(
            f"{fn}: ragged batches are supported in single-process runs only; in a "
            "multi-host run give every process a slice that divides its local device count."
        )
    size = int(np.prod([mesh.shape[a] for a in _axes(mesh, axis)]))
    n = num_examples(batch)
    if n < size:
        raise ValueError(
            f"{fn}: the batch has {n} examples, fewer than the {size} devices to split it over; "
            "use a smaller mesh (data_mesh(jax.devices()[:k])) or no mesh."
        )
    cut = n - n % size
    main = shard_batch(jax.tree.map(lambda x: x[:cut], batch), mesh, axis=axis)
    rest = replicate(jax.tree.map(lambda x: x[cut:], batch), mesh) if cut < n else None
    return RaggedBatch(main, rest)


class _RaggedLoss:
    """``loss_fn`` extended to ``RaggedBatch``; hashable by ``loss_fn`` so that compiled programs
    keyed on the loss (``interpolate``'s cache, static arguments) are reused."""

    def __init__(self, loss_fn: Callable):
        if not callable(loss_fn):
            raise TypeError(
                f"ragged_loss: `loss_fn` must be a function (params, batch) -> scalar, got "
                f"{type(loss_fn).__name__}."
            )
        self.loss_fn = loss_fn

    def __call__(self, params: PyTree, batch: Any) -> jax.Array:
        if not isinstance(batch, RaggedBatch):
            return self.loss_fn(params, batch)
        value = self.loss_fn(params, batch.main)
        if batch.rest is None:
            return value
        n_main, n_rest = num_examples(batch.main), num_examples(batch.rest)
        rest = self.loss_fn(params, batch.rest)
        return (n_main * value + n_rest * rest) / (n_main + n_rest)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _RaggedLoss) and other.loss_fn == self.loss_fn

    def __hash__(self) -> int:
        return hash((_RaggedLoss, self.loss_fn))


def ragged_loss(loss_fn: Callable[[PyTree, Any], jax.Array]) -> Callable[[PyTree, Any], jax.Array]:
    """``loss_fn`` that also accepts a ``RaggedBatch``, as the mean over all its examples.

    ``L(θ; main ∪ rest) = (n_main L(θ; main) + n_rest L(θ; rest)) / (n_main + n_rest)``: exact
    when ``loss_fn`` is a mean over the examples of its batch (cross-entropy, squared error,
    accuracy). Plain batches pass straight through, so the wrapped loss can be used
    everywhere. Wrap metrics the same way.

    Example:
      >>> rb = split_batch(batch, data_mesh())            # e.g. 1,438 digits on 8 devices
      >>> matvec = hessian_operator(ragged_loss(loss_fn), params, rb)
    """
    return loss_fn if isinstance(loss_fn, _RaggedLoss) else _RaggedLoss(loss_fn)


def map_points(
    f: Callable[[Any], Any],
    xs: PyTree,
    mesh: Mesh,
    *,
    chunk_size: int | None = None,
) -> Any:
    """``vmap(f)(xs)`` with the points (the leading axis of ``xs``) split over ``mesh``.

    Each device maps ``f`` over its share, ``chunk_size`` points at a time (``lax.map``);
    values ``f`` closes over are moved to the devices by XLA. A number of points that does
    not divide is padded with copies of the last point, and those results are dropped.
    Use it for anything vmapped over independent points: training seeds (a vmapped
    ``lax.scan`` training loop over keys), random restarts, grid points of your own.

    Args:
      f: function of one point (a pytree slice of ``xs`` without the leading axis).
      xs: pytree of arrays with a shared leading axis; PRNG key arrays work.
      mesh: the mesh (all of its axes are used).
      chunk_size: points evaluated together per device; ``None`` all of its share at once.

    Returns:
      ``f``'s outputs stacked on a leading axis, equal to ``jax.vmap(f)(xs)``.

    Example:
      >>> finals = jax.jit(lambda ks: map_points(train_one_seed, ks, mesh))(
      ...     jax.random.split(key, 1000))
    """
    fn = "map_points"
    num_examples(xs)  # a shared leading axis
    if chunk_size is not None:
        chunk_size = check_positive_int(fn, "chunk_size", chunk_size)
    return sharded_map(f, xs, mesh, chunk_size, fn)


# --------------------------------------------------------------------------- memory


class MemoryEstimate(NamedTuple):
    """XLA's memory plan of one compiled program, per device, in bytes.

    Attributes:
      arguments, outputs, temporaries: sizes from ``compiled.memory_analysis()``.
      total: ``arguments + outputs + temporaries - aliased``: the peak the program needs.
      available: free memory of the device it runs on (``available_memory``).
    """

    arguments: int
    outputs: int
    temporaries: int
    total: int
    available: int

    @property
    def fits(self) -> bool:
        return self.total <= self.available


def available_memory(device: jax.Device | None = None) -> int:
    """Free memory in bytes of ``device`` (default the first local one).

    Accelerators report ``bytes_limit - bytes_in_use`` through ``device.memory_stats()``. On
    the CPU, which reports nothing, it is the host's ``MemAvailable`` from ``/proc/meminfo``
    (or physical memory where that file does not exist).
    """
    device = jax.local_devices()[0] if device is None else device
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def memory_estimate(compiled: Any) -> MemoryEstimate:
    """``MemoryEstimate`` of a compiled program, ``jax.jit(f).lower(*args).compile()``.

    Nothing runs, so a program too large for the device can be refused before it runs.
    """
    stats = compiled.memory_analysis()
    if stats is None:
        raise ValueError("memory_estimate: this backend gives no memory analysis.")
    args, outs = int(stats.argument_size_in_bytes), int(stats.output_size_in_bytes)
    temp, alias = int(stats.temp_size_in_bytes), int(stats.alias_size_in_bytes)
    devices = getattr(compiled, "input_shardings", None)
    try:
        device = next(iter(jax.tree.leaves(devices)[0].device_set))
    except (IndexError, TypeError, AttributeError, StopIteration):
        device = None
    if device is not None and device.process_index != jax.process_index():
        device = None
    return MemoryEstimate(args, outs, temp, args + outs + temp - alias, available_memory(device))


def check_fits(fn: str, compiled: Any, what: str, hint: str) -> Any:
    """Raise ``MemoryError`` (with the sizes and ``hint``) when ``compiled`` would not fit the
    device's free memory; otherwise return ``compiled``. Backends without a memory analysis
    pass."""
    try:
        est = memory_estimate(compiled)
    except ValueError:
        return compiled
    if not est.fits:
        size = format_bytes
        raise MemoryError(
            f"{fn}: {what} needs about {size(est.total)} per device (XLA's plan: "
            f"{size(est.temporaries)} temporaries, {size(est.arguments)} arguments, "
            f"{size(est.outputs)} outputs), but {size(est.available)} is free. {hint}"
        )
    return compiled


# --------------------------------------------------------------------------- several hosts


def is_main_process() -> bool:
    """True on process 0: the one process of a multi-host run that writes files."""
    return jax.process_index() == 0


def gather(tree: PyTree) -> PyTree:
    """Every leaf as a NumPy array holding the global value, on every process.

    A leaf sharded over devices of several hosts cannot be read by one host
    (``np.asarray`` refuses). ``gather`` all-gathers it
    (``jax.experimental.multihost_utils.process_allgather``). In a single process it is
    ``np.asarray``.
    """
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def broadcast(value: Any) -> Any:
    """Process 0's ``value`` (a pytree of arrays or numbers) on every process; in a single
    process, ``value`` itself."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return multihost_utils.broadcast_one_to_all(value)


def run_stage(
    folder: Any,
    name: str,
    options: dict[str, Any],
    compute: Callable[[], tuple[dict, dict]],
) -> Any:
    """A resumable ``RunFolder`` stage that every process runs and only process 0 records.

    Process 0 holds the ``RunFolder`` (pass ``None`` elsewhere) and decides whether the stage
    is already recorded with these options. The decision is broadcast, so all processes skip
    it or all compute it. A computing process must take part because ``compute`` runs
    collectives. Only process 0 reads or writes files, so the folder need not be on a
    filesystem the other hosts see.

    Args:
      folder: the ``jaxscape.runfolder.RunFolder`` on process 0, ``None`` on the others.
      name, options: the stage and the options its key hashes.
      compute: ``() -> (results, arrays)``, host values (``gather`` sharded ones first).

    Returns:
      The ``StageRecord`` on process 0 (loaded or new); ``None`` on the others.
    """
    main = is_main_process()
    if main and folder is None:
        raise ValueError("run_stage: process 0 must pass its RunFolder as `folder`.")
    found = folder.load(name, folder.stage_key(name, options)) if main else None
    if int(broadcast(np.int32(found is not None))):
        return found
    import time

    start = time.perf_counter()
    results, arrays = compute()
    if not main:
        return None
    key = folder.stage_key(name, options)
    return folder.save(name, key, results, arrays, time.perf_counter() - start)


def device_summary() -> dict[str, Any]:
    """Processes, devices and their kind: what a results file should say it ran on."""
    devices = jax.devices()
    return {
        "process_count": jax.process_count(),
        "process_index": jax.process_index(),
        "device_count": len(devices),
        "local_device_count": jax.local_device_count(),
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
    }


__all__ = [
    "MemoryEstimate",
    "RaggedBatch",
    "available_memory",
    "broadcast",
    "check_fits",
    "data_mesh",
    "device_summary",
    "gather",
    "is_main_process",
    "map_points",
    "memory_estimate",
    "num_examples",
    "ragged_loss",
    "replicate",
    "run_stage",
    "shard_batch",
    "split_batch",
]
