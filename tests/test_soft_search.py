import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings, strategies as st

from attention_course import decode, pooling, seq2seq, soft_search, tasks, train
from toy_models import assert_beam_of_one_is_greedy, assert_padding_invariant


def numpy_additive_score(s, h, W_a, U_a, v_a):
    """The paper's equation in plain NumPy, one source position at a time: e_j = v_a^T tanh(W_a s + U_a h_j).

    Written with column vectors, as in the paper, so the matrices are the transposes of the code's.
    """
    s, h, W, U, v = (np.asarray(a, np.float64) for a in (s, h, W_a, U_a, v_a))
    Wc, Uc = W.T, U.T  # [k, n], [k, m]: the paper's matrices
    out = np.zeros(h.shape[:-1])
    for index in np.ndindex(*h.shape[:-1]):
        out[index] = v @ np.tanh(Wc @ s[index[:-1]] + Uc @ h[index])
    return out


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 3), st.integers(1, 7), st.integers(1, 5), st.integers(1, 6), st.integers(1, 4), st.integers(0, 999))
def test_additive_score_matches_numpy(B, T, n, m, k, seed):
    rng = np.random.default_rng(seed)
    args = [rng.normal(size=shape).astype(np.float32) for shape in ((B, n), (B, T, m), (n, k), (m, k), (k,))]
    np.testing.assert_allclose(soft_search.additive_score(*map(jnp.asarray, args)), numpy_additive_score(*args),
                               rtol=1e-4, atol=1e-5)


def test_precomputing_U_h_gives_the_same_scores():
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    s, h = jax.random.normal(keys[0], (2, 3)), jax.random.normal(keys[1], (2, 4, 5))
    W, U, v = jax.random.normal(keys[2], (3, 6)), jax.random.normal(keys[3], (5, 6)), jax.random.normal(keys[4], (6,))
    np.testing.assert_allclose(soft_search.additive_score(s, h, W, U, v),
                               soft_search.additive_score_projected(s, h @ U, W, v), atol=1e-6)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(1)
    args = [jnp.asarray(rng.normal(size=shape), jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
            for shape in ((1, 2), (1, 3, 2), (2, 3), (2, 3), (3,))]
    from jax.test_util import check_grads

    check_grads(lambda *a: jnp.sum(jnp.sin(soft_search.additive_score(*a))), args, order=1, modes=("rev",),
                atol=5e-2, rtol=5e-2, eps=1e-2)


def test_alignment_masks_padding_and_fully_masked_rows_are_zero():
    align = soft_search.AdditiveAlignment(3, 4, 5, rngs=nnx.Rngs(0))
    h = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 4))
    mask = jnp.array([[True, True, True, False, False, False], [False] * 6])
    memory = align.prepare(dict(h=h, mask=mask))
    alpha = align(jnp.ones((2, 3)), jnp.zeros((2,), jnp.int32), memory)
    np.testing.assert_allclose(alpha[0].sum(), 1.0, atol=1e-6)
    assert np.all(np.asarray(alpha[0, 3:]) == 0) and np.all(np.asarray(alpha[1]) == 0)
    expected = pooling.masked_softmax(soft_search.additive_score(jnp.ones((2, 3)), h, align.W_a[...], align.U_a[...],
                                                                 align.v_a[...]), mask)
    np.testing.assert_allclose(alpha, expected, atol=1e-6)


@pytest.mark.parametrize(
    "shapes, match",
    [
        (((2, 3), (2, 4, 5), (3, 6), (5, 6), (6,)), None),
        (((2, 3), (3, 4, 5), (3, 6), (5, 6), (6,)), "h"),
        (((2, 3), (2, 4, 5), (4, 6), (5, 6), (6,)), "W_a"),
        (((2, 3), (2, 4, 5), (3, 6), (4, 6), (6,)), "U_a"),
        (((2, 3), (2, 4, 5), (3, 6), (5, 6), (6, 1)), "v_a"),
        (((), (2, 4, 5), (3, 6), (5, 6), (6,)), "s"),
    ],
)
def test_additive_score_validates_shapes(shapes, match):
    args = [jnp.ones(shape) for shape in shapes]
    if match is None:
        assert soft_search.additive_score(*args).shape == (2, 4)
    else:
        with pytest.raises(ValueError, match=match):
            soft_search.additive_score(*args)


