"""Chapter 02: two cursors, and every way they can move summed out: the RNN Transducer (Graves, 2012).

One cursor walks over the T encoder frames f_1 .. f_T of the source, the other over the U target
labels y_1 .. y_U. At node (t, u) of the lattice -- the source cursor on frame t, u labels already
written -- the joint network gives a distribution Pr(k | t, u) over the labels and one extra
symbol, the blank (Graves's null output). Emitting label y_{u+1} moves the target cursor,
(t, u) -> (t, u+1); emitting the blank moves the source cursor, (t, u) -> (t+1, u). An alignment is
a monotone path from (1, 0) to (T, U) closed by a final blank, and

    Pr(y | x) = sum over alignments a of prod_{moves of a} Pr(move | t, u).

With the shorthand of the paper, y(t, u) = Pr(y_{u+1} | t, u) and blank(t, u) = Pr(blank | t, u),
the forward variables alpha(t, u) (probability of having written y_1..y_u by frame t; the book
writes them with a right arrow over P, keeping alpha for attention weights) obey

    alpha(1, 0) = 1,
    alpha(t, u) = alpha(t-1, u) blank(t-1, u) + alpha(t, u-1) y(t, u-1),
    Pr(y | x)   = alpha(T, U) blank(T, U),

and the backward variables beta(t, u) (probability of writing the rest from (t, u); a left arrow
over P in the book) obey

    beta(T, U) = blank(T, U),
    beta(t, u) = beta(t+1, u) blank(t, u) + beta(t, u+1) y(t, u).

Every path crosses each anti-diagonal t + u = n exactly once, hence for every n

    sum_{t + u = n} alpha(t, u) beta(t, u) = Pr(y | x),

and alpha(t, u) beta(t, u) / Pr(y | x) is the posterior probability that the path visits (t, u).

Everything here is computed in log space, 0-based (frame t = 0 .. T-1, u = 0 .. U), batched with
per-example lengths. The recursions sweep the **anti-diagonals**: all nodes with the same t + u
depend only on the previous anti-diagonal, so one ``lax.scan`` of T + U - 1 vectorised steps
replaces the T (U+1) sequential steps of a double loop (:func:`rnnt_loss_nested_scan` keeps that
straightforward version for comparison). The gradient of the loss is Graves's formula, each move's
posterior probability from alpha and beta (a ``jax.custom_vjp``); the tests check it against
automatic differentiation of the double loop, against finite differences of a brute-force
enumeration of the paths, and against ``jax.test_util.check_grads``.

The model (:class:`Transducer`) is Graves's three networks: a bidirectional GRU reads the source
(transcription network, frames f_t), a GRU reads the labels written so far (prediction network,
g_u), and a joint network combines one frame with one prefix. Blank is PAD (id 0): PAD is never a
word, so it is free to mean "nothing to write here, move the source cursor". A target sentence
needs no EOS: the transducer stops when the source cursor leaves the last frame.
"""

from __future__ import annotations

import itertools
import math
from functools import partial
from typing import Callable, Iterator, NamedTuple

import numpy as np

import jax
import jax.numpy as jnp
from flax import nnx

from attention_course import _checks, rnn

__all__ = [
    "NEG",
    "lattice",
    "skew",
    "unskew",
    "diagonals",
    "forward_sweep",
    "backward_sweep",
    "rnnt_loss",
    "rnnt_loss_nested_scan",
    "rnnt_loss_brute_force",
    "forward_variables",
    "backward_variables",
    "occupancy",
    "Alignment",
    "viterbi_alignment",
    "alignments",
    "count_alignments",
    "Transducer",
    "loss",
    "greedy_decode",
    "transduce",
]

NEG = -1e30  # log 0, kept finite: logaddexp(NEG, NEG) and its gradient stay finite, unlike -inf
_FORBIDDEN_LOGIT = -1e9  # the model's logit for BOS and EOS, which a transducer never writes


# --------------------------------------------------------------------------------------------
# Checks, before tracing
# --------------------------------------------------------------------------------------------


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check(logits, labels, logit_lengths, label_lengths, blank) -> None:
    """Raise ValueError naming the argument, with the expected and the actual shape or value."""
    shape = tuple(jnp.shape(logits))
    if len(shape) != 4:
        raise ValueError(f"logits: expected shape [B, T, U+1, V], got {shape}")
    B, T, U1, V = shape
    if T < 1 or U1 < 1 or V < 2:
        raise ValueError(f"logits: expected T >= 1, U+1 >= 1 and V >= 2 in [B, T, U+1, V], got {shape}")
    if not jnp.issubdtype(jnp.result_type(logits), jnp.floating):
        raise ValueError(f"logits: expected a floating dtype, got {jnp.result_type(logits)}")
    if tuple(jnp.shape(labels)) != (B, U1 - 1):
        raise ValueError(f"labels: expected shape ({B}, {U1 - 1}) = [B, U] to match logits {shape}, "
                         f"got {tuple(jnp.shape(labels))}")
    if U1 > 1 and not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise ValueError(f"labels: expected integer ids, got dtype {jnp.result_type(labels)}")
    for name, value in (("logit_lengths", logit_lengths), ("label_lengths", label_lengths)):
        if tuple(jnp.shape(value)) != (B,):
            raise ValueError(f"{name}: expected shape ({B},) (one length per example), got {tuple(jnp.shape(value))}")
        if not jnp.issubdtype(jnp.result_type(value), jnp.integer):
            raise ValueError(f"{name}: expected integers, got dtype {jnp.result_type(value)}")
    if isinstance(blank, bool) or not isinstance(blank, (int, np.integer)) or not 0 <= blank < V:
        raise ValueError(f"blank: expected an int id in [0, {V - 1}], got {blank!r}")
    if _concrete(logit_lengths):  # NumPy, not jnp: under an outer jit, jnp would stage even a constant
        lo, hi = int(np.min(np.asarray(logit_lengths))), int(np.max(np.asarray(logit_lengths)))
        if lo < 1 or hi > T:
            raise ValueError(f"logit_lengths: every length must be in [1, {T}] (T, the frames of logits), "
                             f"got min {lo}, max {hi}")
    if _concrete(label_lengths):
        lo, hi = int(np.min(np.asarray(label_lengths))), int(np.max(np.asarray(label_lengths)))
        if lo < 0 or hi > U1 - 1:
            raise ValueError(f"label_lengths: every length must be in [0, {U1 - 1}] (U, the width of labels), "
                             f"got min {lo}, max {hi}")
        if U1 > 1 and _concrete(labels):
            real = np.arange(U1 - 1)[None, :] < np.asarray(label_lengths)[:, None]
            ids = np.asarray(labels)[real]
            if ids.size and (ids.min() < 0 or ids.max() >= V or np.any(ids == blank)):
                bad = ids[(ids < 0) | (ids >= V) | (ids == blank)][0]
                raise ValueError(f"labels: every real label must be an id in [0, {V - 1}] other than the blank "
                                 f"{blank}, got {int(bad)}")


