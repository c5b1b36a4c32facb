"""Linear algebra that knows no model: one PCA for every table, projection and target.

Vocabulary distillation, the static adapter's init and the projection of teacher targets all
need the same thing: the principal axes of a set of rows. They share :func:`pca`, so the
same rows always give the same basis (same order, same signs), whichever caller asks.

It runs in numpy (float64) on host arrays and in ``jax.numpy`` (the dtype given, traceable
under ``jit``) on JAX arrays, so an adapter's ``init`` can call it inside a compiled
function and vocabulary distillation on host rows keeps double precision.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def pca(
    rows: np.ndarray, target_dim: int, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Principal axes of ``rows``: ``(mean [d], components [d, target_dim])``.

    Computed from the (weighted) covariance (float64 for numpy input; JAX arrays and
    tracers stay in ``jax.numpy`` at their own precision), largest variance first. Each
    component's sign is fixed so that its entry of largest magnitude is positive, so the
    basis does not flip between runs, backends or callers. Project with
    ``(rows - mean) @ components``.

    Args:
      rows: [n, d] numbers (any float dtype).
      target_dim: components kept, 1..d.
      weights: optional [n] non-negative row weights (e.g. token frequencies); the mean and
        the covariance are weighted averages. None: every row counts once.

    Raises:
      ValueError: ``rows`` is not 2-D or empty, ``target_dim`` is outside 1..d, or
        ``weights`` has the wrong shape, a negative entry or a zero sum.
    """
    xp = jnp if isinstance(rows, jax.Array) else np
    if xp is np:
        rows = np.asarray(rows)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ValueError(f"rows has shape {rows.shape}; expected [n, d] with n >= 1")
    n, d = rows.shape
    if isinstance(target_dim, bool) or not isinstance(target_dim, (int, np.integer)):
        raise ValueError(f"target_dim={target_dim!r}; expected an integer in 1..{d}")
    if not 0 < target_dim <= d:
        raise ValueError(f"target_dim={target_dim}; expected 1..{d} for {d}-d rows")
    x = rows.astype(np.float64) if xp is np else rows.astype(jnp.promote_types(rows.dtype, "f4"))
    if weights is None:
        w = xp.full(n, 1.0 / n, x.dtype)
    else:
        w = xp.asarray(weights, x.dtype)
        if w.shape != (n,):
            raise ValueError(f"weights has shape {w.shape}; expected ({n},), one per row")
        if xp is np and (np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0):
            raise ValueError("weights must be finite, non-negative and not all zero")
        w = w / w.sum()
    mean = w @ x
    centred = x - mean
    cov = (centred * w[:, None]).T @ centred
    eigvals, eigvecs = xp.linalg.eigh((cov + cov.T) / 2)  # symmetric to the last bit
    order = xp.argsort(-eigvals, stable=True)[:target_dim]
    components = eigvecs[:, order]
    pivot = xp.argmax(xp.abs(components), axis=0)
    signs = xp.sign(components[pivot, xp.arange(target_dim)])
    components = components * xp.where(signs == 0, 1.0, signs)[None, :]
    return mean, components
