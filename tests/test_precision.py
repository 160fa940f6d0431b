"""The dtype policy (attention_course._precision), for every attention in the package.

Each attention gets bfloat16 inputs, and its result is compared with the float32 result on the same
inputs rounded to bfloat16, for the output and for the gradients:

- the output may be no further from the float32 result than 1.25 times rounding that result to
  bfloat16 (the best a bfloat16 output can do); the gradients no further than 1.5 times rounding
  float32 gradients to bfloat16;
- where jax.nn.dot_product_attention computes the same attention (dot-product, blockwise, causal,
  sliding window, ring), both errors are at or below jax.nn's on the same inputs.

Then the same comparisons with the policy switched off (``_precision.disabled()``) must fail for
every one of them: the test can tell the policy from its absence.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attention_course import _precision, efficient, luong, pooling, self_attention, soft_search

B, T, D = 2, 512, 64  # batch, positions, key size


def _normal(seed, shape, scale=1.0):
    return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _rounded(*xs):
    """(bfloat16 copies, float32 copies of the same rounded numbers)."""
    low = tuple(x.astype(jnp.bfloat16) for x in xs)
    return low, tuple(x.astype(jnp.float32) for x in low)


def _jax_nn(q, k, v, window=None, is_causal=False):
    # the window as a mask: jax 0.7's local_window_size computes another attention
    mask = None if window is None else efficient.sliding_window_mask(q.shape[-2], window)[None, None]
    one_head = jax.nn.dot_product_attention(q[:, :, None], k[:, :, None], v[:, :, None],
                                            is_causal=is_causal, mask=mask)
    return one_head[:, :, 0]


def _relative(a, b) -> float:
    return float(jnp.linalg.norm(a.astype(jnp.float32) - b) / jnp.linalg.norm(b))


def _errors(fn, inputs, cotangent):
    """The errors of ``fn`` on bfloat16 inputs against float32 on the same rounded inputs.

    Returns ``(output error, output rounding, gradient error, gradient rounding)``: the max
    |error| of the bfloat16 output, and that of the float32 output rounded to bfloat16; the largest
    relative error of a bfloat16 gradient, and the largest that float32 gradients have once rounded
    to bfloat16, from the cotangent rounded to bfloat16 as a bfloat16 output receives it.
    """
    # compiled, and a new function each time: nothing traced with the policy on is reused without it
    fn = jax.jit(lambda *xs, fn=fn: fn(*xs))
    low, exact = _rounded(*inputs)
    ref = fn(*exact)
    out = fn(*low)
    assert out.dtype == jnp.bfloat16, f"output dtype {out.dtype}, expected the inputs' bfloat16"
    value_error = float(jnp.max(jnp.abs(out.astype(jnp.float32) - ref)))
    value_rounding = float(jnp.max(jnp.abs(ref.astype(jnp.bfloat16).astype(jnp.float32) - ref)))

    def loss(cotangent, *xs):
        return jnp.sum(fn(*xs).astype(jnp.float32) * cotangent)

    argnums = tuple(range(1, len(inputs) + 1))
    g_ref = jax.grad(loss, argnums)(cotangent, *exact)
    g_low = jax.grad(loss, argnums)(cotangent, *low)
    rounded_cotangent = cotangent.astype(jnp.bfloat16).astype(jnp.float32)
    g_best = jax.grad(loss, argnums)(rounded_cotangent, *exact)
    grad_error = max(_relative(a, b) for a, b in zip(g_low, g_ref))
    grad_rounding = max(_relative(a.astype(jnp.bfloat16), b) for a, b in zip(g_best, g_ref))
    return value_error, value_rounding, grad_error, grad_rounding


def _within(errors):
    """Whether the errors are those of the policy: at most 1.25 times the output's rounding, and 1.5
    times the gradients' (an input used twice, like Luong's annotations, sums two rounded parts)."""
    value_error, value_rounding, grad_error, grad_rounding = errors
    return value_error <= 1.25 * value_rounding + 1e-7 and grad_error <= 1.5 * grad_rounding


def _qkv(seed=0):
    return tuple(_normal([seed, i], (B, T, D)) for i in range(3))


def _luong_inputs(score, seed=1):
    n = m = 32
    h, hbar = _normal([seed, 0], (B, n)), _normal([seed, 1], (B, T, m))
    params = {"dot": (), "general": (_normal([seed, 2], (n, m), 0.3),),
              "concat": (_normal([seed, 3], (n + m, 48), 0.3), _normal([seed, 4], (48,))),
              "location": (_normal([seed, 5], (n, T)),)}[score]
    return (h, hbar, *params)


def _luong(score):
    function = getattr(luong, f"{score}_score")

    def attention(h, hbar, *params):
        e = function(h, *params) if score == "location" else function(h, hbar, *params)
        return pooling.weighted_average(pooling.masked_softmax(e), hbar)

    return attention


def _additive(s, h, W_a, U_a, v_a):
    e = soft_search.additive_score(s, h, W_a, U_a, v_a)
    return pooling.weighted_average(pooling.masked_softmax(e), h)


def _additive_inputs(seed=2):
    n, m, k = 32, 48, 40
    return (_normal([seed, 0], (B, n)), _normal([seed, 1], (B, T, m)), _normal([seed, 2], (n, k), 0.3),
            _normal([seed, 3], (m, k), 0.3), _normal([seed, 4], (k,)))


# name -> (attention, inputs, the same attention in jax.nn or None)
ATTENTIONS = {
    "scaled_dot_product": (lambda q, k, v: self_attention.scaled_dot_product_attention(q, k, v)[0],
                           _qkv, _jax_nn),
    "blockwise": (functools.partial(efficient.blockwise_attention, block_size=128), _qkv, _jax_nn),
    "blockwise_causal": (functools.partial(efficient.blockwise_attention, block_size=128, causal=True), _qkv,
                         functools.partial(_jax_nn, is_causal=True)),
    "sliding_window": (lambda q, k, v: efficient.sliding_window_attention(q, k, v, 64), _qkv,
                       functools.partial(_jax_nn, window=64)),
    "linear": (functools.partial(efficient.linear_attention, causal=False), _qkv, None),
    "linear_causal": (functools.partial(efficient.linear_attention, causal=True), _qkv, None),
    "linear_recurrent": (efficient.linear_attention_recurrent, _qkv, None),
    "ring": (lambda q, k, v: efficient.ring_attention(q, k, v, mesh=efficient.sequence_mesh(1), axis="seq"),
             _qkv, _jax_nn),
    "additive": (_additive, _additive_inputs, None),
    **{f"luong_{score}": (_luong(score), functools.partial(_luong_inputs, score), None)
       for score in luong.SCORES},
}


def _case(name):
    fn, make_inputs, anchor = ATTENTIONS[name]
    inputs = make_inputs()
    cotangent = _normal(9, jnp.shape(fn(*inputs)))
    return fn, inputs, anchor, cotangent


@pytest.mark.parametrize("name", sorted(ATTENTIONS))
def test_bfloat16_as_accurate_as_the_anchors(name):
    fn, inputs, anchor, cotangent = _case(name)
    errors = _errors(fn, inputs, cotangent)
    value_error, value_rounding, grad_error, grad_rounding = errors
    assert _within(errors), (
        f"{name}: bfloat16 output {value_error:.2e} from the float32 result (rounding it: {value_rounding:.2e}), "
        f"gradients {grad_error:.2e} (rounding them: {grad_rounding:.2e})")
    if anchor is not None:  # jax.nn computes the same attention: at or below its errors
        anchor_value, _, anchor_grad, _ = _errors(anchor, inputs, cotangent)
        # "at": up to 1% (both can sit at the rounding limit, from float32 results a few bits apart)
        assert value_error <= 1.01 * anchor_value and grad_error <= 1.01 * anchor_grad, (
            f"{name}: output error {value_error:.2e}, gradients {grad_error:.2e}; "
            f"jax.nn.dot_product_attention's {anchor_value:.2e} and {anchor_grad:.2e}")


@pytest.mark.parametrize("name", sorted(ATTENTIONS))
def test_without_the_policy_the_test_fails(name):
    fn, inputs, _, cotangent = _case(name)
    with _precision.disabled():
        errors = _errors(fn, inputs, cotangent)
    assert not _within(errors), (
        f"{name}: as accurate in bfloat16 without the policy ({errors[0]:.2e}, gradients {errors[2]:.2e}): "
        "the test would not notice its removal")


def test_wider_and_integer_inputs():
    q, k, v = (x[:, :16] for x in _qkv())
    assert _precision.compute_dtype(q.astype(jnp.float16)) == jnp.float32
    assert _precision.output_dtype(q.astype(jnp.float16)) == jnp.float16
    out = efficient.blockwise_attention(q, k, v, block_size=8)
    assert out.dtype == jnp.float32
    ints = tuple(jnp.round(4 * x).astype(jnp.int32) for x in (q, k, v))
    for fn in (efficient.linear_attention_recurrent, functools.partial(efficient.linear_attention, causal=True),
               functools.partial(efficient.blockwise_attention, block_size=8)):
        out = fn(*ints)  # integers are computed, and returned, in float32
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(out, fn(*(x.astype(jnp.float32) for x in ints)), rtol=1e-6)