# --------------------------------------------------------------------------------------------
# The lattice and its anti-diagonals
# --------------------------------------------------------------------------------------------


def lattice(logits: jax.Array, labels: jax.Array, label_lengths: jax.Array, *,
            blank: int = 0) -> tuple[jax.Array, jax.Array]:
    """The two log-probabilities of leaving each node, log blank and log y.

    log blank(t, u) = log softmax(logits[t, u])[blank]    (move the source
                                                           cursor)
    log y(t, u)     = log softmax(logits[t, u])[y_{u+1}]  (write y_{u+1}, move
                                                           the target cursor)

    Args:
      logits: ``[B, T, U+1, V]`` unnormalised scores of the joint network at
        every node.
      labels: ``[B, U]`` int, y_1 .. y_U of each example, anything after its
        length.
      label_lengths: ``[B]`` int, U_b.

    Returns:
      (log_blank, log_y), both ``[B, T, U+1]``; log_y is NEG at u >= U_b
      (nothing left to write).
    """
    # bfloat16/float16 are summed in float32
    dtype = jnp.promote_types(logits.dtype, jnp.float32)
    z = logits.astype(dtype)  # [B, T, U+1, V]
    B, T, U1, _ = z.shape
    # [B, T, U+1]; only two entries per node are needed after it
    log_norm = jax.nn.logsumexp(z, axis=-1)
    log_blank = z[..., blank] - log_norm
    padded = jnp.concatenate(  # [B, U+1]
        [labels.astype(jnp.int32), jnp.zeros((B, 1), jnp.int32)], axis=1)
    index = jnp.broadcast_to(padded[:, None, :, None], (B, T, U1, 1))
    log_y = jnp.take_along_axis(z, index, axis=-1)[..., 0] - log_norm
    has_next = jnp.arange(U1)[None, :] < label_lengths[:, None]  # [B, U+1]
    return log_blank, jnp.where(has_next[:, None, :], log_y, NEG)


def skew(x: jax.Array, fill: float = NEG) -> jax.Array:
    """Rearrange a lattice by anti-diagonals: ``[B, T, U+1] -> [B, T+U, U+1]``, out[b, n, u] = x[b, n-u, u].

    Row n of the result holds the nodes with t + u = n; places with n - u outside [0, T) get ``fill``.
    Column u is column u of ``x`` moved down by u places. No gather: each row of the transposed lattice
    is padded with U+1 fills and the rows are re-cut one element shorter, which shifts row u by u
    (pads and reshapes keep the gradient a cheap slice, where a gather's would be a scatter).
    """
    B, T, U1 = x.shape
    N = T + U1 - 1
    rows = jnp.swapaxes(x, 1, 2)  # [B, U+1, T]
    rows = jnp.pad(rows, ((0, 0), (0, 0), (0, U1)), constant_values=fill)  # [B, U+1, T+U+1]
    flat = rows.reshape(B, U1 * (N + 1))[:, : U1 * N]  # re-cut in rows of N: row u moves right by u
    return jnp.swapaxes(flat.reshape(B, U1, N), 1, 2)  # [B, N, U+1]


def unskew(x: jax.Array, T: int) -> jax.Array:
    """The inverse of :func:`skew`: ``[B, T+U, U+1] -> [B, T, U+1]``, out[b, t, u] = x[b, t+u, u]."""
    B, N, U1 = x.shape
    flat = jnp.swapaxes(x, 1, 2).reshape(B, U1 * N)  # rows of N
    flat = jnp.pad(flat, ((0, 0), (0, U1)))  # re-cut in rows of N + 1: row u moves left by u
    return jnp.swapaxes(flat.reshape(B, U1, N + 1)[:, :, :T], 1, 2)


def _valid(logit_lengths, label_lengths, T: int, U1: int) -> jax.Array:
    """``[B, T, U+1]`` bool: the nodes of each example's own lattice, t < T_b and u <= U_b."""
    t_ok = jnp.arange(T)[None, :, None] < logit_lengths[:, None, None]
    u_ok = jnp.arange(U1)[None, None, :] <= label_lengths[:, None, None]
    return t_ok & u_ok


