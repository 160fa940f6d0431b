"""Tests of attention_course.metrics, against hand-computed values and sacrebleu itself."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
import sacrebleu

from attention_course import metrics
from attention_course.metrics import Bucket

# --- token_accuracy ------------------------------------------------------------------------


def test_token_accuracy_counts_only_masked_positions():
    predicted = np.array([[5, 6, 7, 0], [5, 9, 0, 0]])
    gold = np.array([[5, 6, 8, 3], [5, 9, 4, 4]])
    mask = np.array([[True, True, True, False], [True, True, False, False]])
    # real positions: 3 + 2 = 5, correct: 2 + 2 = 4 (padding mismatches are ignored)
    assert metrics.token_accuracy(predicted, gold, mask) == pytest.approx(4 / 5)


def test_token_accuracy_accepts_jax_arrays():
    predicted = jnp.array([[1, 2], [3, 4]])
    mask = jnp.ones((2, 2), dtype=bool)
    assert metrics.token_accuracy(predicted, predicted, mask) == 1.0


@pytest.mark.parametrize(
    ("predicted", "gold", "mask", "argument"),
    [
        (np.zeros(3, int), np.zeros(3, int), np.ones(3, bool), "predicted"),
        (np.zeros((2, 3), int), np.zeros((3, 2), int), np.ones((2, 3), bool), "gold"),
        (np.zeros((2, 3), int), np.zeros((2, 3), int), np.ones((2, 4), bool), "mask"),
        (np.zeros((2, 3), int), np.zeros((2, 3), int), np.ones((2, 3), int), "mask"),
        (np.zeros((2, 3), int), np.zeros((2, 3), int), np.zeros((2, 3), bool), "mask"),
    ],
)
def test_token_accuracy_rejects_bad_inputs(predicted, gold, mask, argument):
    with pytest.raises(ValueError, match=f"^{argument}:"):
        metrics.token_accuracy(predicted, gold, mask)


def test_token_accuracy_error_states_expected_and_actual_shape():
    with pytest.raises(ValueError, match=r"expected shape \(2, 3\).*got \(3, 2\)"):
        metrics.token_accuracy(np.zeros((2, 3)), np.zeros((3, 2)), np.ones((2, 3), bool))


# --- exact_match ---------------------------------------------------------------------------


def test_exact_match():
    hyps = [("le", "chat"), ["le", "chien"], (1, 2, 3), ()]
    refs = [["le", "chat"], ("le", "chat"), (1, 2, 3), ("x",)]
    assert metrics.exact_match(hyps, refs) == pytest.approx(2 / 4)


def test_exact_match_requires_parallel_lists():
    with pytest.raises(ValueError, match="^references:"):
        metrics.exact_match([("a",)], [("a",), ("b",)])
    with pytest.raises(ValueError, match="^hypotheses:"):
        metrics.exact_match([], [])


# --- corpus_bleu ---------------------------------------------------------------------------


def test_bleu_identical_is_100_and_empty_is_0():
    refs = [("the", "cat", "sat", "on", "the", "mat")]
    assert metrics.corpus_bleu(refs, refs) == pytest.approx(100.0)
    assert metrics.corpus_bleu([()], refs) == 0.0
    assert 0.0 <= metrics.corpus_bleu([("the",)], refs) <= 100.0


def test_bleu_hand_computed_brevity_penalty():
    # every n-gram of the hypothesis matches, so BLEU = 100 * BP with BP = exp(1 - 6/4)
    hyp = [("a", "b", "c", "d")]
    ref = [("a", "b", "c", "d", "e", "f")]
    assert metrics.corpus_bleu(hyp, ref) == pytest.approx(100 * math.exp(1 - 6 / 4), abs=1e-6)


def test_bleu_does_not_resplit_tokens():
    # "chat," is one token here; sacrebleu's default 13a tokenizer would split off the comma
    # and score this pair 100
    hyp = [("le", "chat,", "noir", "mange", "bien")]
    ref = [("le", "chat", ",", "noir", "mange", "bien")]
    assert sacrebleu.corpus_bleu([" ".join(hyp[0])], [[" ".join(ref[0])]]).score > 99.9
    assert metrics.corpus_bleu(hyp, ref) < 50.0
    assert metrics.corpus_bleu(hyp, hyp) == pytest.approx(100.0)


def test_bleu_accepts_ids_and_strings_and_matches_sacrebleu():
    rng = np.random.default_rng(0)
    refs = [list(rng.integers(3, 12, size=rng.integers(3, 9))) for _ in range(20)]
    hyps = [[t if rng.random() < 0.7 else 99 for t in r] for r in refs]
    ours = metrics.corpus_bleu(hyps, refs)
    as_strings = metrics.corpus_bleu(
        [" ".join(map(str, h)) for h in hyps], [" ".join(map(str, r)) for r in refs]
    )
    expected = sacrebleu.corpus_bleu(
        [" ".join(map(str, h)) for h in hyps],
        [[" ".join(map(str, r)) for r in refs]],
        tokenize="none",
    ).score
    assert ours == pytest.approx(expected)
    assert as_strings == pytest.approx(expected)
    assert 0 < ours < 100


def test_bleu_requires_one_reference_per_hypothesis():
    with pytest.raises(ValueError, match=r"^references: expected 2 sentences.*got 1"):
        metrics.corpus_bleu([("a",), ("b",)], [("a",)])


# --- bucketize / by_length -----------------------------------------------------------------


def test_bucketize_uses_inclusive_upper_edges():
    got = metrics.bucketize([1, 10, 11, 20, 21, 30], (10, 20, 30))
    np.testing.assert_array_equal(got, [0, 0, 1, 1, 2, 2])
    assert metrics.bucketize(jnp.array([5]), (10,)).tolist() == [0]
    assert metrics.bucketize([], (10,)).shape == (0,)


@pytest.mark.parametrize(
    ("lengths", "edges", "argument"),
    [
        ([31], (10, 20, 30), "lengths"),
        ([0], (10, 20, 30), "lengths"),
        ([[1]], (10,), "lengths"),
        ([1], (), "edges"),
        ([1], (20, 10), "edges"),
        ([1], (10, 10), "edges"),
    ],
)
def test_bucketize_rejects_bad_inputs(lengths, edges, argument):
    with pytest.raises(ValueError, match=f"^{argument}:"):
        metrics.bucketize(lengths, edges)


def test_bucketize_error_names_the_last_edge():
    with pytest.raises(ValueError, match=r"<= the last edge 30, got 31"):
        metrics.bucketize([31], (10, 20, 30))


def test_by_length_applies_metric_per_bucket_and_reports_empty_buckets():
    hyps = [("a",), ("b",), ("c",), ("x",)]
    refs = [("a",), ("z",), ("c",), ("x",)]
    lengths = [3, 4, 25, 26]  # nothing in 11..20
    buckets = metrics.by_length(metrics.exact_match, hyps, refs, lengths, (10, 20, 30))
    assert [(b.lo, b.hi, b.count) for b in buckets] == [(1, 10, 2), (11, 20, 0), (21, 30, 2)]
    assert buckets[0].value == pytest.approx(0.5)
    assert math.isnan(buckets[1].value)
    assert buckets[2].value == pytest.approx(1.0)
    assert buckets[0].mid == 5.5
    assert metrics.bucket_labels(buckets) == ["1\u201310", "11\u201320", "21\u201330"]


def test_by_length_never_calls_metric_on_empty_bucket():
    calls = []

    def metric(h, r):
        calls.append(len(h))
        return 1.0

    metrics.by_length(metric, [("a",)], [("a",)], [15], (10, 20))
    assert calls == [1]


def test_by_length_with_bleu():
    hyps = [("a", "b", "c", "d")] * 2 + [("p", "q", "r", "s", "t")]
    refs = [("a", "b", "c", "d")] * 2 + [("x", "y", "z", "w", "v")]
    buckets = metrics.by_length(metrics.corpus_bleu, hyps, refs, [4, 4, 5], (4, 8))
    assert buckets[0].value == pytest.approx(100.0)
    assert buckets[1].value == 0.0


def test_by_length_checks_lengths_shape():
    with pytest.raises(ValueError, match=r"^lengths: expected shape \(2,\)"):
        metrics.by_length(metrics.exact_match, [("a",), ("b",)], [("a",), ("b",)], [1], (5,))


def test_bucket_is_frozen():
    bucket = Bucket(lo=1, hi=10, count=3, value=0.5)
    with pytest.raises(AttributeError):
        bucket.count = 4


# --- attention_to_links / alignment_error_rate ---------------------------------------------


def test_attention_to_links_ignores_padding():
    weights = np.array(
        [
            [0.1, 0.7, 0.2, 0.0],
            [0.6, 0.1, 0.3, 0.0],
            [0.0, 0.1, 0.1, 0.8],  # the 0.8 sits in a padded column
            [0.9, 0.0, 0.0, 0.1],  # padded row
        ]
    )
    assert metrics.attention_to_links(weights, 3, 3) == {(0, 1), (1, 0), (2, 1)}
    assert metrics.attention_to_links(jnp.asarray(weights), 0, 3) == set()


@pytest.mark.parametrize(
    ("shape", "ty", "tx", "argument"),
    [((3,), 1, 1, "weights"), ((3, 3), 4, 2, "target_length"), ((3, 3), 2, 0, "source_length")],
)
def test_attention_to_links_rejects_bad_inputs(shape, ty, tx, argument):
    with pytest.raises(ValueError, match=f"^{argument}:"):
        metrics.attention_to_links(np.zeros(shape), ty, tx)


def test_aer_perfect_and_disjoint():
    gold = [{(0, 0), (1, 1)}]
    assert metrics.alignment_error_rate(gold, gold) == 0.0
    assert metrics.alignment_error_rate([{(0, 1), (1, 0)}], gold) == 1.0


def test_aer_hand_computed_with_possible_links():
    predicted = [[(0, 0), (1, 1), (2, 1)]]
    sure = [[(0, 0), (1, 2)]]
    possible = [[(1, 1)]]  # sure links are added: P = {(0,0), (1,2), (1,1)}
    # |A∩S| = 1, |A∩P| = 2, |A| = 3, |S| = 2  ->  1 - 3/5
    assert metrics.alignment_error_rate(predicted, sure, possible) == pytest.approx(0.4)
    # without possible links, P = S: |A∩S| = |A∩P| = 1  ->  1 - 2/5
    assert metrics.alignment_error_rate(predicted, sure) == pytest.approx(0.6)


def test_aer_is_pooled_over_the_corpus_not_averaged():
    predicted = [{(0, 0)}, {(0, 1)}]
    sure = [{(0, 0)}, {(0, 0), (1, 1)}]
    # per sentence: 0.0 and 1.0 (mean 0.5); pooled: 1 - (1 + 1) / (2 + 3) = 0.6
    assert metrics.alignment_error_rate(predicted, sure) == pytest.approx(0.6)


def test_aer_of_links_from_attention():
    weights = np.eye(3)[::-1]  # reversal: target i attends to source 2 - i
    links = metrics.attention_to_links(weights, 3, 3)
    assert metrics.alignment_error_rate([links], [{(0, 2), (1, 1), (2, 0)}]) == 0.0


def test_aer_rejects_bad_inputs():
    with pytest.raises(ValueError, match="^sure:"):
        metrics.alignment_error_rate([set()], [set(), set()])
    with pytest.raises(ValueError, match="^possible:"):
        metrics.alignment_error_rate([set()], [set()], [])
    with pytest.raises(ValueError, match=r"^predicted\[0\]:"):
        metrics.alignment_error_rate([[(0, 1, 2)]], [[(0, 0)]])
    with pytest.raises(ValueError, match="at least one link"):
        metrics.alignment_error_rate([set()], [set()])


def test_bucket_table_fits_and_aligns():
    a = [metrics.Bucket(1, 10, 3, 97.123), metrics.Bucket(11, 20, 2, float("nan"))]
    b = [metrics.Bucket(1, 10, 3, 5.0), metrics.Bucket(11, 20, 2, 100.0)]
    table = metrics.bucket_table({"RNNsearch-50": a, "x": b})
    lines = table.split("\n")
    assert lines[0].split() == ["1–10", "11–20"]
    assert lines[1].split() == ["RNNsearch-50", "97.1", "nan"]
    assert lines[2].split() == ["x", "5.0", "100.0"]
    assert len({len(line) for line in lines}) == 1  # columns line up
    with pytest.raises(ValueError, match="rows"):
        metrics.bucket_table({})
    with pytest.raises(ValueError, match=r"rows\['x'\]"):
        metrics.bucket_table({"a": a, "x": b[:1]})
