"""Problems: every built-in model × data pair builds with the right shapes, sizes, losses and
randomness; MNIST / CIFAR-10 folders written here in the real formats; user problems loaded from
``module:function`` in each return form, and every bad input gives its own message."""

from __future__ import annotations

import itertools
import pickle
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxscape import datasets, models
from jaxscape.curvature import count_params
from jaxscape.problems import (
    DATASETS,
    MODELS,
    Problem,
    builtin_problem,
    list_builtins,
    load_problem,
)

KEY = jax.random.key(0)
OFFLINE = ("digits", "spirals", "teacher-student", "mixture")
VALID = {
    "mlp": {"digits", "spirals", "teacher-student", "mixture", "mnist:PATH", "cifar10:PATH"},
    "cnn": {"digits", "mnist:PATH", "cifar10:PATH"},
    "lstm": {"digits", "mnist:PATH", "cifar10:PATH"},
    "deep-linear": {
        "digits",
        "spirals",
        "teacher-student",
        "mixture",
        "mnist:PATH",
        "cifar10:PATH",
    },
}
EXAMPLE_SHAPE = {  # (model, data) -> shape of one input example
    **{(m, "digits"): s for m, s in [("mlp", (64,)), ("deep-linear", (64,))]},
    ("cnn", "digits"): (8, 8, 1),
    ("lstm", "digits"): (8, 8),
    **{(m, "spirals"): (2,) for m in ("mlp", "deep-linear")},
    **{(m, "teacher-student"): (8,) for m in ("mlp", "deep-linear")},
    **{(m, "mixture"): (8,) for m in ("mlp", "deep-linear")},
}
NUM_CLASSES = {"digits": 10, "spirals": 2, "teacher-student": None, "mixture": 4}
OFFLINE_PAIRS = sorted(EXAMPLE_SHAPE)


def build(model, data, seed=0, **kwargs):
    kwargs = {"num_examples": 80, "test_fraction": 0.25, "width": 8, **kwargs}
    if data == "digits":
        pytest.importorskip("sklearn")
    return builtin_problem(jax.random.key(seed), model, data, **kwargs)


def leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))


def mlp_param_count(sizes) -> int:
    """Dense layers with biases: Σ (fan_in · fan_out + fan_out)."""
    return sum(i * o + o for i, o in itertools.pairwise(sizes))


# --------------------------------------------------------------------------- built-in problems


def test_valid_pairs_are_the_documented_table():
    assert set(EXAMPLE_SHAPE) == {(m, d) for m, ds in VALID.items() for d in ds if d in OFFLINE}
    assert set(MODELS) == set(VALID) and set(DATASETS) == set().union(*VALID.values())
    lines = list_builtins().splitlines()
    header = lines.index(next(line for line in lines if line.startswith("combinations")))
    names = lines[header + 1].split()
    assert names == list(DATASETS)
    for row in lines[header + 2 :]:
        model, *marks = row.split()
        assert {n for n, mark in zip(names, marks, strict=True) if mark == "yes"} == VALID[model]


@pytest.mark.parametrize(("model", "data"), OFFLINE_PAIRS)
def test_builtin_pair_builds(model, data):
    p = build(model, data)
    assert p.name == f"{model}-{data}"
    assert p.train.x.shape == (60, *EXAMPLE_SHAPE[model, data])
    assert p.test.x.shape == (20, *EXAMPLE_SHAPE[model, data])
    assert p.train.y.shape == (60,) and p.test.y.shape == (20,)
    assert p.state is None and p.train_loss_fn is None
    assert jax.tree.leaves(p.params)[0].dtype == jnp.float64  # the default float (x64 here)
    assert f"{count_params(p.params):,} params" in p.description
    loss = float(jax.jit(p.loss_fn)(p.params, p.train))
    assert np.isfinite(loss) and loss > 0
    num_classes = NUM_CLASSES[data]
    if num_classes is None:
        assert p.apply_fn is None
        assert jnp.issubdtype(p.train.y.dtype, jnp.floating)
    else:
        out = jax.eval_shape(p.apply_fn, p.params, p.test.x)
        assert out.shape == (20, num_classes)
        assert set(np.unique(p.train.y)) <= set(range(num_classes))


