import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from attention_course.pooling import masked_softmax, weighted_average


def test_matches_jax_softmax_where_rows_have_a_true_entry():
    key = jax.random.PRNGKey(0)
    scores = jax.random.normal(key, (4, 6, 9)) * 5
    mask = jax.random.bernoulli(jax.random.PRNGKey(1), 0.6, (4, 6, 9)).at[..., 0].set(True)
    ours = masked_softmax(scores, mask)
    ref = jax.nn.softmax(scores, axis=-1, where=mask)
    np.testing.assert_allclose(ours, jnp.where(mask, ref, 0.0), atol=1e-6)


def test_no_mask_is_plain_softmax():
    scores = jax.random.normal(jax.random.PRNGKey(2), (3, 5))
    np.testing.assert_allclose(masked_softmax(scores), jax.nn.softmax(scores), atol=1e-6)


def test_fully_masked_row_gives_zero_weights_zero_context_and_finite_gradients():
    scores = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = jnp.array([[True, False, True], [False, False, False]])
    values = jnp.arange(6.0).reshape(1, 3, 2).repeat(2, axis=0)
    alpha = masked_softmax(scores, mask)
    assert np.all(np.asarray(alpha[1]) == 0.0)
    np.testing.assert_allclose(alpha[0].sum(), 1.0, atol=1e-6)
    c = weighted_average(alpha, values)
    assert np.all(np.asarray(c[1]) == 0.0)

    def f(s):
        return jnp.sum(weighted_average(masked_softmax(s, mask), values) ** 2)

    g = jax.grad(f)(scores)
    assert np.all(np.isfinite(np.asarray(g)))
    assert np.all(np.asarray(g)[~np.asarray(mask)] == 0.0)


def test_large_scores_do_not_overflow():
    scores = jnp.array([[1e4, 1e4 + 1.0, -1e4]])
    alpha = masked_softmax(scores, jnp.array([[True, True, False]]))
    np.testing.assert_allclose(alpha, [[1 / (1 + np.e), np.e / (1 + np.e), 0.0]], rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 7)),
               elements=st.floats(-30, 30, width=32)),
    st.data(),
)
def test_property_rows_are_distributions_over_the_mask(scores, data):
    mask = data.draw(hnp.arrays(np.bool_, scores.shape))
    alpha = np.asarray(masked_softmax(jnp.asarray(scores), jnp.asarray(mask)))
    assert np.all(np.isfinite(alpha)) and np.all(alpha >= 0)
    assert np.all(alpha[~mask] == 0)
    sums = alpha.sum(-1)
    np.testing.assert_allclose(sums, mask.any(-1).astype(np.float32), atol=1e-5)


def test_attention_matches_jax_dot_product_attention():
    # softmax(q k^T / sqrt(d)) v with a key padding mask, against the library's implementation.
    B, Tq, Tk, d = 2, 3, 5, 4
    ks = jax.random.split(jax.random.PRNGKey(3), 3)
    q, k, v = (jax.random.normal(kk, (B, T, d)) for kk, T in zip(ks, (Tq, Tk, Tk)))
    lengths = jnp.array([5, 2])
    key_mask = jnp.arange(Tk)[None, :] < lengths[:, None]  # [B, Tk]
    scores = jnp.einsum("bqd,bkd->bqk", q, k) / jnp.sqrt(d)
    ours = weighted_average(masked_softmax(scores, key_mask[:, None, :]), v)
    ref = jax.nn.dot_product_attention(q[:, :, None], k[:, :, None], v[:, :, None],
                                       mask=key_mask[:, None, None, :])[:, :, 0]
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_weighted_average_single_query_and_many_queries():
    w = jnp.array([[0.2, 0.8, 0.0]])  # [1, 3]
    v = jnp.array([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])  # [1, 3, 2]
    np.testing.assert_allclose(weighted_average(w, v), [[0.2, 0.8]])
    np.testing.assert_allclose(weighted_average(w[:, None, :].repeat(2, 1), v), [[[0.2, 0.8]] * 2])


@pytest.mark.parametrize(
    "scores, mask, match",
    [
        (jnp.ones((2, 3)), jnp.ones((2, 4), bool), "mask"),
        (jnp.ones((2, 3)), jnp.ones((2, 3)), "boolean"),
        (jnp.float32(1.0), None, "scores"),
    ],
)
def test_masked_softmax_rejects_bad_input(scores, mask, match):
    with pytest.raises(ValueError, match=match):
        masked_softmax(scores, mask)


@pytest.mark.parametrize(
    "w_shape, v_shape",
    [((2, 3), (2, 4, 5)), ((2, 3), (3,)), ((2, 3), (5, 3, 4)), ((2, 2, 3), (3, 3, 4)), ((3,), (2, 3, 4, 5))],
)
def test_weighted_average_rejects_bad_shapes(w_shape, v_shape):
    with pytest.raises(ValueError):
        weighted_average(jnp.ones(w_shape), jnp.ones(v_shape))
