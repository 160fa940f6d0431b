import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import assume, given, settings, strategies as st
from jax.test_util import check_grads

from attention_course import decode, luong, pooling, seq2seq, soft_search, tasks
from toy_models import assert_padding_invariant

# ---------------------------------------------------------------------------------------------
# The paper's equations in plain NumPy, column vectors, one position at a time
# ---------------------------------------------------------------------------------------------


def _f64(*arrays):
    return [np.asarray(a, np.float64) for a in arrays]


def numpy_scores(kind, h, hbar, *params):
    """score(h_t, h-bar_s) of Luong et al. (2015), eq. (8), written with the paper's column matrices."""
    h, hbar = _f64(h, hbar)
    params = _f64(*params)
    out = np.zeros(hbar.shape[:-1])
    for index in np.ndindex(*hbar.shape[:-1]):
        ht, hs = h[index[:-1]], hbar[index]
        if kind == "dot":
            out[index] = ht @ hs
        elif kind == "general":
            out[index] = ht @ params[0] @ hs  # h_t^T W_a h-bar_s, W_a [n, m] in both conventions
        elif kind == "concat":
            Wa, va = params[0].T, params[1]  # [k, n + m], [k]
            out[index] = va @ np.tanh(Wa @ np.concatenate([ht, hs]))
    return out


def numpy_location(h, W_a):
    h, W = _f64(h, W_a)
    Wc = W.T  # [S_max, n], the paper's W_a
    out = np.zeros(h.shape[:-1] + (W.shape[1],))
    for index in np.ndindex(*h.shape[:-1]):
        out[index] = Wc @ h[index]
    return out


def numpy_position(h, W_p, v_p, S):
    h, W, v = _f64(h, W_p, v_p)
    out = np.zeros(h.shape[:-1])
    for index in np.ndindex(*h.shape[:-1]):
        out[index] = S[index] / (1 + np.exp(-(v @ np.tanh(W.T @ h[index]))))
    return out


def numpy_local(scores, mask, center, D, gaussian):
    scores, center = _f64(scores, center)
    out = np.zeros(scores.shape)
    for index in np.ndindex(*scores.shape[:-1]):
        keep = [s for s in range(scores.shape[-1]) if mask[index][s] and abs(s - center[index]) <= D]
        if not keep:
            continue
        e = np.exp(scores[index][keep] - scores[index][keep].max())
        a = e / e.sum()
        if gaussian:
            a = a * np.exp(-((np.array(keep) - center[index]) ** 2) / (2 * (D / 2) ** 2))
        out[index][keep] = a
    return out


def _random(rng, *shapes):
    return [jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in shapes]


@settings(max_examples=12, deadline=None)
@given(st.integers(1, 3), st.integers(1, 7), st.integers(1, 5), st.integers(1, 6), st.integers(1, 4),
       st.integers(0, 999))
def test_scores_match_the_papers_equations(B, S, n, m, k, seed):
    rng = np.random.default_rng(seed)
    h, hn, hm = _random(rng, (B, n), (B, S, n), (B, S, m))
    W_g, W_c, v_c, W_l = _random(rng, (n, m), (n + m, k), (k,), (n, S + 2))
    tol = dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(luong.dot_score(h, hn), numpy_scores("dot", h, hn), **tol)
    np.testing.assert_allclose(luong.general_score(h, hm, W_g), numpy_scores("general", h, hm, W_g), **tol)
    np.testing.assert_allclose(luong.concat_score(h, hm, W_c, v_c), numpy_scores("concat", h, hm, W_c, v_c), **tol)
    np.testing.assert_allclose(luong.location_score(h, W_l), numpy_location(h, W_l), **tol)


def test_concat_is_bahdanaus_score_with_the_current_state():
    rng = np.random.default_rng(3)
    h, hbar, W_a, v_a = _random(rng, (2, 3), (2, 5, 4), (7, 6), (6,))
    np.testing.assert_allclose(luong.concat_score(h, hbar, W_a, v_a),
                               soft_search.additive_score(h, hbar, W_a[:3], W_a[3:], v_a), atol=1e-6)


