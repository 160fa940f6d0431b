"""Chapter 02, two cursors (the RNN Transducer), as coursework.

Written before the notebook's checks were read for the graded names: each exercise gives its
parts (graded names, references, tolerances) and hidden cases here, in other shapes than the
notebook's visible cases; the references its check calls are switched off with those listed.
"""

from __future__ import annotations

import numpy as np

from attention_course.coursework import spec
from attention_course.coursework.spec import Chapter, Exercise, Part, ref, seeded

def _lattice_case(rng):
    from attention_course import transducer

    jnp = spec.jnp()
    T, U = 6, 4
    logits = jnp.asarray(2 * rng.normal(size=(1, T, U + 1, 7)), jnp.float32)
    labels = jnp.asarray(rng.integers(1, 7, size=(1, U)))
    return tuple(
        np.asarray(a[0], np.float64) for a in transducer.lattice(logits, labels, jnp.array([U]))
    )


def _forward_table_reference(log_blank, log_y):
    """The notebook's reference: the package's sweep on one full lattice."""
    from attention_course import transducer

    jnp = spec.jnp()
    T, U1 = log_blank.shape
    lattice = [transducer.diagonals(jnp.asarray(x, jnp.float32)[None]) for x in (log_blank, log_y)]
    valid = transducer.diagonals(jnp.ones((1, T, U1)), fill=0.0) > 0
    alpha = transducer.forward_sweep(*lattice, valid)
    return np.asarray(transducer.unskew(jnp.swapaxes(alpha, 0, 1), T)[0])


def _count_cases(rng):
    return [(T, U) for T in (1, 2, 5, 8) for U in (0, 1, 4, 7)] + [(20, 9), (60, 30)]


def _one_frame_case(rng):
    U, V = 5, 9
    return 2 * rng.normal(size=(U + 1, V)).astype(np.float32), rng.integers(1, V, size=U)


def _one_frame_reference(logits, labels):
    from attention_course import transducer

    jnp = spec.jnp()
    return float(
        transducer.rnnt_loss(
            jnp.asarray(logits)[None, None],
            jnp.asarray(labels)[None],
            jnp.array([1]),
            jnp.array([len(labels)]),
        )[0]
    )


CHAPTER = Chapter(
    "02",
    "cursors",
    (
        Exercise(
            "ex-cursors-forward",
            2,
            (
                Part(
                    "forward_table",
                    "function",
                    seeded(4, _lattice_case),
                    _forward_table_reference,
                    atol=1e-4,
                ),
            ),
            off=("transducer.forward_sweep", "transducer.rnnt_loss", "transducer.unskew"),
        ),
        Exercise(
            "ex-cursors-count",
            2,
            (Part("count_paths", "function", _count_cases, ref("transducer.count_alignments")),),
            off=("transducer.count_alignments", "transducer.alignments"),
        ),
        Exercise(
            "ex-cursors-short",
            2,
            (
                Part(
                    "one_frame_nll",
                    "function",
                    seeded(5, _one_frame_case),
                    _one_frame_reference,
                    atol=1e-4,
                ),
            ),
            off=(
                "transducer.rnnt_loss",
                "transducer.rnnt_loss_brute_force",
                "transducer.rnnt_loss_nested_scan",
                "transducer.forward_sweep",
            ),
        ),
    ),
    {
        "ex-cursors-frames": "predict, then measure on the trained transducers: the share "
        "depends on models that only full mode trains",
        "ex-cursors-count": "the closed form explained (prose)",
        "ex-cursors-short": "how many alignments there are for one frame (prose)",
    },
)