@pytest.mark.parametrize(
    ("model", "data"),
    [("mlp", "mixture"), ("deep-linear", "mixture"), ("deep-linear", "teacher-student")],
)
def test_builtin_losses_are_the_documented_ones(model, data):
    """Cross-entropy for classifiers; squared error on one-hot targets (deep linear) or on the
    regression targets (teacher-student)."""
    p = build(model, data)
    x, y = p.train
    if data == "teacher-student":
        net = models.DeepLinear((8, 8, 1), dtype=jnp.float64)
        outputs = net.apply({"params": p.params}, x)[:, 0]
        want = jnp.mean((outputs - y) ** 2)
    elif model == "deep-linear":
        outputs = p.apply_fn(p.params, x)
        want = jnp.mean((outputs - jax.nn.one_hot(y, 4, dtype=outputs.dtype)) ** 2)
    else:
        want = models.softmax_cross_entropy(p.apply_fn(p.params, x), y)
    np.testing.assert_allclose(p.loss_fn(p.params, p.train), want, rtol=1e-12)


def test_demo_default_is_the_spectrum_mlp():
    pytest.importorskip("sklearn")
    p = builtin_problem(KEY, "mlp", "digits")
    assert p.name == "mlp-digits"
    assert count_params(p.params) == mlp_param_count([64, 32, 32, 10])  # 3,466
    n_test = int(np.floor(0.2 * 1797 + 0.5))
    assert (len(p.train.y), len(p.test.y)) == (1797 - n_test, n_test)
    assert p.description.startswith("MLP 64-32-32-10 (tanh) on digits")


@pytest.mark.parametrize(("fraction", "n_test"), [(0.1, 10), (0.5, 50), (0.33, 33)])
def test_split_follows_test_fraction(fraction, n_test):
    p = build("mlp", "spirals", num_examples=100, test_fraction=fraction)
    assert (len(p.train.y), len(p.test.y)) == (100 - n_test, n_test)


def test_width_depth_and_dtype():
    p = build("mlp", "mixture", width=5, depth=3, dtype=jnp.float32)
    assert count_params(p.params) == mlp_param_count([8, 5, 5, 5, 4])
    assert {leaf.dtype for leaf in jax.tree.leaves(p.params)} == {jnp.dtype(jnp.float32)}
    assert p.train.x.dtype == jnp.float32


def test_key_determines_params_and_data():
    a, b, c = (
        build("mlp", "mixture", seed=1),
        build("mlp", "mixture", seed=1),
        build("mlp", "mixture", seed=2),
    )
    assert leaves_equal(a.params, b.params) and leaves_equal(a.train, b.train)
    assert leaves_equal(a.test, b.test)
    assert not any(
        np.array_equal(x, y)
        for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(c.params), strict=True)
        if np.any(x)  # biases start at zero either way
    )
    assert not leaves_equal(a.train, c.train)


def test_digits_subset_differs_only_in_split_and_init():
    pytest.importorskip("sklearn")
    a, b = build("mlp", "digits", seed=1), build("mlp", "digits", seed=2)
    pool = lambda p: sorted(map(bytes, np.asarray(jnp.concatenate([p.train.x, p.test.x]))))  # noqa: E731
    assert pool(a) == pool(b)  # the first 80 digits both times
    assert not leaves_equal(a.train, b.train)


# --------------------------------------------------------------------------- MNIST / CIFAR-10


