"""Matplotlib figures for jaxscape results. Plotting never traces: inputs are NumPy arrays or
result tuples already computed."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are written to files

import matplotlib.pyplot as plt
import numpy as np


def plot_density(
    ax,
    grid,
    density,
    *,
    top: Sequence[float] = (),
    bottom: Sequence[float] = (),
    label: str | None = None,
    log: bool = True,
):
    """Draw a spectral density (``Density.grid``, ``Density.density``) on ``ax``.

    ``top`` / ``bottom`` eigenvalues (e.g. from ``eigsh``) are marked as ticks on the axis.
    With ``log`` the density axis is logarithmic (Hessian spectra have a bulk near zero and a
    few outliers, Ghorbani et al. 2019), floored at 1e-6 of the peak.
    """
    grid, density = np.asarray(grid), np.asarray(density)
    if log:
        density = np.maximum(density, 1e-6 * density.max())
    (line,) = ax.plot(grid, density, label=label)
    if log:
        ax.set_yscale("log")
    for values, marker in ((top, "v"), (bottom, "^")):
        values = np.asarray(values)
        if values.size:
            ax.plot(
                values,
                np.full(values.shape, density.max()),
                marker,
                color=line.get_color(),
                linestyle="none",
                markersize=6,
            )
    ax.axvline(0.0, color="0.6", linewidth=0.8)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density" + (" (log)" if log else ""))
    return ax


def spectrum_figure(panels: dict[str, dict], path, *, title: str | None = None) -> None:
    """One panel per point: ``panels[name] = {"grid", "density", "top", "bottom"}``; saves PNG."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (name, p) in zip(axes[0], panels.items(), strict=True):
        plot_density(ax, p["grid"], p["density"], top=p.get("top", ()), bottom=p.get("bottom", ()))
        ax.set_title(name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def loss_curve_figure(losses, path, *, title: str = "training loss") -> None:
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(np.arange(len(losses)), np.asarray(losses))
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- landscape figures


def save(fig, path) -> None:
    """Write ``fig`` as ``path`` with suffix ``.png`` (120 dpi) and ``.pdf``; close it."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path.with_suffix(".png"), dpi=120)
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)


def _finish(fig, ax, path, title):
    if title:
        ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        save(fig, path)
    return fig


def profile_figure(
    curves: dict[str, tuple],
    path=None,
    *,
    xlabel: str = "α",
    ylabel: str = "loss",
    log: bool = False,
    marks: Sequence[float] = (0.0, 1.0),
    title: str | None = None,
):
    """1-D profiles on one axis: ``curves[label] = (coords, values)`` (e.g. the ``Profile`` of
    ``interpolate`` for train and test, or several paths). ``marks`` draws dotted vertical lines
    (the end points α = 0, 1). Returns the figure; with ``path`` also writes PNG and PDF."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, (coords, values) in curves.items():
        ax.plot(np.asarray(coords), np.asarray(values), label=label)
    for m in marks:
        ax.axvline(m, color="0.6", linestyle=":", linewidth=0.8)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(curves) > 1:
        ax.legend()
    return _finish(fig, ax, path, title)


def _levels(values: np.ndarray, num: int, log: bool) -> np.ndarray:
    finite = values[np.isfinite(values)]
    lo, hi = finite.min(), finite.max()
    if log:
        lo = max(lo, hi * 1e-8, np.finfo(float).tiny)
        return np.geomspace(lo, hi, num)
    return np.linspace(lo, hi, num)


def contour_figure(
    xs,
    ys,
    values,
    path=None,
    *,
    trajectory=None,
    levels: int = 30,
    log: bool = False,
    xlabel: str = "direction 1",
    ylabel: str = "direction 2",
    label: str = "loss",
    title: str | None = None,
):
    """Contours of ``values`` (shape ``(len(ys), len(xs))``, as ``surface`` returns) with an
    optional ``trajectory`` ``(T, 2)`` (``project``) drawn over it, its start marked ``o`` and
    its end ``*``. ``log`` spaces the levels geometrically."""
    from matplotlib.colors import LogNorm

    values = np.asarray(values)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    lv = _levels(values, levels, log)
    cs = ax.contour(
        np.asarray(xs),
        np.asarray(ys),
        values,
        levels=lv,
        norm=LogNorm(lv[0], lv[-1]) if log else None,
        cmap="viridis",
    )
    bar = fig.colorbar(cs, ax=ax, label=label)
    bar.set_ticks(
        lv[:: max(1, len(lv) // 6)], labels=[f"{v:.3g}" for v in lv[:: max(1, len(lv) // 6)]]
    )
    if trajectory is not None:
        t = np.asarray(trajectory)
        ax.plot(t[:, 0], t[:, 1], "-", color="C3", linewidth=1.2, label="trajectory")
        ax.plot(t[0, 0], t[0, 1], "o", color="C3", label="start")
        ax.plot(t[-1, 0], t[-1, 1], "*", color="C3", markersize=12, label="end")
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return _finish(fig, ax, path, title)


def heatmap_figure(
    xs,
    ys,
    values,
    path=None,
    *,
    log: bool = False,
    label: str = "loss",
    xlabel: str = "direction 1",
    ylabel: str = "direction 2",
    title: str | None = None,
):
    """``values`` on the ``(xs, ys)`` grid as a colour map, optionally on a log colour scale."""
    from matplotlib.colors import LogNorm

    values = np.asarray(values)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    norm = None
    if log:
        lv = _levels(values, 2, True)
        norm = LogNorm(lv[0], lv[-1])
    mesh = ax.pcolormesh(
        np.asarray(xs), np.asarray(ys), values, norm=norm, cmap="viridis", shading="nearest"
    )
    fig.colorbar(mesh, ax=ax, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return _finish(fig, ax, path, title)


def surface3d_figure(
    xs,
    ys,
    values,
    path=None,
    *,
    label: str = "loss",
    title: str | None = None,
):
    """A 3-D surface plot of ``values`` over the ``(xs, ys)`` grid (Li et al.'s Fig. 1 style)."""
    fig = plt.figure(figsize=(6, 4.5))
    ax = fig.add_subplot(projection="3d")
    gx, gy = np.meshgrid(np.asarray(xs), np.asarray(ys))
    ax.plot_surface(gx, gy, np.asarray(values), cmap="viridis", linewidth=0, antialiased=True)
    ax.set_xlabel("direction 1")
    ax.set_ylabel("direction 2")
    ax.set_zlabel(label)
    return _finish(fig, ax, path, title)


def sharpness_figure(
    steps,
    eigenvalues,
    learning_rate: float,
    path=None,
    *,
    title: str | None = None,
):
    """The top Hessian eigenvalue over training with the ``2/η`` stability line (Cohen et al.
    2021): gradient descent with step ``η`` diverges along directions sharper than ``2/η``."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(np.asarray(steps), np.asarray(eigenvalues), label="λ_max")
    ax.axhline(2.0 / learning_rate, color="k", linestyle="--", linewidth=1, label="2/η")
    ax.set_xlabel("step")
    ax.set_ylabel("top Hessian eigenvalue")
    ax.legend()
    return _finish(fig, ax, path, title)


def index_loss_figure(losses, indices, path=None, *, title: str | None = None):
    """Index (fraction of negative Hessian eigenvalues) against loss at critical points, the
    plot in which Dauphin et al. (2014) saw the index grow with the loss."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(np.asarray(losses), np.asarray(indices), s=14)
    ax.set_xlabel("loss")
    ax.set_ylabel("index (fraction of negative eigenvalues)")
    return _finish(fig, ax, path, title)


def escape_figure(runs, path=None, *, saddle_loss: float = 0.0, surface=None, title=None):
    """Runs of ``dynamics.escape_saddle``: ``L(θ_t) - L(θ*)`` against step for each optimizer
    (symmetric-log scale, escape steps marked ``|``), and with ``surface=(xs, ys, values)`` for
    a 2-D problem, the paths over the loss contours."""
    panels = 2 if surface is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), squeeze=False)
    ax = axes[0, -1]
    for i, (name, run) in enumerate(runs.items()):
        gap = np.asarray(run.loss) - saddle_loss
        ax.plot(np.arange(gap.size), gap, color=f"C{i}", label=name)
        if run.escape_step >= 0:
            ax.axvline(run.escape_step, color=f"C{i}", linestyle=":", linewidth=1)
    ax.set_yscale("symlog", linthresh=1e-6)
    ax.set_xlabel("step")
    ax.set_ylabel("loss − saddle loss")
    ax.legend(fontsize=8)
    if surface is not None:
        xs, ys, values = (np.asarray(a) for a in surface)
        left = axes[0, 0]
        left.contour(xs, ys, values, levels=30, cmap="viridis", linewidths=0.7)
        for i, run in enumerate(runs.values()):
            p = np.asarray(run.path)
            left.plot(p[:, 0], p[:, 1], ".-", color=f"C{i}", markersize=3, linewidth=1)
        left.plot(0, 0, "kx")
        left.set_xlim(xs.min(), xs.max())
        left.set_ylim(ys.min(), ys.max())
        left.set_aspect("equal")
    return _finish(fig, ax, path, title)
