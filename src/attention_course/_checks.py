"""The argument checks every module shares, in one place.

Each raises a ``ValueError`` that names the argument and, for arrays, the shapes involved, before
anything is traced. The attention functions of chapters 06 and 07 share :func:`check_qkv` and
:func:`check_mask`, so both chapters refuse the same inputs with the same messages.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def shape(x) -> tuple[int, ...]:
    """The shape of an array (or anything ``jnp.shape`` reads) as a tuple."""
    return tuple(jnp.shape(x))


def positive_int(name: str, value) -> int:
    """``value`` as an int if it is a positive integer (not a bool); otherwise a ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


def positive_ints(**values) -> None:
    """:func:`positive_int` for each keyword, in order: ``positive_ints(d_model=..., layers=...)``."""
    for name, value in values.items():
        positive_int(name, value)


def check_qkv(q, k, v) -> tuple[int, ...]:
    """Check q ``[..., T, d_k]``, k ``[..., S, d_k]``, v ``[..., S, d_v]``; return the leading axes."""
    q_shape, k_shape, v_shape = shape(q), shape(k), shape(v)
    if len(q_shape) < 2 or len(k_shape) < 2 or len(v_shape) < 2:
        raise ValueError(f"q, k, v: expected [..., T, d_k], [..., S, d_k], [..., S, d_v]; got q {q_shape}, "
                         f"k {k_shape}, v {v_shape}")
    if q_shape[-1] != k_shape[-1]:
        raise ValueError(f"k: expected the last axis d_k = {q_shape[-1]} of q {q_shape}, got k of shape {k_shape}")
    if k_shape[-2] != v_shape[-2]:
        raise ValueError(f"v: expected S = {k_shape[-2]} positions like k {k_shape}, got v of shape {v_shape}")
    try:
        return tuple(jnp.broadcast_shapes(q_shape[:-2], k_shape[:-2], v_shape[:-2]))
    except ValueError:
        raise ValueError(f"q, k, v: leading axes do not broadcast: q {q_shape}, k {k_shape}, v {v_shape}") from None


def check_self(q, k) -> None:
    """Self-attention: as many keys as queries."""
    if shape(q)[-2] != shape(k)[-2]:
        raise ValueError(f"k: expected T = {shape(q)[-2]} positions like q {shape(q)} (self-attention), "
                         f"got k of shape {shape(k)}")


def check_mask(mask, scores_shape: tuple[int, ...]) -> None:
    """Check that a mask (or None) is boolean and broadcasts to ``scores_shape`` ``[..., T, S]``."""
    if mask is None:
        return
    try:
        ok = tuple(jnp.broadcast_shapes(shape(mask), scores_shape)) == tuple(scores_shape)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"mask: expected a shape broadcastable to [..., T, S] = {tuple(scores_shape)}, "
                         f"got {shape(mask)}")
    if jnp.result_type(mask) != jnp.bool_:
        raise ValueError(f"mask: expected a boolean array (True = may attend), got dtype {jnp.result_type(mask)}")


def check_bool(name: str, value) -> None:
    """A flag must be a Python bool (not an array, which would be traced)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected a bool, got {value!r}")
