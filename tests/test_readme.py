"""The README's self-contained examples run as written (blocks that start with an import and
have no ``...`` placeholder), so they cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import jax
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = [
    b
    for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    if b.startswith("import") and "= ..." not in b
]


def test_readme_has_runnable_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("code", BLOCKS, ids=[b.splitlines()[-1][:40] for b in BLOCKS])
def test_readme_example_runs(code):
    pytest.importorskip("sklearn")
    # a user's default configuration, not the suite's float64 + strict promotion
    with jax.numpy_dtype_promotion("standard"), jax.enable_x64(False):
        exec(compile(code, str(README), "exec"), {})
