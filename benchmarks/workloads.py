"""The standard benchmark workloads, rebuilt bit for bit from ``workloads.json``.

Everything is drawn with NumPy (PCG64) exactly as the JSON's ``conventions`` say, so the
PyTorch side (``compare_pyhessian.py``) and the JAX side build identical inputs, parameters
and directions. Params use PyTorch layouts (dense ``W (out, in)``, conv ``OIHW``, data
``NCHW``) and are a list of ``(W, b)`` tuples in ``nn.Sequential`` order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

SPEC_PATH = Path(__file__).with_name("workloads.json")


def load_spec(path: str | Path = SPEC_PATH) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


class Workload(NamedTuple):
    name: str
    title: str
    layers: list[dict[str, Any]]
    theta0: list[tuple[np.ndarray, np.ndarray]]
    theta1: list[tuple[np.ndarray, np.ndarray]]
    x: np.ndarray  # float32, (batch, *input_shape)
    y: np.ndarray  # int64, (batch,)
    v: list[tuple[np.ndarray, np.ndarray]]  # unit-norm HVP probe
    num_params: int


def init_params(layers: list[dict[str, Any]], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for W then b, layer by layer, one generator."""
    rng = np.random.default_rng(seed)
    params = []
    for layer in layers:
        if layer["type"] == "dense":
            shape, fan_in = (layer["out"], layer["in"]), layer["in"]
        elif layer["type"] == "conv2d":
            kh = kw = layer["kernel"]
            shape, fan_in = (layer["out"], layer["in"], kh, kw), layer["in"] * kh * kw
        else:
            continue
        bound = 1.0 / np.sqrt(fan_in)
        W = rng.uniform(-bound, bound, shape).astype(np.float32)
        b = rng.uniform(-bound, bound, (layer["out"],)).astype(np.float32)
        params.append((W, b))
    return params


def unit_vector(params, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Standard normal per param in order, divided by the global norm computed in float64."""
    rng = np.random.default_rng(seed)
    raw = [
        tuple(rng.standard_normal(p.shape).astype(np.float32) for p in layer) for layer in params
    ]
    norm = np.sqrt(sum(float(np.sum(p.astype(np.float64) ** 2)) for layer in raw for p in layer))
    return [tuple((p / norm).astype(np.float32) for p in layer) for layer in raw]


def make_data(spec: dict[str, Any], batch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(spec["data_seed"])
    n = spec["batch"] if batch is None else batch
    x = rng.standard_normal((n, *spec["input_shape"])).astype(np.float32)
    y = rng.integers(0, spec["num_classes"], size=n)
    return x, y


def build(name: str, *, batch: int | None = None, spec: dict[str, Any] | None = None) -> Workload:
    """Build workload ``name`` ("mlp", "cnn", "mlp-small"), optionally at another batch size."""
    spec = load_spec() if spec is None else spec
    if name not in spec["workloads"]:
        raise KeyError(f"unknown workload {name!r}; choose from {sorted(spec['workloads'])}")
    w = spec["workloads"][name]
    theta0 = init_params(w["layers"], w["param_seed"])
    num_params = sum(p.size for layer in theta0 for p in layer)
    if num_params != w["expected_num_params"]:
        raise AssertionError(
            f"{name}: built {num_params} params, spec says {w['expected_num_params']}"
        )
    x, y = make_data(w, batch)
    return Workload(
        name=name,
        title=w["title"],
        layers=w["layers"],
        theta0=theta0,
        theta1=init_params(w["layers"], w["theta1_seed"]),
        x=x,
        y=y,
        v=unit_vector(theta0, w["vec_seed"]),
        num_params=num_params,
    )


# --------------------------------------------------------------------------- JAX side


def default_conv_impl() -> str:
    """``"matmul"`` on CPU, ``"xla"`` elsewhere (see ``jax_loss_fn``)."""
    import jax

    return "matmul" if jax.default_backend() == "cpu" else "xla"


def jax_loss_fn(layers: list[dict[str, Any]], conv_impl: str | None = None):
    """``loss_fn(params, (x, y))``: the network in PyTorch layouts, mean softmax cross-entropy.

    Params and data are in PyTorch layouts (``OIHW`` kernels, ``NCHW`` images); internally
    the activations are channels-last and the flatten transposes back to ``(C, H, W)`` order,
    so the function is the same network. ``conv_impl``:

    - ``"xla"``: ``lax.conv_general_dilated``.
    - ``"matmul"``: the same cross-correlation as shifted slices concatenated over the
      kernel window (im2col) times the reshaped kernel. On CPU, XLA runs convolutions inside
      a ``lax`` loop body (every eigensolver's) 12-20× slower than outside one
      (jax-ml/jax#12868, open); the matmul form has no convolution in its derivatives and
      runs at full speed inside loops (W2's linearized Hessian product: ~4.6 s → ~0.17 s).

    Default: ``default_conv_impl()``.
    """
    import jax
    import jax.numpy as jnp

    from jaxscape.models import conv2d

    conv_impl = default_conv_impl() if conv_impl is None else conv_impl
    if conv_impl not in ("xla", "matmul"):
        raise ValueError(f"conv_impl must be 'xla' or 'matmul', got {conv_impl!r}")

    def conv(x, W, b, pad):  # x NHWC, W OIHW
        return conv2d(x, jnp.transpose(W, (2, 3, 1, 0)), (pad, pad), conv_impl) + b

    def forward(params, x):
        it = iter(params)
        channels_last = False
        for layer in layers:
            kind = layer["type"]
            if kind == "dense":
                W, b = next(it)
                x = x @ W.T + b
            elif kind == "conv2d":
                W, b = next(it)
                if not channels_last:
                    x, channels_last = jnp.transpose(x, (0, 2, 3, 1)), True
                x = conv(x, W, b, layer["pad"])
            elif kind == "tanh":
                x = jnp.tanh(x)
            elif kind == "relu":
                x = jax.nn.relu(x)
            elif kind == "maxpool2":
                window = (1, 2, 2, 1) if channels_last else (1, 1, 2, 2)
                x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, window, "VALID")
            elif kind == "flatten":
                if channels_last:  # torch.flatten order is (C, H, W)
                    x, channels_last = jnp.transpose(x, (0, 3, 1, 2)), False
                x = x.reshape(x.shape[0], -1)
            else:
                raise ValueError(f"unknown layer type {kind!r}")
        return x

    def loss_fn(params, batch):
        x, y = batch
        logits = forward(params, x)
        picked = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
        return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - picked)

    return loss_fn


def to_jax(workload: Workload):
    """``(params, batch, v)`` as JAX arrays (float32, labels int32)."""
    import jax.numpy as jnp

    def tree(p):
        return [tuple(jnp.asarray(a) for a in layer) for layer in p]

    batch = (jnp.asarray(workload.x), jnp.asarray(workload.y, dtype=jnp.int32))
    return tree(workload.theta0), batch, tree(workload.v)
