"""Lines, planes, directions and trajectory planes against closed forms and point-by-point
evaluation."""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import EXACT, mlp_apply, mlp_params, rel_err
from jax._src import monitoring
from jax.flatten_util import ravel_pytree

from jaxscape import data, landscape, models

F64 = jnp.float64
LAM = jnp.asarray([1.0, 3.0, 0.5], F64)


def quadratic(params, batch):
    """½ Σ λ_i (θ_i - c_i)² with the center ``c`` as the batch."""
    return 0.5 * jnp.sum(LAM * (params["w"] - batch) ** 2)


def test_interpolation_of_a_quadratic_is_the_closed_form():
    a = {"w": jnp.asarray([1.0, -1.0, 2.0], F64)}
    b = {"w": jnp.asarray([0.0, 2.0, -1.0], F64)}
    c = jnp.asarray([0.5, 0.5, 0.5], F64)
    alphas = jnp.linspace(-0.5, 2.0, 11, dtype=F64)
    prof = landscape.interpolate(quadratic, a, b, c, alphas, chunk_size=4)
    u, v = a["w"] - c, b["w"] - a["w"]  # L(α) = ½ Σ λ (u + α v)²
    want = 0.5 * np.sum(np.asarray(LAM) * (np.asarray(u) + np.outer(alphas, v)) ** 2, axis=1)
    np.testing.assert_allclose(prof.loss, want, rtol=EXACT)
    np.testing.assert_array_equal(prof.coords, alphas)


class _UnhashableLoss:
    """A loss object with ``__eq__`` and no ``__hash__`` (as dataclasses with eq=True)."""

    __hash__ = None

    def __eq__(self, other):
        return isinstance(other, _UnhashableLoss)

    def __call__(self, params, batch):
        return quadratic(params, batch)


@contextlib.contextmanager
def _count_compiles():
    """The XLA compilations that run inside the block."""
    events: list[str] = []

    def listen(name, secs, **kwargs):
        if name.endswith("backend_compile_duration"):
            events.append(name)

    monitoring.register_event_duration_secs_listener(listen)
    try:
        yield events
    finally:
        monitoring.unregister_event_duration_listener(listen)


def test_interpolate_and_surface_compile_once_per_loss():
    """Eager calls run one cached program (not op-by-op dispatch); unhashable losses still work."""
    a = {"w": jnp.asarray([1.0, -1.0, 2.0], F64)}
    b = {"w": jnp.asarray([0.0, 2.0, -1.0], F64)}
    c = jnp.asarray([0.5, 0.5, 0.5], F64)

    def fresh_loss(params, batch):  # a new function object: nothing cached for it yet
        return quadratic(params, batch)

    alphas5 = jnp.linspace(0.0, 1.0, 5, dtype=F64)
    xs = jnp.linspace(-1.0, 1.0, 3, dtype=F64)
    shifted = [c + shift for shift in (0.0, 1.0, 2.0)]  # new values, same shapes
    landscape.interpolate(quadratic, a, b, c, alphas5)  # compiles the small eager ops around it
    landscape.surface(quadratic, a, a, b, c, xs, xs)
    with _count_compiles() as compiles:
        for batch in shifted:
            landscape.interpolate(fresh_loss, a, b, batch, alphas5)
    assert len(compiles) == 1  # one program (and the memory check reuses it)
    with _count_compiles() as compiles:
        for batch in shifted[:2]:
            landscape.surface(fresh_loss, a, a, b, batch, xs, xs)
    assert len(compiles) == 1
    alphas = jnp.linspace(-0.5, 1.5, 9, dtype=F64)
    want = landscape.interpolate(quadratic, a, b, c, alphas).loss
    got = landscape.interpolate(_UnhashableLoss(), a, b, c, alphas).loss
    np.testing.assert_allclose(got, want, rtol=EXACT)


