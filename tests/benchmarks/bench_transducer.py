"""The transducer loss: one scan over the T + U anti-diagonals (T + U - 1 sequential steps) against
the straightforward double loop, a scan over frames with a scan over labels inside (T (U + 1)
sequential steps), on the same inputs.

Two measurements per size: the dynamic programme alone (value and gradient with respect to the
lattice log-probabilities), and the whole loss (log-softmax over the vocabulary included, value and
gradient with respect to the logits), where the shared O(T U V) normalisation dilutes the ratio."""

import jax
import jax.numpy as jnp
import numpy as np

from attention_course import transducer as tr
from conftest import best_of


def _grad_fn(log_pr):
    return jax.jit(jax.value_and_grad(lambda *a: log_pr(*a).sum(), argnums=(0, 1)))


def test_antidiagonal_sweep_against_nested_scan():
    B, V = 4, 16
    print(f"\nRNN-T loss, B={B}, V={V}, U = T/5, mixed lengths, value and gradient; {jax.default_backend()}")
    print(f"{'T':>5} {'U':>4} | {'DP: diag ms':>11} {'nested ms':>10} {'ratio':>6} | "
          f"{'loss: diag ms':>13} {'nested ms':>10} {'ratio':>6}")
    for T in (100, 400, 1000):
        U = T // 5
        rng = np.random.default_rng(T)
        logits = jnp.asarray(rng.normal(size=(B, T, U + 1, V)), jnp.float32)
        labels = jnp.asarray(rng.integers(1, V, size=(B, U)))
        t_len = jnp.asarray([T, T - 7, T // 2, 1])
        u_len = jnp.asarray([U, U - 3, U // 2, 0])
        log_blank, log_y = jax.jit(tr.lattice)(logits, labels, u_len)

        dp_diag = _grad_fn(lambda b, y: tr._log_pr_antidiagonal(b, y, t_len, u_len))
        dp_nested = _grad_fn(lambda b, y: tr._log_pr_nested(b, y, t_len, u_len))
        (a, ga), (b, gb) = dp_diag(log_blank, log_y), dp_nested(log_blank, log_y)
        np.testing.assert_allclose(a, b, rtol=1e-5)
        for x, y in zip(ga, gb):  # posteriors in [0, 1]; float32 logs of size ~T round at ~1e-4 of them
            np.testing.assert_allclose(x, y, atol=5e-3)
        dp = [best_of(f, log_blank, log_y, repeat=3, number=2) for f in (dp_diag, dp_nested)]

        full_diag = jax.jit(jax.value_and_grad(lambda z: tr._log_likelihood(z, labels, t_len, u_len, 0).sum()))
        full_nested = jax.jit(jax.value_and_grad(lambda z: tr._log_likelihood_nested(z, labels, t_len, u_len, 0).sum()))
        np.testing.assert_allclose(full_diag(logits)[0], full_nested(logits)[0], rtol=1e-5)
        full = [best_of(f, logits, repeat=3, number=2) for f in (full_diag, full_nested)]
        print(f"{T:>5} {U:>4} | {1e3 * dp[0]:>11.2f} {1e3 * dp[1]:>10.2f} {dp[1] / dp[0]:>6.1f} | "
              f"{1e3 * full[0]:>13.2f} {1e3 * full[1]:>10.2f} {full[1] / full[0]:>6.1f}")