def _shift_right(x: jax.Array) -> jax.Array:
    """x[:, u-1] at place u (NEG at u = 0): the node (t, u-1) seen from (t, u) on the next diagonal."""
    return jnp.concatenate([jnp.full_like(x[:, :1], NEG), x[:, :-1]], axis=1)


def _shift_left(x: jax.Array) -> jax.Array:
    """x[:, u+1] at place u (NEG at u = U): the node (t, u+1) seen from (t, u) on the previous diagonal."""
    return jnp.concatenate([x[:, 1:], jnp.full_like(x[:, :1], NEG)], axis=1)


def forward_sweep(log_blank: jax.Array, log_y: jax.Array, valid: jax.Array,
                  combine: Callable = jnp.logaddexp) -> jax.Array:
    """log alpha on every anti-diagonal, one ``lax.scan`` step per diagonal.

    On diagonal n, place u is the node (n-u, u). Its two predecessors lie on
    diagonal n-1: (t-1, u) at the same place u, reached by a blank, and (t, u-1)
    at place u-1, reached by writing y_u:

        log alpha_n[u] = combine(log alpha_{n-1}[u] + log blank_{n-1}[u],
                                 log alpha_{n-1}[u-1] + log y_{n-1}[u-1]).

    ``combine=jnp.logaddexp`` sums over paths (the forward variables);
    ``jnp.maximum`` keeps the best one (Viterbi). Nodes outside an example's
    lattice are held at NEG.

    Args:
      log_blank, log_y: ``[N, B, U+1]``, diagonal-major (:func:`diagonals`),
        N = T + U.
      valid: ``[N, B, U+1]`` bool, True at the nodes of each example's lattice.

    Returns:
      ``[N, B, U+1]`` log alpha, diagonal by diagonal (N - 1 sequential steps).
    """
    N, B, U1 = log_blank.shape
    # alpha(0, 0) = 1
    start = jnp.full((B, U1), NEG, log_blank.dtype).at[:, 0].set(0.0)
    first = jnp.where(valid[0], start, NEG)

    def step(alpha, inputs):  # alpha: [B, U+1] on diagonal n-1
        blank_prev, y_prev, valid_n = inputs
        stay = alpha + blank_prev  # from (t-1, u)
        write = _shift_right(alpha + y_prev)  # from (t, u-1)
        alpha = jnp.where(valid_n, combine(stay, write), NEG)
        return alpha, alpha

    _, rest = jax.lax.scan(step, first, (log_blank[:-1], log_y[:-1], valid[1:]))
    return jnp.concatenate([first[None], rest], axis=0)


def backward_sweep(log_blank: jax.Array, log_y: jax.Array, valid: jax.Array, terminal: jax.Array) -> jax.Array:
    """log beta on every anti-diagonal, sweeping from the last diagonal to the first.

        log beta_n[u] = log blank_n[u]                                  at the terminal node (T_b-1, U_b),
        log beta_n[u] = logaddexp(log beta_{n+1}[u] + log blank_n[u],   (t+1, u): same place u
                                  log beta_{n+1}[u+1] + log y_n[u])     (t, u+1): place u+1

    Args:
      log_blank, log_y, valid, terminal: ``[N, B, U+1]``, diagonal-major; ``terminal`` is True at
        each example's node (T_b - 1, U_b).

    Returns:
      ``[N, B, U+1]`` log beta.
    """
    N, B, U1 = log_blank.shape

    def step(beta, inputs):  # beta: [B, U+1] on diagonal n+1
        blank_n, y_n, valid_n, terminal_n = inputs
        value = jnp.logaddexp(beta + blank_n, _shift_left(beta) + y_n)
        beta = jnp.where(terminal_n, blank_n, jnp.where(valid_n, value, NEG))
        return beta, beta

    _, betas = jax.lax.scan(step, jnp.full((B, U1), NEG, log_blank.dtype), (log_blank, log_y, valid, terminal),
                            reverse=True)
    return betas


def diagonals(x: jax.Array, fill: float = NEG) -> jax.Array:
    """The lattice ``[B, T, U+1]`` diagonal-major, as the sweeps read it: ``[N, B, U+1]``, N = T + U,
    out[n, b, u] = x[b, n-u, u] (:func:`skew` with the diagonal axis first)."""
    return jnp.swapaxes(skew(x, fill), 0, 1)


def _prepare(log_blank, log_y, logit_lengths, label_lengths):
    """Everything the sweeps need, diagonal-major: (log_blank, log_y, valid, terminal), each
    ``[N, B, U+1]``; ``valid`` marks each example's nodes (t < T_b, u <= U_b), ``terminal`` its node
    (T_b - 1, U_b). The masks are computed in place, from n and u, without skewing anything."""
    B, T, U1 = log_blank.shape
    n = jnp.arange(T + U1 - 1)[:, None, None]  # [N, 1, 1]
    u = jnp.arange(U1)[None, None, :]  # [1, 1, U+1]
    t = n - u
    T_b, U_b = logit_lengths[None, :, None], label_lengths[None, :, None]
    valid = (t >= 0) & (t < T_b) & (u <= U_b)
    terminal = (t == T_b - 1) & (u == U_b)
    return diagonals(log_blank), diagonals(log_y), valid, terminal


def _at_terminal(table_nbu: jax.Array, logit_lengths, label_lengths) -> jax.Array:
    """table[n_b, b, U_b] with n_b = T_b - 1 + U_b: the value at each example's terminal node."""
    n = logit_lengths - 1 + label_lengths
    return table_nbu[n, jnp.arange(n.shape[0]), label_lengths]


