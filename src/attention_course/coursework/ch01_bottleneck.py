"""Chapter 01, the bottleneck (RNNencdec), as coursework.

The graded names, references and tolerances come from the notebook's check calls.  The
hidden cases are written here, in other shapes than the notebook's visible cases.
"""

from __future__ import annotations

import numpy as np

from attention_course.coursework import spec
from attention_course.coursework.spec import Chapter, Exercise, seeded


def _states_case(rng):
    jnp = spec.jnp()
    B, T, H = 5, 9, 4
    return jnp.asarray(rng.normal(size=(B, T, H)), jnp.float32), jnp.asarray(
        rng.integers(1, T + 1, size=B)
    )


def _logits_case(rng):
    jnp = spec.jnp()
    B, T, V = 2, 7, 11
    mask = rng.random((B, T)) < 0.6
    mask[1, 0] = True
    return (
        jnp.asarray(10 * rng.normal(size=(B, T, V)), jnp.float32),
        jnp.asarray(rng.integers(0, V, size=(B, T))),
        jnp.asarray(mask),
    )


def _source_case(rng):
    from attention_course import tasks

    jnp = spec.jnp()
    B, T = 5, 11
    lengths = rng.integers(1, T + 1, size=B)
    source = rng.integers(3, 30, size=(B, T))
    source = np.where(np.arange(T)[None] < lengths[:, None] - 1, source, 0)
    source[np.arange(B), lengths - 1] = tasks.EOS_ID
    return jnp.asarray(source), jnp.asarray(lengths)


CHAPTER = Chapter(
    "01",
    "bottleneck",
    (
        Exercise("ex-bottleneck-final-state", 2, hidden=seeded(6, _states_case)),
        Exercise("ex-bottleneck-objective", 2, hidden=seeded(5, _logits_case)),
        Exercise("ex-bottleneck-reverse", 2, hidden=seeded(6, _source_case),
                 off=("rnn.reverse_padded",)),
    ),
    {
        "ex-bottleneck-halve": "predict, then measure on the trained sweep: its answer is a "
        "prediction in prose and a measurement of models that only full mode trains",
        "ex-bottleneck-objective": "why jax.nn.log_softmax and not log(softmax) (prose)",
    },
)
