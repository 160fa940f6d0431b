"""Benchmarks: `make bench`. They report timings as ratios against a reference measured in the same
run, and assert only correctness (never a time)."""

import time

import jax


def best_of(fn, *args, repeat: int = 5, number: int = 3) -> float:
    """Best mean seconds per call over `repeat` rounds of `number` calls, after one warm-up call."""
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            jax.block_until_ready(fn(*args))
        best = min(best, (time.perf_counter() - start) / number)
    return best
