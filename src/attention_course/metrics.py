"""How good is a translation, and where does the model look?  The course's metrics.

Every function takes NumPy arrays, JAX arrays or plain Python lists and returns plain Python
or NumPy values, so the numbers can be printed, plotted and compared in a notebook without
thinking about devices.  Bad inputs raise ``ValueError`` naming the argument, what was
expected and what was given.

Four families:

* **Accuracy** -- :func:`token_accuracy` (per position, under a mask) and
  :func:`exact_match` (whole sequences).
* **BLEU** -- :func:`corpus_bleu`, the machine-translation metric of Papineni et al. (2002),
  computed by `sacrebleu <https://github.com/mjpost/sacrebleu>`_ so our numbers follow the
  standard implementation.
* **By length** -- :func:`bucketize`, :func:`by_length` and :func:`bucket_labels` split a
  test set by sentence length, which is how Cho et al. (2014) and Bahdanau et al. (2014)
  showed that a single fixed vector breaks down on long sentences.
* **Alignment** -- :func:`attention_to_links` turns an attention matrix into hard word links
  and :func:`alignment_error_rate` scores them against gold links (Och & Ney, 2003).

Conventions shared with :mod:`attention_course.tasks`: a sentence is a sequence of tokens
(word strings or vocabulary ids); an alignment link is a pair ``(i, j)`` = (target position,
source position), both 0-based; an attention matrix has shape ``[Ty, Tx]`` (one row per
target word, one column per source word).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "Bucket",
    "alignment_error_rate",
    "attention_to_links",
    "bucket_labels",
    "bucket_table",
    "bucketize",
    "by_length",
    "corpus_bleu",
    "exact_match",
    "token_accuracy",
]

Link = tuple[int, int]


# --------------------------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------------------------


def token_accuracy(predicted: Any, gold: Any, mask: Any) -> float:
    r"""Fraction of real (unmasked) positions where the predicted token is the gold token.

    .. math::
       \mathrm{acc} = \frac{\sum_{b,t} m_{bt}\,[\hat y_{bt} = y_{bt}]}{\sum_{b,t} m_{bt}}

    Args:
      predicted: ``[B, T]`` integer token ids chosen by the model.
      gold: ``[B, T]`` integer reference token ids.
      mask: ``[B, T]`` booleans, True at the positions that count (real tokens, not padding).

    Returns:
      A float in [0, 1].

    Raises:
      ValueError: if the shapes differ, are not 2-D, the mask is not boolean, or the mask
        selects no position at all (the accuracy of nothing is undefined).
    """
    predicted = np.asarray(predicted)
    gold = np.asarray(gold)
    mask = np.asarray(mask)
    if predicted.ndim != 2:
        raise ValueError(f"predicted: expected shape [B, T], got shape {predicted.shape}")
    if gold.shape != predicted.shape:
        raise ValueError(
            f"gold: expected shape {predicted.shape} (the shape of predicted), got {gold.shape}"
        )
    if mask.shape != predicted.shape:
        raise ValueError(
            f"mask: expected shape {predicted.shape} (the shape of predicted), got {mask.shape}"
        )
    if mask.dtype != np.bool_:
        raise ValueError(f"mask: expected dtype bool (True = real token), got {mask.dtype}")
    n = int(mask.sum())
    if n == 0:
        raise ValueError("mask: expected at least one True position, got none")
    return float(((predicted == gold) & mask).sum() / n)


def _check_parallel(hypotheses: Sequence, references: Sequence) -> None:
    """Both are sequences with one entry per sentence, of equal, non-zero length."""
    for name, value in (("hypotheses", hypotheses), ("references", references)):
        if isinstance(value, str) or not hasattr(value, "__len__"):
            raise ValueError(
                f"{name}: expected a list with one sentence per entry, got {type(value).__name__}"
            )
    if len(hypotheses) != len(references):
        raise ValueError(
            f"references: expected {len(hypotheses)} sentences (one per hypothesis), "
            f"got {len(references)}"
        )
    if len(hypotheses) == 0:
        raise ValueError("hypotheses: expected at least one sentence, got an empty list")


def _as_tokens(sentence: Any) -> tuple:
    """A sentence as a tuple of tokens (a string counts as one whole sentence, not characters)."""
    if isinstance(sentence, str):
        return tuple(sentence.split())
    if isinstance(sentence, np.ndarray) or hasattr(sentence, "__array__"):
        return tuple(np.asarray(sentence).tolist())
    return tuple(sentence)


def exact_match(hypotheses: Sequence, references: Sequence) -> float:
    """Fraction of sentences whose hypothesis equals its reference token for token.

    Args:
      hypotheses: one token sequence per sentence (list/tuple of words or ids, or a
        space-separated string).
      references: one token sequence per sentence, same length as ``hypotheses``.

    Returns:
      A float in [0, 1].  A list and a tuple with the same tokens match.
    """
    _check_parallel(hypotheses, references)
    hits = sum(_as_tokens(h) == _as_tokens(r) for h, r in zip(hypotheses, references, strict=True))
    return hits / len(hypotheses)


# --------------------------------------------------------------------------------------------
# BLEU
# --------------------------------------------------------------------------------------------


def _as_line(sentence: Any) -> str:
    """Tokens joined by single spaces (strings are passed through unchanged)."""
    if isinstance(sentence, str):
        return sentence
    return " ".join(str(token) for token in _as_tokens(sentence))


def corpus_bleu(hypotheses: Sequence, references: Sequence) -> float:
    r"""Corpus BLEU, 0--100, computed by sacrebleu with one reference per hypothesis.

    BLEU (Papineni et al., 2002) is the geometric mean of the modified n-gram precisions
    :math:`p_1 \dots p_4`, pooled over the whole corpus, times a brevity penalty:

    .. math::  \mathrm{BLEU} = 100 \cdot \min\!\left(1, e^{1 - r/c}\right)
               \exp\Big(\tfrac14 \textstyle\sum_{n=1}^{4} \log p_n\Big)

    where :math:`c` is the total hypothesis length and :math:`r` the total reference length.

    Our sentences are already tokenised, so tokens are joined with single spaces and
    sacrebleu is told ``tokenize="none"``: it splits on whitespace only and never re-splits a
    token such as ``"l'homme"`` or ``"3.5"``.  Token ids work as well as words.

    Smoothing: sacrebleu's default ``"exp"`` method (Chen & Cherry, 2014, method 3): an n-gram
    order with zero matches gets precision :math:`1/(2^k c_n)` for the k-th such order, so one
    missing 4-gram does not zero the whole score.  It matters only when some order has no
    match anywhere in the corpus (tiny corpora of short sentences).

    An empty hypothesis contributes no n-grams and only length 0, so the BLEU of a corpus of
    empty hypotheses is 0.

    Args:
      hypotheses: one sentence per entry: a sequence of tokens, or a space-separated string.
      references: one reference per hypothesis, in the same form.

    Returns:
      A float in [0, 100].
    """
    from sacrebleu.metrics import BLEU  # imported here: sacrebleu is slow-ish to import

    _check_parallel(hypotheses, references)
    hyp_lines = [_as_line(h) for h in hypotheses]
    ref_lines = [_as_line(r) for r in references]
    bleu = BLEU(tokenize="none", smooth_method="exp")
    score = bleu.corpus_score(hyp_lines, [ref_lines]).score
    return float(min(max(score, 0.0), 100.0))  # clip float round-off such as 100.00000000000004


# --------------------------------------------------------------------------------------------
# Metrics by sentence length
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """One length bucket: sentences with ``lo <= length <= hi``, and a metric over them.

    Attributes:
      lo: smallest length in the bucket (inclusive).
      hi: largest length in the bucket (inclusive).
      count: number of sentences that fell in the bucket.
      value: the metric over those sentences; ``nan`` when ``count == 0`` (a metric of no
        sentences is undefined, and ``nan`` leaves a gap in a plot instead of a fake 0).
    """

    lo: int
    hi: int
    count: int
    value: float

    @property
    def mid(self) -> float:
        """The bucket's midpoint, where a plot puts it on the length axis."""
        return (self.lo + self.hi) / 2