def write_mnist(folder, n=30, seed=0):
    rng = np.random.default_rng(seed)
    datasets.write_idx(folder / "train-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), "u1"))
    datasets.write_idx(folder / "train-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype("u1"))
    return folder


def write_cifar(folder, n=4):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        batch = {
            b"labels": (np.arange(n) % 10).tolist(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return folder


@pytest.mark.parametrize(("model", "shape"), [("mlp", (784,)), ("cnn", (28, 28, 1))])
def test_mnist_folder(tmp_path, model, shape):
    p = builtin_problem(
        KEY, model, f"mnist:{write_mnist(tmp_path)}", width=4, depth=1, test_fraction=0.2
    )
    assert p.name == f"{model}-mnist"
    assert p.train.x.shape == (24, *shape) and p.test.x.shape == (6, *shape)
    assert float(p.train.x.max()) <= 1.0  # pixels scaled to [0, 1]
    assert np.isfinite(float(jax.jit(p.loss_fn)(p.params, p.train)))
    assert jax.eval_shape(p.apply_fn, p.params, p.test.x).shape == (6, 10)


@pytest.mark.parametrize(("model", "shape"), [("mlp", (3072,)), ("cnn", (32, 32, 3))])
def test_cifar10_folder(tmp_path, model, shape):
    p = builtin_problem(
        KEY, model, f"cifar10:{write_cifar(tmp_path)}", width=4, depth=1, num_examples=15
    )
    assert p.train.x.shape == (12, *shape) and p.test.x.shape == (3, *shape)
    assert np.isfinite(float(jax.jit(p.loss_fn)(p.params, p.train)))
    assert jax.eval_shape(p.apply_fn, p.params, p.test.x).shape == (3, 10)


def test_file_errors_come_from_the_loaders(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"load_mnist: .*nowhere does not exist"):
        builtin_problem(KEY, "mlp", f"mnist:{tmp_path / 'nowhere'}")
    write_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01" + bytes(8))
    with pytest.raises(ValueError, match=r"wrong magic .*train-images-idx3-ubyte"):
        builtin_problem(KEY, "mlp", f"mnist:{tmp_path}")
    with pytest.raises(FileNotFoundError, match=r"data_batch_1, .* missing"):
        builtin_problem(KEY, "cnn", f"cifar10:{tmp_path}")


# --------------------------------------------------------------------------- bad built-in input


@pytest.mark.parametrize(
    ("model", "data"),
    [(m, d) for m in MODELS for d in DATASETS if d not in VALID[m]],
)
def test_invalid_pair(model, data):
    accepted = ", ".join(d for d in DATASETS if d in VALID[model])
    with pytest.raises(ValueError) as err:
        builtin_problem(KEY, model, data.replace("PATH", "/tmp"))
    assert str(err.value) == (
        f"--model {model} does not take --data {data}; --model {model} accepts --data {accepted}."
    )


@pytest.mark.parametrize(
    ("model", "data", "match"),
    [
        (
            "mpl",
            "digits",
            r"^unknown --model 'mpl'; choose one of: mlp, cnn, lstm, deep-linear "
            r"\(did you mean 'mlp'\?\)$",
        ),
        (
            "mlp",
            "digit",
            r"unknown --data 'digit'; choose one of: digits, spirals, "
            r"teacher-student, mixture, mnist:PATH, cifar10:PATH \(did you mean 'digits'\?\)",
        ),
        ("mlp", "svhn:/data", r"unknown --data 'svhn:/data'"),
        ("mlp", "mnist", r"--data mnist needs the folder of its files: --data mnist:PATH"),
        ("mlp", "cifar10:", r"--data cifar10 needs the folder"),
        ("mlp", "spirals:/x", r"--data spirals takes no folder, got 'spirals:/x'"),
    ],
)
def test_unknown_names(model, data, match):
    with pytest.raises(ValueError, match=match):
        builtin_problem(KEY, model, data)


def test_bad_sizes():
    pytest.importorskip("sklearn")
    with pytest.raises(ValueError, match=r"--data digits has 1,797 examples; num_examples=2,000"):
        builtin_problem(KEY, "mlp", "digits", num_examples=2000)
    with pytest.raises(ValueError, match=r"`width` must be an integer >= 1, got 0"):
        builtin_problem(KEY, "mlp", "spirals", width=0)
    with pytest.raises(ValueError, match=r"`test_fraction` must be in \(0, 1\), got 1.5"):
        builtin_problem(KEY, "mlp", "spirals", test_fraction=1.5)
    with pytest.raises(TypeError, match=r"`key` must be a jax.random key"):
        builtin_problem(0, "mlp", "spirals")


def test_digits_without_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now raises ImportError
    with pytest.raises(ImportError, match=r"--data digits needs scikit-learn.*'jaxscape\[data\]'"):
        builtin_problem(KEY, "mlp", "digits")


# --------------------------------------------------------------------------- user problems


@pytest.fixture(autouse=True)
def tests_on_path(monkeypatch, request):
    monkeypatch.syspath_prepend(str(request.path.parent))


@pytest.mark.parametrize("name", ["linen_problem", "nnx_problem", "plain_problem"])
def test_docstring_examples_load(name):
    p = load_problem(f"problem_fixtures:{name}")
    loss = float(jax.jit(p.loss_fn)(p.params, p.train))
    assert np.isfinite(loss) and loss > 0
    assert f"{count_params(p.params)} params" in p.description
    if name == "plain_problem":
        assert p.apply_fn is None and p.test is None and p.name == "problem_fixtures:plain_problem"
    else:
        assert jax.eval_shape(p.apply_fn, p.params, p.train.x).shape == (len(p.train.y), 4)
    if name == "linen_problem":
        assert p.name == "linen-mlp" and len(p.test.y) == 16 and len(p.train.y) == 48


def test_kwargs_reach_make():
    p = load_problem("problem_fixtures:plain_problem", num_examples=32)
    assert p.train[0].shape == (32, 3)
    with pytest.raises(TypeError, match=r"--problem .*: cannot pass \['size'\] to it"):
        load_problem("problem_fixtures:plain_problem", size=32)


def plain(n=6, **overrides):
    """A valid dict problem (float64 least squares), with fields replaced by ``overrides``."""
    x = jnp.arange(2.0 * n).reshape(n, 2)
    return {
        "loss_fn": lambda p, b: jnp.mean((b[0] @ p["w"] - b[1]) ** 2),
        "params": {"w": jnp.ones(2)},
        "train": (x, x.sum(1)),
        **overrides,
    }


@pytest.fixture
def user_module(monkeypatch):
    """Register a module ``usermod`` with the given attributes; returns its spec prefix."""

    def register(**attrs):
        module = types.ModuleType("usermod")
        module.__dict__.update(attrs)
        for value in attrs.values():
            if isinstance(value, types.FunctionType):
                value.__module__ = "usermod"
        monkeypatch.setitem(sys.modules, "usermod", module)
        return "usermod:make"

    return register


def test_return_forms(user_module):
    p = load_problem(user_module(make=lambda: plain()))
    assert p.name == "usermod:make" and p.description == "usermod:make: 6 train examples; 2 params"
    d = plain()
    tup = load_problem(
        user_module(make=lambda: (d["loss_fn"], d["params"], d["train"], d["train"]))
    )
    assert tup.test is not None and tup.description.endswith("6 train / 6 test examples; 2 params")
    given = Problem("mine", d["loss_fn"], d["params"], d["train"], description="my problem")
    assert load_problem(user_module(make=lambda: given)) is given


def boom():
    raise RuntimeError("boom")


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: [1, 2], TypeError, r"make\(\) returned a list; expected a Problem, a dict"),
        (lambda: (1, 2), TypeError, r"make\(\) returned a tuple of 2"),
        (
            lambda: {"loss_fn": len},
            ValueError,
            r"the dict make\(\) returned lacks the key\(s\) params, train",
        ),
        (lambda: plain(test_data=1), ValueError, r".*unknown key\(s\) 'test_data'; allowed: name"),
        (lambda: plain(loss_fn=3), TypeError, r"`loss_fn` must be a function, got int"),
        (lambda: plain(name=3), TypeError, r"`name` must be a string"),
        (lambda: plain(params={"w": jnp.ones(2, int)}), TypeError, r"`params` leaf 'w' has dtype"),
        (lambda: plain(params={"w": "abc"}), TypeError, r"`params` leaf 'w' is a str, not an"),
        (lambda: plain(params={}), ValueError, r"`params` has no array leaves"),
        (
            lambda: plain(loss_fn=lambda p, b: b[0] @ p["w"]),
            ValueError,
            r"`loss_fn\(params, batch\)` must return a scalar, got \(2,\)",
        ),
        (
            lambda: plain(loss_fn=lambda p, b: float(p["w"].sum())),
            ValueError,
            r"loss_fn\(params, batch\) failed on the first 2 training examples.*"
            r"ConcretizationTypeError",
        ),
        (
            lambda: plain(train=(jnp.ones((6, 2)), jnp.ones(5))),
            ValueError,
            r"every leaf of `train` must have the same leading \(example\) axis.*"
            r"'0' \(6, 2\), '1' \(5,\)\.$",
        ),
        (lambda: plain(train=(jnp.ones(()),)), ValueError, r".*same leading .*'0' \(\)\.$"),
        (
            lambda: plain(test={"x": jnp.ones((3, 2))}),
            ValueError,
            r"`test` must have the structure of `train`",
        ),
        (
            lambda: plain(test=(jnp.ones((3, 3)), jnp.ones(3))),
            ValueError,
            r"`test` leaf '0' has examples of shape \(3,\)",
        ),
        (
            lambda: plain(apply_fn=lambda p, x: x @ p["w"]),
            ValueError,
            r"`apply_fn\(params, x\)` must return outputs of shape \(N, num_classes\), got \(2,\)",
        ),
        (
            lambda: models.from_nnx(nnx.Linear(2, 2, rngs=nnx.Rngs(0))),
            TypeError,
            r"make\(\) returned from_nnx's \(loss_fn, params, merge\)",
        ),
    ],
)
def test_bad_return(user_module, make, error, match):
    with pytest.raises(error, match=r"^--problem 'usermod:make': " + match):
        load_problem(user_module(make=make))


def test_make_raises(user_module):
    with pytest.raises(
        ValueError,
        match=r"--problem 'usermod:make': make\(\) raised "
        r"RuntimeError: boom",
    ) as err:
        load_problem(user_module(make=boom))
    assert isinstance(err.value.__cause__, RuntimeError)


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        ("x", ValueError, r"^--problem must look like package.module:function, got 'x'\.$"),
        (":make", ValueError, r"must look like package.module:function, got ':make'"),
        ("usermod:", ValueError, r"must look like package.module:function"),
        ("a:b:c", ValueError, r"must look like package.module:function"),
        (
            "no_such_module_xyz:make",
            ValueError,
            r"^--problem 'no_such_module_xyz:make': cannot import module 'no_such_module_xyz' "
            r"\(ModuleNotFoundError: No module named 'no_such_module_xyz'\).*PYTHONPATH",
        ),
        ("usermod:mke", ValueError, r"usermod has no 'mke'; its functions: helper, make\.$"),
        ("usermod:SIZE", TypeError, r"usermod.SIZE is a int, not a function"),
    ],
)
def test_bad_spec(user_module, spec, error, match):
    user_module(make=lambda: plain(), helper=lambda: None, _private=lambda: None, SIZE=3)
    with pytest.raises(error, match=match):
        load_problem(spec)


def test_module_that_fails_on_import(tmp_path, monkeypatch):
    (tmp_path / "broken_problem_mod.py").write_text("raise RuntimeError('no GPU here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        ValueError,
        match=r"importing module 'broken_problem_mod' raised "
        r"RuntimeError: no GPU here",
    ):
        load_problem("broken_problem_mod:make")
