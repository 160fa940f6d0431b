"""Chapter 03, hard-coded diagonal attention, as coursework.

The synchronous cursor's graded name, reference and tolerance come from the notebook's check. The
checks of the two exercises on gold alignments run on the chapter's probe sentences (``probe``),
which an experiment that grading does not run makes, and one of them checks a value: their parts
are written here.  The hidden cases are written here, in other shapes than the notebook's visible
cases.
"""

from __future__ import annotations

import numpy as np

from attention_course.coursework.spec import Chapter, Exercise, Part, ref


def _pairs(task: str, n: int, seed: int, max_length: int = 14):
    from attention_course import tasks

    return tasks.generate(task, n, seed=seed, min_length=1, max_length=max_length)


def _rms_cases(rng):
    return [(_pairs("translate", 120, 1501),), (_pairs("reverse", 80, 1502),)]


def _rms_reference(pairs):
    from attention_course import diagonal

    return float(np.sqrt(np.mean(diagonal.gold_offsets(pairs) ** 2)))


def _near_cases(rng):
    return [
        (_pairs("copy", 100, 1503), 0.5),
        (_pairs("reverse", 100, 1504), 2.0),
        (_pairs("translate", 100, 1505), 1.0),
        (_pairs("translate", 60, 1506), 0.0),
    ]


CHAPTER = Chapter(
    "03",
    "diagonal",
    (
        Exercise("ex-diagonal-synchronous", 2,
                 hidden=lambda rng: [(4, 7), (7, 4), (1, 3), (6, 6), (10, 3)],
                 off=("diagonal.batched_diagonal_weights",)),
        Exercise(
            "ex-diagonal-width",
            2,
            (Part("rms_offset", "function", _rms_cases, _rms_reference, atol=1e-4),),
            off=("diagonal.gold_offsets", "diagonal.coverage"),
        ),
        Exercise(
            "ex-diagonal-reverse",
            2,
            (
                Part(
                    "near_cursor",
                    "function",
                    _near_cases,
                    lambda pairs, radius: ref("diagonal.coverage")(pairs, radius=radius),
                ),
            ),
            off=("diagonal.coverage",),
        ),
    ),
    {
        "ex-diagonal-width": "why a band of this width, and what a much wider one would do (prose)",
        "ex-diagonal-reverse": "why no fixed alignment can be right for copy and reverse (prose)",
    },
)
