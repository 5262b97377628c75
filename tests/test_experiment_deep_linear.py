"""experiments/deep_linear.py --quick: the scientific claims, read back from results.json."""

from __future__ import annotations

import itertools
import json

import jax.numpy as jnp
import numpy as np
from experiment_scripts import load

from jaxscape.toys import linear


def test_deep_linear_quick(tmp_path):
    out = tmp_path / "run"
    assert load("deep_linear").main(["--quick", "--out", str(out), "--quiet"]) == 0
    run = json.loads((out / "results.json").read_text())
    res = run["results"]
    assert (out / "deep_linear.png").is_file()

    # 1. Hessian at the origin: strict saddle at depth 2 (±2 for L = (1 - w₁w₂)², the library's
    # closed form), exactly zero from depth 3 on.
    chain = res["hessian"]["chain"]
    closed = np.linalg.eigvalsh(np.asarray(linear.deep_linear_chain_hessian(jnp.zeros(2))))
    np.testing.assert_allclose(closed, [-2.0, 2.0])
    np.testing.assert_allclose(chain["2"]["eigenvalues"], closed, atol=1e-12)
    assert chain["2"]["kind"] == "saddle" and chain["2"]["hessian_kind"] == "saddle"
    deep = [k for k in chain if int(k) >= 3]
    assert deep
    for k in deep:
        assert chain[k]["eigenvalues"] == [0.0] * int(k)
        assert chain[k]["hessian_kind"] == "degenerate"
    for k, rec in chain.items():
        assert rec["max_abs_diff_closed_form"] < 1e-12, k
    # matrix net, depth 2: ±s_α, each hidden_dim times
    mat = res["hessian"]["matrix"]["2"]
    assert mat["max_abs_diff_expected"] < 1e-10 and mat["hessian_kind"] == "saddle"

    # 2. plateau steps grow (strictly) with depth, and match the gradient-flow time
    plat = res["plateaus"]
    steps = plat["steps_to_threshold"]
    assert None not in steps and plat["monotone"]
    assert all(b > a for a, b in itertools.pairwise(steps))
    np.testing.assert_allclose(steps, plat["gradient_flow_steps"], rtol=0.1, atol=2)
    assert plat["growth_factor_per_layer"] > 1.2

    # 3. two-layer learning curves within 5% of s_max of Saxe et al.'s closed form (the gap is
    # the O(lr) difference between gradient descent and gradient flow), half-times within 5%
    saxe = res["saxe"]
    assert saxe["max_mode_deviation_rel"] < 0.05
    assert saxe["max_loss_deviation_rel"] < 0.05
    np.testing.assert_allclose(saxe["half_time_measured"], saxe["half_time_closed"], rtol=0.05)

    # 4. the residual parameterization reaches the threshold in fewer steps than the plain one
    resid = res["residual"]
    for k in map(str, resid["depths"]):
        plain, residual = resid["plain"][k]["steps_to_threshold"], resid["residual"][k]
        assert residual["steps_to_threshold"] is not None
        assert plain is None or residual["steps_to_threshold"] < plain / 3