TASK = tasks.get_task("translate")


def small_model(seed=0):
    return soft_search.rnnsearch(len(TASK.source_vocab), len(TASK.target_vocab), embed=8, hidden=8, attention=6,
                                 rngs=nnx.Rngs(seed))


@settings(max_examples=3, deadline=None)
@given(st.integers(1, 6), st.integers(0, 1000))
def test_padding_does_not_change_the_model(extra, seed):
    model = small_model()
    pairs = tasks.generate(TASK, 3, seed=seed, min_length=3, max_length=9)
    assert_padding_invariant(model, TASK, pairs, extra)


def test_beam_of_one_is_greedy_and_attention_is_returned():
    assert_beam_of_one_is_greedy(small_model(seed=3), TASK)


def test_wide_beam_finds_the_exhaustive_optimum():
    """A tiny RNNsearch over {PAD, BOS, EOS, a, b}: every output of at most 3 tokens, scored by teacher forcing."""
    model = soft_search.rnnsearch(5, 5, embed=4, hidden=4, attention=3, rngs=nnx.Rngs(7))
    source, lengths = jnp.array([[3, 4, 3, 2]]), jnp.array([4])
    L = 3
    candidates = [list(w) + [decode.EOS_ID] for n in range(L) for w in itertools.product([3, 4], repeat=n)]
    candidates += [list(w) for w in itertools.product([3, 4], repeat=L)]
    target_out = jnp.array([c + [decode.PAD_ID] * (L - len(c)) for c in candidates])
    target_in = jnp.concatenate([jnp.full((len(candidates), 1), decode.BOS_ID), target_out[:, :-1]], axis=1)
    logits, _ = model(jnp.repeat(source, len(candidates), 0), jnp.repeat(lengths, len(candidates)), target_in)
    logits = logits.at[..., decode.PAD_ID].set(-jnp.inf).at[..., decode.BOS_ID].set(-jnp.inf)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), target_out[..., None], -1)[..., 0]
    real = jnp.array([[t < len(c) for t in range(L)] for c in candidates])
    scores = np.asarray(jnp.sum(jnp.where(real, logp, 0.0), axis=1))
    best = candidates[int(np.argmax(scores))]
    result = decode.beam_search(model, source, lengths, beam_size=9, max_length=L)
    assert [int(t) for t in np.asarray(result.tokens[0])][: int(result.lengths[0])] == best
    np.testing.assert_allclose(result.log_prob[0], scores.max(), atol=1e-4)


def test_learns_to_align_a_tiny_corpus():
    """Trained briefly on short sentences, the attention argmax lands on the gold source word most of the time."""
    from attention_course import metrics

    pairs = tasks.generate(TASK, 3000, seed=0, min_length=3, max_length=8)
    model = soft_search.rnnsearch(len(TASK.source_vocab), len(TASK.target_vocab), embed=16, hidden=16, attention=16,
                                  rngs=nnx.Rngs(0))
    train.fit(model, seq2seq.loss, tasks.batches(pairs, TASK, 64, seed=0), steps=300, learning_rate=1e-2,
              progress=False)
    test = tasks.generate(TASK, 50, seed=5, min_length=3, max_length=8, exclude=pairs)
    batch = tasks.make_batch(test, TASK)
    _, alpha = model(batch.source, batch.source_lengths, batch.target_in)
    links = [metrics.attention_to_links(np.asarray(alpha[k]), len(p.target), len(p.source)) for k, p in enumerate(test)]
    assert metrics.alignment_error_rate(links, [p.alignment for p in test]) < 0.3


def test_bad_sizes():
    with pytest.raises(ValueError, match="k"):
        soft_search.AdditiveAlignment(3, 4, 0, rngs=nnx.Rngs(0))