def _check_edges(edges: Sequence[int]) -> np.ndarray:
    edges_arr = np.asarray(edges)
    if edges_arr.ndim != 1 or edges_arr.size == 0:
        raise ValueError(f"edges: expected a non-empty 1-D sequence of ints, got {edges!r}")
    if not np.issubdtype(edges_arr.dtype, np.integer):
        raise ValueError(f"edges: expected integers, got dtype {edges_arr.dtype}")
    if edges_arr[0] < 1 or np.any(np.diff(edges_arr) <= 0):
        raise ValueError(
            f"edges: expected strictly increasing upper edges >= 1, got {tuple(edges_arr.tolist())}"
        )
    return edges_arr


def bucketize(lengths: Any, edges: Sequence[int]) -> np.ndarray:
    """Bucket index of each length, given the buckets' inclusive upper edges.

    With ``edges = (10, 20, 30)`` the buckets are 1--10, 11--20 and 21--30::

        bucketize([1, 10, 11, 30], (10, 20, 30))  ->  array([0, 0, 1, 2])

    Args:
      lengths: ``[N]`` integer lengths, each at least 1.
      edges: strictly increasing inclusive upper edges; bucket ``k`` holds
        ``edges[k-1] < length <= edges[k]`` (and bucket 0 holds ``1 <= length <= edges[0]``).

    Returns:
      ``[N]`` int array of bucket indices.

    Raises:
      ValueError: if a length is below 1 or above the last edge (widen ``edges`` rather than
        silently dropping long sentences -- they are the interesting ones).
    """
    edges_arr = _check_edges(edges)
    lengths_arr = np.asarray(lengths)
    if lengths_arr.ndim != 1:
        raise ValueError(f"lengths: expected shape [N], got shape {lengths_arr.shape}")
    if lengths_arr.size and not np.issubdtype(lengths_arr.dtype, np.integer):
        raise ValueError(f"lengths: expected integers, got dtype {lengths_arr.dtype}")
    if lengths_arr.size and lengths_arr.min() < 1:
        raise ValueError(f"lengths: expected every length >= 1, got {int(lengths_arr.min())}")
    if lengths_arr.size and lengths_arr.max() > edges_arr[-1]:
        raise ValueError(
            f"lengths: expected every length <= the last edge {int(edges_arr[-1])}, "
            f"got {int(lengths_arr.max())}"
        )
    return np.searchsorted(edges_arr, lengths_arr, side="left").astype(np.int64)


