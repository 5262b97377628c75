"""Problems: a loss, its initial parameters and its data, built in or your own.

A ``Problem`` is what a landscape report needs: ``loss_fn(params, batch) -> scalar`` (eval mode,
a pure function of ``params``), the initial ``params`` θ₀, a ``train`` batch (a pytree whose
leaves share a leading example axis, e.g. ``Dataset(x, y)``) and an optional ``test`` batch.

- ``builtin_problem(key, "mlp", "digits")``: a model of ``MODELS`` on a data set of
  ``DATASETS`` (``list_builtins()`` prints which pairs go together). The default is the demo:
  MLP 64-32-32-10 (tanh) on scikit-learn's 8×8 digits, 3,466 params, as ``jaxscape spectrum``.
- ``load_problem("mypkg.module:make")``: your own, from a function ``make(**kwargs)`` (the
  protocol is in its docstring).

Errors name the command-line flag they come from (``--model``, ``--data``, ``--problem``),
since the ``jaxscape`` command shows them as they are.

>>> problem = builtin_problem(jax.random.key(0), "mlp", "spirals", num_examples=100)
>>> problem.train.x.shape, problem.test.x.shape, count_params(problem.params)
((80, 2), (20, 2), 1218)
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxscape import datasets, models
from jaxscape._checks import (
    check_float_dtype,
    check_key,
    check_params,
    check_positive_int,
    check_scalar_loss,
    leaf_names,
)
from jaxscape.curvature import count_params
from jaxscape.data import Dataset, gaussian_mixture, teacher_student_dataset, train_test_split
from jaxscape.data import two_spirals as _two_spirals

PyTree = Any


class Problem(NamedTuple):
    """A loss, the point θ₀ to analyse it at, and its data.

    Attributes:
      name: short name, e.g. ``"mlp-digits"`` or ``"mypkg.module:make"``.
      loss_fn: ``loss_fn(params, batch) -> scalar`` in eval mode (a pure function of params).
      params: the initial parameters θ₀, a pytree of float arrays.
      train: a batch pytree with a leading example axis, e.g. ``Dataset(x, y)``.
      test: the same structure, or ``None``.
      apply_fn: ``apply_fn(params, x) -> outputs`` (N, num_classes) for classifiers (accuracy,
        disagreement), ``None`` otherwise.
      train_loss_fn: ``loss_fn(params, batch, state) -> (loss, new_state)`` for models with
        BatchNorm state (``models.model_loss(train=True)``), ``None`` otherwise.
      state: the non-trained variables (``{"batch_stats": ...}``) or ``None``.
      description: one line: model, data, sizes, number of params.
    """

    name: str
    loss_fn: Callable[[PyTree, Any], jax.Array]
    params: PyTree
    train: Any
    test: Any | None = None
    apply_fn: Callable[[PyTree, Any], jax.Array] | None = None
    train_loss_fn: Callable[..., Any] | None = None
    state: PyTree | None = None
    description: str = ""


MODELS: dict[str, str] = {
    "mlp": "fully connected tanh network, --depth hidden layers of --width units",
    "cnn": "conv net: --depth 3×3 conv blocks of --width channels, mean pooling, linear head",
    "lstm": "LSTM over image rows: --depth stacked layers of --width units, linear head",
    "deep-linear": "deep linear network x W₁⋯W_H, --depth hidden layers of --width, squared error",
}
DATASETS: dict[str, str] = {
    "digits": "scikit-learn's 1,797 8×8 handwritten digits, 10 classes (bundled, no download)",
    "spirals": "two interleaved 2-D spirals, 2 classes (synthetic)",
    "teacher-student": "8-D Gaussian inputs labelled by 4 ReLU teachers, regression (synthetic)",
    "mixture": "8-D Gaussian mixture, 4 overlapping classes (synthetic)",
    "mnist:PATH": "MNIST or Fashion-MNIST IDX files in folder PATH, 28×28, 10 classes",
    "cifar10:PATH": "CIFAR-10 python batches in folder PATH, 32×32×3, 10 classes",
}
_IMAGES = ("digits", "mnist", "cifar10")
_ACCEPTS = {
    "mlp": ("digits", "spirals", "teacher-student", "mixture", "mnist", "cifar10"),
    "cnn": _IMAGES,
    "lstm": _IMAGES,
    "deep-linear": ("digits", "spirals", "teacher-student", "mixture", "mnist", "cifar10"),
}
_LAYOUT = {"mlp": "flat", "cnn": "image", "lstm": "sequence", "deep-linear": "flat"}
_SYNTHETIC_EXAMPLES = 1024


def _flag_name(base: str) -> str:
    return f"{base}:PATH" if base in ("mnist", "cifar10") else base


def _unknown(flag: str, value: Any, choices: list[str]) -> ValueError:
    close = difflib.get_close_matches(str(value), choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(f"unknown {flag} {value!r}; choose one of: {', '.join(choices)}{hint}")


# --------------------------------------------------------------------------- built-in problems


def builtin_problem(
    key: jax.Array,
    model: str,
    data: str,
    *,
    dtype: Any = None,
    width: int = 32,
    depth: int = 2,
    num_examples: int | None = None,
    test_fraction: float = 0.2,
) -> Problem:
    """A model of ``MODELS`` on a data set of ``DATASETS``, initialized and split by ``key``.

    Data layout follows the model (flat vectors for ``mlp`` and ``deep-linear``, NHWC images
    for ``cnn``, rows as a sequence for ``lstm``). Pixels are scaled to [0, 1], synthetic data
    is used as generated (no standardization, as ``jaxscape spectrum``). Classification uses the
    mean softmax cross-entropy, except ``deep-linear``: mean squared error against one-hot
    targets (the labels in ``train.y`` stay integers). ``teacher-student`` is regression
    (mean squared error, one output, ``apply_fn=None``).

    Args:
      key: split into data (synthetic sets), train/test split and initialization keys.
      model: a key of ``MODELS``.
      data: a key of ``DATASETS``; ``mnist:PATH`` and ``cifar10:PATH`` read the training
        files in folder ``PATH`` (nothing is downloaded).
      dtype: float dtype of data and params; ``None`` is JAX's default float.
      width, depth: hidden width (CNN channels) and number of hidden layers (conv blocks, LSTM
        layers).
      num_examples: examples before the split: the first ``num_examples`` of a real data set
        (default all of them), or the size of a synthetic one (default 1,024).
      test_fraction: share of the examples held out as ``test`` (stratified by class).

    Returns:
      ``Problem`` named ``"{model}-{data}"``.
    """
    fn = "builtin_problem"
    check_key(fn, key)
    if model not in MODELS:
        raise _unknown("--model", model, list(MODELS))
    base, path = _parse_data(data)
    if base not in _ACCEPTS[model]:
        accepted = ", ".join(map(_flag_name, _ACCEPTS[model]))
        raise ValueError(
            f"--model {model} does not take --data {_flag_name(base)}; --model {model} accepts "
            f"--data {accepted}."
        )
    width = check_positive_int(fn, "width", width)
    depth = check_positive_int(fn, "depth", depth)
    if num_examples is not None:
        num_examples = check_positive_int(fn, "num_examples", num_examples, minimum=2)
    dtype = check_float_dtype(fn, dtype)
    k_data, k_split, k_init = jax.random.split(key, 3)
    full, num_classes = _load(k_data, base, path, _LAYOUT[model], dtype, num_examples)
    split = train_test_split(  # NumPy leaves are split on the host: no compilation
        k_split,
        jax.tree.map(np.asarray, full),
        test_fraction=test_fraction,
        stratify=num_classes is not None,
    )
    net = _network(model, width, depth, num_classes or 1, dtype)
    params, state = _init_model(k_init, net, split.train.x[:1])
    loss = _output_loss(model, num_classes)
    apply = models.model_apply(net, state=state or None)
    n = count_params(params)
    return Problem(
        name=f"{model}-{base}",
        loss_fn=models.model_loss(net, loss, state=state or None),
        params=params,
        train=split.train,
        test=split.test,
        apply_fn=None if num_classes is None else lambda params, x: apply(params, (x, None)),
        train_loss_fn=models.model_loss(net, loss, train=True) if state else None,
        state=state or None,
        description=(
            f"{_architecture(model, net, full.x.shape[1:])} on {base} "
            f"({_task(num_classes)}): {len(split.train.y):,} train / {len(split.test.y):,} "
            f"test examples; {n:,} params, {dtype.name}"
        ),
    )


def _parse_data(data: Any) -> tuple[str, str | None]:
    names = list(DATASETS)
    if not isinstance(data, str):
        raise _unknown("--data", data, names)
    base, sep, path = data.partition(":")
    if _flag_name(base) not in DATASETS:
        raise _unknown("--data", data, names)
    if base in ("mnist", "cifar10") and not path:
        raise ValueError(
            f"--data {base} needs the folder of its files: --data {base}:PATH, e.g. "
            f"{base}:~/data/{base}."
        )
    if base not in ("mnist", "cifar10") and sep:
        raise ValueError(f"--data {base} takes no folder, got {data!r}; use --data {base}.")
    return base, path or None


def _load(
    key: jax.Array, base: str, path: str | None, layout: str, dtype: Any, num: int | None
) -> tuple[Dataset, int | None]:
    """The whole data set in ``layout`` and its number of classes (``None``: regression)."""
    n = num or _SYNTHETIC_EXAMPLES
    if base == "spirals":
        return _two_spirals(key, num_examples=n, dtype=dtype), 2
    if base == "mixture":
        return _mixture(key, n, dtype), 4
    if base == "teacher-student":
        data = teacher_student_dataset(key, num_examples=n, input_dim=8, num_teacher=4, dtype=dtype)
        return data.data, None
    if base == "digits":
        try:
            full = datasets.load_digits(layout=layout, dtype=dtype)
        except ImportError as err:
            raise ImportError(
                "--data digits needs scikit-learn, which bundles the digits (no download): "
                "pip install 'jaxscape[data]'"
            ) from err
    else:  # a missing folder or a bad file: the loader's own error names the file
        loader = datasets.load_mnist if base == "mnist" else datasets.load_cifar10
        full = loader(path, split="train", layout=layout, dtype=dtype)
    total = len(full.y)
    if num is not None and num > total:
        raise ValueError(
            f"--data {base} has {total:,} examples; num_examples={num:,} asks for more."
        )
    return (full if num is None else Dataset(full.x[:num], full.y[:num])), 10


# jitted: one compilation instead of one for each eager operation
_init_model = jax.jit(models.init_model, static_argnums=1)


@partial(jax.jit, static_argnums=(1, 2))
def _mixture(key: jax.Array, n: int, dtype: Any) -> Dataset:
    return gaussian_mixture(key, num_examples=n, dim=8, num_classes=4, dtype=dtype)


def _network(model: str, width: int, depth: int, num_outputs: int, dtype: Any):
    if model == "mlp":
        return models.MLP((width,) * depth + (num_outputs,), dtype=dtype)
    if model == "cnn":
        return models.CNN((width,) * depth, num_outputs, dtype=dtype)
    if model == "lstm":
        return models.LSTMClassifier(width, num_outputs, num_layers=depth, dtype=dtype)
    return models.DeepLinear((width,) * depth + (num_outputs,), dtype=dtype)


def _output_loss(model: str, num_classes: int | None) -> str | models.OutputLoss:
    if num_classes is None:
        return "mse"
    if model == "deep-linear":

        def one_hot_mse(outputs: jax.Array, labels: jax.Array) -> jax.Array:
            targets = jax.nn.one_hot(labels, num_classes, dtype=outputs.dtype)
            return models.mean_squared_error(outputs, targets)

        return one_hot_mse
    return "cross_entropy"


def _architecture(model: str, net: Any, input_shape: tuple[int, ...]) -> str:
    if model in ("mlp", "deep-linear"):
        sizes = "-".join(str(s) for s in (int(np.prod(input_shape)), *net.features))
        return f"MLP {sizes} (tanh)" if model == "mlp" else f"deep linear {sizes}"
    if model == "cnn":
        return f"CNN {'-'.join(map(str, net.channels))} channels → {net.num_classes}"
    return f"LSTM {net.num_layers}×{net.hidden_size} → {net.num_classes}"


def _task(num_classes: int | None) -> str:
    return "regression" if num_classes is None else f"{num_classes} classes"


def list_builtins() -> str:
    """A table of ``MODELS`` and ``DATASETS`` and which data sets each model takes."""
    names = list(DATASETS)
    pad = max(map(len, [*MODELS, *names])) + 2
    lines = ["models (--model):"]
    lines += [f"  {name:<{pad}}{text}" for name, text in MODELS.items()]
    lines += ["", "data sets (--data):"]
    lines += [f"  {name:<{pad}}{text}" for name, text in DATASETS.items()]
    lines += ["", "combinations (yes: accepted):", " " * (pad + 2) + "  ".join(names)]
    for model, accepted in _ACCEPTS.items():
        marks = [
            ("yes" if name.partition(":")[0] in accepted else "-").center(len(name))
            for name in names
        ]
        lines.append(f"  {model:<{pad}}" + "  ".join(marks).rstrip())
    return "\n".join(lines)


# --------------------------------------------------------------------------- user problems

_REQUIRED = ("loss_fn", "params", "train")


def load_problem(spec: str, **kwargs: Any) -> Problem:
    """Your own problem from ``"package.module:function"``: ``function(**kwargs)`` builds it.

    The function (``make`` below) is imported, called with ``kwargs`` and may return

    - a ``Problem``;
    - a dict with the keys ``loss_fn``, ``params``, ``train`` and optionally ``test``,
      ``apply_fn``, ``name``, ``description`` (or any other ``Problem`` field);
    - a tuple ``(loss_fn, params, train)`` or ``(loss_fn, params, train, test)``.

    ``loss_fn(params, batch) -> scalar`` must be a JAX function of ``params`` (it is traced),
    ``params`` a pytree of float arrays, ``train`` and ``test`` batch pytrees whose leaves share
    a leading example axis (the whole set is one batch: ``loss_fn(params, train)`` is the
    training loss). ``apply_fn(params, x) -> (N, num_classes)`` outputs, with ``train = (x,
    y)``, makes accuracy and disagreement available. Everything is checked on shapes only
    (``jax.eval_shape`` of the loss on the first 2 training examples), and each error says
    what is wrong, prefixed with ``--problem``.

    A Flax linen model::

        def make(seed=0):
            data = js.data.gaussian_mixture(jax.random.key(seed), num_examples=64, dim=4)
            model = js.MLP((16, 4))
            params, _ = js.init_model(jax.random.key(1), model, data.x[:1])
            return {"loss_fn": js.cross_entropy_loss(model), "params": params, "train": data,
                    "apply_fn": lambda p, x: model.apply({"params": p}, x)}

    A Flax NNX model, through ``jaxscape.from_nnx`` (params are its ``nnx.Param`` state)::

        def make():
            net = nnx.Sequential(nnx.Linear(4, 16, rngs=nnx.Rngs(0)), jnp.tanh,
                                 nnx.Linear(16, 4, rngs=nnx.Rngs(1)))
            nl = js.from_nnx(net)  # (loss_fn, params, merge)
            data = js.data.gaussian_mixture(jax.random.key(0), num_examples=64, dim=4)
            return {"loss_fn": nl.loss_fn, "params": nl.params, "train": data,
                    "apply_fn": lambda p, x: nl.merge(p)(x)}

    Plain JAX, a dict of arrays and a function::

        def make(num_examples=64):
            x = jax.random.normal(jax.random.key(0), (num_examples, 3))
            y = jnp.sin(x.sum(1))
            params = {"w": jnp.zeros((3, 8)), "v": jnp.ones(8) / 8}

            def loss_fn(params, batch):
                x, y = batch
                return jnp.mean((jnp.tanh(x @ params["w"]) @ params["v"] - y) ** 2)

            return loss_fn, params, (x, y)

    ``jaxscape report --problem mymodule:make`` then analyses it (``mymodule`` must be
    importable: installed, or in a folder on ``PYTHONPATH``). Working examples are in
    ``tests/problem_fixtures.py``.

    Raises:
      ValueError or TypeError naming the problem and what is wrong with it; an exception raised
      by ``make`` itself is chained (``raise ... from``).
    """
    where = f"--problem {spec!r}"
    make = _import_function(spec)
    try:
        inspect.signature(make).bind(**kwargs)
    except TypeError as err:
        raise TypeError(f"{where}: cannot pass {sorted(kwargs)} to it: {err}.") from err
    except ValueError:  # no signature (a builtin): let the call decide
        pass
    try:
        out = make(**kwargs)
    except Exception as err:
        raise ValueError(f"{where}: make() raised {type(err).__name__}: {err}") from err
    return _validate(where, _as_problem(where, spec, out))


def _import_function(spec: Any) -> Callable[..., Any]:
    form = "--problem must look like package.module:function"
    if not isinstance(spec, str):
        raise TypeError(f"{form}, got {spec!r}.")
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr or ":" in attr:
        raise ValueError(f"{form}, got {spec!r}.")
    where = f"--problem {spec!r}"
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(
            f"{where}: cannot import module {module_name!r} ({type(err).__name__}: {err}); it "
            "must be installed or in a folder on PYTHONPATH (e.g. PYTHONPATH=. for the current "
            "folder)."
        ) from err
    except Exception as err:
        raise ValueError(
            f"{where}: importing module {module_name!r} raised {type(err).__name__}: {err}"
        ) from err
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{where}: {module_name} has no {attr!r}; {_callables(module)}.")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(
            f"{where}: {module_name}.{attr} is a {type(obj).__name__}, not a function that "
            "returns the problem."
        )
    return obj


def _callables(module: Any) -> str:
    names = [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and inspect.isfunction(value)
        and value.__module__ == module.__name__
    ]
    if not names:
        return "it defines no functions"
    shown = ", ".join(sorted(names)[:8]) + (", ..." if len(names) > 8 else "")
    return f"its functions: {shown}"


def _as_problem(where: str, spec: str, out: Any) -> Problem:
    if isinstance(out, Problem):
        return out if out.name else out._replace(name=spec)
    if isinstance(out, models.NNXLoss):
        raise TypeError(
            f"{where}: make() returned from_nnx's (loss_fn, params, merge), which has no data; "
            "return (nnx_loss.loss_fn, nnx_loss.params, train) or a dict."
        )
    if isinstance(out, dict):
        missing = [k for k in _REQUIRED if k not in out]
        if missing:
            raise ValueError(
                f"{where}: the dict make() returned lacks the key(s) {', '.join(missing)} "
                f"(required: {', '.join(_REQUIRED)}; it has: {', '.join(map(str, out))})."
            )
        unknown = [k for k in out if k not in Problem._fields]
        if unknown:
            raise ValueError(
                f"{where}: the dict make() returned has unknown key(s) "
                f"{', '.join(map(repr, unknown))}; allowed: {', '.join(Problem._fields)}."
            )
        return Problem(**{"name": spec, **out})
    if isinstance(out, tuple) and len(out) in (3, 4):
        return Problem(spec, *out)
    shown = f"a tuple of {len(out)}" if isinstance(out, tuple) else f"a {type(out).__name__}"
    raise TypeError(
        f"{where}: make() returned {shown}; expected a Problem, a dict with keys loss_fn, "
        "params, train (and optionally test, apply_fn, name, description), or a tuple "
        "(loss_fn, params, train) or (loss_fn, params, train, test)."
    )


def _validate(where: str, problem: Problem) -> Problem:
    for field in ("name", "description"):
        if not isinstance(getattr(problem, field), str):
            raise TypeError(
                f"{where}: `{field}` must be a string, got {getattr(problem, field)!r}."
            )
    for field in ("loss_fn", "apply_fn", "train_loss_fn"):
        value = getattr(problem, field)
        if (value is not None or field == "loss_fn") and not callable(value):
            raise TypeError(f"{where}: `{field}` must be a function, got {type(value).__name__}.")
    _check_arrays(where, "params", problem.params)
    check_params(where, problem.params, "params")
    n = _check_batch(where, "train", problem.train)
    if problem.test is not None:
        _check_batch(where, "test", problem.test)
        _check_same_structure(where, problem.train, problem.test)
    head = jax.tree.map(lambda a: a[:2], problem.train)
    try:
        check_scalar_loss(where, problem.loss_fn, problem.params, head)
    except Exception as err:
        if str(err).startswith(where):  # check_scalar_loss's own message
            raise
        raise _traced_error(where, "loss_fn(params, batch)", err) from err
    if problem.apply_fn is not None:
        _check_apply(where, problem, head)
    if problem.description:
        return problem
    m = "" if problem.test is None else f" / {_num(problem.test):,} test"
    params = count_params(problem.params)
    description = f"{problem.name}: {n:,} train{m} examples; {params:,} params"
    return problem._replace(description=description)


def _traced_error(where: str, call: str, err: Exception) -> ValueError:
    return ValueError(
        f"{where}: {call} failed on the first 2 training examples, traced with jax.eval_shape "
        f"(it must be a JAX function of params): {type(err).__name__}: {err}"
    )


def _check_arrays(where: str, name: str, tree: Any) -> None:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError(f"{where}: `{name}` has no array leaves; expected a pytree of arrays.")
    for path, leaf in zip(leaf_names(tree), leaves, strict=True):
        if not isinstance(leaf, jax.Array | np.ndarray | np.generic | float | int):
            raise TypeError(
                f"{where}: `{name}` leaf '{path}' is a {type(leaf).__name__}, not an array."
            )


def _check_batch(where: str, name: str, batch: Any) -> int:
    _check_arrays(where, name, batch)
    shapes = {
        p: jnp.shape(a) for p, a in zip(leaf_names(batch), jax.tree.leaves(batch), strict=True)
    }
    sizes = {s[0] if s else None for s in shapes.values()}
    if len(sizes) != 1 or None in sizes or 0 in sizes:
        listed = ", ".join(f"'{p}' {s}" for p, s in shapes.items())
        raise ValueError(
            f"{where}: every leaf of `{name}` must have the same leading (example) axis, of "
            f"length >= 1, such as Dataset(x, y); got leaf shapes {listed}."
        )
    return sizes.pop()


def _num(batch: Any) -> int:
    return jnp.shape(jax.tree.leaves(batch)[0])[0]


def _check_same_structure(where: str, train: Any, test: Any) -> None:
    if jax.tree.structure(train) != jax.tree.structure(test):
        raise ValueError(
            f"{where}: `test` must have the structure of `train`; train is "
            f"{jax.tree.structure(train)}, test is {jax.tree.structure(test)}."
        )
    for path, a, b in zip(
        leaf_names(train), jax.tree.leaves(train), jax.tree.leaves(test), strict=True
    ):
        if jnp.shape(a)[1:] != jnp.shape(b)[1:] or jnp.result_type(a) != jnp.result_type(b):
            raise ValueError(
                f"{where}: `test` leaf '{path}' has examples of shape {jnp.shape(b)[1:]} "
                f"({jnp.result_type(b)}), train {jnp.shape(a)[1:]} ({jnp.result_type(a)})."
            )


def _check_apply(where: str, problem: Problem, head: Any) -> None:
    if not (isinstance(problem.train, tuple) and len(problem.train) == 2):
        raise ValueError(
            f"{where}: with `apply_fn`, `train` must be a pair (x, y) such as Dataset(x, y); "
            f"got a {type(problem.train).__name__}."
        )
    try:
        out = jax.eval_shape(problem.apply_fn, problem.params, head[0])
    except Exception as err:
        raise _traced_error(where, "apply_fn(params, x)", err) from err
    want = jnp.shape(jax.tree.leaves(head[0])[0])[0]
    if getattr(out, "ndim", None) != 2 or out.shape[0] != want:
        raise ValueError(
            f"{where}: `apply_fn(params, x)` must return outputs of shape (N, num_classes), "
            f"got {getattr(out, 'shape', type(out).__name__)} for N = {want}."
        )