@jax.custom_vjp
def _log_pr_antidiagonal(log_blank, log_y, logit_lengths, label_lengths):
    """log Pr(y|x) ``[B]`` = log alpha(T_b-1, U_b) + log blank(T_b-1, U_b), from the lattice
    ``[B, T, U+1]`` x 2 by one scan over the anti-diagonals (:func:`forward_sweep`)."""
    return _log_pr_fwd(log_blank, log_y, logit_lengths, label_lengths)[0]


def _log_pr_fwd(log_blank, log_y, logit_lengths, label_lengths):
    diag_blank, diag_y, valid, terminal = _prepare(log_blank, log_y, logit_lengths, label_lengths)
    alpha = forward_sweep(diag_blank, diag_y, valid)  # [N, B, U+1]
    log_pr = _at_terminal(alpha, logit_lengths, label_lengths) + _at_terminal(diag_blank, logit_lengths, label_lengths)
    return log_pr, (alpha, log_blank, log_y, diag_blank, diag_y, valid, terminal, logit_lengths, label_lengths)


def _log_pr_bwd(residuals, g):
    """Graves's gradient: each move's posterior probability, from alpha and beta (one more sweep).

        d log Pr / d log blank(t, u) = alpha(t, u) blank(t, u) beta(t+1, u) / Pr(y|x)
        d log Pr / d log y(t, u)     = alpha(t, u) y(t, u) beta(t, u+1) / Pr(y|x)

    with beta(T_b, U_b) = 1 after the final blank. Cheaper than differentiating through the scan:
    one backward sweep and two elementwise products, instead of a transposed scan of logaddexp.

    Pr(y|x) is taken, for the moves leaving diagonal n, as sum_u alpha_n[u] beta_n[u] -- equal to
    Pr(y|x) for every n, but computed from the same rounded alpha and beta as the moves: in float32
    the logs reach thousands on long lattices, and this keeps each diagonal's moves summing to one.
    """
    alpha, log_blank, log_y, diag_blank, diag_y, valid, terminal, logit_lengths, label_lengths = residuals
    B, T, U1 = log_blank.shape
    beta = backward_sweep(diag_blank, diag_y, valid, terminal)  # [N, B, U+1]
    log_pr_n = jnp.swapaxes(jax.nn.logsumexp(alpha + beta, axis=2), 0, 1)  # [B, N]: log Pr(y|x) from each diagonal
    # back to the lattice layout [B, T, U+1] first: the products below then read every array in order
    alpha, beta = (unskew(jnp.swapaxes(x, 0, 1), T) for x in (alpha, beta))
    t, u = jnp.arange(T)[:, None], jnp.arange(U1)[None, :]
    log_pr = log_pr_n[:, t + u]  # [B, T, U+1]: the diagonal of each node
    beta_pad = jnp.pad(beta, ((0, 0), (0, 1), (0, 1)), constant_values=NEG)  # beta at t = T or u = U+1: none
    last = (t[None] == logit_lengths[:, None, None] - 1) & (u[None] == label_lengths[:, None, None])
    after_blank = jnp.where(last, 0.0, beta_pad[:, 1:, :-1])  # beta(t+1, u); 1 after the final blank
    after_y = beta_pad[:, :-1, 1:]  # beta(t, u+1)
    inside = _valid(logit_lengths, label_lengths, T, U1)
    scale = g[:, None, None]
    d_blank = jnp.where(inside, scale * jnp.exp(alpha + log_blank + after_blank - log_pr), 0.0)
    d_y = jnp.where(inside, scale * jnp.exp(alpha + log_y + after_y - log_pr), 0.0)
    return d_blank, d_y, None, None


_log_pr_antidiagonal.defvjp(_log_pr_fwd, _log_pr_bwd)


@partial(jax.jit, static_argnames=("blank",))
def _log_likelihood(logits, labels, logit_lengths, label_lengths, blank):
    log_blank, log_y = lattice(logits, labels, label_lengths, blank=blank)
    return _log_pr_antidiagonal(log_blank, log_y, logit_lengths, label_lengths)


def rnnt_loss(logits: jax.Array, labels: jax.Array, logit_lengths: jax.Array, label_lengths: jax.Array,
              *, blank: int = 0) -> jax.Array:
    """The transducer's negative log-likelihood, -log Pr(y | x), summed over every alignment.

        -log Pr(y | x) = -(log alpha(T, U) + log blank(T, U)),

    with alpha computed by :func:`forward_sweep` over the T + U anti-diagonals (log space, one
    ``lax.scan``). Jit-compiled and differentiable. Each example uses only its own lengths: padded
    frames t >= T_b and labels u >= U_b never change its value.

    Args:
      logits: ``[B, T, U+1, V]`` unnormalised joint-network scores (log-softmax is taken here).
      labels: ``[B, U]`` int label ids y_1 .. y_U (padding after each example's length is ignored).
      logit_lengths: ``[B]`` int, T_b in [1, T].
      label_lengths: ``[B]`` int, U_b in [0, U]; zero labels is allowed (all-blank path).
      blank: the id of the blank symbol (this course uses PAD, 0).

    Returns:
      ``[B]`` float32, -log Pr(y_b | x_b).

    Raises:
      ValueError: naming the argument, for a bad shape, dtype, length, label id or blank.
    """
    _check(logits, labels, logit_lengths, label_lengths, blank)
    return -_log_likelihood(logits, jnp.asarray(labels), jnp.asarray(logit_lengths, jnp.int32),
                            jnp.asarray(label_lengths, jnp.int32), int(blank))