def by_length(
    metric: Callable[[Sequence, Sequence], float],
    hypotheses: Sequence,
    references: Sequence,
    lengths: Any,
    edges: Sequence[int],
) -> list[Bucket]:
    """Apply a corpus metric separately to each length bucket.

    Example: BLEU by source length, the plot of Bahdanau et al. (2014, Fig. 2)::

        buckets = by_length(corpus_bleu, hyps, refs, source_lengths, edges=(10, 20, 30))

    Args:
      metric: any function ``metric(hypotheses, references) -> float`` over a list of
        sentences, e.g. :func:`corpus_bleu` or :func:`exact_match`.
      hypotheses: one entry per sentence.
      references: one entry per sentence.
      lengths: ``[N]`` the length used for bucketing (usually the source length).
      edges: inclusive upper edges, as in :func:`bucketize`.

    Returns:
      One :class:`Bucket` per edge, in order.  A bucket with no sentence has ``count=0`` and
      ``value=nan``; ``metric`` is never called on an empty list.
    """
    _check_parallel(hypotheses, references)
    lengths_arr = np.asarray(lengths)
    if lengths_arr.shape != (len(hypotheses),):
        raise ValueError(
            f"lengths: expected shape ({len(hypotheses)},) (one per hypothesis), "
            f"got {lengths_arr.shape}"
        )
    index = bucketize(lengths_arr, edges)
    edges_list = [int(e) for e in edges]
    buckets = []
    for k, hi in enumerate(edges_list):
        lo = 1 if k == 0 else edges_list[k - 1] + 1
        members = np.flatnonzero(index == k)
        if members.size == 0:
            buckets.append(Bucket(lo=lo, hi=hi, count=0, value=math.nan))
            continue
        value = metric([hypotheses[n] for n in members], [references[n] for n in members])
        buckets.append(Bucket(lo=lo, hi=hi, count=int(members.size), value=float(value)))
    return buckets


def bucket_labels(buckets: Iterable[Bucket]) -> list[str]:
    """Readable labels for buckets, e.g. ``["1–10", "11–20"]`` (with an en dash)."""
    return [f"{b.lo}\u2013{b.hi}" for b in buckets]


