"""Solvers for ``∇L(x) = 0`` on flat vectors, used by ``critical.find_critical_point``.

Each solver is ``solver(f, x0, options) -> (x, grad_norm_history, num_steps)``, one
``lax.while_loop`` that stops once ``‖∇f‖ <= options.grad_tol`` or after ``options.num_steps``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxscape._util import eigh_each


def _iterate(step, carry, x, g, options):
    """Run ``step(carry, x, g) -> (carry, x, g)`` until ``‖g‖ <= grad_tol`` or ``num_steps``;
    returns the last ``x``, the ``‖g‖`` history and the number of steps."""
    hist = jnp.full((options.num_steps + 1,), jnp.linalg.norm(g))

    def running(s):
        _, _, g, t, _ = s
        return (t < options.num_steps) & (jnp.linalg.norm(g) > options.grad_tol)

    def body(s):
        carry, x, g, t, hist = s
        carry, x, g = step(carry, x, g)
        later = jnp.arange(hist.shape[0]) > t
        return carry, x, g, t + 1, jnp.where(later, jnp.linalg.norm(g), hist)

    _, x, g, t, hist = jax.lax.while_loop(running, body, (carry, x, g, 0, hist))
    return x, hist, t


def _accept(x, g, x_new, g_new, mu):
    ok = jnp.linalg.norm(g_new) < jnp.linalg.norm(g)
    return ok, jnp.where(ok, x_new, x), jnp.where(ok, g_new, g), jnp.where(ok, mu / 3, mu * 4)


def _lm_dense(f, x0, options):
    grad, hess = jax.grad(f), jax.hessian(f)

    def eig(x):
        return eigh_each(hess(x))  # vmapped over starts: see eigh_each

    def step(carry, x, g):
        (lam, Q), mu = carry
        c = Q.T @ g
        x_new = x - Q @ (lam * c / (lam**2 + mu))
        ok, x, g, mu = _accept(x, g, x_new, grad(x_new), mu)
        lam, Q = jax.lax.cond(ok, eig, lambda _: (lam, Q), x)
        return ((lam, Q), mu), x, g

    lam, Q = eig(x0)
    mu = options.damping * jnp.max(lam**2) + jnp.finfo(x0.dtype).tiny
    return _iterate(step, ((lam, Q), mu), x0, grad(x0), options)


def _lm_cg(f, x0, options):
    grad = jax.grad(f)

    def step(mu, x, g):
        _, lin = jax.linearize(grad, x)
        rhs = -lin(g)
        d, _ = jax.scipy.sparse.linalg.cg(
            lambda v: lin(lin(v)) + mu * v, rhs, maxiter=options.num_cg_iters
        )
        _, x, g, mu = _accept(x, g, x + d, grad(x + d), mu)
        return mu, x, g

    g0 = grad(x0)
    hg = jax.jvp(grad, (x0,), (g0,))[1]
    scale = jnp.linalg.norm(hg) / jnp.maximum(jnp.linalg.norm(g0), jnp.finfo(x0.dtype).tiny)
    mu = options.damping * scale**2 + jnp.finfo(x0.dtype).tiny
    return _iterate(step, mu, x0, g0, options)


def _gradient_norm_descent(f, x0, options):
    grad = jax.grad(f)
    objective = jax.value_and_grad(lambda x: 0.5 * jnp.sum(grad(x) ** 2))

    def step(opt_state, x, g):
        _, d = objective(x)
        updates, opt_state = options.optimizer.update(d, opt_state, x)
        x = optax.apply_updates(x, updates)
        return opt_state, x, grad(x)

    return _iterate(step, options.optimizer.init(x0), x0, grad(x0), options)


SOLVERS = {"newton": _lm_dense, "newton-cg": _lm_cg, "gd": _gradient_norm_descent}
