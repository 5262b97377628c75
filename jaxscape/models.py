"""Models, and the loss builders that turn them into ``loss_fn(params, batch)``.

Networks are Flax linen modules (``MLP``, ``CNN``, ``LSTMClassifier``, ``DeepLinear``); every
one takes ``__call__(x, train=False)``. A batch is ``(x, y)``.

**State.** Parameters are what the landscape is a function of. BatchNorm's running statistics
(``batch_stats``) are *state*: not trained by gradients, held explicitly, never hidden. The loss
builders come in two modes:

- eval mode (default): ``loss_fn(params, batch) -> scalar``, the state fixed at the value you
  pass (``state=``). This is a pure function of ``params``: **every curvature, spectrum and
  landscape tool uses this mode** (the Hessian of a loss whose normalisation statistics move with
  the parameters is a different object; fixing them is what PyHessian and loss-landscape do).
- train mode (``train=True``): ``loss_fn(params, batch, state) -> (loss, new_state)``, BatchNorm
  normalising by the batch statistics and returning the updated running averages. **``fit``
  uses this mode** when it is given a ``state``.

Adapters: ``from_apply`` for any plain ``apply(params, x)``, ``from_nnx`` for Flax NNX modules
(``nnx.split`` / ``nnx.merge``). ``init_model`` splits linen variables into ``(params, state)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxscape._checks import check_choice

PyTree = Any
OutputLoss = Callable[[jax.Array, jax.Array], jax.Array]

_NORMS = (None, "layer", "batch")


class BatchNorm(nn.Module):
    """Batch normalization (Ioffe & Szegedy 2015) over all axes but the last.

    ``y = (x - μ) / sqrt(σ² + ε) · scale + bias``; in training ``μ, σ²`` are the batch
    statistics and the running averages in the ``batch_stats`` collection move by
    ``momentum``; in eval mode the running averages are used. Unlike ``flax.linen.BatchNorm``
    the statistics are kept in the module's dtype, so a float64 model runs under strict dtype
    promotion.
    """

    use_running_average: bool = True
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c, axes = x.shape[-1], tuple(range(x.ndim - 1))
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros(c, self.dtype))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones(c, self.dtype))
        scale = self.param("scale", nn.initializers.ones, (c,), self.dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.dtype)
        if self.use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            mean, var = x.mean(axes), x.var(axes)
            if not self.is_initializing():
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1 - m) * mean
                ra_var.value = m * ra_var.value + (1 - m) * var
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


class LayerNorm(nn.Module):
    """Layer normalization (Ba et al. 2016) over the last axis, in the module's dtype."""

    epsilon: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), self.dtype)
        bias = self.param("bias", nn.initializers.zeros, (c,), self.dtype)
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


def _norm(
    kind: str | None, train: bool, dtype: Any, name: str, momentum: float = 0.9
) -> Callable[[jax.Array], jax.Array]:
    if kind is None:
        return lambda x: x
    if kind == "layer":
        return LayerNorm(dtype=dtype, name=name)
    return BatchNorm(use_running_average=not train, momentum=momentum, dtype=dtype, name=name)


class MLP(nn.Module):
    """Fully connected network: ``Dense → norm → activation`` per hidden width, linear head.

    Attributes:
      features: widths of every layer, the last one being the number of outputs.
      activation: nonlinearity between layers.
      residual: add a skip connection ``x + act(norm(Dense(x)))`` around every hidden layer
        whose width equals its input width (He et al. 2016).
      norm: ``None``, ``"layer"`` (LayerNorm) or ``"batch"`` (BatchNorm: state ``batch_stats``).
      dtype: parameter and computation dtype.
      bn_momentum: BatchNorm running-average momentum.
      remat: recompute each hidden layer in the backward pass instead of storing its
        activations (``flax.linen.remat``, i.e. ``jax.checkpoint``; see ``remat_block``, and
        ``remat_compiler_options`` on CPU). Same function, same params.

    Example::

        model = MLP((32, 32, 10), residual=True)
        params, state = init_model(jax.random.key(0), model, x[:1])
    """

    features: Sequence[int]
    activation: Callable[[jax.Array], jax.Array] = nn.tanh
    residual: bool = False
    norm: str | None = None
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_choice("MLP", "norm", self.norm, _NORMS)
        x = x.reshape(x.shape[0], -1).astype(self.dtype)
        layer = remat_block(_mlp_layer, self.remat)
        for i, width in enumerate(self.features):
            if i == len(self.features) - 1:
                head = nn.Dense(width, dtype=self.dtype, param_dtype=self.dtype, name=f"Dense_{i}")
                return head(x)
            x = layer(self, x, i, train)
        return x


