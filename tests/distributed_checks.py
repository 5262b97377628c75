"""Sharded-vs-single-device comparisons, run in a subprocess with forced host devices.

``python tests/distributed_checks.py NUM_DEVICES [--core]`` sets
``XLA_FLAGS=--xla_force_host_platform_device_count=NUM_DEVICES`` before JAX starts, computes
every quantity once on one device and once on the mesh, and prints one JSON object: for each
check ``{"err": relative error, "devices": devices the sharded inputs or outputs span}``.
``tests/test_distributed.py`` asserts on it (float64, 1e-10). Run by hand, it is a quick
health check of a multi-device setup. ``--core`` runs only the core checks (data-parallel
operators and solvers, ragged batches, points over the mesh, training seeds).
"""

from __future__ import annotations

import json
import os
import sys

NUM_DEVICES = int(sys.argv[1]) if len(sys.argv) > 1 else 4
FULL = "--core" not in sys.argv[2:]
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + f" --xla_force_host_platform_device_count={NUM_DEVICES}"
    + " --xla_backend_optimization_level=0"
).strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import jaxscape as js  # noqa: E402

SIZES = (6, 12, 3)


def init(key):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "layer0": {
            "w": jax.random.normal(k1, (SIZES[0], SIZES[1])) / np.sqrt(SIZES[0]),
            "b": 0.1 * jax.random.normal(k3, (SIZES[1],)),
        },
        "layer1": {"w": jax.random.normal(k2, (SIZES[1], SIZES[2])) / np.sqrt(SIZES[1]),
                   "b": jnp.zeros(SIZES[2])},
    }  # fmt: skip


def apply(params, batch):
    h = jnp.tanh(batch["x"] @ params["layer0"]["w"] + params["layer0"]["b"])
    return h @ params["layer1"]["w"] + params["layer1"]["b"]


def out_loss(logits, batch):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]))


def loss_fn(params, batch):
    return out_loss(apply(params, batch), batch)


def data(key, n):
    kx, ky = jax.random.split(key)
    return {"x": jax.random.normal(kx, (n, SIZES[0])), "y": jax.random.randint(ky, (n,), 0, 3)}


def flat(tree):
    leaves = [jnp.ravel(jnp.asarray(x)) for x in jax.tree.leaves(tree)]
    return np.asarray(jnp.concatenate(leaves)) if leaves else np.zeros(0)


