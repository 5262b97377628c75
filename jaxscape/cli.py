"""The ``jaxscape`` command (also ``python -m jaxscape``).

Subcommands:

- ``report``: the whole landscape report of a problem (``jaxscape.report``): training with
  SGD and Adam, interpolation, surfaces, Hessian spectra, sharpness and basin width.
- ``spectrum``, ``interpolate``, ``surface``: one part of it, with or without training
  (``--no-train`` analyses θ₀, or the params of ``--params FILE.npz``; ``interpolate --end
  B.npz`` draws the line from θ₀ to B).
- ``list``: built-in models, data sets and experiments.
- ``bench``: the benchmark suite (from a source checkout).

A problem is built in (``--model`` × ``--data``) or yours (``--problem module:function``, the
protocol of ``jaxscape.problems.load_problem``). ``--config FILE.toml`` sets any flag (keys are
the flag names, with ``-`` or ``_``); flags on the command line override the file. Output goes
to a run folder (``--out``) that a rerun resumes.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

JOBS = {
    "report": ("the full landscape report of a problem", None),
    "spectrum": ("Hessian spectra at θ₀, midway and the solutions", ("train", "hessian")),
    "interpolate": ("loss along θ₀ → θ* and between solutions", ("train", "interpolation")),
    "surface": ("2-D loss surfaces around the solutions", ("train", "surface")),
}
_LISTS = ("stages", "optimizers")


def _options_fields():
    from jaxscape.report import ReportOptions

    return [f for f in dataclasses.fields(ReportOptions) if f.name != "seed"]


def _add_problem_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("problem")
    g.add_argument("--model", default="mlp", help="built-in model (default %(default)s)")
    g.add_argument("--data", default="digits", help="built-in data set (default %(default)s)")
    g.add_argument("--problem", help="your own problem: package.module:function")
    g.add_argument(
        "--problem-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument for --problem's function (Python literal or string); repeatable",
    )
    g.add_argument("--width", type=int, default=32, help="hidden width (default %(default)s)")
    g.add_argument("--depth", type=int, default=2, help="hidden layers (default %(default)s)")
    g.add_argument("--num-examples", type=int, help="examples before the train/test split")
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    g.add_argument("--params", help="analyse these params (.npz from a report) instead of θ₀")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxscape",
        description="Loss-landscape tools for JAX.",
        epilog="Run 'jaxscape COMMAND --help' for a command's flags.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (text, stages) in JOBS.items():
        p = sub.add_parser(name, help=text, description=f"jaxscape {name}: {text}.")
        p.add_argument("--out", default=f"runs/{name}", help="run folder (default %(default)s)")
        p.add_argument("--config", help="TOML file of flag values (flags override it)")
        p.add_argument("--seed", type=int, default=0, help="PRNG seed (default %(default)s)")
        p.add_argument("--quiet", action="store_true", help="print only the report's path")
        _add_problem_flags(p)
        if stages is not None:
            p.add_argument("--no-train", action="store_true", help="analyse θ₀ (or --params)")
        if name == "interpolate":
            p.add_argument("--end", help="end point params (.npz); implies --no-train")
        g = p.add_argument_group("analysis (jaxscape.report.ReportOptions)")
        for f in _options_fields():
            flag = "--" + f.name.replace("_", "-")
            if f.name in _LISTS:
                default = ",".join(f.default if stages is None or f.name != "stages" else stages)
                g.add_argument(flag, default=default, help=f"comma-separated (default {default})")
            elif f.name in ("batch_size", "record_every", "chunk_size"):
                g.add_argument(flag, type=int, default=f.default, help=f"(default {f.default})")
            else:
                g.add_argument(flag, type=type(f.default), default=f.default,
                               help=f"(default {f.default})")  # fmt: skip
    sub.add_parser("list", help="built-in models, data sets and experiments")
    b = sub.add_parser("bench", help="run the benchmark suite (source checkout)")
    b.add_argument("--out", default="benchmarks/results", help="results folder")
    b.add_argument("--quick", action="store_true", help="tiny settings (seconds to a minute)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            print(list_all())
            return 0
        if args.command == "bench":
            return run_bench(args)
        if args.config:
            args = _with_config(parser, argv, args.command, args.config)
        return run_job(args, argv)
    except KeyboardInterrupt:
        print(
            "\njaxscape: interrupted; finished stages are saved — rerun the same command to "
            "resume.",
            file=sys.stderr,
        )
        return 130
    except (ValueError, TypeError, FileNotFoundError, ImportError, OSError) as err:
        print(f"jaxscape: error: {err}", file=sys.stderr)
        return 2


def _with_config(parser, argv, command, path) -> argparse.Namespace:
    """Defaults from the TOML file, then the command line again (flags override the file)."""
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file.")
    try:
        config = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"--config {path} is not valid TOML: {err}.") from None
    sub = parser._subparsers._group_actions[0].choices[command]
    dests = {a.dest: a for a in sub._actions if a.dest not in ("help", "config")}
    values = {}
    for key, value in config.items():
        dest = key.replace("-", "_")
        if dest not in dests:
            raise ValueError(
                f"--config {path}: unknown key {key!r} for 'jaxscape {command}'; valid keys: "
                f"{', '.join(sorted(k.replace('_', '-') for k in dests))}."
            )
        if dest in _LISTS and isinstance(value, list):
            value = ",".join(map(str, value))
        action = dests[dest]
        if action.type is not None and not isinstance(value, action.type):
            if not (action.type is float and isinstance(value, int)):
                raise ValueError(
                    f"--config {path}: {key} must be {action.type.__name__}, got {value!r}."
                )
        values[dest] = value
    sub.set_defaults(**values)
    return parser.parse_args(argv)


def _problem(args):
    import jax

    from jaxscape.problems import builtin_problem, load_problem

    dtype = jax.numpy.float64 if args.dtype == "float64" else jax.numpy.float32
    if args.problem:
        if os.getcwd() not in sys.path:  # `--problem mymodule:make` from the working folder
            sys.path.insert(0, os.getcwd())
        kwargs = {}
        for item in args.problem_arg:
            key, eq, value = item.partition("=")
            if not eq or not key.isidentifier():
                raise ValueError(f"--problem-arg expects KEY=VALUE, got {item!r}.")
            try:
                kwargs[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                kwargs[key] = value
        return load_problem(args.problem, **kwargs)
    if args.problem_arg:
        raise ValueError("--problem-arg needs --problem.")
    for flag in ("width", "depth", "num_examples"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {value}.")
    return builtin_problem(
        jax.random.key(args.seed), args.model, args.data, dtype=dtype, width=args.width,
        depth=args.depth, num_examples=args.num_examples,
    )  # fmt: skip


def run_job(args: argparse.Namespace, argv: list[str]) -> int:
    """``report``, ``spectrum``, ``interpolate`` or ``surface``: build the problem, run the
    report's stages, print the path of ``report.html``. Returns the exit code."""
    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    from jaxscape import report
    from jaxscape.runfolder import load_params

    problem = _problem(args)
    if args.params:
        problem = problem._replace(params=load_params(args.params, problem.params))
    options = {f.name: getattr(args, f.name) for f in _options_fields()}
    for name in _LISTS:
        options[name] = tuple(s.strip() for s in options[name].split(",") if s.strip())
    options["seed"] = args.seed
    end = None
    if getattr(args, "end", None):
        end = load_params(args.end, problem.params)
    if end is not None or getattr(args, "no_train", False):
        options["stages"] = tuple(s for s in options["stages"] if s != "train")
        if not options["stages"]:
            raise ValueError("nothing to do: --no-train leaves no stage; add --stages.")
    result = report.run(
        problem, args.out, options, end=end, command=["jaxscape", *argv], quiet=args.quiet
    )
    if args.quiet:
        print((result.path / "report.html").resolve())
    for err in result.errors:
        print(f"jaxscape: error: {err}", file=sys.stderr)
    return 1 if result.errors else 0


def list_all() -> str:
    """Built-in models and data sets, and the experiments of a source checkout."""
    from jaxscape.problems import list_builtins

    text = [list_builtins(), "", "experiments (python experiments/NAME.py --help):"]
    folder = Path(__file__).resolve().parents[1] / "experiments"
    scripts = sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_"))
    text += [f"  {s}" for s in scripts] or ["  (none in this installation)"]
    return "\n".join(text)


def run_bench(args: argparse.Namespace) -> int:
    """Run ``benchmarks/bench_*.py`` of the source checkout; returns the first failing code."""
    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    scripts = sorted(folder.glob("bench_*.py"))
    if not scripts:
        raise FileNotFoundError(
            f"no benchmarks in {folder}: 'jaxscape bench' runs from a source checkout "
            "(git clone, then pip install -e .)."
        )
    for script in scripts:
        cmd = [sys.executable, str(script), "--out", args.out] + (["--quick"] if args.quick else [])
        print("$", " ".join(cmd), flush=True)
        code = subprocess.run(cmd, check=False).returncode
        if code:
            print(f"jaxscape: error: {script.name} exited with {code}", file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
