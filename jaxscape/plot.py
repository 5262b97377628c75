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
