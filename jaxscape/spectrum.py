"""Spectral solvers for curvature operators: eigenpairs, trace, spectral density, index.

Every solver takes ``(key, matvec, params, *, ...)``: ``matvec`` is a symmetric operator on
params-shaped pytrees (``hessian_operator``, ``ggn_operator``, ...), ``params`` the template
that fixes shapes and dtype. Pytrees are raveled at the boundary (``ravel_pytree``); inside,
each solver is one ``lax`` loop, so under ``jax.jit`` a call compiles to one XLA program.

Results are NamedTuples. When the operator returns NaN or inf the solver stops, the affected
numbers are NaN and ``finite`` is False; called eagerly (outside ``jit``) it raises
``FloatingPointError`` instead, so a NaN is never presented as an eigenvalue.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxscape import _checks, _krylov, _krylov_host
from jaxscape._util import chunked_map, eigh_each
from jaxscape.curvature import Matvec, PyTree

WHICH = ("LA", "SA", "LM", "BE")
BASIS_MEMORY = ("device", "host")


class Eigs(NamedTuple):
    """Eigenpairs of a symmetric operator.

    Attributes:
      eigenvalues: ``(k,)``, ascending (as SciPy's ``eigsh``); the top eigenvalue is ``[-1]``.
      eigenvectors: params-shaped pytree with a leading ``k`` axis, unit norm, matching
        ``eigenvalues``.
      residuals: ``(k,)`` residual norms ``||A x - λ x||``.
      num_matvecs: number of operator products spent.
      converged: True when every residual is ``<= tol × max|Ritz value|``.
      finite: False when the operator returned NaN/inf (the numbers are then NaN).
    """

    eigenvalues: jax.Array
    eigenvectors: PyTree
    residuals: jax.Array
    num_matvecs: jax.Array
    converged: jax.Array
    finite: jax.Array


class TraceEstimate(NamedTuple):
    """A stochastic trace estimate: ``value ± stderr`` (one standard error) from ``num_matvecs``."""

    value: jax.Array
    stderr: jax.Array
    num_matvecs: int
    finite: jax.Array


class Density(NamedTuple):
    """Spectral density from stochastic Lanczos quadrature.

    Attributes:
      grid: ``(num_grid,)`` points ``t``.
      density: ``(num_grid,)`` the Gaussian-broadened density ``φ(t) ≈ (1/n) Σ_i δ(t - λ_i)``;
        it integrates to 1 (multiply by ``n`` for an eigenvalue count density).
      nodes: ``(num_probes, num_iters)`` quadrature nodes (Ritz values) per probe.
      weights: ``(num_probes, num_iters)`` quadrature weights; each row sums to 1.
      sigma: the broadening width used.
      finite: False when the operator returned NaN/inf.
    """

    grid: jax.Array
    density: jax.Array
    nodes: jax.Array
    weights: jax.Array
    sigma: jax.Array
    finite: jax.Array


# --------------------------------------------------------------------------- eigenpairs


def eigsh(
    key: jax.Array,
    matvec: Matvec,
    params: PyTree,
    *,
    k: int = 1,
    which: str = "LA",
    num_iters: int | None = None,
    tol: float | None = None,
    basis_sharding: Mesh | NamedSharding | None = None,
    basis_memory: str = "device",
) -> Eigs:
    """``k`` eigenpairs of a symmetric operator by Lanczos with full reorthogonalization.

    Builds the Krylov basis ``V = [v₀, A v₀, A² v₀, ...]`` (orthonormalized, every vector
    reorthogonalized twice against all previous ones), the tridiagonal ``T = Vᵀ A V``, and
    returns Ritz pairs ``(θ, V u)`` with ``T u = θ u``. Stops as soon as the wanted pairs have
    residual ``||A x - θ x|| = |β_j u_j| <= tol × max|θ|``, or after ``num_iters`` products. On
    Krylov breakdown (an invariant subspace: rank-deficient operators, ``num_iters >= n``) it
    continues from a random vector orthogonal to the basis, so no eigenvalue is missed and no
    NaN appears (Golub & Van Loan, *Matrix Computations*, §10.1; Lanczos 1950).

    Unlike power iteration (PyHessian), "top" here means algebraically largest: ``which="LA"``.

    Limitation: a single start vector sees one copy of each eigenvalue. Copies of an exactly
    repeated eigenvalue come only from restarts after a breakdown, and a run stopped by ``tol``
    can report a repeated eigenvalue fewer times than it occurs (every returned pair is still
    a true eigenpair). ``tol=0`` runs all ``num_iters`` steps and collects the copies.

    Memory. The basis ``V`` holds ``(num_iters + 1) × n`` floats, far more than the model for
    ``num_iters`` in the hundreds. ``basis_sharding=mesh`` splits every basis vector along
    ``n`` over the mesh's devices (``PartitionSpec(None, axes)``): each device holds
    ``1/devices`` of it, and the projections ``V w`` become all-reduced partial sums; the
    results are those of one device to rounding, and the call still jits.
    ``basis_memory="host"`` keeps ``V`` in NumPy host memory instead: every step applies the
    jitted operator on the device and reorthogonalizes on the host. That is a Python loop,
    so it cannot run under ``jit``, ``vmap`` or ``grad``.

    Args:
      key: PRNG key for the start vector (and restarts).
      matvec: symmetric operator ``v -> A v`` on params-shaped pytrees.
      params: template pytree (shapes, dtype).
      k: number of eigenpairs, ``1 <= k < n``.
      which: ``"LA"`` largest algebraic, ``"SA"`` smallest algebraic, ``"LM"`` largest
        magnitude, ``"BE"`` both ends (``ceil(k/2)`` from the top, ``floor(k/2)`` from the
        bottom), as in ``scipy.sparse.linalg.eigsh``.
      num_iters: most products (and basis vectors: memory ``num_iters × n``). Default
        ``min(n, 10k + 50)``.
      tol: relative residual tolerance; default ``sqrt(eps)`` of the dtype (3e-4 float32,
        1.5e-8 float64). Eigenvalue errors are about ``residual² / gap``, far below ``tol``.
      basis_sharding: ``None`` (the basis on one device, unconstrained), a
        ``jax.sharding.Mesh`` (basis vectors split over all of its axes, e.g.
        ``distributed.data_mesh()``), or a ``NamedSharding`` giving the layout of one flat
        vector (``P(axes)``; ``P(None, axes)`` for the basis is accepted too).
      basis_memory: ``"device"`` (default) or ``"host"`` (NumPy; eager calls only).

    Returns:
      ``Eigs`` with eigenvalues ascending.

    Raises:
      TypeError: ``basis_memory="host"`` under a JAX transformation.

    Example:
      >>> matvec = hessian_operator(loss_fn, params, batch)
      >>> top = eigsh(jax.random.key(0), matvec, params, k=5).eigenvalues[::-1]
      >>> top = eigsh(key, matvec, params, k=5, basis_sharding=distributed.data_mesh())
      >>> top = eigsh(key, matvec, params, k=5, basis_memory="host")
    """
    fn = "eigsh"
    _checks.check_key(fn, key)
    layout = _basis_layout(fn, basis_sharding, basis_memory)
    host = basis_memory == "host"
    flat_mv, flat, unravel = _flatten(fn, matvec, params)
    n = flat.size
    k = _check_k(fn, k, n)
    _checks.check_choice(fn, "which", which, WHICH)
    m = (
        min(n, 10 * k + 50)
        if num_iters is None
        else _checks.check_positive_int(fn, "num_iters", num_iters)
    )
    if m < k:
        raise ValueError(f"{fn}: `num_iters` ({m}) must be at least `k` ({k}).")
    m = min(m, n)
    tol = _default_tol(flat.dtype) if tol is None else float(tol)

    key_start, key_restart = jax.random.split(key)
    v0 = jax.random.normal(key_start, (n,), flat.dtype)
    if host and not _checks.is_concrete(v0, params):  # under jit even v0 is a tracer
        raise TypeError(
            f"{fn}: basis_memory='host' runs a Python loop over the Lanczos steps and cannot be "
            "traced (called under jax.jit/vmap/grad); call eigsh outside the transformation, "
            "or use basis_memory='device'."
        )
    if host:
        mv = jax.jit(flat_mv)
        state = _krylov_host.lanczos(mv, v0, m, key=key_restart, which=which, k=k, tol=tol)
        theta, vectors, resid, scale = _krylov_host.ritz(state, which, k)
    else:
        stop = lambda state: _krylov.wanted_converged(state, which, k, tol)  # noqa: E731
        state = _krylov.lanczos(flat_mv, v0, m, key=key_restart, stop=stop, sharding=layout)
        theta, U, resid, scale = _krylov.ritz(state, which, k)
        vectors = U.T @ state.basis[:m]
    return _result(
        fn,
        theta,
        vectors,
        unravel,
        resid,
        num_matvecs=state.num_matvecs,
        converged=jnp.all(resid <= tol * scale),
        finite=state.finite,
        budget=f"tol={tol:g} in num_iters={m}",
    )


def power_iteration(
    key: jax.Array,
    matvec: Matvec,
    params: PyTree,
    *,
    k: int = 1,
    num_iters: int = 100,
    tol: float | None = None,
) -> Eigs:
    """Largest-*magnitude* eigenpairs by power iteration with deflation (parity with PyHessian).

    For ``i = 1..k``: iterate ``v ← B v / ||B v||`` with the deflated operator
    ``B = A - Σ_{j<i} λ_j u_j u_jᵀ`` until the residual ``||B v - λ v|| <= tol |λ|``
    (``λ = vᵀ B v``) or ``num_iters`` products. It converges at rate ``|λ₂/λ₁|`` per product
    and finds the eigenvalue of largest *magnitude*, which is the top of the spectrum only
    when that is positive and dominant; use ``eigsh`` (Lanczos) for anything else.

    Args:
      key: PRNG key for the start vectors.
      matvec, params: as for ``eigsh``.
      k: number of eigenpairs, ``1 <= k < n``.
      num_iters: most products per eigenpair.
      tol: relative residual tolerance; default ``sqrt(eps)``.

    Returns:
      ``Eigs`` with eigenvalues ascending; ``num_matvecs`` counts all products.
    """
    fn = "power_iteration"
    _checks.check_key(fn, key)
    flat_mv, flat, unravel = _flatten(fn, matvec, params)
    n = flat.size
    k = _check_k(fn, k, n)
    num_iters = _checks.check_positive_int(fn, "num_iters", num_iters)
    tol = _default_tol(flat.dtype) if tol is None else float(tol)
    dtype = flat.dtype

    def one_pair(carry, xs):
        vecs, vals = carry
        i, key_i = xs
        deflated = lambda x: flat_mv(x) - vecs.T @ (vals * (vecs @ x))  # noqa: E731

        def cond(s):
            step, _, _, _, resid, lam, finite = s
            return (step < num_iters) & finite & ~(resid <= tol * jnp.abs(lam))

        def body(s):
            step, v, _, _, _, _, finite = s
            w = deflated(v)
            finite = finite & jnp.all(jnp.isfinite(w))
            lam = jnp.vdot(v, w)
            resid = jnp.linalg.norm(w - lam * v)
            norm = jnp.linalg.norm(w)
            nxt = jnp.where(norm > 0, w / jnp.where(norm > 0, norm, 1), v)
            return step + 1, nxt, v, lam, resid, lam, finite

        v0 = jax.random.normal(key_i, (n,), dtype)
        v0 = v0 / jnp.linalg.norm(v0)
        inf = jnp.asarray(jnp.inf, dtype)
        init = (jnp.zeros((), jnp.int32), v0, v0, inf, inf, jnp.zeros((), dtype), True)
        steps, _, v, lam, resid, _, finite = lax.while_loop(cond, body, init)
        vecs, vals = vecs.at[i].set(v), vals.at[i].set(lam)
        return (vecs, vals), (lam, resid, steps, finite)

    init = (jnp.zeros((k, n), dtype), jnp.zeros((k,), dtype))
    xs = (jnp.arange(k), jax.random.split(key, k))
    (vecs, _), (lams, resid, steps, finite) = lax.scan(one_pair, init, xs)
    order = jnp.argsort(lams)
    return _result(
        fn,
        lams[order],
        vecs[order],
        unravel,
        resid[order],
        num_matvecs=jnp.sum(steps),
        converged=jnp.all(resid <= tol * jnp.abs(lams)),
        finite=jnp.all(finite),
        budget=f"tol={tol:g} in num_iters={num_iters} per eigenpair",
    )


# --------------------------------------------------------------------------- trace


def estimate_trace(
    key: jax.Array,
    matvec: Matvec,
    params: PyTree,
    *,
    num_matvecs: int,
    method: str = "hutch++",
    batch_size: int | None = None,
    mesh: Any = None,
) -> TraceEstimate:
    """Stochastic estimate of ``tr(A)`` with a standard error.

    - ``"hutchinson"`` (Hutchinson 1989): ``tr(A) ≈ (1/m) Σ zᵢᵀ A zᵢ`` with Rademacher ``zᵢ``;
      variance ``2 ||A||_F² - 2 Σ A_ii²`` per probe.
    - ``"hutch++"`` (Meyer, Musco, Musco & Woodruff 2021): a third of the products find a
      basis ``Q`` of the range of ``A S`` (``S`` Rademacher), a third compute ``tr(QᵀAQ)``
      exactly, and the rest run Hutchinson on the deflated ``(I - QQᵀ) A (I - QQᵀ)``. For
      operators with decaying spectra (Hessians) the error falls as ``1/m`` instead of
      ``1/√m``.

    The standard error is that of the Hutchinson part (the exact part has none).

    Args:
      key: PRNG key for the probes.
      matvec, params: as for ``eigsh``.
      num_matvecs: products to spend (``>= 2`` for Hutchinson, ``>= 3`` for Hutch++).
      method: ``"hutch++"`` or ``"hutchinson"``.
      batch_size: products evaluated at once under ``vmap``; default all.
      mesh: a ``jax.sharding.Mesh``: the probes' products are split over its devices
        (``distributed.data_mesh()``); ``batch_size`` then counts products per device.

    Returns:
      ``TraceEstimate(value, stderr, num_matvecs, finite)``.
    """
    fn = "estimate_trace"
    _checks.check_key(fn, key)
    _checks.check_choice(fn, "method", method, ("hutch++", "hutchinson"))
    minimum = 3 if method == "hutch++" else 2
    m = _checks.check_positive_int(fn, "num_matvecs", num_matvecs, minimum)
    flat_mv, flat, _ = _flatten(fn, matvec, params)
    n, dtype = flat.size, flat.dtype

    def apply(X):
        return chunked_map(flat_mv, X, batch_size, fn, "batch_size", mesh=mesh)

    if method == "hutchinson":
        Z = jax.random.rademacher(key, (m, n), dtype)
        samples = jnp.sum(Z * apply(Z), axis=1)
        exact = jnp.zeros((), dtype)
    else:
        r = m // 3
        key_s, key_g = jax.random.split(key)
        S = jax.random.rademacher(key_s, (r, n), dtype)
        Q = jnp.linalg.qr(apply(S).T)[0]  # (n, r) orthonormal basis of range(A S)
        exact = jnp.sum(Q.T * apply(Q.T))  # tr(Qᵀ A Q)
        G = jax.random.rademacher(key_g, (m - 2 * r, n), dtype)
        G = G - (G @ Q) @ Q.T
        samples = jnp.sum(G * apply(G), axis=1)
    finite = jnp.all(jnp.isfinite(samples)) & jnp.isfinite(exact)
    stderr = jnp.std(samples, ddof=1) / math.sqrt(samples.shape[0])
    est = TraceEstimate(exact + jnp.mean(samples), stderr, m, finite)
    if _checks.is_concrete(finite) and not bool(finite):
        raise FloatingPointError(f"{fn}: the operator returned NaN or inf for a probe.")
    return est


# --------------------------------------------------------------------------- density


def spectral_density(
    key: jax.Array,
    matvec: Matvec,
    params: PyTree,
    *,
    num_probes: int,
    num_iters: int,
    num_grid: int = 512,
    sigma: float | None = None,
    grid: jax.Array | None = None,
    batch_size: int | None = None,
    mesh: Any = None,
) -> Density:
    """Spectral density by stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017).

    For each normalized Rademacher probe ``z``, ``num_iters`` Lanczos steps give
    ``T = U diag(θ) Uᵀ``, and ``zᵀ f(A) z ≈ Σᵢ τᵢ² f(θᵢ)`` with ``τᵢ = U[0, i]`` (Gauss
    quadrature, exact for polynomials of degree ``< 2 num_iters``). Averaging over probes
    and replacing ``f`` by a Gaussian ``N(t; ·, σ²)`` gives the smoothed density
    ``φ(t) = (1/P) Σ_p Σ_i τ_{p,i}² N(t; θ_{p,i}, σ²)`` (Ghorbani, Krishnan & Xiao 2019;
    PyHessian's ``density``). Probes run in parallel under ``vmap``.

    Args:
      key: PRNG key for the probes.
      matvec, params: as for ``eigsh``.
      num_probes: number of random probes ``P``.
      num_iters: Lanczos steps per probe (``min(num_iters, n)`` are taken).
      num_grid: number of grid points when ``grid`` is not given.
      sigma: Gaussian broadening width; default 1% of the spread of the nodes.
      grid: evaluation points; default ``num_grid`` points spanning the nodes ± 5σ.
      batch_size: probes run at once (memory ``batch_size × num_iters × n``); default all.
      mesh: a ``jax.sharding.Mesh``: the probes are split over its devices
        (``distributed.data_mesh()``), each running its share; ``batch_size`` then counts
        probes per device.

    Returns:
      ``Density(grid, density, nodes, weights, sigma, finite)``.
    """
    fn = "spectral_density"
    _checks.check_key(fn, key)
    num_probes = _checks.check_positive_int(fn, "num_probes", num_probes)
    num_iters = _checks.check_positive_int(fn, "num_iters", num_iters)
    num_grid = _checks.check_positive_int(fn, "num_grid", num_grid, 2)
    flat_mv, flat, _ = _flatten(fn, matvec, params)
    n, dtype = flat.size, flat.dtype
    m = min(num_iters, n)
    probes = jax.random.rademacher(key, (num_probes, n), dtype) / math.sqrt(n)

    def quadrature(z):
        state = _krylov.lanczos(flat_mv, z, m)
        T, bound = _krylov.tridiagonal(state.alphas, state.betas, state.step)
        theta, U = eigh_each(T)  # vmapped over probes: see eigh_each for why not batched
        valid = theta <= bound
        return jnp.where(valid, theta, 0), jnp.where(valid, U[0] ** 2, 0), state.finite

    nodes, weights, finite = chunked_map(
        quadrature, probes, batch_size, fn, "batch_size", mesh=mesh
    )
    finite = jnp.all(finite)
    nodes = jnp.where(finite, nodes, jnp.nan)
    has_weight = weights > 0
    lo = jnp.min(jnp.where(has_weight, nodes, jnp.inf))
    hi = jnp.max(jnp.where(has_weight, nodes, -jnp.inf))
    spread = jnp.maximum(hi - lo, jnp.maximum(jnp.abs(hi), jnp.abs(lo)) * 1e-3 + 1e-12)
    sigma = 0.01 * spread if sigma is None else jnp.asarray(sigma, dtype)
    if grid is None:
        grid = jnp.linspace(lo - 5 * sigma, hi + 5 * sigma, num_grid)
    grid = jnp.asarray(grid, dtype)
    density = gaussian_mixture(grid, nodes, weights, sigma) / num_probes
    result = Density(grid, density, nodes, weights, sigma, finite)
    if _checks.is_concrete(finite) and not bool(finite):
        raise FloatingPointError(f"{fn}: the operator returned NaN or inf during Lanczos.")
    return result


def gaussian_mixture(grid: jax.Array, nodes: jax.Array, weights: jax.Array, sigma) -> jax.Array:
    """``Σ_j weights_j N(grid; nodes_j, σ²)``, summed over all node axes."""
    d = grid[:, None] - nodes.reshape(-1)[None, :]
    kernel = jnp.exp(-0.5 * (d / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    return kernel @ weights.reshape(-1)


def negative_fraction(result: Any, *, tol: float = 0.0) -> jax.Array:
    """The index of a critical point: the fraction of Hessian eigenvalues below ``-tol``.

    Args:
      result: a ``Density`` (SLQ estimate: the quadrature mass on nodes below ``-tol``,
        averaged over probes), a full spectrum as an array (e.g. ``eigh`` of
        ``hessian_matrix``), or an ``Eigs`` that holds *all* ``n`` eigenpairs. An ``Eigs``
        with ``k < n`` is refused: the fraction among the computed ones is not the index.
      tol: eigenvalues in ``[-tol, 0)`` count as zero (numerical noise).

    Returns:
      A scalar in ``[0, 1]`` (Dauphin et al. 2014 call it α, the index).
    """
    if isinstance(result, Density):
        mass = jnp.sum(jnp.where(result.nodes < -tol, result.weights, 0), axis=1)
        return jnp.mean(mass / jnp.sum(result.weights, axis=1))
    if isinstance(result, Eigs):
        k = result.eigenvalues.shape[0]
        n = sum(x.size for x in jax.tree.leaves(result.eigenvectors)) // max(k, 1)
        if k < n:
            raise ValueError(
                f"negative_fraction: the Eigs holds {k} of {n} eigenvalues; the index needs the "
                f"whole spectrum. Pass a Density from spectral_density, or the eigenvalues of "
                f"hessian_matrix."
            )
        result = result.eigenvalues
    eigenvalues = jnp.asarray(result)
    if eigenvalues.ndim != 1 or eigenvalues.size == 0:
        raise ValueError(
            "negative_fraction: expected a Density, an Eigs, or a 1-D array of eigenvalues; "
            f"got an array of shape {eigenvalues.shape}."
        )
    return jnp.mean(eigenvalues < -tol)


# --------------------------------------------------------------------------- helpers


def _flatten(fn: str, matvec: Matvec, params: PyTree):
    """The operator on flat vectors, the raveled template, and ``unravel``."""
    if not callable(matvec):
        raise TypeError(f"{fn}: `matvec` must be a function v -> A v, got {type(matvec).__name__}.")
    _checks.check_params(fn, params)
    flat, unravel = ravel_pytree(params)
    out = jax.eval_shape(matvec, params)
    try:
        _checks.check_like(fn, out, params, name="matvec(params)")
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"{err} The operator must map params-shaped pytrees to the same."
        ) from None

    def flat_mv(x):
        return ravel_pytree(matvec(unravel(x)))[0]

    return flat_mv, flat, unravel


def _basis_layout(fn: str, basis_sharding: Any, basis_memory: Any) -> NamedSharding | None:
    """The ``P(None, axes)`` layout of ``eigsh``'s basis, on an ``Auto``-axis copy of the mesh
    (so meshes from ``jax.make_mesh``, whose axes are Explicit, need no mesh context)."""
    _checks.check_choice(fn, "basis_memory", basis_memory, BASIS_MEMORY)
    if basis_sharding is None:
        return None
    if basis_memory == "host":
        raise ValueError(
            f"{fn}: `basis_sharding` splits the basis over devices and `basis_memory='host'` "
            "keeps it in host memory; pass one of them, not both."
        )
    if isinstance(basis_sharding, Mesh):
        mesh, axes = basis_sharding, tuple(basis_sharding.axis_names)
    elif isinstance(basis_sharding, NamedSharding) and isinstance(basis_sharding.mesh, Mesh):
        mesh, spec = basis_sharding.mesh, tuple(basis_sharding.spec)
        if len(spec) == 2 and spec[0] is None:
            spec = spec[1:]
        if len(spec) > 1:
            raise ValueError(
                f"{fn}: `basis_sharding` must lay out one flat vector, PartitionSpec(axes), or "
                f"the basis as PartitionSpec(None, axes) (rows whole, split along n); got "
                f"{basis_sharding.spec}."
            )
        axes = spec[0] if spec else None
    else:
        raise TypeError(
            f"{fn}: `basis_sharding` must be None, a jax.sharding.Mesh (e.g. data_mesh()) or a "
            f"NamedSharding on a concrete Mesh, got {type(basis_sharding).__name__}."
        )
    auto = Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * mesh.devices.ndim)
    return NamedSharding(auto, PartitionSpec(None, axes))


def _default_tol(dtype) -> float:
    return float(np.sqrt(np.finfo(dtype).eps))


def _check_k(fn: str, k: Any, n: int) -> int:
    k = _checks.check_positive_int(fn, "k", k)
    if k >= n:
        raise ValueError(f"{fn}: `k` must be smaller than the number of parameters ({n}); got {k}.")
    return k


def _result(fn, values, flat_vectors, unravel, resid, *, num_matvecs, converged, finite, budget):
    """``Eigs`` with NaN values wherever the operator was not finite, then ``_report``."""
    nan = jnp.full_like(values, jnp.nan)
    eigs = Eigs(
        eigenvalues=jnp.where(finite, values, nan),
        eigenvectors=jax.vmap(unravel)(flat_vectors),
        residuals=jnp.where(finite, resid, nan),
        num_matvecs=num_matvecs,
        converged=finite & converged,
        finite=finite,
    )
    _report(fn, eigs, budget)
    return eigs


def _report(fn: str, eigs: Eigs, budget: str) -> None:
    """Eagerly: raise on NaN/inf, warn on non-convergence. Under ``jit``: nothing."""
    if not _checks.is_concrete(eigs.finite):
        return
    if not bool(eigs.finite):
        raise FloatingPointError(
            f"{fn}: the operator returned NaN or inf after {int(eigs.num_matvecs)} products; "
            "check that the loss is finite at these params."
        )
    if not bool(eigs.converged):
        warnings.warn(
            f"{fn}: not all eigenpairs reached {budget} (largest residual "
            f"{float(jnp.max(eigs.residuals)):.3g}); raise num_iters or tol. "
            "`Eigs.converged` is False.",
            stacklevel=3,
        )
