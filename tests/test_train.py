"""The training loop: what it records, determinism, resume after a kill, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import rel_err

from jaxscape import data, models, train

F64 = jnp.float64
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def standard_promotion():
    """Optax's own updates (Adam's bias correction) mix dtypes; the rest stays strict-checked."""
    with jax.numpy_dtype_promotion("standard"):
        yield


def same(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))


def quadratic(params, batch):
    """½ Σ λ_i θ_i² with λ = (1, 4): GD with step η maps θ_i to (1 − ηλ_i) θ_i."""
    return 0.5 * jnp.sum(jnp.asarray([1.0, 4.0], F64) * params**2)


def mixture_problem(n=96):
    x, y = data.gaussian_mixture(jax.random.key(0), num_examples=n, dim=4, num_classes=3, dtype=F64)
    model = models.MLP((8, 3), dtype=F64)
    params, _ = models.init_model(jax.random.key(1), model, x[:1])
    return models.cross_entropy_loss(model), params, (x, y)


# --------------------------------------------------------------------------- what is recorded


def test_full_batch_gd_follows_closed_form():
    theta0 = jnp.asarray([1.0, -2.0], F64)
    lr, lam = 0.1, np.asarray([1.0, 4.0])
    res = train.fit(
        jax.random.key(0), quadratic, theta0, optax.sgd(lr), num_steps=30, record_every=5
    )
    t = np.arange(0, 31, 5)
    np.testing.assert_array_equal(res.history.step, t)
    want = np.asarray(theta0)[None] * (1 - lr * lam)[None] ** t[:, None]
    np.testing.assert_allclose(res.history.params, want, rtol=1e-12)
    np.testing.assert_allclose(res.history.loss, 0.5 * (lam * want**2).sum(1), rtol=1e-12)
    np.testing.assert_allclose(
        res.history.grad_norm, np.linalg.norm(lam * want, axis=1), rtol=1e-12
    )
    assert same(res.params, res.history.params[-1]) and res.finite


def test_records_minibatch_loss_and_trajectory():
    loss_fn, params, batch = mixture_problem()
    key = jax.random.key(3)
    res = train.fit(
        key,
        loss_fn,
        params,
        optax.adam(1e-2),
        batch,
        num_steps=40,
        batch_size=16,
        record_every=10,
        steps_per_chunk=20,
    )
    h = res.history
    assert h.step.tolist() == [0, 10, 20, 30, 40]
    assert same(jax.tree.map(lambda x: x[0], h.params), params)
    assert same(jax.tree.map(lambda x: x[-1], h.params), res.params)

    @jax.jit
    def at(p, t):
        b = data.minibatch(key, batch, t, batch_size=16)
        loss, g = jax.value_and_grad(loss_fn)(p, b)
        return loss, optax.tree_utils.tree_norm(g)

    for i, t in enumerate(h.step):
        loss, gnorm = at(jax.tree.map(lambda x, i=i: x[i], h.params), t)
        assert abs(h.loss[i] - float(loss)) < 1e-12
        assert abs(h.grad_norm[i] - float(gnorm)) < 1e-12
    assert h.loss[-1] < h.loss[0]


def test_same_key_same_run_other_key_other_run():
    loss_fn, params, batch = mixture_problem()
    kw = dict(num_steps=20, batch_size=16, record_every=10)
    a = train.fit(jax.random.key(5), loss_fn, params, optax.sgd(0.1), batch, **kw)
    b = train.fit(jax.random.key(5), loss_fn, params, optax.sgd(0.1), batch, **kw)
    c = train.fit(jax.random.key(6), loss_fn, params, optax.sgd(0.1), batch, **kw)
    assert same(a, b)
    assert not same(a.params, c.params)


def test_callbacks_and_sharpness():
    theta0 = jnp.asarray([1.0, 1.0], F64)
    calls = {
        "lambda_max": train.top_eigenvalue_callback(
            jax.random.key(0), quadratic, None, num_iters=2
        ),
        "step_twice": lambda p, s, t: 2 * t,
    }
    res = train.fit(
        jax.random.key(1),
        quadratic,
        theta0,
        optax.sgd(0.05),
        num_steps=4,
        record_every=2,
        callbacks=calls,
    )
    np.testing.assert_allclose(res.history.metrics["lambda_max"], 4.0, rtol=1e-12)
    np.testing.assert_array_equal(res.history.metrics["step_twice"], [0, 4, 8])


def test_batchnorm_state_trains_in_train_mode():
    x, y = data.gaussian_mixture(jax.random.key(0), num_examples=64, dim=4, dtype=F64)
    model = models.MLP((8, 4), norm="batch", dtype=F64)
    params, state = models.init_model(jax.random.key(1), model, x[:2])
    res = train.fit(
        jax.random.key(2),
        models.model_loss(model, train=True),
        params,
        optax.adam(1e-2),
        (x, y),
        num_steps=30,
        batch_size=16,
        record_every=10,
        state=state,
    )
    stats = res.state["batch_stats"]["Norm_0"]
    assert rel_err(stats["mean"], state["batch_stats"]["Norm_0"]["mean"]) > 0.01
    eval_loss = models.cross_entropy_loss(model, state=res.state)
    assert float(eval_loss(res.params, (x, y))) < float(
        models.cross_entropy_loss(model, state=state)(params, (x, y))
    )


def test_digits_mlp_reaches_90_percent():
    pytest.importorskip("sklearn")
    digits = data.load_digits(layout="flat", dtype=F64)
    train_set, test_set = data.train_test_split(jax.random.key(0), digits, test_fraction=0.25)
    model = models.MLP((64, 10), activation=jax.nn.relu, dtype=F64)
    params, _ = models.init_model(jax.random.key(1), model, train_set.x[:1])
    res = train.fit(
        jax.random.key(2),
        models.cross_entropy_loss(model),
        params,
        optax.adam(1e-2),
        train_set,
        num_steps=400,
        batch_size=64,
        record_every=100,
    )
    acc = float(models.accuracy(model)(res.params, test_set))
    assert acc > 0.90, acc


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "layout", "threshold"),
    [("cnn", "image", 0.85), ("lstm", "sequence", 0.9), ("residual_bn_mlp", "flat", 0.9)],
)
def test_every_model_family_learns_digits(name, layout, threshold):
    """Each architecture trains with fit (BatchNorm in train mode) to a useful test accuracy
    (measured 2026-11-22, 600 Adam steps: CNN 0.918, LSTM 0.976, residual BN MLP 0.976)."""
    pytest.importorskip("sklearn")
    model = {
        "cnn": models.CNN((16, 32), 10),
        "lstm": models.LSTMClassifier(64, 10),
        "residual_bn_mlp": models.MLP((64, 64, 64, 10), jax.nn.relu, residual=True, norm="batch"),
    }[name]
    split = data.train_test_split(
        jax.random.key(0), data.load_digits(layout=layout), test_fraction=0.25
    )
    params, state = models.init_model(jax.random.key(1), model, split.train.x[:2])
    loss_fn = models.model_loss(model, train=True) if state else models.cross_entropy_loss(model)
    res = train.fit(
        jax.random.key(2),
        loss_fn,
        params,
        optax.adam(3e-3),
        split.train,
        num_steps=600,
        batch_size=64,
        record_every=100,
        state=state or None,
    )
    acc = float(models.accuracy(model, state=res.state)(res.params, split.test))
    assert acc > threshold, acc


def test_compare_optimizers_sees_the_same_batches():
    loss_fn, params, batch = mixture_problem()
    runs = train.compare_optimizers(
        jax.random.key(4),
        loss_fn,
        params,
        {
            "sgd": optax.sgd(0.1),
            "momentum0": optax.sgd(0.1, momentum=0.0),
            "adam": optax.adam(1e-2),
        },
        batch,
        num_steps=20,
        batch_size=16,
        record_every=10,
    )
    assert list(runs) == ["sgd", "momentum0", "adam"]
    assert same(runs["sgd"].params, runs["momentum0"].params)  # identical updates, same batches
    assert not same(runs["sgd"].params, runs["adam"].params)
    with pytest.raises(ValueError, match="`optimizers` is empty"):
        train.compare_optimizers(jax.random.key(4), loss_fn, params, {}, batch, num_steps=1)


# --------------------------------------------------------------------------- checkpoints


KILL_SCRIPT = """
import sys
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, optax
from jaxscape import data, models, train
x, y = data.gaussian_mixture(jax.random.key(0), num_examples=96, dim=4, num_classes=3,
                             dtype=jnp.float64)