def remat_block(block: Callable[..., Any], enabled: bool = True) -> Callable[..., Any]:
    """``block(module, x, *static)`` wrapped in ``flax.linen.remat`` (``jax.checkpoint``).

    Only ``x`` is traced; the arguments after it (layer index, ``train``) are static. The block's
    submodules are created under ``module`` with their own names, so the params are the same
    pytree with or without the wrapper. Of the block, only its input is stored for the backward
    pass; everything inside it is recomputed there, about one more forward pass of the block
    for its activations (Chen et al. 2016, "Training deep nets with sublinear memory cost"). In
    an HVP (``jvp`` of ``grad``) this covers the tangents as well. It pays where a block has
    several intermediates (a norm, a residual branch, an im2col convolution); a lone
    ``tanh(Dense(x))`` stores only its input anyway. ``enabled=False`` returns ``block``.

    On XLA:CPU compile with ``remat_compiler_options()``, or the recomputation is merged back
    into the forward pass and nothing is saved.
    """
    if not enabled:
        return block
    num_args = len(inspect.signature(block).parameters)
    return nn.remat(block, static_argnums=tuple(range(2, num_args)))


def remat_compiler_options(backend: str | None = None) -> dict[str, str]:
    """XLA options under which ``remat`` saves memory on ``backend`` (default: JAX's default).

    ``jax.checkpoint`` fences what it recomputes with an optimization barrier. XLA:CPU removes
    the barriers early in its pipeline, leaving the later passes free to merge each
    recomputation with the forward pass it repeats (common-subexpression elimination) or to
    schedule it there: the remat is undone, and a block whose derivative then reads a second
    intermediate can store more than without remat (jax 0.10: an HVP plan about 2× larger for
    a ``tanh`` MLP, see ``benchmarks/bench_memory.py``). XLA:GPU removes them only after
    scheduling (per its pipeline; not measured here).
    On CPU this returns the option that keeps the barriers (``xla_disable_hlo_passes:
    cse_barrier_expander``); elsewhere ``{}``. Pass it to ``jax.jit``::

        hvp = jax.jit(lambda p, b, v: jaxscape.hvp(loss_fn, p, b, v),
                      compiler_options=remat_compiler_options())
    """
    backend = jax.default_backend() if backend is None else backend
    return {"xla_disable_hlo_passes": "cse_barrier_expander"} if backend == "cpu" else {}


def _mlp_layer(mdl: MLP, x: jax.Array, i: int, train: bool) -> jax.Array:
    """Hidden layer ``i`` of ``MLP``: ``act(norm(Dense(x)))``, plus ``x`` when residual."""
    h = nn.Dense(mdl.features[i], dtype=mdl.dtype, param_dtype=mdl.dtype, name=f"Dense_{i}")(x)
    h = mdl.activation(_norm(mdl.norm, train, mdl.dtype, f"Norm_{i}", mdl.bn_momentum)(h))
    return x + h if mdl.residual and h.shape == x.shape else h


def _default_conv_impl() -> str:
    return "matmul" if jax.default_backend() == "cpu" else "xla"