def test_interpolate_metrics_and_stacked_batches_equal_pointwise(mlp_problem):
    loss_fn, params, batch = mlp_problem
    other = mlp_params(jax.random.key(9), [5, 8, 6, 3])
    stack = data.stack_batches(batch, batch_size=8)  # 4 batches of 8: mean = full-batch mean
    alphas = jnp.linspace(0.0, 1.0, 5, dtype=F64)

    def acc(p, b):
        return jnp.mean((jnp.argmax(mlp_apply(p, b[0]), -1) == b[1]).astype(F64))

    prof = landscape.interpolate(
        loss_fn, params, other, stack, alphas, metrics={"acc": acc}, stacked=True
    )
    for i, a in enumerate(alphas):
        p = jax.tree.map(lambda x, y, a=a: (1 - a) * x + a * y, params, other)
        assert abs(prof.loss[i] - loss_fn(p, batch)) < 1e-12
        assert abs(prof.metrics["acc"][i] - acc(p, batch)) < 1e-12


def test_surface_equals_point_by_point(mlp_problem):
    loss_fn, params, batch = mlp_problem
    d1 = landscape.random_direction(jax.random.key(1), params)
    d2 = landscape.random_direction(jax.random.key(2), params)
    xs = jnp.linspace(-1.0, 1.0, 4, dtype=F64)
    ys = jnp.linspace(-0.5, 0.5, 3, dtype=F64)
    surf = landscape.surface(loss_fn, params, d1, d2, batch, xs, ys, chunk_size=5)
    assert surf.loss.shape == (3, 4)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            p = jax.tree.map(lambda c, u, v, x=x, y=y: c + x * u + y * v, params, d1, d2)
            assert abs(surf.loss[i, j] - loss_fn(p, batch)) < 1e-12


@pytest.mark.parametrize("ignore_1d", [True, False])
def test_filter_normalization_matches_weight_filter_norms(ignore_1d):
    model = models.CNN((3, 4), 5, dtype=F64)
    params, _ = models.init_model(jax.random.key(0), model, jnp.ones((1, 6, 6, 1), F64))
    d = landscape.random_direction(jax.random.key(1), params, ignore_1d=ignore_1d)
    for (path, w), x in zip(
        jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(d), strict=True
    ):
        if w.ndim == 1:
            want = np.zeros_like(w) if ignore_1d else np.asarray(w)
            np.testing.assert_array_equal(x, want, err_msg=str(path))
            continue
        axes = tuple(range(w.ndim - 1))  # a filter is a slice along the last (output) axis
        np.testing.assert_allclose(
            np.linalg.norm(np.asarray(x).reshape(-1, w.shape[-1]), axis=0),
            np.sqrt(np.sum(np.asarray(w) ** 2, axis=axes)),
            rtol=1e-12,
        )
        assert rel_err(x, w) > 0.1  # a random direction, not the weights


def test_filter_axis_for_pytorch_layout_and_other_normalizations():
    w = {"W": jax.random.normal(jax.random.key(0), (4, 3, 2), F64), "b": jnp.ones(4, F64)}
    d = landscape.random_direction(jax.random.key(1), w, filter_axis=0)["W"]
    np.testing.assert_allclose(
        np.linalg.norm(np.asarray(d).reshape(4, -1), axis=1),
        np.linalg.norm(np.asarray(w["W"]).reshape(4, -1), axis=1),
        rtol=1e-12,
    )
    layer = landscape.random_direction(jax.random.key(1), w, normalization="layer")
    assert abs(jnp.linalg.norm(layer["W"]) - jnp.linalg.norm(w["W"])) < 1e-12
    model = landscape.random_direction(jax.random.key(1), w, normalization="model", ignore_1d=False)
    assert (
        abs(jnp.linalg.norm(ravel_pytree(model)[0]) - jnp.linalg.norm(ravel_pytree(w)[0])) < 1e-12
    )
    raw = landscape.random_direction(jax.random.key(1), w, normalization=None, ignore_1d=False)
    assert abs(float(jnp.std(ravel_pytree(raw)[0])) - 1.0) < 0.35
    with pytest.raises(ValueError, match="`normalization` must be one of"):
        landscape.random_direction(jax.random.key(1), w, normalization="unit")


