"""Tests of attention_course.tasks: vocabularies, the three corpora, batches and buckets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_course import tasks
from attention_course.tasks import (
    BOS,
    BOS_ID,
    EOS,
    EOS_ID,
    PAD,
    PAD_ID,
    TASK_NAMES,
    Batch,
    Pair,
    Vocab,
    batches,
    bucket_edges,
    eval_batches,
    eval_order,
    generate,
    get_task,
    make_batch,
    translate_sentence,
)
from attention_course.tasks import test_set as held_out_set

FAST = settings(max_examples=40, deadline=None)


# ---------------------------------------------------------------------------- Vocab


def test_specials_have_ids_0_1_2_in_every_vocab():
    assert (PAD_ID, BOS_ID, EOS_ID) == (0, 1, 2)
    vocabs = [Vocab(["x"])] + [v for n in TASK_NAMES for v in (get_task(n).source_vocab, get_task(n).target_vocab)]
    for v in vocabs:
        assert v.tokens[:3] == (PAD, BOS, EOS)
        assert (v.id(PAD), v.id(BOS), v.id(EOS)) == (0, 1, 2)


_word = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc", "Zl", "Zp")), min_size=1, max_size=6)


@FAST
@given(st.lists(_word, min_size=1, max_size=30, unique=True).filter(lambda ws: not set(ws) & {PAD, BOS, EOS}), st.data())
def test_vocab_round_trip(words, data):
    v = Vocab(words)
    assert len(v) == len(words) + 3
    assert v.tokens[3:] == tuple(words)
    sentence = data.draw(st.lists(st.sampled_from(words), max_size=20))
    ids = v.encode(sentence)
    assert ids[-1] == EOS_ID and EOS_ID not in ids[:-1]
    assert v.decode(ids) == sentence
    assert v.decode(np.array(ids + [PAD_ID] * 3, np.int32)) == sentence
    assert v.encode(sentence, eos=False) == ids[:-1]


def test_vocab_decode_stops_at_eos_and_drops_pad_and_bos():
    v = Vocab(["a", "b"])
    assert v.decode([BOS_ID, 3, PAD_ID, 4, EOS_ID, 3, 3]) == ["a", "b"]
    assert v.decode([]) == []


def test_vocab_errors():
    with pytest.raises(ValueError, match="duplicate word 'a'"):
        Vocab(["a", "b", "a"])
    with pytest.raises(ValueError, match="special token"):
        Vocab(["a", EOS])
    with pytest.raises(ValueError, match="whitespace"):
        Vocab(["a b"])
    v = Vocab(["a", "b"])
    with pytest.raises(ValueError, match="unknown word 'zebra'"):
        v.id("zebra")
    with pytest.raises(ValueError, match="unknown word 'zebra'"):
        v.encode(["a", "zebra"])
    with pytest.raises(ValueError, match="special token"):
        v.encode([BOS, "a"])
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 4\], got 5"):
        v.decode([3, 5])
    with pytest.raises(ValueError, match="1-D"):
        v.decode(np.zeros((2, 2), np.int32))
    with pytest.raises(AttributeError):
        v.tokens = ()


# ---------------------------------------------------------------------------- tasks and corpora


def test_get_task_and_vocab_sizes():
    for name in TASK_NAMES:
        assert get_task(name).name == name
    with pytest.raises(ValueError, match="unknown task 'french'.*copy.*reverse.*translate"):
        get_task("french")
    assert len(get_task("copy").source_vocab) == 23
    assert get_task("copy").min_length == get_task("reverse").min_length == 1
    t = get_task("translate")
    assert 60 <= len(t.source_vocab) - 3 <= 150 and 60 <= len(t.target_vocab) - 3 <= 150
    assert t.min_length == 3


@pytest.mark.parametrize("name", TASK_NAMES)
def test_generate_is_deterministic_in_seed(name):
    a = generate(name, 30, seed=7, min_length=1, max_length=40)
    assert a == generate(name, 30, seed=7, min_length=1, max_length=40)
    assert a != generate(name, 30, seed=8, min_length=1, max_length=40)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_length_is_exact_and_alignments_are_valid(name):
    task = get_task(name)
    rng = np.random.default_rng(0)
    for length in range(task.min_length, 81):
        for _ in range(3 if name == "translate" else 1):
            pair = task.sample(rng, length)
            assert len(pair.source) == length
            assert all(w in task.source_vocab for w in pair.source)
            assert all(w in task.target_vocab for w in pair.target)
            assert list(pair.alignment) == sorted(set(pair.alignment))
            assert all(0 <= i < len(pair.target) and 0 <= j < len(pair.source) for i, j in pair.alignment)
            assert {i for i, _ in pair.alignment} == set(range(len(pair.target)))


def test_copy_and_reverse_alignments_are_exact():
    for pair in generate("copy", 20, seed=1, min_length=1, max_length=30):
        n = len(pair.source)
        assert pair.target == pair.source
        assert pair.alignment == tuple((i, i) for i in range(n))
    for pair in generate("reverse", 20, seed=1, min_length=1, max_length=30):
        n = len(pair.source)
        assert pair.target == pair.source[::-1]
        assert pair.alignment == tuple((i, n - 1 - i) for i in range(n))
        assert np.array_equal(pair.alignment_matrix(), np.eye(n)[::-1])


def test_generate_lengths_cover_the_range_and_clamp_to_the_task_minimum():
    pairs = generate("translate", 400, seed=0, min_length=1, max_length=8)
    assert {len(p.source) for p in pairs} == set(range(3, 9))
    pairs = generate("copy", 300, seed=0, min_length=4, max_length=6)
    assert {len(p.source) for p in pairs} == {4, 5, 6}


# ---------------------------------------------------------------------------- the translate grammar


@pytest.mark.parametrize(
    "english, french",
    [
        ("the european economic zone sees a cat", "la zone économique européenne voit un chat"),
        ("some white french cars sleep", "des voitures françaises blanches dorment"),
        ("these happy women sing", "ces femmes heureuses chantent"),
        ("my royal horses carry my heavy boat", "mes chevaux royaux portent mon bateau lourd"),
        ("this red car waits on the green river", "cette voiture rouge attend sur la rivière verte"),
        ("the cat sleeps while a girl sings", "le chat dort pendant qu' une fille chante"),
        ("the cats see the dogs because the king runs", "les chats voient les chiens parce que le roi court"),
    ],
)
def test_translate_sentence_agrees_and_reorders(english, french):
    pair = translate_sentence(english.split())
    assert " ".join(pair.target) == french


def test_two_adjectives_come_out_mirrored_with_an_off_diagonal_alignment():
    pair = translate_sentence("the european economic zone sleeps".split())
    assert pair.target == ("la", "zone", "économique", "européenne", "dort")
    # la<-the, zone<-zone, économique<-economic, européenne<-european, dort<-sleeps
    assert pair.alignment == ((0, 0), (1, 3), (2, 2), (3, 1), (4, 4))
    # a noun phrase with adjectives makes the alignment cross the diagonal ...
    assert any(i != j for i, j in pair.alignment)
    # ... and one without adjectives keeps it on the diagonal
    plain = translate_sentence("the cat sees a dog with my car".split())
    assert plain.alignment == tuple((i, i) for i in range(8))


def test_one_source_word_can_give_two_target_words():
    pair = translate_sentence("the cat sleeps because a girl sings".split())
    assert (3, 3) in pair.alignment and (4, 3) in pair.alignment  # parce, qu' <- because
    assert pair.target[3:5] == ("parce", "qu'")


@pytest.mark.parametrize(
    "english, message",
    [
        ("the cat see a dog", "does not agree"),
        ("a cats sleep", "cannot go with the plural noun 'cats'"),
        ("these cat sleeps", "cannot go with the singular noun 'cat'"),
        ("the green sleeps", "expected an adjective or a noun at position 2"),
        ("the cat sleeps the dog", "expected a conjunction"),
        ("the cat sees", "expected a determiner"),
        ("the cat sleeps and", "expected a determiner"),
        ("the platypus sleeps", "unknown word 'platypus'"),
    ],
)
def test_translate_sentence_rejects_sentences_outside_the_grammar(english, message):
    with pytest.raises(ValueError, match=message):
        translate_sentence(english.split())
    with pytest.raises(ValueError, match="at least 1 word"):
        translate_sentence([])


# A few entries of the lexicon, written out here independently of the module:
# English noun -> (gender, number, French); English adjective -> French forms by (gender, number).
NOUNS = {
    "cat": ("m", "sg", "chat"), "cats": ("m", "pl", "chats"),
    "horse": ("m", "sg", "cheval"), "horses": ("m", "pl", "chevaux"),
    "zone": ("f", "sg", "zone"), "zones": ("f", "pl", "zones"),
    "woman": ("f", "sg", "femme"), "women": ("f", "pl", "femmes"),
}  # fmt: skip
ADJECTIVES = {
    "green": {"msg": "vert", "fsg": "verte", "mpl": "verts", "fpl": "vertes"},
    "white": {"msg": "blanc", "fsg": "blanche", "mpl": "blancs", "fpl": "blanches"},
    "red": {"msg": "rouge", "fsg": "rouge", "mpl": "rouges", "fpl": "rouges"},
    "european": {"msg": "européen", "fsg": "européenne", "mpl": "européens", "fpl": "européennes"},
    "economic": {"msg": "économique", "fsg": "économique", "mpl": "économiques", "fpl": "économiques"},
    "royal": {"msg": "royal", "fsg": "royale", "mpl": "royaux", "fpl": "royales"},
}
THE = {"msg": "le", "fsg": "la", "mpl": "les", "fpl": "les"}


def test_sampled_noun_phrases_agree_and_reorder():
    """In sampled sentences, find 'the adj* noun' phrases built from the words above and check them."""
    task = get_task("translate")
    rng = np.random.default_rng(3)
    checked = {0: 0, 1: 0, 2: 0}
    for _ in range(1500):
        pair = task.sample(rng, int(rng.integers(8, 30)))
        links = {}
        for i, j in pair.alignment:
            links.setdefault(j, []).append(i)
        for q, noun in enumerate(pair.source):
            if noun not in NOUNS:
                continue
            gender, number, french = NOUNS[noun]
            key = gender + number
            p = q - 1
            while pair.source[p] not in ("the", "a", "some", "this", "these", "my"):
                p -= 1
            adjectives = list(range(p + 1, q))
            if pair.source[p] != "the" or not all(pair.source[a] in ADJECTIVES for a in adjectives):
                continue
            (i_det,), (i_noun,) = links[p], links[q]
            assert (pair.target[i_det], pair.target[i_noun]) == (THE[key], french)
            assert i_noun == i_det + 1
            # the adjectives follow the noun, mirrored, each agreeing with it
            for k, a in enumerate(reversed(adjectives)):
                assert links[a] == [i_noun + 1 + k]
                assert pair.target[i_noun + 1 + k] == ADJECTIVES[pair.source[a]][key]
            checked[len(adjectives)] += 1
    assert min(checked.values()) >= 3, checked


def test_sampled_verbs_agree_with_their_subjects():
    singular = {"sees": "voit", "sleeps": "dort", "takes": "prend"}
    plural = {"see": "voient", "sleep": "dorment", "take": "prennent"}
    seen = 0
    for pair in generate("translate", 300, seed=5, min_length=3, max_length=20):
        for i, j in pair.alignment:
            verb = pair.source[j]
            if verb in singular or verb in plural:
                assert pair.target[i] == {**singular, **plural}[verb]
                seen += 1
    assert seen > 20


@FAST
@given(st.integers(0, 2**32 - 1), st.integers(3, 80))
def test_translate_round_trips_through_the_translator(seed, length):
    pair = get_task("translate").sample(np.random.default_rng(seed), length)
    assert len(pair.source) == length
    assert translate_sentence(pair.source) == pair
    # the reordering is local: in "det a1 a2 noun" -> "det noun a2 a1" the offset i - j of the
    # links runs from -2 (noun) to +2 (a1), and each two-word conjunction shifts what follows by one
    drift = [i - j for i, j in pair.alignment]
    assert max(drift) - min(drift) <= 4 + sum(w in ("while", "because") for w in pair.source)


# ---------------------------------------------------------------------------- held-out set


def test_test_set_is_fixed_and_disjoint_from_training_data():
    held = held_out_set("translate", min_length=3, max_length=12, n=100)
    assert held == held_out_set("translate", min_length=3, max_length=12, n=100)
    assert held[:40] == held_out_set("translate", min_length=3, max_length=12, n=40)
    assert held == held_out_set(get_task("translate"), min_length=1, max_length=12, n=100)  # same effective range
    assert held != held_out_set("translate", min_length=3, max_length=13, n=100)
    assert held != generate("translate", 100, seed=0, min_length=3, max_length=12)
    train = generate("translate", 1000, seed=0, min_length=3, max_length=12, exclude=held)
    assert not {p.source for p in train} & {p.source for p in held}
    assert len(held_out_set("copy")) == 500


def test_exclude_that_covers_everything_is_an_error():
    everything = [Pair((s,), (s,), ((0, 0),)) for s in "abcdefghijklmnopqrst"]
    with pytest.raises(ValueError, match="exclude covers"):
        generate("copy", 1, seed=0, min_length=1, max_length=1, exclude=everything)


def test_corpus_argument_errors():
    with pytest.raises(ValueError, match="unknown task"):
        generate("french", 1, seed=0, min_length=1, max_length=5)
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        generate("copy", 0, seed=0, min_length=1, max_length=5)
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        generate("copy", 1, seed=-1, min_length=1, max_length=5)
    with pytest.raises(ValueError, match="min_length must be <= max_length, got min_length=6 > max_length=5"):
        generate("copy", 1, seed=0, min_length=6, max_length=5)
    with pytest.raises(ValueError, match="max_length must be >= 3, got 2"):
        generate("translate", 1, seed=0, min_length=1, max_length=2)
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        held_out_set("copy", n=0)
    with pytest.raises(ValueError, match="max_length must be >= 3, got 2"):
        held_out_set("translate", max_length=2)
    with pytest.raises(ValueError, match="length must be >= 3, got 2"):
        get_task("translate").sample(np.random.default_rng(0), 2)
    with pytest.raises(TypeError, match="rng"):
        get_task("copy").sample(0, 3)


# ---------------------------------------------------------------------------- batches


def _pairs(name="translate", n=40, lo=1, hi=25, seed=0):
    return generate(name, n, seed=seed, min_length=lo, max_length=hi)


def test_make_batch_layout():
    task = get_task("translate")
    pairs = _pairs(n=6)
    b = make_batch(pairs, task)
    B, S, T = 6, max(len(p.source) for p in pairs) + 1, max(len(p.target) for p in pairs) + 1
    shapes = [(B, S), (B, S), (B,), (B, T), (B, T), (B, T), (B,)]
    dtypes = [np.int32, np.bool_, np.int32, np.int32, np.int32, np.bool_, np.int32]
    assert [a.shape for a in b] == shapes and [a.dtype for a in b] == dtypes
    for r, p in enumerate(pairs):
        m, n = len(p.source), len(p.target)
        assert b.source_lengths[r] == m + 1 and b.target_lengths[r] == n + 1
        assert b.source[r, m] == EOS_ID and (b.source[r, m + 1 :] == PAD_ID).all()
        assert b.source_mask[r].tolist() == [k <= m for k in range(S)]
        assert b.target_mask[r].tolist() == [k <= n for k in range(T)]
        assert b.target_in[r, 0] == BOS_ID and b.target_out[r, n] == EOS_ID
        assert (b.target_in[r, 1 : n + 1] == b.target_out[r, :n]).all()
        assert (b.target_in[r, n + 1 :] == PAD_ID).all() and (b.target_out[r, n + 1 :] == PAD_ID).all()
        assert task.source_vocab.decode(b.source[r]) == list(p.source)
        assert task.target_vocab.decode(b.target_out[r]) == list(p.target)
        assert task.target_vocab.decode(b.target_in[r]) == list(p.target)


def test_make_batch_fixed_widths_and_errors():
    task = get_task("copy")
    pairs = [Pair(("a", "b"), ("a", "b"), ((0, 0), (1, 1)))]
    b = make_batch(pairs, task, source_width=7, target_width=5)
    assert b.source.shape == (1, 7) and b.target_in.shape == (1, 5)
    with pytest.raises(ValueError, match=r"source_width must be >= 3 \(longest source 2 \+ EOS\), got 2"):
        make_batch(pairs, task, source_width=2)
    with pytest.raises(ValueError, match=r"target_width must be >= 3 .*got 1"):
        make_batch(pairs, task, target_width=1)
    with pytest.raises(ValueError, match="pairs must contain at least 1 pair, got 0"):
        make_batch([], task)
    with pytest.raises(ValueError, match="unknown word 'zebra'"):
        make_batch([Pair(("zebra",), ("a",), ((0, 0),))], task)


def test_batch_is_a_jit_input():
    jax = pytest.importorskip("jax")
    b = make_batch(_pairs(n=4), get_task("translate"))
    total = jax.jit(lambda batch: batch.source_mask.sum() + batch.target_mask.sum())(b)
    assert int(total) == int(b.source_lengths.sum() + b.target_lengths.sum())


def test_bucket_edges():
    assert bucket_edges(30) == (10, 20, 30)
    assert bucket_edges(35) == (10, 20, 30, 35)
    assert bucket_edges(5) == (5,)
    assert bucket_edges(12, width=4) == (4, 8, 12)
    with pytest.raises(ValueError, match="max_length must be >= 1, got 0"):
        bucket_edges(0)
    with pytest.raises(ValueError, match="width must be >= 1, got 0"):
        bucket_edges(10, 0)


def test_batches_shapes_fullness_coverage_and_determinism():
    task = get_task("translate")
    pairs = _pairs(n=90, lo=3, hi=25) + _pairs(n=3, lo=40, hi=45, seed=1)  # the last bucket is tiny
    edges = bucket_edges(45)
    stream = list(batches(pairs, task, 8, seed=0, edges=edges, epochs=2))
    non_empty = {np.searchsorted(edges, len(p.source)) for p in pairs}
    shapes = {(b.source.shape, b.target_in.shape) for b in stream}
    assert len(shapes) == len(non_empty)
    assert all(b.source.shape[0] == 8 for b in stream)
    for (s_shape, t_shape) in shapes:
        assert s_shape[1] - 1 in edges
    sizes = np.bincount([np.searchsorted(edges, len(p.source)) for p in pairs])
    assert len(stream) == 2 * sum(-(-int(s) // 8) for s in sizes if s)
    first_epoch = stream[: len(stream) // 2]
    seen = {tuple(task.source_vocab.decode(row)) for b in first_epoch for row in b.source}
    assert seen == {p.source for p in pairs}
    again = list(batches(pairs, task, 8, seed=0, edges=edges, epochs=2))
    assert all(all(np.array_equal(x, y) for x, y in zip(a, b)) for a, b in zip(stream, again))
    other = list(batches(pairs, task, 8, seed=1, edges=edges, epochs=2))
    assert not all(np.array_equal(a.source, b.source) for a, b in zip(stream, other))
    infinite = batches(pairs, task, 8, seed=0, edges=edges)
    assert sum(1 for _, _ in zip(range(3 * len(stream)), infinite)) == 3 * len(stream)


def test_batches_shuffle_inside_a_bucket_and_repeat_a_small_bucket():
    task = get_task("copy")
    pairs = generate("copy", 40, seed=0, min_length=6, max_length=8) + [Pair(("a",) * 15, ("a",) * 15, ())]
    index = {p.source: k for k, p in enumerate(pairs)}
    edges = (10, 20)
    stream = list(batches(pairs, task, 8, seed=0, edges=edges, epochs=1))
    runs = [[index[tuple(task.source_vocab.decode(row))] for row in b.source] for b in stream if b.source.shape[1] == 11]
    assert len(runs) == 5 and any(r != list(range(r[0], r[0] + 8)) for r in runs)  # not cut in order
    (small,) = [b for b in stream if b.source.shape[1] == 21]  # the one-pair bucket fills a whole batch
    assert (small.source == small.source[0]).all() and small.source_lengths.tolist() == [16] * 8


def test_batches_rows_are_consistent_pairs():
    task = get_task("reverse")
    pairs = _pairs("reverse", n=20, hi=30)
    b = next(batches(pairs, task, 5, seed=3))
    for r in range(5):
        src = task.source_vocab.decode(b.source[r])
        assert task.target_vocab.decode(b.target_out[r]) == src[::-1]


def test_eval_batches_cover_every_pair_exactly_once():
    task = get_task("translate")
    pairs = _pairs(n=37, lo=3, hi=35)
    edges = bucket_edges(35)
    order = eval_order(pairs, edges=edges)
    assert sorted(order) == list(range(len(pairs)))
    rows, shapes = [], set()
    for b, real in eval_batches(pairs, task, 6, edges=edges):
        assert b.source.shape[0] == 6 and real.shape == (6,) and real.dtype == np.bool_
        assert real[0] and list(real) == sorted(real, reverse=True)  # real rows first
        shapes.add((b.source.shape[1], b.target_in.shape[1]))
        rows += [tuple(task.target_vocab.decode(b.target_out[r])) for r in range(6) if real[r]]
    assert rows == [pairs[k].target for k in order]
    assert len(shapes) == len({np.searchsorted(edges, len(p.source)) for p in pairs})


def test_batching_argument_errors():
    task = get_task("copy")
    pairs = _pairs("copy", n=10, hi=12)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        batches(pairs, task, 0, seed=0)
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        batches(pairs, task, 4, seed=0, epochs=0)
    with pytest.raises(ValueError, match="pairs must contain at least 1 pair, got 0"):
        batches([], task, 4, seed=0)
    with pytest.raises(ValueError, match=r"edges\[-1\] must be >= the longest source"):
        batches(pairs, task, 4, seed=0, edges=(5,))
    with pytest.raises(ValueError, match="strictly increasing"):
        batches(pairs, task, 4, seed=0, edges=(10, 10, 20))
    with pytest.raises(ValueError, match="batch_size must be >= 1, got -2"):
        eval_batches(pairs, task, -2)
    with pytest.raises(ValueError, match="at least 1 edge"):
        eval_batches(pairs, task, 2, edges=())
    with pytest.raises(ValueError, match="unknown task"):
        eval_batches(pairs, "french", 2)


def test_module_exports_the_contract():
    for name in tasks.__all__:
        assert hasattr(tasks, name), name
    assert isinstance(make_batch(_pairs(n=2), get_task("translate")), Batch)
