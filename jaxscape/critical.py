"""Critical points: what kind a point is, and how to find critical points of any kind.

Most critical points of high-dimensional losses are saddles, and their index (the fraction of
negative Hessian eigenvalues) grows with the loss (Bray & Dean 2007; Dauphin et al. 2014;
Pennington & Bahri 2017). ``classify`` reads the kind off the Hessian's spectrum: all of it by
dense ``eigh`` for small models, both ends by Lanczos plus an SLQ estimate of the index for
large ones. A singular Hessian that is semi-definite leaves the second-order test undecided
(``x² + y⁴`` is a minimum, ``x² - y⁴`` a saddle, both with Hessian ``diag(2, 0)``; deep linear
chains of depth ≥ 3 have saddles with a zero Hessian, Kawaguchi 2016); for small models an
optional higher-order probe decides them. ``find_critical_point`` minimizes ``½‖∇L‖²``, which
converges to saddles as readily as to minima.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from jaxscape import _checks, _gradnorm
from jaxscape._util import chunked_map
from jaxscape.curvature import LossFn, PyTree, count_params, hessian_operator
from jaxscape.landscape import _trajectory_matrix
from jaxscape.spectrum import eigsh, negative_fraction, spectral_density

KINDS = ("minimum", "maximum", "saddle", "degenerate", "not-critical")


class Probe(NamedTuple):
    """The higher-order probe of a degenerate critical point (see ``classify``).

    Attributes:
      radius: distance ``r`` moved along the Hessian's null space.
      num_directions: number of null-space directions tried.
      min_change, max_change: extremes over the directions of the reduced loss change
        ``Δ(c) = ext_x L(θ + r N c + R x) - L(θ)`` (``ext`` the min, or the max at a
        negative semi-definite point).
      noise: changes with ``|Δ| <= noise`` count as flat.
      kind: the probe's verdict (``"minimum"``, ``"maximum"``, ``"saddle"`` or
        ``"degenerate"`` when every direction was flat).
    """

    radius: float
    num_directions: int
    min_change: float
    max_change: float
    noise: float
    kind: str


class CriticalPoint(NamedTuple):
    """What ``classify`` found at a point.

    Attributes:
      loss: ``L(θ)``.
      grad_norm: ``‖∇L(θ)‖``.
      eigenvalues: ascending Hessian eigenvalues: all ``n`` (``method="dense"``) or the
        ``num_eigs`` at both ends (``method="lanczos"``).
      index: fraction of eigenvalues below ``-eig_tol``: exact (dense) or the SLQ estimate.
      kind: ``"minimum"``, ``"maximum"``, ``"saddle"``, ``"degenerate"`` (semi-definite with
        zero eigenvalues: the Hessian cannot decide) or ``"not-critical"`` (``grad_norm >
        grad_tol``); the probe's verdict where it ran and decided.
      hessian_kind: the second-order verdict alone (the kind the Hessian's signs give, also for
        a non-critical point).
      num_negative, num_zero, num_positive: eigenvalue counts below ``-eig_tol``, within
        ``±eig_tol``, above ``eig_tol`` (dense only; ``None`` for Lanczos).
      scale: the spectral radius ``max|λ|`` that the relative eigenvalue tolerance refers to.
      grad_tol: the gradient tolerance used (absolute).
      eig_tol: the eigenvalue tolerance used, absolute: ``eig_rtol × scale``.
      method: ``"dense"`` or ``"lanczos"``.
      probe: the ``Probe`` when it ran, else ``None``.
    """

    loss: float
    grad_norm: float
    eigenvalues: np.ndarray
    index: float
    kind: str
    hessian_kind: str
    num_negative: int | None
    num_zero: int | None
    num_positive: int | None
    scale: float
    grad_tol: float
    eig_tol: float
    method: str
    probe: Probe | None


def classify(
    loss_fn: LossFn,
    params: PyTree,
    batch: Any,
    *,
    grad_tol: float | None = None,
    eig_rtol: float | None = None,
    method: str = "dense",
    key: jax.Array | None = None,
    max_params: int = 2000,
    num_eigs: int = 10,
    num_iters: int = 100,
    num_probes: int = 32,
    probe: bool | None = None,
    probe_radius: float | None = None,
    num_probe_directions: int = 32,
) -> CriticalPoint:
    """Classify ``params`` as a minimum, maximum, saddle, degenerate or non-critical point.

    With ``λ_min ≤ … ≤ λ_max`` the Hessian's eigenvalues and ``τ = eig_rtol × max|λ|``:
    ``‖∇L‖ > grad_tol`` is ``"not-critical"``; otherwise ``λ_min > τ`` is a minimum,
    ``λ_max < -τ`` a maximum, ``λ_min < -τ < τ < λ_max`` a saddle (a direction of descent and
    one of ascent, whatever the null space), and a semi-definite Hessian with eigenvalues in
    ``[-τ, τ]`` is ``"degenerate"``: the second-order test cannot decide it.

    The probe (dense method, degenerate points, needs ``key``) decides those from the loss near
    the point: with ``N`` the null space, ``R`` the eigenvectors of the non-zero eigenvalues and
    ``c`` unit directions in the null space (``±`` each axis and ``num_probe_directions`` random
    ones, each with its negative), it computes the reduced change
    ``Δ(c) = L(θ + r N c + R x*(c)) - L(θ)``, where ``x*(c)`` is the stationary point in the
    range (20 Newton steps with the Hessian at ``θ``): a minimum over the range at a positive
    semi-definite point, a maximum at a negative one. This is the Lyapunov–Schmidt reduction;
    minimizing over the range also catches Peano's ``(x - y²)(x - 2y²)``, a saddle that is a
    minimum along every line. ``Δ < -noise`` somewhere at a positive semi-definite point means
    a saddle, none means a minimum (flat directions, e.g. a valley of minima, count as
    minimum); with a zero Hessian both signs mean a saddle, one sign a maximum or minimum. It
    is a finite probe: descent that appears only beyond order ``1/r`` in few directions can be
    missed; a "saddle" verdict is a certificate (the descent point is real), a "minimum" is
    evidence.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: the point, any pytree of float arrays.
      batch: any pytree.
      grad_tol: absolute tolerance on ``‖∇L‖``; default ``eps^(1/3)`` of the dtype (6e-6 in
        float64, 5e-3 in float32).
      eig_rtol: eigenvalues within ``eig_rtol × max|λ|`` of zero count as zero; default
        ``eps^(1/3)``.
      method: ``"dense"`` (``eigh`` of the full Hessian, up to ``max_params`` parameters) or
        ``"lanczos"`` (``eigsh(which="BE")`` for ``num_eigs`` extreme eigenvalues and
        ``spectral_density`` with ``num_probes`` probes for the index; needs ``key``). The
        kind comes from the extremes and is as reliable as they are converged; the SLQ index
        cannot resolve eigenvalues much closer to zero than the spectrum's width over
        ``num_iters`` (on a digits MLP with 2,410 params and hundreds of near-zero
        eigenvalues it gave 0.135 where dense ``eigh`` counted 0.168).
      key: PRNG key for Lanczos, SLQ and the probe's random directions.
      max_params: the dense method refuses larger models.
      num_eigs, num_iters, num_probes: Lanczos sizes (``num_iters`` is used both for
        ``eigsh`` and per SLQ probe).
      probe: run the higher-order probe at degenerate points; default: when ``key`` is given
        and ``method="dense"``.
      probe_radius: ``r``; default ``eps^(1/8)`` (0.011 in float64, 0.14 in float32).
      num_probe_directions: random null-space directions (each also taken with its negative).

    Returns:
      ``CriticalPoint``; tolerances, scale and method are stated in it.

    Example:
      >>> from jaxscape import toys
      >>> classify(toys.degenerate_saddle, jnp.zeros(2), None, key=jax.random.key(0)).kind
      'saddle'

    References: Dauphin et al. 2014, "Identifying and attacking the saddle point problem";
    Pennington & Bahri 2017, "Geometry of neural network loss surfaces via random matrix
    theory"; Kawaguchi 2016, "Deep learning without poor local minima".
    """
    fn = "classify"
    _checks.check_params(fn, params)
    _checks.check_scalar_loss(fn, loss_fn, params, batch)
    _checks.check_choice(fn, "method", method, ("dense", "lanczos"))
    dtype = ravel_pytree(params)[0].dtype
    grad_tol = _tolerance(fn, "grad_tol", grad_tol, dtype)
    eig_rtol = _tolerance(fn, "eig_rtol", eig_rtol, dtype)
    if key is not None:
        _checks.check_key(fn, key)
    if probe is None:
        probe = key is not None and method == "dense"
    if probe and (key is None or method != "dense"):
        raise ValueError(f"{fn}: `probe=True` needs `key` and method='dense' (got {method!r}).")
    loss, grad = jax.value_and_grad(loss_fn)(params, batch)
    _checks.raise_if_nonfinite(fn, (loss, grad), "the loss or gradient at `params`")
    grad_norm = float(optax.tree_utils.tree_norm(grad))
    n = count_params(params)
    if method == "dense":
        _check_dense_size(fn, n, max_params, dtype)
        lam, vecs = _dense_eigh(loss_fn, params, batch)
        lam = np.asarray(lam)
        _checks.raise_if_nonfinite(fn, lam, "the Hessian")
        scale = float(np.max(np.abs(lam)))
        tol = eig_rtol * scale
        counts = int(np.sum(lam < -tol)), int(np.sum(np.abs(lam) <= tol)), int(np.sum(lam > tol))
        index = counts[0] / n
    else:
        if key is None:
            raise ValueError(f"{fn}: method='lanczos' needs `key` (a jax.random key).")
        lam, index = _lanczos_ends(loss_fn, params, batch, key, num_eigs, num_iters, num_probes)
        scale = float(np.max(np.abs(lam)))
        tol = eig_rtol * scale
        index = float(negative_fraction(index, tol=tol))
        counts = (None, None, None)
    hessian_kind = _kind_from_ends(float(lam[0]), float(lam[-1]), tol)
    kind = hessian_kind if grad_norm <= grad_tol else "not-critical"
    found = None
    if probe and kind == "degenerate":
        radius = float(np.finfo(dtype).eps ** 0.125) if probe_radius is None else probe_radius
        radius = float(_checks.check_positive(fn, "probe_radius", radius))
        found = _probe(
            loss_fn, params, batch, key, float(loss), lam, vecs, tol, scale, radius,
            _checks.check_positive_int(fn, "num_probe_directions", num_probe_directions, 0),
        )  # fmt: skip
        kind = found.kind
    return CriticalPoint(
        loss=float(loss),
        grad_norm=grad_norm,
        eigenvalues=np.asarray(lam),
        index=float(index),
        kind=kind,
        hessian_kind=hessian_kind,
        num_negative=counts[0],
        num_zero=counts[1],
        num_positive=counts[2],
        scale=scale,
        grad_tol=grad_tol,
        eig_tol=tol,
        method=method,
        probe=found,
    )


_classify = classify  # find_critical_point's `classify` flag shadows the name


def _kind_from_ends(lo: float, hi: float, tol: float) -> str:
    """The second-order verdict from the extreme eigenvalues (see ``classify``)."""
    if lo < -tol and hi > tol:
        return "saddle"
    if lo > tol:
        return "minimum"
    if hi < -tol:
        return "maximum"
    return "degenerate"


def _tolerance(fn: str, name: str, value: Any, dtype) -> float:
    if value is None:
        return float(np.finfo(dtype).eps ** (1 / 3))
    return float(_checks.check_positive(fn, name, value))


def _check_dense_size(fn: str, n: int, max_params: int, dtype) -> None:
    hint = (
        "Pass method='lanczos' with a `key` (extreme eigenvalues and an SLQ index estimate; "
        "the dense method also takes n³ time)"
    )
    _checks.check_dense_size(fn, n, max_params, dtype, hint)


@partial(jax.jit, static_argnames="loss_fn")
def _dense_eigh(loss_fn: LossFn, params: PyTree, batch: Any):
    flat, unravel = ravel_pytree(params)
    H = jax.hessian(lambda x: loss_fn(unravel(x), batch))(flat)
    return jnp.linalg.eigh(0.5 * (H + H.T))


@partial(jax.jit, static_argnames=("loss_fn", "num_eigs", "num_iters", "num_probes"))
def _lanczos_ends(loss_fn, params, batch, key, num_eigs, num_iters, num_probes):
    k_eig, k_slq = jax.random.split(key)
    matvec = hessian_operator(loss_fn, params, batch)
    n = count_params(params)
    k = max(2, min(num_eigs, n - 1))
    m = min(n, max(num_iters, 2 * k + 20))
    ends = eigsh(k_eig, matvec, params, k=k, which="BE", num_iters=m)
    density = spectral_density(k_slq, matvec, params, num_probes=num_probes, num_iters=num_iters)
    return ends.eigenvalues, density


# --------------------------------------------------------------------------- probe


def _probe(loss_fn, params, batch, key, loss, lam, vecs, tol, scale, radius, num_random):
    """Reduced loss changes along the null space (see ``classify``) and their verdict."""
    lam = np.asarray(lam)
    null = np.abs(lam) <= tol
    k0 = int(null.sum())
    N, R, lam_r = vecs[:, null], vecs[:, ~null], jnp.asarray(lam[~null])
    axes = np.concatenate([np.eye(k0), -np.eye(k0)])
    rand = jax.random.normal(key, (num_random, k0), N.dtype)
    rand = rand / jnp.linalg.norm(rand, axis=1, keepdims=True)
    dirs = jnp.concatenate([jnp.asarray(axes, N.dtype), rand, -rand])
    change = np.asarray(_reduced_changes(loss_fn, params, batch, N, R, lam_r, dirs, radius))
    eps = float(np.finfo(np.asarray(lam).dtype).eps)
    noise = 100 * eps * max(abs(loss), scale * radius**2, 1e-300)
    down, up = bool(np.any(change < -noise)), bool(np.any(change > noise))
    if lam_r.size == 0:  # zero Hessian: the sign pattern of the change decides
        kind = {(True, True): "saddle", (True, False): "maximum", (False, True): "minimum"}
        verdict = kind.get((down, up), "degenerate")
    elif bool(np.all(lam[~null] > 0)):
        verdict = "saddle" if down else "minimum"
    else:
        verdict = "saddle" if up else "maximum"
    return Probe(radius, int(dirs.shape[0]), float(change.min()), float(change.max()), noise,
                 verdict)  # fmt: skip


@partial(jax.jit, static_argnames="loss_fn")
def _reduced_changes(loss_fn, params, batch, N, R, lam_r, dirs, radius):
    flat, unravel = ravel_pytree(params)
    f = lambda x: loss_fn(unravel(x), batch)  # noqa: E731
    grad = jax.grad(f)
    base = f(flat)

    def change(c):
        y = flat + radius * (N @ c)

        def newton(_, x):  # stationary point over the range, Hessian frozen at θ
            return x - (R.T @ grad(y + R @ x)) / lam_r

        x = jax.lax.fori_loop(0, 20, newton, jnp.zeros_like(lam_r))
        return f(y + R @ x) - base

    return jax.vmap(change)(dirs)


# --------------------------------------------------------------------------- finding them


class Search(NamedTuple):
    """What ``find_critical_point`` (or ``find_critical_points``, with a leading axis) found.

    Attributes:
      params: the last point.
      loss: ``L`` there.
      grad_norm: the residual ``‖∇L‖`` there.
      num_steps: iterations taken (the search stops once ``grad_norm <= grad_tol``).
      converged: ``grad_norm <= grad_tol``. A search can stall where ``½‖∇L‖²`` has a
        minimum that is not a critical point (``H∇L = 0`` with ``∇L ≠ 0``: Doye & Wales
        2002); then ``converged`` is False.
      grad_norms: ``(num_steps + 1,)`` ``‖∇L‖`` after each iteration (constant once
        converged).
      point: ``classify``'s result at ``params`` (``None`` with ``classify=False``; a list
        from ``find_critical_points``).
    """

    params: PyTree
    loss: jax.Array
    grad_norm: jax.Array
    num_steps: jax.Array
    converged: jax.Array
    grad_norms: jax.Array
    point: Any


METHODS = ("newton", "newton-cg", "gd")


def find_critical_point(
    loss_fn: LossFn,
    params: PyTree,
    batch: Any,
    *,
    method: str = "newton",
    num_steps: int = 100,
    grad_tol: float | None = None,
    damping: float = 1e-3,
    num_cg_iters: int = 50,
    optimizer: optax.GradientTransformation | None = None,
    max_params: int = 2000,
    classify: bool = True,
    **classify_options: Any,
) -> Search:
    """Find a critical point near ``params`` by minimizing ``½‖∇L(θ)‖²``.

    The objective's gradient is ``H ∇L``, one Hessian-vector product, and its minima with value
    zero are the critical points of ``L`` of every kind: saddles attract it as much as minima,
    which is why Dauphin et al. (2014) and Pennington & Bahri (2017) used it to collect the
    critical points whose index they plotted against the loss.

    Methods:
      ``"newton"`` (dense, up to ``max_params``): Levenberg–Marquardt on the residual ``∇L``,
      ``Δ = -(H² + μI)⁻¹ H ∇L`` through ``eigh(H)``, with ``μ`` divided by 3 after a step that
      lowers ``‖∇L‖`` and multiplied by 4 (step refused) otherwise; as ``μ → 0`` it is
      Newton's step ``-H⁺∇L``, quadratically convergent at non-degenerate critical points.
      ``"newton-cg"``: the same step solved matrix-free by conjugate gradients on
      ``(H² + μI)Δ = -H∇L`` (two HVPs per CG iteration, ``num_cg_iters`` of them).
      ``"gd"``: ``optimizer`` (default ``optax.adam(1e-3)``) on ``½‖∇L‖²``, any size.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      params: the starting point.
      batch: any pytree.
      method: ``"newton"``, ``"newton-cg"`` or ``"gd"``.
      num_steps: most iterations.
      grad_tol: stop once ``‖∇L‖ <= grad_tol``; default as ``classify``'s.
      damping: initial ``μ`` relative to the squared curvature scale (Newton methods).
      num_cg_iters: CG iterations per step (``"newton-cg"``).
      optimizer: Optax optimizer for ``"gd"``.
      max_params: the dense ``"newton"`` refuses larger models.
      classify: classify the result (eagerly; see ``classify``).
      **classify_options: passed to ``classify`` (``key=``, ``method="lanczos"``, ...).

    Returns:
      ``Search(params, loss, grad_norm, num_steps, converged, grad_norms, point)``.

    Example:
      >>> from jaxscape import toys
      >>> found = find_critical_point(toys.quadratic_saddle, jnp.asarray([0.3, -0.2]), None)
      >>> found.point.kind, found.params
      ('saddle', Array([0., 0.], dtype=float64))
    """
    fn = "find_critical_point"
    flat, unravel, options = _search_setup(
        fn, loss_fn, params, batch, method, num_steps, grad_tol, damping, num_cg_iters,
        optimizer, max_params,
    )  # fmt: skip
    out = _search(loss_fn, flat, batch, unravel, options)
    search = Search(unravel(out[0]), *out[1:], point=None)
    if classify:
        point = _classify(
            loss_fn, search.params, batch, grad_tol=options.grad_tol, **classify_options
        )
        search = search._replace(point=point)
    return search


def find_critical_points(
    loss_fn: LossFn,
    starts: PyTree,
    batch: Any,
    *,
    classify: bool = True,
    classify_options: dict | None = None,
    mesh: Any = None,
    **options: Any,
) -> Search:
    """``find_critical_point`` from many starting points at once (``vmap`` over one program).

    Args:
      loss_fn, batch: as for ``find_critical_point``.
      starts: params with a leading axis ``S``, e.g. ``fit(...).history.params`` (points along
        a training trajectory) or random initializations stacked with ``jax.vmap``.
      classify: classify every result (a Python loop of ``classify`` calls).
      classify_options: keyword arguments for ``classify``.
      mesh: a ``jax.sharding.Mesh``: the starts are split over its devices
        (``distributed.data_mesh()``), each searching from its share.
      **options: ``method``, ``num_steps``, ``grad_tol``, ... as for ``find_critical_point``.

    Returns:
      ``Search`` whose arrays carry the leading ``S`` axis and whose ``point`` is the list of
      ``S`` ``CriticalPoint``s: the raw material of an index-vs-loss plot
      (``plot.index_loss_figure(s.loss, [p.index for p in s.point])``).
    """
    fn = "find_critical_points"
    flats, _ = _trajectory_matrix(fn, starts, "starts", "start-point")
    first = jax.tree.map(lambda x: x[0], starts)
    _, unravel, opts = _search_setup(
        fn, loss_fn, first, batch, options.pop("method", "newton"),
        options.pop("num_steps", 100), options.pop("grad_tol", None),
        options.pop("damping", 1e-3), options.pop("num_cg_iters", 50),
        options.pop("optimizer", None), options.pop("max_params", 2000),
    )  # fmt: skip
    if options:
        raise TypeError(f"{fn}: unknown options {sorted(options)}.")
    out = _search_many(loss_fn, flats, batch, unravel, opts, mesh)
    search = Search(jax.vmap(unravel)(out[0]), *out[1:], point=None)
    if classify:
        kw = dict(classify_options or {})
        kw.setdefault("grad_tol", opts.grad_tol)
        points = [
            _classify(loss_fn, jax.tree.map(lambda x, i=i: x[i], search.params),
                                  batch, **kw)
            for i in range(flats.shape[0])
        ]  # fmt: skip
        search = search._replace(point=points)
    return search


class _Options(NamedTuple):  # static (hashable) search settings
    method: str
    num_steps: int
    grad_tol: float
    damping: float
    num_cg_iters: int
    optimizer: Any


def _search_setup(fn, loss_fn, params, batch, method, num_steps, grad_tol, damping, cg, opt, mx):
    _checks.check_params(fn, params)
    _checks.check_scalar_loss(fn, loss_fn, params, batch)
    _checks.check_choice(fn, "method", method, METHODS)
    flat, unravel = ravel_pytree(params)
    num_steps = _checks.check_positive_int(fn, "num_steps", num_steps, 0)
    grad_tol = _tolerance(fn, "grad_tol", grad_tol, flat.dtype)
    _checks.check_nonnegative(fn, "damping", damping)
    cg = _checks.check_positive_int(fn, "num_cg_iters", cg)
    if method == "newton":
        _check_dense_size(fn, flat.size, mx, flat.dtype)
    if method == "gd":
        opt = optax.adam(1e-3) if opt is None else opt
        _checks.check_optimizer(fn, opt)
    loss, grad = jax.value_and_grad(loss_fn)(params, batch)
    _checks.raise_if_nonfinite(fn, (loss, grad), "the loss or gradient at the start `params`")
    return flat, unravel, _Options(method, num_steps, grad_tol, float(damping), cg, opt)


@partial(jax.jit, static_argnames=("loss_fn", "unravel", "options"))
def _search(loss_fn, flat, batch, unravel, options):
    f = lambda x: loss_fn(unravel(x), batch)  # noqa: E731
    x, hist, steps = _gradnorm.SOLVERS[options.method](f, flat, options)
    norm = hist[steps]
    return x, f(x), norm, steps, norm <= options.grad_tol, hist


@partial(jax.jit, static_argnames=("loss_fn", "unravel", "options", "mesh"))
def _search_many(loss_fn, flats, batch, unravel, options, mesh):
    one = lambda x: _search.__wrapped__(loss_fn, x, batch, unravel, options)  # noqa: E731
    # on a mesh each device searches from its starts at once, as without one; the dense
    # Levenberg-Marquardt step's eigh goes through _util.eigh_each, without which several CPU
    # devices deadlock in jaxlib's batched eigh
    return chunked_map(one, flats, None, "find_critical_points", mesh=mesh)


__all__ = [
    "KINDS",
    "METHODS",
    "CriticalPoint",
    "Probe",
    "Search",
    "classify",
    "find_critical_point",
    "find_critical_points",
]