def test_plane_through_three_points_reproduces_them():
    k = jax.random.split(jax.random.key(0), 3)
    a, b, c = (mlp_params(kk, [3, 4, 2]) for kk in k)
    plane = landscape.plane_through(a, b, c)
    e1, e2 = ravel_pytree(plane.d1)[0], ravel_pytree(plane.d2)[0]
    assert abs(jnp.dot(e1, e1) - 1) < EXACT and abs(jnp.dot(e2, e2) - 1) < EXACT
    assert abs(jnp.dot(e1, e2)) < EXACT
    for p, (x, y) in zip((a, b, c), plane.points, strict=True):
        rebuilt = jax.tree.map(
            lambda o, u, v, x=x, y=y: o + x * u + y * v, plane.center, plane.d1, plane.d2
        )
        assert rel_err(rebuilt, p) < 1e-12
    with pytest.raises(ValueError, match="collinear"):
        mid = jax.tree.map(lambda x, y: 0.5 * (x + y), a, b)
        landscape.plane_through(a, b, mid)


def in_plane_trajectory(num=12):
    """A curved path in a known plane of a 43-parameter pytree."""
    center = mlp_params(jax.random.key(0), [4, 5, 3])
    flat0, unravel = ravel_pytree(center)
    q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(1), (flat0.size, 2), F64))
    t = jnp.linspace(0.0, 1.0, num, dtype=F64)
    coords = jnp.stack([3 * t, jnp.sin(3 * t)], axis=1)
    flat = flat0 + coords @ q.T
    return jax.vmap(unravel)(flat), center, unravel(q[:, 0]), unravel(q[:, 1]), coords


def test_projection_of_an_in_plane_trajectory_is_exact():
    traj, center, d1, d2, coords = in_plane_trajectory()
    np.testing.assert_allclose(landscape.project(traj, center, d1, d2), coords, atol=1e-12)
    # PCA of an in-plane trajectory spans the plane: all the variance in two components
    dirs, explained = landscape.pca_directions(traj, num_components=2)
    assert abs(float(jnp.sum(explained)) - 1.0) < 1e-12
    last = jax.tree.map(lambda x: x[-1], traj)
    back = landscape.project(traj, last, *dirs)
    rebuilt = back @ jnp.stack([ravel_pytree(d)[0] for d in dirs])
    flat = jax.vmap(lambda p: ravel_pytree(p)[0])(traj) - ravel_pytree(last)[0]
    np.testing.assert_allclose(rebuilt, flat, atol=1e-10)


def test_goodfellow_plane_and_random_walk():
    traj, *_ = in_plane_trajectory()
    plane = landscape.goodfellow_plane(traj)
    pts = np.asarray(plane.points)
    assert abs(pts[0]).max() < 1e-12 and abs(pts[-1, 1]) < 1e-12  # ends on the d1 axis
    assert np.abs(pts[:, 1]).max() > 0.1  # the path leaves the line, and d2 sees it
    flat = jax.vmap(lambda p: ravel_pytree(p)[0])(traj)
    walk = landscape.random_walk(jax.random.key(3), traj)
    wflat = jax.vmap(lambda p: ravel_pytree(p)[0])(walk)
    np.testing.assert_allclose(
        np.linalg.norm(np.diff(wflat, axis=0), axis=1),
        np.linalg.norm(np.diff(flat, axis=0), axis=1),
        rtol=1e-12,
    )
    np.testing.assert_array_equal(wflat[0], flat[0])
    assert rel_err(wflat[-1], flat[-1]) > 0.01


def test_bad_input():
    a = {"w": jnp.ones(3, F64)}
    with pytest.raises(ValueError, match="`params_b` must be shaped like `params`"):
        landscape.interpolate(quadratic, a, {"v": jnp.ones(3, F64)}, None, [0.0])
    with pytest.raises(ValueError, match="`alphas` must be 1-D"):
        landscape.interpolate(quadratic, a, a, None, jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="same point"):
        landscape.plane_through(a, a, a)
    with pytest.raises(ValueError, match="leading time axis"):
        landscape.pca_directions({"w": jnp.asarray(1.0, F64)})
    with pytest.raises(ValueError, match="straight line"):
        line = {"w": jnp.outer(jnp.linspace(0.0, 1.0, 5, dtype=F64), jnp.ones(3, F64))}
        landscape.goodfellow_plane(line)


