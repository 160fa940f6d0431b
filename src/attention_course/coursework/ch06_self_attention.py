"""Chapter 06, self-attention and the Transformer, as coursework.

The graded names, references and tolerances come from the notebook's check calls.  Three of them
check fixed cases only; their hidden cases are drawn here, other lengths and sizes than the
visible ones.
"""

from attention_course.coursework.spec import Chapter, Exercise


def _lengths(rng):
    return [int(T) for T in rng.integers(3, 80, size=5)]


def _tables(rng):
    return [(int(n), 2 * int(h)) for n, h in zip(rng.integers(2, 300, size=5),
                                                 rng.integers(1, 65, size=5))]


def _variances(rng):
    return [(int(d), round(float(sq), 2), round(float(sk), 2))
            for d, sq, sk in zip(rng.integers(2, 200, size=4), rng.uniform(0.3, 2.0, size=4),
                                 rng.uniform(0.3, 2.0, size=4))]


CHAPTER = Chapter(
    "06",
    "self_attention",
    (
        Exercise("ex-sdpa", 2, off=("efficient.materialised_attention",)),
        Exercise("ex-causal", 2, off=("efficient.sliding_window_mask",), hidden=_lengths),
        Exercise("ex-sinusoids", 2, hidden=_tables),
        Exercise("ex-variance", 2, hidden=_variances),
    ),
    manual={
        "ex-causal": "what the first position may read, and why the cache needs no mask (prose)",
        "ex-sinusoids": "the rotation M_k (a short proof)",
        "ex-variance": "the scaling, and the case of a mean mu != 0 (prose)",
        "ex-schedule": "the whole exercise: a plot, a training run of minutes and a prediction "
        "(prose), too slow for the autograder",
    },
)
