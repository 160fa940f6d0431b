"""Chapter 01: the encoder–decoder with one fixed vector between the two halves.

The encoder reads the source x_1 .. x_{T_x} with a GRU, h_t = f(x_t, h_{t-1}), and summarises it
as c = q({h_1, .., h_{T_x}}) = h_{T_x}, its last state (taken at each sentence's true length). The
decoder writes the target from c alone, one word at a time:

    s_i = g(y_{i-1}, s_{i-1}, c),        p(y_i | y_<i, x) = softmax(readout(s_i, y_{i-1}, c)).

Two flavours of 2014:

* ``"cho"`` (Cho et al. 2014): s_0 = tanh(c W_s), and c is fed to the decoder at *every* step, both
  into the GRU update and into the readout;
* ``"sutskever"`` (Sutskever, Vinyals & Le 2014): c is only the decoder's initial state, s_0 = c,
  and the decoder never sees it again; the readout uses s_i alone.

``reverse_source=True`` reads each source sentence backwards (its EOS stays last), Sutskever et al.'s
trick: the first target words then sit close to the first source words in time.

Training maximises the sum of log-likelihoods with teacher forcing (:func:`loss`); decoding uses the
shared :mod:`attention_course.decode` (the model has ``encode``, ``init_decoder`` and ``decode_step``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

import jax
import jax.numpy as jnp
from flax import nnx

from attention_course import _checks, decode, rnn
from attention_course.train import sequence_cross_entropy

__all__ = ["EncoderDecoder", "reverse_source_words", "loss", "position_accuracy", "FLAVOURS"]

FLAVOURS = ("cho", "sutskever")


def reverse_source_words(source: jax.Array, lengths: jax.Array) -> jax.Array:
    """Reverse the words of each source sentence, keeping its EOS last and its padding in place.

    ``[a, b, c, EOS, PAD]`` (length 4) becomes ``[c, b, a, EOS, PAD]``.

    Args:
      source: ``[B, T_x]`` token ids, each row ending with EOS at position lengths-1.
      lengths: ``[B]`` true lengths including EOS.
    """
    words = rnn.reverse_padded(source[..., None], lengths - 1)[..., 0]
    return words


class EncoderDecoder(nnx.Module):
    """The fixed-vector encoder–decoder (RNNencdec), in Cho's or Sutskever's flavour.

    Args:
      source_vocab, target_vocab: vocabulary sizes |V_x| and |V_y|.
      embed: embedding size d_e (source and target).
      hidden: GRU size, the same for the encoder and the decoder: n = m = ``hidden``, so c has
        ``hidden`` numbers whatever the sentence's length.
      flavour: ``"cho"`` or ``"sutskever"``.
      reverse_source: read the source backwards (Sutskever et al.'s trick).
    """

    def __init__(self, source_vocab: int, target_vocab: int, *, embed: int = 64, hidden: int = 128,
                 flavour: Literal["cho", "sutskever"] = "cho", reverse_source: bool = False, rngs: nnx.Rngs):
        if flavour not in FLAVOURS:
            raise ValueError(f"flavour: expected one of {FLAVOURS}, got {flavour!r}")
        _checks.positive_ints(source_vocab=source_vocab, target_vocab=target_vocab, embed=embed, hidden=hidden)
        self.flavour = flavour
        self.reverse_source = reverse_source
        self.hidden = hidden
        self.encoder = rnn.GRUEncoder(source_vocab, embed, hidden, rngs=rngs)
        self.target_embed = nnx.Embed(target_vocab, embed, rngs=rngs)
        cho = flavour == "cho"
        self.decoder = rnn.GRU(embed + (hidden if cho else 0), hidden, rngs=rngs)
        self.init_proj = nnx.Linear(hidden, hidden, rngs=rngs) if cho else None
        readout_in = hidden + (hidden + embed if cho else 0)
        self.readout = nnx.Linear(readout_in, target_vocab, rngs=rngs)

    # --- the three methods the shared decoders use -------------------------------------------------
    def encode(self, source: jax.Array, source_lengths: jax.Array) -> dict:
        """source ``[B, T_x]``, lengths ``[B]`` -> {"c": ``[B, hidden]``, ...}.

        c is the one vector; :meth:`memory_from` adds what the decoder
        computes from it once per sentence."""
        if self.reverse_source:
            source = reverse_source_words(source, source_lengths)
        return self.memory_from(self.encoder(source, source_lengths).final)

    def memory_from(self, c: jax.Array) -> dict:
        """The decoder's memory for the vector c ``[B, hidden]``.

        In Cho's flavour c enters every step through the same two products:
        with the GRU's input weights (its share of the gates, c C + b) and with
        the readout's (c C_o + b_o). c is the same at every step, so both are
        computed here, once. (Inside the step they made the train step
        slower: its backward pass then multiplies by c at every position.)
        To change c, build a new memory with this method."""
        if self.flavour != "cho":
            return {"c": c}
        (_, C), (_, C_o) = self._split_inputs(), self._split_readout()
        return {"c": c,
                "c_gates": c @ C + self.decoder.b[...],  # [B, 3 hidden]
                "c_readout": c @ C_o + self.readout.bias[...]}  # [B, |V_y|]

    def _split_inputs(self):
        """The GRU's input weights W = [W_y; C]: the rows that read y and c."""
        W = self.decoder.W[...]
        return W[:-self.hidden], W[-self.hidden:]

    def _split_readout(self):
        """The readout's weights W_o = [W_sy; C_o]: the rows that read [s; y] and c."""
        W = self.readout.kernel[...]
        return W[:-self.hidden], W[-self.hidden:]

    def init_decoder(self, memory: dict) -> jax.Array:
        """s_0: tanh(c W_s + b) for Cho's flavour; c itself for Sutskever's."""
        c = memory["c"]
        return jnp.tanh(self.init_proj(c)) if self.init_proj is not None else c

    def decode_step(self, memory: dict, s: jax.Array, prev: jax.Array):
        """One decoder step: (c, s_{i-1}, y_{i-1}) -> (logits, s_i, None).

        The logits are ``[B, |V_y|]``. Cho's flavour reads [y; c] into the GRU
        and [s; y; c] into the readout; c's share of both products comes from
        the memory (:meth:`memory_from`).

        There is no attention: the third value, the weights, is None."""
        y = self.target_embed(prev)  # [B, d_e]
        if self.flavour == "sutskever":
            s = self.decoder(s, y)
            return self.readout(s), s, None
        W_y, _ = self._split_inputs()
        # the GRU on [y; c]: y W_y + (c C + b)
        s = rnn.gru_cell(s, y, W_y, memory["c_gates"], self.decoder.U[...])
        W_sy, _ = self._split_readout()
        # the readout of [s; y; c]: [s; y] W_sy + (c C_o + b_o)
        logits = jnp.concatenate([s, y], axis=-1) @ W_sy + memory["c_readout"]
        return logits, s, None

    # --- teacher forcing ---------------------------------------------------------------------------
    def __call__(self, source: jax.Array, source_lengths: jax.Array, target_in: jax.Array) -> jax.Array:
        """Logits ``[B, T_y, |V_y|]`` for every target position, given the gold previous words."""
        logits, _ = decode.teacher_force(self, source, source_lengths, target_in)
        return logits


def loss(model: EncoderDecoder, batch) -> tuple[jax.Array, dict]:
    """Mean negative log-likelihood per target token, teacher forcing (for :func:`attention_course.train.fit`)."""
    logits = model(batch.source, batch.source_lengths, batch.target_in)
    value = sequence_cross_entropy(logits, batch.target_out, batch.target_mask)
    return value, {"nll": value}


def position_accuracy(model, pairs, task, *, batch_size: int = 100, edges=None) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-forced accuracy at each target position i (1-based in the prose, 0-based here).

    For every pair the model reads the source and the gold target prefix y_<i and predicts y_i;
    the result is the fraction of sentences whose word at position i is predicted correctly,
    with the number of sentences that have a position i. EOS positions are counted too.

    Returns:
      (accuracy ``[T]``, count ``[T]``) with T the longest target (+ EOS) among ``pairs``.
    """
    from attention_course import tasks

    task = tasks.get_task(task) if isinstance(task, str) else task
    width = max(len(p.target) for p in pairs) + 1
    correct, count = np.zeros(width), np.zeros(width)
    forward = nnx.jit(lambda m, b: jnp.argmax(m(b.source, b.source_lengths, b.target_in), axis=-1))
    for batch, real in tasks.eval_batches(pairs, task, batch_size, edges=edges):
        predicted = np.asarray(forward(model, batch))
        hit = (predicted == batch.target_out) & batch.target_mask & real[:, None]
        n = hit.shape[1]
        correct[:n] += hit.sum(0)
        count[:n] += (batch.target_mask & real[:, None]).sum(0)
    return correct / np.maximum(count, 1), count
