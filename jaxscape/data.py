"""Data that needs no download: synthetic tasks, splits and minibatches. The readers of real
images (scikit-learn's bundled digits, MNIST IDX files, CIFAR-10 pickles in a folder you name)
are in ``jaxscape.datasets`` and reachable from here too (``jaxscape.data.load_digits``).

A data set is a ``Dataset(x, y)``: a NamedTuple, so a pytree (it jits, shards and saves) and a
batch (``x, y = batch``). Every function below that takes ``data`` accepts any pytree whose
arrays share a leading example axis. Randomness comes only from the ``key`` passed first: the
same key gives the same data, split and batch order, also when a run is resumed.

>>> data = two_spirals(jax.random.key(0), num_examples=10)
>>> split = train_test_split(jax.random.key(1), data, num_test=2)
>>> split.train.x.shape, split.test.y.shape
((8, 2), (2,))
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxscape._checks import check_float_dtype, check_key, check_positive_int


class Dataset(NamedTuple):
    """Inputs ``x`` and targets ``y`` with a shared leading example axis (also one batch)."""

    x: Any
    y: Any


class Split(NamedTuple):
    """A training and a held-out ``Dataset``."""

    train: Dataset
    test: Dataset


class Planted(NamedTuple):
    """A data set made by a known model, and that model's weights (the planted solution)."""

    data: Dataset
    weights: jax.Array


# --------------------------------------------------------------------------- synthetic tasks


def gaussian_mixture(
    key: jax.Array,
    *,
    num_examples: int,
    dim: int = 8,
    num_classes: int = 4,
    separation: float = 2.0,
    dtype=jnp.float32,
) -> Dataset:
    """Classification data: class ``c`` is ``N(μ_c, I)`` with ``μ_c ~ separation · N(0, I/dim)``.

    Returns ``Dataset(x, y)`` with ``x`` of shape ``(num_examples, dim)`` and integer labels ``y``;
    classes overlap, so a network reaches a non-zero loss minimum (an interesting spectrum).

    >>> x, y = gaussian_mixture(jax.random.key(0), num_examples=5, dim=3)
    >>> x.shape, y.shape
    ((5, 3), (5,))
    """
    check_key("gaussian_mixture", key)
    if num_examples < 1 or dim < 1 or num_classes < 2:
        raise ValueError(
            "gaussian_mixture: need num_examples >= 1, dim >= 1, num_classes >= 2; got "
            f"{num_examples}, {dim}, {num_classes}."
        )
    k_mu, k_y, k_x = jax.random.split(key, 3)
    means = separation * jax.random.normal(k_mu, (num_classes, dim), dtype) / jnp.sqrt(dim)
    y = jax.random.randint(k_y, (num_examples,), 0, num_classes)
    x = means[y] + jax.random.normal(k_x, (num_examples, dim), dtype)
    return Dataset(x, y)


def two_spirals(
    key: jax.Array,
    *,
    num_examples: int,
    noise: float = 0.05,
    num_turns: float = 1.5,
    dtype=jnp.float32,
) -> Dataset:
    """Two interleaved 2-D spirals, a binary task no linear model separates.

    Point ``i`` has label ``y_i = i mod 2`` (balanced) and lies at radius ``t`` and angle
    ``2π·num_turns·t + π·y_i``, with ``t = √u``, ``u ~ U(0, 1)`` (about uniform along the arc),
    plus ``N(0, noise²·I)``.

    Returns ``Dataset(x, y)``: ``x`` of shape ``(num_examples, 2)`` in ``dtype``, ``y`` int32.

    >>> data = two_spirals(jax.random.key(0), num_examples=6)
    >>> data.x.shape, data.y.tolist()
    ((6, 2), [0, 1, 0, 1, 0, 1])
    """
    fn = "two_spirals"
    check_key(fn, key)
    n = check_positive_int(fn, "num_examples", num_examples)
    noise, num_turns = _check_nonneg(fn, "noise", noise), _check_nonneg(fn, "num_turns", num_turns)
    return _two_spirals(key, noise, num_turns, n, check_float_dtype(fn, dtype))


@partial(jax.jit, static_argnums=(3, 4))
def _two_spirals(key, noise, num_turns, n, dtype):
    k_t, k_noise = jax.random.split(key)
    y = jnp.arange(n, dtype=jnp.int32) % 2
    t = jnp.sqrt(jax.random.uniform(k_t, (n,), dtype))
    angle = 2 * np.pi * num_turns * t + np.pi * y.astype(dtype)
    x = t[:, None] * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=1)
    return Dataset(x + noise * jax.random.normal(k_noise, (n, 2), dtype), y)


