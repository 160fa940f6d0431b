"""Chapter 07: attention at scale.

Self-attention over ``n`` positions builds an ``n x n`` matrix of scores. This module holds the
three answers the years after 2017 gave to that cost, each as a pure function with the shapes of
chapter 06 (``[..., T, d]``; masks are boolean, True = may attend):

- exact attention in linear memory: :func:`online_softmax_update` (one block of the online softmax)
  and :func:`blockwise_attention` (a ``lax.scan`` over key/value blocks with a gradient that
  recomputes each block, as FlashAttention's backward pass does);
- approximations: :func:`linear_attention` (parallel form), :func:`linear_attention_recurrent`
  (the same numbers from a ``[d_k, d_v]`` state, :func:`linear_attention_step`) and
  :func:`sliding_window_attention` (local causal attention in blocks, never ``[T, T]``);
- attention across devices: :func:`ring_attention` (``shard_map`` + ``lax.ppermute``).

Plus the measuring tools the chapter's experiments use: :func:`materialised_attention`,
:func:`compiled_memory` (XLA's compiled memory analysis, nothing allocated) and
:func:`associative_recall`.

``python -m attention_course.efficient checks`` runs the multi-device checks (:func:`ring_check`,
:func:`data_parallel_check`) in a fresh process and prints them as JSON; :func:`run_in_subprocess`
starts it with 8 host CPU devices, for a backend that has fewer.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from attention_course import _checks, _precision, pooling, self_attention

# shard_map: jax.shard_map in new JAX, jax.experimental.shard_map.shard_map before it.
try:
    _shard_map = jax.shard_map
except AttributeError:  # pragma: no cover - older JAX
    from jax.experimental.shard_map import shard_map as _shard_map

__all__ = [
    "online_softmax_update",
    "blockwise_attention",
    "elu_plus_one",
    "linear_attention",
    "linear_attention_step",
    "linear_attention_recurrent",
    "sliding_window_mask",
    "sliding_window_attention",
    "ring_attention",
    "ring_schedule",
    "sequence_mesh",
    "materialised_attention",
    "compiled_memory",
    "associative_recall",
    "run_in_subprocess",
    "start_in_subprocess",
    "ring_check",
    "ring_memory",
    "data_parallel_check",
]


# The input checks (attention_course._checks) are chapter 06's: the same shapes, the same messages.
_shape = _checks.shape


# --------------------------------------------------------------------------------------------
# Exact attention, block by block
# --------------------------------------------------------------------------------------------


def online_softmax_update(m: jax.Array, l: jax.Array, acc: jax.Array,
                          scores: jax.Array, v_block: jax.Array,
                          mask: jax.Array | None = None):
    """One block of the online softmax (Milakov & Gimelshein 2018).

    With the running max ``m``, sum ``l`` and numerator ``acc`` of the
    keys seen so far, and the scores ``s_j`` of a new block of keys::

        m'   = max(m, max_j s_j)
        l'   = exp(m - m') l   + sum_j exp(s_j - m')
        acc' = exp(m - m') acc + sum_j exp(s_j - m') v_j

    so that after the last block ``acc / l`` is softmax attention over all
    keys. Masked scores count as ``-inf``; a row with no allowed key so far
    keeps ``m = -inf``, ``l = 0``, ``acc = 0``.

    Args:
      m: running max ``[..., T]`` (start at ``-inf``).
      l: running sum ``[..., T]`` (start at 0).
      acc: running numerator ``[..., T, d_v]`` (start at 0).
      scores: this block's scores ``[..., T, B]``.
      v_block: this block's values ``[..., B, d_v]``.
      mask: bool, broadcastable to ``[..., T, B]``, or None.

    Returns:
      ``(m', l', acc')``, shaped like ``(m, l, acc)``.
    """
    if mask is not None:
        scores = jnp.where(mask, scores, -jnp.inf)
    # The max only keeps exp() in range; the result does not depend on
    # it, so no gradient flows through it.
    m_new = jax.lax.stop_gradient(
        jnp.maximum(m, jnp.max(scores, axis=-1)))  # [..., T]
    # A row with nothing allowed yet: subtract 0 instead of -inf.
    m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
    p = jnp.exp(scores - m_safe[..., None])  # [..., T, B]; exp(-inf) = 0
    correction = jnp.exp(m - m_safe)  # [..., T]; 0 while m = -inf
    l_new = correction * l + jnp.sum(p, axis=-1)
    acc_new = (correction[..., None] * acc
               + jnp.einsum("...tb,...bd->...td", p, v_block))
    return m_new, l_new, acc_new


def _key_blocks(x: jax.Array, block_size: int, fill) -> jax.Array:
    """``[..., S, d]`` -> ``[n, ..., B, d]``, the last block padded."""
    S = x.shape[-2]
    n_blocks = -(-S // block_size)
    pad = n_blocks * block_size - S
    widths = [(0, 0)] * (x.ndim - 2) + [(0, pad), (0, 0)]
    x = jnp.pad(x, widths, constant_values=fill)
    x = x.reshape(*x.shape[:-2], n_blocks, block_size, x.shape[-1])
    return jnp.moveaxis(x, -3, 0)


def _block_mask(mask, lengths, causal: bool, T: int, S: int,
                block_size: int, q_offset=0):
    """The mask cut into key blocks, and the function that finishes one.

    ``mask`` is ``[..., T or 1, S]`` (leading axes broadcast) or None;
    ``lengths`` the keys each row may see, ``[...]``, or None. Returns
    ``blocks`` ``[n, ..., T or 1, B]`` (or None) and
    ``block(j, blocks[j])``, which also forbids the padding past ``S``,
    keys past ``lengths`` and, if ``causal``, keys after the query (the
    queries are positions ``q_offset + t``): each from the block's key
    positions, never as a ``[..., T, S]`` array.
    """
    blocks = None
    if mask is not None:
        blocks = _key_blocks(jnp.swapaxes(mask, -1, -2), block_size, False)
        blocks = jnp.swapaxes(blocks, -1, -2)  # [n, ..., T or 1, B]

    def block(j, mask_block):
        key_pos = j * block_size + jnp.arange(block_size)  # [B]
        allowed = key_pos < S
        if mask_block is not None:
            allowed = allowed & mask_block
        if lengths is not None:  # [..., 1, B]
            allowed = allowed & (key_pos < lengths[..., None, None])
        if causal:  # [T, B]: query t sees key s <= t
            query_pos = q_offset + jnp.arange(T)
            allowed = allowed & (query_pos[:, None] >= key_pos)
        return allowed

    return blocks, block


def _blockwise_forward(q, k, v, mask, lengths, causal: bool,
                       block_size: int, q_offset=0):
    """Output ``[..., T, d_v]`` and log-sum-exp ``[..., T]`` (``-inf``
    for a row with no allowed key), one key block per scan step; causal,
    the blocks after the last query are skipped."""
    T, S, d_k = q.shape[-2], k.shape[-2], q.shape[-1]
    # on the scores, as the backward pass recomputes them
    scale = 1.0 / math.sqrt(d_k)
    k_blocks = _key_blocks(k, block_size, 0.0)  # [n, ..., B, d_k]
    v_blocks = _key_blocks(v, block_size, 0.0)  # [n, ..., B, d_v]
    mask_blocks, block_mask = _block_mask(mask, lengths, causal, T, S,
                                          block_size, q_offset)
    # zeros made from q, so that inside ring attention's shard_map they
    # vary across devices as q does
    zero = q[..., 0] * 0.0  # [..., T]
    init = (zero - jnp.inf,  # m
            zero,  # l
            zero[..., None] * v[..., :1, :])  # acc [..., T, d_v]

    def step(carry, xs):
        j, k_b, v_b, mask_b = xs

        def fold(carry):
            scores = jnp.einsum("...td,...bd->...tb", q, k_b) * scale
            return online_softmax_update(*carry, scores, v_b,
                                         block_mask(j, mask_b))

        if not causal:
            return fold(carry), None
        # a block after the last query: no work (lax.cond)
        seen = j * block_size <= q_offset + T - 1
        return jax.lax.cond(seen, fold, lambda c: c, carry), None

    index = jnp.arange(k_blocks.shape[0])
    (m, l, acc), _ = jax.lax.scan(
        step, init, (index, k_blocks, v_blocks, mask_blocks))
    some = l > 0
    l_safe = jnp.where(some, l, 1.0)
    out = jnp.where(some[..., None], acc / l_safe[..., None], 0.0)
    lse = jnp.where(some, m + jnp.log(l_safe), -jnp.inf)
    return out, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def _blockwise(q, k, v, mask, lengths, q_offset, causal, block_size):
    return _blockwise_forward(q, k, v, mask, lengths, causal, block_size,
                              q_offset)[0]


def _blockwise_fwd(q, k, v, mask, lengths, q_offset, causal, block_size):
    out, lse = _blockwise_forward(q, k, v, mask, lengths, causal, block_size,
                                  q_offset)
    return out, (q, k, v, mask, lengths, q_offset, out, lse)


def _blockwise_bwd(causal, block_size, residuals, d_out):
    """FlashAttention's backward pass: recompute each block's weights.

    With ``P = exp(Q K^T / sqrt(d_k) - lse)`` for one block of keys and
    ``D_t = sum_e dO_te O_te``::

        dV = P^T dO,    dP = dO V^T,    dS = P * (dP - D),
        dQ += dS K / sqrt(d_k),         dK = dS^T Q / sqrt(d_k)
    """
    q, k, v, mask, lengths, q_offset, out, lse = residuals
    T, S, d_k = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = 1.0 / math.sqrt(d_k)
    k_blocks = _key_blocks(k, block_size, 0.0)
    v_blocks = _key_blocks(v, block_size, 0.0)
    mask_blocks, block_mask = _block_mask(mask, lengths, causal, T, S,
                                          block_size, q_offset)
    D = jnp.sum(d_out * out, axis=-1)  # [..., T]
    some = jnp.isfinite(lse)[..., None]  # rows with an allowed key
    lse = jnp.where(jnp.isfinite(lse), lse, 0.0)

    def step(dq, xs):
        j, k_b, v_b, mask_b = xs

        def grads(dq):
            scores = jnp.einsum("...td,...bd->...tb", q, k_b) * scale
            p = jnp.exp(scores - lse[..., None])  # [..., T, B]
            p = jnp.where(block_mask(j, mask_b) & some, p, 0.0)
            dv_b = jnp.einsum("...tb,...td->...bd", p, d_out)
            dp = jnp.einsum("...td,...bd->...tb", d_out, v_b)
            ds = p * (dp - D[..., None])
            dq = dq + jnp.einsum("...tb,...bd->...td", ds, k_b) * scale
            dk_b = jnp.einsum("...tb,...td->...bd", ds, q) * scale
            return dq, (dk_b, dv_b)

        if not causal:
            return grads(dq)
        seen = j * block_size <= q_offset + T - 1
        return jax.lax.cond(seen, grads,
                            lambda dq: (dq, (k_b * 0.0, v_b * 0.0)), dq)

    index = jnp.arange(k_blocks.shape[0])
    dq, (dk, dv) = jax.lax.scan(
        step, q * 0.0, (index, k_blocks, v_blocks, mask_blocks))

    def unblock(x):  # [n, ..., B, d] -> [..., S, d]
        x = jnp.moveaxis(x, 0, -3)
        return x.reshape(*x.shape[:-3], -1, x.shape[-1])[..., :S, :]

    return dq, unblock(dk), unblock(dv), None, None, None


_blockwise.defvjp(_blockwise_fwd, _blockwise_bwd)


def blockwise_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                        mask: jax.Array | None = None, *, block_size: int,
                        causal: bool = False,
                        key_lengths: jax.Array | None = None) -> jax.Array:
    """Exact ``softmax(q k^T / sqrt(d_k)) v``, one block of keys at a time.

    The keys and values are cut into blocks of ``block_size`` (the last
    one padded) and a ``lax.scan`` folds them in with
    :func:`online_softmax_update` (Rabe & Staats 2021; Dao et al. 2022).
    The ``[T, S]`` scores are never built: the forward pass holds
    ``[..., T, B]`` at a time, and the gradient (a custom VJP) recomputes
    each block's weights from the saved log-sum-exp instead of storing
    them, so memory is linear in ``S`` both ways.

    Args:
      q: queries ``[..., T, d_k]``.
      k: keys ``[..., S, d_k]``.
      v: values ``[..., S, d_v]``.
      mask: bool, broadcastable to ``[..., T, S]``; True = query t may
        attend to key s. A padding mask ``[..., 1, S]`` stays that size.
      block_size: keys per block, any positive int (need not divide S).
      causal: also forbid keys after the query (s > t), block by block,
        with no ``[T, S]`` mask; the queries are then taken in blocks of
        ``block_size`` too, and the key blocks after a query block's last
        query are skipped (``lax.cond``), about half of them.
      key_lengths: int, the number of real keys of each row, with the
        first leading axes of q (``[B]`` for q ``[B, H, T, d]``): keys
        ``s >= key_lengths`` are padding. Like ``causal``, it is applied
        block by block from the keys' positions, with no ``[..., T, S]``
        mask (a dense padding mask ``[B, 1, 1, S]`` works too, but is cut
        into blocks and saved for the backward pass).

    Only reverse-mode differentiation is defined (``jax.grad``, ``jax.vjp``):
    the gradient is a custom VJP, and ``jax.jvp`` raises a ``TypeError``;
    for forward mode use :func:`materialised_attention`. Half-precision
    inputs are computed in float32 inside (:mod:`attention_course._precision`).

    Returns:
      ``[..., T, d_v]``, equal to chapter 06's
      ``scaled_dot_product_attention``; a query with no allowed key gets
      zeros, never NaN.
    """
    lead = _checks.check_qkv(q, k, v)
    T, S = _shape(q)[-2], _shape(k)[-2]
    _checks.check_mask(mask, (*lead, T, S))
    _checks.positive_int("block_size", block_size)
    _checks.check_bool("causal", causal)
    lengths = _check_key_lengths(key_lengths, lead)
    # bf16 in: f32 carries, bf16 out
    (q, k, v), dtype = _precision.inside(q, k, v)
    q, k, v = (jnp.broadcast_to(x, (*lead, *_shape(x)[-2:])) for x in (q, k, v))
    if mask is not None:  # keep a padding mask's T axis of 1
        mask = jnp.asarray(mask)
        mask = mask.reshape((1,) * (len(lead) + 2 - mask.ndim) + mask.shape)
        mask = jnp.broadcast_to(mask, (*lead, mask.shape[-2], S))
    block_size = int(min(block_size, S))
    if causal and T > block_size:  # query blocks too, to skip whole blocks
        return _causal_tiles(q, k, v, mask, lengths, block_size).astype(dtype)
    out = _blockwise(q, k, v, mask, lengths, 0, causal, block_size)
    return out.astype(dtype)


def _causal_tiles(q, k, v, mask, lengths, block_size):
    """Causal blockwise attention, one block of queries at a time
    (``lax.map``): query block i folds in key blocks 0..i and skips the
    rest, FlashAttention's loop order, so about half the blocks cost
    nothing."""
    T = q.shape[-2]
    q_tiles = _key_blocks(q, block_size, 0.0)  # [n, ..., B, d_k]
    rows = mask is not None and mask.shape[-2] > 1
    mask_tiles = _key_blocks(mask, block_size, False) if rows else None
    offsets = jnp.arange(q_tiles.shape[0]) * block_size

    def tile(xs):
        offset, q_b, mask_b = xs
        return _blockwise(q_b, k, v, mask_b if rows else mask, lengths,
                          offset, True, block_size)

    out = jax.lax.map(tile, (offsets, q_tiles, mask_tiles))
    out = jnp.moveaxis(out, 0, -3)  # [..., n, B, d_v]
    return out.reshape(*out.shape[:-3], -1, out.shape[-1])[..., :T, :]


def _check_key_lengths(key_lengths, lead):
    """``key_lengths`` ``lead[:n]`` int -> int32 ``lead[:n] + (1, ...)`` (or None)."""
    if key_lengths is None:
        return None
    shape = _shape(key_lengths)
    if not shape or shape != tuple(lead[:len(shape)]):
        raise ValueError(f"key_lengths: expected the first leading axes of q (for example {tuple(lead[:1])} "
                         f"of {tuple(lead)}), got shape {shape}")
    if not jnp.issubdtype(jnp.result_type(key_lengths), jnp.integer):
        raise ValueError(f"key_lengths: expected integers, got dtype {jnp.result_type(key_lengths)}")
    lengths = jnp.asarray(key_lengths, jnp.int32)
    return lengths.reshape(shape + (1,) * (len(lead) - len(shape)))


def materialised_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                           mask: jax.Array | None = None) -> jax.Array:
    """Chapter 06's attention, ``softmax(q k^T / sqrt(d_k)) v``, which builds the ``[..., T, S]`` scores.

    Shapes as in :func:`blockwise_attention`; returns only the output ``[..., T, d_v]``.
    """
    return self_attention.scaled_dot_product_attention(q, k, v, mask)[0]


# --------------------------------------------------------------------------------------------
# Linear attention (Katharopoulos et al. 2020)
# --------------------------------------------------------------------------------------------


def elu_plus_one(x: jax.Array) -> jax.Array:
    """The feature map of Katharopoulos et al. (2020): ``phi(x) = elu(x) + 1 > 0``, elementwise."""
    return jax.nn.elu(x) + 1.0


def linear_attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
                     causal: bool,
                     feature_map: Callable = elu_plus_one,
                     eps: float = 1e-6,
                     key_lengths: jax.Array | None = None) -> jax.Array:
    """Linear attention, the parallel form (Katharopoulos et al. 2020).

    softmax's ``exp(q . k)`` becomes ``phi(q) . phi(k)``::

        out_t = phi(q_t)^T sum_s phi(k_s) v_s^T
                / (phi(q_t)^T sum_s phi(k_s) + eps)

    over every ``s`` (``causal=False``: ``phi(Q) (phi(K)^T V)``, linear
    in ``T``) or over ``s <= t`` (``causal=True``: here the masked
    ``[T, T]`` product, the form that trains in parallel;
    :func:`linear_attention_recurrent` gives the same numbers step by
    step).

    Args:
      q: ``[..., T, d_k]``; k: ``[..., S, d_k]``; v: ``[..., S, d_v]``
        (``S = T`` when causal).
      causal: whether query t sees only the keys s <= t.
      feature_map: ``phi``, elementwise and positive.
      eps: added to the denominator.
      key_lengths: int, the real keys of each row, with the first leading
        axes of q (as in :func:`blockwise_attention`); the keys past them
        get ``phi(k_s) = 0``, so they add nothing to the sums.

    Returns:
      ``[..., T, d_v]``.
    """
    lead = _checks.check_qkv(q, k, v)
    _checks.check_bool("causal", causal)
    if causal:
        _checks.check_self(q, k)
    lengths = _check_key_lengths(key_lengths, lead)
    if not callable(feature_map):
        raise ValueError(
            f"feature_map: expected a function, got {feature_map!r}")
    # bf16 in: f32 state, bf16 out
    (q, k, v), dtype = _precision.inside(q, k, v)
    phi_q, phi_k = feature_map(q), feature_map(k)  # [..., T|S, d_k]
    if lengths is not None:  # padding keys: phi(k_s) = 0
        real = jnp.arange(_shape(k)[-2]) < lengths[..., None]  # [..., S]
        phi_k = jnp.where(real[..., None], phi_k, 0.0)
    if causal:
        T = _shape(q)[-2]
        a = jnp.einsum("...td,...sd->...ts", phi_q, phi_k)  # [..., T, T]
        a = jnp.where(jnp.tril(jnp.ones((T, T), bool)), a, 0.0)
        num = jnp.einsum("...ts,...se->...te", a, v)
        return (num / (jnp.sum(a, axis=-1, keepdims=True) + eps)).astype(dtype)
    state = jnp.einsum("...sd,...se->...de", phi_k, v)  # [..., d_k, d_v]
    z = jnp.sum(phi_k, axis=-2)  # [..., d_k]
    num = jnp.einsum("...td,...de->...te", phi_q, state)
    den = jnp.einsum("...td,...d->...t", phi_q, z)[..., None]
    return (num / (den + eps)).astype(dtype)


def linear_attention_step(state: jax.Array, z: jax.Array, q_t: jax.Array,
                          k_t: jax.Array, v_t: jax.Array, *,
                          feature_map: Callable = elu_plus_one,
                          eps: float = 1e-6):
    """One step of linear attention as an RNN::

        S_t = S_{t-1} + phi(k_t) v_t^T,     z_t = z_{t-1} + phi(k_t),
        out_t = phi(q_t)^T S_t / (phi(q_t)^T z_t + eps)

    Args:
      state: ``S_{t-1}`` ``[..., d_k, d_v]``; z: ``z_{t-1}`` ``[..., d_k]``.
      q_t, k_t: ``[..., d_k]``; v_t: ``[..., d_v]``.

    Returns:
      ``(S_t, z_t, out_t)``, with ``out_t`` ``[..., d_v]`` in the dtype of
      ``q_t, k_t, v_t``; the state ``(S_t, z_t)`` is float32 at least.
    """
    dtype = _precision.output_dtype(q_t, k_t, v_t)
    (state, z, q_t, k_t, v_t), _ = _precision.inside(state, z, q_t, k_t, v_t)
    phi_q, phi_k = feature_map(q_t), feature_map(k_t)
    state = state + phi_k[..., :, None] * v_t[..., None, :]
    z = z + phi_k
    num = jnp.einsum("...d,...de->...e", phi_q, state)
    den = jnp.einsum("...d,...d->...", phi_q, z)[..., None]
    return state, z, (num / (den + eps)).astype(dtype)


def linear_attention_recurrent(q: jax.Array, k: jax.Array, v: jax.Array,
                               *, feature_map: Callable = elu_plus_one,
                               eps: float = 1e-6,
                               return_state: bool = False):
    """Causal linear attention as a recurrence, one step per position.

    :func:`linear_attention_step` under ``lax.scan``: the whole past is
    held in a state ``S_t`` ``[..., d_k, d_v]`` (and ``z_t`` ``[..., d_k]``)
    of fixed size, whatever the length: chapter 01's one vector, grown
    into a matrix.

    Args:
      q, k: ``[..., T, d_k]``; v: ``[..., T, d_v]``.

    Returns:
      ``[..., T, d_v]``, equal to ``linear_attention(q, k, v, causal=True)``;
      with ``return_state=True``, ``(out, (S_T, z_T))``.
    """
    lead = _checks.check_qkv(q, k, v)
    _checks.check_self(q, k)
    if not callable(feature_map):
        raise ValueError(
            f"feature_map: expected a function, got {feature_map!r}")
    d_k, d_v = _shape(q)[-1], _shape(v)[-1]
    # bf16 in: f32 state, bf16 out
    (q, k, v), dtype = _precision.inside(q, k, v)
    # time first: [T, ..., d]
    xs = tuple(jnp.moveaxis(jnp.broadcast_to(x, (*lead, *_shape(x)[-2:])),
                            -2, 0) for x in (q, k, v))

    def step(carry, x):
        state, z, out = linear_attention_step(
            *carry, *x, feature_map=feature_map, eps=eps)
        return (state, z), out

    init = (jnp.zeros((*lead, d_k, d_v), q.dtype),
            jnp.zeros((*lead, d_k), q.dtype))
    final, outs = jax.lax.scan(step, init, xs)
    out = jnp.moveaxis(outs, 0, -2).astype(dtype)
    return (out, final) if return_state else out


# --------------------------------------------------------------------------------------------
# Local attention
# --------------------------------------------------------------------------------------------


def sliding_window_mask(T: int, window: int) -> jax.Array:
    """``[T, T]`` bool: query t may attend to key s iff
    ``t - window < s <= t``."""
    _checks.positive_int("T", T)
    _checks.positive_int("window", window)
    t = jnp.arange(T)[:, None]
    s = jnp.arange(T)[None, :]
    return (s <= t) & (s > t - window)


def sliding_window_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                             window: int,
                             mask: jax.Array | None = None) -> jax.Array:
    """Local causal attention over the last ``window`` positions::

        out_t = sum_{t - window < s <= t} softmax_s(q_t . k_s / sqrt(d_k)) v_s

    In blocks of ``W = window`` queries, each against its own block of
    keys and the block before it: memory ``O(T W)``, never ``[T, T]``.

    Args:
      q, k: ``[..., T, d_k]``; v: ``[..., T, d_v]`` (self-attention).
      window: how many positions each query sees, itself included.
      mask: bool, broadcastable to ``[..., T, T]`` (e.g. a padding mask
        ``[..., 1, T]``), combined with the window; True = may attend.

    Returns:
      ``[..., T, d_v]``; a query with no allowed key gets zeros.
    """
    lead = _checks.check_qkv(q, k, v)
    _checks.check_self(q, k)
    _checks.positive_int("window", window)
    T, d_k = _shape(q)[-2], _shape(q)[-1]
    _checks.check_mask(mask, (*lead, T, T))
    # bf16 in: f32 softmax, bf16 out
    (q, k, v), dtype = _precision.inside(q, k, v)
    W = int(min(window, T))
    n = -(-T // W)  # blocks
    pad = n * W - T
    edge = [(0, 0)] * len(lead)

    def blocks(x):  # [..., T, d] -> [..., n, W, d]
        x = jnp.broadcast_to(x, (*lead, *_shape(x)[-2:]))
        x = jnp.pad(x, edge + [(0, pad), (0, 0)])
        return x.reshape(*lead, n, W, x.shape[-1])

    def with_previous(x):  # [..., n, W, d] -> [..., n, 2W, d]
        prev = jnp.pad(x, edge + [(1, 0), (0, 0), (0, 0)])[..., :-1, :, :]
        return jnp.concatenate([prev, x], axis=-2)

    q_b = blocks(q)  # [..., n, W, d_k]
    k_b = with_previous(blocks(k))  # [..., n, 2W, d_k]
    v_b = with_previous(blocks(v))  # [..., n, 2W, d_v]
    q_pos = jnp.arange(n)[:, None] * W + jnp.arange(W)  # [n, W]
    k_pos = jnp.arange(n)[:, None] * W - W + jnp.arange(2 * W)  # [n, 2W]
    diff = q_pos[:, :, None] - k_pos[:, None, :]  # [n, W, 2W]
    real = (k_pos >= 0) & (k_pos < T)  # [n, 2W]
    allowed = (diff >= 0) & (diff < window) & real[:, None, :]
    if mask is not None:
        allowed = allowed & _band(mask, lead, T, W, n, pad, q_pos, k_pos)
    scores = jnp.einsum("...nwd,...nbd->...nwb", q_b, k_b) / math.sqrt(d_k)
    weights = pooling.masked_softmax(
        scores, jnp.broadcast_to(allowed, scores.shape))
    out = jnp.einsum("...nwb,...nbd->...nwd", weights, v_b)
    return out.reshape(*lead, n * W, -1)[..., :T, :].astype(dtype)


def _band(mask, lead, T, W, n, pad, q_pos, k_pos):
    """The entries of ``mask`` ``[..., T or 1, T]`` at the blocks'
    (query, key) positions: ``[..., n, W, 2W]``."""
    mask = jnp.asarray(mask)
    mask = mask.reshape((1,) * (len(lead) + 2 - mask.ndim) + mask.shape)
    mask = jnp.broadcast_to(mask, (*lead, mask.shape[-2], T))
    rows = mask.shape[-2] > 1
    mask = jnp.pad(mask, [(0, 0)] * len(lead)
                   + [(0, pad if rows else 0), (W, pad)])
    r = q_pos if rows else jnp.zeros_like(q_pos)  # [n, W]
    return mask[..., r[:, :, None], (k_pos + W)[:, None, :]]


# --------------------------------------------------------------------------------------------
# Attention across devices (Liu et al. 2023)
# --------------------------------------------------------------------------------------------


def _one_axis_mesh(devices, axis: str) -> Mesh:
    """``jax.make_mesh`` over ``devices`` (it orders a TPU's chips by their topology), with the
    axis in the automatic sharding mode that ``shard_map`` and ``NamedSharding`` expect."""
    return jax.make_mesh((len(devices),), (axis,), devices=devices,
                         axis_types=(jax.sharding.AxisType.Auto,))


def sequence_mesh(n_devices: int | None = None, axis: str = "seq") -> Mesh:
    """A one-axis mesh over ``n_devices`` of the devices (all of them by default), from ``jax.make_mesh``."""
    devices = jax.devices()
    n_devices = len(devices) if n_devices is None else n_devices
    _checks.positive_int("n_devices", n_devices)
    if n_devices > len(devices):
        raise ValueError(f"n_devices: expected at most the {len(devices)} devices there are, got {n_devices}")
    return _one_axis_mesh(devices[:n_devices], axis)


def ring_schedule(n_devices: int) -> np.ndarray:
    """``[step, device]`` -> the key/value block the device holds then.

    Device ``i`` starts with block ``i`` and passes its block to device
    ``i + 1`` after each step, so at step ``j`` it holds block
    ``(i - j) mod P``.
    """
    _checks.positive_int("n_devices", n_devices)
    steps = np.arange(n_devices)[:, None]
    devices = np.arange(n_devices)[None, :]
    return (devices - steps) % n_devices


def ring_attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
                   mesh: Mesh, axis: str, causal: bool = False,
                   key_lengths: jax.Array | None = None,
                   block_size: int = 128) -> jax.Array:
    """Softmax attention with the sequence sharded over ``mesh[axis]``.

    Each of the ``P`` devices holds ``T / P`` queries and ``S / P`` keys
    and values. For ``P`` steps a device folds the key/value block it
    holds into its queries' softmax (blockwise, ``block_size`` keys at a
    time, as :func:`blockwise_attention`; the two softmaxes merged by
    their log-sum-exps), then passes the block on to the next device of
    the ring (``lax.ppermute`` inside ``shard_map``). After ``P`` steps
    every query has seen every key::

        out = softmax(q k^T / sqrt(d_k)) v,   at most [T/P, block_size]
                                              scores on any device

    The gradient is a custom VJP that runs a second ring (Liu et al.'s
    backward pass): each device recomputes its blocks' weights from the
    saved log-sum-exp, and the keys' and values' gradients travel around
    the ring with their blocks, home after ``P`` steps. Nothing of size
    ``[T/P, S]`` is saved, so training memory per device is linear in
    the length too.

    Args:
      q: ``[..., T, d_k]``; k: ``[..., S, d_k]``; v: ``[..., S, d_v]``,
        with the same leading axes; ``T`` and ``S`` divisible by ``P``.
      mesh: a ``jax.sharding.Mesh``; axis: the name of one of its axes.
      causal: query t sees keys s <= t only (needs ``S = T``); a device
        skips the blocks above the diagonal (``lax.cond``: no work).
      key_lengths: int, the real keys of each row, with the first leading
        axes of q (as in :func:`blockwise_attention`).
      block_size: keys per block inside a device's block.

    Returns:
      ``[..., T, d_v]``, sharded like ``q``: attention on one device; a
      query with no allowed key gets zeros.
    """
    _check_ring(q, k, v, mesh, axis)
    _checks.check_bool("causal", causal)
    if causal:
        _checks.check_self(q, k)
    lead = _shape(q)[:-2]
    lengths = _check_key_lengths(key_lengths, lead)
    lengths = jnp.broadcast_to(  # [...], replicated: a few ints
        _shape(k)[-2] if lengths is None else lengths, lead).astype(jnp.int32)
    # bf16 in: f32 carries, bf16 out
    (q, k, v), dtype = _precision.inside(q, k, v)
    _checks.positive_int("block_size", block_size)
    return _ring(q, k, v, lengths, mesh, axis, causal,
                 int(block_size)).astype(dtype)


def _ring_specs(mesh, axis, n_lead):
    """The PartitionSpecs of a block ``[..., n, d]``, a row ``[..., n]`` and
    the replicated lengths ``[...]``; the ring's pairs ``i -> i + 1``."""
    P = mesh.shape[axis]
    block = PartitionSpec(*([None] * n_lead), axis, None)
    row = PartitionSpec(*([None] * n_lead), axis)
    return block, row, PartitionSpec(), [(i, (i + 1) % P) for i in range(P)]


def _ring_visit(i, j, S_block, lengths, causal, work, skip):
    """Device i's work on key block j: :func:`blockwise_attention`'s, with
    the lengths counted from the block's first key. Causal: block j < i is
    seen whole, j = i is the diagonal block (causal inside), j > i is
    skipped (``lax.switch``: no work)."""
    local_lengths = jnp.clip(lengths - j * S_block, 0, S_block)
    if not causal:
        return work(False, local_lengths)
    branch = jnp.where(j > i, 0, jnp.where(j == i, 2, 1))
    return jax.lax.switch(branch, [skip, lambda: work(False, local_lengths),
                                   lambda: work(True, local_lengths)])


def _ring_forward(q, k, v, lengths, mesh, axis, causal, block_size):
    block, row, replicated, ring = _ring_specs(mesh, axis, q.ndim - 2)
    P = mesh.shape[axis]

    def local(q, k, v, lengths):  # this device's blocks [..., T/P, d]
        i = jax.lax.axis_index(axis)
        size = min(block_size, k.shape[-2])

        def step(carry, s):
            out, lse, k, v = carry
            j = (i - s) % P  # the block this device holds at step s

            def work(diagonal, n):  # blockwise over block j's keys
                return _blockwise_forward(q, k, v, None, n, diagonal, size)

            def skip():
                return jnp.zeros_like(out), jnp.full_like(lse, -jnp.inf)

            out_j, lse_j = _ring_visit(i, j, k.shape[-2], lengths, causal,
                                       work, skip)
            # merge two softmaxes by their log-sum-exps
            new = jnp.logaddexp(lse, lse_j)
            seen = jnp.isfinite(new)
            w, w_j = (jnp.where(seen, jnp.exp(x - jnp.where(seen, new, 0.0)),
                                0.0)[..., None] for x in (lse, lse_j))
            out = w * out + w_j * out_j
            k = jax.lax.ppermute(k, axis, ring)
            v = jax.lax.ppermute(v, axis, ring)
            return (out, new, k, v), None

        # Computed from q, so that shard_map sees it vary across devices.
        zero = q[..., 0] * 0.0  # [..., T/P]
        init = (zero[..., None] * v[..., :1, :], zero - jnp.inf, k, v)
        (out, lse, _, _), _ = jax.lax.scan(step, init, jnp.arange(P))
        return out, lse

    return _shard_map(local, mesh=mesh,
                      in_specs=(block, block, block, replicated),
                      out_specs=(block, row))(q, k, v, lengths)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _ring(q, k, v, lengths, mesh, axis, causal, block_size):
    return _ring_forward(q, k, v, lengths, mesh, axis, causal, block_size)[0]


def _ring_fwd(q, k, v, lengths, mesh, axis, causal, block_size):
    out, lse = _ring_forward(q, k, v, lengths, mesh, axis, causal, block_size)
    return out, (q, k, v, lengths, out, lse)


def _ring_bwd(mesh, axis, causal, block_size, residuals, d_out):
    """The second ring: blockwise attention's backward pass
    (:func:`_blockwise_bwd`) on each block, from the final output and
    log-sum-exp, with dK and dV travelling with their block."""
    block, row, replicated, ring = _ring_specs(mesh, axis, d_out.ndim - 2)
    P = mesh.shape[axis]

    def local(q, k, v, lengths, out, lse, d_out):
        i = jax.lax.axis_index(axis)
        size = min(block_size, k.shape[-2])

        def step(carry, s):
            dq, k, v, dk, dv = carry
            j = (i - s) % P

            def work(diagonal, n):
                return _blockwise_bwd(diagonal, size,
                                      (q, k, v, None, n, 0, out, lse),
                                      d_out)[:3]

            def skip():
                return q * 0.0, k * 0.0, v * 0.0

            dq_j, dk_j, dv_j = _ring_visit(i, j, k.shape[-2], lengths, causal,
                                           work, skip)
            k, v, dk, dv = (jax.lax.ppermute(x, axis, ring)
                            for x in (k, v, dk + dk_j, dv + dv_j))
            return (dq + dq_j, k, v, dk, dv), None

        # after P passes each block, and its gradients, are home again
        init = (q * 0.0, k, v, k * 0.0, v * 0.0)
        (dq, _, _, dk, dv), _ = jax.lax.scan(step, init, jnp.arange(P))
        return dq, dk, dv

    q, k, v, lengths, out, lse = residuals
    dq, dk, dv = _shard_map(
        local, mesh=mesh,
        in_specs=(block, block, block, replicated, block, row, block),
        out_specs=(block, block, block))(q, k, v, lengths, out, lse, d_out)
    return dq, dk, dv, None


_ring.defvjp(_ring_fwd, _ring_bwd)


def _check_ring(q, k, v, mesh, axis) -> None:
    _checks.check_qkv(q, k, v)
    if not (_shape(q)[:-2] == _shape(k)[:-2] == _shape(v)[:-2]):
        raise ValueError(
            f"q, k, v: expected the same leading axes, got q {_shape(q)}, "
            f"k {_shape(k)}, v {_shape(v)}")
    if not isinstance(mesh, Mesh):
        raise ValueError(
            f"mesh: expected a jax.sharding.Mesh, got {type(mesh).__name__}")
    if axis not in mesh.axis_names:
        raise ValueError(f"axis: expected one of the mesh's axes "
                         f"{tuple(mesh.axis_names)}, got {axis!r}")
    P = mesh.shape[axis]
    for name, x in (("q", q), ("k", k), ("v", v)):
        if _shape(x)[-2] % P:
            raise ValueError(
                f"{name}: expected a length divisible by the {P} devices "
                f"on axis {axis!r}, got {name} of shape {_shape(x)}")


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def compiled_memory(fn: Callable, *shapes, dtype=jnp.float32) -> dict[str, int]:
    """XLA's compiled memory analysis of ``jax.jit(fn)`` for arguments of the given shapes.

    Nothing is allocated: the function is lowered for ``jax.ShapeDtypeStruct`` arguments and
    compiled, and the compiler reports the bytes it plans for.

    Args:
      fn: a function of arrays.
      shapes: one shape (tuple of ints) per argument, or a ``jax.ShapeDtypeStruct``.

    Returns:
      ``{"temp": ..., "argument": ..., "output": ...}`` in bytes (``temp`` is the scratch memory
      the computation needs beyond its inputs and outputs).
    """
    args = [s if isinstance(s, jax.ShapeDtypeStruct) else jax.ShapeDtypeStruct(tuple(s), dtype) for s in shapes]
    stats = jax.jit(fn).lower(*args).compile().memory_analysis()
    if stats is None:  # pragma: no cover - a backend without the analysis
        raise RuntimeError("this backend gives no compiled memory analysis")
    return {"temp": int(stats.temp_size_in_bytes), "argument": int(stats.argument_size_in_bytes),
            "output": int(stats.output_size_in_bytes)}


def associative_recall(key: jax.Array, n_pairs: int, d: int, *, attention: str, sharpness: float = 8.0,
                       n_trials: int = 8) -> float:
    """Store ``n_pairs`` key -> value pairs in attention, ask for each value back, return the recall.

    Keys ``k_s`` and values ``v_s`` are random unit vectors in ``R^d`` (drawn by NumPy from a
    generator seeded with ``key``'s data); the query for pair ``i`` is
    ``q = beta k_i`` with ``beta = sharpness * sqrt(d)``, so that softmax attention's scores
    ``q . k_s / sqrt(d) = sharpness * cos(k_i, k_s)``. The readouts::

        softmax:          out = sum_s softmax_s(q . k_s / sqrt(d)) v_s
        linear:           out = phi(q)^T S / (phi(q)^T z),  S = sum_s phi(k_s) v_s^T  [d, d],  phi = elu + 1
        linear_identity:  out = q^T S,  S = sum_s k_s v_s^T  (phi(x) = x: the plain outer-product memory)

    A retrieval counts when the stored value nearest to ``out`` (by cosine) is ``v_i``.

    Returns:
      the fraction of the ``n_pairs * n_trials`` queries retrieved correctly.
    """
    _checks.positive_int("n_pairs", n_pairs)
    _checks.positive_int("d", d)
    _checks.positive_int("n_trials", n_trials)
    if attention not in ("softmax", "linear", "linear_identity"):
        raise ValueError(f"attention: expected 'softmax', 'linear' or 'linear_identity', got {attention!r}")
    # The random vectors come from NumPy, seeded by the key: the compiled program stays small.
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    keys, values = (x / np.linalg.norm(x, axis=-1, keepdims=True)
                    for x in rng.standard_normal((2, n_trials, n_pairs, d), dtype=np.float32))
    return float(_recall(keys, values, attention, float(sharpness)))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _recall(keys, values, attention, sharpness):  # [n, N, d] each
    n_pairs, d = keys.shape[-2:]
    queries = keys * (sharpness * math.sqrt(d))
    if attention == "softmax":
        out = materialised_attention(queries, keys, values)
    elif attention == "linear":
        out = linear_attention(queries, keys, values, causal=False)
    else:
        state = jnp.einsum("nsd,nse->nde", keys, values)  # [n, d, d]
        out = jnp.einsum("nqd,nde->nqe", queries, state)
    similarity = jnp.einsum("nqe,nse->nqs", out, values) / jnp.maximum(
        jnp.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return jnp.mean(jnp.argmax(similarity, axis=-1) == jnp.arange(n_pairs))


# --------------------------------------------------------------------------------------------
# The multi-device checks, in a process of their own
# --------------------------------------------------------------------------------------------


class _Subprocess:
    """A running ``python -m attention_course.efficient <command>``; ``result()`` waits for it."""

    def __init__(self, command: str, n_devices: int, timeout: float):
        env = dict(os.environ)
        flag = f"--xla_force_host_platform_device_count={n_devices}"
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flag).strip()
        env["JAX_PLATFORMS"] = "cpu"
        self.command, self.timeout = command, timeout
        self.process = subprocess.Popen(
            [sys.executable, "-m", "attention_course.efficient", command], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(self) -> dict:
        try:
            out, err = self.process.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise RuntimeError(f"efficient {self.command}: no answer in {self.timeout} s") from None
        if self.process.returncode != 0:
            raise RuntimeError(f"efficient {self.command} failed:\n{err[-4000:]}")
        return json.loads(out.strip().splitlines()[-1])


def start_in_subprocess(command: str, n_devices: int = 8, *, timeout: float = 600) -> _Subprocess:
    """Start ``python -m attention_course.efficient <command>`` with ``n_devices`` host CPU devices.

    The device count is an XLA flag read when JAX starts, so it is set in a fresh process and
    never leaks into the caller's. Returns at once; ``.result()`` waits and returns the JSON the
    command prints on its last line.
    """
    if command not in _COMMANDS:
        raise ValueError(f"command: expected one of {sorted(_COMMANDS)}, got {command!r}")
    _checks.positive_int("n_devices", n_devices)
    return _Subprocess(command, n_devices, timeout)


def run_in_subprocess(command: str, n_devices: int = 8, *, timeout: float = 600) -> dict:
    """:func:`start_in_subprocess`, then wait for its result."""
    return start_in_subprocess(command, n_devices, timeout=timeout).result()


def ring_check(seed: int = 0, batch: int = 2, length: int = 64, d: int = 16) -> dict[str, Any]:
    """Ring attention on every device there is against one-device attention: values and gradients."""
    mesh = sequence_mesh(axis="seq")
    kq, kk, kv, kc = jax.random.split(jax.random.PRNGKey(seed), 4)
    q = jax.random.normal(kq, (batch, length, d))
    k = jax.random.normal(kk, (batch, length, d))
    v = jax.random.normal(kv, (batch, length, d))
    cot = jax.random.normal(kc, (batch, length, d))
    sharding = NamedSharding(mesh, PartitionSpec(None, "seq", None))
    qs, ks, vs = (jax.device_put(x, sharding) for x in (q, k, v))

    def ring_loss(q, k, v):
        return jnp.sum(ring_attention(q, k, v, mesh=mesh, axis="seq") * cot)

    def one_loss(q, k, v):
        return jnp.sum(materialised_attention(q, k, v) * cot)

    out_ring = jax.jit(lambda q, k, v: ring_attention(q, k, v, mesh=mesh, axis="seq"))(qs, ks, vs)
    out_one = jax.jit(materialised_attention)(q, k, v)
    g_ring = jax.jit(jax.grad(ring_loss, argnums=(0, 1, 2)))(qs, ks, vs)
    g_one = jax.jit(jax.grad(one_loss, argnums=(0, 1, 2)))(q, k, v)
    # causal, and with key lengths: the same comparison, values and gradients
    lengths = jnp.array([length, length // 2 + 3] * batch)[:batch]
    padding = (jnp.arange(length) < lengths[:, None])[:, None, :]  # [B, 1, S]
    causal_mask = jnp.tril(jnp.ones((length, length), bool))
    masked_gaps = {}
    for name, kw, mask in (("causal", dict(causal=True), causal_mask),
                           ("key_lengths", dict(key_lengths=lengths), padding),
                           ("causal_key_lengths", dict(causal=True, key_lengths=lengths), padding & causal_mask)):
        ring = lambda q, k, v, kw=kw: ring_attention(q, k, v, mesh=mesh, axis="seq", block_size=8, **kw)
        one = lambda q, k, v, mask=mask: materialised_attention(q, k, v, mask)
        gaps = [float(jnp.max(jnp.abs(jax.jit(ring)(qs, ks, vs) - one(q, k, v))))]
        for a, b in zip(jax.jit(jax.grad(lambda *x: jnp.sum(ring(*x) * cot), argnums=(0, 1, 2)))(qs, ks, vs),
                        jax.grad(lambda *x: jnp.sum(one(*x) * cot), argnums=(0, 1, 2))(q, k, v)):
            gaps.append(float(jnp.max(jnp.abs(a - b))))
        masked_gaps[name] = max(gaps)
    try:
        ring_attention(q[:, 1:], k[:, 1:], v[:, 1:], mesh=mesh, axis="seq")
        message = ""
    except ValueError as error:
        message = str(error)
    return {
        "n_devices": len(jax.devices()),
        "indivisible_error": message,
        "platform": jax.devices()[0].platform,
        "output_sharding": str(out_ring.sharding.spec),
        "max_abs_diff_values": float(jnp.max(jnp.abs(out_ring - out_one))),
        "max_abs_diff_grads": float(max(jnp.max(jnp.abs(a - b)) for a, b in zip(g_ring, g_one))),
        "max_abs_diff_masked": masked_gaps,
    }


def ring_memory(lengths=(2048, 4096, 8192), d: int = 64, block_size: int = 128) -> dict[str, Any]:
    """Compiled memory per device (XLA's analysis, nothing allocated) of ring attention over every
    device there is, forward and with its gradient, at each total length: ``{"lengths": [...],
    "forward": [...], "training": [...], "causal_training": [...]}`` in bytes (scratch memory)."""
    mesh = sequence_mesh(axis="seq")
    sharding = NamedSharding(mesh, PartitionSpec(None, "seq", None))
    result = {"n_devices": len(mesh.devices.flat), "block_size": block_size, "lengths": list(lengths),
              "forward": [], "training": [], "causal_training": []}
    for n in lengths:
        x = jax.ShapeDtypeStruct((1, n, d), jnp.float32, sharding=sharding)
        for key, causal in (("forward", False), ("training", False), ("causal_training", True)):
            fn = functools.partial(ring_attention, mesh=mesh, axis="seq", causal=causal, block_size=block_size)
            if key != "forward":
                fn = jax.grad(lambda q, k, v, fn=fn: jnp.sum(fn(q, k, v)), argnums=(0, 1, 2))
            result[key].append(compiled_memory(fn, x, x, x)["temp"])
    return result


def data_parallel_check(steps: int = 5, batch_size: int = 32, seed: int = 0) -> dict[str, Any]:
    """Train chapter 06's Transformer for ``steps`` steps twice: the batch on one device, and the
    batch sharded over every device there is (``NamedSharding``, parameters replicated; ``jax.jit``
    partitions the step). Same data, same initialisation: returns both lists of losses.

    The sharded step is the usual data parallelism: each device computes the loss and gradient of
    its part of the batch, and the compiler inserts the all-reduce that sums the gradients.
    """
    import optax
    from flax import nnx

    from attention_course import tasks, train

    task = tasks.get_task("reverse")
    pairs = tasks.generate(task, steps * batch_size, seed=seed, min_length=4, max_length=12)
    batches = [tasks.make_batch(pairs[i * batch_size:(i + 1) * batch_size], task, source_width=13,
                                target_width=13) for i in range(steps)]
    model = self_attention.Transformer(len(task.source_vocab), len(task.target_vocab), d_model=32,
                                       num_heads=4, d_ff=64, layers=1, max_length=16, rngs=nnx.Rngs(seed))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(3e-3)

    def loss_fn(params, batch):
        logits, _ = nnx.merge(graphdef, params, rest)(batch.source, batch.source_lengths, batch.target_in)
        return train.sequence_cross_entropy(logits, batch.target_out, batch.target_mask)

    @jax.jit
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def run(put_batch, put_state):
        p, o = put_state(params), put_state(tx.init(params))
        losses = []
        for batch in batches:
            p, o, loss = step(p, o, put_batch(batch))
            losses.append(float(loss))
        return losses

    devices = jax.devices()
    mesh = _one_axis_mesh(devices, "data")
    one = devices[0]
    sharded = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())
    single = run(lambda b: jax.device_put(b, one), lambda t: jax.device_put(t, one))
    parallel = run(lambda b: jax.device_put(b, sharded), lambda t: jax.device_put(t, replicated))
    return {"n_devices": len(devices), "single": single, "parallel": parallel,
            "max_abs_diff": float(np.max(np.abs(np.array(single) - np.array(parallel))))}


_COMMANDS = {
    "ring": lambda: ring_check(),
    "data_parallel": lambda: data_parallel_check(),
    "ring_memory": lambda: ring_memory(),
    "checks": lambda: {"ring": ring_check(), "data_parallel": data_parallel_check(),
                       "ring_memory": ring_memory()},
}


def _main(argv: list[str]) -> None:
    if not argv or argv[0] not in _COMMANDS:
        raise SystemExit(f"usage: python -m attention_course.efficient {{{','.join(_COMMANDS)}}}")
    print(json.dumps(_COMMANDS[argv[0]]()))


if __name__ == "__main__":
    _main(sys.argv[1:])
