"""Our GRU encoder (input projections hoisted out of the scan) against Flax's nnx.RNN(GRUCell)."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from attention_course import rnn
from conftest import best_of


def test_gru_scan_against_flax_rnn():
    print("\nGRU over [B, T, 64] -> H=128, one direction, CPU/GPU as available")
    print(f"{'B':>4} {'T':>4} {'ours ms':>9} {'flax ms':>9} {'flax/ours':>10}")
    for B, T in [(32, 20), (32, 50), (64, 100)]:
        gru = rnn.GRU(64, 128, rngs=nnx.Rngs(0))
        cell = nnx.GRUCell(64, 128, rngs=nnx.Rngs(1))
        cell.dense_i.kernel[...] = gru.W[...]
        cell.dense_i.bias[...] = gru.b[...]
        cell.dense_h.kernel[...] = gru.U[...]
        ref = nnx.RNN(cell)
        xs = jax.random.normal(jax.random.PRNGKey(0), (B, T, 64))
        lengths = jnp.full((B,), T)
        ours = nnx.jit(lambda m, x, n: m.scan(x, n)[0])
        theirs = nnx.jit(lambda m, x, n: m(x, seq_lengths=n))
        np.testing.assert_allclose(ours(gru, xs, lengths), theirs(ref, xs, lengths), atol=1e-4)
        t_ours = best_of(ours, gru, xs, lengths)
        t_ref = best_of(theirs, ref, xs, lengths)
        print(f"{B:>4} {T:>4} {1e3 * t_ours:>9.2f} {1e3 * t_ref:>9.2f} {t_ref / t_ours:>10.2f}")
