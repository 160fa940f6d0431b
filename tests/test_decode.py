import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_course import decode
from toy_models import ToyAttention

SOURCE = jnp.array([[3, 4, 5, 6, 2], [6, 5, 2, 0, 0], [4, 2, 0, 0, 0]])
LENGTHS = jnp.array([5, 3, 2])


def teacher_forced_log_prob(model, source, lengths, tokens):
    """log p(tokens | source) by stepping the decoder in plain Python (no jit, no search)."""
    memory = model.encode(source, lengths)
    state = model.init_decoder(memory)
    prev = jnp.full((source.shape[0],), decode.BOS_ID)
    total = np.zeros(source.shape[0])
    done = np.zeros(source.shape[0], bool)
    for t in range(tokens.shape[1]):
        logits, state, _ = model.decode_step(memory, state, prev)
        logits = logits.at[:, decode.PAD_ID].set(-jnp.inf).at[:, decode.BOS_ID].set(-jnp.inf)
        logp = np.asarray(jax.nn.log_softmax(logits, -1))
        tok = np.asarray(tokens[:, t])
        total += np.where(done, 0.0, logp[np.arange(len(tok)), tok])
        done |= tok == decode.EOS_ID
        prev = jnp.asarray(tok)
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_of_one_is_greedy(seed):
    model = ToyAttention(seed=seed)
    g = decode.greedy_decode(model, SOURCE, LENGTHS, max_length=7)
    b = decode.beam_search(model, SOURCE, LENGTHS, beam_size=1, max_length=7)
    np.testing.assert_array_equal(g.tokens, b.tokens)
    np.testing.assert_allclose(g.log_prob, b.log_prob, atol=1e-5)
    np.testing.assert_allclose(g.attention, b.attention, atol=1e-6)


def test_greedy_log_prob_and_stopping():
    model = ToyAttention(seed=4)
    g = decode.greedy_decode(model, SOURCE, LENGTHS, max_length=8)
    tokens = np.asarray(g.tokens)
    np.testing.assert_allclose(g.log_prob, teacher_forced_log_prob(model, SOURCE, LENGTHS, g.tokens), atol=1e-4)
    for row, n in zip(tokens, np.asarray(g.lengths)):
        assert decode.PAD_ID not in row[:n] and decode.BOS_ID not in row
        assert np.all(row[n:] == decode.PAD_ID)
        assert n == 8 or row[n - 1] == decode.EOS_ID


def test_attention_rows_are_distributions_over_the_real_source():
    model = ToyAttention(seed=5)
    g = decode.greedy_decode(model, SOURCE, LENGTHS, max_length=6)
    att = np.asarray(g.attention)  # [B, L, T_x]
    for b, (n, src_len) in enumerate(zip(np.asarray(g.lengths), np.asarray(LENGTHS))):
        np.testing.assert_allclose(att[b, :n].sum(-1), 1.0, atol=1e-5)
        assert np.all(att[b, :, src_len:] == 0) and np.all(att[b, n:] == 0)


def test_model_without_attention_returns_none():
    model = ToyAttention(attention=False)
    assert decode.greedy_decode(model, SOURCE, LENGTHS, max_length=4).attention is None
    assert decode.beam_search(model, SOURCE, LENGTHS, beam_size=2, max_length=4).attention is None


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_wide_beam_is_exhaustive_search(seed):
    """Vocabulary {PAD, BOS, EOS, a, b}, at most 3 tokens: 15 possible outputs, enumerated by brute force."""
    model = ToyAttention(vocab=5, hidden=6, seed=seed)
    source, lengths = jnp.array([[3, 4, 2]]), jnp.array([3])
    L = 3
    candidates = []
    for n in range(1, L + 1):
        for words in itertools.product([3, 4], repeat=n - 1):
            candidates.append(list(words) + [decode.EOS_ID])
    candidates += [list(w) for w in itertools.product([3, 4], repeat=L)]  # no EOS within the limit
    assert len(candidates) == 15
    padded = jnp.array([c + [decode.PAD_ID] * (L - len(c)) for c in candidates])
    scores = teacher_forced_log_prob(model, jnp.repeat(source, 15, 0), jnp.repeat(lengths, 15), padded)
    best = candidates[int(np.argmax(scores))]
    result, (beams, beam_scores) = decode.beam_search(model, source, lengths, beam_size=9, max_length=L,
                                                      return_beams=True)
    got = [int(t) for t in np.asarray(result.tokens[0])][: int(result.lengths[0])]
    assert got == best
    np.testing.assert_allclose(result.log_prob[0], scores.max(), atol=1e-4)
    # The beams are the 9 best of the 15 complete hypotheses (with only 3 tokens, every survivor is complete).
    np.testing.assert_allclose(np.sort(np.asarray(beam_scores[0]))[::-1], np.sort(scores)[::-1][:9], atol=1e-4)