def bucket_table(rows: Mapping[str, Sequence[Bucket]], *, fmt: str = "6.1f") -> str:
    """A metric by length bucket as a small text table: one row per model, one column per bucket.

    Example::

        print(bucket_table({"RNNsearch-50": buckets}))
        #               1–10  11–20  21–30
        # RNNsearch-50  97.1   96.4   95.0

    Columns are as wide as ``fmt`` (default ``6.1f``) and the longest bucket label, so a table of
    six buckets stays within 60 characters.
    """
    if not rows:
        raise ValueError("rows: expected at least one row, got none")
    first = next(iter(rows.values()))
    labels = bucket_labels(first)
    name_width = max(len(str(name)) for name in rows)
    width = max(max((len(label) for label in labels), default=0), len(format(0.0, fmt)))
    lines = [" " * name_width + "".join(f" {label:>{width}}" for label in labels)]
    for name, buckets in rows.items():
        if bucket_labels(buckets) != labels:
            raise ValueError(f"rows[{name!r}]: expected the buckets {labels}, got "
                             f"{bucket_labels(buckets)}")
        cells = "".join(f" {format(b.value, fmt):>{width}}" for b in buckets)
        lines.append(f"{str(name):<{name_width}}{cells}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Alignment
# --------------------------------------------------------------------------------------------


def attention_to_links(weights: Any, target_length: int, source_length: int) -> set[Link]:
    r"""Hard alignment from soft attention: each target word links to the source word it
    attends to most.

    .. math::  A = \{(i, \arg\max_{j < T_x} \alpha_{ij}) : i < T_y\}

    Padding is ignored: only the first ``target_length`` rows and ``source_length`` columns
    are read.  Ties go to the leftmost source word.

    Args:
      weights: ``[Ty, Tx]`` attention weights (rows = target positions), possibly padded.
      target_length: number of real target words, ``0 <= target_length <= Ty``.
      source_length: number of real source words, ``1 <= source_length <= Tx``.

    Returns:
      A set of ``(i, j)`` links, one per real target word.
    """
    weights = np.asarray(weights)
    if weights.ndim != 2:
        raise ValueError(f"weights: expected shape [Ty, Tx], got shape {weights.shape}")
    ty, tx = weights.shape
    if not 0 <= int(target_length) <= ty:
        raise ValueError(f"target_length: expected 0 <= target_length <= {ty}, got {target_length}")
    if not 1 <= int(source_length) <= tx:
        raise ValueError(f"source_length: expected 1 <= source_length <= {tx}, got {source_length}")
    real = weights[: int(target_length), : int(source_length)]
    if real.size and np.isnan(real).any():
        raise ValueError("weights: expected no NaN among the real rows and columns, got some")
    best = np.argmax(real, axis=1) if real.size else np.zeros(0, dtype=int)
    return {(i, int(j)) for i, j in enumerate(best)}


def _as_link_set(links: Iterable, argument: str, sentence: int) -> set[Link]:
    out = set()
    for link in links:
        try:
            i, j = link
        except (TypeError, ValueError):
            raise ValueError(
                f"{argument}[{sentence}]: expected links (i, j), got {link!r}"
            ) from None
        out.add((int(i), int(j)))
    return out


def alignment_error_rate(
    predicted: Sequence[Iterable[Link]],
    sure: Sequence[Iterable[Link]],
    possible: Sequence[Iterable[Link]] | None = None,
) -> float:
    r"""Corpus alignment error rate (AER) of Och & Ney (2003); lower is better, 0 is perfect.

    Annotators mark *sure* links S (unambiguous) and *possible* links P (acceptable, P ⊇ S).
    For predicted links A, summed over all sentences of the corpus:

    .. math::  \mathrm{AER} = 1 - \frac{|A \cap S| + |A \cap P|}{|A| + |S|}

    A predicted link earns credit once if it is possible and twice if it is sure; missing a
    sure link costs, missing a merely possible one does not.  With ``P = S`` (our synthetic
    gold has no ambiguity) this is ``1 - F1`` of A against S.

    Args:
      predicted: one iterable of ``(i, j)`` links per sentence (i = target, j = source).
      sure: the sure gold links, one iterable per sentence.
      possible: the possible gold links, one iterable per sentence; defaults to ``sure``.
        Sure links always count as possible (P is taken as P ∪ S).

    Returns:
      A float in [0, 1].

    Raises:
      ValueError: if the lists differ in length, a link is not a pair, or the corpus has no
        predicted and no sure links at all (AER would be 0/0).
    """
    if len(predicted) != len(sure):
        raise ValueError(
            f"sure: expected {len(predicted)} sentences (one per predicted), got {len(sure)}"
        )
    if possible is not None and len(possible) != len(sure):
        raise ValueError(
            f"possible: expected {len(sure)} sentences (one per sure), got {len(possible)}"
        )
    hits_sure = hits_possible = n_predicted = n_sure = 0
    for k in range(len(sure)):
        a = _as_link_set(predicted[k], "predicted", k)
        s = _as_link_set(sure[k], "sure", k)
        p = s if possible is None else _as_link_set(possible[k], "possible", k) | s
        hits_sure += len(a & s)
        hits_possible += len(a & p)
        n_predicted += len(a)
        n_sure += len(s)
    if n_predicted + n_sure == 0:
        raise ValueError("predicted, sure: expected at least one link in the corpus, got none")
    return 1.0 - (hits_sure + hits_possible) / (n_predicted + n_sure)