model = models.MLP((8, 3), dtype=jnp.float64)
params, _ = models.init_model(jax.random.key(1), model, x[:1])
with jax.numpy_dtype_promotion("standard"):
    train.fit(jax.random.key(7), models.cross_entropy_loss(model), params, optax.adam(1e-2),
              (x, y), checkpoint_dir=sys.argv[1], **KW)
"""
KW = dict(num_steps=600, batch_size=16, record_every=5, steps_per_chunk=10)


def test_killed_run_resumes_bit_for_bit(tmp_path):
    folder = tmp_path / "ckpt"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(KILL_SCRIPT).replace("**KW", f"**{KW!r}"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(folder)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        steps = (
            [int(p.name) for p in folder.glob("*") if p.name.isdigit()] if folder.exists() else []
        )
        if steps and max(steps) >= 50:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    out = proc.communicate()[0].decode()
    steps = sorted(int(p.name) for p in folder.glob("*") if p.name.isdigit())
    assert steps and 0 < steps[-1] < KW["num_steps"], (steps, out[-2000:])  # killed mid-run

    loss_fn, params, batch = mixture_problem()
    args = (jax.random.key(7), loss_fn, params, optax.adam(1e-2), batch)
    resumed = train.fit(*args, checkpoint_dir=folder, **KW)
    straight = train.fit(*args, **KW)
    assert same(resumed.params, straight.params)
    assert same(resumed.opt_state, straight.opt_state)
    assert same(resumed.history, straight.history)
    assert len(resumed.history.step) == KW["num_steps"] // KW["record_every"] + 1


def keyed_noise(key, scale):
    """A transformation whose state holds a typed PRNG key, split at every step."""

    def init(params):
        return key

    def update(updates, state, params=None):
        state, sub = jax.random.split(state)
        noise = jax.random.normal(sub, updates.shape, updates.dtype)
        return -0.1 * updates + scale * noise, state

    return optax.GradientTransformation(init, update)


def test_checkpoints_hold_typed_keys_in_the_optimizer_state(tmp_path):
    theta0 = jnp.asarray([1.0, -2.0], F64)
    opt = keyed_noise(jax.random.key(3), 1e-2)
    kw = dict(record_every=5, steps_per_chunk=10)
    train.fit(
        jax.random.key(0), quadratic, theta0, opt, num_steps=20, checkpoint_dir=tmp_path, **kw
    )
    longer = train.fit(
        jax.random.key(0), quadratic, theta0, opt, num_steps=40, checkpoint_dir=tmp_path, **kw
    )
    straight = train.fit(jax.random.key(0), quadratic, theta0, opt, num_steps=40, **kw)
    assert same(longer.params, straight.params) and same(longer.history, straight.history)
    assert jax.random.key_impl(longer.opt_state) == jax.random.key_impl(straight.opt_state)
    assert same(jax.random.key_data(longer.opt_state), jax.random.key_data(straight.opt_state))


def test_extending_a_finished_run_and_refusing_another(tmp_path):
    loss_fn, params, batch = mixture_problem()
    args = (jax.random.key(8), loss_fn, params, optax.sgd(0.1), batch)
    kw = dict(batch_size=16, record_every=10, steps_per_chunk=20)
    train.fit(*args, num_steps=40, checkpoint_dir=tmp_path, **kw)
    again = train.fit(*args, num_steps=40, checkpoint_dir=tmp_path, **kw)  # restored, not rerun
    longer = train.fit(*args, num_steps=80, checkpoint_dir=tmp_path, **kw)
    straight = train.fit(*args, num_steps=80, **kw)
    assert same(again.history, jax.tree.map(lambda x: x[:5], straight.history))
    assert same(longer.history, straight.history) and same(longer.params, straight.params)
    with pytest.raises(ValueError, match="past num_steps=40"):
        train.fit(*args, num_steps=40, checkpoint_dir=tmp_path, **kw)
    other = (jax.random.key(9), *args[1:])
    with pytest.raises(ValueError, match="holds a different run"):
        train.fit(*other, num_steps=80, checkpoint_dir=tmp_path, **kw)


# --------------------------------------------------------------------------- bad input


def test_divergence_is_reported_not_recorded_as_data():
    theta0 = jnp.asarray([1.0, 1.0], F64)
    with pytest.raises(FloatingPointError, match="non-finite at step"):
        train.fit(
            jax.random.key(0), quadratic, theta0, optax.sgd(1e200), num_steps=20, record_every=2
        )
    res = train.fit(
        jax.random.key(0),
        quadratic,
        theta0,
        optax.sgd(1e200),
        num_steps=20,
        record_every=2,
        on_nonfinite="stop",
    )
    assert not res.finite and not np.all(np.isfinite(res.history.loss))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(num_steps=10, record_every=3), ValueError, r"multiple of `record_every` \(3\)"),
        (dict(num_steps=10, record_every=5, steps_per_chunk=7), ValueError, "steps_per_chunk"),
        (dict(num_steps=10, batch_size=500), ValueError, "batch_size"),
        (dict(num_steps=-1), ValueError, "num_steps"),
        (dict(num_steps=10, on_nonfinite="ignore"), ValueError, "on_nonfinite"),
        (dict(num_steps=10, state={"s": jnp.zeros(2)}), TypeError, "loss_fn"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    loss_fn, params, batch = mixture_problem()
    with pytest.raises(error, match=match):
        train.fit(jax.random.key(0), loss_fn, params, optax.sgd(0.1), batch, **kwargs)


def test_bad_loss_and_optimizer():
    loss_fn, params, batch = mixture_problem()
    vector_loss = lambda p, b: jnp.zeros(3, F64)  # noqa: E731
    with pytest.raises(ValueError, match="real scalar"):
        train.fit(jax.random.key(0), vector_loss, params, optax.sgd(0.1), batch, num_steps=1)
    with pytest.raises(TypeError, match="GradientTransformation"):
        train.fit(jax.random.key(0), loss_fn, params, lambda g: g, batch, num_steps=1)
    with pytest.raises(ValueError, match="`batch_size` given but `data` is None"):
        train.fit(
            jax.random.key(0),
            quadratic,
            jnp.ones(2, F64),
            optax.sgd(0.1),
            num_steps=1,
            batch_size=4,
        )


def test_progress_bar_runs(capsys):
    theta0 = jnp.asarray([1.0, 1.0], F64)
    res = train.fit(
        jax.random.key(0),
        quadratic,
        theta0,
        optax.sgd(0.1),
        num_steps=20,
        record_every=5,
        steps_per_chunk=10,
        progress=True,
    )
    assert res.finite
    assert "steps/s" in capsys.readouterr().err


def test_second_call_reuses_the_compiled_loop():
    loss_fn, params, batch = mixture_problem()
    opt = optax.sgd(0.1)
    kw = dict(num_steps=20, batch_size=16, record_every=10)
    train.fit(jax.random.key(0), loss_fn, params, opt, batch, **kw)
    size = train._run_chunk._cache_size()
    train.fit(jax.random.key(1), loss_fn, params, opt, batch, **kw)  # another seed
    assert train._run_chunk._cache_size() == size
    train.fit(jax.random.key(1), loss_fn, params, optax.sgd(0.1), batch, **kw)  # new object
    assert train._run_chunk._cache_size() == size + 1