def teacher_student_dataset(
    key: jax.Array,
    *,
    num_examples: int,
    input_dim: int,
    num_teacher: int,
    noise: float = 0.0,
    dtype=jnp.float32,
) -> Planted:
    """Regression data labelled by a soft-committee teacher: ``y = Σ_k relu(w*_k · x) + noise·ε``.

    ``x ~ N(0, I_d)`` and the teacher rows ``w*_k`` are orthonormal (a Haar-random frame), so
    ``num_teacher <= input_dim``. The loss of a student on this data is in ``jaxscape.toys``.
    Saad & Solla (1995); Safran & Shamir (2018) for its spurious minima.

    Returns ``Planted(data=Dataset(x, y), weights=teacher)``: ``x`` ``(num_examples, input_dim)``,
    ``y`` ``(num_examples,)``, ``teacher`` ``(num_teacher, input_dim)``, all in ``dtype``.

    >>> data, teacher = teacher_student_dataset(
    ...     jax.random.key(0), num_examples=5, input_dim=4, num_teacher=2)
    >>> data.x.shape, data.y.shape, teacher.shape
    ((5, 4), (5,), (2, 4))
    """
    fn = "teacher_student_dataset"
    check_key(fn, key)
    n = check_positive_int(fn, "num_examples", num_examples)
    d = check_positive_int(fn, "input_dim", input_dim)
    k = check_positive_int(fn, "num_teacher", num_teacher)
    if k > d:
        raise ValueError(
            f"{fn}: `num_teacher` must be <= input_dim={d} (orthonormal teacher rows), got {k}."
        )
    noise = _check_nonneg(fn, "noise", noise)
    return _teacher_student(key, noise, n, d, k, check_float_dtype(fn, dtype))


@partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _teacher_student(key, noise, n, d, k, dtype):
    k_w, k_x, k_noise = jax.random.split(key, 3)
    q, r = jnp.linalg.qr(jax.random.normal(k_w, (d, k), dtype))
    teacher = (q * jnp.sign(jnp.diagonal(r))).T
    x = jax.random.normal(k_x, (n, d), dtype)
    y = jnp.sum(jax.nn.relu(x @ teacher.T), axis=1)
    y = y + noise * jax.random.normal(k_noise, (n,), dtype)
    return Planted(Dataset(x, y), teacher)


def linear_regression(
    key: jax.Array,
    *,
    num_examples: int,
    input_dim: int,
    output_dim: int = 1,
    noise: float = 0.0,
    dtype=jnp.float32,
) -> Planted:
    """Linear regression data ``y = x W + noise·ε``, ``x ~ N(0, I)``, ``W ~ N(0, I/input_dim)``.

    The task of deep linear networks (Baldi & Hornik 1989; Saxe et al. 2014): with no noise and
    ``num_examples >= input_dim``, the global minima are exactly the factorizations of ``W``.

    Returns ``Planted(data=Dataset(x, y), weights=W)``: ``x`` ``(num_examples, input_dim)``,
    ``y`` ``(num_examples, output_dim)``, ``W`` ``(input_dim, output_dim)``, all in ``dtype``.

    >>> data, w = linear_regression(jax.random.key(0), num_examples=5, input_dim=3, output_dim=2)
    >>> data.y.shape, w.shape
    ((5, 2), (3, 2))
    """
    fn = "linear_regression"
    check_key(fn, key)
    n = check_positive_int(fn, "num_examples", num_examples)
    d_in = check_positive_int(fn, "input_dim", input_dim)
    d_out = check_positive_int(fn, "output_dim", output_dim)
    noise = _check_nonneg(fn, "noise", noise)
    return _linear_regression(key, noise, n, d_in, d_out, check_float_dtype(fn, dtype))


@partial(jax.jit, static_argnums=(2, 3, 4, 5))
def _linear_regression(key, noise, n, d_in, d_out, dtype):
    k_w, k_x, k_noise = jax.random.split(key, 3)
    w = jax.random.normal(k_w, (d_in, d_out), dtype) / d_in**0.5
    x = jax.random.normal(k_x, (n, d_in), dtype)
    y = x @ w + noise * jax.random.normal(k_noise, (n, d_out), dtype)
    return Planted(Dataset(x, y), w)


# --------------------------------------------------------------------------- splits