def _log_pr_nested(log_blank, log_y, logit_lengths, label_lengths):
    """log Pr(y|x) ``[B]`` from the lattice by a scan over frames t, each with a scan over u inside."""
    B, T, U1 = log_blank.shape
    valid = _valid(logit_lengths, label_lengths, T, U1)

    def row(alpha_prev, inputs):  # alpha_prev: [B, U+1], row t-1; inputs for row t
        blank_prev, y_row, valid_row = inputs  # blank(t-1, .), y(t, .), valid(t, .)
        from_above = alpha_prev + blank_prev  # [B, U+1]

        def cell(left, cell_inputs):  # left: alpha(t, u-1) + y(t, u-1)
            above, y_u, ok = cell_inputs
            a = jnp.where(ok, jnp.logaddexp(above, left), NEG)
            return a + y_u, a

        _, alpha_row = jax.lax.scan(cell, jnp.full((B,), NEG, log_blank.dtype),
                                    (from_above.T, y_row.T, valid_row.T))
        return alpha_row.T, alpha_row.T

    first_above = jnp.full((B, U1), NEG, log_blank.dtype).at[:, 0].set(0.0)  # a virtual row -1 entering (0, 0)
    blank_prev = jnp.concatenate([jnp.zeros_like(log_blank[:, :1]), log_blank[:, :-1]], axis=1)  # [B, T, U+1]
    xs = (jnp.swapaxes(blank_prev, 0, 1), jnp.swapaxes(log_y, 0, 1), jnp.swapaxes(valid, 0, 1))
    _, alpha = jax.lax.scan(row, first_above, xs)  # [T, B, U+1]
    b = jnp.arange(B)
    return alpha[logit_lengths - 1, b, label_lengths] + log_blank[b, logit_lengths - 1, label_lengths]


@partial(jax.jit, static_argnames=("blank",))
def _log_likelihood_nested(logits, labels, logit_lengths, label_lengths, blank):
    log_blank, log_y = lattice(logits, labels, label_lengths, blank=blank)
    return _log_pr_nested(log_blank, log_y, logit_lengths, label_lengths)


def rnnt_loss_nested_scan(logits: jax.Array, labels: jax.Array, logit_lengths: jax.Array,
                          label_lengths: jax.Array, *, blank: int = 0) -> jax.Array:
    """The same loss as :func:`rnnt_loss`, by the straightforward double loop: a scan over frames t
    with, inside, a scan over labels u -- T * (U+1) sequential steps instead of T + U. Kept to
    measure what the anti-diagonal sweep saves (tests/benchmarks/bench_transducer.py)."""
    _check(logits, labels, logit_lengths, label_lengths, blank)
    return -_log_likelihood_nested(logits, jnp.asarray(labels), jnp.asarray(logit_lengths, jnp.int32),
                                   jnp.asarray(label_lengths, jnp.int32), int(blank))


# --------------------------------------------------------------------------------------------
# Enumerating the paths: the brute-force reference
# --------------------------------------------------------------------------------------------


def count_alignments(T: int, U: int) -> int:
    """The number of alignments of U labels with T frames: C(T + U - 1, U).

    A path makes T blank moves and U label moves; the last move is always the final blank, and
    the U label moves can take any U of the other T + U - 1 places.
    """
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"T: expected an int >= 1 (at least one frame), got {T!r}")
    if isinstance(U, bool) or not isinstance(U, (int, np.integer)) or U < 0:
        raise ValueError(f"U: expected an int >= 0, got {U!r}")
    return math.comb(int(T) + int(U) - 1, int(U))


def alignments(T: int, U: int) -> Iterator[tuple[bool, ...]]:
    """Every alignment of U labels with T frames, as its T + U moves: True = write the next label,
    False = blank (move to the next frame). The last move is always the final blank."""
    n = count_alignments(T, U)  # checks the arguments
    del n
    steps = T + U - 1
    for writes in itertools.combinations(range(steps), U):
        moves = [False] * (steps + 1)
        for k in writes:
            moves[k] = True
        yield tuple(moves)


def rnnt_loss_brute_force(logits, labels, logit_lengths, label_lengths, *, blank: int = 0,
                          max_paths: int = 200_000) -> np.ndarray:
    """-log Pr(y | x) by listing every alignment and adding up their probabilities (float64, NumPy).

    No recursion: each path is walked move by move from (0, 0), its log-probability is the sum of
    its moves' log-probabilities, and the paths are combined with one logsumexp. For tiny lattices
    only (``max_paths`` guards against C(T + U - 1, U) exploding); the tests and the notebook use it
    to check :func:`rnnt_loss`. Arguments as in :func:`rnnt_loss`; returns ``[B]`` float64.
    """
    _check(logits, labels, logit_lengths, label_lengths, blank)
    logits = np.asarray(logits, np.float64)
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))  # [B, T, U+1, V]
    labels = np.asarray(labels)
    out = []
    for b in range(logits.shape[0]):
        T, U = int(logit_lengths[b]), int(label_lengths[b])
        if count_alignments(T, U) > max_paths:
            raise ValueError(f"logit_lengths, label_lengths: example {b} has C({T}+{U}-1, {U}) = "
                             f"{count_alignments(T, U)} alignments, more than max_paths={max_paths}")
        scores = []
        for moves in alignments(T, U):
            t = u = 0
            score = 0.0
            for write in moves:
                if write:
                    score += logp[b, t, u, labels[b, u]]
                    u += 1
                else:
                    score += logp[b, t, u, blank]
                    t += 1
            assert (t, u) == (T, U)
            scores.append(score)
        scores = np.array(scores)
        top = scores.max()
        out.append(-(top + np.log(np.exp(scores - top).sum())))
    return np.array(out)


