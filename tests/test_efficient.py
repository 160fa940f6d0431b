"""Tests of chapter 07's module: exact blockwise attention, linear and local attention, ring attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_course import efficient, self_attention

ATOL = 1e-5


def _normal(seed, shape):
    # NumPy's generator: jax.random would compile a program for every new shape
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _bernoulli(seed, p, shape):
    return jnp.asarray(np.random.default_rng(seed).random(shape) < p)


def _qkv(seed, lead, T, S, d, d_v=None):
    return (_normal([seed, 0], (*lead, T, d)), _normal([seed, 1], (*lead, S, d)),
            _normal([seed, 2], (*lead, S, d if d_v is None else d_v)))


def _heads(x):  # [B, N, T, H] -> jax.nn's [B, T, N, H]
    return jnp.swapaxes(x, 1, 2)


def _reference(q, k, v, mask=None, is_causal=False, local_window_size=None):
    """jax.nn.dot_product_attention on our [B, N, T, d] layout."""
    out = jax.jit(jax.nn.dot_product_attention, static_argnames=("is_causal", "local_window_size"))(
        _heads(q), _heads(k), _heads(v), mask=mask, is_causal=is_causal, local_window_size=local_window_size)
    return _heads(out)


def _grads(fn, q, k, v, seed=7):
    cot = _normal(seed, (*q.shape[:-1], v.shape[-1]))
    return jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v) * cot), argnums=(0, 1, 2)))(q, k, v)


def _close(a, b, atol=ATOL):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=0)


# ------------------------------------------------------------------ blockwise attention

@pytest.mark.parametrize("block_size", [1, 5, 8, 64])  # 8 divides n = 24, 5 does not
def test_blockwise_equals_jax_nn_values_and_gradients(block_size):
    q, k, v = _qkv(0, (2, 3), 24, 24, 8)
    fn = jax.jit(lambda q, k, v: efficient.blockwise_attention(q, k, v, block_size=block_size))
    _close(fn(q, k, v), _reference(q, k, v))
    for a, b in zip(_grads(fn, q, k, v), _grads(_reference, q, k, v)):
        _close(a, b)


@pytest.mark.parametrize("block_size", [7])
def test_blockwise_padding_mask_equals_jax_nn(block_size):
    q, k, v = _qkv(1, (2, 2), 10, 24, 8)
    lengths = jnp.array([24, 13])
    mask = (jnp.arange(24)[None, :] < lengths[:, None])[:, None, None, :]  # [B, 1, 1, S]
    fn = lambda q, k, v: efficient.blockwise_attention(q, k, v, mask, block_size=block_size)
    ref = lambda q, k, v: _reference(q, k, v, mask=mask)
    _close(jax.jit(fn)(q, k, v), ref(q, k, v))
    for a, b in zip(_grads(fn, q, k, v), _grads(ref, q, k, v)):
        _close(a, b)


@pytest.mark.parametrize("block_size", [5])
def test_blockwise_causal_equals_jax_nn(block_size):
    q, k, v = _qkv(2, (1, 2), 18, 18, 8)
    causal_mask = self_attention.causal_mask(18)
    for fn in (lambda q, k, v: efficient.blockwise_attention(q, k, v, block_size=block_size, causal=True),
               lambda q, k, v: efficient.blockwise_attention(q, k, v, causal_mask, block_size=block_size)):
        ref = lambda q, k, v: _reference(q, k, v, is_causal=True)
        _close(jax.jit(fn)(q, k, v), ref(q, k, v))
        for a, b in zip(_grads(fn, q, k, v), _grads(ref, q, k, v)):
            _close(a, b)


@pytest.mark.parametrize("causal", [False, True])
def test_blockwise_key_lengths_equal_jax_nn_sequence_lengths(causal):
    q, k, v = _qkv(21, (3, 2), 20, 20, 8)  # [B, H, T, d]
    lengths = jnp.array([20, 11, 1])
    fn = lambda q, k, v: efficient.blockwise_attention(q, k, v, block_size=6, causal=causal, key_lengths=lengths)
    ref = lambda q, k, v: _heads(jax.nn.dot_product_attention(
        _heads(q), _heads(k), _heads(v), is_causal=causal, key_value_seq_lengths=lengths))
    _close(jax.jit(fn)(q, k, v), ref(q, k, v))
    for a, b in zip(_grads(fn, q, k, v), _grads(ref, q, k, v)):
        _close(a, b)


@settings(max_examples=5, deadline=None)
@given(T=st.integers(1, 9), S=st.integers(1, 11), block_size=st.integers(1, 12), causal=st.booleans(),
       seed=st.integers(0, 2**16))
def test_blockwise_key_lengths_property_equal_a_dense_padding_mask(T, S, block_size, causal, seed):
    if causal:
        S = T
    q, k, v = _qkv(seed, (3,), T, S, 4)
    lengths = jnp.asarray(np.random.default_rng(seed).integers(0, S + 1, 3))
    mask = (jnp.arange(S)[None, :] < lengths[:, None])[:, None, :]  # [B, 1, S]
    out = efficient.blockwise_attention(q, k, v, block_size=block_size, causal=causal, key_lengths=lengths)
    dense = efficient.blockwise_attention(q, k, v, mask, block_size=block_size, causal=causal)
    _close(out, dense)  # a row with no key (length 0) gets zeros in both


def test_blockwise_key_lengths_need_no_more_memory_than_no_mask():
    """Compiled memory (XLA's analysis), B = 4, H = 8, T = S = 1024, forward and gradient."""
    B, H, T, d = 4, 8, 1024, 64
    x = jax.ShapeDtypeStruct((B, H, T, d), jnp.float32)

    def temp(fn, *extra):
        forward = efficient.compiled_memory(fn, x, x, x, *extra)["temp"]
        loss = lambda *args: jnp.sum(fn(*args))
        training = efficient.compiled_memory(jax.grad(loss, argnums=(0, 1, 2)), x, x, x, *extra)["temp"]
        return forward, training

    none = temp(lambda q, k, v: efficient.blockwise_attention(q, k, v, block_size=128))
    lengths = temp(lambda q, k, v, n: efficient.blockwise_attention(q, k, v, block_size=128, key_lengths=n),
                   jax.ShapeDtypeStruct((B,), jnp.int32))
    causal = temp(lambda q, k, v: efficient.blockwise_attention(q, k, v, block_size=128, causal=True))
    dense = temp(lambda q, k, v, m: efficient.blockwise_attention(q, k, v, m, block_size=128),
                 jax.ShapeDtypeStruct((T, T), jnp.bool_))
    # the same, up to a few scalars (under 1 KiB of 49 MiB); a dense [T, S] mask costs 30 MiB more
    assert lengths[0] <= none[0] + 1024 and lengths[1] <= none[1] + 1024, (lengths, none)
    assert causal[0] <= none[0] + 1024 and causal[1] <= none[1] + 1024, (causal, none)
    assert dense[0] > 1.2 * none[0], (dense, none)  # the measurement sees a [B, H, T, S] mask


def test_blockwise_causal_skips_the_blocks_above_the_diagonal():
    """Causal: query blocks under lax.map, and a lax.cond that skips each key block after the query
    block's last query, in the forward pass and in the gradient; without causal, no cond at all."""
    q = jnp.ones((1, 64, 8))
    causal = lambda q: efficient.blockwise_attention(q, q, q, block_size=16, causal=True)
    full = lambda q: efficient.blockwise_attention(q, q, q, block_size=16)
    assert "cond[" in str(jax.make_jaxpr(causal)(q)) and "cond[" not in str(jax.make_jaxpr(full)(q))
    assert str(jax.make_jaxpr(jax.grad(lambda q: jnp.sum(causal(q))))(q)).count("cond[") >= 2


def test_blockwise_fully_masked_rows_give_zeros_like_chapter_06():
    q, k, v = _qkv(3, (2,), 6, 9, 4, d_v=3)
    mask = _bernoulli(4, 0.5, (2, 6, 9)).at[:, 2, :].set(False)
    fn = lambda q, k, v: efficient.blockwise_attention(q, k, v, mask, block_size=4)
    ref = lambda q, k, v: self_attention.scaled_dot_product_attention(q, k, v, mask)[0]
    out = jax.jit(fn)(q, k, v)
    assert np.all(np.asarray(out[:, 2]) == 0.0)
    _close(out, ref(q, k, v))
    for a, b in zip(_grads(fn, q, k, v), _grads(ref, q, k, v)):
        assert np.all(np.isfinite(np.asarray(a)))
        _close(a, b)


def test_blockwise_broadcasts_leading_axes():
    q, _, _ = _qkv(5, (2, 3), 5, 7, 4)
    _, k, v = _qkv(6, (3,), 5, 7, 4)
    _close(jax.jit(lambda q, k, v: efficient.blockwise_attention(q, k, v, block_size=3))(q, k, v),
           jax.jit(efficient.materialised_attention)(q, k, v))


@settings(max_examples=5, deadline=None)
@given(T=st.integers(1, 9), S=st.integers(1, 11), d=st.integers(1, 5), block_size=st.integers(1, 12),
       mask_kind=st.sampled_from(["none", "keys", "full"]), seed=st.integers(0, 2**16))
def test_blockwise_property_equals_scaled_dot_product_attention(T, S, d, block_size, mask_kind, seed):
    q, k, v = _qkv(seed, (2,), T, S, d, d_v=3)
    mask = {"none": None, "keys": _bernoulli(seed + 1, 0.6, (2, 1, S)),
            "full": _bernoulli(seed + 1, 0.6, (2, T, S))}[mask_kind]
    out = jax.jit(lambda q, k, v, mask: efficient.blockwise_attention(q, k, v, mask, block_size=block_size))(
        q, k, v, mask)
    assert out.shape == (2, T, 3)
    _close(out, jax.jit(efficient.materialised_attention)(q, k, v, mask))


def test_online_softmax_update_two_blocks_equal_one():
    scores = _normal(8, (3, 10))
    v = _normal(9, (10, 2))
    state = (jnp.full((3,), -jnp.inf), jnp.zeros(3), jnp.zeros((3, 2)))
    state = efficient.online_softmax_update(*state, scores[:, :6], v[:6])
    m, l, acc = efficient.online_softmax_update(*state, scores[:, 6:], v[6:])
    _close(acc / l[:, None], jax.nn.softmax(scores, axis=-1) @ v)
    _close(m, scores.max(axis=-1))


# ------------------------------------------------------------------ memory

def _temp(fn, n, d=16, grad=False):
    if grad:
        f = fn
        fn = lambda q, k, v: jax.grad(lambda q, k, v: jnp.sum(f(q, k, v)), argnums=(0, 1, 2))(q, k, v)
    return efficient.compiled_memory(fn, (n, d), (n, d), (n, d))["temp"]


def test_blockwise_memory_grows_linearly_and_materialised_quadratically():
    blockwise = lambda q, k, v: efficient.blockwise_attention(q, k, v, block_size=128)
    for grad in (False, True):
        growth = _temp(blockwise, 2048, grad=grad) / _temp(blockwise, 512, grad=grad)
        assert growth <= 5, (grad, growth)
    growth = _temp(efficient.materialised_attention, 2048, grad=True) / _temp(
        efficient.materialised_attention, 512, grad=True)
    assert growth >= 12, growth


def test_compiled_memory_allocates_nothing_big():
    # n = 65,536: the analysis of the materialised version is known without running it.
    n = 65_536
    stats = efficient.compiled_memory(lambda q, k, v: efficient.blockwise_attention(q, k, v, block_size=1024),
                                      (n, 64), (n, 64), (n, 64))
    assert stats["argument"] == 3 * n * 64 * 4
    assert stats["temp"] < 2**30


# ------------------------------------------------------------------ linear attention

@pytest.mark.parametrize("feature_map", [efficient.elu_plus_one, jax.nn.softplus])
def test_linear_parallel_equals_recurrent(feature_map):
    q, k, v = _qkv(10, (2, 3), 15, 15, 6, d_v=4)
    parallel = efficient.linear_attention(q, k, v, causal=True, feature_map=feature_map)
    recurrent, (state, z) = efficient.linear_attention_recurrent(q, k, v, feature_map=feature_map,
                                                                 return_state=True)
    _close(parallel, recurrent)
    assert state.shape == (2, 3, 6, 4) and z.shape == (2, 3, 6)
    # the last causal output is the non-causal output
    _close(parallel[..., -1, :], efficient.linear_attention(q, k, v, causal=False, feature_map=feature_map)[..., -1, :])


def test_linear_attention_equals_its_definition():
    q, k, v = _qkv(11, (2,), 5, 7, 3, d_v=2)
    phi_q, phi_k = efficient.elu_plus_one(q), efficient.elu_plus_one(k)
    a = jnp.einsum("btd,bsd->bts", phi_q, phi_k)
    expected = jnp.einsum("bts,bse->bte", a, v) / (a.sum(-1, keepdims=True) + 1e-6)
    _close(efficient.linear_attention(q, k, v, causal=False), expected)


@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_key_lengths_drop_the_padding(causal):
    q, k, v = _qkv(22, (3, 2), 9, 9, 4)  # [B, H, T, d]
    lengths = jnp.array([9, 4, 1])
    out = efficient.linear_attention(q, k, v, causal=causal, key_lengths=lengths)
    for b, n in enumerate(lengths.tolist()):  # the same as the sequence cut to its real keys
        if causal:  # the real queries see only real keys
            _close(out[b, :, :n], efficient.linear_attention(q[b, :, :n], k[b, :, :n], v[b, :, :n], causal=True))
        else:
            _close(out[b], efficient.linear_attention(q[b], k[b, :, :n], v[b, :, :n], causal=False))


def test_linear_attention_step():
    q, k, v = _qkv(12, (), 1, 1, 3, d_v=2)
    state, z = jnp.ones((3, 2)), jnp.ones(3)
    state2, z2, out = efficient.linear_attention_step(state, z, q[0], k[0], v[0])
    phi_k = efficient.elu_plus_one(k[0])
    _close(state2, state + jnp.outer(phi_k, v[0]))
    _close(z2, z + phi_k)
    phi_q = efficient.elu_plus_one(q[0])
    _close(out, phi_q @ state2 / (phi_q @ z2 + 1e-6))


# ------------------------------------------------------------------ sliding window

@pytest.mark.parametrize("window", [1, 4, 5, 40])  # 4 divides T = 12, 5 does not
def test_sliding_window_equals_jax_nn_local_window(window):
    q, k, v = _qkv(13, (2, 2), 12, 12, 8)
    fn = lambda q, k, v: efficient.sliding_window_attention(q, k, v, window)
    ref = lambda q, k, v: _reference(q, k, v, is_causal=True, local_window_size=(window - 1, 0))
    _close(jax.jit(fn)(q, k, v), ref(q, k, v))
    for a, b in zip(_grads(fn, q, k, v), _grads(ref, q, k, v)):
        _close(a, b)


@settings(max_examples=5, deadline=None)
@given(T=st.integers(1, 13), window=st.integers(1, 15), mask_kind=st.sampled_from(["keys", "full"]),
       seed=st.integers(0, 2**16))
def test_sliding_window_with_mask_equals_masked_attention(T, window, mask_kind, seed):
    q, k, v = _qkv(seed, (2,), T, T, 4, d_v=3)
    mask = _bernoulli(seed + 1, 0.7, (2, 1, T) if mask_kind == "keys" else (2, T, T))
    out = jax.jit(efficient.sliding_window_attention, static_argnums=3)(q, k, v, window, mask)
    expected = jax.jit(efficient.materialised_attention)(q, k, v, mask & efficient.sliding_window_mask(T, window))
    _close(out, expected)


def test_sliding_window_mask():
    m = np.asarray(efficient.sliding_window_mask(5, 2))
    assert m.tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 1]]


