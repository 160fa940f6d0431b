"""Chapter 03: two cursors in lock-step, i.e. attention with hard-coded weights.

The decoder of :mod:`attention_course.seq2seq` reads a context c_i = sum_j alpha_ij h_j at every
step. Here alpha_ij depends only on positions, never on the words: the source cursor sits at

* the synchronous position  mu_i = i                          (``scaled=False``), or
* the length-scaled position mu_i = i (T_x - 1) / (T_y - 1)   (``scaled=True``),

(0-based, clipped to the last source position, which is EOS), and the weights are either one-hot
at the nearest position (``width=0``) or a Gaussian band of width sigma around mu_i, renormalised
over the real source positions. The band is a softmax over fixed scores,

    e_ij = -(j - mu_i)^2 / (2 sigma^2),     alpha_ij = softmax_j(e_ij)   (real j only),

the same masked softmax that chapter 04 applies to *learned* scores. There are no parameters in
the alignment, so there is nothing to learn about where to look.

A decoder does not know T_y before it has finished, so the model's scaled cursor uses an estimate,
T_y ≈ round(r T_x), with r the mean ratio of target to source length in the training data; training
and decoding use the same estimate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from attention_course import _checks, pooling

__all__ = ["cursor", "band_weights", "diagonal_weights", "batched_diagonal_weights", "DiagonalAlignment",
           "length_ratio", "gold_offsets", "coverage"]


def cursor(step, target_length, source_length, *, scaled: bool):
    """mu_i: where the source cursor is when the target cursor is at ``step``.

    ``step`` is 0-based; mu_i is a float. Synchronous: mu_i = i; scaled:
    mu_i = i (T_x - 1) / (T_y - 1) (0 when T_y = 1). Clipped to [0, T_x - 1].
    All arguments broadcast against each other.
    """
    step = jnp.asarray(step, jnp.float32)
    source_length = jnp.asarray(source_length, jnp.float32)
    if scaled:
        target_length = jnp.asarray(target_length, jnp.float32)
        mu = step * (source_length - 1.0) / jnp.maximum(target_length - 1, 1.0)
    else:
        mu = step
    return jnp.clip(mu, 0.0, source_length - 1.0)


def band_weights(mu, source_length, width: float, T_x: int):
    """Weights over ``T_x`` source positions for cursor position(s) ``mu``.

    Returns ``[..., T_x]``. ``width = 0``: one-hot at the nearest position
    round(mu). ``width > 0``: softmax over the real positions j < source_length
    of e_j = -(j - mu)^2 / (2 width^2). Padded positions get 0.
    """
    j = jnp.arange(T_x, dtype=jnp.float32)
    mu = jnp.asarray(mu, jnp.float32)[..., None]
    real = j < jnp.asarray(source_length)[..., None]
    if width == 0:
        return jnp.where(real & (j == jnp.floor(mu + 0.5)), 1.0, 0.0)
    scores = -((j - mu) ** 2) / (2.0 * width**2)
    return pooling.masked_softmax(scores, real)


def _check_width(width) -> float:
    if not np.isfinite(width) or width < 0:
        raise ValueError(f"width: expected a finite number >= 0 (0 = one-hot), got {width}")
    return float(width)


def diagonal_weights(target_length: int, source_length: int, *, scaled: bool = True, width: float = 0.0) -> jax.Array:
    """The fixed alignment matrix ``[target_length, source_length]`` of lock-step cursors.

    Row i is the weight vector alpha_i over the source positions for target position i: non-negative,
    summing to 1, centred on the (scaled) diagonal mu_i, moving monotonically with i; one-hot when
    ``width = 0``. Lengths count every position the model sees (EOS included).
    """
    _checks.positive_ints(target_length=target_length, source_length=source_length)
    width = _check_width(width)
    mu = cursor(jnp.arange(target_length), target_length, source_length, scaled=scaled)
    return band_weights(mu, source_length, width, int(source_length))


def batched_diagonal_weights(target_lengths, source_lengths, *, T_y: int, T_x: int, scaled: bool = True,
                             width: float = 0.0) -> jax.Array:
    """:func:`diagonal_weights` for a padded batch: ``[B, T_y, T_x]``.

    Example b uses its own lengths; rows i >= target_lengths[b] and columns j >= source_lengths[b]
    (padding) are 0.
    """
    target_lengths, source_lengths = jnp.asarray(target_lengths), jnp.asarray(source_lengths)
    if target_lengths.ndim != 1 or target_lengths.shape != source_lengths.shape:
        raise ValueError(f"target_lengths and source_lengths: expected two [B] arrays, got shapes "
                         f"{tuple(target_lengths.shape)} and {tuple(source_lengths.shape)}")
    for name, lengths, width_ in (("target_lengths", target_lengths, T_y), ("source_lengths", source_lengths, T_x)):
        if int(lengths.min()) < 1 or int(lengths.max()) > width_:
            raise ValueError(f"{name}: every length must be in [1, {width_}], got min {int(lengths.min())}, "
                             f"max {int(lengths.max())}")
    width = _check_width(width)
    steps = jnp.arange(T_y)[None, :]  # [1, T_y]
    mu = cursor(steps, target_lengths[:, None], source_lengths[:, None], scaled=scaled)  # [B, T_y]
    weights = band_weights(mu, source_lengths[:, None], width, T_x)  # [B, T_y, T_x]
    return jnp.where((steps < target_lengths[:, None])[..., None], weights, 0.0)


def length_ratio(pairs) -> float:
    """r: mean over ``pairs`` of (target words + 1) / (source words + 1), EOS counted on both sides."""
    if len(pairs) == 0:
        raise ValueError("pairs: expected at least one pair, got none")
    return float(np.mean([(len(p.target) + 1) / (len(p.source) + 1) for p in pairs]))


def gold_offsets(pairs, *, scaled: bool = True) -> np.ndarray:
    """j - mu_i for every gold link (i, j) of ``pairs``: how far each true alignment lies from the cursor.

    The cursor uses each pair's true lengths, EOS included on both sides (T_x = words + 1), as the
    model sees them. Returns a flat float array with one entry per gold link.
    """
    if len(pairs) == 0:
        raise ValueError("pairs: expected at least one pair, got none")
    links, T_x, T_y = [], [], []
    for pair in pairs:
        n = len(pair.alignment)
        links.append(np.asarray(pair.alignment, dtype=np.float64).reshape(-1, 2))
        T_x.append(np.full(n, len(pair.source) + 1))
        T_y.append(np.full(n, len(pair.target) + 1))
    links = np.concatenate(links)
    mu = np.asarray(cursor(links[:, 0], np.concatenate(T_y), np.concatenate(T_x), scaled=scaled), np.float64)
    return links[:, 1] - mu


def coverage(pairs, *, scaled: bool = True, radius: float = 1.0) -> float:
    """Fraction of the gold links of ``pairs`` that lie within ``radius`` positions of the cursor."""
    if not radius >= 0:
        raise ValueError(f"radius: expected a number >= 0, got {radius}")
    return float(np.mean(np.abs(gold_offsets(pairs, scaled=scaled)) <= radius))


class DiagonalAlignment(nnx.Module):
    """The alignment of lock-step cursors, for :class:`attention_course.seq2seq.AttentionEncoderDecoder`.

    No parameters. ``scaled`` and ``width`` as in :func:`diagonal_weights`; ``ratio`` is r, used to
    estimate the target length T_y ≈ round(r T_x) for the scaled cursor (see the module docstring).
    """

    def __init__(self, *, scaled: bool = True, width: float = 0.0, ratio: float = 1.0):
        if not np.isfinite(ratio) or ratio <= 0:
            raise ValueError(f"ratio: expected a positive length ratio, got {ratio}")
        self.scaled = bool(scaled)
        self.width = _check_width(width)
        self.ratio = float(ratio)

    def prepare(self, memory: dict) -> dict:
        return memory  # nothing to precompute: the weights depend on positions only

    def __call__(self, s_prev: jax.Array, step: jax.Array,
                 memory: dict) -> jax.Array:
        """alpha_i ``[B, T_x]`` for target positions ``step`` ``[B]``.

        s_prev is not used: the weights depend on positions only."""
        source_lengths = memory["source_lengths"]
        target_estimate = jnp.maximum(jnp.round(self.ratio * source_lengths), 1.0)
        mu = cursor(step, target_estimate, source_lengths, scaled=self.scaled)
        return band_weights(mu, source_lengths, self.width, memory["h"].shape[1])
