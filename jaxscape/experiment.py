"""Plumbing shared by the scripts in ``experiments/``: flags, a resumable run folder, figures
and ``results.json`` — so that each script holds only its science.

A script looks like::

    from jaxscape import experiment

    def main(argv=None):
        args = experiment.parser("deep_linear", __doc__).parse_args(argv)
        exp = experiment.Experiment("deep_linear", args, config=QUICK if args.quick else FULL)
        rec = exp.stage("chains", {"depths": exp.config["depths"]}, compute_chains)
        exp.figure(make_figure(rec.arrays), "chains")
        return exp.finish({"plateau_steps": rec.results["plateau_steps"]})

Every stage is a ``RunFolder`` stage keyed on its options and the experiment's config, so an
interrupted run resumes, and ``--quick`` (the settings the test suite runs) and the default
settings never share records.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

from jaxscape.runfolder import RunFolder, StageRecord, _jsonable, device_info, versions


def parser(name: str, description: str | None = None) -> argparse.ArgumentParser:
    """``--out`` (default ``runs/experiments/NAME``), ``--quick``, ``--seed``, ``--quiet``;
    add the experiment's own flags to the returned parser."""
    p = argparse.ArgumentParser(
        prog=f"experiments/{name}.py",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default=f"runs/experiments/{name}", help="run folder (resumable)")
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds; the tests)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="print only the results path")
    return p


def positive(kind: type = int, *, minimum: float | None = None) -> Callable[[str], Any]:
    """An argparse ``type``: a finite number of ``kind`` (``int`` or ``float``) that is ``> 0``,
    or ``>= minimum`` when given. argparse names the flag in its error, e.g.
    ``argument --width: expected an integer > 0, got -3``.

    Example::

        p.add_argument("--width", type=experiment.positive())
        p.add_argument("--lr", type=experiment.positive(float))
        p.add_argument("--newton-steps", type=experiment.positive(minimum=0))
    """
    what = "an integer" if kind is int else "a number"
    bound = "> 0" if minimum is None else f">= {minimum}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} {bound}, got {text!r}") from None
        if not math.isfinite(value) or not (value > 0 if minimum is None else value >= minimum):
            raise argparse.ArgumentTypeError(f"expected {what} {bound}, got {text}")
        return value

    return parse


def settings(
    args: argparse.Namespace,
    quick: Mapping[str, Any],
    full: Mapping[str, Any],
    names: Iterable[str],
) -> dict[str, Any]:
    """The resolved config: ``quick`` under ``--quick``, else ``full``, with each flag of
    ``names`` (argparse ``dest`` names) that was given on the command line (not ``None``)
    in place of its default — so flags enter every stage's key."""
    config = dict(quick if args.quick else full)
    config.update({n: getattr(args, n) for n in names if getattr(args, n) is not None})
    return config


class Experiment:
    """One run of an experiment script.

    Args:
      name: the script's name (``"deep_linear"``).
      args: its parsed flags (``out``, ``quick``, ``seed``, ``quiet`` at least).
      config: the resolved settings (JSON-able); part of every stage's key.
    """

    def __init__(self, name: str, args: argparse.Namespace, *, config: Mapping[str, Any]):
        self.name, self.args = name, args
        self.config = {**dict(config), "seed": args.seed, "quick": bool(args.quick)}
        self.folder = RunFolder(args.out, command=[sys.executable, *sys.argv])
        self.path = self.folder.path
        self.records: dict[str, StageRecord] = {}
        self.figures: list[str] = []
        self.say = (lambda *a: None) if args.quiet else print
        self.start = time.perf_counter()
        self.say(f"{name}: {device_info()['summary']}; output {self.path.resolve()}")

    def stage(
        self,
        name: str,
        options: Mapping[str, Any],
        compute: Callable[[], tuple[Mapping, Mapping]],
        depends: Sequence[StageRecord] = (),
    ) -> StageRecord:
        """Load stage ``name`` or run ``compute() -> (results, arrays)`` and record it."""
        rec = self.folder.run(
            name, {"config": self.config, **options}, lambda _: compute(), depends
        )
        self.records[name] = rec
        how = "cached" if rec.cached else f"{rec.seconds:.1f} s"
        self.say(f"[{name}] done ({how})")
        return rec

    def figure(self, fig, name: str, *, dpi: int = 110) -> str:
        """Save a Matplotlib figure as ``NAME.png`` in the run folder; returns the file name."""
        import matplotlib.pyplot as plt

        file = f"{name}.png"
        fig.tight_layout()
        fig.savefig(self.path / file, dpi=dpi)
        plt.close(fig)
        if file not in self.figures:
            self.figures.append(file)
        return file

    def finish(self, results: Mapping[str, Any]) -> dict:
        """Write ``results.json`` (results, config, stage timings, figures, device, versions,
        command) and print its path. Returns what was written."""
        out = _jsonable(
            {
                "experiment": self.name,
                "config": self.config,
                "results": dict(results),
                "stages": {
                    n: {"seconds": r.seconds, "cached": r.cached} for n, r in self.records.items()
                },
                "figures": self.figures,
                "seconds": time.perf_counter() - self.start,
                "device": device_info(),
                "versions": versions(),
                "command": self.folder.meta.get("command"),
            }
        )
        tmp = self.path / ".results.json.tmp"
        tmp.write_text(json.dumps(out, indent=1, allow_nan=False))
        tmp.replace(self.path / "results.json")
        print(
            self.path / "results.json"
            if self.args.quiet
            else f"results: {self.path.resolve() / 'results.json'}"
        )
        return out


__all__ = ["Experiment", "parser", "positive", "settings"]


# --------------------------------------------------------------------------- measurements

FAST_COMPILE = {"xla_backend_optimization_level": 0}


def jit(fast_compile: bool):
    """``jax.jit``, with XLA's backend optimizations off when ``fast_compile`` (at ``--quick``
    size compiling is most of the time)."""
    import jax

    return partial(jax.jit, compiler_options=FAST_COMPILE if fast_compile else None)


def accuracy(apply_fn: Callable) -> Callable:
    """``acc(params, batch)``: the fraction of ``batch.y`` that ``argmax apply_fn(params,
    batch.x)`` predicts (a ``data.Dataset``-like batch)."""
    import jax.numpy as jnp

    def acc(params, batch):
        pred = jnp.argmax(apply_fn(params, batch.x), -1)
        return jnp.mean((pred == batch.y).astype(jnp.result_type(float)))

    return acc


def sharpness_curve(key, loss_fn, params, batch, epsilons, num_steps: int):
    """Keskar et al.'s ε-sharpness (``landscape.sharpness``) for every ε of ``epsilons`` at
    once (``vmap``), with one key."""
    import jax
    import jax.numpy as jnp

    from jaxscape.landscape import sharpness

    eps = jnp.asarray(epsilons, jnp.result_type(float))
    one = lambda e: sharpness(key, loss_fn, params, batch, epsilon=e, num_steps=num_steps).value  # noqa: E731
    return jax.vmap(one)(eps)