@pytest.mark.parametrize("kind", ["dot", "general"])
def test_dot_and_general_match_jax_dot_product_attention(kind):
    """With scale 1, jax.nn.dot_product_attention is softmax(q · k) v: our weights, then the context."""
    rng = np.random.default_rng(0)
    B, S, n = 3, 6, 4
    h, hbar, W_a = _random(rng, (B, n), (B, S, n), (n, n))
    lengths = jnp.array([6, 3, 1])
    mask = jnp.arange(S)[None, :] < lengths[:, None]
    e = luong.dot_score(h, hbar) if kind == "dot" else luong.general_score(h, hbar, W_a)
    ours = pooling.weighted_average(pooling.masked_softmax(e, mask), hbar)  # [B, n]
    query = h if kind == "dot" else h @ W_a
    ref = jax.nn.dot_product_attention(query[:, None, None, :], hbar[:, :, None, :], hbar[:, :, None, :],
                                       scale=1.0, mask=mask[:, None, None, :])  # [B, 1, 1, n]
    np.testing.assert_allclose(ours, ref[:, 0, 0], rtol=1e-5, atol=1e-5)


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 3), st.integers(1, 4), st.integers(0, 999))
def test_predicted_position_matches_numpy_and_stays_in_range(B, n, seed):
    rng = np.random.default_rng(seed)
    h, W_p, v_p = _random(rng, (B, n), (n, 5), (5,))
    S = rng.integers(1, 40, size=B)
    p = luong.predicted_position(10 * h, W_p, v_p, jnp.asarray(S))
    np.testing.assert_allclose(p, numpy_position(10 * h, W_p, v_p, S), rtol=1e-4, atol=1e-4)
    assert np.all((np.asarray(p) >= 0) & (np.asarray(p) <= S))


# ---------------------------------------------------------------------------------------------
# local_weights: by hand
# ---------------------------------------------------------------------------------------------


def test_local_weights_by_hand():
    scores = jnp.array([[0.0, 0.0, np.log(2.0), 0.0, 0.0, 0.0]])
    mask = jnp.array([[True, True, True, True, True, False]])
    # center 2, D 1: the window is {1, 2, 3}, softmax of (0, log 2, 0) = (1/4, 1/2, 1/4)
    a = luong.local_weights(scores, mask, jnp.array([2.0]), 1, gaussian=False)
    np.testing.assert_allclose(a, [[0, 0.25, 0.5, 0.25, 0, 0]], atol=1e-6)
    # center 4, D 2: positions 2..6, but 5 is padding and 6 does not exist: {2, 3, 4}
    a = luong.local_weights(scores, mask, jnp.array([4.0]), 2, gaussian=False)
    np.testing.assert_allclose(a, [[0, 0, 0.5, 0.25, 0.25, 0]], atol=1e-6)
    # local-p: center 2.5, D 2, sigma 1: window {1, 2, 3, 4} (0.5 <= s <= 4.5), softmax (1, 2, 1, 1) / 5
    a = luong.local_weights(scores, mask, jnp.array([2.5]), 2, gaussian=True)
    gauss = np.exp(-((np.arange(1, 5) - 2.5) ** 2) / 2)
    np.testing.assert_allclose(a[0, 1:5], np.array([1, 2, 1, 1]) / 5 * gauss, atol=1e-6)
    assert a[0, 0] == 0 and a[0, 5] == 0
    assert float(a.sum()) < 1  # not renormalised after the Gaussian


def test_an_empty_window_gives_zeros_not_nan():
    scores = jnp.array([[1.0, 2.0, 3.0, 4.0, 5.0]])
    mask = jnp.array([[True, True, False, False, False]])
    for gaussian in (False, True):
        a = luong.local_weights(scores, mask, jnp.array([4.0]), 1, gaussian=gaussian)  # window {3, 4}: padding
        np.testing.assert_array_equal(a, np.zeros((1, 5)))
        g = jax.grad(lambda e, c: jnp.sum(luong.local_weights(e, mask, c, 1, gaussian=gaussian) ** 2),
                     argnums=(0, 1))(scores, jnp.array([4.0]))
        assert all(np.all(np.isfinite(np.asarray(x))) for x in g)


