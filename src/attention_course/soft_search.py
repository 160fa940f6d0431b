"""Chapter 04: soft search, the additive attention of RNNsearch (Bahdanau, Cho & Bengio 2014).

Before writing target word y_i, the decoder scores every annotation h_j against its previous
state s_{i-1} with a one-hidden-layer network, the *alignment model*,

    e_ij = v_a^T tanh(W_a s_{i-1} + U_a h_j),

turns the scores into weights with a softmax over the real source positions,

    alpha_ij = exp(e_ij) / sum_k exp(e_ik),

and reads the context c_i = sum_j alpha_ij h_j. In the course's row-vector convention the score is
e_ij = v_a · tanh(s_{i-1} W_a + h_j U_a) with W_a ``[n, k]``, U_a ``[m, k]``, v_a ``[k]``. The term
h_j U_a does not depend on i, so it is computed once per sentence (``prepare``); each decoder step
then costs O(T_x k). Everything else (the BiGRU encoder, the GRU decoder fed with c_i, the readout)
is the encoder–decoder of :mod:`attention_course.seq2seq`, shared with chapter 03: only alpha
differs, learned here, fixed there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from attention_course import _checks, _precision, pooling, seq2seq

__all__ = ["additive_score", "additive_score_projected", "AdditiveAlignment", "rnnsearch"]


def _check_score_shapes(s, h, W_a, U_a, v_a) -> None:
    s_shape, h_shape = tuple(jnp.shape(s)), tuple(jnp.shape(h))
    W_shape, U_shape, v_shape = tuple(jnp.shape(W_a)), tuple(jnp.shape(U_a)), tuple(jnp.shape(v_a))
    if len(s_shape) < 1:
        raise ValueError(f"s: expected shape [..., n], got {s_shape}")
    if len(h_shape) != len(s_shape) + 1 or h_shape[:-2] != s_shape[:-1]:
        raise ValueError(f"h: expected shape [..., T, m] with the leading axes of s {s_shape[:-1]}, got {h_shape}")
    if len(v_shape) != 1:
        raise ValueError(f"v_a: expected shape [k], got {v_shape}")
    k = v_shape[0]
    if W_shape != (s_shape[-1], k):
        raise ValueError(f"W_a: expected shape [n, k] = {(s_shape[-1], k)}, got {W_shape}")
    if U_shape != (h_shape[-1], k):
        raise ValueError(f"U_a: expected shape [m, k] = {(h_shape[-1], k)}, got {U_shape}")


def additive_score(s: jax.Array, h: jax.Array, W_a: jax.Array, U_a: jax.Array,
                   v_a: jax.Array) -> jax.Array:
    """Bahdanau's alignment model: e_j = v_a · tanh(s W_a + h_j U_a).

    Args:
      s: the decoder state s_{i-1}, ``[..., n]``.
      h: the annotations, ``[..., T, m]``.
      W_a: ``[n, k]``; U_a: ``[m, k]``; v_a: ``[k]``.

    Returns:
      e, ``[..., T]``: one score per source position (unnormalised; padding is
      not masked here).
    """
    _check_score_shapes(s, h, W_a, U_a, v_a)
    # scores in f32 at least
    (s, h, W_a, U_a, v_a), _ = _precision.inside(s, h, W_a, U_a, v_a)
    return additive_score_projected(s, h @ U_a, W_a, v_a)


def additive_score_projected(s: jax.Array, hU: jax.Array, W_a: jax.Array, v_a: jax.Array) -> jax.Array:
    """The same score with h_j U_a precomputed: e_j = v_a · tanh(s W_a + hU_j). hU ``[..., T, k]``.

    Scores are computed and returned in float32 at least, whatever the inputs' dtype
    (:mod:`attention_course._precision`): they are the inside of the attention, not its output."""
    (s, hU, W_a, v_a), _ = _precision.inside(s, hU, W_a, v_a)
    return jnp.tanh((s @ W_a)[..., None, :] + hU) @ v_a


class AdditiveAlignment(nnx.Module):
    """The learned alignment of RNNsearch.

    It plugs into :class:`attention_course.seq2seq.AttentionEncoderDecoder`.

    Args:
      n: decoder state size; m: annotation size; k: the alignment model's hidden
        size.
    """

    def __init__(self, n: int, m: int, k: int, *, rngs: nnx.Rngs):
        _checks.positive_ints(n=n, m=m, k=k)
        init = nnx.initializers.lecun_normal()
        self.W_a = nnx.Param(init(rngs.params(), (n, k)))
        self.U_a = nnx.Param(init(rngs.params(), (m, k)))
        self.v_a = nnx.Param(init(rngs.params(), (k, 1))[:, 0])

    def prepare(self, memory: dict) -> dict:
        """h_j U_a at each source position, ``[B, T_x, k]``, once a sentence."""
        return dict(memory, hU=memory["h"] @ self.U_a[...])

    def __call__(self, s_prev: jax.Array, step: jax.Array,
                 memory: dict) -> jax.Array:
        """alpha_i ``[B, T_x]`` from s_{i-1} ``[B, n]``.

        The scores, then a softmax over the real source positions."""
        W_a, v_a = self.W_a[...], self.v_a[...]
        e = additive_score_projected(s_prev, memory["hU"], W_a, v_a)  # [B, T_x]
        return pooling.masked_softmax(e, memory["mask"])


def rnnsearch(source_vocab: int, target_vocab: int, *, embed: int = 64, hidden: int = 64, attention: int = 64,
              rngs: nnx.Rngs) -> seq2seq.AttentionEncoderDecoder:
    """RNNsearch: the shared attention encoder–decoder with Bahdanau's additive alignment.

    ``hidden`` is H, each encoder direction's size (annotations m = 2H, decoder state n = H);
    ``attention`` is k.
    """
    alignment = AdditiveAlignment(hidden, 2 * hidden, attention, rngs=rngs)
    return seq2seq.AttentionEncoderDecoder(source_vocab, target_vocab, alignment, embed=embed, hidden=hidden,
                                           rngs=rngs)
