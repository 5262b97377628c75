"""The written part of ``jaxscape report``: the summary sentences, and the files of a run
folder made from its recorded stages — figures (PNG), ``arrays.npz``, ``params-*.npz``,
``results.json`` and ``report.html`` (one page with the figures embedded, each linked to its
PNG file)."""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxscape import plot
from jaxscape.connectivity import barrier
from jaxscape.runfolder import save_params


def write(folder: Path, results: dict, records: dict, points: dict, problem) -> None:
    """Write every output file; ``results["files"]`` lists them (all exist afterwards)."""
    files = []
    for name, params in points.items():
        save_params(folder / f"params-{name}.npz", params)
        files.append(f"params-{name}.npz")
    arrays = {f"{stage}/{k}": v for stage, rec in records.items() for k, v in rec.arrays.items()}
    tmp = folder / ".arrays.npz.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, folder / "arrays.npz")
    files.append("arrays.npz")
    figures = _figures(folder, records)
    files += figures
    results["files"] = ["report.html", "results.json", *files]
    _atomic(folder / "results.json", json.dumps(results, indent=1, allow_nan=False))
    embedded = {name: base64.b64encode((folder / name).read_bytes()).decode() for name in figures}
    _atomic(folder / "report.html", _page(results, embedded))


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- summary


def _line_summary(name: str, coords, losses) -> dict:
    """Monotonicity of the loss on [0, 1] of a line, its barrier, and its minimum."""
    coords, losses = np.asarray(coords), np.asarray(losses, float)
    inside = (coords >= -1e-12) & (coords <= 1 + 1e-12)
    seg = losses[inside]
    rises = np.diff(seg)
    tol = 1e-6 * (1 + np.abs(seg).max())
    monotone = bool(np.all(rises <= tol))
    bar = float(barrier(jnp.asarray(seg), jnp.asarray(coords[inside])))
    out = {
        "monotone": monotone,
        "largest_rise": float(max(rises.max(initial=0.0), 0.0)),
        "barrier": bar,
        "loss_start": float(seg[0]),
        "loss_end": float(seg[-1]),
        "min_loss": float(losses.min()),
        "argmin": float(coords[int(np.argmin(losses))]),
    }
    if name == "sgd-adam":
        out["text"] = f"SGD↔Adam barrier {bar:.4g}"
    else:
        out["text"] = f"{name}: monotone {'yes' if monotone else 'no'}"
    return out


_NAMES = {"sgd": "SGD", "adam": "Adam"}


