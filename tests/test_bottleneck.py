import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings, strategies as st

from attention_course import bottleneck, decode, tasks, train
from toy_models import assert_padding_invariant

TASK = tasks.get_task("translate")
VX, VY = len(TASK.source_vocab), len(TASK.target_vocab)


def small(flavour="cho", reverse=False, hidden=16, seed=0):
    return bottleneck.EncoderDecoder(VX, VY, embed=8, hidden=hidden, flavour=flavour, reverse_source=reverse,
                                     rngs=nnx.Rngs(seed))


def a_batch(n=4, seed=0, max_length=8, **widths):
    pairs = tasks.generate(TASK, n, seed=seed, min_length=3, max_length=max_length)
    return tasks.make_batch(pairs, TASK, **widths)


@pytest.mark.parametrize("flavour", bottleneck.FLAVOURS)
@pytest.mark.parametrize("reverse", [False, True])
def test_shapes(flavour, reverse):
    model, batch = small(flavour, reverse), a_batch()
    logits = model(batch.source, batch.source_lengths, batch.target_in)
    assert logits.shape == batch.target_in.shape + (VY,)
    memory = model.encode(batch.source, batch.source_lengths)
    assert memory["c"].shape == (4, 16)
    s0 = model.init_decoder(memory)
    out, s1, attention = model.decode_step(memory, s0, jnp.asarray(batch.target_in[:, 0]))
    assert out.shape == (4, VY) and s1.shape == s0.shape and attention is None


def test_the_two_flavours_differ_in_how_they_use_c():
    cho, sut = small("cho"), small("sutskever")
    assert cho.decoder.in_features == 8 + 16 and sut.decoder.in_features == 8
    assert cho.readout.in_features == 16 + 16 + 8 and sut.readout.in_features == 16
    # Sutskever: s_0 is c itself; Cho: s_0 = tanh(c W_s + b).
    batch = a_batch()
    m = sut.encode(batch.source, batch.source_lengths)
    np.testing.assert_array_equal(sut.init_decoder(m), m["c"])
    m = cho.encode(batch.source, batch.source_lengths)
    np.testing.assert_allclose(cho.init_decoder(m), jnp.tanh(cho.init_proj(m["c"])), atol=1e-6)


def test_cho_step_is_the_gru_on_y_c_and_the_readout_of_s_y_c():
    """decode_step adds c's two products from the memory: the same numbers as the layers
    themselves on [y; c] and [s; y; c], also for a memory built from another c."""
    model, batch = small("cho"), a_batch()
    memory = model.encode(batch.source, batch.source_lengths)
    prev = jnp.asarray(batch.target_in[:, 1])
    s = jax.random.normal(jax.random.key(3), (4, 16))
    for c in (memory["c"], memory["c"][::-1] * 2.0):
        logits, s1, _ = model.decode_step(model.memory_from(c), s, prev)
        y = model.target_embed(prev)
        expected = model.decoder(s, jnp.concatenate([y, c], axis=-1))
        np.testing.assert_allclose(s1, expected, atol=1e-5)
        np.testing.assert_allclose(logits, model.readout(jnp.concatenate([expected, y, c], axis=-1)),
                                   atol=1e-5)


def test_teacher_forcing_equals_stepping_the_decoder():
    model, batch = small(), a_batch()
    logits = model(batch.source, batch.source_lengths, batch.target_in)
    memory = model.encode(batch.source, batch.source_lengths)
    s = model.init_decoder(memory)
    for i in range(batch.target_in.shape[1]):
        step_logits, s, _ = model.decode_step(memory, s, jnp.asarray(batch.target_in[:, i]))
        np.testing.assert_allclose(step_logits, logits[:, i], atol=1e-5)


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 6), st.sampled_from(bottleneck.FLAVOURS), st.booleans(), st.integers(0, 1000))
def test_padding_does_not_change_the_output(extra, flavour, reverse, seed):
    model = small(flavour, reverse)
    pairs = tasks.generate(TASK, 3, seed=seed, min_length=3, max_length=9)
    assert_padding_invariant(model, TASK, pairs, extra)


def test_reverse_source_words_keeps_eos_last_and_padding_in_place():
    source = jnp.array([[5, 6, 7, 2, 0], [8, 2, 0, 0, 0], [2, 0, 0, 0, 0]])
    out = bottleneck.reverse_source_words(source, jnp.array([4, 2, 1]))
    np.testing.assert_array_equal(out, [[7, 6, 5, 2, 0], [8, 2, 0, 0, 0], [2, 0, 0, 0, 0]])


def test_reversed_model_reads_the_reversed_sentence():
    """A model with reverse_source=True gives the same c as a plain model fed the reversed words."""
    plain, rev = small(seed=3), small(reverse=True, seed=3)
    batch = a_batch()
    words = [TASK.source_vocab.decode(row) for row in batch.source]
    flipped = tasks.make_batch([tasks.Pair(tuple(w[::-1]), ("chat",), ((0, 0),)) for w in words], TASK)
    c_rev = rev.encode(batch.source, batch.source_lengths)["c"]
    c_plain = plain.encode(jnp.asarray(flipped.source), jnp.asarray(flipped.source_lengths))["c"]
    np.testing.assert_allclose(c_rev, c_plain, atol=1e-6)
    assert not np.allclose(c_rev, plain.encode(batch.source, batch.source_lengths)["c"])


@pytest.mark.parametrize("flavour", bottleneck.FLAVOURS)
def test_memorises_eight_pairs(flavour):
    """A tiny overfit: 8 sentence pairs, learnt by heart, then decoded greedily word for word."""
    pairs = tasks.generate(TASK, 8, seed=11, min_length=3, max_length=6)
    batch = tasks.make_batch(pairs, TASK)
    model = bottleneck.EncoderDecoder(VX, VY, embed=32, hidden=64, flavour=flavour, rngs=nnx.Rngs(0))
    history = train.fit(model, bottleneck.loss, itertools.repeat(batch), steps=250, learning_rate=1e-2,
                        progress=False, log_every=50)
    assert history.loss[-1] < 0.05
    result = decode.greedy_decode(model, batch.source, batch.source_lengths, max_length=batch.target_out.shape[1])
    for k, pair in enumerate(pairs):
        assert TASK.target_vocab.decode(np.asarray(result.tokens[k])) == list(pair.target)
    accuracy, count = bottleneck.position_accuracy(model, pairs, TASK, batch_size=3)
    assert np.all(accuracy[count > 0] == 1.0)
    assert count[0] == 8 and count.sum() == sum(len(p.target) + 1 for p in pairs)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(flavour="bahdanau"), "flavour"), (dict(hidden=0), "hidden"), (dict(embed=-1), "embed"),
     (dict(source_vocab=0), "source_vocab")],
)
def test_bad_arguments(kwargs, match):
    args = dict(source_vocab=VX, target_vocab=VY, rngs=nnx.Rngs(0)) | kwargs
    with pytest.raises(ValueError, match=match):
        bottleneck.EncoderDecoder(args.pop("source_vocab"), args.pop("target_vocab"), **args)


def test_bad_input_shapes():
    model, batch = small(), a_batch()
    with pytest.raises(ValueError, match="target_in"):
        model(batch.source, batch.source_lengths, batch.target_in[0])
    with pytest.raises(ValueError, match="lengths"):
        model(batch.source, batch.source_lengths[:2], batch.target_in)