def test_beam_search_never_scores_below_greedy():
    model = ToyAttention(seed=6)
    g = decode.greedy_decode(model, SOURCE, LENGTHS, max_length=6)
    b = decode.beam_search(model, SOURCE, LENGTHS, beam_size=4, max_length=6)
    assert np.all(np.asarray(b.log_prob) >= np.asarray(g.log_prob) - 1e-5)


def test_length_penalty():
    np.testing.assert_allclose(decode.length_penalty(jnp.array([1.0, 7.0]), 1.0), [1.0, 2.0])
    np.testing.assert_allclose(decode.length_penalty(jnp.array([3.0]), 0.0), [1.0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(source=jnp.ones((3,), int)), "source"),
        (dict(source_lengths=jnp.array([1, 2])), "source_lengths"),
        (dict(source_lengths=jnp.array([0, 2, 2])), r"source_lengths: every length must be in \[1, 5\]"),
        (dict(max_length=0), "max_length"),
    ],
)
def test_bad_input(kwargs, match):
    args = dict(source=SOURCE, source_lengths=LENGTHS, max_length=4) | kwargs
    with pytest.raises(ValueError, match=match):
        decode.greedy_decode(ToyAttention(), args["source"], args["source_lengths"], max_length=args["max_length"])


def test_bad_beam_and_model():
    with pytest.raises(ValueError, match="beam_size"):
        decode.beam_search(ToyAttention(), SOURCE, LENGTHS, beam_size=0, max_length=3)
    with pytest.raises(ValueError, match="model"):
        decode.greedy_decode(object(), SOURCE, LENGTHS, max_length=3)


def test_translate_returns_pairs_in_order_with_cropped_attention():
    from attention_course import tasks

    task = tasks.get_task("copy")
    pairs = tasks.generate(task, 7, seed=0, min_length=1, max_length=15)
    model = ToyAttention(vocab=len(task.source_vocab), seed=1)
    out = decode.translate(model, pairs, task, batch_size=3, edges=(5, 10, 15))
    assert out.references == [list(p.target) for p in pairs]
    assert list(out.source_lengths) == [len(p.source) for p in pairs]
    for pair, hyp, att in zip(pairs, out.hypotheses, out.attention):
        assert att.shape[1] == len(pair.source) + 1
        assert att.shape[0] in (len(hyp) + 1, len(hyp))  # EOS row, unless the cap stopped it
        np.testing.assert_allclose(att.sum(-1), 1.0, atol=1e-5)
    # The same sentence decoded alone gives the same output: batching and bucketing do not matter.
    alone = decode.translate(model, pairs[3:4], task, batch_size=1, edges=(5, 10, 15))
    assert alone.hypotheses[0] == out.hypotheses[3]
    beam = decode.translate(model, pairs, task, batch_size=3, beam_size=2)
    assert len(beam.hypotheses) == 7


def test_teacher_force_returns_step_by_step_logits_and_attention():
    model = ToyAttention(seed=7)
    target_in = jnp.array([[1, 3, 4], [1, 5, 2], [1, 6, 0]])
    logits, attention = decode.teacher_force(model, SOURCE, LENGTHS, target_in)
    assert logits.shape == (3, 3, 7) and attention.shape == (3, 3, 5)
    memory = model.encode(SOURCE, LENGTHS)
    state = model.init_decoder(memory)
    for i in range(3):
        step_logits, state, alpha = model.decode_step(memory, state, target_in[:, i])
        np.testing.assert_allclose(logits[:, i], step_logits, atol=1e-5)
        np.testing.assert_allclose(attention[:, i], alpha, atol=1e-6)
    assert decode.teacher_force(ToyAttention(attention=False), SOURCE, LENGTHS, target_in)[1] is None
    # a precomputed memory is used as given: the same one gives the same result, an edited one is obeyed
    same = decode.teacher_force(model, SOURCE, LENGTHS, target_in, memory=memory)
    np.testing.assert_allclose(same[0], logits, atol=1e-6)
    only_first = dict(memory, mask=memory["mask"] & (jnp.arange(SOURCE.shape[1]) == 0))
    np.testing.assert_allclose(decode.teacher_force(model, SOURCE, LENGTHS, target_in, memory=only_first)[1][..., 0],
                               1.0, atol=1e-6)
    with pytest.raises(ValueError, match="target_in"):
        decode.teacher_force(model, SOURCE, LENGTHS, target_in[:2])
