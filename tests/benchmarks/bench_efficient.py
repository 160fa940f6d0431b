"""Chapter 07: blockwise attention against jax.nn.dot_product_attention and materialised attention."""

import jax
import numpy as np

from attention_course import efficient
from conftest import best_of


def _jax_nn(q, k, v):  # [T, d] -> jax.nn's [B, T, N, H] and back
    return jax.nn.dot_product_attention(q[None, :, None], k[None, :, None], v[None, :, None])[0, :, 0]


def test_blockwise_against_jax_nn_and_materialised():
    d = 64
    blockwise = jax.jit(lambda q, k, v: efficient.blockwise_attention(q, k, v, block_size=512))
    materialised = jax.jit(efficient.materialised_attention)
    reference = jax.jit(_jax_nn)
    print(f"\nattention over [n, {d}], forward, CPU/GPU as available")
    print(f"{'n':>6} {'blockwise ms':>13} {'jax.nn ms':>10} {'materialised ms':>16} "
          f"{'blockwise/jax.nn':>17} {'materialised/jax.nn':>20}")
    for n in (1024, 2048, 4096, 8192):
        q, k, v = jax.random.normal(jax.random.PRNGKey(n), (3, n, d))
        np.testing.assert_allclose(blockwise(q, k, v), reference(q, k, v), atol=1e-4)
        t_b = best_of(blockwise, q, k, v)
        t_j = best_of(reference, q, k, v)
        t_m = best_of(materialised, q, k, v)
        print(f"{n:>6} {1e3 * t_b:>13.2f} {1e3 * t_j:>10.2f} {1e3 * t_m:>16.2f} {t_b / t_j:>17.2f} "
              f"{t_m / t_j:>20.2f}")