def err(a, b) -> float:
    a, b = flat(a), flat(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def span(tree) -> int:
    """Devices that the arrays of ``tree`` are laid out on (the most over its leaves)."""
    return max(len(x.sharding.device_set) for x in jax.tree.leaves(tree))


def main() -> None:
    assert jax.device_count() == NUM_DEVICES, jax.devices()
    mesh = js.data_mesh()
    key = jax.random.key(0)
    params = init(jax.random.key(1))
    v = jax.tree.map(lambda p: jnp.ones_like(p) / 7, params)
    n = 16 * NUM_DEVICES  # divides evenly
    batch = data(jax.random.key(2), n)
    sharded = js.shard_batch(batch, mesh)
    results: dict[str, dict] = {}

    def check(name, single, multi, devices):
        results[name] = {"err": err(multi, single), "devices": int(devices)}

    check("batch layout", batch, sharded, span(sharded))

    # ---- data parallel: the unchanged operators and solvers on a sharded batch
    loss = jax.jit(loss_fn)
    check("loss", loss(params, batch), loss(params, sharded), span(sharded))
    hvp = jax.jit(lambda p, b, v: js.hvp(loss_fn, p, b, v))
    check("hvp", hvp(params, batch, v), hvp(params, sharded, v), span(sharded))
    hop = jax.jit(lambda p, b, v: js.hessian_operator(loss_fn, p, b)(v))
    check("hessian_operator", hop(params, batch, v), hop(params, sharded, v), span(sharded))
    eig = jax.jit(
        lambda p, b: js.eigsh(key, js.hessian_operator(loss_fn, p, b), p, k=4, which="BE",
                              num_iters=60, tol=1e-12).eigenvalues
    )  # fmt: skip
    check("eigsh BE k=4", eig(params, batch), eig(params, sharded), span(sharded))
    other = init(jax.random.key(3))
    alphas = jnp.linspace(-0.5, 1.5, 13)
    prof1 = js.interpolate(loss_fn, params, other, batch, alphas)
    prof2 = js.interpolate(loss_fn, params, other, sharded, alphas)
    check("interpolate (sharded batch)", prof1.loss, prof2.loss, span(sharded))
    d_1 = js.random_direction(jax.random.key(4), params)
    d_2 = js.random_direction(jax.random.key(5), params)
    xs, ys = jnp.linspace(-1, 1, 7), jnp.linspace(-1, 1, 5)
    surf1 = js.surface(loss_fn, params, d_1, d_2, batch, xs, ys)
    surf2 = js.surface(loss_fn, params, d_1, d_2, sharded, xs, ys)
    check("surface (sharded batch)", surf1.loss, surf2.loss, span(sharded))
    # ---- ragged: a batch that does not divide over the devices
    rb_n = n + NUM_DEVICES - 1
    ragged = data(jax.random.key(6), rb_n)
    split = js.split_batch(ragged, mesh)
    rloss = js.ragged_loss(loss_fn)
    check("ragged loss", loss(params, ragged), jax.jit(rloss)(params, split), span(split.main))
    rhvp = jax.jit(lambda p, b, v: js.hvp(rloss, p, b, v))
    check("ragged hvp", hvp(params, ragged, v), rhvp(params, split, v), span(split.main))
    reig = jax.jit(
        lambda p, b: js.eigsh(key, js.hessian_operator(rloss, p, b), p, k=4, which="BE",
                              num_iters=60, tol=1e-12).eigenvalues
    )  # fmt: skip
    check("ragged eigsh", eig(params, ragged), reig(params, split), span(split.main))
    # ---- point parallelism: coefficients, grid points, probes, starts and seeds split
    p_int = js.interpolate(loss_fn, params, other, batch, alphas, mesh=mesh)
    check("interpolate (points over mesh)", prof1.loss, p_int.loss, span(p_int.loss))
    p_surf = js.surface(loss_fn, params, d_1, d_2, batch, xs, ys, mesh=mesh, chunk_size=3)
    check("surface (points over mesh)", surf1.loss, p_surf.loss, span(p_surf.loss))
    dens_m = jax.jit(
        lambda p, b: js.spectral_density(key, js.hessian_operator(loss_fn, p, b), p,
                                         num_probes=2 * NUM_DEVICES + 1, num_iters=12,
                                         mesh=mesh)
    )  # fmt: skip
    dens_1 = jax.jit(
        lambda p, b: js.spectral_density(key, js.hessian_operator(loss_fn, p, b), p,
                                         num_probes=2 * NUM_DEVICES + 1, num_iters=12)
    )  # fmt: skip
    dm, ds = dens_m(params, batch), dens_1(params, batch)
    check("spectral_density (probes over mesh)", (ds.nodes, ds.weights, ds.density),
          (dm.nodes, dm.weights, dm.density), span(dm.nodes))  # fmt: skip
    dens_ms = jax.jit(
        lambda p, b: js.spectral_density(key, js.hessian_operator(loss_fn, p, b), p,
                                         num_probes=2 * NUM_DEVICES + 1, num_iters=12,
                                         mesh=mesh)
    )  # fmt: skip
    dms = dens_ms(params, sharded)  # probes over the mesh, operator on the sharded batch
    check("spectral_density (probes and sharded batch)", (ds.nodes, ds.weights),
          (dms.nodes, dms.weights), span(dms.nodes))  # fmt: skip

    # 8 probes per device and 40 steps: enough for jaxlib's batched CPU eigh to split over the
    # thread pool, which deadlocked several devices before _util.eigh_each (SLQ never returned)
    big = dict(num_probes=8 * NUM_DEVICES, num_iters=40)
    dens_b = jax.jit(
        lambda p, b, mesh: js.spectral_density(key, js.hessian_operator(loss_fn, p, b), p,
                                               mesh=mesh, **big),
        static_argnames="mesh",
    )  # fmt: skip
    db1, dbm = dens_b(params, batch, None), dens_b(params, batch, mesh)
    check("spectral_density (8 probes per device, 40 steps)", (db1.nodes, db1.weights),
          (dbm.nodes, dbm.weights), span(dbm.nodes))  # fmt: skip

    # the eigh behind it, vmapped and differentiated, against jnp.linalg.eigh
    sym = jax.random.normal(jax.random.key(11), (5, 7, 7))
    sym = sym + jnp.swapaxes(sym, -1, -2)

    def spectral_fn(eigh):
        return lambda a: jnp.sum(eigh(a)[0] ** 3) + jnp.sum(jnp.abs(eigh(a)[1][:, 0]))

    from jaxscape._util import eigh_each

    ours = jax.jit(jax.vmap(lambda a: (eigh_each(a)[0], jax.grad(spectral_fn(eigh_each))(a))))
    plain = jax.vmap(lambda a: (jnp.linalg.eigh(a)[0], jax.grad(spectral_fn(jnp.linalg.eigh))(a)))
    check("eigh_each (vmap and grad)", plain(sym), ours(sym), 1)  # replicated: no layout

    def train(key):  # a vmapped training run per seed: GD on a fresh init, 20 steps
        p = init(key)

        def step(p, _):
            g = jax.grad(loss_fn)(p, batch)
            return jax.tree.map(lambda a, b: a - 0.5 * b, p, g), None

        return loss_fn(jax.lax.scan(step, p, None, 20)[0], batch)

    seeds = jax.random.split(jax.random.key(9), 3 * NUM_DEVICES - 1)
    t1 = jax.jit(jax.vmap(train))(seeds)
    t2 = jax.jit(lambda k: js.map_points(train, k, mesh))(seeds)
    check("map_points (training seeds)", t1, t2, span(t2))

    if FULL:  # the rest at the default device count only (the suite runs 8 with --core)
        ggn = jax.jit(lambda p, b, v: js.ggn_operator(apply, out_loss, p, b)(v))
        check("ggn_operator", ggn(params, batch, v), ggn(params, sharded, v), span(sharded))

        stack = js.data.stack_batches(batch, batch_size=8 * NUM_DEVICES)
        stack_sh = js.shard_batch(stack, mesh, stacked=True)
        avg = jax.jit(
            lambda p, bs, v: js.averaged_operator(lambda b: js.hessian_operator(loss_fn, p, b), bs)(
                v
            )
        )
        check("averaged_operator (stacked)", avg(params, stack, v), avg(params, stack_sh, v),
              span(stack_sh))  # fmt: skip

        power = jax.jit(
            lambda p, b: js.power_iteration(key, js.hessian_operator(loss_fn, p, b), p,
                                            num_iters=300, tol=1e-12).eigenvalues
        )  # fmt: skip
        check("power_iteration", power(params, batch), power(params, sharded), span(sharded))
        trace = jax.jit(
            lambda p, b: js.estimate_trace(key, js.hessian_operator(loss_fn, p, b), p,
                                           num_matvecs=30).value
        )  # fmt: skip
        check("estimate_trace", trace(params, batch), trace(params, sharded), span(sharded))
        dens = jax.jit(
            lambda p, b: js.spectral_density(key, js.hessian_operator(loss_fn, p, b), p,
                                             num_probes=4, num_iters=12)
        )  # fmt: skip
        d1, d2 = dens(params, batch), dens(params, sharded)
        check("spectral_density", (d1.nodes, d1.weights), (d2.nodes, d2.weights), span(sharded))

        istack1 = js.interpolate(loss_fn, params, other, stack, alphas, stacked=True)
        istack2 = js.interpolate(loss_fn, params, other, stack_sh, alphas, stacked=True)
        check("interpolate (stacked, sharded)", istack1.loss, istack2.loss, span(stack_sh))

        check(
            "ragged interpolate",
            js.interpolate(loss_fn, params, other, ragged, alphas).loss,
            js.interpolate(rloss, params, other, split, alphas).loss,
            span(split.main),
        )
        check(
            "ragged surface",
            js.surface(loss_fn, params, d_1, d_2, ragged, xs, ys).loss,
            js.surface(rloss, params, d_1, d_2, split, xs, ys).loss,
            span(split.main),
        )

        p_int_c = js.interpolate(loss_fn, params, other, batch, alphas, mesh=mesh, chunk_size=2)
        check("interpolate (points, chunked)", prof1.loss, p_int_c.loss, span(p_int_c.loss))
        p_both = js.surface(loss_fn, params, d_1, d_2, sharded, xs, ys, mesh=mesh)
        check("surface (points and sharded batch)", surf1.loss, p_both.loss, span(p_both.loss))
        ts = jnp.linspace(0, 1, 11)
        curve = js.fit_curve(
            jax.random.key(7), loss_fn, params, other, batch, optax.sgd(0.1), num_steps=3
        )
        c1 = js.curve_losses(loss_fn, curve, batch, ts)
        c2 = js.curve_losses(loss_fn, curve, batch, ts, mesh=mesh)
        check("curve_losses (points over mesh)", c1, c2, span(c2))
        trace_m = jax.jit(
            lambda p, b: js.estimate_trace(key, js.hessian_operator(loss_fn, p, b), p,
                                           num_matvecs=30, mesh=mesh).value
        )  # fmt: skip
        # (the trace is a scalar: its layout says nothing about where the products ran)
        check("estimate_trace (probes over mesh)", trace(params, batch), trace_m(params, batch), 0)

        starts = jax.vmap(init)(jax.random.split(jax.random.key(8), NUM_DEVICES + 1))
        opts = dict(method="newton", num_steps=5, classify=False)
        s1 = js.find_critical_points(loss_fn, starts, batch, **opts)
        s2 = js.find_critical_points(loss_fn, starts, batch, mesh=mesh, **opts)
        check("find_critical_points (starts over mesh)", (s1.params, s1.loss), (s2.params, s2.loss),
              span(s2.loss))  # fmt: skip

        explicit = jax.make_mesh(
            (NUM_DEVICES,), ("x",), axis_types=(jax.sharding.AxisType.Explicit,)
        )
        t3 = jax.jit(lambda k: js.map_points(train, k, explicit))(seeds)
        check("map_points (explicit-axis mesh)", t1, t3, span(t3))

    results["_meta"] = {"num_devices": NUM_DEVICES, "params": int(ravel_pytree(params)[0].size)}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
