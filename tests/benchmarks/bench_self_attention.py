"""Chapter 06: our scaled dot-product attention against jax.nn.dot_product_attention.

Both compute softmax(q k^T / sqrt(d_k)) v with a padding mask, forward only and forward+backward,
jit-compiled, for several lengths n. The ratio jax/ours > 1 means ours is faster.
"""

import jax
import jax.numpy as jnp
import numpy as np

from attention_course import self_attention
from conftest import best_of

B, H, D = 4, 4, 16  # batch, heads, d_k


def _inputs(n):
    kq, kk, kv = jax.random.split(jax.random.PRNGKey(n), 3)
    q, k, v = (jax.random.normal(key, (B, H, n, D)) for key in (kq, kk, kv))
    lengths = jnp.linspace(n // 2, n, B).astype(jnp.int32)
    mask = jnp.arange(n)[None, :] < lengths[:, None]  # [B, S]: padding at the end
    return q, k, v, mask


def ours(q, k, v, mask):
    return self_attention.scaled_dot_product_attention(q, k, v, mask[:, None, None, :])[0]


def reference(q, k, v, mask):
    # jax.nn.dot_product_attention takes [B, T, N, H]; ours is [B, N, T, H]
    swap = lambda x: jnp.swapaxes(x, 1, 2)  # noqa: E731
    out = jax.nn.dot_product_attention(swap(q), swap(k), swap(v), mask=mask[:, None, None, :])
    return swap(out)


def _grad(fn):
    return jax.jit(jax.grad(lambda q, k, v, mask: jnp.sum(fn(q, k, v, mask) ** 2), argnums=(0, 1, 2)))


def test_scaled_dot_product_attention_against_jax():
    print(f"\nscaled dot-product attention, [B={B}, h={H}, n, d_k={D}], padding mask, "
          f"{jax.default_backend()}")
    print(f"{'n':>6} {'fwd ours ms':>12} {'fwd jax ms':>11} {'jax/ours':>9} "
          f"{'f+b ours ms':>12} {'f+b jax ms':>11} {'jax/ours':>9}")
    forward = {"ours": jax.jit(ours), "jax": jax.jit(reference)}
    backward = {"ours": _grad(ours), "jax": _grad(reference)}
    for n in (64, 256, 1024, 2048):
        args = _inputs(n)
        np.testing.assert_allclose(forward["ours"](*args), forward["jax"](*args), atol=1e-5)
        for g_ours, g_jax in zip(backward["ours"](*args), backward["jax"](*args)):
            np.testing.assert_allclose(g_ours, g_jax, atol=1e-4, rtol=1e-4)
        times = {(kind, name): best_of(fns[name], *args, repeat=3, number=2)
                 for kind, fns in (("fwd", forward), ("f+b", backward)) for name in fns}
        print(f"{n:>6} {1e3 * times['fwd', 'ours']:>12.2f} {1e3 * times['fwd', 'jax']:>11.2f} "
              f"{times['fwd', 'jax'] / times['fwd', 'ours']:>9.2f} "
              f"{1e3 * times['f+b', 'ours']:>12.2f} {1e3 * times['f+b', 'jax']:>11.2f} "
              f"{times['f+b', 'jax'] / times['f+b', 'ours']:>9.2f}")