# ------------------------------------------------------------------ ring attention

def test_ring_attention_on_the_devices_there_are():
    """Whatever devices this process has (one, in the tests): equal to one-device attention."""
    mesh = efficient.sequence_mesh(axis="seq")
    q, k, v = _qkv(14, (2,), 8 * len(mesh.devices.flat), 8 * len(mesh.devices.flat), 4)
    fn = lambda q, k, v: efficient.ring_attention(q, k, v, mesh=mesh, axis="seq")
    _close(jax.jit(fn)(q, k, v), efficient.materialised_attention(q, k, v))
    for a, b in zip(_grads(fn, q, k, v), _grads(efficient.materialised_attention, q, k, v)):
        _close(a, b)


_EIGHT = {}


@pytest.fixture(scope="module", autouse=True)
def _start_eight_devices():
    """Start the multi-device checks (a process of their own, 8 host CPU devices) with this module's
    first test, so that they run while the other tests do."""
    _EIGHT["process"] = efficient.start_in_subprocess("checks", 8)
    yield
    _EIGHT["process"].process.kill()


@pytest.fixture(scope="module")
def eight_devices():
    return _EIGHT["process"].result()


def test_ring_attention_on_8_host_devices_in_a_subprocess(eight_devices):
    result = eight_devices["ring"]
    assert result["n_devices"] == 8
    assert result["output_sharding"] == "PartitionSpec(None, 'seq', None)" or "seq" in result["output_sharding"]
    assert result["max_abs_diff_values"] <= ATOL
    assert result["max_abs_diff_grads"] <= ATOL
    assert result["indivisible_error"].startswith("q: expected a length divisible by the 8 devices")
    for name, gap in result["max_abs_diff_masked"].items():  # causal, key lengths, both
        assert gap <= ATOL, (name, gap)


