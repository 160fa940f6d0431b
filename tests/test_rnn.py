import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings, strategies as st

from attention_course import rnn


def test_gru_cell_matches_flax_gru_cell():
    gru = rnn.GRU(5, 7, rngs=nnx.Rngs(0))
    ref = nnx.GRUCell(5, 7, rngs=nnx.Rngs(1))
    ref.dense_i.kernel[...] = gru.W[...]
    ref.dense_i.bias[...] = gru.b[...] + 0.1
    gru.b[...] = gru.b[...] + 0.1
    ref.dense_h.kernel[...] = gru.U[...]
    h = jax.random.normal(jax.random.PRNGKey(2), (3, 7))
    x = jax.random.normal(jax.random.PRNGKey(3), (3, 5))
    expected, _ = ref(h, x)
    np.testing.assert_allclose(gru(h, x), expected, atol=1e-5)


def test_scan_matches_a_step_by_step_loop():
    gru = rnn.GRU(4, 6, rngs=nnx.Rngs(0))
    xs = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 4))
    states, final = gru.scan(xs, jnp.array([5, 5]))
    h = jnp.zeros((2, 6))
    for t in range(5):
        h = gru(h, xs[:, t])
        np.testing.assert_allclose(states[:, t], h, atol=1e-5)
    np.testing.assert_allclose(final, h, atol=1e-5)


def test_reverse_padded():
    x = jnp.array([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8]])[..., None]
    out = rnn.reverse_padded(x, jnp.array([3, 5]))[..., 0]
    np.testing.assert_array_equal(out, [[3, 2, 1, 0, 0], [8, 7, 6, 5, 4]])
    np.testing.assert_array_equal(rnn.reverse_padded(rnn.reverse_padded(x, jnp.array([3, 5])), jnp.array([3, 5])), x)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=3), st.integers(0, 4), st.booleans(), st.integers(0, 10**6))
def test_padding_never_changes_real_positions(lengths, extra, bidirectional, seed):
    """Add padding (with garbage token ids in it) and compare: real positions and finals are unchanged."""
    enc = rnn.GRUEncoder(11, 4, 5, bidirectional=bidirectional, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(seed)
    B, T = len(lengths), max(lengths)
    tokens = rng.integers(3, 11, size=(B, T))
    lengths = np.array(lengths)
    tokens = np.where(np.arange(T)[None] < lengths[:, None], tokens, 0)
    garbage = rng.integers(0, 11, size=(B, T + extra))
    padded = np.where(np.arange(T + extra)[None] < lengths[:, None], np.pad(tokens, ((0, 0), (0, extra))), garbage)
    a = enc(jnp.asarray(tokens), jnp.asarray(lengths))
    b = enc(jnp.asarray(padded), jnp.asarray(lengths))
    mask = np.arange(T)[None] < lengths[:, None]
    np.testing.assert_allclose(np.asarray(b.states)[:, :T][mask], np.asarray(a.states)[mask], atol=1e-5)
    np.testing.assert_allclose(b.final, a.final, atol=1e-5)
    assert np.all(np.asarray(b.states)[:, T:] == 0) and np.all(np.asarray(a.states)[~mask] == 0)


def test_final_states_are_taken_at_the_true_length():
    enc = rnn.GRUEncoder(9, 4, 3, bidirectional=True, rngs=nnx.Rngs(0))
    tokens = jnp.array([[3, 4, 5, 6, 2], [7, 2, 0, 0, 0]])
    lengths = jnp.array([5, 2])
    out = enc(tokens, lengths)
    H = 3
    for b, n in enumerate([5, 2]):
        np.testing.assert_allclose(out.final[b, :H], out.states[b, n - 1, :H], atol=1e-6)  # forward, last word
        np.testing.assert_allclose(out.final[b, H:], out.states[b, 0, H:], atol=1e-6)  # backward, first word
    np.testing.assert_allclose(out.backward_first, out.final[:, H:])
    np.testing.assert_allclose(rnn.state_at_length(out.states, lengths)[:, :H], out.final[:, :H], atol=1e-6)
    np.testing.assert_array_equal(rnn.state_at_length(jnp.arange(10.0).reshape(2, 5, 1), lengths), [[4.0], [6.0]])
    with pytest.raises(ValueError, match="lengths"):
        rnn.state_at_length(out.states, jnp.array([6, 1]))


def test_backward_direction_reads_each_sentence_from_its_end():
    enc = rnn.GRUEncoder(9, 4, 3, bidirectional=True, rngs=nnx.Rngs(0))
    tokens = jnp.array([[3, 4, 5, 2, 0, 0]])
    out = enc(tokens, jnp.array([4]))
    x = enc.embed(tokens[:, :4][:, ::-1])
    ref, _ = enc.backward.scan(x, jnp.array([4]))
    np.testing.assert_allclose(out.states[0, :4, 3:], ref[0, ::-1], atol=1e-6)


def test_same_seed_same_parameters():
    a = rnn.GRUEncoder(9, 4, 3, rngs=nnx.Rngs(7))
    b = rnn.GRUEncoder(9, 4, 3, rngs=nnx.Rngs(7))
    c = rnn.GRUEncoder(9, 4, 3, rngs=nnx.Rngs(8))
    np.testing.assert_array_equal(a.forward.U[...], b.forward.U[...])
    assert not np.allclose(a.forward.U[...], c.forward.U[...])


def test_encoder_runs_under_jit_with_traced_lengths():
    enc = rnn.GRUEncoder(9, 4, 3, bidirectional=True, rngs=nnx.Rngs(0))
    f = nnx.jit(lambda m, t, n: m(t, n).states)
    tokens, lengths = jnp.array([[3, 4, 2, 0]]), jnp.array([3])
    np.testing.assert_allclose(f(enc, tokens, lengths), enc(tokens, lengths).states, atol=1e-6)


@pytest.mark.parametrize(
    "tokens, lengths, match",
    [
        (jnp.ones((2, 4), int), jnp.array([0, 2]), r"lengths: every length must be in \[1, 4\]"),
        (jnp.ones((2, 4), int), jnp.array([5, 2]), "lengths"),
        (jnp.ones((2, 4), int), jnp.array([1, 2, 3]), r"lengths: expected shape \(2,\)"),
        (jnp.ones((2, 4), int), jnp.array([1.0, 2.0]), "integers"),
        (jnp.ones((4,), int), jnp.array([1]), "tokens"),
    ],
)
def test_bad_input_raises(tokens, lengths, match):
    enc = rnn.GRUEncoder(9, 4, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=match):
        enc(tokens, lengths)


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="hidden"):
        rnn.GRUEncoder(9, 4, 0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="xs"):
        rnn.GRU(3, 4, rngs=nnx.Rngs(0)).scan(jnp.ones((1, 2, 5)), jnp.array([2]))