def train_test_split(
    key: jax.Array,
    data: Any,
    *,
    test_fraction: float | None = None,
    num_test: int | None = None,
    stratify: bool = False,
) -> Split:
    """A random split into training and test examples, the same for the same key.

    Give ``num_test`` or ``test_fraction`` (default 0.2, rounded to the nearest count). With
    ``stratify=True``, ``data`` is ``(x, y)`` with integer labels ``y`` and each class keeps its
    share in the test set (largest-remainder rounding). Both parts come in shuffled order.
    Runs eagerly (the sizes depend on the arguments), not under ``jit``.

    Returns ``Split(train, test)``, each of ``data``'s type with the examples it selected.

    >>> data = Dataset(jnp.arange(10.0), jnp.arange(10) % 2)
    >>> split = train_test_split(jax.random.key(0), data, test_fraction=0.3, stratify=True)
    >>> split.train.x.shape, split.test.x.shape
    ((7,), (3,))
    """
    fn = "train_test_split"
    check_key(fn, key)
    n = _num_examples(fn, data)
    if test_fraction is not None and num_test is not None:
        raise ValueError(f"{fn}: give `test_fraction` or `num_test`, not both.")
    if num_test is None:
        frac = 0.2 if test_fraction is None else test_fraction
        if isinstance(frac, bool) or not isinstance(frac, numbers.Real) or not 0 < frac < 1:
            raise ValueError(f"{fn}: `test_fraction` must be in (0, 1), got {frac!r}.")
        num_test = int(np.floor(frac * n + 0.5))
        if not 1 <= num_test < n:
            raise ValueError(
                f"{fn}: test_fraction={frac} of {n} examples gives {num_test} test examples; "
                f"need between 1 and {n - 1}."
            )
    num_test = check_positive_int(fn, "num_test", num_test)
    if num_test >= n:
        raise ValueError(f"{fn}: `num_test` must be < the {n} examples, got {num_test}.")
    perm = np.asarray(_shuffle(key, n))
    take = np.zeros(n, bool)
    if stratify:
        labels = np.asarray(data[1] if isinstance(data, tuple) and len(data) == 2 else None)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"{fn}: stratify=True needs `data` = (x, y) with 1-D integer labels y; got "
                f"labels of shape {labels.shape} and dtype {labels.dtype}."
            )
        labels = labels[perm]
        classes, counts = np.unique(labels, return_counts=True)
        quota = num_test * counts / n
        share = np.floor(quota).astype(int)
        extra = np.argsort(share - quota, kind="stable")[: num_test - share.sum()]
        share[extra] += 1
        for c, q in zip(classes, share, strict=True):
            take[np.flatnonzero(labels == c)[:q]] = True
    else:
        take[:num_test] = True
    return Split(_take(data, perm[~take]), _take(data, perm[take]))


def standardize(data: Split | Dataset, *, axis: int | tuple[int, ...] = 0) -> Split | Dataset:
    """Shift and scale inputs ``x`` to mean 0 and standard deviation 1 over ``axis``.

    On a ``Split`` the statistics come from the training inputs only and are applied to both
    parts (the test set must not inform preprocessing). ``axis=0`` standardizes each feature;
    ``axis=(0, 1, 2)`` each channel of NHWC images. Constant features are only centred.

    Returns the same type with ``x`` replaced; targets are untouched.

    >>> split = standardize(Split(Dataset(jnp.array([[1.0], [3.0]]), None),
    ...                           Dataset(jnp.array([[5.0]]), None)))
    >>> split.test.x.tolist()
    [[3.0]]
    """
    train = data.train if isinstance(data, Split) else data
    x = jnp.asarray(train[0])
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"standardize: inputs x must be floating point, got {x.dtype}; load them with a "
            "float `dtype` or cast them first."
        )
    mean, std = _moments(x, axis if isinstance(axis, int) else tuple(axis))

    def apply(d):
        x = _shift_scale(d[0], mean, std)
        return d._replace(x=x) if isinstance(d, Dataset) else (x, *d[1:])

    return Split(apply(data.train), apply(data.test)) if isinstance(data, Split) else apply(data)


# --------------------------------------------------------------------------- minibatches


