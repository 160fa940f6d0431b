import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings, strategies as st

from attention_course import decode, diagonal, seq2seq, tasks, train
from toy_models import assert_padding_invariant


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.booleans(), st.sampled_from([0.0, 0.3, 1.0, 2.5, 10.0]))
def test_weight_properties(T_y, T_x, scaled, width):
    w = np.asarray(diagonal.diagonal_weights(T_y, T_x, scaled=scaled, width=width))
    assert w.shape == (T_y, T_x)
    assert np.all(w >= 0) and np.allclose(w.sum(1), 1.0, atol=1e-5)
    mu = np.asarray(diagonal.cursor(np.arange(T_y), T_y, T_x, scaled=scaled))
    assert np.all(np.diff(mu) >= 0) and mu[0] == 0 and mu.max() <= T_x - 1
    if scaled and T_y > 1:
        assert mu[-1] == pytest.approx(T_x - 1)  # the cursors finish together
    peak = w.argmax(1)
    assert np.all(np.diff(peak) >= 0)  # the mass moves monotonically
    # and is centred on the cursor: within half a position, up to float32's rounding of mu (a tie
    # at mu = 8.5, computed as 8.500002, can peak at 8 or 9)
    assert np.all(np.abs(peak - mu) <= 0.5 + 8 * np.finfo(np.float32).eps * max(T_x, 1))
    if width == 0:
        assert np.all((w == 0) | (w == 1))


def test_small_cases_by_hand():
    np.testing.assert_array_equal(diagonal.diagonal_weights(3, 3, scaled=False), np.eye(3))
    # synchronous cursor on a shorter source: it waits on the last position (EOS)
    np.testing.assert_array_equal(diagonal.diagonal_weights(4, 2, scaled=False), [[1, 0], [0, 1], [0, 1], [0, 1]])
    # scaled: T_x = 5, T_y = 3 -> mu = 0, 2, 4
    np.testing.assert_array_equal(diagonal.diagonal_weights(3, 5, scaled=True), np.eye(5)[[0, 2, 4]])
    # Gaussian band: weights proportional to exp(-(j - mu)^2 / (2 sigma^2)) over the real positions
    row = np.asarray(diagonal.diagonal_weights(3, 5, scaled=True, width=1.0))[1]
    expected = np.exp(-((np.arange(5) - 2.0) ** 2) / 2)
    np.testing.assert_allclose(row, expected / expected.sum(), rtol=1e-5)


def test_batched_weights_respect_each_length_and_padding():
    w = np.asarray(diagonal.batched_diagonal_weights(jnp.array([3, 5]), jnp.array([4, 2]), T_y=6, T_x=7, width=0.7))
    assert w.shape == (2, 6, 7)
    np.testing.assert_allclose(w[0, :3, :4], diagonal.diagonal_weights(3, 4, width=0.7), atol=1e-6)
    np.testing.assert_allclose(w[1, :5, :2], diagonal.diagonal_weights(5, 2, width=0.7), atol=1e-6)
    assert np.all(w[0, 3:] == 0) and np.all(w[0, :, 4:] == 0) and np.all(w[1, :, 2:] == 0)