def test_window_mask_of_local_m():
    mask = jnp.array([[True] * 6 + [False] * 2])
    got = luong.window_mask(mask, jnp.array([1.0]), 2)
    np.testing.assert_array_equal(got, [[True, True, True, True, False, False, False, False]])


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 9), st.integers(1, 4), st.floats(-3, 12), st.booleans(), st.integers(0, 999))
def test_local_weights_match_numpy(S, D, center, gaussian, seed):
    rng = np.random.default_rng(seed)
    scores = jnp.asarray(5 * rng.normal(size=(2, S)), jnp.float32)
    mask = np.arange(S)[None, :] < rng.integers(1, S + 1, size=(2, 1))
    for value in (center, center / 2):  # an edge exactly on a position: float32 and float64 disagree
        assume(all(abs(abs(s - value) - D) > 1e-4 for s in range(S)))
    c = jnp.array([center, center / 2], jnp.float32)
    got = luong.local_weights(scores, jnp.asarray(mask), c, D, gaussian=gaussian)
    np.testing.assert_allclose(got, numpy_local(scores, mask, c, D, gaussian), rtol=1e-5, atol=1e-6)


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(1)
    h, hbar, W_a, v_a, W_g = _random(rng, (1, 2), (1, 4, 3), (5, 3), (3,), (2, 3))
    mask = jnp.array([[True, True, True, False]])
    fd = dict(order=1, modes=("rev",), atol=5e-2, rtol=5e-2, eps=1e-2)
    check_grads(lambda *a: jnp.sum(jnp.sin(luong.concat_score(*a))), (h, hbar, W_a, v_a), **fd)
    check_grads(lambda *a: jnp.sum(jnp.sin(luong.general_score(*a))), (h, hbar, W_g), **fd)
    # local-p: the gradient reaches the scores and the predicted centre (through the Gaussian)
    W_p, v_p = _random(rng, (2, 3), (3,))

    def local_p(h, W_p, v_p, W_g):
        p = luong.predicted_position(h, W_p, v_p, jnp.array([3]))
        return jnp.sum(jnp.sin(luong.local_weights(luong.general_score(h, hbar, W_g), mask, p, 2, gaussian=True)))

    check_grads(local_p, (h, W_p, v_p, W_g), **fd)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: luong.dot_score(jnp.ones((2, 3)), jnp.ones((2, 5, 4))), "hbar"),
        (lambda: luong.dot_score(jnp.ones((2, 3)), jnp.ones((3, 5, 3))), "hbar"),
        (lambda: luong.dot_score(jnp.ones(()), jnp.ones((5, 3))), "h"),
        (lambda: luong.general_score(jnp.ones((2, 3)), jnp.ones((2, 5, 4)), jnp.ones((4, 3))), "W_a"),
        (lambda: luong.concat_score(jnp.ones((2, 3)), jnp.ones((2, 5, 4)), jnp.ones((6, 2)), jnp.ones(2)), "W_a"),
        (lambda: luong.concat_score(jnp.ones((2, 3)), jnp.ones((2, 5, 4)), jnp.ones((7, 2)), jnp.ones((2, 1))), "v_a"),
        (lambda: luong.location_score(jnp.ones((2, 3)), jnp.ones((4, 9))), "W_a"),
        (lambda: luong.predicted_position(jnp.ones((2, 3)), jnp.ones((3, 4)), jnp.ones(4), jnp.ones(3, int)),
         "source_lengths"),
        (lambda: luong.predicted_position(jnp.ones((2, 3)), jnp.ones((2, 4)), jnp.ones(4), jnp.ones(2, int)), "W_p"),
        (lambda: luong.local_weights(jnp.ones((2, 5)), jnp.ones((2, 4), bool), jnp.ones(2), 2, gaussian=False),
         "mask"),
        (lambda: luong.local_weights(jnp.ones((2, 5)), jnp.ones((2, 5)), jnp.ones(2), 2, gaussian=False), "mask"),
        (lambda: luong.local_weights(jnp.ones((2, 5)), jnp.ones((2, 5), bool), jnp.ones(3), 2, gaussian=False),
         "center"),
        (lambda: luong.local_weights(jnp.ones((2, 5)), jnp.ones((2, 5), bool), jnp.ones(2), 0, gaussian=False), "D"),
        (lambda: luong.attentional_vector(jnp.ones((2, 4)), jnp.ones((2, 3)), jnp.ones((7, 4))), "W_c"),
        (lambda: luong.LuongAttention(4, 4, score="cosine", rngs=nnx.Rngs(0)), "score"),
        (lambda: luong.LuongAttention(4, 4, window="local", rngs=nnx.Rngs(0)), "window"),
        (lambda: luong.LuongAttention(4, 6, score="dot", rngs=nnx.Rngs(0)), "dot"),
        (lambda: luong.LuongAttention(4, 4, score="location", rngs=nnx.Rngs(0)), "max_source"),
        (lambda: luong.luong(5, 5, hidden=0, rngs=nnx.Rngs(0)), "hidden"),
        (lambda: luong.LuongEncoderDecoder(5, 5, luong.LuongAttention(4, 4, rngs=nnx.Rngs(0)), hidden=3,
                                           rngs=nnx.Rngs(0)), "attention"),
    ],
)
def test_bad_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_location_score_refuses_a_source_longer_than_max_source():
    model = luong.luong(len(TASK.source_vocab), len(TASK.target_vocab), score="location", max_source=5,
                        embed=4, hidden=3, rngs=nnx.Rngs(0))
    batch = tasks.make_batch(tasks.generate(TASK, 2, seed=0, min_length=6, max_length=7), TASK)
    with pytest.raises(ValueError, match="max_source"):
        model(batch.source, batch.source_lengths, batch.target_in)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------