def test_ring_training_memory_grows_linearly_on_8_host_devices(eight_devices):
    """XLA's compiled memory per device: 4x the length, at most 5x the memory, in training too (the
    custom VJP's second ring saves no [T/P, S] weights; autodiff through the scan saved them all)."""
    memory = eight_devices["ring_memory"]
    assert memory["n_devices"] == 8 and memory["lengths"][-1] == 4 * memory["lengths"][0]
    for key in ("forward", "training", "causal_training"):
        growth = memory[key][-1] / memory[key][0]
        assert growth <= 5.0, (key, memory[key])
    assert len(jax.devices()) < 8 or jax.devices()[0].platform != "cpu"  # nothing leaked here


def test_data_parallel_losses_equal_one_device_losses(eight_devices):
    result = eight_devices["data_parallel"]
    assert result["n_devices"] == 8 and len(result["single"]) == 5
    np.testing.assert_allclose(result["parallel"], result["single"], atol=ATOL, rtol=0)
    assert result["single"][-1] < result["single"][0]  # it trains


def test_ring_schedule():
    s = efficient.ring_schedule(4)
    assert s[0].tolist() == [0, 1, 2, 3]
    assert s[1].tolist() == [3, 0, 1, 2]
    assert all(sorted(s[:, i].tolist()) == [0, 1, 2, 3] for i in range(4))


