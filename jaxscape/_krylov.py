"""Flat-vector Krylov core shared by the spectral solvers.

Everything here works on 1-D arrays; ``spectrum.py`` converts pytrees at the boundary with
``ravel_pytree``. The Lanczos basis is a ``(rows, n)`` array filled one row per step inside a
``lax`` loop. Full reorthogonalization is classical Gram-Schmidt against the whole
basis after the three-term recurrence, with a conditional second pass (Daniel, Gragg,
Kaufman & Stewart 1976). It reads the whole ``(rows, n)`` basis each step: on CPU a fused
``(V w) V`` over the zero rows was faster than slicing out the filled part (XLA copies a
dynamic slice, and static slices inside ``lax.switch`` branches were copied too).

With a ``sharding`` (a ``NamedSharding`` with spec ``P(None, axes)``) the basis is pinned to
that layout, each row split along ``n`` over the devices, by ``with_sharding_constraint``
after it is allocated and after every update: per device it holds ``rows × n / devices``
floats, and the projections ``V w`` become partial sums that XLA all-reduces. Without one
nothing is constrained. ``_krylov_host`` keeps the basis in host memory instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array
FlatMatvec = Callable[[Array], Array]

BLOCK = 8  # basis rows are allocated in multiples of this


class LanczosState(NamedTuple):
    basis: Array  # (rows, n); row j is the j-th Lanczos vector, unfilled rows are zero
    alphas: Array  # (m,) diagonal of T
    betas: Array  # (m,) off-diagonal; betas[j] couples rows j and j + 1 (0 after a restart)
    step: Array  # number of completed steps
    num_matvecs: Array  # operator products spent (steps + restarts)
    anorm: Array  # running estimate of ||A|| (max |alpha|, beta seen), for breakdown tests
    finite: Array  # False once the operator returned NaN/inf
    converged: Array  # set by the driver's stopping test
    breakdown: Array  # the last step found an invariant subspace (next row is zero)
    restart: Array | None  # (n,) random seed of restart vectors; None: no restarts


def orthogonalize(basis: Array, w: Array) -> Array:
    """Remove from ``w`` its components along the rows of ``basis`` (unfilled rows are zero).

    One classical Gram-Schmidt pass, and a second one only when the first removed most of
    ``w`` (the DGKS test with η = 1/√2, as ARPACK does): "twice is enough". Each pass reads
    the basis twice, as ``(V w) V``: the layout XLA's CPU matrix-vector kernels ran fastest
    (``Vᵀ c`` was 2.4× slower, and two right-hand sides at once up to 10× slower, on CPU).
    """

    def project(x):
        return x - (basis @ x) @ basis

    w1 = project(w)
    again = jnp.linalg.norm(w1) < _DGKS * jnp.linalg.norm(w)
    return lax.cond(again, project, lambda x: x, w1)


_DGKS = 0.7071067811865476


def place(basis: Array, sharding: jax.sharding.Sharding | None) -> Array:
    """``basis`` constrained to ``sharding``; unchanged (no constraint at all) for ``None``."""
    return basis if sharding is None else lax.with_sharding_constraint(basis, sharding)


def init_state(
    v0: Array,
    num_iters: int,
    key: Array | None = None,
    sharding: jax.sharding.Sharding | None = None,
) -> LanczosState:
    """Basis with ``v0 / ||v0||`` in row 0; with ``key``, a random seed for restart vectors;
    with ``sharding``, the basis laid out that way (see the module docstring)."""
    n, dtype = v0.shape[0], v0.dtype
    rows = -(-(num_iters + 1) // BLOCK) * BLOCK
    basis = place(jnp.zeros((rows, n), dtype).at[0].set(v0 / jnp.linalg.norm(v0)), sharding)
    zeros = jnp.zeros((num_iters,), dtype)
    false = jnp.zeros((), bool)
    return LanczosState(
        basis=basis,
        alphas=zeros,
        betas=zeros,
        step=jnp.zeros((), jnp.int32),
        num_matvecs=jnp.zeros((), jnp.int32),
        anorm=jnp.zeros((), dtype),
        finite=~false,
        converged=false,
        breakdown=false,
        restart=None if key is None else jax.random.normal(key, (n,), dtype),
    )


def lanczos_step(
    matvec: FlatMatvec, state: LanczosState, sharding: jax.sharding.Sharding | None = None
) -> LanczosState:
    """One Lanczos step with full reorthogonalization, or one restart.

    On breakdown (an invariant subspace has been found: ``beta ~ eps ||A||``) ``beta`` is set
    to 0 (``T`` becomes block diagonal) and ``state.breakdown`` is raised. Without a restart
    vector the next basis row stays zero (SLQ: later nodes get zero weight). With one, the
    next call does not advance: it fills that row with ``roll(restart, j)`` orthogonalized
    against the basis, so eigenvalues outside the first Krylov space are still found. That
    call still applies the operator (to the zero row: one wasted product per restart) so the
    loop body has no branch: XLA copies a basis held by a conditional, or by a nested loop,
    every step, which tripled the cost of a step on CPU. ``sharding`` pins the updated basis
    to its layout (``init_state``).
    """
    basis, j = state.basis, state.step
    pending = state.breakdown if state.restart is not None else jnp.zeros((), bool)
    v = basis[j]
    w = matvec(v)
    finite = state.finite & jnp.all(jnp.isfinite(w))
    w = jnp.where(finite, w, jnp.zeros_like(w))
    alpha = jnp.vdot(v, w)
    prev = basis[jnp.maximum(j - 1, 0)]
    beta_prev = jnp.where(j > 0, state.betas[jnp.maximum(j - 1, 0)], 0)
    x = w - alpha * v - beta_prev * prev
    if state.restart is not None:
        x = jnp.where(pending, jnp.roll(state.restart, j), x)
    x = orthogonalize(basis, x)
    beta = jnp.linalg.norm(x)
    # a restart's beta is the norm of a random vector, not of A: keep it out of ||A||
    anorm = jnp.where(
        pending, state.anorm, jnp.maximum(state.anorm, jnp.maximum(jnp.abs(alpha), beta))
    )
    eps = jnp.finfo(x.dtype).eps
    tiny = 10 * eps * jnp.sqrt(jnp.asarray(x.shape[0], x.dtype)) * anorm
    breakdown = ~pending & (beta <= tiny)
    row = jnp.where(breakdown | (beta == 0), jnp.zeros_like(x), x / jnp.where(beta > 0, beta, 1))
    return state._replace(
        # rows >= num_iters + 1 exist, so the update never clips
        basis=place(basis.at[jnp.where(pending, j, j + 1)].set(row), sharding),
        alphas=state.alphas.at[j].set(jnp.where(pending, state.alphas[j], alpha)),
        betas=state.betas.at[j].set(
            jnp.where(pending, state.betas[j], jnp.where(breakdown, 0, beta))
        ),
        step=jnp.where(pending, j, j + 1),
        num_matvecs=state.num_matvecs + 1,
        anorm=anorm,
        finite=finite,
        breakdown=breakdown,
    )


def decoupled_diagonals(alphas: Array, betas: Array, num_valid: Array | int):
    """``T``'s diagonals with the rows past ``num_valid`` decoupled.

    Rows ``>= num_valid`` get a sentinel diagonal strictly above the Gershgorin bound of the
    valid block and zero couplings, so the eigenvalues of the valid block are exactly those
    ``<= bound``. Returns ``(diag (m,), off (m - 1,), valid (m,), bound)``.
    """
    idx = jnp.arange(alphas.shape[0], dtype=jnp.int32)
    valid = idx < num_valid
    a = jnp.where(valid, alphas, 0)
    b = jnp.where(idx + 1 < num_valid, betas, 0)
    b_prev = jnp.concatenate([jnp.zeros((1,), b.dtype), b[:-1]])
    bound = jnp.max(jnp.abs(a) + jnp.abs(b) + jnp.abs(b_prev))
    return jnp.where(valid, a, 3 * bound + 1), b[:-1], valid, bound


def tridiagonal(alphas: Array, betas: Array, num_valid: Array | int) -> tuple[Array, Array]:
    """Dense ``T`` (see ``decoupled_diagonals``) and the bound below which its valid block's
    eigenvalues lie."""
    diag, off, _, bound = decoupled_diagonals(alphas, betas, num_valid)
    return jnp.diag(diag) + jnp.diag(off, 1) + jnp.diag(off, -1), bound


def select(theta: Array, valid: Array, which: str, k: int) -> Array:
    """Indices of the ``k`` wanted Ritz values (as in SciPy's ``eigsh``), ascending by value."""
    neg, pos = -jnp.inf, jnp.inf
    if which == "LA":
        idx = lax.top_k(jnp.where(valid, theta, neg), k)[1]
    elif which == "SA":
        idx = lax.top_k(-jnp.where(valid, theta, pos), k)[1]
    elif which == "LM":
        idx = lax.top_k(jnp.where(valid, jnp.abs(theta), neg), k)[1]
    else:  # "BE": ceil(k/2) from the top, floor(k/2) from the bottom, as SciPy does
        hi = lax.top_k(jnp.where(valid, theta, neg), (k + 1) // 2)[1]
        lo = lax.top_k(-jnp.where(valid, theta, pos), k // 2)[1]
        idx = jnp.concatenate([lo, hi])
    return idx[jnp.argsort(theta[idx])]


def ritz(state: LanczosState, which: str, k: int):
    """Wanted Ritz values, the eigenvectors of ``T`` for them, their residual norms, and the
    largest |Ritz value| (the scale that relative tolerances refer to).

    The residual of Ritz pair ``(theta_i, V u_i)`` after ``j`` steps is
    ``|beta_{j-1} u_i[j-1]|``; with full reorthogonalization it matches ``||A x - theta x||``
    to rounding.
    """
    T, bound = tridiagonal(state.alphas, state.betas, state.step)
    theta, U = jnp.linalg.eigh(T)
    valid = theta <= bound
    idx = select(theta, valid, which, k)
    last = jnp.maximum(state.step - 1, 0)
    resid = jnp.abs(state.betas[last] * U[last, idx])
    scale = jnp.max(jnp.where(valid, jnp.abs(theta), 0))
    return theta[idx], U[:, idx], resid, scale


def wanted_residuals(state: LanczosState, which: str, k: int):
    """Cheap residual norms of the wanted Ritz pairs, for the stopping test inside the loop.

    LAPACK's ``eigh`` (a custom call) inside the loop body made every Lanczos step on CPU
    ~20 ms slower, whatever the size of ``T``. So the loop uses pure-XLA pieces: bisection
    (``eigh_tridiagonal``) for the Ritz values and two steps of inverse iteration
    (``tridiagonal_solve``, pivoted) for the last components of their eigenvectors. The
    returned numbers are only a stopping test; results come from ``ritz`` after the loop.
    Returns ``(residuals (k,), scale)``.
    """
    diag, off, valid, bound = decoupled_diagonals(state.alphas, state.betas, state.step)
    theta = jax.scipy.linalg.eigh_tridiagonal(diag, off, eigvals_only=True)
    ok = theta <= bound
    scale = jnp.max(jnp.where(ok, jnp.abs(theta), 0))
    wanted = theta[select(theta, ok, which, k)]
    lower = jnp.concatenate([jnp.zeros((1,), off.dtype), off])
    upper = jnp.concatenate([off, jnp.zeros((1,), off.dtype)])
    tiny = jnp.finfo(diag.dtype).eps * (scale + jnp.finfo(diag.dtype).tiny)

    def last_component(t):
        x = valid.astype(diag.dtype)
        for _ in range(2):
            x = lax.linalg.tridiagonal_solve(lower, diag - (t + tiny), upper, x[:, None])[:, 0]
            x = jnp.where(valid, x, 0)
            x = x / jnp.maximum(jnp.linalg.norm(x), jnp.finfo(x.dtype).tiny)
        return x[jnp.maximum(state.step - 1, 0)]

    last = jax.vmap(last_component)(wanted)
    beta = state.betas[jnp.maximum(state.step - 1, 0)]
    return jnp.abs(beta * last), scale


def wanted_converged(state: LanczosState, which: str, k: int, tol) -> Array:
    """The stopping test of ``eigsh``: at least ``k`` steps, and every wanted Ritz pair has
    residual ``<= tol × max|θ|`` (``wanted_residuals``). Reads only ``alphas``, ``betas`` and
    ``step``, so it can be jitted on a state without its basis."""
    resid, scale = wanted_residuals(state, which, k)
    return (state.step >= k) & jnp.all(resid <= tol * scale)


def lanczos(
    matvec: FlatMatvec,
    v0: Array,
    num_iters: int,
    *,
    key: Array | None = None,
    stop: Callable[[LanczosState], Array] | None = None,
    sharding: jax.sharding.Sharding | None = None,
) -> LanczosState:
    """Run up to ``num_iters`` Lanczos steps in one ``lax.while_loop`` (with ``stop``), or
    exactly ``num_iters`` in a ``lax.fori_loop`` (without).

    ``stop(state) -> bool`` (evaluated after each step) ends the run early and is recorded in
    ``state.converged``; the run also ends when the operator returns NaN/inf. With ``key``,
    breakdowns restart from random vectors orthogonal to the basis (see ``lanczos_step``);
    without, the run continues with zero vectors. ``sharding`` lays the basis out over
    devices (``init_state``).
    """
    state = init_state(v0, num_iters, key, sharding)
    if stop is None:
        # a fixed number of steps: a loop whose trip count is known, so a vmapped batch of
        # runs (SLQ probes) split over devices needs no all-reduce of "any still running" per
        # step. After a non-finite product, lanczos_step zeroes it and keeps `finite` False,
        # so the later steps stay finite and the caller sees the flag. No cond around the
        # step: XLA would copy the basis every step (W3 SLQ, 4 probes x 30: 19 ms vs 14 ms)
        return lax.fori_loop(0, num_iters, lambda _, s: lanczos_step(matvec, s, sharding), state)

    def running(state):
        return (state.step < num_iters) & state.finite & ~state.converged

    def body(state):
        state = lanczos_step(matvec, state, sharding)
        if stop is not None:
            # never stop right after a breakdown (last beta = 0, also during the restart that
            # follows): the Ritz pairs are then exact, but only for the Krylov space of one
            # vector; copies of a repeated eigenvalue and whatever that vector missed are
            # found only by restarting
            last_beta = state.betas[jnp.maximum(state.step - 1, 0)]
            state = state._replace(converged=stop(state) & (last_beta != 0))
        return state

    return lax.while_loop(running, body, state)