TASK = tasks.get_task("translate")
VARIANTS = [("dot", "global", True), ("general", "global", True), ("concat", "global", True),
            ("location", "global", True), ("general", "local-m", True), ("general", "local-p", True),
            ("general", "global", False), ("concat", "local-p", False)]


def small_model(score="general", window="global", feeding=True, seed=0, D=2):
    return luong.luong(len(TASK.source_vocab), len(TASK.target_vocab), score=score, window=window,
                       input_feeding=feeding, D=D, embed=6, hidden=4, k=5, max_source=40, rngs=nnx.Rngs(seed))


def test_decode_step_follows_the_equations():
    model = small_model("general", "local-p")
    batch = tasks.make_batch(tasks.generate(TASK, 2, seed=0, min_length=4, max_length=7), TASK)
    memory = model.encode(batch.source, batch.source_lengths)
    state = model.init_decoder(memory)
    state = dict(state, htilde=jax.random.normal(jax.random.PRNGKey(0), state["htilde"].shape))
    prev = jnp.asarray(batch.target_in[:, 0])
    logits, new, a = model.decode_step(memory, state, prev)
    att = model.alignment
    h = model.decoder(state["s"], jnp.concatenate([model.target_embed(prev), state["htilde"]], -1))
    p = luong.predicted_position(h, att.W_p[...], att.v_p[...], memory["source_lengths"])
    a_ref = luong.local_weights(luong.general_score(h, memory["h"], att.W_a[...]), memory["mask"], p, 2, gaussian=True)
    c = jnp.einsum("bs,bsm->bm", a_ref, memory["h"])
    htilde = jnp.tanh(jnp.concatenate([c, h], -1) @ model.W_c[...])
    np.testing.assert_allclose(new["s"], h, atol=1e-5)
    np.testing.assert_allclose(a, a_ref, atol=1e-6)
    np.testing.assert_allclose(new["htilde"], htilde, atol=1e-5)
    np.testing.assert_allclose(logits, model.readout(htilde), atol=1e-5)
    np.testing.assert_allclose(new["p"], p, atol=1e-5)


def test_without_input_feeding_the_gru_reads_only_the_word():
    model = small_model(feeding=False)
    assert model.decoder.in_features == 6
    assert small_model(feeding=True).decoder.in_features == 6 + 8


@pytest.mark.parametrize("variant", VARIANTS, ids=["-".join(map(str, v)) for v in VARIANTS])
def test_padding_does_not_change_the_model(variant):
    model = small_model(*variant)
    pairs = tasks.generate(TASK, 3, seed=4, min_length=3, max_length=9)
    assert_padding_invariant(model, TASK, pairs, 5)


