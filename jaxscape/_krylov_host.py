"""Lanczos with the basis in host memory: a Python loop, NumPy for the basis, the device for
the operator.

For a model whose ``num_iters × n`` basis does not fit next to it on the accelerator, each
step sends one vector to the device, applies the jitted operator there, and brings ``A v``
back; the three-term recurrence and the full reorthogonalization (two-pass classical
Gram-Schmidt with the DGKS test, as ``_krylov.orthogonalize``) run in NumPy on the filled
rows of the basis only. The stopping test and the Ritz pairs are ``_krylov``'s own
(``wanted_converged``, ``ritz``), fed with ``T``'s diagonals, so both paths stop by the same
rule and return the same numbers to rounding. Device memory holds the operator, two vectors
and ``T``; host memory holds the ``(num_iters + 1, n)`` basis.

Not traceable: the loop runs in Python and reads every ``A v`` back to the host.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxscape import _krylov

# compiled once per (num_iters, dtype, which, k): the states passed in carry no basis
_converged = jax.jit(_krylov.wanted_converged, static_argnames=("which", "k"))
_ritz = jax.jit(_krylov.ritz, static_argnames=("which", "k"))


def ritz(state: _krylov.LanczosState, which: str, k: int):
    """``_krylov.ritz`` (jitted, without sending the basis to the device), with the Ritz
    vectors ``V u_i`` assembled on the host: ``(theta, vectors (k, n) NumPy, resid, scale)``."""
    theta, U, resid, scale = _ritz(state._replace(basis=None), which=which, k=k)
    m = U.shape[0]
    return theta, np.asarray(U).T @ state.basis[:m], resid, scale


def orthogonalize(basis: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``_krylov.orthogonalize`` in NumPy on the filled rows: ``w - (V w) V``, a second pass
    only when the first removed most of ``w`` (DGKS, η = 1/√2)."""
    w1 = w - (basis @ w) @ basis
    if np.linalg.norm(w1) < _krylov._DGKS * np.linalg.norm(w):
        w1 = w1 - (basis @ w1) @ basis
    return w1


def lanczos(
    matvec: _krylov.FlatMatvec,
    v0: jax.Array,
    num_iters: int,
    *,
    key: jax.Array,
    which: str,
    k: int,
    tol: float,
) -> _krylov.LanczosState:
    """Up to ``num_iters`` Lanczos steps with the basis in host memory.

    The recurrence is that of ``_krylov.lanczos_step``: ``w = A v_j``,
    ``x = w - α_j v_j - β_{j-1} v_{j-1}`` with ``α_j = v_jᵀ w``, ``x`` reorthogonalized
    against ``v_0..v_j``, ``β_j = ||x||``, ``v_{j+1} = x / β_j``. A breakdown
    (``β_j <= 10 eps √n ||A||``) sets ``β_j = 0`` and fills ``v_{j+1}`` with
    ``roll(r, j + 1)``, ``r = normal(key)``, orthogonalized against the basis (the device
    path's restart, without its wasted product). After each step that did not break down
    the run stops when ``_krylov.wanted_converged(state, which, k, tol)``; it also stops at
    the first non-finite ``A v`` (``finite`` False). (Lanczos 1950; Golub & Van Loan,
    *Matrix Computations*, §10.1; reorthogonalization: Daniel, Gragg, Kaufman & Stewart 1976.)

    Args:
      matvec: flat operator; called with a NumPy vector, returns a concrete array.
      v0: start vector ``(n,)``.
      num_iters: most steps, ``<= n``.
      key: PRNG key of the restart vectors.
      which, k, tol: the stopping test, as in ``eigsh``.

    Returns:
      ``_krylov.LanczosState`` whose ``basis`` is a NumPy ``(num_iters + 1, n)`` array (rows
      past ``step`` zero) and whose other fields are small device arrays.

    Raises:
      TypeError: when ``matvec`` returns a tracer (called under ``jit``/``vmap``/``grad``).
    """
    v0 = np.asarray(v0)
    n, dtype = v0.shape[0], v0.dtype
    restart = np.asarray(jax.random.normal(key, (n,), dtype))
    basis = np.zeros((num_iters + 1, n), dtype)
    basis[0] = v0 / np.linalg.norm(v0)
    alphas, betas = np.zeros(num_iters, dtype), np.zeros(num_iters, dtype)
    eps, anorm, j, num_matvecs = np.finfo(dtype).eps, 0.0, 0, 0
    finite = converged = breakdown = False

    def state(basis):
        return _krylov.LanczosState(
            basis=basis,
            alphas=jnp.asarray(alphas),
            betas=jnp.asarray(betas),
            step=jnp.asarray(j, jnp.int32),
            num_matvecs=jnp.asarray(num_matvecs, jnp.int32),
            anorm=jnp.asarray(anorm, dtype),
            finite=jnp.asarray(finite),
            converged=jnp.asarray(converged),
            breakdown=jnp.asarray(breakdown),
            restart=None,
        )

    while j < num_iters:
        w = matvec(basis[j])
        if isinstance(w, jax.core.Tracer):
            raise TypeError(
                "eigsh: basis_memory='host' runs a Python loop that reads every product back "
                "to the host, so it cannot run under jax.jit/vmap/grad (the operator returned "
                "a tracer). Call eigsh outside the transformation, or use "
                "basis_memory='device'."
            )
        w = np.asarray(w)
        num_matvecs += 1
        finite = bool(np.all(np.isfinite(w)))
        if not finite:
            break
        v = basis[j]
        alpha = v @ w
        x = w - alpha * v - (betas[j - 1] * basis[j - 1] if j > 0 else 0)
        x = orthogonalize(basis[: j + 1], x)
        beta = np.linalg.norm(x)
        anorm = max(anorm, abs(alpha), beta)
        alphas[j] = alpha
        j += 1
        breakdown = bool(beta <= 10 * eps * np.sqrt(n) * anorm)
        if not breakdown:
            betas[j - 1] = beta
            basis[j] = x / beta
            converged = bool(_converged(state(None), which=which, k=k, tol=tol))
            if converged:
                break
        elif j < num_iters:  # an invariant subspace: go on from a fresh direction
            x = orthogonalize(basis[:j], np.roll(restart, j))
            norm = np.linalg.norm(x)
            basis[j] = x / norm if norm > 0 else 0
    return state(basis)
