"""Data: synthetic tasks, splits, minibatches, and the MNIST / CIFAR-10 readers on tiny files
written here in the real formats (big-endian IDX headers, channel-major CIFAR pickles)."""

from __future__ import annotations

import gzip
import pickle
import struct
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxscape.data as jd
from jaxscape.data import Dataset, Split

KEY = jax.random.key(0)


def assert_same(a, b):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert u.dtype == v.dtype
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def indexed(n, num_classes=3, to_jax=True):
    """x[i] = [i, -i] so every row names its example; y = i mod num_classes."""
    i = np.arange(n)
    data = Dataset(np.stack([i, -i], 1).astype(np.float64), (i % num_classes).astype(np.int32))
    return jax.tree.map(jnp.asarray, data) if to_jax else data


def ids(data):
    return np.asarray(data.x)[..., 0].astype(int)


# --------------------------------------------------------------------------- synthetic


def test_gaussian_mixture_unchanged():
    """Same arrays as the original implementation (the CLI's reruns depend on it)."""
    key = jax.random.key(3)
    x, y = jd.gaussian_mixture(key, num_examples=20, dim=5, num_classes=3, dtype=jnp.float64)
    k_mu, k_y, k_x = jax.random.split(key, 3)
    means = 2.0 * jax.random.normal(k_mu, (3, 5), jnp.float64) / jnp.sqrt(5)
    y_ref = jax.random.randint(k_y, (20,), 0, 3)
    assert_same((x, y), (means[y_ref] + jax.random.normal(k_x, (20, 5), jnp.float64), y_ref))


@pytest.mark.parametrize(
    "make",
    [
        lambda k: jd.two_spirals(k, num_examples=101, noise=0.1, num_turns=1.25),
        lambda k: jd.teacher_student_dataset(
            k, num_examples=30, input_dim=6, num_teacher=4, dtype=jnp.float64
        ),
        lambda k: jd.linear_regression(
            k, num_examples=12, input_dim=4, output_dim=3, noise=0.5, dtype=jnp.float64
        ),
    ],
)
def test_synthetic_deterministic(make):
    assert_same(make(jax.random.key(1)), make(jax.random.key(1)))
    a, b = make(jax.random.key(1)), make(jax.random.key(2))
    assert not np.allclose(jax.tree.leaves(a)[0], jax.tree.leaves(b)[0])


def test_two_spirals():
    x, y = jd.two_spirals(jax.random.key(1), num_examples=101, noise=0.0, num_turns=1.25)
    assert x.shape == (101, 2) and x.dtype == jnp.float32 and y.dtype == jnp.int32
    assert np.bincount(np.asarray(y)).tolist() == [51, 50]
    r = np.linalg.norm(np.asarray(x, np.float64), axis=1)
    assert r.max() <= 1 + 1e-6
    x = np.asarray(x, np.float64)
    angle = np.arctan2(x[:, 1], x[:, 0])
    expected = 2 * np.pi * 1.25 * r + np.pi * np.asarray(y)
    np.testing.assert_allclose(np.cos(angle - expected), 1.0, atol=1e-4)  # on its own spiral
    noisy = jd.two_spirals(jax.random.key(1), num_examples=101, noise=0.1, num_turns=1.25).x
    assert 0.05 < np.std(np.asarray(noisy) - x) < 0.15


