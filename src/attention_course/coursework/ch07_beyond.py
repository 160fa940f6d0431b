"""Chapter 07, attention at scale, as coursework.

The graded names, references, tolerances and hidden cases come from the notebook's check calls;
the import cell's eight-device subprocess is left out of grading (no exercise needs it).
"""

from attention_course.coursework.spec import Chapter, Exercise

CHAPTER = Chapter(
    "07",
    "beyond",
    (
        Exercise("ex-efficient-online", 2),
        Exercise("ex-efficient-step", 2, off=("efficient.linear_attention_recurrent",)),
        Exercise("ex-efficient-window", 2),
        Exercise("ex-efficient-memory", 1),
    ),
    manual={
        "ex-efficient-online": "why the correction e^(m - m'), and what goes wrong without the "
        "maximum (prose)",
        "ex-efficient-step": "the memory of one generated token, cache against state (prose)",
        "ex-efficient-window": "what window = 1 and window >= T give (prose)",
        "ex-efficient-memory": "how many n x n matrices the compiler plans for, and why (prose)",
    },
    imports_without=("eight_cpus",),
)