# --------------------------------------------------------------------------------------------
# Forward and backward variables, occupancy, the best path
# --------------------------------------------------------------------------------------------


@partial(jax.jit, static_argnames=("blank",))
def _alpha_beta(logits, labels, logit_lengths, label_lengths, blank):
    T = logits.shape[1]
    log_blank, log_y = lattice(logits, labels, label_lengths, blank=blank)
    log_blank, log_y, valid, terminal = _prepare(log_blank, log_y, logit_lengths, label_lengths)
    alpha = forward_sweep(log_blank, log_y, valid)
    beta = backward_sweep(log_blank, log_y, valid, terminal)
    to_lattice = lambda table: unskew(jnp.swapaxes(table, 0, 1), T)  # noqa: E731
    valid_lattice = _valid(logit_lengths, label_lengths, T, logits.shape[2])
    outside = lambda x: jnp.where(valid_lattice, x, -jnp.inf)  # noqa: E731
    final_blank = _at_terminal(log_blank, logit_lengths, label_lengths)
    log_pr = _at_terminal(alpha, logit_lengths, label_lengths) + final_blank
    return outside(to_lattice(alpha)), outside(to_lattice(beta)), log_pr


def forward_variables(logits, labels, logit_lengths, label_lengths, *, blank: int = 0) -> jax.Array:
    """log alpha(t, u), ``[B, T, U+1]`` (-inf outside each example's lattice). Arguments as in :func:`rnnt_loss`."""
    _check(logits, labels, logit_lengths, label_lengths, blank)
    return _alpha_beta(logits, jnp.asarray(labels), jnp.asarray(logit_lengths, jnp.int32),
                       jnp.asarray(label_lengths, jnp.int32), int(blank))[0]


def backward_variables(logits, labels, logit_lengths, label_lengths, *, blank: int = 0) -> jax.Array:
    """log beta(t, u), ``[B, T, U+1]`` (-inf outside each example's lattice); log beta(0, 0) = log Pr(y | x)."""
    _check(logits, labels, logit_lengths, label_lengths, blank)
    return _alpha_beta(logits, jnp.asarray(labels), jnp.asarray(logit_lengths, jnp.int32),
                       jnp.asarray(label_lengths, jnp.int32), int(blank))[1]


def occupancy(logits, labels, logit_lengths, label_lengths, *, blank: int = 0) -> jax.Array:
    """Posterior probability that the alignment visits node (t, u):

        gamma(t, u) = alpha(t, u) beta(t, u) / Pr(y | x),        ``[B, T, U+1]``, 0 outside the lattice.

    Each anti-diagonal t + u = n of an example's lattice sums to 1. Arguments as in :func:`rnnt_loss`.
    """
    _check(logits, labels, logit_lengths, label_lengths, blank)
    log_alpha, log_beta, log_pr = _alpha_beta(logits, jnp.asarray(labels), jnp.asarray(logit_lengths, jnp.int32),
                                              jnp.asarray(label_lengths, jnp.int32), int(blank))
    return jnp.exp(log_alpha + log_beta - log_pr[:, None, None])


class Alignment(NamedTuple):
    """The best path of the two cursors, node by node.

    t, u: ``[B, T+U]`` int, the n-th node visited (it lies on anti-diagonal n); mask: ``[B, T+U]``
    bool, True for the T_b + U_b nodes of example b; log_prob: ``[B]``, the path's log-probability
    (final blank included); frames: ``[B, U]`` int, the frame t at which label y_{u+1} is written
    (the move (t, u) -> (t, u+1)), -1 past U_b: the transducer's hard alignment, monotone by
    construction.
    """

    t: jax.Array
    u: jax.Array
    mask: jax.Array
    log_prob: jax.Array
    frames: jax.Array


@partial(jax.jit, static_argnames=("blank",))
def _viterbi(logits, labels, logit_lengths, label_lengths, blank):
    log_blank, log_y = lattice(logits, labels, label_lengths, blank=blank)
    log_blank, log_y, valid, _ = _prepare(log_blank, log_y, logit_lengths, label_lengths)
    delta = forward_sweep(log_blank, log_y, valid, combine=jnp.maximum)  # [N, B, U+1]
    N, B, U1 = delta.shape
    b = jnp.arange(B)
    last = logit_lengths - 1 + label_lengths  # the diagonal of each terminal node
    blank_nbu, y_nbu = log_blank, log_y  # [N, B, U+1]

    def back(u, n):  # u: [B], the place on diagonal n; returns the place on diagonal n-1
        prev = n - 1
        by_blank = delta[prev, b, u] + blank_nbu[prev, b, u]  # came from (t-1, u)
        um1 = jnp.maximum(u - 1, 0)
        by_label = jnp.where(u > 0, delta[prev, b, um1] + y_nbu[prev, b, um1], NEG)  # came from (t, u-1)
        u_prev = jnp.where(by_label > by_blank, u - 1, u)
        u_prev = jnp.where(prev >= last, label_lengths, u_prev)  # the path has not started yet: wait at the end
        return u_prev, u

    # diagonals N-1 .. 1, each example starting from its terminal node (T_b - 1, U_b) on diagonal `last`
    u0, places = jax.lax.scan(back, label_lengths, jnp.arange(N - 1, 0, -1))
    u_path = jnp.concatenate([u0[None], places[::-1]], axis=0)  # [N, B], diagonals 0 .. N-1
    n = jnp.arange(N)[:, None]
    t_path = n - u_path
    mask = n <= last[None, :]
    score = _at_terminal(delta, logit_lengths, label_lengths) + _at_terminal(blank_nbu, logit_lengths, label_lengths)
    t_path, u_path, mask = jnp.where(mask, t_path, 0).T, jnp.where(mask, u_path, 0).T, mask.T  # [B, N]
    writes = mask[:, 1:] & (u_path[:, 1:] == u_path[:, :-1] + 1)  # the move leaving node n wrote y_{u+1}
    index = jnp.where(writes, u_path[:, :-1], U1 - 1)  # label y_{u+1} goes to place u; other moves out of range
    frames = jnp.full((B, U1 - 1), -1, jnp.int32).at[b[:, None], index].set(t_path[:, :-1].astype(jnp.int32),
                                                                            mode="drop")
    return Alignment(t_path, u_path, mask, score, frames)