def test_teacher_student_dataset():
    (x, y), w = jd.teacher_student_dataset(
        jax.random.key(4), num_examples=30, input_dim=6, num_teacher=4, dtype=jnp.float64
    )
    assert x.shape == (30, 6) and y.shape == (30,) and w.shape == (4, 6)
    x, y, w = np.asarray(x), np.asarray(y), np.asarray(w)
    np.testing.assert_allclose(w @ w.T, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(y, np.maximum(x @ w.T, 0).sum(1), rtol=1e-14)
    assert abs(x.mean()) < 0.3 and 0.7 < x.std() < 1.3
    with pytest.raises(
        ValueError,
        match=r"`num_teacher` must be <= input_dim=3 \(orthonormal teacher rows\), got 4",
    ):
        jd.teacher_student_dataset(KEY, num_examples=5, input_dim=3, num_teacher=4)


def test_linear_regression():
    (x, y), w = jd.linear_regression(
        jax.random.key(5), num_examples=12, input_dim=4, output_dim=3, dtype=jnp.float64
    )
    assert y.shape == (12, 3) and w.shape == (4, 3)
    np.testing.assert_allclose(np.linalg.lstsq(x, y, rcond=None)[0], w, atol=1e-10)
    kwargs = dict(num_examples=12, input_dim=4, output_dim=3, noise=0.5, dtype=jnp.float64)
    (_, y_noisy), _ = jd.linear_regression(jax.random.key(5), **kwargs)
    assert 0.2 < np.std(np.asarray(y_noisy) - np.asarray(y)) < 0.8


def test_synthetic_bad_arguments():
    with pytest.raises(ValueError, match="two_spirals: `num_examples` must be an integer >= 1"):
        jd.two_spirals(KEY, num_examples=0)
    with pytest.raises(ValueError, match="`noise` must be a finite number >= 0, got -1"):
        jd.two_spirals(KEY, num_examples=4, noise=-1)
    with pytest.raises(TypeError, match="`dtype` must be a floating-point dtype"):
        jd.linear_regression(KEY, num_examples=4, input_dim=2, dtype=jnp.int32)
    with pytest.raises(TypeError, match=r"`key` must be a jax\.random key"):
        jd.two_spirals(0, num_examples=4)


# --------------------------------------------------------------------------- splits


def test_train_test_split():
    data = indexed(50)
    split = jd.train_test_split(jax.random.key(1), data, test_fraction=0.3)
    assert isinstance(split, Split) and isinstance(split.train, Dataset)
    train, test = ids(split.train), ids(split.test)
    assert len(test) == 15 and len(train) == 35
    assert sorted([*train, *test]) == list(range(50))  # disjoint and covering
    np.testing.assert_array_equal(split.test.y, np.asarray(data.y)[test])  # rows stay paired
    assert_same(split, jd.train_test_split(jax.random.key(1), data, test_fraction=0.3))
    other = jd.train_test_split(jax.random.key(2), data, test_fraction=0.3)
    assert set(ids(other.test)) != set(test)
    assert len(ids(jd.train_test_split(KEY, data, num_test=7).test)) == 7
    assert len(ids(jd.train_test_split(KEY, data).test)) == 10  # default 20 %


def test_train_test_split_stratified():
    y = np.asarray([0] * 30 + [1] * 12 + [2] * 8, np.int32)
    data = Dataset(indexed(50, to_jax=False).x, y)  # NumPy leaves work too
    for seed in range(3):
        test = jd.train_test_split(jax.random.key(seed), data, num_test=10, stratify=True).test
        assert np.bincount(np.asarray(test.y), minlength=3).tolist() == [6, 2, 2]
    with pytest.raises(ValueError, match="stratify=True needs `data` = \\(x, y\\)"):
        jd.train_test_split(KEY, {"x": data.x}, stratify=True)
    with pytest.raises(
        ValueError, match="1-D integer labels y; got labels of shape \\(\\) and dtype object"
    ):
        jd.train_test_split(KEY, Dataset(data.x, None), stratify=True)


def test_train_test_split_bad_arguments():
    data = indexed(10)
    with pytest.raises(ValueError, match="not both"):
        jd.train_test_split(KEY, data, test_fraction=0.2, num_test=2)
    with pytest.raises(ValueError, match=r"`test_fraction` must be in \(0, 1\), got 1.5"):
        jd.train_test_split(KEY, data, test_fraction=1.5)
    with pytest.raises(ValueError, match="gives 0 test examples; need between 1 and 9"):
        jd.train_test_split(KEY, data, test_fraction=0.01)
    with pytest.raises(ValueError, match="`num_test` must be < the 10 examples, got 10"):
        jd.train_test_split(KEY, data, num_test=10)
    with pytest.raises(ValueError, match=r"sharing a leading example axis.*\[\(10,\), \(9,\)\]"):
        jd.train_test_split(KEY, (np.zeros(10), np.zeros(9)))


def test_standardize():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)) * [1.0, 5.0, 0.0] + 2.0
    out = jd.standardize(Split(Dataset(x[:30], None), Dataset(x[30:], None)))
    train, test = np.asarray(out.train.x), np.asarray(out.test.x)
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(train.std(0), [1, 1, 0], atol=1e-12)  # constant: only centred
    mean, std = x[:30].mean(0), x[:30].std(0)
    np.testing.assert_allclose(test[:, :2], (x[30:, :2] - mean[:2]) / std[:2], rtol=1e-12)
    assert not np.allclose(test.mean(0)[:2], 0, atol=0.1)  # train statistics, not its own
    images = rng.normal(size=(6, 4, 4, 3)) * [1.0, 2.0, 3.0] + [0.0, 1.0, 2.0]
    per_channel = np.asarray(jd.standardize(Dataset(images, None), axis=(0, 1, 2)).x)
    np.testing.assert_allclose(per_channel.mean((0, 1, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(per_channel.std((0, 1, 2)), 1, atol=1e-12)
    with pytest.raises(TypeError, match="inputs x must be floating point, got uint8"):
        jd.standardize(Dataset(np.zeros((3, 2), np.uint8), None))


# --------------------------------------------------------------------------- minibatches


def test_minibatch_epochs_and_generator_agree():
    data, b, steps = indexed(23), 5, 4  # 4 batches per epoch, 3 examples dropped
    gen = list(jd.batches(KEY, data, batch_size=b, num_epochs=3))
    assert len(gen) == 3 * steps

    @jax.jit
    def run(data):
        return jax.lax.scan(
            lambda c, s: (c, jd.minibatch(KEY, data, s, batch_size=b)), 0, jnp.arange(3 * steps)
        )[1]

    scanned = run(data)
    assert scanned.x.shape == (3 * steps, b, 2)
    for s, batch in enumerate(gen):
        assert_same(batch, jax.tree.map(lambda a, s=s: np.asarray(a)[s], scanned))
        assert_same(batch, jd.minibatch(KEY, data, s, batch_size=b))  # eager, Python int step
    for epoch in range(3):
        seen = np.concatenate([ids(g) for g in gen[epoch * steps : (epoch + 1) * steps]])
        assert len(set(seen)) == steps * b  # each example at most once per epoch
        rows = jd.epoch_indices(KEY, epoch, num_examples=23, batch_size=b)
        assert rows.dtype == jnp.int32
        np.testing.assert_array_equal(np.asarray(rows).reshape(-1), seen)
    assert not np.array_equal(ids(gen[0]), ids(gen[steps]))  # a new order each epoch


def test_batches_remainder_and_cover():
    data = indexed(11)
    gen = list(jd.batches(jax.random.key(7), data, batch_size=4, drop_remainder=False))
    assert [len(ids(g)) for g in gen] == [4, 4, 3]
    assert sorted(np.concatenate([ids(g) for g in gen]).tolist()) == list(range(11))
    with pytest.raises(ValueError, match="`batch_size` must be <= the 11 examples, got 12"):
        jd.batches(KEY, data, batch_size=12)  # checked at the call, not at the first next()
    with pytest.raises(TypeError, match="`step` must be an integer scalar"):
        jd.minibatch(KEY, data, 1.0, batch_size=2)


def test_sample_batch():
    data = indexed(20)
    a = jd.sample_batch(jax.random.key(1), data, batch_size=8)
    assert len(set(ids(a))) == 8  # without replacement
    np.testing.assert_array_equal(a.y, np.asarray(data.y)[ids(a)])
    assert not np.array_equal(ids(a), ids(jd.sample_batch(jax.random.key(2), data, batch_size=8)))
    in_scan = jax.jit(  # pure: usable inside a jitted loop
        lambda keys: jax.lax.map(lambda k: jd.sample_batch(k, data, batch_size=8), keys)
    )(jnp.stack([jax.random.key(1), jax.random.key(2)]))
    assert_same(jax.tree.map(lambda a: np.asarray(a)[0], in_scan), a)


def test_stack_batches():
    data = indexed(10)
    stacked = jd.stack_batches(data, batch_size=3)
    assert stacked.x.shape == (3, 3, 2) and stacked.y.shape == (3, 3)
    np.testing.assert_array_equal(ids(stacked), np.arange(9).reshape(3, 3))
    assert jd.stack_batches(data, batch_size=5, drop_remainder=False).x.shape == (2, 5, 2)
    with pytest.raises(
        ValueError, match=r"not a multiple of batch_size=4 \(2 left over\).*e\.g\. 2"
    ):
        jd.stack_batches(data, batch_size=4, drop_remainder=False)


# --------------------------------------------------------------------------- digits


def test_load_digits():
    pytest.importorskip("sklearn")
    x, y = jd.load_digits()
    x, y = np.asarray(x), np.asarray(y)
    assert x.shape == (1797, 8, 8, 1) and x.dtype == jnp.float32 and y.dtype == jnp.int32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert np.bincount(y).tolist()[:2] == [178, 182] and len(np.bincount(y)) == 10
    assert jd.load_digits(layout="flat").x.shape == (1797, 64)
    rows = jd.load_digits(layout="sequence", dtype=jnp.uint8).x
    assert rows.shape == (1797, 8, 8) and int(rows.max()) == 16
    np.testing.assert_array_equal(np.asarray(rows, np.float32) / 16, x[..., 0])


def test_load_digits_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(ImportError, match=r"pip install 'jaxscape\[data\]'"):
        jd.load_digits()


# --------------------------------------------------------------------------- MNIST


def idx_bytes(array, code=0x08):
    """The IDX format written by hand: 0, 0, type code, ndim, big-endian uint32 dims, data."""
    a = np.asarray(array)
    return struct.pack(f">4B{a.ndim}I", 0, 0, code, a.ndim, *a.shape) + a.tobytes()


def write_mnist(folder, n=7, split="train", gz=False, labels=None):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8) if labels is None else labels
    prefix = "train" if split == "train" else "t10k"
    suffix = ".gz" if gz else ""
    for name, a in [
        (f"{prefix}-images-idx3-ubyte", images),
        (f"{prefix}-labels-idx1-ubyte", labels),
    ]:
        data = idx_bytes(a)
        (folder / (name + suffix)).write_bytes(gzip.compress(data) if gz else data)
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_round_trip(tmp_path, gz):
    images, labels = write_mnist(tmp_path, split="test", gz=gz)
    x, y = jd.load_mnist(tmp_path, split="test")
    assert x.shape == (7, 28, 28, 1) and x.dtype == jnp.float32 and y.dtype == jnp.int32
    np.testing.assert_allclose(np.asarray(x)[..., 0], images / np.float32(255))
    np.testing.assert_array_equal(y, labels)
    raw = jd.load_mnist(str(tmp_path), split="test", layout="flat", dtype=jnp.uint8).x
    np.testing.assert_array_equal(raw, images.reshape(7, 784))
    assert jd.load_mnist(tmp_path, split="test", layout="sequence").x.shape == (7, 28, 28)


def test_idx_writer_matches_the_format(tmp_path):
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    assert jd.write_idx(tmp_path / "a", a).read_bytes() == idx_bytes(a.astype(">i4"), 0x0C)
    for name in ("b", "b.gz"):
        for arr in (a, a.astype(np.float64), np.arange(5, dtype=np.uint8)):
            np.testing.assert_array_equal(jd.read_idx(jd.write_idx(tmp_path / name, arr)), arr)
    with pytest.raises(ValueError, match="IDX dtype"):
        jd.write_idx(tmp_path / "c", np.zeros(2, np.int64))


def test_mnist_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere does not exist.*train-images-idx3-ubyte"):
        jd.load_mnist(tmp_path / "nowhere")
    write_mnist(tmp_path, split="train")
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"no train-labels-idx1-ubyte or .*\.gz in"):
        jd.load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="no t10k-images-idx3-ubyte"):
        jd.load_mnist(tmp_path, split="test")
    with pytest.raises(ValueError, match=r"`split` must be one of \('train', 'test'\)"):
        jd.load_mnist(tmp_path, split="valid")
    with pytest.raises(TypeError, match=r"floating-point dtype .* or uint8"):
        jd.load_mnist(tmp_path, dtype=jnp.int32)


