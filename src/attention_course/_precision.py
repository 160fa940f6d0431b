"""The dtype policy of every attention in the package, written once.

Half-precision inputs (bfloat16, float16) have 8 or 11 bits of mantissa. A softmax over a thousand
scores rounded to 8 bits, or an online-softmax carry summed in 8 bits over a thousand keys, loses
most of them. So, as ``jax.nn.dot_product_attention`` does for its logits and Pallas' flash
attention kernels do for their running max, sum and numerator:

- an attention whose inputs are narrower than float32 computes in float32 inside: the scores, the
  softmax, the online-softmax carries ``(m, l, acc)``, linear attention's state;
- its output comes back in the inputs' dtype;
- float32 and float64 inputs are computed as they are;
- integer inputs are computed in float32, and so is their output.

:func:`inside` is the one place the rule is applied; every attention function calls it on its
array inputs. :func:`disabled` switches the upcast off, so that the tests can show what the policy
is for: with it, bfloat16 attention is as accurate as float32 attention on the same rounded inputs,
up to the final rounding of its output.
"""

from __future__ import annotations

import contextlib

import jax.numpy as jnp

_ENABLED = True


def compute_dtype(*xs):
    """The dtype an attention over ``xs`` computes in: float32 at least."""
    dtype = jnp.result_type(*xs)
    if not jnp.issubdtype(dtype, jnp.floating):
        return jnp.dtype(jnp.float32)
    if _ENABLED and jnp.dtype(dtype).itemsize < 4:
        return jnp.dtype(jnp.float32)
    return jnp.dtype(dtype)


def output_dtype(*xs):
    """The dtype of the attention's output: the inputs' (float32 for integer inputs)."""
    dtype = jnp.result_type(*xs)
    if not jnp.issubdtype(dtype, jnp.floating):
        return jnp.dtype(jnp.float32)
    return jnp.dtype(dtype)


def inside(*xs):
    """``(xs cast to the compute dtype, the output dtype)``: call it first, cast the result last."""
    dtype = compute_dtype(*xs)
    return tuple(jnp.asarray(x, dtype) for x in xs), output_dtype(*xs)


@contextlib.contextmanager
def disabled():
    """Within it, half-precision inputs are computed in their own dtype (for tests only)."""
    global _ENABLED
    before, _ENABLED = _ENABLED, False
    try:
        yield
    finally:
        _ENABLED = before
