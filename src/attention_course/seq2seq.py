"""The encoder–decoder with attention that chapters 03 and 04 share: only the alignment differs.

Bahdanau et al. (2014) replaced the single vector c by one context per target word,

    c_i = sum_j alpha_ij h_j,

where h_j are the states of a bidirectional GRU over the source. The decoder reads it at every step:

    s_i = f(s_{i-1}, y_{i-1}, c_i),     p(y_i | y_<i, x) = softmax([s_i; E y_{i-1}; c_i] W_o + b_o),

with s_0 = tanh(h_1(backward) W_s + b_s). What fills alpha_ij is the *alignment*, a pluggable
module: chapter 03 hard-codes it (:class:`attention_course.diagonal.DiagonalAlignment`, no
parameters), chapter 04 learns it (additive attention). An alignment is any NNX module with

* ``prepare(memory) -> memory``: anything it can compute once per sentence (e.g. U_a h_j);
* ``__call__(s_prev, step, memory) -> alpha``: the weights ``[B, T_x]`` for target position
  ``step`` (0-based, ``[B]`` int) given the previous decoder state s_{i-1} ``[B, n]``; padded source
  positions must get weight 0.

The model has the decodable interface (``encode``, ``init_decoder``, ``decode_step``) of
:mod:`attention_course.decode`, so greedy and beam search return its attention weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from attention_course import _checks, decode, pooling, rnn
from attention_course.train import sequence_cross_entropy

__all__ = ["AttentionEncoderDecoder", "loss"]


class AttentionEncoderDecoder(nnx.Module):
    """BiGRU encoder, GRU decoder fed with the context c_i, a readout; the alignment is given.

    Args:
      source_vocab, target_vocab: |V_x| and |V_y|.
      alignment: an alignment module (see the module docstring).
      embed: d_e, the embedding size of both sides.
      hidden: H, the size of each encoder direction; the annotations h_j have m = 2H numbers and the
        decoder state s_i has n = H.
    """

    def __init__(self, source_vocab: int, target_vocab: int, alignment: nnx.Module, *, embed: int = 64,
                 hidden: int = 64, rngs: nnx.Rngs):
        _checks.positive_ints(source_vocab=source_vocab, target_vocab=target_vocab, embed=embed, hidden=hidden)
        if not (callable(alignment) and callable(getattr(alignment, "prepare", None))):
            raise ValueError(f"alignment: expected a module with prepare(memory) and __call__(s_prev, step, memory), "
                             f"got {type(alignment).__name__}")
        m = 2 * hidden
        self.hidden = hidden
        self.encoder = rnn.GRUEncoder(source_vocab, embed, hidden, bidirectional=True, rngs=rngs)
        self.alignment = alignment
        self.target_embed = nnx.Embed(target_vocab, embed, rngs=rngs)
        self.init_proj = nnx.Linear(hidden, hidden, rngs=rngs)  # W_s: from the first backward state
        self.decoder = rnn.GRU(embed + m, hidden, rngs=rngs)
        self.readout = nnx.Linear(hidden + embed + m, target_vocab, rngs=rngs)

    def encode(self, source: jax.Array, source_lengths: jax.Array) -> dict:
        """Annotations h ``[B, T_x, 2H]``, the source mask, lengths, s_0, and what the alignment precomputes."""
        out = self.encoder(source, source_lengths)
        memory = dict(
            h=out.states,
            mask=rnn.lengths_to_mask(source_lengths, source.shape[1]),
            source_lengths=jnp.asarray(source_lengths, jnp.int32),
            s0=jnp.tanh(self.init_proj(out.backward_first)),
        )
        return self.alignment.prepare(memory)

    def init_decoder(self, memory: dict) -> dict:
        """State: s_0 and the target position i = 0."""
        s0 = memory["s0"]
        return dict(s=s0, step=jnp.zeros(s0.shape[:1], jnp.int32))

    def decode_step(self, memory: dict, state: dict, prev: jax.Array):
        """One step: alpha_i from s_{i-1}; c_i;
        s_i = GRU(s_{i-1}, [E y_{i-1}; c_i]); logits from [s_i; E y_{i-1}; c_i]."""
        s_prev = state["s"]
        alpha = self.alignment(s_prev, state["step"], memory)  # [B, T_x]
        c = pooling.weighted_average(alpha, memory["h"])  # [B, 2H]
        y = self.target_embed(prev)  # [B, d_e]
        s = self.decoder(s_prev, jnp.concatenate([y, c], axis=-1))
        logits = self.readout(jnp.concatenate([s, y, c], axis=-1))
        return logits, dict(s=s, step=state["step"] + 1), alpha

    def __call__(self, source: jax.Array, source_lengths: jax.Array, target_in: jax.Array):
        """Teacher forcing: (logits ``[B, T_y, |V_y|]``, alpha ``[B, T_y, T_x]``)."""
        return decode.teacher_force(self, source, source_lengths, target_in)


def loss(model: AttentionEncoderDecoder, batch) -> tuple[jax.Array, dict]:
    """Mean negative log-likelihood per target token, teacher forcing (for :func:`attention_course.train.fit`)."""
    logits, _ = model(batch.source, batch.source_lengths, batch.target_in)
    value = sequence_cross_entropy(logits, batch.target_out, batch.target_mask)
    return value, {"nll": value}
