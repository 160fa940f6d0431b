"""Chapter 04, soft search (RNNsearch), as coursework.

The score's and the mask's graded names, references and tolerances come from the notebook's
checks. Precomputing and the heatmap prediction also grade values (the multiply-adds saved, two
source positions): their parts are written here.  The hidden cases are written here, in other
shapes than the notebook's visible cases.
"""

from __future__ import annotations


from attention_course.coursework import spec
from attention_course.coursework.spec import Chapter, Exercise, Part, one, ref, seeded

def _score_case(rng):
    jnp = spec.jnp()
    B, T, n, m, k = 3, 6, 4, 5, 7
    shapes = [(B, n), (B, T, m), (n, k), (m, k), (k,)]
    return tuple(jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in shapes)


def _projected_case(rng):
    s, h, W_a, U_a, v_a = _score_case(rng)
    return s, h @ U_a, W_a, v_a


def _mask_case(rng):
    jnp = spec.jnp()
    scores = jnp.asarray(20 * rng.normal(size=(3, 9)), jnp.float32)
    mask = rng.random((3, 9)) < 0.5
    mask[0] = False  # a fully padded row
    mask[1, 4] = True
    return scores, jnp.asarray(mask)


def _gold_position(target_word: str) -> int:
    """The source position the gold alignment links ``target_word`` to, in the exercise's pair.

    The honest answer in every mode: what a well-trained RNNsearch attends to in the book, and
    what the fast mode's barely trained model cannot be relied on to show."""
    from attention_course import tasks

    pair = tasks.translate_sentence("the cat sleeps while the green car waits".split())
    i = pair.target.index(target_word)
    (j,) = [j for t, j in pair.alignment if t == i]
    return j


CHAPTER = Chapter(
    "04",
    "soft_search",
    (
        Exercise("ex-search-score", 2, hidden=seeded(5, _score_case),
                 off=("soft_search.additive_score_projected",)),
        Exercise(
            "ex-search-precompute",
            2,
            (
                Part(
                    "scores_with_precomputed",
                    "function",
                    seeded(4, _projected_case),
                    ref("soft_search.additive_score_projected"),
                ),
                Part("saved", "value", one(), lambda: (50 - 1) * 50 * 64 * 32),
            ),
            off=("soft_search.additive_score", "soft_search.additive_score_projected"),
        ),
        Exercise("ex-search-mask", 2, hidden=seeded(5, _mask_case)),
        Exercise(
            "ex-search-predict",
            1,
            (
                Part("my_pendant", "value", one(), lambda: _gold_position("pendant")),
                Part("my_verte", "value", one(), lambda: _gold_position("verte")),
            ),
        ),
    ),
    {
        "ex-search-capacity": "an open experiment (train again, compare seeds); its answer "
        "is prose",
        "ex-search-mask": "why jnp.where is safer than multiplying by the mask (prose)",
        "ex-search-predict": "where the weight goes for que, explained (prose)",
    },
)