def batches(
    key: jax.Array,
    data: Any,
    *,
    batch_size: int,
    num_epochs: int = 1,
    drop_remainder: bool = True,
) -> Iterator[Any]:
    """Shuffled minibatches, epoch after epoch, as a Python iterator (arguments checked at once).

    Epoch ``e`` visits the examples in the order ``jax.random.permutation(fold_in(key, e), N)``
    in consecutive slices of ``batch_size``; with ``drop_remainder=True`` this is exactly the
    sequence ``minibatch(key, data, step, batch_size=...)`` gives for ``step = 0, 1, ...``. With
    ``drop_remainder=False`` each epoch ends with the smaller batch of the remaining examples
    (``list(batches(...))`` then covers every example once per epoch, e.g. for
    ``averaged_operator``, which weighs uneven batches exactly).

    Yields pytrees like ``data`` with ``batch_size`` examples each.

    >>> data = Dataset(jnp.arange(5.0), jnp.arange(5))
    >>> [b.x.shape for b in batches(jax.random.key(0), data, batch_size=2, drop_remainder=False)]
    [(2,), (2,), (1,)]
    """
    fn = "batches"
    check_key(fn, key)
    n = _num_examples(fn, data)
    b = check_positive_int(fn, "batch_size", batch_size)
    num_epochs = check_positive_int(fn, "num_epochs", num_epochs)
    if drop_remainder:
        _steps_per_epoch(fn, n, b)
    stop = n - n % b if drop_remainder else n

    def generate():
        for epoch in range(num_epochs):
            perm = np.asarray(_permutation(key, epoch, n))
            for start in range(0, stop, b):
                yield _take(data, perm[start : start + b])

    return generate()


def epoch_indices(key: jax.Array, epoch: Any, *, num_examples: int, batch_size: int) -> jax.Array:
    """The example indices of every batch of one epoch, ``(num_examples // batch_size,
    batch_size)`` int32: row ``s`` is the batch of step ``s`` of ``epoch`` (remainder dropped).

    Pure and jit-able in ``epoch``; the same order as ``batches`` and ``minibatch``.

    >>> epoch_indices(jax.random.key(0), 0, num_examples=7, batch_size=3).shape
    (2, 3)
    """
    fn = "epoch_indices"
    check_key(fn, key)
    n = check_positive_int(fn, "num_examples", num_examples)
    b = check_positive_int(fn, "batch_size", batch_size)
    _steps_per_epoch(fn, n, b)
    return _epoch_indices(key, epoch, n, b)


def minibatch(key: jax.Array, data: Any, step: Any, *, batch_size: int) -> Any:
    """The minibatch of training step ``step``: a pure, jit-able function of ``(key, step)``.

    With ``steps_per_epoch = N // batch_size`` (remainder dropped), step ``s`` is batch
    ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch``, whose order is
    ``jax.random.permutation(fold_in(key, epoch), N)``: each example appears once per epoch, a
    resumed run gets the same batches, and ``lax.scan`` over steps needs no data-loader state.
    The same sequence as ``batches(key, data, batch_size=...)``. Each call permutes ``N``
    indices (a sort): on CPU with ``N = 1797`` that is ~0.9 ms, ten times a small MLP's
    training step, so a loop should draw ``epoch_indices`` once per epoch (``fit`` does).

    Returns a pytree like ``data`` with ``batch_size`` examples.

    >>> data = Dataset(jnp.arange(6.0), jnp.arange(6))
    >>> step = jax.jit(lambda s: minibatch(jax.random.key(0), data, s, batch_size=4))
    >>> step(3).x.shape
    (4,)
    """
    fn = "minibatch"
    check_key(fn, key)
    n = _num_examples(fn, data)
    b = check_positive_int(fn, "batch_size", batch_size)
    _steps_per_epoch(fn, n, b)
    step = jnp.asarray(step)
    if not jnp.issubdtype(step.dtype, jnp.integer) or step.ndim:
        raise TypeError(f"{fn}: `step` must be an integer scalar, got {step.dtype}{step.shape}.")
    return _take(data, _step_indices(key, step, n, b))


def sample_batch(key: jax.Array, data: Any, *, batch_size: int) -> Any:
    """``batch_size`` examples drawn without replacement; pure and jit-able (e.g. inside scan).

    Returns a pytree like ``data`` with ``batch_size`` examples.

    >>> data = Dataset(jnp.arange(6.0), jnp.arange(6))
    >>> sample_batch(jax.random.key(0), data, batch_size=4).y.shape
    (4,)
    """
    fn = "sample_batch"
    check_key(fn, key)
    n = _num_examples(fn, data)
    b = check_positive_int(fn, "batch_size", batch_size)
    _steps_per_epoch(fn, n, b)
    return _take(data, _sample_indices(key, n, b))