@pytest.mark.parametrize("variant", VARIANTS[3:6], ids=["location", "local-m", "local-p"])
def test_teacher_forcing_equals_stepping_the_decoder(variant):
    model = small_model(*variant)
    batch = tasks.make_batch(tasks.generate(TASK, 3, seed=1, min_length=3, max_length=8), TASK)
    logits, alpha = model(batch.source, batch.source_lengths, batch.target_in)
    _, alpha2, p = luong.teacher_force_positions(model, batch.source, batch.source_lengths, batch.target_in)
    memory = model.encode(batch.source, batch.source_lengths)
    state = model.init_decoder(memory)
    for t in range(batch.target_in.shape[1]):
        step_logits, state, a = model.decode_step(memory, state, jnp.asarray(batch.target_in[:, t]))
        np.testing.assert_allclose(logits[:, t], step_logits, atol=1e-5)
        np.testing.assert_allclose(alpha[:, t], a, atol=1e-6)
        np.testing.assert_allclose(p[:, t], state["p"], atol=1e-5)
    np.testing.assert_allclose(alpha, alpha2, atol=1e-6)
    if variant[1] == "local-m":
        np.testing.assert_allclose(p[0], np.arange(batch.target_in.shape[1]))


@pytest.mark.parametrize("variant", [VARIANTS[0], VARIANTS[5]], ids=["dot", "local-p"])
def test_beam_of_one_is_greedy_and_attention_is_returned(variant):
    model = small_model(*variant, seed=3)
    batch = tasks.make_batch(tasks.generate(TASK, 4, seed=2, min_length=3, max_length=8), TASK)
    g = decode.greedy_decode(model, batch.source, batch.source_lengths, max_length=12)
    b = decode.beam_search(model, batch.source, batch.source_lengths, beam_size=1, max_length=12)
    np.testing.assert_array_equal(g.tokens, b.tokens)
    np.testing.assert_allclose(g.attention, b.attention, atol=1e-6)
    np.testing.assert_allclose(g.log_prob, b.log_prob, atol=1e-5)
    assert g.attention.shape == (4, 12, batch.source.shape[1])


def test_model_gradient_matches_finite_differences():
    """The whole model's loss along one random direction in parameter space (central differences)."""
    model = small_model("concat", "local-p", D=1)
    batch = tasks.make_batch(tasks.generate(TASK, 2, seed=7, min_length=2, max_length=4), TASK)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def loss(p, b):
        return seq2seq.loss(nnx.merge(graphdef, p, rest), b)[0]

    grads = jax.jit(jax.grad(loss))(params, batch)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(0), len(leaves))
    direction = treedef.unflatten([jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])
    eps = 1e-2
    shifted = [jax.tree_util.tree_map(lambda x, v: x + sign * eps * v, params, direction) for sign in (1, -1)]
    numeric = (loss(shifted[0], batch) - loss(shifted[1], batch)) / (2 * eps)
    analytic = sum(jnp.vdot(g, v) for g, v in zip(jax.tree_util.tree_leaves(grads),
                                                   jax.tree_util.tree_leaves(direction)))
    np.testing.assert_allclose(float(analytic), float(numeric), rtol=2e-2, atol=1e-3)


def test_luong_is_the_shared_encoder_decoder_with_one_step_rewritten():
    assert issubclass(luong.LuongEncoderDecoder, seq2seq.AttentionEncoderDecoder)
    assert luong.LuongEncoderDecoder.encode is seq2seq.AttentionEncoderDecoder.encode
    assert luong.LuongEncoderDecoder.__call__ is seq2seq.AttentionEncoderDecoder.__call__
    assert luong.LuongEncoderDecoder.decode_step is not seq2seq.AttentionEncoderDecoder.decode_step


def test_window_figure_fits_the_column_and_draws_the_window():
    from attention_course import plots

    weights = np.random.default_rng(0).random((6, 5))
    fig = plots.window_heatmaps([("global", weights, None), ("local-p", weights, np.linspace(0, 4, 6))],
                                list("abcde"), list("ABCDEF"), D=1)
    assert fig.get_size_inches()[0] <= plots.BOOK_WIDTH
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 2 and len(images[1].lines) == 3  # p_t and the window's two edges
    with pytest.raises(ValueError, match="panels"):
        plots.window_heatmaps([], ["a"], ["b"], D=1)