def test_mnist_corrupt_files(tmp_path):
    _, labels = write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    good = path.read_bytes()
    path.write_bytes(idx_bytes(labels))  # a labels file where the images belong
    with pytest.raises(ValueError, match=r"wrong magic 0x00000801 in .*expected 0x00000803 \(IDX"):
        jd.load_mnist(tmp_path)
    path.write_bytes(good[:-100])
    with pytest.raises(
        ValueError, match=r"truncated: .* declares 7 images of 28×28 = 5488 bytes but has 5388"
    ):
        jd.load_mnist(tmp_path)
    path.write_bytes(good + b"\0")
    with pytest.raises(ValueError, match="trailing bytes"):
        jd.load_mnist(tmp_path)
    path.write_bytes(good)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels[:5]))
    with pytest.raises(ValueError, match=r"holds 7 images but .* holds 5 labels"):
        jd.load_mnist(tmp_path)
    bad = labels.copy()
    bad[4] = 12
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(bad))
    with pytest.raises(ValueError, match=r"label 12 out of range \[0, 10\) at index 4 in"):
        jd.load_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels))[:-9])
    with pytest.raises(ValueError, match=r"cannot read .*\.gz"):
        jd.load_mnist(tmp_path)


# --------------------------------------------------------------------------- CIFAR-10


