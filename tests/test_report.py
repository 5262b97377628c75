"""``jaxscape report``: every promised file, numbers equal to the Python API's, resume, errors."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import jaxscape as js
from jaxscape import cli
from jaxscape import report as rp
from jaxscape.problems import Problem, builtin_problem
from jaxscape.runfolder import load_params, save_params

TINY = {
    "steps": 20,
    "batch_size": 32,
    "alphas": 5,
    "surface_points": 5,
    "k": 2,
    "lanczos_iters": 16,
    "slq_probes": 2,
    "trace_matvecs": 6,
    "sharpness_steps": 3,
    "basin_directions": 2,
}
pytestmark = pytest.mark.xdist_group("report")  # one worker builds the shared run once
PROBLEM = ["--width", "8", "--num-examples", "120"]


def _flags(opts: dict) -> list[str]:
    return [x for k, v in opts.items() for x in (f"--{k.replace('_', '-')}", str(v))]


@pytest.fixture(scope="session")  # per worker; one worker runs this file
def problem():
    return builtin_problem(
        jax.random.key(0), "mlp", "digits", width=8, num_examples=120, dtype=jnp.float32
    )


@pytest.fixture(scope="session")  # per worker; one worker runs this file
def cli_run(tmp_path_factory, problem):
    """The tiny report, once per worker, on the module's problem (its compiled functions are
    then reused by the tests below); the command line itself is exercised further down."""
    out = tmp_path_factory.mktemp("report") / "run"
    res = rp.run(problem, out, TINY, command=["jaxscape", "report", "--out", str(out)], quiet=True)
    return (1 if res.errors else 0), out


def _strip(stages: dict) -> dict:
    return {
        k: {f: v for f, v in s.items() if f not in ("seconds", "cached")} for k, s in stages.items()
    }


def test_report_writes_every_file_and_html_links_exist(cli_run):
    code, out = cli_run
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    for name in results["files"]:
        assert (out / name).is_file(), name
    expected = {"training.png", "interpolation.png", "spectrum.png", "arrays.npz"}
    expected |= {f"{k}-{o}.png" for k in ("surface", "pca") for o in ("sgd", "adam")}
    expected |= {f"params-{p}.npz" for p in ("init", "sgd", "sgd-mid", "adam", "adam-mid")}
    assert expected <= set(results["files"])
    page = (out / "report.html").read_text()
    links = re.findall(r"(?:src|href)=['\"]([^'\"]+)['\"]", page)
    files = [link for link in links if not link.startswith("data:")]
    assert files and all((out / link).is_file() for link in files)
    assert {"training.png", "spectrum.png", "interpolation.png"} <= set(files)
    pngs = [f for f in results["files"] if f.endswith(".png")]
    assert len(links) - len(files) == len(pngs)  # every figure embedded: the page stands alone
    stages = set(results["stages"])
    assert {"train-sgd", "train-adam", "interpolation", "hessian-init", "hessian-sgd-mid"} <= stages
    assert results["device"]["platform"] == jax.devices()[0].platform
    assert results["command"][:2] == ["jaxscape", "report"]
    assert results["errors"] == [] and results["summary"]


def test_results_equal_the_python_api(cli_run, problem):
    _, out = cli_run
    results = json.loads((out / "results.json").read_text())
    st = results["stages"]
    arrays = np.load(out / "arrays.npz")
    p0 = load_params(out / "params-init.npz", problem.params)
    chex_close = lambda a, b, **kw: np.testing.assert_allclose(np.asarray(a), np.asarray(b), **kw)  # noqa: E731
    chex_close(ravel_pytree(p0)[0], ravel_pytree(problem.params)[0])
    # training: the same run through fit, then the recorded losses
    fitted = js.fit(
        jax.random.fold_in(jax.random.key(0), 1), problem.loss_fn, problem.params,
        optax.sgd(TINY_LR := rp.ReportOptions().sgd_lr), problem.train, num_steps=20,
        batch_size=32, record_every=rp._record_every(20),
    )  # fmt: skip
    assert st["train-sgd"]["lr"] == TINY_LR
    p_sgd = load_params(out / "params-sgd.npz", problem.params)
    chex_close(ravel_pytree(p_sgd)[0], ravel_pytree(fitted.params)[0], rtol=1e-5, atol=1e-6)
    assert st["train-sgd"]["train_loss"] == pytest.approx(
        float(problem.loss_fn(p_sgd, problem.train)), rel=1e-5
    )
    assert st["train-sgd"]["test_loss"] == pytest.approx(
        float(problem.loss_fn(p_sgd, problem.test)), rel=1e-5
    )
    # interpolation θ₀ → θ*(sgd) on the test set
    alphas = arrays["interpolation/alphas"]
    prof = js.interpolate(problem.loss_fn, p0, p_sgd, problem.test, alphas)
    chex_close(arrays["interpolation/init-sgd/test_loss"], prof.loss, rtol=1e-5)
    # Hessian at θ*(sgd): λ_max against the dense Hessian
    h = np.linalg.eigvalsh(
        np.asarray(js.hessian_matrix(problem.loss_fn, p_sgd, problem.train), float)
    )
    assert st["hessian-sgd"]["top"][0] == pytest.approx(h[-1], rel=2e-2)
    assert st["hessian-sgd"]["bottom"][0] >= h[0] - 2e-2 * abs(h).max()
    assert st["hessian-sgd"]["loss"] == pytest.approx(st["train-sgd"]["train_loss"], rel=1e-5)
    # surface centre and sharpness at the solution
    assert st["surface-sgd"]["center_loss"] == pytest.approx(
        st["train-sgd"]["train_loss"], rel=1e-5
    )
    assert st["flatness-sgd"]["loss"] == pytest.approx(st["train-sgd"]["train_loss"], rel=1e-5)
    assert st["flatness-sgd"]["sharpness"] >= 0


def test_resume_after_an_interrupted_stage_equals_a_clean_run(tmp_path, problem, monkeypatch):
    opts = {**TINY, "stages": ("train", "interpolation", "hessian"), "optimizers": ("adam",)}
    clean = rp.run(problem, tmp_path / "clean", opts, quiet=True)
    real = rp._spectrum

    def interrupted(*args):  # Ctrl-C in the middle of the Hessian stages
        raise KeyboardInterrupt

    monkeypatch.setattr(rp, "_spectrum", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rp.run(problem, tmp_path / "resumed", opts, quiet=True)
    monkeypatch.setattr(rp, "_spectrum", real)
    resumed = rp.run(problem, tmp_path / "resumed", opts, quiet=True)
    assert resumed.results["stages"]["train-adam"]["cached"]
    assert resumed.results["stages"]["interpolation"]["cached"]
    assert not resumed.results["stages"]["hessian-adam"]["cached"]
    assert _strip(resumed.results["stages"]) == _strip(clean.results["stages"])
    # a changed option recomputes only what depends on it
    again = rp.run(problem, tmp_path / "resumed", {**opts, "alphas": 9}, quiet=True)
    cached = {k: v["cached"] for k, v in again.results["stages"].items()}
    assert cached == {**{k: True for k in cached}, "interpolation": False}


def test_nonfinite_training_stops_the_stage_and_keeps_the_rest(tmp_path):
    x = jax.random.normal(jax.random.key(0), (64, 4), jnp.float32)
    quad = Problem(
        name="least-squares",
        loss_fn=lambda w, b: jnp.mean((b[0] @ w - b[1]) ** 2),
        params=jnp.zeros(4, jnp.float32),
        train=(x, x.sum(1)),
    )
    opts = {**TINY, "sgd_lr": 1e3, "stages": ("train", "interpolation")}
    res = rp.run(quad, tmp_path / "run", opts, quiet=True)
    assert len(res.errors) == 1 and "non-finite" in res.errors[0] and "--sgd-lr" in res.errors[0]
    st = res.results["stages"]
    assert st["train-sgd"]["finite"] is False and "sgd-adam" not in st["interpolation"]
    assert st["train-adam"]["finite"] and "init-adam" in st["interpolation"]
    assert (tmp_path / "run" / "report.html").is_file()


def _bad_problem_module(folder):
    (folder / "badproblem.py").write_text(
        textwrap.dedent(
            """
            def make():
                return 42
            """
        )
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "resnet"], "unknown --model 'resnet'; choose one of: mlp"),
        (["--data", "imagenet"], "unknown --data 'imagenet'"),
        (["--data", "mnist:missing-folder"], "missing-folder does not exist"),
        (["--data", "mnist:badmnist"], "in badmnist/train-images-idx3-ubyte"),
        (["--problem", "nosuchmodule:make"], "cannot import module 'nosuchmodule'"),
        (["--problem", "badproblem:make"], "--problem 'badproblem:make'"),
        (["--steps", "0"], "--steps must be an integer >= 1"),
        (["--optimizers", "sgd,lbfgs"], "--optimizers must be distinct names from sgd, adam"),
        (["--config", "nofile.toml"], "--config nofile.toml: no such file"),
        (["--config", "bad.toml"], "unknown key 'stepz'"),
        (["--params", "nofile.npz"], "params file nofile.npz does not exist"),
        (["--params", "wrong.npz"], "does not match the problem's params"),
        (["--out", "notarun"], "is not a jaxscape run folder"),
        (["--out", "oldrun"], "holds a run of format 0"),
    ],
)
def test_bad_input_gives_its_message_and_exit_code_2(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    _bad_problem_module(tmp_path)
    (tmp_path / "bad.toml").write_text("stepz = 3\n")
    (tmp_path / "badmnist").mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (tmp_path / "badmnist" / name).write_bytes(b"\x8b" * 100)  # not IDX: names the file
    save_params(tmp_path / "wrong.npz", {"w": np.zeros(3, np.float32)})
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "data.txt").write_text("mine")
    (tmp_path / "oldrun").mkdir()
    (tmp_path / "oldrun" / "run.json").write_text('{"format": 0}')
    args = (
        ["report", "--out", "out", *PROBLEM, *argv]
        if "--out" not in argv
        else ["report", *PROBLEM, *argv]
    )
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxscape: error:") and message in err, err
    assert (tmp_path / "notarun" / "data.txt").read_text() == "mine"


def test_config_file_sets_flags_and_flags_override_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.toml").write_text(
        'optimizers = ["adam"]\nstages = ["train"]\nsteps = 10\nadam-lr = 0.01\nbatch_size = 32\n'
        'width = 8\nnum-examples = 120\nquiet = true\ndtype = "float64"\n'
    )
    assert cli.main(["report", "--config", "run.toml", "--out", "a", "--steps", "20"]) == 0
    r = json.loads((tmp_path / "a" / "results.json").read_text())
    assert r["options"]["steps"] == 20 and r["options"]["adam_lr"] == 0.01
    assert r["options"]["optimizers"] == ["adam"] and list(r["stages"]) == ["train-adam"]
    assert r["problem"]["dtype"] == "float64"
    assert r["problem"]["num_params"] == 64 * 8 + 8 + 8 * 8 + 8 + 8 * 10 + 10


def test_single_jobs_on_saved_params(cli_run, tmp_path, capsys):
    _, run = cli_run
    a, b = str(run / "params-init.npz"), str(run / "params-sgd.npz")
    common = [*PROBLEM, *_flags({k: v for k, v in TINY.items() if k != "steps"}), "--quiet"]
    assert (
        cli.main(["interpolate", "--out", str(tmp_path / "i"), "--params", a, "--end", b, *common])
        == 0
    )
    st = json.loads((tmp_path / "i" / "results.json").read_text())["stages"]
    assert list(st) == ["interpolation"]
    ref = json.loads((run / "results.json").read_text())["stages"]["interpolation"]["init-sgd"]
    assert st["interpolation"]["init-end"]["loss_end"] == pytest.approx(ref["loss_end"], rel=1e-6)
    assert (
        cli.main(["spectrum", "--out", str(tmp_path / "s"), "--params", b, "--no-train", *common])
        == 0
    )
    st = json.loads((tmp_path / "s" / "results.json").read_text())["stages"]
    assert list(st) == ["hessian-init"]
    assert str(tmp_path / "s" / "report.html") in capsys.readouterr().out


def test_list_names_models_data_and_experiments(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "deep-linear" in out and "mnist:PATH" in out and "experiments" in out


def test_params_files_round_trip(tmp_path, problem):
    save_params(tmp_path / "p.npz", problem.params)
    back = load_params(tmp_path / "p.npz", problem.params)
    assert jax.tree.all(
        jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), back, problem.params)
    )


def test_readme_problem_examples_load_and_report(tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "def make(" in b]
    assert len(blocks) == 3  # linen, NNX, plain JAX
    monkeypatch.chdir(tmp_path)
    for i, code in enumerate(blocks):
        (tmp_path / f"readme_problem_{i}.py").write_text(code)
        monkeypatch.syspath_prepend(str(tmp_path))
        problem = js.load_problem(f"readme_problem_{i}:make")
        assert float(problem.loss_fn(problem.params, problem.train)) > 0
    argv = ["report", "--problem", "readme_problem_2:make", "--problem-arg", "num_examples=64"]
    argv += ["--out", "plain", "--stages", "train", "--quiet", *_flags(TINY)]
    assert cli.main(argv) == 0
    r = json.loads((tmp_path / "plain" / "results.json").read_text())
    assert r["problem"]["num_train"] == 64 and r["problem"]["name"] == "readme_problem_2:make"


@pytest.mark.slow
def test_killed_training_resumes_to_the_clean_result(tmp_path):
    """SIGKILL the command while SGD trains (after its first checkpoint), rerun it: the result
    equals an uninterrupted run's."""
    import os
    import signal
    import subprocess
    import sys
    import time

    flags = [*PROBLEM, *_flags({**TINY, "steps": 3000}), "--stages", "train,interpolation"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}

    def command(out):
        return [sys.executable, "-m", "jaxscape", "report", "--out", str(out), "--quiet", *flags]

    clean = subprocess.run(command(tmp_path / "clean"), env=env, capture_output=True, timeout=600)
    assert clean.returncode == 0, clean.stderr
    proc = subprocess.Popen(command(tmp_path / "run"), env=env)
    deadline = time.time() + 300
    while not list((tmp_path / "run" / "stages").glob("train-sgd/work-*/checkpoints/*/")):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run" / "stages" / "train-sgd" / "record.json").exists()
    again = subprocess.run(command(tmp_path / "run"), env=env, capture_output=True, timeout=600)
    assert again.returncode == 0, again.stderr
    a = json.loads((tmp_path / "clean" / "results.json").read_text())["stages"]
    b = json.loads((tmp_path / "run" / "results.json").read_text())["stages"]
    assert _strip(a) == _strip(b)


def test_bench_runs_each_benchmark_script(monkeypatch, tmp_path):
    calls = []

    def fake_run(cmd, check):
        calls.append(cmd)
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(cli.subprocess, "run", fake_run)
    assert cli.main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    scripts = sorted(Path(c[1]).name for c in calls)
    folder = Path(cli.__file__).resolve().parents[1] / "benchmarks"
    assert scripts == sorted(p.name for p in folder.glob("bench_*.py"))
    assert {"bench_hvp.py", "bench_landscape.py", "bench_train.py", "bench_distributed.py"} <= set(
        scripts
    )
    assert all(c[-1] == "--quick" and str(tmp_path) in c for c in calls)