def viterbi_alignment(logits, labels, logit_lengths, label_lengths, *, blank: int = 0) -> Alignment:
    """The single most probable alignment: :func:`forward_sweep` with max instead of sum, then a
    backtrack (a reverse ``lax.scan``) from each terminal node. Arguments as in :func:`rnnt_loss`."""
    _check(logits, labels, logit_lengths, label_lengths, blank)
    return _viterbi(logits, jnp.asarray(labels), jnp.asarray(logit_lengths, jnp.int32),
                    jnp.asarray(label_lengths, jnp.int32), int(blank))


# --------------------------------------------------------------------------------------------
# The model: transcription, prediction and joint networks
# --------------------------------------------------------------------------------------------


class Transducer(nnx.Module):
    """Graves's RNN Transducer with GRUs: two cursors and a joint network.

    * transcription network: the shared bidirectional GRU over the source, one frame per source
      token (EOS included): f_t = [fwd h_t; bwd h_t], ``[B, T, 2 * hidden]``;
    * prediction network: a GRU over BOS, y_1, .., y_U: g_u summarises the labels written so far,
      ``[B, U+1, prediction]`` (Graves fed an all-zero vector where we feed BOS);
    * joint network (with the tanh hidden layer of Graves, Mohamed & Hinton, 2013; the 2012 paper
      added the two networks' outputs directly):

          logits(t, u) = tanh(f_t W_f + g_u W_g + b) W_o + b_o,        ``[B, T, U+1, |V_y|]``.

    Output id 0 (PAD) is the blank; BOS and EOS get a fixed logit of -1e9, so the model never
    writes them.
    """

    def __init__(self, source_vocab: int, target_vocab: int, *, embed: int = 64, hidden: int = 128,
                 prediction: int = 128, joint: int = 128, rngs: nnx.Rngs):
        _checks.positive_ints(source_vocab=source_vocab, target_vocab=target_vocab, embed=embed, hidden=hidden,
                              prediction=prediction, joint=joint)
        if target_vocab <= 3:
            raise ValueError(f"target_vocab: expected more than the 3 special tokens, got {target_vocab}")
        self.target_vocab = target_vocab
        self.encoder = rnn.GRUEncoder(source_vocab, embed, hidden, bidirectional=True, rngs=rngs)
        self.target_embed = nnx.Embed(target_vocab, embed, rngs=rngs)
        self.prediction = rnn.GRU(embed, prediction, rngs=rngs)
        self.joint_f = nnx.Linear(2 * hidden, joint, rngs=rngs)
        self.joint_g = nnx.Linear(prediction, joint, use_bias=False, rngs=rngs)
        self.joint_out = nnx.Linear(joint, target_vocab, rngs=rngs)

    def transcribe(self, source: jax.Array, source_lengths: jax.Array) -> jax.Array:
        """f_t W_f + b for every frame: source ``[B, T]`` -> ``[B, T, joint]`` (the frames' half of the joint)."""
        return self.joint_f(self.encoder(source, source_lengths).states)

    def predict(self, target_in: jax.Array, label_lengths: jax.Array) -> jax.Array:
        """g_u W_g for every prefix: target_in ``[B, U+1]`` = BOS, y_1 .. y_U -> ``[B, U+1, joint]``."""
        g, _ = self.prediction.scan(self.target_embed(target_in), label_lengths + 1)
        return self.joint_g(g)

    def joint(self, f: jax.Array, g: jax.Array) -> jax.Array:
        """Logits from the two halves: f ``[..., joint]`` + g ``[..., joint]`` (broadcast) -> ``[..., |V_y|]``."""
        logits = self.joint_out(jnp.tanh(f + g))
        forbidden = jnp.zeros(self.target_vocab, bool).at[jnp.array([1, 2])].set(True)  # BOS, EOS
        return jnp.where(forbidden, _FORBIDDEN_LOGIT, logits)

    def __call__(self, source: jax.Array, source_lengths: jax.Array, target_in: jax.Array,
                 label_lengths: jax.Array) -> jax.Array:
        """Logits at every node of the lattice, ``[B, T, U+1, |V_y|]``.

        Args:
          source: ``[B, T]`` token ids (EOS-terminated, PAD-padded); source_lengths: ``[B]`` = T_b.
          target_in: ``[B, U+1]`` BOS, y_1 .. y_U, PAD (``tasks.Batch.target_in``); label_lengths: ``[B]`` = U_b.
        """
        if jnp.ndim(target_in) != 2 or jnp.shape(target_in)[0] != jnp.shape(source)[0]:
            raise ValueError(f"target_in: expected shape [{jnp.shape(source)[0]}, U+1], got {tuple(jnp.shape(target_in))}")
        f = self.transcribe(source, source_lengths)  # [B, T, J]
        g = self.predict(target_in, label_lengths)  # [B, U+1, J]
        return self.joint(f[:, :, None, :], g[:, None, :, :])