def summarize(stages: Mapping[str, Mapping], opts: Any) -> list[str]:
    """Plain sentences on what the recorded stages show (the report's summary)."""
    lines = []
    for name in opts.optimizers:
        t = stages.get(f"train-{name}")
        if t is None:
            continue
        if not t.get("finite"):
            lines.append(f"Training with {_NAMES.get(name, name)} diverged: {t['line']}.")
            continue
        acc = t.get("test_accuracy")
        lines.append(
            f"{_NAMES.get(name, name)} reached train loss {t['train_loss']:.4g}"
            + (f", test loss {t['test_loss']:.4g}" if "test_loss" in t else "")
            + (f", test accuracy {100 * acc:.1f}%" if acc is not None else "")
            + f" after {t['steps_done']} steps."
        )
    interp = stages.get("interpolation", {})
    for name, r in interp.items():
        if not isinstance(r, Mapping) or "monotone" not in r:
            continue
        if name == "sgd-adam":
            lines.append(
                f"Straight line from the SGD to the Adam solution: barrier {r['barrier']:.4g} "
                f"above the linear interpolation of the end losses (train)."
            )
        else:
            where = name.removeprefix("init-")
            lines.append(
                f"Train loss decreases monotonically along the straight path θ₀ → θ*({where}): "
                + ("yes." if r["monotone"] else f"no (largest rise {r['largest_rise']:.3g}).")
                + f" Lowest loss on α ∈ [−0.5, 1.5] at α = {r['argmin']:.2f}."
            )
    for name, h in stages.items():
        if name.startswith("hessian-") and h.get("finite"):
            point = name.removeprefix("hessian-")
            lines.append(
                f"Hessian at {_point_label(point)}: index {100 * h['index_tol']:.2f}% "
                f"(share of eigenvalues below −{opts.index_tol:g}·λ_max; "
                f"{100 * h['index']:.2f}% below 0, which counts SLQ nodes of the bulk around 0), "
                f"λ_max {h['top'][0]:.4g}, λ_min {h['bottom'][0]:.4g}, trace {h['trace']:.4g}."
            )
    h = stages.get("hessian-sgd")
    if h and h.get("finite"):
        edge = h["top"][0] * opts.sgd_lr / 2
        lines.append(
            f"SGD: λ_max · η / 2 = {edge:.3g} at its solution "
            f"({'at or past' if edge >= 1 else 'below'} the stability edge λ_max = 2/η)."
        )
    flat = {n.removeprefix("flatness-"): f for n, f in stages.items() if n.startswith("flatness-")}
    for name, f in flat.items():
        lines.append(f"Flatness of {_point_label(name)}: {f['line'].split(': ', 1)[1]}.")
    if {"sgd", "adam"} <= set(flat):
        a, s = flat["adam"], flat["sgd"]
        if a["basin_width_mean"] and s["basin_width_mean"]:
            lines.append(
                f"Adam basin width vs SGD: {a['basin_width_mean']:.3g} vs "
                f"{s['basin_width_mean']:.3g} "
                f"(ratio {a['basin_width_mean'] / s['basin_width_mean']:.2f});"
                f" ε-sharpness {a['sharpness']:.3g} vs {s['sharpness']:.3g}."
            )
    return lines


def _point_label(name: str) -> str:
    if name == "init":
        return "θ₀ (initialization)"
    if name == "end":
        return "the given end point"
    if name.endswith("-mid"):
        return f"the middle of {_NAMES.get(name[:-4], name[:-4])} training"
    return f"θ*({_NAMES.get(name, name)})"


# --------------------------------------------------------------------------- figures


def _figures(folder: Path, records: dict) -> list[str]:
    """Draw what the recorded stages allow; returns the PNG names written."""
    import matplotlib.pyplot as plt

    out = []
    trains = {n.removeprefix("train-"): r for n, r in records.items() if n.startswith("train-")}
    if trains:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        for i, (name, rec) in enumerate(trains.items()):
            a, color = rec.arrays, f"C{i}"
            ax1.plot(a["step"], a["minibatch_loss"], color=color, alpha=0.25, linewidth=0.8)
            for split, style in (("train", "-"), ("test", "--")):
                if f"{split}_loss" in a:
                    ax1.plot(
                        a["step"], a[f"{split}_loss"], style, color=color, label=f"{name} {split}"
                    )
            ax2.plot(a["step"], a["grad_norm"], color=color, label=name)
        ax1.set(
            xlabel="step", ylabel="loss (faint: minibatch)", yscale="log", title="training curves"
        )
        ax2.set(xlabel="step", ylabel="minibatch gradient norm", yscale="log")
        ax1.legend(fontsize=7)
        ax2.legend(fontsize=8)
        out.append(_save(fig, folder, "training.png"))
    interp = records.get("interpolation")
    if interp is not None:
        a = interp.arrays
        lines = sorted({k.split("/")[0] for k in a if "/" in k})
        fig, axes = plt.subplots(1, len(lines), figsize=(5 * len(lines), 4), squeeze=False)
        for ax, name in zip(axes[0], lines, strict=True):
            coords = a["ts"] if name == "sgd-adam" else a["alphas"]
            for split, style in (("train", "-"), ("test", "--")):
                if f"{name}/{split}_loss" in a:
                    ax.plot(coords, a[f"{name}/{split}_loss"], style, label=split)
            for m in (0, 1):
                ax.axvline(m, color="0.6", linestyle=":", linewidth=0.8)
            start, end = name.split("-", 1)
            ax.set(
                xlabel="t" if name == "sgd-adam" else "α",
                ylabel="loss",
                title=f"{_sym(start)} → {_sym(end)}",
            )
            ax.legend(fontsize=8)
        out.append(_save(fig, folder, "interpolation.png"))
    for stage, rec in records.items():
        if not stage.startswith("surface-"):
            continue
        name, a = stage.removeprefix("surface-"), rec.arrays
        fig = plot.contour_figure(
            a["random/xs"],
            a["random/ys"],
            a["random/loss"],
            None,
            log=_positive(a["random/loss"]),
            xlabel="filter-normalized δ",
            ylabel="filter-normalized η",
            title=f"loss around {_sym(name)}",
        )
        out.append(_save(fig, folder, f"surface-{name}.png"))
        if "pca/loss" in a:
            ex = a["pca/explained"]
            fig = plot.contour_figure(
                a["pca/xs"],
                a["pca/ys"],
                a["pca/loss"],
                None,
                trajectory=a["pca/path"],
                log=_positive(a["pca/loss"]),
                xlabel=f"PC 1 ({100 * ex[0]:.1f}%)",
                ylabel=f"PC 2 ({100 * ex[1]:.1f}%)",
                title=f"{name} trajectory on its PCA plane",
            )
            out.append(_save(fig, folder, f"pca-{name}.png"))
    panels = {
        f"{_sym(n.removeprefix('hessian-'))} (loss {r.results['loss']:.3g})": {
            **r.arrays,
            "top": r.results["top"],
            "bottom": r.results["bottom"],
        }
        for n, r in records.items()
        if n.startswith("hessian-") and r.results.get("finite")
    }
    if panels:
        plot.spectrum_figure(panels, folder / "spectrum.png", title="Hessian spectral density")
        out.append("spectrum.png")
    return out


