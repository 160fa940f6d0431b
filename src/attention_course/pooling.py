"""Masked softmax and the weighted average: the two operations every attention mechanism shares.

Bahdanau called his mechanism a "soft search"; in code it is two steps. Scores over source
positions become weights that are non-negative and sum to one (a softmax restricted to the real,
unpadded positions), and the context is the weighted average of the values under those weights:

$$\\alpha_{ij} = \\frac{\\exp e_{ij}}{\\sum_{k:\\,\\mathrm{mask}_k} \\exp e_{ik}}, \\qquad
c_i = \\sum_j \\alpha_{ij} h_j .$$

A row whose mask is all False (nothing to attend to) gets all-zero weights and a zero context,
never NaN, and its gradients are finite.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attention_course import _precision

__all__ = ["masked_softmax", "weighted_average"]


def _check_mask(scores, mask):
    scores_shape = tuple(jnp.shape(scores))
    if len(scores_shape) == 0:
        raise ValueError(f"scores: expected an array with at least one axis, got a scalar of shape {scores_shape}")
    if mask is None:
        return
    mask_shape = tuple(jnp.shape(mask))
    try:
        broadcast = jnp.broadcast_shapes(mask_shape, scores_shape)
    except ValueError:
        broadcast = None
    if broadcast != scores_shape:
        raise ValueError(
            f"mask: expected a shape that broadcasts to scores' shape {scores_shape}, got {mask_shape}"
        )
    if jnp.result_type(mask) != jnp.bool_:
        raise ValueError(f"mask: expected a boolean array (True = may attend), got dtype {jnp.result_type(mask)}")


def masked_softmax(scores: jax.Array, mask: jax.Array | None = None, axis: int = -1) -> jax.Array:
    """Softmax of ``scores`` over ``axis``, restricted to the positions where ``mask`` is True.

    alpha_j = exp(e_j - max_k e_k) / sum_{k: mask_k} exp(e_k - max_k e_k), and alpha_j = 0 where
    mask_j is False. A row with no True entry gives all zeros (not NaN, and finite gradients).

    Args:
      scores: e, any shape ``[..., T]`` (float).
      mask: boolean, broadcastable to ``scores.shape``; True = may attend. ``None`` = all True.
      axis: the axis to normalise over (the positions being attended to).

    Returns:
      alpha, the same shape and dtype as ``scores``; each row sums to 1, or to 0 if fully masked.
      Half-precision scores are normalised in float32 (:mod:`attention_course._precision`).
    """
    _check_mask(scores, mask)
    # bf16 scores: the softmax in f32
    (scores,), dtype = _precision.inside(scores)
    if mask is None:
        return jax.nn.softmax(scores, axis=axis).astype(dtype)
    mask = jnp.broadcast_to(mask, scores.shape)
    # Masked positions get -inf before the max so they never shift it; a fully masked row's max is
    # replaced by 0 so that no inf - inf appears. `where` (not multiplication) keeps gradients finite.
    masked = jnp.where(mask, scores, -jnp.inf)
    row_max = jnp.max(masked, axis=axis, keepdims=True)
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    exp = jnp.where(mask, jnp.exp(jnp.where(mask, scores, 0.0) - row_max), 0.0)
    total = jnp.sum(exp, axis=axis, keepdims=True)
    return (exp / jnp.where(total > 0, total, 1.0)).astype(dtype)


def weighted_average(weights: jax.Array, values: jax.Array) -> jax.Array:
    """The context vector: c = sum_j alpha_j h_j, batched over leading axes.

    Args:
      weights: alpha, ``[..., Tq, T]`` or ``[..., T]`` (one query); rows sum to 1 (or 0 if masked).
      values: h, ``[..., T, m]``; leading axes must match those of ``weights``.

    Returns:
      c, ``[..., Tq, m]`` (or ``[..., m]`` for a single query), in the dtype of ``values``,
      summed in float32 when that is narrower.
    """
    w_shape, v_shape = tuple(jnp.shape(weights)), tuple(jnp.shape(values))
    if len(v_shape) < 2:
        raise ValueError(f"values: expected shape [..., T, m] (at least 2 axes), got {v_shape}")
    if len(w_shape) not in (len(v_shape) - 1, len(v_shape)):
        raise ValueError(
            f"weights: expected shape [..., T] or [..., Tq, T] to match values {v_shape}, got {w_shape}"
        )
    if w_shape[-1] != v_shape[-2]:
        raise ValueError(
            f"weights: last axis (T={w_shape[-1]}) must equal values' position axis (T={v_shape[-2]}); "
            f"weights {w_shape}, values {v_shape}"
        )
    if len(w_shape) == len(v_shape) - 1:  # one query per leading index
        if w_shape[:-1] != v_shape[:-2]:
            raise ValueError(f"weights: leading axes {w_shape[:-1]} must equal values' {v_shape[:-2]}")
        pattern = "...t,...tm->...m"
    elif w_shape[:-2] != v_shape[:-2]:
        raise ValueError(f"weights: leading axes {w_shape[:-2]} must equal values' {v_shape[:-2]}")
    else:
        pattern = "...qt,...tm->...qm"
    # summed in f32 at least; the context in the values' dtype
    (weights, values_in), _ = _precision.inside(weights, values)
    return jnp.einsum(pattern, weights, values_in).astype(_precision.output_dtype(values))