def loss(model: Transducer, batch) -> tuple[jax.Array, dict]:
    """-log Pr(y | x) summed over the batch, per output symbol (U_b labels + the final blank).

    For :func:`attention_course.train.fit`. The labels are ``batch.target_in[:, 1:]`` (y_1 .. y_U,
    no EOS) and U_b = ``target_lengths - 1``; T_b = ``source_lengths`` (EOS is a frame too).
    """
    label_lengths = batch.target_lengths - 1
    logits = model(batch.source, batch.source_lengths, batch.target_in, label_lengths)
    nll = -_log_likelihood(logits, batch.target_in[:, 1:], batch.source_lengths, label_lengths, 0)  # [B]
    value = jnp.sum(nll) / jnp.sum(label_lengths + 1)
    return value, {"nll": value}


@partial(jax.jit, static_argnums=(0, 4, 5))
def _greedy(graphdef, state, source, source_lengths, max_symbols: int, max_length: int):
    model = nnx.merge(graphdef, state)
    B, T = source.shape
    f = model.transcribe(source, source_lengths)  # [B, T, J]
    h0 = model.prediction.initial_state(B)
    h = model.prediction(h0, model.target_embed(jnp.full((B,), 1, jnp.int32)))  # after reading BOS
    carry = dict(t=jnp.zeros(B, jnp.int32), u=jnp.zeros(B, jnp.int32), k=jnp.zeros(B, jnp.int32), h=h,
                 tokens=jnp.zeros((B, max_length), jnp.int32))

    def running(c):
        return c["t"] < source_lengths

    def body(c):
        f_t = f[jnp.arange(B), jnp.minimum(c["t"], T - 1)]  # [B, J]
        logits = model.joint(f_t, model.joint_g(c["h"]))  # [B, V]
        best = jnp.argmax(logits, axis=-1)
        write = running(c) & (best != 0) & (c["k"] < max_symbols) & (c["u"] < max_length)
        tokens = c["tokens"].at[jnp.arange(B), jnp.minimum(c["u"], max_length - 1)].set(
            jnp.where(write, best, c["tokens"][jnp.arange(B), jnp.minimum(c["u"], max_length - 1)]))
        h_new = model.prediction(c["h"], model.target_embed(best))
        advance = running(c) & ~write  # blank, or the cap on symbols per frame: move the source cursor
        return dict(t=c["t"] + advance, u=c["u"] + write, k=jnp.where(write, c["k"] + 1, 0),
                    h=jnp.where(write[:, None], h_new, c["h"]), tokens=tokens)

    out = jax.lax.while_loop(lambda c: jnp.any(running(c)), body, carry)
    return out["tokens"], out["u"]


def greedy_decode(model: Transducer, source, source_lengths, *, max_symbols: int = 3,
                  max_length: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Greedy transduction: at node (t, u) write the most probable symbol; a blank moves to frame t+1.

    At most ``max_symbols`` labels are written per frame (then the source cursor is moved anyway),
    and at most ``max_length`` in all (default 2 T). One ``lax.while_loop`` for the whole batch, every
    example with its own cursors; jit-compiled once per (model structure, shape, caps).

    Returns:
      (tokens ``[B, max_length]`` label ids, PAD after the last one; lengths ``[B]``).
    """
    if jnp.ndim(source) != 2:
        raise ValueError(f"source: expected shape [B, T], got {tuple(jnp.shape(source))}")
    B, T = jnp.shape(source)
    rnn._check_lengths(jnp.asarray(source_lengths), B, T, "source_lengths")
    _checks.positive_int("max_symbols", max_symbols)
    max_length = 2 * T if max_length is None else max_length
    _checks.positive_int("max_length", max_length)
    graphdef, state = nnx.split(model)
    return _greedy(graphdef, state, jnp.asarray(source, jnp.int32), jnp.asarray(source_lengths, jnp.int32),
                   max_symbols, max_length)


def transduce(model: Transducer, pairs, task, *, batch_size: int = 100, edges=None, max_symbols: int = 3):
    """Greedy-decode every pair (bucketed like :func:`attention_course.tasks.eval_batches`), in the
    order of ``pairs``: a :class:`attention_course.decode.Translation` without attention."""
    from attention_course import decode, tasks

    task = tasks.get_task(task) if isinstance(task, str) else task
    order = tasks.eval_order(pairs, edges=edges)
    hyps = []
    for batch, real in tasks.eval_batches(pairs, task, batch_size, edges=edges):
        tokens, _ = greedy_decode(model, batch.source, batch.source_lengths, max_symbols=max_symbols)
        tokens = np.asarray(tokens)
        hyps += [task.target_vocab.decode(tokens[k]) for k in np.flatnonzero(real)]
    hypotheses = [None] * len(pairs)
    for row, index in enumerate(order):
        hypotheses[index] = hyps[row]
    return decode.Translation(hypotheses=hypotheses, references=[list(p.target) for p in pairs],
                              source_lengths=np.array([len(p.source) for p in pairs]), attention=None)