# ------------------------------------------------------------------ associative recall

def test_associative_recall_softmax_beats_linear_at_4d():
    key = jax.random.PRNGKey(0)
    soft = efficient.associative_recall(key, 64, 16, attention="softmax")
    lin = efficient.associative_recall(key, 64, 16, attention="linear")
    outer = efficient.associative_recall(key, 64, 16, attention="linear_identity")
    assert soft >= 0.95 and lin < 0.5 and outer < 0.5
    assert efficient.associative_recall(key, 4, 16, attention="linear_identity") >= 0.9


# ------------------------------------------------------------------ input checks

def test_value_errors_name_the_argument():
    q, k, v = _qkv(15, (2,), 6, 7, 4)
    cases = [
        ("k", lambda: efficient.blockwise_attention(q, k[..., :3], v, block_size=2)),
        ("v", lambda: efficient.blockwise_attention(q, k, v[:, :5], block_size=2)),
        ("q, k, v", lambda: efficient.blockwise_attention(q[0, 0], k, v, block_size=2)),
        ("mask", lambda: efficient.blockwise_attention(q, k, v, jnp.ones((6, 6), bool), block_size=2)),
        ("mask", lambda: efficient.blockwise_attention(q, k, v, jnp.ones((6, 7)), block_size=2)),
        ("block_size", lambda: efficient.blockwise_attention(q, k, v, block_size=0)),
        ("block_size", lambda: efficient.blockwise_attention(q, k, v, block_size=2.0)),
        ("key_lengths", lambda: efficient.blockwise_attention(q, k, v, block_size=2, key_lengths=jnp.ones(3, int))),
        ("key_lengths", lambda: efficient.blockwise_attention(q, k, v, block_size=2, key_lengths=jnp.ones(2))),
        ("causal", lambda: efficient.linear_attention(q, k, v, causal=None)),
        ("k", lambda: efficient.linear_attention(q, k, v, causal=True)),
        ("k", lambda: efficient.linear_attention_recurrent(q, k, v)),
        ("feature_map", lambda: efficient.linear_attention(q, k, v, causal=False, feature_map=3)),
        ("key_lengths", lambda: efficient.linear_attention(q, k, v, causal=False, key_lengths=jnp.ones((2, 6), int))),
        ("window", lambda: efficient.sliding_window_attention(q, q, q, 0)),
        ("mask", lambda: efficient.sliding_window_attention(q, q, q, 2, jnp.ones((2, 7, 6), bool))),
        ("k", lambda: efficient.sliding_window_attention(q, k, v, 2)),
        ("mesh", lambda: efficient.ring_attention(q, q, q, mesh="devices", axis="seq")),
        ("causal", lambda: efficient.ring_attention(q, q, q, mesh=efficient.sequence_mesh(1), axis="seq", causal=1)),
        ("k", lambda: efficient.ring_attention(q, k, v, mesh=efficient.sequence_mesh(1), axis="seq", causal=True)),
        ("key_lengths", lambda: efficient.ring_attention(q, q, q, mesh=efficient.sequence_mesh(1), axis="seq",
                                                         key_lengths=jnp.ones((3,), int))),
        ("block_size", lambda: efficient.ring_attention(q, q, q, mesh=efficient.sequence_mesh(1), axis="seq",
                                                        block_size=0)),
        ("axis", lambda: efficient.ring_attention(q, q, q, mesh=efficient.sequence_mesh(axis="seq"), axis="x")),
        ("n_devices", lambda: efficient.sequence_mesh(len(jax.devices()) + 1)),
        ("attention", lambda: efficient.associative_recall(jax.random.PRNGKey(0), 4, 4, attention="x")),
        ("command", lambda: efficient.start_in_subprocess("nothing")),
        ("n_devices", lambda: efficient.start_in_subprocess("ring", 0)),
    ]
    for name, call in cases:
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value).startswith(name + ":"), (name, str(info.value))


def test_shapes_in_the_message():
    q, k, v = _qkv(16, (2,), 6, 7, 4)
    with pytest.raises(ValueError, match=r"\(2, 7, 3\)"):
        efficient.blockwise_attention(q, k[..., :3], v, block_size=2)


# ------------------------------------------------------------------ the chapter's figures

def test_chapter_07_figures_fit_the_column():
    from attention_course import plots

    figs = [
        plots.scaling_panels({"MiB": {"a": ([1024, 2048], [1.0, 2.0]), "b": ([1024, 2048], [1.0, 4.0])}},
                             dashed={"b": [2048]}),
        plots.recall_curves({"softmax": ([4, 8], [1.0, 1.0])}, d=4),
        plots.ring_steps(efficient.ring_schedule(8)),
    ]
    for fig in figs:
        assert fig.get_size_inches()[0] <= plots.BOOK_WIDTH
    with pytest.raises(ValueError, match="schedule"):
        plots.ring_steps(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="panels"):
        plots.scaling_panels({})
    with pytest.raises(ValueError, match="d:"):
        plots.recall_curves({}, d=0)
