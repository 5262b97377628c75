"""Small helpers shared by the numerical modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxscape._checks import check_positive_int


def chunked_map(
    f: Callable,
    xs: Any,
    chunk_size: int | None,
    fn: str = "lax.map",
    name: str = "chunk_size",
    *,
    mesh: Mesh | None = None,
) -> Any:
    """``f`` over the leading axis of ``xs``: all at once under ``vmap`` (``chunk_size=None``) or
    ``chunk_size`` at a time (``lax.map(..., batch_size=)``), so memory follows the chunk.

    With a ``mesh`` the points are split over all of its devices first (one block per device;
    see ``distributed.map_points``) and ``chunk_size`` counts points per device.

    ``fn`` and ``name`` are the caller and its argument, named in the error for a bad size.
    """
    if chunk_size is not None:
        chunk_size = check_positive_int(fn, name, chunk_size)
    if mesh is None:
        return _local_map(f, xs, chunk_size)
    return sharded_map(f, xs, mesh, chunk_size, fn)


def _local_map(f: Callable, xs: Any, chunk_size: int | None) -> Any:
    if chunk_size is None:
        return jax.vmap(f)(xs)
    return jax.lax.map(f, xs, batch_size=chunk_size)


def eigh_each(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(eigenvalues, eigenvectors)`` of ``jnp.linalg.eigh(a)``, as a tuple; on CPU with several
    devices, one LAPACK call per matrix when vmapped.

    jaxlib's batched CPU ``eigh`` splits the batch over XLA's intra-op thread pool and waits
    for the parts inside a pool thread. When several CPU devices run at once (forced host
    devices, ``jax_num_cpu_devices``), each device's program holds a pool thread, and once
    every thread waits so, the program deadlocks: jax 0.10.2, SLQ of 8 probes × 24 steps on 2
    forced devices of a 2-core machine never returned. So with several local CPU devices,
    under ``vmap`` this runs the matrices one after another (``lax.map``); under a second
    ``vmap`` (the device blocks of ``sharded_map``) each device still sees a batch of one.
    One CPU device and other backends keep the batched solver.
    """
    if jax.default_backend() != "cpu" or jax.local_device_count() == 1:
        return tuple(jnp.linalg.eigh(a))
    return _eigh_cpu(a)


@jax.custom_jvp
def _eigh_cpu(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    return _sequential_eigh(a)


@_eigh_cpu.defjvp
def _eigh_cpu_jvp(primals, tangents):
    # JAX's own eigh JVP (custom_vmap alone cannot be differentiated in reverse mode):
    # dw = diag(Vᵀ dA V), dV = V (F ∘ Vᵀ dA V) with F_ij = 1 / (w_j - w_i), F_ii = 0; linear
    # in dA and free of LAPACK, so grad and vmap of it need no batched eigh either
    (a,), (da,) = primals, tangents
    w, v = _eigh_cpu(a)
    da = (da + jnp.swapaxes(da, -1, -2)) / 2  # eigh symmetrizes its input, so its tangent too
    vt_da_v = jnp.swapaxes(v, -1, -2) @ da @ v
    eye = jnp.eye(a.shape[-1], dtype=bool)
    gap = w[..., None, :] - w[..., :, None]
    f = jnp.where(eye, 0, 1 / jnp.where(eye, 1, gap))
    return (w, v), (jnp.diagonal(vt_da_v, axis1=-2, axis2=-1), v @ (f * vt_da_v))


@jax.custom_batching.custom_vmap
def _sequential_eigh(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    return tuple(jnp.linalg.eigh(a))


@_sequential_eigh.def_vmap
def _sequential_eigh_vmap(axis_size, in_batched, a):
    # only the innermost vmap (the one this rule sees first) becomes a loop; vmaps outside it
    # batch the plain eigh in the loop body, so sharded_map's device blocks, split over the
    # devices, leave each device a batch of one and move no matrices between devices
    del axis_size
    if not in_batched[0]:
        return tuple(jnp.linalg.eigh(a)), (False, False)
    return jax.lax.map(lambda m: tuple(jnp.linalg.eigh(m)), a), (True, True)


def check_mesh(fn: str, mesh: Any) -> Mesh:
    """``mesh`` if it is a ``jax.sharding.Mesh``, else a ``TypeError`` naming ``fn``."""
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"{fn}: `mesh` must be a jax.sharding.Mesh (e.g. jaxscape.distributed.data_mesh()), "
            f"got {type(mesh).__name__}."
        )
    return mesh


def sharded_map(f: Callable, xs: Any, mesh: Mesh, chunk_size: int | None, fn: str) -> Any:
    """``f`` over the leading axis of ``xs`` with the points split evenly over every device of
    ``mesh``. A count that does not divide is padded with copies of the last point, whose
    results are dropped, so any number of points gives exactly the unsharded results. Values
    ``f`` closes over (params, batch, operators) may be laid out in any way: XLA moves them.

    (A ``shard_map`` version could not take an operator linearized at a batch sharded over
    the same mesh: its residuals are global arrays, which a manual-axis body refuses.)"""
    check_mesh(fn, mesh)
    leaves = jax.tree.leaves(xs)
    n = jnp.shape(leaves[0])[0]
    axes = tuple(mesh.axis_names)
    pad = -n % mesh.size
    if pad:
        xs = jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]), xs)
    total = n + pad
    blocks = jax.tree.map(lambda x: x.reshape(mesh.size, total // mesh.size, *x.shape[1:]), xs)
    # the points are placed with an Auto-axis copy of the mesh (same devices, same names), so
    # meshes from ``jax.make_mesh``, whose axes are Explicit, work without a mesh context
    auto = Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(axes))
    layout = NamedSharding(auto, PartitionSpec(axes))
    place = jax.lax.with_sharding_constraint
    # one block of points per device; XLA's partitioner (GSPMD) splits the vmapped block axis
    # over the devices and moves whatever ``f`` closes over (a sharded batch, an operator's
    # residuals) to where it is needed
    out = jax.vmap(lambda local: _local_map(f, local, chunk_size))(place(blocks, layout))
    out = jax.tree.map(lambda y: y.reshape(total, *y.shape[2:]), place(out, layout))
    if not pad:
        return out
    return jax.tree.map(lambda y: y[:n], out)