def iso_quadratic(lam):
    return lambda params, batch: 0.5 * lam * jnp.sum(params["w"] ** 2)


@pytest.mark.parametrize("eps", [1e-3, 5e-2])
def test_sharpness_of_a_quadratic_is_the_box_maximum(eps):
    lam = np.asarray(LAM)
    at_min = {"w": jnp.zeros(3, F64)}
    loss0 = lambda p, b: quadratic(p, jnp.zeros(3, F64))  # noqa: E731
    res = landscape.sharpness(jax.random.key(0), loss0, at_min, None, epsilon=eps)
    want = 0.5 * np.sum(lam * eps**2)  # every corner of the box |y| <= eps
    assert abs(float(res.max_loss) - want) < 1e-12 * want
    assert abs(float(res.value) - 100 * want) < 1e-10 * want  # not 0: random start
    x = jnp.asarray([1.0, -2.0, 0.5], F64)
    res = landscape.sharpness(jax.random.key(1), loss0, {"w": x}, None, epsilon=eps)
    b = eps * (np.abs(np.asarray(x)) + 1)
    want = 0.5 * np.sum(lam * (np.abs(np.asarray(x)) + b) ** 2)
    f0 = 0.5 * np.sum(lam * np.asarray(x) ** 2)
    assert abs(float(res.max_loss) - want) < 1e-12 * want
    assert abs(float(res.value) - 100 * (want - f0) / (1 + f0)) < 1e-9
    np.testing.assert_allclose(np.abs(res.perturbation["w"]), b, rtol=1e-12)


def test_sharpness_in_a_random_subspace_stays_in_its_box():
    loss0 = lambda p, b: quadratic(p, jnp.zeros(3, F64))  # noqa: E731
    res = landscape.sharpness(
        jax.random.key(2), loss0, {"w": jnp.zeros(3, F64)}, None, epsilon=0.1, subspace_dim=2
    )
    a = jax.random.normal(jax.random.split(jax.random.key(2))[1], (3, 2), F64) / jnp.sqrt(3.0)
    corners = np.asarray([[sx, sy] for sx in (-0.1, 0.1) for sy in (-0.1, 0.1)]) @ np.asarray(a).T
    brute = max(0.5 * np.sum(np.asarray(LAM) * c**2) for c in corners)  # convex: a corner
    assert 0 < float(res.max_loss) <= brute + 1e-12
    z = np.linalg.lstsq(np.asarray(a), np.asarray(res.perturbation["w"]), rcond=None)[0]
    assert np.all(np.abs(z) <= 0.1 + 1e-12)


def test_basin_width_of_an_isotropic_quadratic():
    lam, tau = 4.0, 0.02
    params = {"w": jnp.zeros(6, F64)}
    res = landscape.basin_width(
        jax.random.key(0),
        iso_quadratic(lam),
        params,
        None,
        threshold=tau,
        num_directions=5,
        max_distance=1.0,
    )
    np.testing.assert_allclose(res.widths, np.sqrt(2 * tau / lam), rtol=1e-8)
    assert bool(jnp.all(res.reached)) and float(res.std) < 1e-8
    far = landscape.basin_width(
        jax.random.key(0),
        iso_quadratic(lam),
        params,
        None,
        threshold=10.0,
        num_directions=2,
        max_distance=1.0,
    )
    assert not bool(jnp.any(far.reached)) and bool(jnp.all(jnp.isinf(far.widths)))
    assert bool(jnp.isnan(far.mean))


def test_disagreement_counts_differing_predictions():
    x = jnp.eye(4, dtype=F64)

    def apply_fn(p, x):
        return x @ p

    a = jnp.eye(4, dtype=F64)
    b = a[:, [0, 1, 3, 2]]  # swaps the predictions of inputs 2 and 3
    assert float(landscape.disagreement(apply_fn, a, a, x)) == 0.0
    assert float(landscape.disagreement(apply_fn, a, b, x)) == 0.5
