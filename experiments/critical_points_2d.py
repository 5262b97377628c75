"""Critical points in two dimensions, and who escapes a saddle (Dauphin et al. 2014).

Claim. The textbook 2-D critical points are told apart by the Hessian only when it is
non-singular: the bowl ``x² + 3y²`` (minimum, eigenvalues 2, 6) and the saddle ``-x² + 3y²``
(eigenvalues -2, 6) are decided by their signs, but ``x² + y⁴`` (a minimum) and ``x² - y⁴``
(a saddle) share the Hessian ``diag(2, 0)``, and ``-x⁴ - y⁴`` (a maximum) and the monkey saddle
``x³ - 3xy²`` share the zero Hessian: a second-order test must answer "degenerate" there and
only higher-order terms decide. Near the non-degenerate saddle ``-x² + 3y²``, Newton's method
(step ``-H⁻¹g``) is attracted to the saddle, gradient descent leaves it at the rate
``1 + η|λ_min|`` per step (slowly when ``|λ_min|`` is small), and saddle-free Newton
(``-|H|⁻¹g``) leaves it at a rate independent of ``|λ_min|`` (Dauphin, Pascanu, Gulcehre, Cho,
Ganguli & Bengio 2014, "Identifying and attacking the saddle point problem in high-dimensional
non-convex optimization", NeurIPS; Sec. 4 and Fig. 2).

What this script measures, with the library's pieces:

- ``classify`` stage: for the six examples of ``toys.critical_point_examples`` (``quadratic_bowl``,
  ``quadratic_saddle``, ``degenerate_minimum``, ``degenerate_saddle``, ``quartic_maximum``,
  ``monkey_saddle``) the dense Hessian eigenvalues and ``critical.classify``'s verdict without
  (``probe=False``) and with the higher-order probe, against the known kind; and the loss on a
  grid (``landscape.surface``) for the contour figure.
- ``escape`` stage: ``dynamics.escape_saddle`` on ``-x² + 3y²`` from ``(x₀, y₀)`` with GD, Newton
  and saddle-free Newton (``dynamics.saddle_optimizers``): escape step (first step with the loss
  ``drop`` below the saddle's), final distance from the saddle, and GD's escape step against the
  closed form ``dynamics.gd_escape_time``.
- ``sweep`` stage: the same on ``-a x² + 3y²`` (the toy composed with ``x → √a x``) for several
  ``a``: GD's escape step grows like ``1/|λ_min|``, saddle-free Newton's does not.

Figures: ``surfaces.png`` (the six contour plots annotated with eigenvalues and verdicts) and
``escape.png`` (paths on the contours and loss gap against step, ``plot.escape_figure``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxscape import critical, dynamics, experiment, landscape, toys

NAME = "critical_points_2d"
EXAMPLES = (
    "quadratic_bowl",
    "quadratic_saddle",
    "degenerate_minimum",
    "degenerate_saddle",
    "quartic_maximum",
    "monkey_saddle",
)
FORMULAS = {
    "quadratic_bowl": "x² + 3y²",
    "quadratic_saddle": "−x² + 3y²",
    "degenerate_minimum": "x² + y⁴",
    "degenerate_saddle": "x² − y⁴",
    "quartic_maximum": "−x⁴ − y⁴",
    "monkey_saddle": "x³ − 3xy²",
}
OPTIMIZERS = ("gd", "newton", "saddle_free_newton")
QUICK = {
    "grid_points": 41,
    "span": 1.0,
    "probe_directions": 16,
    "start": [1e-3, 0.5],
    "learning_rate": 0.05,
    "drop": 1e-2,
    "num_steps": 60,
    "sweep_scales": [0.5],
    "sweep_steps": 110,
}
FULL = {
    **QUICK,
    "grid_points": 161,
    "probe_directions": 64,
    "num_steps": 100,
    "sweep_scales": [1.0, 0.5, 0.25, 0.1],
    "sweep_steps": 650,
}


def _examples():
    every = toys.critical_point_examples()
    return {name: every[name] for name in EXAMPLES}


def compute_classify(cfg, key):
    """Eigenvalues, verdicts without / with the probe, and loss surfaces of the six examples."""
    xs = jnp.linspace(-cfg["span"], cfg["span"], cfg["grid_points"])
    results, arrays = {}, {"xs": np.asarray(xs)}
    for i, (name, ex) in enumerate(_examples().items()):
        k = jax.random.fold_in(key, i)
        plain = critical.classify(ex.loss_fn, ex.point, None, key=k, probe=False)
        probed = critical.classify(
            ex.loss_fn, ex.point, None, key=k, num_probe_directions=cfg["probe_directions"]
        )
        exact = np.linalg.eigvalsh(np.asarray(ex.hessian))
        p = probed.probe
        results[name] = {
            "formula": FORMULAS[name],
            "eigenvalues": plain.eigenvalues,
            "exact_eigenvalues": exact,
            "eigenvalue_error": float(np.max(np.abs(plain.eigenvalues - exact))),
            "grad_norm": plain.grad_norm,
            "degenerate": ex.degenerate,
            "kind_without_probe": plain.kind,
            "kind_with_probe": probed.kind,
            "probe": None if p is None else {
                "kind": p.kind, "radius": p.radius, "num_directions": p.num_directions,
                "min_change": p.min_change, "max_change": p.max_change, "noise": p.noise,
            },
            "expected": ex.kind,
            "agree": probed.kind == ex.kind,
            "agree_without_probe": plain.kind == ex.kind,
        }  # fmt: skip
        e1, e2 = jnp.eye(2, dtype=ex.point.dtype)
        surf = landscape.surface(ex.loss_fn, ex.point, e1, e2, None, xs, xs)
        arrays[f"surface_{name}"] = np.asarray(surf.loss)
    return results, arrays


def _escape_runs(loss_fn, point, cfg, num_steps, names):
    opts = dynamics.saddle_optimizers(jax.random.key(0), cfg["learning_rate"])
    start = point + jnp.asarray(cfg["start"], point.dtype)
    with jax.numpy_dtype_promotion("standard"):  # optax's sgd mixes weak and strong floats
        return dynamics.escape_saddle(
            loss_fn, point, start, optimizers={n: opts[n] for n in names},
            num_steps=num_steps, drop=cfg["drop"],
        )  # fmt: skip


def _step(run) -> int | None:
    return None if run.escape_step < 0 else int(run.escape_step)


def compute_escape(cfg):
    """GD, Newton and saddle-free Newton from near the saddle of ``-x² + 3y²``."""
    ex = toys.critical_point_examples()["quadratic_saddle"]
    runs = _escape_runs(ex.loss_fn, ex.point, cfg, cfg["num_steps"], OPTIMIZERS)
    lam_min = float(np.linalg.eigvalsh(np.asarray(ex.hessian))[0])
    closed = dynamics.gd_escape_time(lam_min, cfg["start"][0], cfg["learning_rate"], cfg["drop"])
    results = {
        "lambda_min": lam_min,
        "gd_closed_form": closed,
        "optimizers": {
            name: {
                "escape_step": _step(run),
                "final_distance": float(run.distance[-1]),
                "min_distance": float(run.distance.min()),
                "final_loss_gap": float(run.loss[-1] - float(ex.loss_fn(ex.point))),
                "finite": run.finite,
            }
            for name, run in runs.items()
        },
    }
    arrays = {}
    for name, run in runs.items():
        for field in ("path", "loss", "grad_norm", "distance"):
            arrays[f"{name}.{field}"] = np.asarray(getattr(run, field))
        arrays[f"{name}.meta"] = np.asarray([run.escape_step, int(run.finite)])
    return results, arrays


def compute_sweep(cfg):
    """Escape steps of GD and saddle-free Newton on ``-a x² + 3y²`` for each ``a``."""
    ex = toys.critical_point_examples()["quadratic_saddle"]
    rows = []
    for a in cfg["sweep_scales"]:
        scale = jnp.asarray([math.sqrt(a), 1.0], ex.point.dtype)

        def loss_fn(params, batch=None, scale=scale):
            return toys.quadratic_saddle(params * scale, batch)

        runs = _escape_runs(
            loss_fn, ex.point, cfg, cfg["sweep_steps"], ("gd", "saddle_free_newton")
        )
        lam = -2.0 * a
        rows.append(
            {
                "a": a,
                "lambda_min": lam,
                "gd": _step(runs["gd"]),
                "gd_closed_form": dynamics.gd_escape_time(
                    lam, cfg["start"][0], cfg["learning_rate"], cfg["drop"]
                ),
                "saddle_free_newton": _step(runs["saddle_free_newton"]),
            }
        )
    return {"rows": rows}, {}


def _runs_from(arrays):
    runs = {}
    for name in OPTIMIZERS:
        step, finite = (int(v) for v in arrays[f"{name}.meta"])
        runs[name] = dynamics.Escape(
            path=arrays[f"{name}.path"],
            loss=arrays[f"{name}.loss"],
            grad_norm=arrays[f"{name}.grad_norm"],
            distance=arrays[f"{name}.distance"],
            escape_step=step,
            finite=bool(finite),
        )
    return runs


def surfaces_figure(results, arrays):
    import matplotlib.pyplot as plt

    xs = arrays["xs"]
    fig, axes = plt.subplots(2, 3, figsize=(11, 7.4))
    for ax, name in zip(axes.ravel(), EXAMPLES, strict=True):
        r, values = results[name], arrays[f"surface_{name}"]
        ax.contourf(xs, xs, values, levels=25, cmap="viridis")
        ax.contour(xs, xs, values, levels=[0.0], colors="w", linewidths=0.8)
        ax.plot(0, 0, "r+", markersize=12, mew=2)
        ax.set_aspect("equal")
        ax.set_title(f"{name}\nf = {r['formula']}", fontsize=10)
        lam = ", ".join(f"{v:+.3g}" for v in r["eigenvalues"])
        mark = "✓" if r["agree"] else "✗"
        text = (
            f"λ(H) = ({lam})\nHessian test: {r['kind_without_probe']}\n"
            f"with probe: {r['kind_with_probe']}\ntruth: {r['expected']} {mark}"
        )
        ax.text(
            0.03, 0.03, text, transform=ax.transAxes, fontsize=8, va="bottom",
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "0.7"},
        )  # fmt: skip
        ax.tick_params(labelsize=7)
    fig.suptitle(
        "2-D critical points at the origin: Hessian eigenvalues and classify() verdicts "
        "(white: level set f = 0)",
        fontsize=11,
    )
    return fig


def escape_plot(escape, arrays, surface, start):
    from jaxscape import plot

    runs = _runs_from(arrays)
    fig = plot.escape_figure(runs, saddle_loss=0.0, surface=surface)
    left, right = fig.axes[0], fig.axes[1]
    right.set_ylim(-1e3, 2.0)
    right.axvline(escape["gd_closed_form"], color="k", linestyle="--", linewidth=0.8)
    right.set_title(
        f"escape = loss ≤ saddle − drop; dashed: GD closed form ({escape['gd_closed_form']})",
        fontsize=9,
    )
    lines = [
        f"{n}: escape step {o['escape_step']}, final dist {o['final_distance']:.2g}"
        for n, o in escape["optimizers"].items()
    ]
    right.text(
        0.3, 0.8, "\n".join(lines), transform=right.transAxes, fontsize=8, va="top",
        bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "0.7"},
    )  # fmt: skip
    left.legend(left.get_lines()[: len(runs)], list(runs), fontsize=8, loc="lower left")
    where = f"({start[0]:g}, {start[1]:g})"
    left.set_title(f"paths from {where} on f = −x² + 3y²  (x: saddle)", fontsize=9)
    fig.suptitle("Near a saddle: Newton is attracted, GD escapes slowly, saddle-free Newton fast")
    return fig


def main(argv=None) -> int:
    args = experiment.parser(NAME, __doc__).parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # classify's tolerances are set for float64
    exp = experiment.Experiment(NAME, args, config=QUICK if args.quick else FULL)
    cfg, key = exp.config, jax.random.key(args.seed)
    cls = exp.stage("classify", {}, lambda: compute_classify(cfg, key))
    esc = exp.stage("escape", {}, lambda: compute_escape(cfg))
    sweep = exp.stage("sweep", {}, lambda: compute_sweep(cfg))

    exp.figure(surfaces_figure(cls.results, cls.arrays), "surfaces")
    xs = cls.arrays["xs"]
    surface = (xs, xs, cls.arrays["surface_quadratic_saddle"])
    exp.figure(escape_plot(esc.results, esc.arrays, surface, cfg["start"]), "escape")

    examples = cls.results
    opts = esc.results["optimizers"]
    gd, sfn, newton = opts["gd"], opts["saddle_free_newton"], opts["newton"]
    summary = {
        "all_agree_with_probe": all(r["agree"] for r in examples.values()),
        "hessian_test_undecided_exactly_on_degenerate": all(
            (r["kind_without_probe"] == "degenerate") == r["degenerate"] for r in examples.values()
        ),
        "degenerate_pair_same_eigenvalues": bool(
            np.allclose(
                examples["degenerate_minimum"]["eigenvalues"],
                examples["degenerate_saddle"]["eigenvalues"],
            )
        ),
        "newton_attracted": newton["escape_step"] is None and newton["final_distance"] < 1e-6,
        "sfn_faster_than_gd": sfn["escape_step"] is not None
        and (gd["escape_step"] is None or sfn["escape_step"] < gd["escape_step"]),
        "gd_matches_closed_form": gd["escape_step"] is not None
        and abs(gd["escape_step"] - esc.results["gd_closed_form"]) <= 1,
    }
    for name, r in examples.items():
        exp.say(
            f"  {name:19s} λ={np.round(r['eigenvalues'], 6)} hessian={r['kind_without_probe']:10s}"
            f" probe={r['kind_with_probe']:8s} truth={r['expected']:8s} agree={r['agree']}"
        )
    for name, o in opts.items():
        exp.say(
            f"  {name:19s} escape step={o['escape_step']} final distance={o['final_distance']:.3g}"
        )
    exp.say(f"  GD closed form: {esc.results['gd_closed_form']}; sweep: {sweep.results['rows']}")
    exp.finish(
        {
            "summary": summary,
            "examples": examples,
            "escape": esc.results,
            "sweep": sweep.results["rows"],
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