def conv2d(
    x: jax.Array, kernel: jax.Array, padding: tuple[int, int], impl: str | None = None
) -> jax.Array:
    """Stride-1 2-D cross-correlation of NHWC ``x`` with an HWIO ``kernel``.

    ``padding = (lo, hi)`` zeros on both spatial axes. ``impl="xla"`` calls
    ``lax.conv_general_dilated``; ``impl="matmul"`` computes the same function as shifted
    slices of the padded input concatenated over the kernel window (im2col) times the reshaped
    kernel. On CPU, XLA runs convolutions inside ``lax`` loop bodies (every jaxscape solver's)
    12-20× slower than outside one (jax-ml/jax#12868), and the derivative convolutions of an
    HVP are hit too; the matmul form has no convolution anywhere. ``impl=None`` picks
    ``"matmul"`` on CPU, ``"xla"`` elsewhere.
    """
    impl = _default_conv_impl() if impl is None else impl
    check_choice("conv2d", "impl", impl, ("xla", "matmul"))
    if impl == "xla":
        dims = ("NHWC", "HWIO", "NHWC")
        return jax.lax.conv_general_dilated(
            x, kernel, (1, 1), [padding, padding], dimension_numbers=dims
        )
    kh, kw, cin, cout = kernel.shape
    xp = jnp.pad(x, ((0, 0), padding, padding, (0, 0)))
    ho, wo = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
    cols = jnp.concatenate(
        [xp[:, i : i + ho, j : j + wo, :] for i in range(kh) for j in range(kw)], axis=-1
    )
    return cols @ kernel.reshape(kh * kw * cin, cout)