def test_gold_offsets_and_coverage():
    copy = tasks.generate("copy", 50, seed=0, min_length=1, max_length=20)
    np.testing.assert_allclose(diagonal.gold_offsets(copy), 0.0, atol=1e-5)
    assert diagonal.coverage(copy, radius=1e-4) == 1.0
    reverse = tasks.generate("reverse", 50, seed=0, min_length=10, max_length=20)
    assert diagonal.coverage(reverse, radius=1) < 0.3
    pair = tasks.Pair(("a", "b"), ("b", "a"), ((0, 1), (1, 0)))  # T_x = T_y = 3: mu = 0, 1
    np.testing.assert_allclose(diagonal.gold_offsets([pair]), [1.0, -1.0])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: diagonal.diagonal_weights(0, 3), "target_length"),
        (lambda: diagonal.diagonal_weights(3, 2.5), "source_length"),
        (lambda: diagonal.diagonal_weights(3, 3, width=-1.0), "width"),
        (lambda: diagonal.batched_diagonal_weights(jnp.array([3, 0]), jnp.array([2, 2]), T_y=4, T_x=4), "target_lengths"),
        (lambda: diagonal.batched_diagonal_weights(jnp.array([3]), jnp.array([5]), T_y=4, T_x=4), "source_lengths"),
        (lambda: diagonal.batched_diagonal_weights(jnp.array([3]), jnp.array([2, 2]), T_y=4, T_x=4), "shapes"),
        (lambda: diagonal.DiagonalAlignment(ratio=0.0), "ratio"),
        (lambda: diagonal.length_ratio([]), "pairs"),
        (lambda: diagonal.coverage([], radius=1), "pairs"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def model_for(task, *, scaled=True, width=0.0, hidden=16, seed=0, ratio=1.0):
    return seq2seq.AttentionEncoderDecoder(
        len(task.source_vocab), len(task.target_vocab),
        diagonal.DiagonalAlignment(scaled=scaled, width=width, ratio=ratio), embed=8, hidden=hidden,
        rngs=nnx.Rngs(seed))


def test_model_shapes_and_the_weights_it_uses():
    task = tasks.get_task("translate")
    pairs = tasks.generate(task, 4, seed=0, min_length=3, max_length=9)
    batch = tasks.make_batch(pairs, task)
    model = model_for(task, width=1.0)
    logits, alpha = model(batch.source, batch.source_lengths, batch.target_in)
    B, T_y = batch.target_in.shape
    assert logits.shape == (B, T_y, len(task.target_vocab)) and alpha.shape == (B, T_y, batch.source.shape[1])
    # with ratio 1 the model's weights are exactly the batched diagonal weights with T_y = T_x
    lengths = batch.source_lengths
    expected = diagonal.batched_diagonal_weights(lengths, lengths, T_y=max(T_y, int(lengths.max())),
                                                 T_x=batch.source.shape[1], width=1.0)[:, :T_y]
    rows = np.arange(T_y)[None, :] < lengths[:, None]
    np.testing.assert_allclose(np.asarray(alpha)[rows], np.asarray(expected)[rows], atol=1e-6)
    assert np.all(np.asarray(alpha)[~np.asarray(batch.source_mask)[:, None, :].repeat(T_y, 1)] == 0)


@settings(max_examples=4, deadline=None)
@given(st.integers(0, 5), st.sampled_from([0.0, 1.0]), st.integers(0, 100))
def test_padding_does_not_change_the_output(extra, width, seed):
    task = tasks.get_task("translate")
    model = model_for(task, width=width, ratio=1.04)
    pairs = tasks.generate(task, 3, seed=seed, min_length=3, max_length=9)
    assert_padding_invariant(model, task, pairs, extra)


def test_decoders_return_the_fixed_weights():
    task = tasks.get_task("copy")
    model = model_for(task, scaled=False)
    batch = tasks.make_batch(tasks.generate(task, 3, seed=1, min_length=2, max_length=6), task)
    result = decode.greedy_decode(model, batch.source, batch.source_lengths, max_length=8)
    att = np.asarray(result.attention)
    for b, n in enumerate(np.asarray(result.lengths)):
        src = int(batch.source_lengths[b])
        np.testing.assert_array_equal(att[b, :n, :src], diagonal.diagonal_weights(int(n), src, scaled=False))


def test_learns_to_copy_through_the_diagonal():
    """With the cursor on the right word, copying is easy: a short training run copies unseen sentences."""
    task = tasks.get_task("copy")
    pairs = tasks.generate(task, 2000, seed=0, min_length=1, max_length=12)
    model = model_for(task, scaled=False, hidden=24)
    train.fit(model, seq2seq.loss, tasks.batches(pairs, task, 32, seed=0), steps=150, learning_rate=1e-2,
              progress=False)
    test = tasks.generate(task, 20, seed=99, min_length=12, max_length=20, exclude=pairs)  # longer than training
    out = decode.translate(model, test, task, batch_size=20)
    assert np.mean([h == r for h, r in zip(out.hypotheses, out.references)]) >= 0.9
