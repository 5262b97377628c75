"""``jaxscape report``: one call from a problem to a landscape report in a resumable run folder.

``run(problem, out)`` trains the problem's initialization ``θ₀`` with SGD and with Adam
(recording both trajectories) and then measures, for each solution ``θ*``:

- **training curves**: full-batch train and test loss (and accuracy) along the trajectory;
- **interpolation** (Goodfellow, Vinyals & Saxe 2015): loss along ``(1−α)θ₀ + αθ*`` for
  ``α ∈ [−0.5, 1.5]`` on train and test data, and along the line between the SGD and the Adam
  solution, with the barrier ``max_t L(t) − [(1−t)L(0) + tL(1)]``;
- **surfaces** (Li et al. 2018): the loss on a plane of two random filter-normalized directions
  around ``θ*``, and on the plane of the trajectory's two principal directions with the
  trajectory projected onto it;
- **Hessian**: top-k and bottom-k eigenvalues (Lanczos), trace (Hutch++), spectral density and
  index (SLQ) at ``θ₀``, halfway through training and at ``θ*``;
- **flatness**: Keskar et al.'s ε-sharpness and the basin width along filter-normalized random
  directions (Im, Tao & Branson 2016);
- a short written **summary** of what the numbers say.

Every stage is a ``RunFolder`` stage: rerunning with the same folder loads finished stages,
restarts an interrupted one (training resumes from its last checkpoint) and recomputes after a
changed option only the stages downstream of it. ``report.html``, ``results.json``,
``arrays.npz``, the figures and the analysed parameters (``params-*.npz``, readable with
``load_params``) are rewritten at the end of every run from the recorded stages.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from jaxscape import landscape as ls
from jaxscape import spectrum as sp
from jaxscape._report_html import _line_summary, summarize
from jaxscape._report_html import write as _write
from jaxscape._util import chunked_map
from jaxscape.curvature import hessian_operator
from jaxscape.problems import Problem
from jaxscape.runfolder import RunFolder, StageRecord, _jsonable, device_info, versions
from jaxscape.train import _Progress, fit

STAGES = ("train", "interpolation", "surface", "hessian", "flatness")
OPTIMIZERS = ("sgd", "adam")


@dataclasses.dataclass(frozen=True)
class ReportOptions:
    """What ``report`` computes; every field is also a ``jaxscape report`` flag and a key of the
    ``--config`` TOML file (``sgd_lr`` is ``--sgd-lr``).

    Attributes:
      seed: PRNG seed of minibatch order, directions and probes.
      stages: the stages to run, a subset of ``STAGES`` (``train`` is needed by the others
        unless ``end`` params are given).
      optimizers: which of ``"sgd"``, ``"adam"`` to train.
      steps: optimizer steps per run.
      batch_size: minibatch size; ``None`` (or 0) is full-batch.
      sgd_lr, momentum, adam_lr: the optimizers' settings (SGD with ``momentum=0`` is plain SGD).
      record_every: steps between recorded trajectory points (default: about 50 records).
      alphas: points on each interpolation line, ``4m + 1`` so that α = 0 and 1 are on it.
      surface_points: grid points per axis of each surface.
      surface_span: half-width of the random-direction plane, in filter-normalized units.
      k: eigenvalues from each end of the Hessian spectrum.
      lanczos_iters: Lanczos steps of ``eigsh`` and of each SLQ probe.
      slq_probes: SLQ probes for the density and index.
      trace_matvecs: Hutch++ matrix-vector products for the trace.
      index_tol: an eigenvalue counts as negative below ``-index_tol · λ_max`` (the SLQ nodes of
        the bulk near 0 straddle 0; the plain index with tolerance 0 is reported too).
      sharpness_epsilon, sharpness_steps: box size and ascent steps of ε-sharpness.
      basin_rise: the loss increase that marks a basin's rim.
      basin_directions, basin_max_distance: directions of the basin width and the largest
        distance searched (filter-normalized units: 1 moves every filter by its own norm).
      chunk_size: grid points evaluated together (memory).
    """

    seed: int = 0
    stages: tuple[str, ...] = STAGES
    optimizers: tuple[str, ...] = OPTIMIZERS
    steps: int = 500
    batch_size: int | None = 128
    sgd_lr: float = 0.1
    momentum: float = 0.0
    adam_lr: float = 1e-3
    record_every: int | None = None
    alphas: int = 41
    surface_points: int = 21
    surface_span: float = 1.0
    k: int = 5
    lanczos_iters: int = 80
    slq_probes: int = 8
    trace_matvecs: int = 60
    index_tol: float = 1e-3
    sharpness_epsilon: float = 1e-3
    sharpness_steps: int = 20
    basin_rise: float = 0.1
    basin_directions: int = 10
    basin_max_distance: float = 2.0
    chunk_size: int | None = 32

    def validated(self) -> ReportOptions:
        """A copy with lists made tuples; raises ``ValueError`` naming the bad option."""
        opts = dataclasses.replace(
            self,
            stages=tuple(self.stages),
            optimizers=tuple(self.optimizers),
            batch_size=self.batch_size or None,
        )
        for name, choices in (("stages", STAGES), ("optimizers", OPTIMIZERS)):
            bad = [s for s in getattr(opts, name) if s not in choices]
            if (
                bad
                or not getattr(opts, name)
                or len(set(getattr(opts, name))) < len(getattr(opts, name))
            ):
                raise ValueError(
                    f"--{name} must be distinct names from {', '.join(choices)}; got "
                    f"{', '.join(map(str, getattr(opts, name))) or 'nothing'}."
                )
        for name in (
            "steps",
            "alphas",
            "surface_points",
            "k",
            "lanczos_iters",
            "slq_probes",
            "trace_matvecs",
            "sharpness_steps",
            "basin_directions",
        ):
            _check_count(name, getattr(opts, name))
        for name in ("batch_size", "record_every", "chunk_size"):
            if getattr(opts, name) is not None:
                _check_count(name, getattr(opts, name))
        if opts.alphas < 5 or (opts.alphas - 1) % 4:
            raise ValueError(
                f"--alphas must be 4m + 1 >= 5 (so that the grid on [-0.5, 1.5] holds α = 0 and "
                f"α = 1), e.g. 21 or 41; got {opts.alphas}."
            )
        for name in (
            "sgd_lr",
            "adam_lr",
            "surface_span",
            "sharpness_epsilon",
            "basin_rise",
            "basin_max_distance",
        ):
            value = getattr(opts, name)
            if not (isinstance(value, int | float) and np.isfinite(value) and value > 0):
                raise ValueError(f"--{_flag(name)} must be a positive number, got {value!r}.")
        if not 0 <= opts.momentum < 1 or not 0 <= opts.index_tol < 1:
            raise ValueError("--momentum and --index-tol must be in [0, 1).")
        if opts.record_every is not None and opts.steps % opts.record_every:
            raise ValueError(
                f"--steps ({opts.steps}) must be a multiple of --record-every "
                f"({opts.record_every})."
            )
        return opts


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"--{_flag(name)} must be an integer >= 1, got {value!r}.")


def _flag(name: str) -> str:
    return name.replace("_", "-")


class Report(NamedTuple):
    """``run``'s result: the folder, ``results.json``'s contents, and the errors (stages
    stopped by non-finite values; empty when everything ran)."""

    path: Path
    results: dict
    errors: list[str]


# --------------------------------------------------------------------------- compiled pieces


def _accuracy(apply_fn):
    def accuracy(params, batch):
        logits = apply_fn(params, batch[0])
        labels = jnp.asarray(batch[1])
        hits = jnp.argmax(logits, -1).astype(labels.dtype) == labels
        return jnp.mean(hits.astype(logits.dtype))

    return accuracy


def _metrics(apply_fn) -> dict:
    return {} if apply_fn is None else {"accuracy": _accuracy(apply_fn)}


@functools.partial(jax.jit, static_argnums=(0, 1, 4))
def _along(loss_fn, apply_fn, points, batch, chunk_size):
    """Loss (and accuracy) at every point of a stacked params pytree."""
    fns = {"loss": loss_fn, **_metrics(apply_fn)}
    return chunked_map(lambda p: {k: f(p, batch) for k, f in fns.items()}, points, chunk_size)


@functools.partial(jax.jit, static_argnums=(0, 1, 6))
def _line(loss_fn, apply_fn, a, b, batch, alphas, chunk_size):
    prof = ls.interpolate(
        loss_fn, a, b, batch, alphas, metrics=_metrics(apply_fn), chunk_size=chunk_size
    )
    return {"loss": prof.loss, **prof.metrics}


@functools.partial(jax.jit, static_argnums=(0, 7))
def _plane(loss_fn, center, d1, d2, batch, xs, ys, chunk_size):
    return ls.surface(loss_fn, center, d1, d2, batch, xs, ys, chunk_size=chunk_size).loss


@functools.partial(jax.jit, static_argnums=(0, 4))
def _spectrum(loss_fn, params, batch, key, cfg):
    """Top/bottom eigenvalues, trace and SLQ density of the Hessian at ``params``."""
    k, num_iters, num_probes, trace_matvecs, index_tol = cfg
    matvec = hessian_operator(loss_fn, params, batch)
    k_eig, k_trace, k_slq = jax.random.split(key, 3)
    both = sp.eigsh(k_eig, matvec, params, k=2 * k, which="BE", num_iters=num_iters)
    trace = sp.estimate_trace(k_trace, matvec, params, num_matvecs=trace_matvecs)
    dens = sp.spectral_density(k_slq, matvec, params, num_probes=num_probes, num_iters=num_iters)
    loss, grad = jax.value_and_grad(loss_fn)(params, batch)
    return {
        "loss": loss,
        "grad_norm": optax.tree_utils.tree_norm(grad),
        "eigenvalues": both.eigenvalues,
        "residuals": both.residuals,
        "eig_converged": both.converged,
        "trace": trace.value,
        "trace_stderr": trace.stderr,
        "index": sp.negative_fraction(dens),
        "index_tol": sp.negative_fraction(dens, tol=index_tol * jnp.abs(both.eigenvalues[-1])),
        "grid": dens.grid,
        "density": dens.density,
        "nodes": dens.nodes,
        "weights": dens.weights,
        "finite": both.finite & trace.finite & dens.finite,
    }


@functools.partial(jax.jit, static_argnums=(1, 4, 5))
def _sharpness(key, loss_fn, params, batch, epsilon, num_steps):
    res = ls.sharpness(key, loss_fn, params, batch, epsilon=epsilon, num_steps=num_steps)
    return res.value, res.max_loss, res.loss


@functools.lru_cache(maxsize=32)
def _optimizer(name: str, lr: float, momentum: float) -> optax.GradientTransformation:
    """One object per setting, so that ``fit`` reuses its compiled loop across calls."""
    if name == "sgd":
        return optax.sgd(lr, momentum=momentum or None)
    return optax.adam(lr)


# --------------------------------------------------------------------------- the report


def run(
    problem: Problem,
    out: str | Path,
    options: ReportOptions | Mapping[str, Any] | None = None,
    *,
    end: Any = None,
    command: Sequence[str] | None = None,
    quiet: bool = False,
    progress: bool | None = None,
) -> Report:
    """Analyse ``problem`` and write the report into run folder ``out`` (see the module doc).

    Args:
      problem: a ``Problem`` (``builtin_problem``, ``load_problem`` or your own).
      out: the run folder; rerunning with the same folder resumes.
      options: a ``ReportOptions`` or a dict of its fields.
      end: params for the analysis without training (``"train"`` not in ``options.stages``):
        the interpolation runs from ``problem.params`` to ``end``. ``None`` otherwise.
      command: the command line recorded in the report.
      quiet: print nothing.
      progress: show progress bars (default: when not quiet and stderr is a terminal).

    Returns:
      ``Report(path, results, errors)``; ``results`` is what ``results.json`` holds.
    """
    opts = (
        options if isinstance(options, ReportOptions) else ReportOptions(**dict(options or {}))
    ).validated()
    if problem.state is not None:
        raise ValueError(
            f"report: problem {problem.name!r} has non-trained state (BatchNorm statistics); "
            "the report does not yet track state through training. Use a model without "
            "BatchNorm."
        )
    if "train" not in opts.stages and "interpolation" in opts.stages and end is None:
        raise ValueError(
            "report: the interpolation stage needs two points: run the train stage, or pass "
            "`end` params (jaxscape interpolate --params A.npz --end B.npz)."
        )
    show = (not quiet and sys.stderr.isatty()) if progress is None else progress
    job = _Job(problem, Path(out), opts, end, command, (lambda *a: None) if quiet else print, show)
    return job.run()


class _Job:
    def __init__(self, problem, out, opts, end, command, say, show):
        self.problem, self.opts, self.say, self.show = problem, opts, say, show
        self.folder = RunFolder(out, command=command)
        self.key = jax.random.key(opts.seed)
        self.flat0, self.unravel = ravel_pytree(problem.params)
        self.end = end
        self.errors: list[str] = []
        self.records: dict[str, StageRecord] = {}
        self.fingerprint = _fingerprint(problem, end)

    # ---- plumbing

    def stage(self, name, options, compute, depends=()):
        """Run (or load) a stage, print its one-line summary, keep its record."""
        t0 = time.perf_counter()
        rec = self.folder.run(name, {"problem": self.fingerprint, **options}, compute, depends)
        self.records[name] = rec
        status = "cached" if rec.cached else f"{time.perf_counter() - t0:.1f} s"
        self.say(f"[{name}] {rec.results.get('line', '')}  ({status})")
        return rec

    def params_of(self, flat) -> Any:
        return self.unravel(jnp.asarray(flat, self.flat0.dtype))

    def bar(self, name: str, total: int):
        return _Progress(total, 0, self.show, False, label=name)

    # ---- the job

    def run(self) -> Report:
        p, o = self.problem, self.opts
        self.say(f"jaxscape report: {p.name}: {p.description or ''}".rstrip(": "))
        self.say(f"on {device_info()['summary']}; output {self.folder.path.resolve()}")
        points: dict[str, Any] = {"init": p.params}
        trains: dict[str, StageRecord] = {}
        if "train" in o.stages:
            for name in o.optimizers:
                rec = self.train(name)
                trains[name] = rec
                if rec.results["finite"]:
                    traj = rec.arrays["trajectory"]
                    points[f"{name}-mid"] = self.params_of(traj[len(traj) // 2])
                    points[name] = self.params_of(traj[-1])
        elif self.end is not None:
            points["end"] = self.end
        solutions = [n for n in points if n != "init" and not n.endswith("-mid")] or ["init"]
        if "interpolation" in o.stages:
            self.interpolation(points, solutions, trains)
        if "surface" in o.stages:
            for name in solutions:
                self.surface(name, points[name], trains.get(name))
        if "hessian" in o.stages:
            for name in points:
                self.hessian(name, points[name], trains.get(name.removesuffix("-mid")))
        if "flatness" in o.stages:
            for name in solutions:
                self.flatness(name, points[name], trains.get(name))
        results = self.results(points)
        _write(self.folder.path, results, self.records, points, p)
        self.say(f"report: {(self.folder.path / 'report.html').resolve()}")
        for err in self.errors:
            self.say(f"error: {err}")
        return Report(self.folder.path, results, list(self.errors))

    def _fit(self, name, lr, every, workdir):
        p, o = self.problem, self.opts
        return fit(
            jax.random.fold_in(self.key, 1),  # the same minibatch order for both optimizers
            p.loss_fn,
            p.params,
            _optimizer(name, lr, o.momentum if name == "sgd" else 0.0),
            p.train,
            num_steps=o.steps,
            batch_size=o.batch_size,
            record_every=every,
            checkpoint_dir=workdir / "checkpoints",
            progress=self.show,
            on_nonfinite="stop",
        )

    def train(self, name: str) -> StageRecord:
        p, o = self.problem, self.opts
        lr = o.sgd_lr if name == "sgd" else o.adam_lr
        every = o.record_every or _record_every(o.steps)
        options = {
            "optimizer": name,
            "lr": lr,
            "momentum": o.momentum if name == "sgd" else None,
            "steps": o.steps,
            "batch_size": o.batch_size,
            "record_every": every,
            "seed": o.seed,
        }

        def compute(workdir):
            with jax.numpy_dtype_promotion("standard"):  # optax.adam mixes int and float steps
                fitted = self._fit(name, lr, every, workdir)
            h = fitted.history
            traj = jax.vmap(lambda q: ravel_pytree(q)[0])(h.params)
            finite = bool(fitted.finite)
            evals = {}
            if finite:
                for split in ("train", "test"):
                    batch = getattr(p, split)
                    if batch is not None:
                        out = _along(p.loss_fn, p.apply_fn, h.params, batch, o.chunk_size)
                        evals.update({f"{split}_{k}": np.asarray(v) for k, v in out.items()})
                finite = all(np.isfinite(v).all() for v in evals.values())
            results = {"finite": finite, "steps_done": int(h.step[-1]), "lr": lr}
            if finite:
                results.update({k: float(v[-1]) for k, v in evals.items()})
                results["line"] = (
                    f"{name}: {o.steps} steps, train loss {results['train_loss']:.4g}"
                    + (f", test loss {results['test_loss']:.4g}" if "test_loss" in results else "")
                    + (
                        f", test accuracy {100 * results['test_accuracy']:.1f}%"
                        if "test_accuracy" in results
                        else ""
                    )
                )
            else:
                bad = int(h.step[np.argmax(~np.isfinite(h.loss))]) if len(h.loss) else 0
                results["line"] = (
                    f"{name}: the loss became non-finite by step {bad} (learning rate {lr:g}); "
                    f"kept the {len(h.step)} records before it. Lower --{name}-lr."
                )
            arrays = {
                "step": h.step,
                "minibatch_loss": h.loss,
                "grad_norm": h.grad_norm,
                "trajectory": traj,
                **evals,
            }
            return results, arrays

        rec = self.stage(f"train-{name}", options, compute)
        if not rec.results["finite"]:
            self.errors.append(f"train-{name}: {rec.results['line']}")
        return rec

    def interpolation(self, points, solutions, trains):
        p, o = self.problem, self.opts
        lines = [(f"init-{n}", "init", n) for n in solutions if n != "init"]
        if "sgd" in points and "adam" in points:
            lines.append(("sgd-adam", "sgd", "adam"))
        if not lines:
            return
        alphas = np.linspace(-0.5, 1.5, o.alphas)
        ts = np.linspace(0.0, 1.0, o.alphas)
        splits = [s for s in ("train", "test") if getattr(p, s) is not None]

        def compute(_):
            results, arrays = {}, {"alphas": alphas, "ts": ts}
            with self.bar("interpolation", len(lines) * len(splits)) as bar:
                for name, a, b in lines:
                    coords = ts if name == "sgd-adam" else alphas
                    for split in splits:
                        out = _line(
                            p.loss_fn,
                            p.apply_fn,
                            points[a],
                            points[b],
                            getattr(p, split),
                            jnp.asarray(coords, self.flat0.dtype),
                            o.chunk_size,
                        )
                        for k, v in out.items():
                            arrays[f"{name}/{split}_{k}"] = np.asarray(v)
                        bar.advance()
                    results[name] = _line_summary(name, coords, arrays[f"{name}/train_loss"])
            results["line"] = "; ".join(r["text"] for r in results.values())
            return results, arrays

        deps = [trains[n] for n in sorted(trains)]
        self.stage(
            "interpolation", {"alphas": o.alphas, "end": self.end is not None}, compute, deps
        )

    def surface(self, name, center, train):
        p, o = self.problem, self.opts
        n_pts = o.surface_points

        def compute(_):
            k1, k2 = jax.random.split(jax.random.fold_in(self.key, 2))
            d1 = ls.random_direction(k1, center, normalization="filter")
            d2 = ls.random_direction(k2, center, normalization="filter")
            xs = np.linspace(-o.surface_span, o.surface_span, n_pts)
            arrays, results = {"random/xs": xs, "random/ys": xs}, {}
            total = 1 + (train is not None)
            with self.bar(f"surface {name}", total) as bar:
                grid = _plane(
                    p.loss_fn,
                    center,
                    d1,
                    d2,
                    p.train,
                    jnp.asarray(xs),
                    jnp.asarray(xs),
                    o.chunk_size,
                )
                arrays["random/loss"] = np.asarray(grid)
                bar.advance()
                if train is not None:
                    traj = jax.vmap(self.params_of)(train.arrays["trajectory"])
                    (e1, e2), explained = ls.pca_directions(traj, center)
                    path = np.asarray(ls.project(traj, center, e1, e2))
                    lo, hi = path.min(0), path.max(0)
                    pad = 0.2 * np.maximum(hi - lo, 1e-12)
                    px = np.linspace(lo[0] - pad[0], hi[0] + pad[0], n_pts)
                    py = np.linspace(lo[1] - pad[1], hi[1] + pad[1], n_pts)
                    grid = _plane(
                        p.loss_fn,
                        center,
                        e1,
                        e2,
                        p.train,
                        jnp.asarray(px),
                        jnp.asarray(py),
                        o.chunk_size,
                    )
                    arrays.update(
                        {
                            "pca/xs": px,
                            "pca/ys": py,
                            "pca/loss": np.asarray(grid),
                            "pca/path": path,
                            "pca/explained": np.asarray(explained),
                        }
                    )
                    results["pca_explained"] = np.asarray(explained).tolist()
                    bar.advance()
            loss0 = float(arrays["random/loss"][n_pts // 2, n_pts // 2])
            results["center_loss"] = loss0
            results["random_max_loss"] = float(np.nanmax(arrays["random/loss"]))
            results["finite"] = bool(all(np.isfinite(v).all() for v in arrays.values()))
            results["line"] = (
                f"{name}: {n_pts}×{n_pts} filter-normalized plane, loss {loss0:.4g} at the centre,"
                f" up to {results['random_max_loss']:.4g} at ±{o.surface_span:g}"
                + (
                    f"; PCA plane explains {100 * sum(results['pca_explained']):.1f}% of the path"
                    if "pca_explained" in results
                    else ""
                )
            )
            return results, arrays

        options = {"points": n_pts, "span": o.surface_span, "seed": o.seed}
        self.stage(f"surface-{name}", options, compute, [train] if train else [])

    def hessian(self, name, params, train):
        p, o = self.problem, self.opts
        n = self.flat0.size
        k = min(o.k, max(1, (n - 1) // 2))
        cfg = (k, min(o.lanczos_iters, n), o.slq_probes, o.trace_matvecs, o.index_tol)

        def compute(_):
            with self.bar(f"hessian {name}", 1) as bar:
                res = jax.device_get(
                    _spectrum(p.loss_fn, params, p.train, jax.random.fold_in(self.key, 3), cfg)
                )
                bar.advance()
            ev = np.asarray(res["eigenvalues"])
            results = {
                "finite": bool(res["finite"]),
                "loss": float(res["loss"]),
                "grad_norm": float(res["grad_norm"]),
                "top": ev[::-1][:k].tolist(),
                "bottom": ev[:k].tolist(),
                "max_residual": float(np.max(res["residuals"])),
                "eigsh_converged": bool(res["eig_converged"]),
                "trace": float(res["trace"]),
                "trace_stderr": float(res["trace_stderr"]),
                "index": float(res["index"]),
                "index_tol": float(res["index_tol"]),
            }
            results["line"] = (
                f"{name}: λ_max {results['top'][0]:.4g}, λ_min {results['bottom'][0]:.4g}, "
                f"trace {results['trace']:.4g} ± {results['trace_stderr']:.2g}, index "
                f"{100 * results['index_tol']:.2f}% below -{o.index_tol:g}·λ_max "
                f"({100 * results['index']:.2f}% below 0)"
            )
            if not results["finite"]:
                results["line"] = f"{name}: NaN/inf in the Hessian products; nothing kept"
            arrays = {key: np.asarray(res[key]) for key in ("grid", "density", "nodes", "weights")}
            arrays["eigenvalues"] = ev
            return results, arrays

        options = {"point": name, "cfg": list(cfg), "seed": o.seed}
        rec = self.stage(f"hessian-{name}", options, compute, [train] if train else [])
        if not rec.results["finite"]:
            self.errors.append(f"hessian-{name}: {rec.results['line']}")

    def flatness(self, name, params, train):
        p, o = self.problem, self.opts

        def compute(_):
            key = jax.random.fold_in(self.key, 4)
            with self.bar(f"flatness {name}", 2) as bar:
                value, max_loss, loss = _sharpness(
                    key, p.loss_fn, params, p.train, o.sharpness_epsilon, o.sharpness_steps
                )
                bar.advance()
                width = ls.basin_width(
                    key,
                    p.loss_fn,
                    params,
                    p.train,
                    threshold=o.basin_rise,
                    num_directions=o.basin_directions,
                    max_distance=o.basin_max_distance,
                    normalization="filter",
                    chunk_size=o.chunk_size,
                )
                bar.advance()
            reached = np.asarray(width.reached)
            results = {
                "loss": float(loss),
                "sharpness": float(value),
                "sharpness_max_loss": float(max_loss),
                "basin_width_mean": float(width.mean) if reached.any() else None,
                "basin_width_std": float(width.std) if reached.any() else None,
                "basin_reached": int(reached.sum()),
                "finite": bool(np.isfinite(float(value))),
            }
            wtxt = (
                f"{results['basin_width_mean']:.3g} ± {results['basin_width_std']:.2g}"
                if reached.any()
                else f"> {o.basin_max_distance:g}"
            )
            results["line"] = (
                f"{name}: ε-sharpness {results['sharpness']:.4g} (ε = {o.sharpness_epsilon:g}), "
                f"basin width {wtxt} ({results['basin_reached']}/{o.basin_directions} directions "
                f"reached loss + {o.basin_rise:g})"
            )
            return results, {"widths": np.asarray(width.widths)}

        options = {
            "epsilon": o.sharpness_epsilon,
            "steps": o.sharpness_steps,
            "rise": o.basin_rise,
            "directions": o.basin_directions,
            "max_distance": o.basin_max_distance,
            "seed": o.seed,
        }
        self.stage(f"flatness-{name}", options, compute, [train] if train else [])

    def results(self, points) -> dict:
        import jaxscape

        p = self.problem
        stages = {
            name: {**rec.results, "seconds": rec.seconds, "cached": rec.cached, "key": rec.key}
            for name, rec in self.records.items()
        }
        return _jsonable(
            {
                "jaxscape": jaxscape.__version__,
                "command": self.folder.meta.get("command"),
                "versions": versions(),
                "device": device_info(),
                "problem": {
                    "name": p.name,
                    "description": p.description,
                    "num_params": int(self.flat0.size),
                    "num_train": _num_examples(p.train),
                    "num_test": _num_examples(p.test) if p.test is not None else 0,
                    "dtype": str(self.flat0.dtype),
                    "fingerprint": self.fingerprint,
                },
                "options": dataclasses.asdict(self.opts),
                "points": list(points),
                "stages": stages,
                "summary": summarize(stages, self.opts),
                "errors": list(self.errors),
            }
        )


# --------------------------------------------------------------------------- helpers


def _record_every(steps: int) -> int:
    every = max(1, steps // 50)
    while steps % every:
        every -= 1
    return every


def _num_examples(batch) -> int:
    return int(jax.tree.leaves(batch)[0].shape[0])


def _fingerprint(problem: Problem, end) -> str:
    """Hash of the problem's name, θ₀, data (and ``end``): changed data or init recomputes."""
    h = hashlib.sha256(problem.name.encode())
    for tree in (problem.params, problem.train, problem.test, end):
        for leaf in jax.tree.leaves(tree):
            arr = np.asarray(leaf)
            h.update(f"{arr.shape}{arr.dtype}".encode())
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


__all__ = [
    "OPTIMIZERS",
    "STAGES",
    "Report",
    "ReportOptions",
    "run",
    "summarize",
]
