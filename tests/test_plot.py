"""Figures: each is written as PNG and PDF, and what it draws is the computed arrays."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxscape import landscape, plot, toys

F64 = jnp.float64


@pytest.fixture(scope="module")
def rosenbrock_plane():
    center = jnp.asarray([1.0, 1.0], F64)
    d1, d2 = jnp.asarray([1.0, 0.0], F64), jnp.asarray([0.0, 1.0], F64)
    xs = jnp.linspace(-2.0, 1.0, 31, dtype=F64)
    ys = jnp.linspace(-1.0, 2.0, 25, dtype=F64)
    surf = landscape.surface(toys.rosenbrock, center, d1, d2, None, xs, ys)
    t = jnp.linspace(0.0, 1.0, 20, dtype=F64)
    path = jnp.stack([-1.5 + 1.5 * t, 1.5 * (1 - t) ** 2], axis=1)  # a path ending at (0, 0)
    return surf, path


def written(path):
    for suffix in (".png", ".pdf"):
        assert path.with_suffix(suffix).stat().st_size > 1000, suffix


def test_profile_draws_the_computed_losses(tmp_path):
    a, b = jnp.asarray([-1.0, 0.0], F64), jnp.asarray([1.0, 0.0], F64)
    alphas = jnp.linspace(-0.5, 1.5, 41, dtype=F64)
    train = landscape.interpolate(toys.quadratic_saddle, a, b, None, alphas)
    test = landscape.interpolate(toys.quadratic_bowl, a, b, None, alphas)
    fig = plot.profile_figure(
        {"train": (alphas, train.loss), "test": (alphas, test.loss)}, tmp_path / "profile"
    )
    written(tmp_path / "profile")
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_label() in ("train", "test")]
    np.testing.assert_array_equal(lines[0].get_ydata(), train.loss)
    np.testing.assert_array_equal(lines[1].get_ydata(), test.loss)


def test_contour_heatmap_and_3d_draw_the_surface(tmp_path, rosenbrock_plane):
    surf, path = rosenbrock_plane
    xs, ys = surf.coords
    fig = plot.contour_figure(xs, ys, surf.loss, tmp_path / "contour", trajectory=path, log=True)
    written(tmp_path / "contour")
    traj = next(ln for ln in fig.axes[0].get_lines() if ln.get_label() == "trajectory")
    np.testing.assert_array_equal(traj.get_xydata(), np.asarray(path))
    fig = plot.heatmap_figure(xs, ys, surf.loss, tmp_path / "heat", log=True)
    written(tmp_path / "heat")
    np.testing.assert_array_equal(
        np.asarray(fig.axes[0].collections[0].get_array()).reshape(surf.loss.shape), surf.loss
    )
    plot.surface3d_figure(xs, ys, surf.loss, tmp_path / "surface3d")
    written(tmp_path / "surface3d")


def test_sharpness_and_index_figures(tmp_path):
    steps = np.arange(0, 100, 10)
    lam = 10 + np.sqrt(steps)
    fig = plot.sharpness_figure(steps, lam, 0.1, tmp_path / "sharp")
    written(tmp_path / "sharp")
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    np.testing.assert_array_equal(lines["λ_max"].get_ydata(), lam)
    assert set(lines["2/η"].get_ydata()) == {20.0}
    losses, index = np.linspace(0.1, 1.0, 12), np.linspace(0.0, 0.3, 12)
    fig = plot.index_loss_figure(losses, index, tmp_path / "index")
    written(tmp_path / "index")
    np.testing.assert_array_equal(
        fig.axes[0].collections[0].get_offsets(), np.stack([losses, index], 1)
    )


def test_escape_figure_draws_each_run_and_its_path(tmp_path):
    from jaxscape.dynamics import Escape

    t = np.arange(30)
    runs = {
        "gd": Escape(np.stack([1e-3 * 1.1**t, 0 * t], 1), -((1e-3 * 1.1**t) ** 2), t, t, 20, True),
        "newton": Escape(np.zeros((30, 2)), np.zeros(30), t, t, -1, True),
    }
    xs = ys = np.linspace(-0.2, 0.2, 21)
    values = -(xs[None, :] ** 2) + 3 * ys[:, None] ** 2
    fig = plot.escape_figure(runs, tmp_path / "escape", surface=(xs, ys, values))
    written(tmp_path / "escape")
    curves = [ln for ln in fig.axes[1].get_lines() if ln.get_label() in runs]
    np.testing.assert_array_equal(curves[0].get_ydata(), runs["gd"].loss)
    np.testing.assert_array_equal(fig.axes[0].get_lines()[0].get_xydata(), runs["gd"].path)
    marks = [ln.get_xdata()[0] for ln in fig.axes[1].get_lines() if ln.get_linestyle() == ":"]
    assert marks == [20]  # gd's escape step; newton never escaped
