"""GRU encoders over padded batches: the recurrent reader every chapter before the Transformer uses.

The gated recurrent unit was introduced with the RNN encoder–decoder by Cho et al. (2014). This
module writes its update as one pure function, :func:`gru_cell`, in the variant used by cuDNN and
Flax (the reset gate multiplies ``h U_n`` after the matrix product; Cho et al. apply it to ``h``
before), and runs it over time with ``jax.lax.scan``:

    r_t = sigmoid(x_t W_r + b_r + h_{t-1} U_r)
    z_t = sigmoid(x_t W_z + b_z + h_{t-1} U_z)
    n_t = tanh(x_t W_n + b_n + r_t * (h_{t-1} U_n))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

Row-vector convention (``x @ W``), batch axis first. Padding is handled by freezing the state
after each sequence's true length, so padding never changes a real position's output, and the
final state is the state at the true length. The backward direction of a bidirectional encoder
reverses each sequence *within its own length*, so that it too starts at the last real word.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["gru_cell", "GRU", "GRUEncoder", "EncoderOutput", "reverse_padded", "lengths_to_mask", "state_at_length"]


def gru_cell(h: jax.Array, x: jax.Array, W: jax.Array, b: jax.Array, U: jax.Array) -> jax.Array:
    """One GRU step.

    Args:
      h: previous state h_{t-1}, ``[B, H]``.
      x: input x_t, ``[B, d]``.
      W: input weights ``[d, 3H]`` for the gates r, z and the candidate n (in that order).
      b: biases ``[3H]`` (or ``[B, 3H]``: a bias per sequence, added to x W).
      U: recurrent weights ``[H, 3H]`` for r, z, n.

    Returns:
      h_t, ``[B, H]``.
    """
    xw = x @ W + b  # [B, 3H]
    hu = h @ U  # [B, 3H]
    xr, xz, xn = jnp.split(xw, 3, axis=-1)
    hr, hz, hn = jnp.split(hu, 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    return (1.0 - z) * n + z * h


def lengths_to_mask(lengths: jax.Array, width: int) -> jax.Array:
    """Boolean mask ``[B, width]``: True at positions t < lengths[b] (the real tokens)."""
    return jnp.arange(width)[None, :] < jnp.asarray(lengths)[:, None]


def state_at_length(states: jax.Array, lengths: jax.Array) -> jax.Array:
    """The state at each sequence's last real position: ``states[b, lengths[b] - 1]``.

    Args:
      states: ``[B, T, H]``, one state per position (padding after each sequence's length).
      lengths: ``[B]`` true lengths in [1, T].

    Returns:
      ``[B, H]``. Not ``states[:, -1]``, which for a padded sequence is a padding position.
    """
    if jnp.ndim(states) != 3:
        raise ValueError(f"states: expected shape [B, T, H], got {tuple(jnp.shape(states))}")
    _check_lengths(lengths, states.shape[0], states.shape[1])
    index = (jnp.asarray(lengths) - 1)[:, None, None]  # [B, 1, 1]
    return jnp.take_along_axis(states, index, axis=1)[:, 0]


def reverse_padded(x: jax.Array, lengths: jax.Array) -> jax.Array:
    """Reverse each sequence of ``x`` ``[B, T, ...]`` within its own length; padding stays in place.

    ``[a, b, c, PAD, PAD]`` with length 3 becomes ``[c, b, a, PAD, PAD]``. Applying it twice is
    the identity.
    """
    T = x.shape[1]
    t = jnp.arange(T)[None, :]  # [1, T]
    lengths = jnp.asarray(lengths)[:, None]  # [B, 1]
    index = jnp.where(t < lengths, lengths - 1 - t, t)  # [B, T]
    return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_lengths(lengths, batch: int, width: int, name: str = "lengths") -> None:
    shape = tuple(jnp.shape(lengths))
    if shape != (batch,):
        raise ValueError(f"{name}: expected shape ({batch},) (one length per sequence), got {shape}")
    if not jnp.issubdtype(jnp.result_type(lengths), jnp.integer):
        raise ValueError(f"{name}: expected integers, got dtype {jnp.result_type(lengths)}")
    if _is_concrete(lengths):
        lo, hi = int(jnp.min(lengths)), int(jnp.max(lengths))
        if lo < 1 or hi > width:
            raise ValueError(f"{name}: every length must be in [1, {width}] (the padded width), got min {lo}, max {hi}")


class GRU(nnx.Module):
    """A GRU layer: parameters W ``[d, 3H]``, b ``[3H]``, U ``[H, 3H]`` (gates r, z, n).

    ``gru(h, x)`` takes one step (a decoder uses this); ``gru.scan(xs, lengths)`` reads a whole
    padded batch (an encoder uses this).
    """

    def __init__(self, in_features: int, hidden_features: int, *, rngs: nnx.Rngs):
        if in_features <= 0 or hidden_features <= 0:
            raise ValueError(
                f"in_features and hidden_features must be positive, got {in_features} and {hidden_features}"
            )
        self.in_features = in_features
        self.hidden_features = hidden_features
        H = hidden_features
        self.W = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (in_features, 3 * H)))
        self.b = nnx.Param(jnp.zeros((3 * H,)))
        self.U = nnx.Param(nnx.initializers.orthogonal()(rngs.params(), (H, 3 * H)))

    def __call__(self, h: jax.Array, x: jax.Array) -> jax.Array:
        """One step: h_{t-1} ``[B, H]``, x_t ``[B, d]`` -> h_t ``[B, H]``."""
        return gru_cell(h, x, self.W[...], self.b[...], self.U[...])

    def initial_state(self, batch: int) -> jax.Array:
        return jnp.zeros((batch, self.hidden_features))

    def scan(self, xs: jax.Array, lengths: jax.Array, h0: jax.Array | None = None,
             *, reverse: bool = False) -> tuple[jax.Array, jax.Array]:
        """Run over a padded batch.

        Args:
          xs: inputs ``[B, T, d]``.
          lengths: true lengths ``[B]``, each in [1, T].
          h0: initial state ``[B, H]`` (zeros if None).
          reverse: read each sequence from its last real position to its first.

        Returns:
          (states ``[B, T, H]``, zero at padded positions; final ``[B, H]``,
          the state after the last real input, i.e. at position length-1 going
          forward, or position 0 in reverse).
        """
        if xs.ndim != 3 or xs.shape[-1] != self.in_features:
            raise ValueError(f"xs: expected shape [B, T, {self.in_features}], "
                             f"got {tuple(xs.shape)}")
        B, T, _ = xs.shape
        _check_lengths(lengths, B, T)
        if h0 is None:
            h0 = self.initial_state(B)
        elif tuple(h0.shape) != (B, self.hidden_features):
            raise ValueError(f"h0: expected shape {(B, self.hidden_features)}, "
                             f"got {tuple(h0.shape)}")
        if reverse:
            xs = reverse_padded(xs, lengths)
        mask = lengths_to_mask(lengths, T)  # [B, T]
        W, b, U = self.W[...], self.b[...], self.U[...]
        # The input projection x_t W stays inside the step: hoisting it out as one
        # big matmul over [B*T, d] was measured 2x slower on XLA:CPU
        # (tests/benchmarks/bench_rnn.py).

        # jax.checkpoint: the backward pass recomputes each step's gates from h
        # instead of storing them for every t; on XLA:CPU, where the stored
        # gates cost more memory traffic than the recomputation, this made the
        # train step faster (tests/benchmarks/bench_torch.py, issue 16).
        @jax.checkpoint
        def step(h, inputs):
            x_t, m_t = inputs  # [B, d], [B]
            h_new = gru_cell(h, x_t, W, b, U)
            # past the true length the state is frozen
            h = jnp.where(m_t[:, None], h_new, h)
            return h, jnp.where(m_t[:, None], h, 0.0)

        final, states = jax.lax.scan(step, h0, (jnp.swapaxes(xs, 0, 1), mask.T))
        states = jnp.swapaxes(states, 0, 1)  # [B, T, H]
        if reverse:
            states = reverse_padded(states, lengths)
        return states, final


class EncoderOutput(NamedTuple):
    """What an encoder hands the decoder.

    states: h_j for every source position, ``[B, T_x, m]`` (zero at padding).
    final: the summary of the whole sentence, ``[B, m]``: the forward state at the true length,
      concatenated with the backward state at position 0 for a bidirectional encoder.
    backward_first: the backward state at position 0, ``[B, H]`` (h_1 with a left arrow, which
      Bahdanau et al. use to initialise the decoder), or None for a one-direction encoder.
    """

    states: jax.Array
    final: jax.Array
    backward_first: jax.Array | None


class GRUEncoder(nnx.Module):
    """Embedding + GRU over source token ids; one direction or bidirectional.

    ``m = hidden`` for one direction and ``m = 2 * hidden`` for a BiGRU (forward and backward
    states concatenated at each position, as in Bahdanau et al. 2014).
    """

    def __init__(self, vocab_size: int, embed_dim: int, hidden: int, *, bidirectional: bool = False,
                 rngs: nnx.Rngs):
        for name, value in (("vocab_size", vocab_size), ("embed_dim", embed_dim), ("hidden", hidden)):
            if value <= 0:
                raise ValueError(f"{name}: expected a positive size, got {value}")
        self.bidirectional = bidirectional
        self.hidden = hidden
        self.out_features = 2 * hidden if bidirectional else hidden
        self.embed = nnx.Embed(vocab_size, embed_dim, rngs=rngs)
        self.forward = GRU(embed_dim, hidden, rngs=rngs)
        self.backward = GRU(embed_dim, hidden, rngs=rngs) if bidirectional else None

    def __call__(self, tokens: jax.Array, lengths: jax.Array) -> EncoderOutput:
        """tokens ``[B, T_x]`` int, lengths ``[B]`` -> :class:`EncoderOutput`."""
        if tokens.ndim != 2:
            raise ValueError(f"tokens: expected shape [B, T_x], got {tuple(tokens.shape)}")
        _check_lengths(lengths, tokens.shape[0], tokens.shape[1])
        x = self.embed(tokens)  # [B, T, d_e]
        fwd_states, fwd_final = self.forward.scan(x, lengths)
        if self.backward is None:
            return EncoderOutput(fwd_states, fwd_final, None)
        bwd_states, bwd_final = self.backward.scan(x, lengths, reverse=True)
        states = jnp.concatenate([fwd_states, bwd_states], axis=-1)  # [B, T, 2H]
        final = jnp.concatenate([fwd_final, bwd_final], axis=-1)  # [B, 2H]
        return EncoderOutput(states, final, bwd_final)
