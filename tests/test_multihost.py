"""examples/multihost.py on two processes that talk over loopback (2 CPU devices each, gloo
collectives), against one process with 4 devices and one with 1 device: the same numbers in
float64, results written once by process 0, and a rerun that loads every stage."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "multihost.py"
STAGES = ("loss", "hessian", "density", "line")


def _env():
    return {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _single(out: Path, devices: int) -> dict:
    cmd = [sys.executable, str(SCRIPT), "--quick", "--float64", "--out", str(out),
           "--local-devices", str(devices)]  # fmt: skip
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


def _two_processes(out: Path) -> list[subprocess.CompletedProcess]:
    port = _free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                "--quick",
                "--float64",
                "--out",
                str(out),
                "--local-devices",
                "2",
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    done = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=300)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    finally:
        for p in procs:
            p.kill()
    for p in done:
        assert p.returncode == 0, p.stderr[-3000:]
    return done


def _numbers(res: dict) -> np.ndarray:
    r = res["results"]
    return np.concatenate([
        [r["loss"]["loss"], r["loss"]["grad_norm"], r["density"]["negative_fraction"]],
        r["hessian"]["eigenvalues"], r["line"]["loss"],
    ])  # fmt: skip


def test_single_process_run_and_resume(tmp_path):
    """In this process (1 device): every stage runs, then a rerun loads every stage."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("multihost_example", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = mod.parse(["--quick", "--float64", "--out", str(tmp_path / "run")])
    assert mod.analyse(args) == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert not any(res["cached"].values()) and set(res["cached"]) == set(STAGES)
    eig = np.asarray(res["results"]["hessian"]["eigenvalues"])
    assert np.all(np.diff(eig) >= 0) and eig[-1] > 0  # ascending, a positive top
    assert mod.analyse(args) == 0
    res2 = json.loads((tmp_path / "run" / "results.json").read_text())
    assert all(res2["cached"].values()) and res2["results"] == res["results"]


@pytest.mark.slow  # about 2.5 min on 2 cores: four subprocesses start JAX and compile
def test_two_processes_equal_one_process_and_resume(tmp_path):
    one = _single(tmp_path / "one", 1)
    four = _single(tmp_path / "four", 4)
    assert four["devices"]["device_count"] == 4 and four["devices"]["process_count"] == 1

    out = tmp_path / "two"
    first = _two_processes(out)
    res = json.loads((out / "results.json").read_text())
    assert res["devices"]["process_count"] == 2 and res["devices"]["device_count"] == 4
    assert not any(res["cached"].values())
    # only process 0 wrote and printed the path; process 1 computed and wrote nothing
    assert "results:" in first[0].stdout and "results:" not in first[1].stdout
    assert all(f"[{s}]" in first[0].stdout for s in STAGES)
    assert not any(f"[{s}]" in first[1].stdout for s in STAGES)

    ref = _numbers(one)
    for other in (four, res):
        np.testing.assert_allclose(_numbers(other), ref, rtol=1e-10, atol=1e-12)

    again = _two_processes(out)
    res2 = json.loads((out / "results.json").read_text())
    assert all(res2["cached"][s] for s in STAGES)
    assert all(f"[{s}] cached" in again[0].stdout for s in STAGES)
    np.testing.assert_array_equal(_numbers(res2), _numbers(res))
