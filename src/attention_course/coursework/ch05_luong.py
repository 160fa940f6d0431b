"""Chapter 05, Luong's variants, as coursework.

The graded names, references, tolerances and hidden cases all come from the notebook's check
calls (the hidden cases drawn from their ``make_case`` with the hidden seed); this file gives the
points and what is graded by hand.
"""

from attention_course.coursework.spec import Chapter, Exercise

CHAPTER = Chapter(
    "05",
    "luong",
    (
        Exercise("ex-luong-general", 2),
        Exercise("ex-luong-window", 2, off=("luong.local_weights",)),
        Exercise("ex-luong-position", 2),
        Exercise("ex-luong-reverse", 2),
    ),
    manual={
        "ex-luong-general": "what the general score is with W_a the identity (prose)",
        "ex-luong-window": "which rows are all False, and what local_weights must return (prose)",
        "ex-luong-position": "whether p in [0, S] is a problem (prose)",
        "ex-luong-reverse": "the prediction, and the three models trained against it (prose and "
        "a training run, minutes per model: too slow for the autograder)",
    },
)