def cifar_batch(path, n, seed, labels=None, data=None):
    rng = np.random.default_rng(seed)
    batch = {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": rng.integers(0, 10, n).tolist() if labels is None else labels,
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8) if data is None else data,
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return batch


def test_cifar_round_trip(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    written = [cifar_batch(folder / f"data_batch_{i}", 3, i) for i in range(1, 6)]
    test = cifar_batch(folder / "test_batch", 4, 0)
    x, y = jd.load_cifar10(folder, split="test", dtype=jnp.uint8)
    x = np.asarray(x)
    assert x.shape == (4, 32, 32, 3) and x.dtype == jnp.uint8 and y.dtype == jnp.int32
    assert int(x[0, 3, 5, 1]) == test[b"data"][0, 1024 + 3 * 32 + 5]  # image 0, G, row 3, col 5
    assert int(x[2, 31, 0, 2]) == test[b"data"][2, 2048 + 31 * 32]
    np.testing.assert_array_equal(y, test[b"labels"])
    x, y = jd.load_cifar10(tmp_path)  # the parent folder works too
    assert x.shape == (15, 32, 32, 3) and x.dtype == jnp.float32
    assert np.asarray(x)[4, 0, 0, 0] == written[1][b"data"][1, 0] / np.float32(255)
    np.testing.assert_array_equal(y, np.concatenate([b[b"labels"] for b in written]))
    assert jd.load_cifar10(folder, split="test", layout="flat").x.shape == (4, 3072)


def test_cifar_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere does not exist.*data_batch_1"):
        jd.load_cifar10(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="test_batch missing from"):
        jd.load_cifar10(tmp_path, split="test")
    path = tmp_path / "test_batch"
    cifar_batch(path, 2, 0)
    with pytest.raises(FileNotFoundError, match=r"data_batch_1, .*data_batch_5 missing"):
        jd.load_cifar10(tmp_path)
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(ValueError, match=r"cannot unpickle .*test_batch.*truncated"):
        jd.load_cifar10(tmp_path, split="test")
    cifar_batch(path, 2, 0, data=np.zeros((2, 1024), np.uint8))
    with pytest.raises(ValueError, match=r"is uint8 of shape \(2, 1024\); expected uint8 of shape"):
        jd.load_cifar10(tmp_path, split="test")
    cifar_batch(path, 2, 0, labels=[1, 2, 3])
    with pytest.raises(ValueError, match="has 2 images but b'labels' of shape \\(3,\\)"):
        jd.load_cifar10(tmp_path, split="test")
    cifar_batch(path, 3, 0, labels=[1, 10, 2])
    with pytest.raises(ValueError, match=r"label 10 out of range \[0, 10\) at index 1 in"):
        jd.load_cifar10(tmp_path, split="test")
    path.write_bytes(pickle.dumps({b"data": 1}))
    with pytest.raises(ValueError, match="not a CIFAR-10 batch"):
        jd.load_cifar10(tmp_path, split="test")
