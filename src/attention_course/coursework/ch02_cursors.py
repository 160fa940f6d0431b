"""Chapter 02, two cursors (the RNN Transducer), as coursework.

The graded names, references and tolerances come from the notebook's check calls, except for
counting the alignments, whose check has two calls (the closed form and the enumeration): it is
graded against the closed form.  The hidden cases are written here, in other shapes than the
notebook's visible cases.
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


def _count_cases(rng):
    return [(T, U) for T in (1, 2, 5, 8) for U in (0, 1, 4, 7)] + [(20, 9), (60, 30)]


def _one_frame_case(rng):
    U, V = 5, 9
    return 2 * rng.normal(size=(U + 1, V)).astype(np.float32), rng.integers(1, V, size=U)


CHAPTER = Chapter(
    "02",
    "cursors",
    (
        Exercise("ex-cursors-forward", 2, hidden=seeded(4, _lattice_case),
                 off=("transducer.rnnt_loss",)),
        Exercise(
            "ex-cursors-count",
            2,
            (Part("count_paths", "function", _count_cases, ref("transducer.count_alignments")),),
            off=("transducer.count_alignments", "transducer.alignments"),
        ),
        Exercise("ex-cursors-short", 2, hidden=seeded(5, _one_frame_case),
                 off=("transducer.rnnt_loss_brute_force", "transducer.rnnt_loss_nested_scan",
                      "transducer.forward_sweep")),
    ),
    {
        "ex-cursors-frames": "predict, then measure on the trained transducers: the share "
        "depends on models that only full mode trains",
        "ex-cursors-count": "the closed form explained (prose)",
        "ex-cursors-short": "how many alignments there are for one frame (prose)",
    },
)
