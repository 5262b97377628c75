"""Run folders: finished stages load, changed options recompute only what depends on them,
interrupted stages leave no record, foreign or incompatible folders are refused."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from jaxscape import runfolder
from jaxscape.runfolder import RunFolder

ROOT = Path(__file__).resolve().parents[1]


class Counter:
    """A stage body that counts its calls and returns arrays derived from its options."""

    def __init__(self):
        self.calls = 0

    def __call__(self, scale):
        def compute(workdir):
            self.calls += 1
            assert workdir.is_dir()
            x = np.arange(4, dtype=np.float64) * scale
            return {"total": x.sum(), "ok": np.bool_(True), "inf": np.inf}, {"x": x}

        return compute


def test_stages_load_when_unchanged_and_recompute_downstream_only(tmp_path):
    a, b, c = Counter(), Counter(), Counter()

    def pipeline(scale_a, scale_c):
        run = RunFolder(tmp_path, command=["jaxscape", "report"])
        ra = run.run("a", {"scale": scale_a}, a(scale_a))
        rb = run.run("b", {"scale": 2.0}, b(2.0), depends=[ra])
        rc = run.run("c", {"scale": scale_c}, c(scale_c))
        return ra, rb, rc

    first = pipeline(1.0, 3.0)
    assert (a.calls, b.calls, c.calls) == (1, 1, 1) and not first[0].cached
    again = pipeline(1.0, 3.0)
    assert (a.calls, b.calls, c.calls) == (1, 1, 1) and all(r.cached for r in again)
    np.testing.assert_array_equal(again[1].arrays["x"], first[1].arrays["x"])
    assert again[0].results == {"total": 6.0, "ok": True, "inf": "Infinity"}
    pipeline(5.0, 3.0)  # a changed: a and b (downstream) rerun, c does not
    assert (a.calls, b.calls, c.calls) == (2, 2, 1)
    pipeline(5.0, 4.0)
    assert (a.calls, b.calls, c.calls) == (2, 2, 2)
    stage_a = tmp_path / "stages" / "a"
    assert sorted(p.name for p in stage_a.iterdir())[1:] == ["record.json"]  # one npz, no work
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["format"] == runfolder.FORMAT and meta["command"] == ["jaxscape", "report"]
    assert set(RunFolder(tmp_path).records()) == {"a", "b", "c"}


def test_an_interrupted_stage_leaves_no_record_and_its_scratch_survives(tmp_path):
    run = RunFolder(tmp_path)
    seen = []

    def crashing(workdir):
        (workdir / "checkpoint").write_text("half done")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run.run("train", {"steps": 10}, crashing)
    assert not (tmp_path / "stages" / "train" / "record.json").exists()

    def resuming(workdir):
        seen.append((workdir / "checkpoint").read_text())
        return {"loss": 0.5}, {}

    record = RunFolder(tmp_path).run("train", {"steps": 10}, resuming)
    assert seen == ["half done"] and record.results == {"loss": 0.5}
    assert not any(p.name.startswith("work-") for p in (tmp_path / "stages" / "train").iterdir())


def test_a_kill_during_save_keeps_the_old_record(tmp_path):
    """SIGKILL between writing the arrays and replacing record.json: the old record stays."""
    run = RunFolder(tmp_path)
    run.run("s", {"v": 1}, lambda w: ({"v": 1}, {"x": np.ones(3)}))
    script = textwrap.dedent(
        f"""
        import os, signal, numpy as np
        from jaxscape import runfolder
        real = runfolder._write_json
        def dying(path, obj):
            if path.name == "record.json":
                os.kill(os.getpid(), signal.SIGKILL)
            real(path, obj)
        runfolder._write_json = dying
        run = runfolder.RunFolder({str(tmp_path)!r})
        run.run("s", {{"v": 2}}, lambda w: ({{"v": 2}}, {{"x": np.zeros(3)}}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], env={"PYTHONPATH": str(ROOT)})
    assert proc.returncode == -9
    run = RunFolder(tmp_path)
    old = run.load("s", run.stage_key("s", {"v": 1}))
    assert old is not None and old.results == {"v": 1}
    np.testing.assert_array_equal(old.arrays["x"], np.ones(3))
    assert run.load("s", run.stage_key("s", {"v": 2})) is None


def test_foreign_and_incompatible_folders_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a jaxscape run folder"):
        RunFolder(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    old = tmp_path / "old"
    old.mkdir()
    (old / "run.json").write_text(json.dumps({"format": 0, "jaxscape": "0.0.1"}))
    with pytest.raises(ValueError, match=r"format 0 .*another output folder"):
        RunFolder(old)
    with pytest.raises(ValueError, match="invalid stage name"):
        RunFolder(tmp_path / "new").run("../x", {}, lambda w: ({}, {}))
    with pytest.raises(TypeError, match="cannot store"):
        RunFolder(tmp_path / "new2").run("s", {"f": object()}, lambda w: ({}, {}))


def test_experiment_flags_positive_and_parser(tmp_path, capsys):
    """``experiment.positive`` argparse types name the flag and the bound; ``parser`` defaults."""
    from jaxscape import experiment

    p = experiment.parser("demo", "a demo")
    p.add_argument("--width", type=experiment.positive())
    p.add_argument("--lr", type=experiment.positive(float))
    p.add_argument("--polish", type=experiment.positive(minimum=0))
    args = p.parse_args(["--width", "3", "--lr", "1e-3", "--polish", "0"])
    assert (args.width, args.lr, args.polish) == (3, 1e-3, 0)
    assert args.out == "runs/experiments/demo" and not args.quick and args.seed == 0
    for argv, message in (
        (["--width", "0"], "argument --width: expected an integer > 0, got 0"),
        (["--width", "2.5"], "argument --width: expected an integer > 0, got '2.5'"),
        (["--lr", "inf"], "argument --lr: expected a number > 0, got inf"),
        (["--polish", "-1"], "argument --polish: expected an integer >= 0, got -1"),
    ):
        with pytest.raises(SystemExit):
            p.parse_args(argv)
        assert message in capsys.readouterr().err


def test_experiment_settings_take_given_flags_only():
    import argparse

    from jaxscape import experiment

    quick, full = {"width": 4, "lr": 0.1}, {"width": 32, "lr": 0.1}
    args = argparse.Namespace(quick=False, width=None, lr=0.5)
    assert experiment.settings(args, quick, full, ["width", "lr"]) == {"width": 32, "lr": 0.5}
    args = argparse.Namespace(quick=True, width=8, lr=None)
    assert experiment.settings(args, quick, full, ["width", "lr"]) == {"width": 8, "lr": 0.1}
    assert quick == {"width": 4, "lr": 0.1}  # the defaults are not changed in place