def _positive(values) -> bool:
    v = np.asarray(values)
    return bool(np.all(v[np.isfinite(v)] > 0))


def _save(fig, folder: Path, name: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    return name


def _sym(name: str) -> str:
    if name == "init":
        return "θ₀"
    if name.endswith("-mid"):
        return f"{name.removesuffix('-mid')} midway"
    return f"θ*({name})" if name in ("sgd", "adam") else name


# --------------------------------------------------------------------------- the page

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;margin:0.5em 0}code,pre{background:#f6f6f6;padding:2px 4px}
.err{color:#a00;font-weight:bold}
"""


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(name: str, figures: dict[str, str]) -> str:
    """The figure embedded (the page stands alone), linked to its PNG file."""
    if name not in figures:
        return ""
    e = html.escape(name)
    return f"<a href='{e}'><img src='data:image/png;base64,{figures[name]}' alt='{e}'></a>"


def _page(r: dict, figures: dict[str, str]) -> str:
    e = html.escape
    p, st = r["problem"], r["stages"]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>jaxscape report: "
        f"{e(p['name'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>Loss landscape of {e(p['name'])}</h1>",
        f"<p>{e(p['description'] or '')}</p>",
        f"<p>{p['num_params']:,} parameters, {p['num_train']:,} training and {p['num_test']:,} "
        f"test examples, {e(p['dtype'])}.</p>",
    ]
    if r["errors"]:
        parts += ["<h2>Errors</h2><ul>"]
        parts += [f"<li class='err'>{e(x)}</li>" for x in r["errors"]] + ["</ul>"]
    parts += ["<h2>Summary</h2><ul>"] + [f"<li>{e(s)}</li>" for s in r["summary"]] + ["</ul>"]
    trains = {k.removeprefix("train-"): v for k, v in st.items() if k.startswith("train-")}
    if trains:
        parts.append("<h2>Training</h2>")
        parts.append(
            _table(
                ["optimizer", "lr", "steps", "train loss", "test loss", "test accuracy"],
                [
                    [
                        n,
                        t["lr"],
                        t["steps_done"],
                        t.get("train_loss", "—"),
                        t.get("test_loss", "—"),
                        t.get("test_accuracy", "—"),
                    ]
                    for n, t in trains.items()
                ],
            )
        )
        parts.append(_img("training.png", figures))
    if "interpolation" in st:
        parts.append("<h2>Interpolation (Goodfellow, Vinyals &amp; Saxe 2015)</h2>")
        rows = [
            [
                k,
                "yes" if v["monotone"] else "no",
                v["largest_rise"],
                v["barrier"],
                v["loss_start"],
                v["loss_end"],
                v["min_loss"],
                v["argmin"],
            ]
            for k, v in st["interpolation"].items()
            if isinstance(v, dict) and "monotone" in v
        ]
        header = [
            "line",
            "monotone on [0,1]",
            "largest rise",
            "barrier",
            "loss at 0",
            "loss at 1",
            "lowest loss",
            "at",
        ]
        parts += [_table(header, rows), _img("interpolation.png", figures)]
    surfaces = [k.removeprefix("surface-") for k in st if k.startswith("surface-")]
    if surfaces:
        parts.append("<h2>Surfaces (Li et al. 2018)</h2>")
        for name in surfaces:
            parts.append(f"<p>{e(st['surface-' + name]['line'])}</p>")
            parts += [_img(f"surface-{name}.png", figures), _img(f"pca-{name}.png", figures)]
    hess = {k.removeprefix("hessian-"): v for k, v in st.items() if k.startswith("hessian-")}
    if hess:
        parts.append("<h2>Hessian spectrum</h2>")
        rows = [
            [
                _sym(n),
                h["loss"],
                h["grad_norm"],
                h["top"][0],
                h["bottom"][0],
                h["trace"],
                h["trace_stderr"],
                f"{100 * h['index_tol']:.2f}%",
                f"{100 * h['index']:.2f}%",
                h["max_residual"],
            ]
            for n, h in hess.items()
            if h.get("finite")
        ]
        header = [
            "point",
            "loss",
            "‖∇L‖",
            "λ_max",
            "λ_min",
            "trace",
            "± (1 s.e.)",
            f"index (λ < −{r['options']['index_tol']:g}·λ_max)",
            "share λ < 0 (SLQ)",
            "eigsh residual",
        ]
        parts += [_table(header, rows), _img("spectrum.png", figures)]
        tops = [
            [
                _sym(n),
                ", ".join(f"{x:.4g}" for x in h["top"]),
                ", ".join(f"{x:.4g}" for x in h["bottom"]),
            ]
            for n, h in hess.items()
            if h.get("finite")
        ]
        parts.append(_table(["point", "top eigenvalues", "bottom eigenvalues"], tops))
    flat = {k.removeprefix("flatness-"): v for k, v in st.items() if k.startswith("flatness-")}
    if flat:
        parts.append("<h2>Sharpness and basin width</h2>")
        rows = [
            [
                _sym(n),
                f["loss"],
                f["sharpness"],
                "—" if f["basin_width_mean"] is None else f["basin_width_mean"],
                "—" if f["basin_width_std"] is None else f["basin_width_std"],
                f["basin_reached"],
            ]
            for n, f in flat.items()
        ]
        header = ["point", "loss", "ε-sharpness (Keskar)", "basin width", "± (std)", "reached"]
        parts.append(_table(header, rows))
    parts.append("<h2>Run</h2>")
    parts.append(f"<p>Command: <code>{e(' '.join(r['command'] or []))}</code></p>")
    parts.append(f"<p>Device: {e(r['device']['summary'])}. Versions: ")
    parts.append(", ".join(f"{k} {e(v)}" for k, v in r["versions"].items()) + ".</p>")
    rows = [[k, v["seconds"], "yes" if v["cached"] else "no"] for k, v in st.items()]
    parts.append(_table(["stage", "seconds (when computed)", "loaded from folder"], rows))
    files = [f for f in r["files"] if f != "report.html"]
    parts.append("<p>Files: " + ", ".join(f"<a href='{e(f)}'>{e(f)}</a>" for f in files) + "</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