def stack_batches(data: Any, *, batch_size: int, drop_remainder: bool = True) -> Any:
    """Consecutive batches stacked on a new leading axis, in the original example order.

    The stacked form of ``averaged_operator`` (evaluated with ``lax.scan``, compiled once):
    leaves of shape ``(N // batch_size, batch_size, ...)``. The last ``N % batch_size``
    examples are dropped (shuffle first to drop random ones); with ``drop_remainder=False`` a
    remainder is an error, since padding would bias a mean loss: choose a ``batch_size`` that
    divides ``N`` or pass ``list(batches(..., drop_remainder=False))`` instead.

    >>> stack_batches(Dataset(jnp.zeros((10, 3)), jnp.zeros(10)), batch_size=4).x.shape
    (2, 4, 3)
    """
    fn = "stack_batches"
    n = _num_examples(fn, data)
    b = check_positive_int(fn, "batch_size", batch_size)
    num = _steps_per_epoch(fn, n, b)
    if n % b and not drop_remainder:
        divisor = max(d for d in range(1, b + 1) if n % d == 0)
        raise ValueError(
            f"{fn}: {n} examples are not a multiple of batch_size={b} ({n % b} left over); "
            f"pass drop_remainder=True, a batch_size that divides {n} (e.g. {divisor}), or a "
            "list of uneven batches to averaged_operator."
        )
    return jax.tree.map(
        lambda a: jnp.reshape(jnp.asarray(a)[: num * b], (num, b, *jnp.shape(a)[1:])), data
    )


# --------------------------------------------------------------------------- helpers


def _num_examples(fn: str, data: Any) -> int:
    leaves = jax.tree.leaves(data)
    sizes = {jnp.shape(a)[0] if jnp.ndim(a) else None for a in leaves}
    if not leaves or len(sizes) != 1 or None in sizes:
        shapes = [jnp.shape(a) for a in leaves]
        raise ValueError(
            f"{fn}: `data` must be a pytree of arrays sharing a leading example axis, such as "
            f"Dataset(x, y); got leaf shapes {shapes}."
        )
    return sizes.pop()


def _steps_per_epoch(fn: str, n: int, b: int) -> int:
    if b > n:
        raise ValueError(f"{fn}: `batch_size` must be <= the {n} examples, got {b}.")
    return n // b


@partial(jax.jit, static_argnums=1)
def _shuffle(key, n):
    return jax.random.permutation(key, n).astype(jnp.int32)


@partial(jax.jit, static_argnums=2)
def _permutation(key, epoch, n):
    return _shuffle(jax.random.fold_in(key, epoch), n)


@partial(jax.jit, static_argnums=(1, 2))
def _sample_indices(key, n, b):
    return jax.random.choice(key, n, (b,), replace=False).astype(jnp.int32)


@partial(jax.jit, static_argnums=(2, 3))
def _epoch_indices(key, epoch, n, b):
    steps = n // b
    return _permutation(key, epoch, n)[: steps * b].reshape(steps, b)


@partial(jax.jit, static_argnums=(2, 3))
def _step_indices(key, step, n, b):
    steps = n // b
    return _epoch_indices(key, step // steps, n, b)[step % steps]


@partial(jax.jit, static_argnums=1)
def _moments(x, axis):
    mean, std = jnp.mean(x, axis, keepdims=True), jnp.std(x, axis, keepdims=True)
    return mean, jnp.where(std > 0, std, jnp.ones_like(std))


@jax.jit
def _shift_scale(x, mean, std):
    return (x - mean) / std


def _take(data: Any, idx: Any) -> Any:
    """Examples ``idx`` of every leaf (NumPy leaves are gathered on the host, then moved)."""

    def take(a):
        if isinstance(a, np.ndarray) and isinstance(idx, np.ndarray):
            return jnp.asarray(a[idx])
        return jnp.take(jnp.asarray(a), idx, axis=0)

    return jax.tree.map(take, data)


def _check_nonneg(fn: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < np.inf:
        raise ValueError(f"{fn}: `{name}` must be a finite number >= 0, got {value!r}.")
    return float(value)


_FILE_LOADERS = ("load_digits", "load_mnist", "load_cifar10", "read_idx", "write_idx")


def __getattr__(name: str) -> Any:
    """The real-image loaders live in ``jaxscape.datasets``; ``jaxscape.data.load_mnist`` works."""
    if name in _FILE_LOADERS:
        from jaxscape import datasets

        return getattr(datasets, name)
    raise AttributeError(f"module 'jaxscape.data' has no attribute {name!r}")
