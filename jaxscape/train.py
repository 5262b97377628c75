"""A compiled, resumable Optax training loop that records where the optimizer went.

``fit`` runs ``lax.scan`` over steps inside jitted chunks; between chunks it checkpoints (Orbax)
and updates a progress bar. Every ``record_every`` steps it records the params (the trajectory,
params with a leading time axis), the loss and gradient norm, and any callbacks — the raw
material for trajectory plots, interpolation from initialization, and sharpness against ``2/η``
(Cohen et al. 2021). ``compare_optimizers`` trains one initialization with several optimizers on
the same minibatch sequence.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxscape._checks import (
    check_choice,
    check_key,
    check_optimizer,
    check_params,
    check_positive_int,
)
from jaxscape.data import epoch_indices, minibatch

PyTree = Any
Callback = Callable[[PyTree, PyTree, jax.Array], PyTree]


class History(NamedTuple):
    """What ``fit`` recorded at steps ``0, record_every, 2·record_every, …, num_steps``.

    Attributes:
      step: ``(R,)`` step indices ``t``; the params recorded at ``t`` are those *before* update
        ``t`` (``t = 0`` is the initialization, ``t = num_steps`` the result).
      loss: ``(R,)`` loss at ``θ_t`` on the minibatch of step ``t`` (the optimizer's own view;
        the full-batch loss when ``batch_size`` is ``None``; train mode with a ``state``).
      grad_norm: ``(R,)`` Euclidean norm of that minibatch gradient.
      params: the trajectory, params with a leading ``R`` axis (``None`` with
        ``record_params=False``).
      metrics: ``{name: (R, ...)}``, the callbacks' values at ``θ_t``.
    """

    step: np.ndarray
    loss: np.ndarray
    grad_norm: np.ndarray
    params: PyTree
    metrics: dict[str, Any]


class FitResult(NamedTuple):
    """``fit``'s result: final ``params``, ``opt_state``, ``state``, the ``history``, and
    ``finite`` (``False`` when a non-finite loss stopped the run, ``on_nonfinite="stop"``)."""

    params: PyTree
    opt_state: PyTree
    state: PyTree
    history: History
    finite: bool


def fit(
    key: jax.Array,
    loss_fn: Callable[..., Any],
    params: PyTree,
    optimizer: optax.GradientTransformation,
    data: PyTree = None,
    *,
    num_steps: int,
    batch_size: int | None = None,
    record_every: int | None = None,
    callbacks: Mapping[str, Callback] | None = None,
    state: PyTree = None,
    record_params: bool = True,
    steps_per_chunk: int | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool | None = None,
    on_nonfinite: str = "raise",
) -> FitResult:
    """Train ``params`` with an Optax ``optimizer``: ``θ_{t+1} = θ_t + update(∇L_{B_t}(θ_t))``.

    Step ``t`` uses minibatch ``B_t = data.minibatch(key, data, t, batch_size=...)``: each
    example once per epoch, a pure function of ``(key, t)`` — so the same key gives the same
    run, and a resumed run sees the same batches. Steps run in chunks of ``steps_per_chunk``,
    each one compiled ``lax.scan``; with ``checkpoint_dir`` each finished chunk is saved with
    Orbax and a rerun with the same arguments resumes from the last one, ending with the same
    params and history, bit for bit on CPU, as an uninterrupted run. A larger ``num_steps``
    with the same folder continues a finished run. The compiled loop is cached on the identity
    of ``loss_fn``, ``optimizer`` and the callbacks: reuse the same objects across calls (seeds,
    resumes) and only the first call compiles.

    Args:
      key: PRNG key for the minibatch order.
      loss_fn: ``loss_fn(params, batch) -> scalar``; with ``state``, the train-mode form
        ``loss_fn(params, batch, state) -> (loss, new_state)`` (``models.model_loss(...,
        train=True)``, e.g. BatchNorm statistics).
      params: initial params (a pytree of float arrays).
      optimizer: an ``optax.GradientTransformation``. A ``GradientTransformationExtraArgs``
        (``optax.lbfgs``, ``jaxscape.optim.saddle_free_newton``, ...) is also given
        ``value``, ``grad`` and ``value_fn`` (the minibatch loss as a function of params).
      data: a pytree of arrays sharing a leading example axis (``(x, y)``), or ``None`` for
        losses without data (``loss_fn(params, None)``, e.g. the toys).
      num_steps: optimizer steps, a multiple of ``record_every``.
      batch_size: minibatch size; ``None`` is full-batch gradient descent.
      record_every: steps between records (default ``max(1, num_steps // 100)``).
      callbacks: ``{name: fn(params, state, step) -> array or pytree}`` evaluated (compiled)
        at every record, e.g. ``top_eigenvalue_callback`` or the full-data loss.
      state: non-trained variables (``{"batch_stats": ...}``), updated by train-mode steps.
      record_params: keep the trajectory (memory ``R × num_params``).
      steps_per_chunk: steps per compiled call and per checkpoint, a multiple of
        ``record_every`` (default about 1000 steps).
      checkpoint_dir: folder for checkpoints (created); resumed from when it holds this run.
      progress: rich progress bar with loss and steps/s; ``None`` shows it for runs of more
        than one chunk on a terminal.
      on_nonfinite: ``"raise"`` a ``FloatingPointError`` naming the step, or ``"stop"`` and
        return what was recorded up to the chunk that went non-finite with ``finite=False``.

    Returns:
      ``FitResult(params, opt_state, state, history, finite)``; see ``History``.
    """
    fn = "fit"
    check_key(fn, key)
    check_params(fn, params)
    check_optimizer(fn, optimizer)
    num_steps = check_positive_int(fn, "num_steps", num_steps, minimum=0)
    every = max(1, num_steps // 100) if record_every is None else record_every
    every = check_positive_int(fn, "record_every", every)
    if num_steps % every:
        raise ValueError(
            f"{fn}: `num_steps` ({num_steps}) must be a multiple of `record_every` ({every})."
        )
    chunk = every * max(1, 1000 // every) if steps_per_chunk is None else steps_per_chunk
    if check_positive_int(fn, "steps_per_chunk", chunk) % every:
        raise ValueError(
            f"{fn}: `steps_per_chunk` ({chunk}) must be a multiple of `record_every` ({every})."
        )
    check_choice(fn, "on_nonfinite", on_nonfinite, ("raise", "stop"))
    callbacks = dict(callbacks or {})
    _check_batching(fn, key, data, batch_size)
    loop = _Loop(
        loss_fn,
        state is not None,
        optimizer,
        data is not None,
        batch_size,
        every,
        tuple(callbacks.items()),
        record_params,
    )
    _check_loss(fn, loop, params, state, key, data)
    opt_state = optimizer.init(params)
    carry, records, done = (params, opt_state, state), [], 0
    store = None
    if checkpoint_dir is not None:
        config = (batch_size, every, chunk, record_params, sorted(callbacks))
        store = _Checkpoints(Path(checkpoint_dir), _fingerprint(key, carry, data, *config))
        template = jax.eval_shape(_final_record, loop, carry, key, data, jnp.int32(0))
        restored = store.restore(carry, template, num_steps)
        if restored is not None:
            carry, records, done = restored
    bar = _Progress(num_steps, done, progress, (num_steps - done) > chunk)
    finite = True
    with bar:
        while done < num_steps:
            num = min(chunk, num_steps - done) // every
            carry, recs = _run_chunk(loop, carry, key, data, jnp.int32(done), num)
            records.append(jax.device_get(recs))
            done += num * every
            finite = bool(np.all(np.isfinite(records[-1]["loss"])))
            if not finite:
                break
            if store is not None and done < num_steps:
                store.save(done, carry, records)
            bar.update(done, float(records[-1]["loss"][-1]))
        if finite:
            last = _final_record(loop, carry, key, data, jnp.int32(done))
            records.append(_add_axis(jax.device_get(last)))
            finite = bool(np.isfinite(records[-1]["loss"][0]))
            if store is not None and finite:
                store.save(done, carry, records)
    history = _history(records)
    if not finite:
        bad = int(history.step[~np.isfinite(history.loss)][0])
        if on_nonfinite == "raise":
            raise FloatingPointError(
                f"{fn}: the loss became non-finite at step {bad} (learning rate too large? "
                "pass on_nonfinite='stop' to keep the history up to there)."
            )
    params, opt_state, state = carry
    return FitResult(params, opt_state, state, history, finite)


def compare_optimizers(
    key: jax.Array,
    loss_fn: Callable[..., Any],
    params: PyTree,
    optimizers: Mapping[str, optax.GradientTransformation],
    data: PyTree = None,
    *,
    checkpoint_dir: str | Path | None = None,
    **fit_kwargs: Any,
) -> dict[str, FitResult]:
    """Train one initialization with each optimizer, on the same minibatch sequence.

    ``{name: fit(key, loss_fn, params, optimizer, data, **fit_kwargs)}``: the same key means
    the same batches in the same order, so the solutions differ only by the optimizer — the
    setting of basin comparisons (e.g. Adam versus SGD minima, Keskar et al. 2017; Wilson et al.
    2017). With ``checkpoint_dir`` each optimizer checkpoints to its own subfolder.

    Example::

        runs = compare_optimizers(key, loss_fn, params0, {"sgd": optax.sgd(0.1),
                                  "momentum": optax.sgd(0.1, 0.9), "adam": optax.adam(1e-3)},
                                  data, num_steps=2000, batch_size=64)
        runs["adam"].params, runs["sgd"].history.loss
    """
    if not optimizers:
        raise ValueError("compare_optimizers: `optimizers` is empty; give {name: optimizer}.")
    out = {}
    for name, opt in optimizers.items():
        folder = None if checkpoint_dir is None else Path(checkpoint_dir) / name
        out[name] = fit(key, loss_fn, params, opt, data, checkpoint_dir=folder, **fit_kwargs)
    return out


def top_eigenvalue_callback(
    key: jax.Array, loss_fn: Callable[[PyTree, Any], jax.Array], batch: Any, *, num_iters: int = 20
) -> Callback:
    """Callback for ``fit``: the largest Hessian eigenvalue of ``loss_fn`` on ``batch``.

    Lanczos (``eigsh``, ``which="LA"``, ``num_iters`` products) at every record, with the key
    folded with the step. Compare with ``2/η``: gradient descent with step ``η`` is unstable
    along directions sharper than that (Cohen et al. 2021, the edge of stability).
    """
    from jaxscape.curvature import hessian_operator
    from jaxscape.spectrum import eigsh

    def callback(params, state, step):
        matvec = hessian_operator(loss_fn, params, batch)
        k = jax.random.fold_in(key, step)
        return eigsh(k, matvec, params, k=1, num_iters=num_iters, tol=0.0).eigenvalues[-1]

    return callback


# --------------------------------------------------------------------------- helpers


class _Loop(NamedTuple):
    """The static description of a training loop: hashable, so ``fit`` calls with the same
    loss function, optimizer and options reuse one compiled program."""

    loss_fn: Callable[..., Any]
    stateful: bool
    optimizer: optax.GradientTransformation
    has_data: bool
    batch_size: int | None
    every: int
    callbacks: tuple[tuple[str, Callback], ...]
    record_params: bool


def _batch(loop: _Loop, key, data, t):
    if not loop.has_data:
        return None
    if loop.batch_size is None:
        return data
    return minibatch(key, data, t, batch_size=loop.batch_size)


def _step_loss(loop: _Loop, params, batch, state):
    """``(loss, new_state)`` in either form of ``loss_fn``."""
    if loop.stateful:
        return loop.loss_fn(params, batch, state)
    return loop.loss_fn(params, batch), state


def _grad_at(loop: _Loop, params, state, batch):
    (loss, new_state), grad = jax.value_and_grad(
        lambda p: _step_loss(loop, p, batch, state), has_aux=True
    )(params)
    return loss, optax.tree_utils.tree_norm(grad), grad, new_state


def _update(loop: _Loop, grad, opt_state, params, loss, batch, state):
    """``optimizer.update``; transformations with extra arguments (``optax.lbfgs``, jaxscape's
    ``saddle_free_newton``, ``entropy_sgd``) also get ``value``, ``grad`` and ``value_fn``, the
    loss on this step's minibatch as a function of params, as Optax's line searches expect."""
    if not isinstance(loop.optimizer, optax.GradientTransformationExtraArgs):
        return loop.optimizer.update(grad, opt_state, params)

    def value_fn(p):
        return _step_loss(loop, p, batch, state)[0]

    return loop.optimizer.update(grad, opt_state, params, value=loss, grad=grad, value_fn=value_fn)


def _record(loop: _Loop, carry, key, data, t, loss=None, gnorm=None) -> dict:
    params, _, state = carry
    if loss is None:
        loss, gnorm, _, _ = _grad_at(loop, params, state, _batch(loop, key, data, t))
    rec = {"step": t, "loss": loss, "grad_norm": gnorm}
    rec["metrics"] = {name: cb(params, state, t) for name, cb in loop.callbacks}
    rec["params"] = params if loop.record_params else None
    return rec


@partial(jax.jit, static_argnums=(0, 5))
def _run_chunk(loop: _Loop, carry, key, data, t0, num_windows: int):
    """``num_windows × every`` optimizer steps from step ``t0``, one record per window.

    Minibatches are those of ``data.minibatch(key, data, t)``, but the epoch's index table
    (a permutation: a sort of ``N`` keys, costlier than a small network's step) is computed
    once per epoch and carried, not once per step.
    """
    minibatched = loop.has_data and loop.batch_size is not None
    if minibatched:
        n, b = jax.tree.leaves(data)[0].shape[0], loop.batch_size
        per_epoch = n // b

        def table_of(t):
            return epoch_indices(key, t // per_epoch, num_examples=n, batch_size=b)

    def one_step(carry, t):
        params, opt_state, state, table = carry
        if minibatched:
            table = jax.lax.cond(t % per_epoch == 0, table_of, lambda _: table, t)
            rows = table[t % per_epoch]
            batch = jax.tree.map(lambda a: a[rows], data)
        else:
            batch = _batch(loop, key, data, t)
        loss, gnorm, grad, new_state = _grad_at(loop, params, state, batch)
        updates, opt_state = _update(loop, grad, opt_state, params, loss, batch, state)
        state = new_state
        params = optax.apply_updates(params, updates)
        return (params, opt_state, state, table), (loss, gnorm)

    def one_window(carry, start):
        steps = start + jnp.arange(loop.every, dtype=jnp.int32)
        new_carry, (losses, gnorms) = jax.lax.scan(one_step, carry, steps)
        return new_carry, _record(loop, carry[:3], key, data, start, losses[0], gnorms[0])

    starts = t0 + loop.every * jnp.arange(num_windows, dtype=jnp.int32)
    table = table_of(t0) if minibatched else None
    carry, records = jax.lax.scan(one_window, (*carry, table), starts)
    return carry[:3], records


_final_record = jax.jit(_record, static_argnums=0)


def _check_batching(fn: str, key, data, batch_size) -> None:
    if data is None:
        if batch_size is not None:
            raise ValueError(f"{fn}: `batch_size` given but `data` is None.")
    elif batch_size is not None:
        check_positive_int(fn, "batch_size", batch_size)
        minibatch(key, data, 0, batch_size=batch_size)  # validates data and batch_size


def _check_loss(fn: str, loop: _Loop, params, state, key, data) -> None:
    """``loss_fn`` must return a real scalar (and the state's structure), checked on shapes."""
    batch = _batch(loop, key, data, jnp.zeros((), jnp.int32))
    try:
        out = jax.eval_shape(loop.loss_fn, params, batch, *([state] if loop.stateful else []))
    except TypeError as err:
        form = "loss_fn(params, batch, state)" if loop.stateful else "loss_fn(params, batch)"
        raise TypeError(f"{fn}: calling `loss_fn` failed ({err}); expected {form}.") from err
    if loop.stateful:
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(f"{fn}: with `state`, loss_fn must return (loss, new_state).")
        out, new_state = out
        if jax.tree.structure(new_state) != jax.tree.structure(state):
            raise ValueError(f"{fn}: loss_fn returned a state shaped unlike `state`.")
    if getattr(out, "shape", None) != () or not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(
            f"{fn}: loss_fn must return a real scalar; got shape {getattr(out, 'shape', None)}"
            f" dtype {getattr(out, 'dtype', type(out).__name__)}."
        )


def _add_axis(record: dict) -> dict:
    return jax.tree.map(lambda x: np.asarray(x)[None], record)


def _history(records: list[dict]) -> History:
    cat = jax.tree.map(lambda *xs: np.concatenate(xs), *records)
    return History(cat["step"], cat["loss"], cat["grad_norm"], cat["params"], cat["metrics"])


def _fingerprint(key, carry, data, *config) -> str:
    """Hash of the key, the initial params/optimizer state/state, the data and the options."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves((jax.random.key_data(key), carry, data)):
        arr = _storable(leaf)
        h.update(f"{arr.dtype}{arr.shape}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(str(jax.tree.structure(carry)).encode())
    h.update(repr(config).encode())
    return h.hexdigest()


def _is_key(x) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def _storable(x) -> np.ndarray:
    """A NumPy array of ``x``; typed PRNG keys (in an optimizer's state) as their key data."""
    return np.asarray(jax.random.key_data(x) if _is_key(x) else x)


def _abstract(x) -> jax.ShapeDtypeStruct:
    if _is_key(x):
        x = jax.random.key_data(x)
    return jax.ShapeDtypeStruct(x.shape, x.dtype)


def _unstore(saved, live):
    """The restored leaf, typed PRNG keys rewrapped with the live leaf's implementation."""
    if _is_key(live):
        return jax.random.wrap_key_data(jnp.asarray(saved), impl=jax.random.key_impl(live))
    return saved


class _Checkpoints:
    """Orbax checkpoints of ``(carry, history)`` in ``folder``, tagged with a fingerprint.

    The pytree is saved as its flat list of leaves and rebuilt from the live run's structure
    (Orbax restores NamedTuples, such as Optax states, as plain tuples).
    """

    def __init__(self, folder: Path, fingerprint: str):
        import orbax.checkpoint as ocp

        self.ocp, self.fingerprint = ocp, fingerprint
        options = ocp.CheckpointManagerOptions(
            max_to_keep=2, enable_async_checkpointing=False, cleanup_tmp_directories=True
        )
        self.manager = ocp.CheckpointManager(folder.absolute(), options=options)

    def save(self, step: int, carry, records: list[dict]) -> None:
        if step in self.manager.all_steps():
            return  # a finished run, restored and recomputed the same
        ocp, history = self.ocp, _history(records)
        leaves = jax.tree.leaves((carry, history._asdict()))
        meta = {"fingerprint": self.fingerprint, "step": step, "num_records": len(history.step)}
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(
                    {f"{i:06d}": _storable(x) for i, x in enumerate(leaves)}
                ),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )
        self.manager.wait_until_finished()

    def restore(self, carry, record: dict, num_steps: int):
        """``(carry, records, step)`` from the latest checkpoint, or ``None`` if there is none."""
        ocp, where = self.ocp, self.manager.directory
        step = self.manager.latest_step()
        if step is None:
            return None
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        meta = meta.meta
        if meta.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"fit: checkpoint_dir {where} holds a different run (another key, params, data, "
                "optimizer state or recording option); use another folder or delete it."
            )
        if step > num_steps:
            raise ValueError(
                f"fit: checkpoint_dir {where} holds this run at step {step}, past "
                f"num_steps={num_steps}; ask for at least {step} steps or use another folder."
            )
        history = jax.tree.map(
            lambda s: jax.ShapeDtypeStruct((meta["num_records"], *s.shape), s.dtype), record
        )
        live, treedef = jax.tree.flatten((carry, history))
        abstract = {f"{i:06d}": _abstract(x) for i, x in enumerate(live)}
        saved = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        ).state
        restored = [_unstore(saved[f"{i:06d}"], x) for i, x in enumerate(live)]
        carry, history = jax.tree.unflatten(treedef, restored)
        carry = jax.tree.map(jnp.asarray, carry)
        history = jax.tree.map(np.asarray, history)
        if history["step"].size and history["step"][-1] == step:
            history = jax.tree.map(lambda x: x[:-1], history)  # recomputed as the next start
        return carry, [history], step


class _Progress:
    """A rich progress bar with ETA and an info field (``fit``: the last recorded loss and
    steps/s; ``report``: one per stage); a no-op when off."""

    def __init__(self, total: int, done: int, show: bool | None, long_run: bool, label="fit"):
        self.show = (long_run and sys.stderr.isatty()) if show is None else show
        self.total, self.start, self.t0 = total, done, time.perf_counter()
        if self.show:
            from rich import progress as rp
            from rich.console import Console

            self.bar = rp.Progress(
                rp.TextColumn(label),
                rp.BarColumn(),
                rp.MofNCompleteColumn(),
                rp.TimeRemainingColumn(),
                rp.TextColumn("{task.fields[info]}"),
                console=Console(stderr=True),
            )
            self.task = self.bar.add_task(label, total=total, completed=done, info="")

    def __enter__(self):
        if self.show:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.show:
            self.bar.stop()

    def advance(self) -> None:
        if self.show:
            self.bar.advance(self.task)

    def update(self, done: int, loss: float) -> None:
        if self.show:
            rate = (done - self.start) / max(time.perf_counter() - self.t0, 1e-9)
            info = f"loss {loss:.4g}  {rate:,.0f} steps/s"
            self.bar.update(self.task, completed=done, info=info)