class Conv(nn.Module):
    """Stride-1 ``'SAME'`` 2-D convolution (NHWC), kernel ``(kh, kw, in, out)`` like ``nn.Conv``,
    computed by ``conv2d`` (``impl``: ``"xla"``, ``"matmul"``, or ``None`` for matmul on CPU —
    same params, same function)."""

    features: int
    kernel_size: int = 3
    impl: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, cin = self.kernel_size, x.shape[-1]
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (k, k, cin, self.features), self.dtype
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.dtype)
        return conv2d(x, kernel, ((k - 1) // 2, k // 2), self.impl) + bias


def _mean_pool2(x: jax.Array) -> jax.Array:
    """2×2 mean pooling, stride 2 (an odd trailing row/column is dropped)."""
    n, h, w, c = x.shape
    if h < 2 or w < 2:
        return x
    x = x[:, : h - h % 2, : w - w % 2, :]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class CNN(nn.Module):
    """Convolutional classifier: conv blocks, 2×2 mean pooling between them, global pooling.

    Each block is ``act(norm(conv(x)))``; with ``residual=True`` it is a basic residual block
    ``act(norm(conv(act(norm(conv(x))))) + skip(x))``, ``skip`` the identity or a 1×1 conv when
    the channel count changes (He et al. 2016). Inputs are NHWC images (``(N, H, W)`` is read as
    one channel).

    Attributes:
      channels: output channels of each block.
      num_classes: outputs of the linear head.
      kernel_size: odd or even square kernel size (``'SAME'`` padding).
      norm: ``None``, ``"layer"`` or ``"batch"``.
      residual: basic residual blocks instead of single convs.
      pool: global pooling at the end, ``"mean"`` or ``"max"``.
      conv_impl: ``"xla"``, ``"matmul"`` or ``None`` (see ``Conv``: matmul on CPU).
      activation, dtype, bn_momentum: as in ``MLP``.
      remat: recompute each block (plain or residual) in the backward pass, as in ``MLP``.
    """

    channels: Sequence[int] = (16, 32)
    num_classes: int = 10
    kernel_size: int = 3
    norm: str | None = None
    residual: bool = False
    pool: str = "mean"
    conv_impl: str | None = None
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    dtype: Any = jnp.float32
    bn_momentum: float = 0.9
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_choice("CNN", "norm", self.norm, _NORMS)
        check_choice("CNN", "pool", self.pool, ("mean", "max"))
        x = (x[..., None] if x.ndim == 3 else x).astype(self.dtype)
        block = remat_block(_cnn_block, self.remat)
        for b in range(len(self.channels)):
            x = block(self, _mean_pool2(x) if b else x, b, train)
        x = x.mean(axis=(1, 2)) if self.pool == "mean" else x.max(axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.dtype, name="Head")(x)


def _cnn_block(mdl: CNN, x: jax.Array, b: int, train: bool) -> jax.Array:
    """Block ``b`` of ``CNN``: ``act(norm(conv(x)))``, or the basic residual block."""
    c = mdl.channels[b]

    def conv(name, k=mdl.kernel_size):
        return Conv(c, k, mdl.conv_impl, mdl.dtype, name=name)

    def norm(name):
        return _norm(mdl.norm, train, mdl.dtype, name, mdl.bn_momentum)

    h = mdl.activation(norm(f"Norm_{b}")(conv(f"Conv_{b}")(x)))
    if not mdl.residual:
        return h
    h = norm(f"Norm_{b}b")(conv(f"Conv_{b}b")(h))
    skip = x if x.shape[-1] == c else conv(f"Skip_{b}", 1)(x)
    return mdl.activation(h + skip)


class LSTMClassifier(nn.Module):
    """Sequence → class: stacked LSTMs (Hochreiter & Schmidhuber 1997), last hidden state → Dense.

    Inputs ``(N, T, F)``; images ``(N, H, W, 1)`` or ``(N, H, W)`` are read row by row
    (``T = H`` steps of ``F = W·C`` features), e.g. digits as 8 rows of 8 pixels.

    Attributes:
      hidden_size: LSTM state width.
      num_classes: outputs of the linear head.
      num_layers: stacked LSTM layers.
      dtype: parameter and computation dtype.
    """

    hidden_size: int = 32
    num_classes: int = 10
    num_layers: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.reshape(x.shape[0], x.shape[1], -1).astype(self.dtype)
        for i in range(self.num_layers):
            cell = nn.OptimizedLSTMCell(
                self.hidden_size, dtype=self.dtype, param_dtype=self.dtype, name=f"LSTM_{i}"
            )
            x = nn.RNN(cell)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.dtype, name="Head")(
            x[:, -1]
        )


class DeepLinear(nn.Module):
    """Deep linear network ``x ↦ x W_1 W_2 ⋯ W_H`` (row vectors, no biases).

    The function is linear in ``x`` but the loss is non-convex in the factors: every local
    minimum of the square loss is global, and for depth ``H ≥ 3`` the origin is a saddle with a
    zero Hessian (Kawaguchi 2016; Saxe, McClelland & Ganguli 2014 for the learning dynamics).
    With ``residual=True`` each layer is ``x ↦ x (I + W_i)`` — the ResNet reparameterization
    ``(I + W_H)⋯(I + W_1)`` of Hardt & Ma 2017 — and every width must equal the input width.

    Attributes:
      features: output width of each layer.
      residual: identity-plus-factor layers.
      init_scale: each factor is ``init_scale · N(0, 1/fan_in)`` (``0`` gives zeros, the
        identity map when residual).
      dtype: parameter and computation dtype.

    ``end_to_end(params, residual=...)`` returns the product matrix.
    """

    features: Sequence[int]
    residual: bool = False
    init_scale: float = 1.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.reshape(x.shape[0], -1).astype(self.dtype)
        init = nn.initializers.variance_scaling(self.init_scale**2, "fan_in", "normal")
        for i, width in enumerate(self.features):
            if self.residual and width != x.shape[-1]:
                raise ValueError(
                    "DeepLinear(residual=True) needs every width equal to the input width "
                    f"{x.shape[-1]}; layer {i} has width {width}."
                )
            w = self.param(f"W_{i}", init, (x.shape[-1], width), self.dtype)
            x = x + x @ w if self.residual else x @ w
        return x


def end_to_end(params: PyTree, *, residual: bool = False) -> jax.Array:
    """The product ``W_1 W_2 ⋯ W_H`` (or ``(I + W_1)⋯(I + W_H)``) of ``DeepLinear`` params."""
    factors = [params[f"W_{i}"] for i in range(len(params))]
    out = jnp.eye(factors[0].shape[0], dtype=factors[0].dtype)
    for w in factors:
        out = out @ (jnp.eye(w.shape[0], dtype=w.dtype) + w) if residual else out @ w
    return out


# --------------------------------------------------------------------------- output losses


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean over the batch of ``logsumexp(logits) - logits[label]`` (integer labels)."""
    picked = jnp.take_along_axis(logits, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - picked)


def mean_squared_error(outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean over all entries of ``(outputs - targets)²``.

    Outputs of shape ``(N, 1)`` are compared with targets of shape ``(N,)``.
    """
    if outputs.shape != targets.shape and outputs.shape == (*targets.shape, 1):
        outputs = outputs[..., 0]
    if outputs.shape != targets.shape:
        raise ValueError(
            f"mean_squared_error: outputs have shape {outputs.shape} but targets {targets.shape}."
        )
    return jnp.mean(jnp.square(outputs - targets.astype(outputs.dtype)))


OUTPUT_LOSSES: dict[str, OutputLoss] = {
    "cross_entropy": softmax_cross_entropy,
    "mse": mean_squared_error,
}


def _output_loss(output_loss: str | OutputLoss) -> OutputLoss:
    if callable(output_loss):
        return output_loss
    check_choice("model loss", "output_loss", output_loss, tuple(OUTPUT_LOSSES))
    return OUTPUT_LOSSES[output_loss]


# --------------------------------------------------------------------------- loss builders


def init_model(key: jax.Array, model: nn.Module, x: jax.Array) -> tuple[PyTree, PyTree]:
    """Initialize a linen module on example inputs; returns ``(params, state)``.

    ``state`` holds every other variable collection (``{"batch_stats": ...}`` with BatchNorm,
    ``{}`` without).
    """
    variables = dict(model.init(key, x))
    params = variables.pop("params")
    return params, variables


def _takes_train(model: nn.Module) -> bool:
    return "train" in inspect.signature(type(model).__call__).parameters


def model_apply(model: nn.Module, *, state: PyTree = None) -> Callable[[PyTree, Any], jax.Array]:
    """``apply_fn(params, batch) -> outputs`` on ``batch[0]`` in eval mode, state fixed.

    With ``output_loss_fn`` below this is what ``ggn_operator`` takes.
    """
    extra = {"train": False} if _takes_train(model) else {}

    def apply_fn(params, batch):
        return model.apply({"params": params, **(state or {})}, batch[0], **extra)

    return apply_fn


def output_loss_fn(output_loss: str | OutputLoss) -> Callable[[jax.Array, Any], jax.Array]:
    """``(outputs, batch) -> scalar`` comparing outputs with ``batch[1]`` (for ``ggn_operator``)."""
    fn = _output_loss(output_loss)
    return lambda outputs, batch: fn(outputs, batch[1])


def model_loss(
    model: nn.Module,
    output_loss: str | OutputLoss = "cross_entropy",
    *,
    state: PyTree = None,
    train: bool = False,
) -> Callable[..., Any]:
    """Turn a linen module into a loss on batches ``(x, y)``.

    ``L(θ) = output_loss(f(θ, x), y)``, ``output_loss`` one of ``"cross_entropy"`` (integer
    labels), ``"mse"`` or any ``fn(outputs, targets) -> scalar``.

    Args:
      model: a Flax linen module (``train=`` is passed when its ``__call__`` takes it).
      output_loss: see above.
      state: non-parameter variables, e.g. ``{"batch_stats": ...}`` from ``init_model``.
      train: mode, see the module docstring.

    Returns:
      eval mode: ``loss_fn(params, batch) -> scalar`` with ``state`` fixed (used by every
      curvature and landscape tool); train mode: ``loss_fn(params, batch, state) -> (loss,
      new_state)``, the form ``fit(..., state=...)`` takes.
    """
    fn = _output_loss(output_loss)
    if not train:
        apply_fn = model_apply(model, state=state)
        return lambda params, batch: fn(apply_fn(params, batch), batch[1])
    extra = {"train": True} if _takes_train(model) else {}

    def train_loss(params, batch, state):
        state = dict(state or {})
        outputs, new_state = model.apply(
            {"params": params, **state}, batch[0], mutable=list(state), **extra
        )
        return fn(outputs, batch[1]), dict(new_state)

    return train_loss


def cross_entropy_loss(model: nn.Module, *, state: PyTree = None, train: bool = False):
    """``model_loss(model, "cross_entropy", ...)``: mean softmax cross-entropy."""
    return model_loss(model, "cross_entropy", state=state, train=train)


def mse_loss(model: nn.Module, *, state: PyTree = None, train: bool = False):
    """``model_loss(model, "mse", ...)``: mean squared error."""
    return model_loss(model, "mse", state=state, train=train)


classification_loss = cross_entropy_loss  # the 0.1.0 name


def accuracy(model: nn.Module, *, state: PyTree = None) -> Callable[[PyTree, Any], jax.Array]:
    """``accuracy_fn(params, (x, y))``: fraction of correct argmax predictions (eval mode)."""
    apply_fn = model_apply(model, state=state)

    def accuracy_fn(params, batch):
        predicted = jnp.argmax(apply_fn(params, batch), -1)
        return jnp.mean(predicted == jnp.asarray(batch[1]).astype(predicted.dtype))

    return accuracy_fn


def recompute_batch_stats(model: nn.Module, params: PyTree, state: PyTree, x: jax.Array) -> PyTree:
    """BatchNorm statistics of ``x`` at ``params``: a train-mode pass with momentum 0, so every
    running mean and variance becomes the batch statistic (the "BN refresh" of Garipov et al.
    2018 at points of a curve). ``model`` must have a ``bn_momentum`` field (``MLP``, ``CNN``).
    """
    if not hasattr(model, "bn_momentum"):
        raise TypeError(
            f"recompute_batch_stats: {type(model).__name__} has no `bn_momentum` field; "
            "use jaxscape's MLP or CNN, or recompute the statistics yourself."
        )
    fresh = model.clone(bn_momentum=0.0)
    _, new_state = fresh.apply({"params": params, **state}, x, train=True, mutable=list(state))
    return dict(new_state)


def path_loss(
    model: nn.Module,
    output_loss: str | OutputLoss = "cross_entropy",
    *,
    state: PyTree,
    stats_x: jax.Array | None = None,
) -> Callable[[PyTree, Any], jax.Array]:
    """Loss of a BatchNorm model at points along a path (lines, planes, curves), two ways.

    - ``stats_x=None``: the running statistics stay fixed at ``state`` (usually an endpoint's).
      The points between two solutions are then normalized with statistics that belong to
      neither, which can show a barrier that is an artefact of stale statistics.
    - ``stats_x`` given: at every point the statistics are first recomputed on ``stats_x``
      (``recompute_batch_stats``), then the loss is evaluated in eval mode: the loss of the
      network one would deploy at that point. Costs one extra forward pass on ``stats_x`` per
      point. Garipov et al. (2018) recompute them; many reported barriers do not.

    Either way the result is ``loss_fn(params, batch)``, a pure function of params for
    ``interpolate``, ``surface`` and the curve tools.
    """
    fn = _output_loss(output_loss)
    if stats_x is None:
        return model_loss(model, fn, state=state)

    def loss_fn(params, batch):
        fresh = recompute_batch_stats(model, params, state, stats_x)
        outputs = model.apply({"params": params, **fresh}, batch[0], train=False)
        return fn(outputs, batch[1])

    return loss_fn


def from_apply(
    apply_fn: Callable[[PyTree, jax.Array], jax.Array],
    output_loss: str | OutputLoss = "cross_entropy",
) -> Callable[[PyTree, Any], jax.Array]:
    """Loss of any plain ``apply_fn(params, x) -> outputs``: ``loss_fn(params, (x, y))``.

    Example::

        def apply_fn(params, x):
            return jnp.tanh(x @ params["w1"]) @ params["w2"]

        loss_fn = from_apply(apply_fn, "mse")
    """
    fn = _output_loss(output_loss)
    return lambda params, batch: fn(apply_fn(params, batch[0]), batch[1])


class NNXLoss(NamedTuple):
    """``from_nnx`` result: the loss, its params, and ``merge(params) -> module``."""

    loss_fn: Callable[[PyTree, Any], jax.Array]
    params: PyTree
    merge: Callable[[PyTree], Any]


def from_nnx(module: Any, output_loss: str | OutputLoss = "cross_entropy") -> NNXLoss:
    """Loss of a Flax NNX module as a pure function of its ``nnx.Param`` state.

    ``nnx.split(module, nnx.Param, ...)`` separates parameters from everything else (BatchNorm
    statistics, RNG counts), which stays fixed: put the module in eval mode
    (``module.eval()``) first if it has BatchNorm or Dropout. ``merge(params)`` rebuilds a
    module, e.g. after training.
    """
    from flax import nnx

    if not isinstance(module, nnx.Module):
        raise TypeError(f"from_nnx: expected a flax.nnx.Module, got {type(module).__name__}.")
    fn = _output_loss(output_loss)
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def merge(params):
        return nnx.merge(graphdef, params, rest)

    return NNXLoss(lambda params, batch: fn(merge(params)(batch[0]), batch[1]), params, merge)
