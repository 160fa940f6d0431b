"""Tiny decodable models for the tests of train and decode (not part of the course's package)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

import jax
import jax.numpy as jnp
from flax import nnx

from attention_course import decode, pooling, rnn
from attention_course.train import sequence_cross_entropy


class ToyAttention(nnx.Module):
    """GRU encoder, GRU decoder, dot-product attention over the encoder states: decodable."""

    def __init__(self, vocab: int = 7, hidden: int = 8, *, attention: bool = True, seed: int = 0):
        rngs = nnx.Rngs(seed)
        self.use_attention = attention
        self.encoder = rnn.GRUEncoder(vocab, hidden, hidden, rngs=rngs)
        self.embed = nnx.Embed(vocab, hidden, rngs=rngs)
        self.cell = rnn.GRU(2 * hidden, hidden, rngs=rngs)
        self.out = nnx.Linear(2 * hidden, vocab, rngs=rngs)

    def encode(self, source, source_lengths):
        enc = self.encoder(source, source_lengths)
        return dict(h=enc.states, final=enc.final, mask=rnn.lengths_to_mask(source_lengths, source.shape[1]))

    def init_decoder(self, memory):
        return memory["final"]

    def decode_step(self, memory, s, prev):
        if self.use_attention:
            e = jnp.einsum("bh,bth->bt", s, memory["h"])
            alpha = pooling.masked_softmax(e, memory["mask"])
            c = pooling.weighted_average(alpha, memory["h"])
        else:
            alpha, c = None, memory["final"]
        s = self.cell(s, jnp.concatenate([self.embed(prev), c], axis=-1))
        return self.out(jnp.concatenate([s, c], axis=-1)), s, alpha

    def __call__(self, source, source_lengths, target_in):
        return decode.teacher_force(self, source, source_lengths, target_in)[0]


def toy_loss(model, batch):
    logits = model(batch.source, batch.source_lengths, batch.target_in)
    loss = sequence_cross_entropy(logits, batch.target_out, batch.target_mask)
    return loss, {"loss": loss}


class ToyBatch(NamedTuple):
    source: np.ndarray
    source_mask: np.ndarray
    source_lengths: np.ndarray
    target_in: np.ndarray
    target_out: np.ndarray
    target_mask: np.ndarray
    target_lengths: np.ndarray


def toy_batch(sequences, width: int, *, reverse: bool = False) -> ToyBatch:
    """A copy (or reverse) batch from lists of word ids (>= 3), padded to ``width`` (+1 for EOS)."""
    B = len(sequences)
    src = np.zeros((B, width + 1), np.int32)
    tin = np.zeros((B, width + 1), np.int32)
    tout = np.zeros((B, width + 1), np.int32)
    for b, seq in enumerate(sequences):
        tgt = list(seq[::-1]) if reverse else list(seq)
        src[b, : len(seq) + 1] = list(seq) + [2]
        tin[b, : len(seq) + 1] = [1] + tgt
        tout[b, : len(seq) + 1] = tgt + [2]
    lengths = np.array([len(s) + 1 for s in sequences], np.int32)
    mask = np.arange(width + 1)[None] < lengths[:, None]
    return ToyBatch(src, mask, lengths, tin, tout, mask, lengths)


def assert_padding_invariant(model, task, pairs, extra: int) -> None:
    """Pad a batch by ``extra`` more positions on both sides: real logits (and attention) must not change.

    Works for models whose ``__call__`` returns logits, or (logits, alpha); padded source columns
    of alpha must be exactly 0.
    """
    from attention_course import tasks

    tight = tasks.make_batch(pairs, task)
    wide = tasks.make_batch(pairs, task, source_width=tight.source.shape[1] + extra,
                            target_width=tight.target_in.shape[1] + extra)

    def run(batch):
        out = model(batch.source, batch.source_lengths, batch.target_in)
        return out if isinstance(out, tuple) else (out, None)

    (a, alpha_a), (b, alpha_b) = run(tight), run(wide)
    mask, T_x = tight.target_mask, tight.source.shape[1]
    np.testing.assert_allclose(np.asarray(b)[:, : mask.shape[1]][mask], np.asarray(a)[mask], atol=1e-5)
    if alpha_a is not None:
        np.testing.assert_allclose(np.asarray(alpha_b)[:, : mask.shape[1], :T_x][mask], np.asarray(alpha_a)[mask],
                                   atol=1e-6)
        assert np.all(np.asarray(alpha_b)[:, :, T_x:] == 0)


def assert_beam_of_one_is_greedy(model, task, *, n: int = 4, max_length: int = 12):
    """Beam search of width 1 is greedy decoding: same tokens, same attention. Returns the greedy result."""
    from attention_course import decode, tasks

    batch = tasks.make_batch(tasks.generate(task, n, seed=2, min_length=3, max_length=8), task)
    g = decode.greedy_decode(model, batch.source, batch.source_lengths, max_length=max_length)
    b = decode.beam_search(model, batch.source, batch.source_lengths, beam_size=1, max_length=max_length)
    np.testing.assert_array_equal(g.tokens, b.tokens)
    np.testing.assert_allclose(g.attention, b.attention, atol=1e-6)
    np.testing.assert_allclose(g.log_prob, b.log_prob, atol=1e-5)
    assert g.attention.shape == (n, max_length, batch.source.shape[1])
    return g
