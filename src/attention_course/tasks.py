"""Synthetic parallel corpora for every experiment of the course.

Each chapter trains a sequence-to-sequence model and then asks the same questions of it: how good
is it, how does it cope with long sentences, and where does it look? To ask them, we need data
that costs nothing to download, that can be made as long as we like, and whose correct word
alignment we know. This module makes three such corpora from a random seed.

``copy``
    The source is a string of random symbols (``a`` .. ``t``) and the target is the same string.
    The gold alignment is the diagonal: target word ``i`` is source word ``i``.
``reverse``
    The target is the source read backwards; the alignment is the anti-diagonal
    ``i <-> n - 1 - i``. A model with a fixed-size summary finds this one as hard as copying,
    and one with attention has to learn to look in the opposite direction from the one it writes.
``translate``
    A small English grammar and its French-like translation, with what makes real translation
    hard for a fixed-vector model and instructive for attention:

    * **agreement**: French nouns have a gender, and the determiner, the adjectives and the verb
      agree with the noun (``the green cat`` -> ``le chat vert``, ``the green cars`` ->
      ``les voitures vertes``, ``the cat sees`` -> ``le chat voit``, ``the cats see`` ->
      ``les chats voient``). English ``the`` gives ``le``, ``la`` or ``les`` depending on a noun
      that may come two words later, so the decoder has to look ahead in the source;
    * **local reordering**: adjectives come before the noun in English and after it in French,
      and two adjectives come out in mirrored order, as in the example of Bahdanau et al. (2014,
      Figure 3): ``the european economic zone`` -> ``la zone économique européenne``;
    * **one word to two**: ``while`` -> ``pendant que``, ``because`` -> ``parce que`` (and
      ``que`` becomes ``qu'`` before a vowel, as in ``pendant qu' une fille chante``).

    A sentence is one or more clauses joined by conjunctions; a clause is a subject noun phrase,
    a verb that agrees with it, an object noun phrase when the verb is transitive, and an optional
    prepositional phrase (``on the table`` -> ``sur la table``). The grammar is about syntax only:
    the books may sing and the rivers may read letters.

Every generator returns :class:`Pair` objects: source words, target words and the gold alignment,
a sorted tuple of ``(i, j)`` links meaning "target word ``i`` translates source word ``j``". The
rest of the module turns pairs into padded integer arrays (:class:`Vocab`, :class:`Batch`,
:func:`make_batch`) and streams them in length buckets so that a jit-compiled training step sees
only a handful of shapes (:func:`batches`, :func:`eval_batches`).

A typical experiment::

    task = get_task("translate")
    held_out = test_set(task, max_length=60)
    train = generate(task, 20_000, seed=0, min_length=1, max_length=30, exclude=held_out)
    for batch in batches(train, task, 64, seed=0, epochs=5):
        ...  # batch.source [64, S], batch.target_in [64, T], ...
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

__all__ = [
    "PAD",
    "BOS",
    "EOS",
    "PAD_ID",
    "BOS_ID",
    "EOS_ID",
    "TASK_NAMES",
    "Vocab",
    "Pair",
    "Task",
    "get_task",
    "translate_sentence",
    "generate",
    "test_set",
    "Batch",
    "make_batch",
    "bucket_edges",
    "batches",
    "eval_batches",
    "eval_order",
]

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
SPECIALS = (PAD, BOS, EOS)
TASK_NAMES = ("copy", "reverse", "translate")


# --------------------------------------------------------------------------------------------
# Argument checks shared by the public functions
# --------------------------------------------------------------------------------------------


def _check_int(name: str, value, minimum: int | None = None) -> int:
    """Return ``value`` as an int; raise if it is not an integer or is below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_pairs(name: str, pairs) -> list[Pair]:
    if isinstance(pairs, Pair):
        raise TypeError(f"{name} must be a sequence of Pair, got a single Pair")
    pairs = list(pairs)
    if not pairs:
        raise ValueError(f"{name} must contain at least 1 pair, got 0")
    for k, p in enumerate(pairs):
        if not isinstance(p, Pair):
            raise TypeError(f"{name}[{k}] must be a Pair, got {type(p).__name__}")
    return pairs


# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------


class Vocab:
    """A fixed, immutable mapping between words and integer ids.

    The first three ids are always the special tokens: ``PAD_ID = 0`` fills the unused end of a
    padded row, ``BOS_ID = 1`` ("beginning of sentence") is the decoder's first input, and
    ``EOS_ID = 2`` ("end of sentence") ends every source and every target. The words follow in
    the order given. A word is a non-empty string without whitespace, so that
    ``" ".join(words).split()`` gives the words back.

    >>> v = Vocab(["cat", "dog"])
    >>> v.tokens
    ('<pad>', '<s>', '</s>', 'cat', 'dog')
    >>> v.encode(["dog", "cat"])
    [4, 3, 2]
    >>> v.decode([4, 3, 2, 0, 0])
    ['dog', 'cat']
    """

    __slots__ = ("_tokens", "_ids")

    def __init__(self, words: Iterable[str]):
        if isinstance(words, str):
            raise TypeError(f"words must be an iterable of words, got the single string {words!r}")
        words = tuple(words)
        seen: set[str] = set()
        for w in words:
            if not isinstance(w, str):
                raise TypeError(f"every word must be a str, got {type(w).__name__} {w!r}")
            if not w or any(c.isspace() for c in w):
                raise ValueError(f"a word must be non-empty and contain no whitespace, got {w!r}")
            if w in SPECIALS:
                raise ValueError(
                    f"words must not contain the special token {w!r}: Vocab adds {SPECIALS} itself"
                )
            if w in seen:
                raise ValueError(f"duplicate word {w!r} in words")
            seen.add(w)
        tokens = SPECIALS + words
        object.__setattr__(self, "_tokens", tokens)
        object.__setattr__(self, "_ids", {w: i for i, w in enumerate(tokens)})

    def __setattr__(self, name, value):
        raise AttributeError("Vocab is immutable")

    @property
    def tokens(self) -> tuple[str, ...]:
        """All tokens, indexed by id: ``(PAD, BOS, EOS, word_3, word_4, ...)``."""
        return self._tokens

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, word: object) -> bool:
        return word in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and other._tokens == self._tokens

    def __hash__(self) -> int:
        return hash(self._tokens)

    def __repr__(self) -> str:
        head = " ".join(self._tokens[3:11])
        more = " ..." if len(self._tokens) > 11 else ""
        return f"Vocab({len(self)} tokens: {head}{more})"

    def id(self, word: str) -> int:
        """The id of ``word``; an unknown word raises ``ValueError`` naming it."""
        try:
            return self._ids[word]
        except (KeyError, TypeError):
            raise ValueError(f"unknown word {word!r}: not in this vocabulary of {len(self)} tokens") from None

    def encode(self, words: Sequence[str], *, eos: bool = True) -> list[int]:
        """The ids of ``words``, followed by ``EOS_ID`` unless ``eos=False``.

        The special tokens cannot be encoded as words: they are added by the batching code.
        """
        if isinstance(words, str):
            raise TypeError(f"words must be a sequence of words, got the single string {words!r}")
        ids = [self.id(w) for w in words]
        for w, i in zip(words, ids):
            if i < len(SPECIALS):
                raise ValueError(f"the special token {w!r} cannot be encoded as a word")
        if eos:
            ids.append(EOS_ID)
        return ids

    def decode(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        """The words of a 1-D sequence of ids: stops at the first ``EOS_ID``, skips PAD and BOS.

        This reads a padded batch row, or a decoder's output, back into words:
        ``vocab.decode(vocab.encode(words)) == list(words)``.
        """
        arr = np.asarray(ids)
        if arr.ndim != 1:
            raise ValueError(f"ids must be 1-D, got shape {arr.shape}")
        if arr.size == 0:
            return []
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"ids must be integers, got dtype {arr.dtype}")
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= len(self):
            bad = lo if lo < 0 else hi
            raise ValueError(f"ids must lie in [0, {len(self) - 1}], got {bad}")
        words = []
        for i in arr.tolist():
            if i == EOS_ID:
                break
            if i >= len(SPECIALS):
                words.append(self._tokens[i])
        return words


# --------------------------------------------------------------------------------------------
# Pairs and tasks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """One sentence pair with its gold word alignment.

    ``source`` and ``target`` are tuples of words (no special tokens). ``alignment`` is the sorted
    tuple of links ``(i, j)``: target word ``i`` translates source word ``j`` (both 0-based).
    Every target word has at least one link; a source word may have several (``while`` is linked
    to both ``pendant`` and ``que``).
    """

    source: tuple[str, ...]
    target: tuple[str, ...]
    alignment: tuple[tuple[int, int], ...]

    def alignment_matrix(self) -> np.ndarray:
        """The alignment as a ``[len(target), len(source)]`` 0/1 float32 matrix, for plotting."""
        m = np.zeros((len(self.target), len(self.source)), np.float32)
        for i, j in self.alignment:
            m[i, j] = 1.0
        return m


@dataclass(frozen=True)
class Task:
    """A source of sentence pairs: its vocabularies and a sampler of pairs of a given length.

    ``min_length`` is the shortest source the task can produce (1 for ``copy`` and ``reverse``,
    3 for ``translate``: ``the cat sleeps``). ``sampler(rng, length)`` is the function that
    :meth:`sample` calls once it has checked its arguments; it is how a new task is defined.
    """

    name: str
    source_vocab: Vocab
    target_vocab: Vocab
    min_length: int
    sampler: Callable[[np.random.Generator, int], Pair] = field(repr=False, compare=False)

    def sample(self, rng: np.random.Generator, length: int) -> Pair:
        """A random pair whose source has exactly ``length`` words (``length >= min_length``)."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        length = _check_int("length", length, self.min_length)
        return self.sampler(rng, length)


# ---- copy and reverse ------------------------------------------------------------------------

_SYMBOLS = tuple("abcdefghijklmnopqrst")


def _sample_copy(rng: np.random.Generator, length: int) -> Pair:
    words = tuple(_SYMBOLS[k] for k in rng.integers(0, len(_SYMBOLS), size=length))
    return Pair(words, words, tuple((i, i) for i in range(length)))


def _sample_reverse(rng: np.random.Generator, length: int) -> Pair:
    words = tuple(_SYMBOLS[k] for k in rng.integers(0, len(_SYMBOLS), size=length))
    return Pair(words, words[::-1], tuple((i, length - 1 - i) for i in range(length)))


# ---- the translate grammar: the lexicon ------------------------------------------------------
# Genders are "m" and "f", numbers "sg" and "pl". French nouns all begin with a consonant, so the
# determiners never elide (no l'/cet) and the grammar stays one token per word.

# English determiner -> French form for each (gender, number) it accepts. "the" and "my" fit
# either number; "a" and "this" only the singular; "some" and "these" only the plural.
_DETERMINERS: dict[str, dict[tuple[str, str], str]] = {
    "the": {("m", "sg"): "le", ("f", "sg"): "la", ("m", "pl"): "les", ("f", "pl"): "les"},
    "a": {("m", "sg"): "un", ("f", "sg"): "une"},
    "this": {("m", "sg"): "ce", ("f", "sg"): "cette"},
    "my": {("m", "sg"): "mon", ("f", "sg"): "ma", ("m", "pl"): "mes", ("f", "pl"): "mes"},
    "some": {("m", "pl"): "des", ("f", "pl"): "des"},
    "these": {("m", "pl"): "ces", ("f", "pl"): "ces"},
}

# (English singular, English plural, French gender, French singular, French plural)
_NOUNS = (
    ("cat", "cats", "m", "chat", "chats"),
    ("dog", "dogs", "m", "chien", "chiens"),
    ("horse", "horses", "m", "cheval", "chevaux"),
    ("boat", "boats", "m", "bateau", "bateaux"),
    ("king", "kings", "m", "roi", "rois"),
    ("boy", "boys", "m", "garçon", "garçons"),
    ("book", "books", "m", "livre", "livres"),
    ("garden", "gardens", "m", "jardin", "jardins"),
    ("market", "markets", "m", "marché", "marchés"),
    ("train", "trains", "m", "train", "trains"),
    ("zone", "zones", "f", "zone", "zones"),
    ("house", "houses", "f", "maison", "maisons"),
    ("woman", "women", "f", "femme", "femmes"),
    ("girl", "girls", "f", "fille", "filles"),
    ("queen", "queens", "f", "reine", "reines"),
    ("car", "cars", "f", "voiture", "voitures"),
    ("city", "cities", "f", "ville", "villes"),
    ("river", "rivers", "f", "rivière", "rivières"),
    ("flower", "flowers", "f", "fleur", "fleurs"),
    ("letter", "letters", "f", "lettre", "lettres"),
)

# Adjective classes give the English order (quality < colour < origin < type, so "the european
# economic zone", not "the economic european zone"). French puts them after the noun, mirrored.
_ADJECTIVE_CLASSES = ("quality", "colour", "origin", "type")
# (English, class, French masc. sg., fem. sg., masc. pl., fem. pl.)
_ADJECTIVES = (
    ("heavy", 0, "lourd", "lourde", "lourds", "lourdes"),
    ("quiet", 0, "calme", "calme", "calmes", "calmes"),
    ("famous", 0, "célèbre", "célèbre", "célèbres", "célèbres"),
    ("happy", 0, "heureux", "heureuse", "heureux", "heureuses"),
    ("green", 1, "vert", "verte", "verts", "vertes"),
    ("red", 1, "rouge", "rouge", "rouges", "rouges"),
    ("black", 1, "noir", "noire", "noirs", "noires"),
    ("white", 1, "blanc", "blanche", "blancs", "blanches"),
    ("european", 2, "européen", "européenne", "européens", "européennes"),
    ("french", 2, "français", "française", "français", "françaises"),
    ("italian", 2, "italien", "italienne", "italiens", "italiennes"),
    ("african", 2, "africain", "africaine", "africains", "africaines"),
    ("economic", 3, "économique", "économique", "économiques", "économiques"),
    ("political", 3, "politique", "politique", "politiques", "politiques"),
    ("natural", 3, "naturel", "naturelle", "naturels", "naturelles"),
    ("royal", 3, "royal", "royale", "royaux", "royales"),
)

# (English 3rd person singular, plural, French 3rd person singular, plural)
_TRANSITIVE_VERBS = (
    ("sees", "see", "voit", "voient"),
    ("likes", "like", "aime", "aiment"),
    ("follows", "follow", "suit", "suivent"),
    ("finds", "find", "trouve", "trouvent"),
    ("takes", "take", "prend", "prennent"),
    ("watches", "watch", "regarde", "regardent"),
    ("carries", "carry", "porte", "portent"),
    ("visits", "visit", "visite", "visitent"),
)
_INTRANSITIVE_VERBS = (
    ("sleeps", "sleep", "dort", "dorment"),
    ("runs", "run", "court", "courent"),
    ("waits", "wait", "attend", "attendent"),
    ("sings", "sing", "chante", "chantent"),
)

_PREPOSITIONS = {"on": "sur", "in": "dans", "with": "avec", "under": "sous", "behind": "derrière", "for": "pour"}
_CONJUNCTIONS = {"and": ("et",), "but": ("mais",), "while": ("pendant", "que"), "because": ("parce", "que")}

# Lookup tables for the translator, keyed by English word.
_NOUN_OF = {}  # word -> (gender, number, French)
for _sg, _pl, _g, _fsg, _fpl in _NOUNS:
    _NOUN_OF[_sg] = (_g, "sg", _fsg)
    _NOUN_OF[_pl] = (_g, "pl", _fpl)
_ADJECTIVE_OF = {  # word -> (class, {(gender, number): French})
    en: (cls, {("m", "sg"): ms, ("f", "sg"): fs, ("m", "pl"): mp, ("f", "pl"): fp})
    for en, cls, ms, fs, mp, fp in _ADJECTIVES
}
_VERB_OF = {}  # word -> (transitive, number, French)
for _table, _transitive in ((_TRANSITIVE_VERBS, True), (_INTRANSITIVE_VERBS, False)):
    for _sg, _pl, _fsg, _fpl in _table:
        _VERB_OF[_sg] = (_transitive, "sg", _fsg)
        _VERB_OF[_pl] = (_transitive, "pl", _fpl)

del _sg, _pl, _g, _fsg, _fpl, _table, _transitive

_SOURCE_WORDS = (
    tuple(_DETERMINERS)
    + tuple(w for n in _NOUNS for w in n[:2])
    + tuple(a[0] for a in _ADJECTIVES)
    + tuple(w for v in _TRANSITIVE_VERBS + _INTRANSITIVE_VERBS for w in v[:2])
    + tuple(_PREPOSITIONS)
    + tuple(_CONJUNCTIONS)
)
_TARGET_WORDS = tuple(
    dict.fromkeys(
        [f for forms in _DETERMINERS.values() for f in forms.values()]
        + [w for n in _NOUNS for w in n[3:]]
        + [w for a in _ADJECTIVES for w in a[2:]]
        + [w for v in _TRANSITIVE_VERBS + _INTRANSITIVE_VERBS for w in v[2:]]
        + list(_PREPOSITIONS.values())
        + [w for ws in _CONJUNCTIONS.values() for w in ws]
        + ["qu'"]
    )
)
_SOURCE_SET = frozenset(_SOURCE_WORDS)
_VOWELS = frozenset("aeiouyéèêàâîôû")


# ---- the translate grammar: the translator ---------------------------------------------------


def _grammar_error(words: Sequence[str], position: int, expected: str) -> ValueError:
    got = repr(words[position]) if position < len(words) else "the end of the sentence"
    return ValueError(
        f"not a sentence of the translate grammar: expected {expected} at position {position}, "
        f"got {got} in {' '.join(words)!r}"
    )


def _noun_phrase(words, p, french, links) -> tuple[int, str]:
    """Translate the noun phrase ``det adj* noun`` that starts at ``p``.

    Appends the French ``det noun adj_k .. adj_1`` to ``french`` and its links to ``links``;
    returns the position after the phrase and the noun's number.
    """
    if p >= len(words) or words[p] not in _DETERMINERS:
        raise _grammar_error(words, p, "a determiner (" + ", ".join(_DETERMINERS) + ")")
    q = p + 1
    while q < len(words) and words[q] in _ADJECTIVE_OF:
        q += 1
    if q >= len(words) or words[q] not in _NOUN_OF:
        raise _grammar_error(words, q, "an adjective or a noun")
    gender, number, noun = _NOUN_OF[words[q]]
    determiner = _DETERMINERS[words[p]].get((gender, number))
    if determiner is None:
        raise ValueError(
            f"not a sentence of the translate grammar: the determiner {words[p]!r} at position {p} "
            f"cannot go with the {'plural' if number == 'pl' else 'singular'} noun {words[q]!r}"
        )
    base = len(french)
    french += [determiner, noun]
    links += [(base, p), (base + 1, q)]
    for k, j in enumerate(range(q - 1, p, -1)):  # adjectives, last English one first
        french.append(_ADJECTIVE_OF[words[j]][1][gender, number])
        links.append((base + 2 + k, j))
    return q + 1, number


def _clause(words, p, french, links) -> int:
    """Translate ``NP verb [NP] [prep NP]`` starting at ``p``; return the position after it."""
    p, number = _noun_phrase(words, p, french, links)
    if p >= len(words) or words[p] not in _VERB_OF:
        raise _grammar_error(words, p, "a verb")
    transitive, verb_number, verb = _VERB_OF[words[p]]
    if verb_number != number:
        raise ValueError(
            f"not a sentence of the translate grammar: the verb {words[p]!r} at position {p} does not "
            f"agree with its {'plural' if number == 'pl' else 'singular'} subject"
        )
    links.append((len(french), p))
    french.append(verb)
    p += 1
    if transitive:
        p, _ = _noun_phrase(words, p, french, links)
    if p < len(words) and words[p] in _PREPOSITIONS:
        links.append((len(french), p))
        french.append(_PREPOSITIONS[words[p]])
        p, _ = _noun_phrase(words, p + 1, french, links)
    return p


def translate_sentence(words: Sequence[str]) -> Pair:
    """Translate an English sentence of the ``translate`` grammar, with its gold alignment.

    This is the rule-based "perfect translator" behind the ``translate`` task: the task's sampler
    draws an English sentence and calls this function. The grammar, in full::

        sentence := clause (conjunction clause)*
        clause   := NP verb [NP] [preposition NP]     (the object NP iff the verb is transitive)
        NP       := determiner adjective* noun

    The determiner must fit the noun's number (``a cats`` is rejected) and the verb must agree
    with its subject (``the cat see`` is rejected). Sampled sentences use at most two adjectives,
    in the English order quality < colour < origin < type; this function accepts any number in
    any order and mirrors them after the noun.

    >>> p = translate_sentence("the european economic zone sees a cat".split())
    >>> " ".join(p.target)
    'la zone économique européenne voit un chat'
    >>> p.alignment
    ((0, 0), (1, 3), (2, 2), (3, 1), (4, 4), (5, 5), (6, 6))

    Raises ``ValueError`` naming the position and the word when the sentence is not in the grammar.
    """
    if isinstance(words, str):
        raise TypeError(f"words must be a sequence of words, got the single string {words!r}; use .split()")
    words = tuple(words)
    if not words:
        raise ValueError("words must contain at least 1 word, got 0")
    for k, w in enumerate(words):
        if w not in _SOURCE_SET:
            raise ValueError(f"unknown word {w!r} at position {k}: not in the translate source vocabulary")
    french: list[str] = []
    links: list[tuple[int, int]] = []
    p = _clause(words, 0, french, links)
    while p < len(words):
        if words[p] not in _CONJUNCTIONS:
            raise _grammar_error(words, p, "a conjunction (" + ", ".join(_CONJUNCTIONS) + ") or the end")
        for w in _CONJUNCTIONS[words[p]]:
            links.append((len(french), p))
            french.append(w)
        p = _clause(words, p + 1, french, links)
    for i in range(len(french) - 1):  # que -> qu' before a vowel: "pendant qu' une fille"
        if french[i] == "que" and french[i + 1][0] in _VOWELS:
            french[i] = "qu'"
    return Pair(words, tuple(french), tuple(sorted(links)))


# ---- the translate grammar: the sampler ------------------------------------------------------

_MAX_ADJECTIVES = 2  # per noun phrase, in sampled sentences
_NP_MIN, _NP_MAX = 2, 2 + _MAX_ADJECTIVES


def _clause_templates() -> dict[int, list[tuple[bool, bool, int, int, int]]]:
    """Every clause shape, grouped by its length in English words.

    A shape is ``(transitive, has_pp, subject_adjectives, object_adjectives, pp_adjectives)``.
    Lengths run from 3 (``the cat sleeps``) to 14 (two-adjective NPs everywhere).
    """
    by_length: dict[int, list] = {}
    r = range(_MAX_ADJECTIVES + 1)
    for transitive in (False, True):
        for pp in (False, True):
            for a_s in r:
                for a_o in r if transitive else (0,):
                    for a_p in r if pp else (0,):
                        n = (2 + a_s) + 1 + (2 + a_o if transitive else 0) + (3 + a_p if pp else 0)
                        by_length.setdefault(n, []).append((transitive, pp, a_s, a_o, a_p))
    return by_length


_TEMPLATES = _clause_templates()
_CLAUSE_MIN, _CLAUSE_MAX = min(_TEMPLATES), max(_TEMPLATES)
_DETS_FOR = {num: [d for d, forms in _DETERMINERS.items() if ("m", num) in forms] for num in ("sg", "pl")}
_ADJECTIVES_IN_CLASS = [[a[0] for a in _ADJECTIVES if a[1] == c] for c in range(len(_ADJECTIVE_CLASSES))]


def _random_np(rng: np.random.Generator, n_adjectives: int) -> tuple[list[str], str]:
    """An English noun phrase with ``n_adjectives`` adjectives from distinct classes, in order."""
    number = "pl" if rng.random() < 0.5 else "sg"
    noun = _NOUNS[rng.integers(len(_NOUNS))]
    dets = _DETS_FOR[number]
    words = [dets[rng.integers(len(dets))]]
    if n_adjectives:
        for c in np.sort(rng.choice(len(_ADJECTIVE_CLASSES), size=n_adjectives, replace=False)):
            options = _ADJECTIVES_IN_CLASS[c]
            words.append(options[rng.integers(len(options))])
    words.append(noun[0] if number == "sg" else noun[1])
    return words, number


def _random_clause(rng: np.random.Generator, length: int) -> list[str]:
    options = _TEMPLATES[length]
    transitive, pp, a_s, a_o, a_p = options[rng.integers(len(options))]
    words, number = _random_np(rng, a_s)
    verbs = _TRANSITIVE_VERBS if transitive else _INTRANSITIVE_VERBS
    verb = verbs[rng.integers(len(verbs))]
    words.append(verb[0] if number == "sg" else verb[1])
    if transitive:
        words += _random_np(rng, a_o)[0]
    if pp:
        preps = tuple(_PREPOSITIONS)
        words.append(preps[rng.integers(len(preps))])
        words += _random_np(rng, a_p)[0]
    return words


def _clause_lengths(rng: np.random.Generator, length: int) -> list[int]:
    """Split a sentence of ``length`` words into clause lengths, leaving one word per conjunction.

    With ``k`` clauses, ``length = sum(clause lengths) + k - 1`` and every clause length lies in
    ``[3, 14]``, so ``k`` must satisfy ``4k - 1 <= length <= 15k - 1``; such a ``k`` exists for
    every ``length >= 3``. We aim at a typical clause of 5 to 11 words, then spread the words
    over the clauses at random. No rejection sampling: every length is reached in one pass.
    """
    k_min = -(-(length + 1) // (_CLAUSE_MAX + 1))
    k_max = (length + 1) // (_CLAUSE_MIN + 1)
    typical = int(rng.integers(5, 12))
    k = int(np.clip(round((length + 1) / (typical + 1)), k_min, k_max))
    sizes = [_CLAUSE_MIN] * k
    for _ in range(length - (k - 1) - _CLAUSE_MIN * k):
        open_ = [c for c in range(k) if sizes[c] < _CLAUSE_MAX]
        sizes[open_[rng.integers(len(open_))]] += 1
    return sizes


def _sample_translate(rng: np.random.Generator, length: int) -> Pair:
    conjunctions = tuple(_CONJUNCTIONS)
    words: list[str] = []
    for c, size in enumerate(_clause_lengths(rng, length)):
        if c:
            words.append(conjunctions[rng.integers(len(conjunctions))])
        words += _random_clause(rng, size)
    return translate_sentence(words)


_SYMBOL_VOCAB = Vocab(_SYMBOLS)
_TASKS = {
    "copy": Task("copy", _SYMBOL_VOCAB, _SYMBOL_VOCAB, 1, _sample_copy),
    "reverse": Task("reverse", _SYMBOL_VOCAB, _SYMBOL_VOCAB, 1, _sample_reverse),
    "translate": Task("translate", Vocab(_SOURCE_WORDS), Vocab(_TARGET_WORDS), _CLAUSE_MIN, _sample_translate),
}


def get_task(name: str) -> Task:
    """The task called ``name``, one of ``TASK_NAMES = ("copy", "reverse", "translate")``."""
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}: expected one of {TASK_NAMES}")
    return _TASKS[name]


def _resolve_task(task) -> Task:
    if isinstance(task, Task):
        return task
    if isinstance(task, str):
        return get_task(task)
    raise TypeError(f"task must be a task name or a Task, got {type(task).__name__}")


# --------------------------------------------------------------------------------------------
# Corpora
# --------------------------------------------------------------------------------------------


def _length_range(task: Task, min_length, max_length) -> tuple[int, int]:
    min_length = _check_int("min_length", min_length, 0)
    max_length = _check_int("max_length", max_length, task.min_length)
    if min_length > max_length:
        raise ValueError(f"min_length must be <= max_length, got min_length={min_length} > max_length={max_length}")
    return max(min_length, task.min_length), max_length


def _draw(task: Task, n: int, rng: np.random.Generator, lo: int, hi: int, exclude: frozenset) -> list[Pair]:
    pairs: list[Pair] = []
    misses = 0
    while len(pairs) < n:
        pair = task.sample(rng, int(rng.integers(lo, hi + 1)))
        if pair.source in exclude:
            misses += 1
            if misses > 10_000 + 100 * n:
                raise ValueError(
                    f"exclude covers (nearly) every source of {task.name!r} with lengths {lo}..{hi}: "
                    f"{misses} draws were excluded; widen the length range"
                )
            continue
        pairs.append(pair)
    return pairs


def generate(
    task: str | Task,
    n: int,
    *,
    seed: int,
    min_length: int,
    max_length: int,
    exclude: Iterable[Pair] = (),
) -> list[Pair]:
    """``n`` random pairs of ``task``, the same for the same ``seed``.

    Each source length is drawn uniformly from ``[max(min_length, task.min_length), max_length]``
    (so ``min_length=1`` means "as short as the task allows"), then a pair of that length is drawn.
    A pair whose source is the source of a pair in ``exclude`` is skipped and redrawn: pass the
    held-out set here so that training never sees a test sentence.
    """
    task = _resolve_task(task)
    n = _check_int("n", n, 1)
    seed = _check_int("seed", seed, 0)
    lo, hi = _length_range(task, min_length, max_length)
    if isinstance(exclude, Pair):
        raise TypeError("exclude must be an iterable of Pair, got a single Pair")
    excluded = frozenset(p.source for p in exclude)
    return _draw(task, n, np.random.default_rng(seed), lo, hi, excluded)


def _test_seed(name: str, lo: int, hi: int) -> np.random.SeedSequence:
    """The seed of a held-out set: a hash of (task, length range) with a spawn key of its own.

    Ordinary seeds are small integers fed to ``np.random.default_rng(seed)``; this seed sequence
    has a 128-bit entropy and a non-empty spawn key, so its stream is not one of theirs.
    """
    digest = hashlib.sha256(f"attention_course.tasks.test_set/{name}/{lo}/{hi}".encode()).digest()
    return np.random.SeedSequence(int.from_bytes(digest[:16], "little"), spawn_key=(0x7E57,))


def test_set(task: str | Task, *, min_length: int = 1, max_length: int = 60, n: int = 500) -> list[Pair]:
    """The fixed held-out set of ``task`` for a length range, the same in every chapter.

    Its seed is derived from the task name and the (effective) length range only, so the call is
    reproducible everywhere, and a smaller ``n`` gives a prefix of a larger one. Lengths are
    uniform over the range, as in :func:`generate`. Train with
    ``generate(..., exclude=test_set(...))`` to keep these sentences unseen.
    """
    task = _resolve_task(task)
    n = _check_int("n", n, 1)
    lo, hi = _length_range(task, min_length, max_length)
    return _draw(task, n, np.random.default_rng(_test_seed(task.name, lo, hi)), lo, hi, frozenset())


test_set.__test__ = False  # not a pytest test, despite its name


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


class Batch(NamedTuple):
    """A padded batch of pairs, as NumPy arrays (a NamedTuple, hence a JAX pytree for ``jit``).

    For a pair with source ``x_1 .. x_m`` and target ``y_1 .. y_n``, its row holds::

        source      x_1 .. x_m EOS PAD ..       source_mask  True for the m + 1 real tokens
        target_in   BOS y_1 .. y_n PAD ..       (what the decoder reads: teacher forcing)
        target_out  y_1 .. y_n EOS PAD ..       (what it must predict)   target_mask: n + 1 Trues

    Shapes: ``source``, ``source_mask`` ``[B, S]``; ``target_*`` ``[B, T]``; lengths ``[B]``.
    """

    source: np.ndarray  # [B, S] int32
    source_mask: np.ndarray  # [B, S] bool
    source_lengths: np.ndarray  # [B] int32, m + 1
    target_in: np.ndarray  # [B, T] int32
    target_out: np.ndarray  # [B, T] int32
    target_mask: np.ndarray  # [B, T] bool
    target_lengths: np.ndarray  # [B] int32, n + 1


def _width(name: str, given, needed: int, what: str) -> int:
    if given is None:
        return needed
    given = _check_int(name, given, 1)
    if given < needed:
        raise ValueError(f"{name} must be >= {needed} ({what}), got {given}")
    return given


def make_batch(
    pairs: Sequence[Pair],
    task: Task,
    *,
    source_width: int | None = None,
    target_width: int | None = None,
) -> Batch:
    """Encode and pad ``pairs`` into a :class:`Batch`.

    The widths default to the longest source + 1 and the longest target + 1 (the +1 is EOS, or
    BOS on the input side). Pass fixed widths so that every batch has the same shape and a
    jit-compiled function compiles once.
    """
    task = _resolve_task(task)
    pairs = _check_pairs("pairs", pairs)
    longest_source = max(len(p.source) for p in pairs)
    longest_target = max(len(p.target) for p in pairs)
    S = _width("source_width", source_width, longest_source + 1, f"longest source {longest_source} + EOS")
    T = _width("target_width", target_width, longest_target + 1, f"longest target {longest_target} + EOS")
    B = len(pairs)
    source = np.full((B, S), PAD_ID, np.int32)
    target_in = np.full((B, T), PAD_ID, np.int32)
    target_out = np.full((B, T), PAD_ID, np.int32)
    for r, pair in enumerate(pairs):
        src = task.source_vocab.encode(pair.source)  # ends with EOS
        tgt = task.target_vocab.encode(pair.target, eos=False)
        source[r, : len(src)] = src
        target_in[r, 0] = BOS_ID
        target_in[r, 1 : len(tgt) + 1] = tgt
        target_out[r, : len(tgt)] = tgt
        target_out[r, len(tgt)] = EOS_ID
    source_lengths = np.array([len(p.source) + 1 for p in pairs], np.int32)
    target_lengths = np.array([len(p.target) + 1 for p in pairs], np.int32)
    return Batch(
        source=source,
        source_mask=np.arange(S)[None, :] < source_lengths[:, None],
        source_lengths=source_lengths,
        target_in=target_in,
        target_out=target_out,
        target_mask=np.arange(T)[None, :] < target_lengths[:, None],
        target_lengths=target_lengths,
    )


def bucket_edges(max_length: int, width: int = 10) -> tuple[int, ...]:
    """Upper edges of length buckets of ``width`` words up to ``max_length``.

    ``bucket_edges(30) == (10, 20, 30)``, ``bucket_edges(35) == (10, 20, 30, 35)``. Bucket ``b``
    holds the sources with ``edges[b-1] < length <= edges[b]``.
    """
    max_length = _check_int("max_length", max_length, 1)
    width = _check_int("width", width, 1)
    return tuple(range(width, max_length, width)) + (max_length,)


def _buckets(pairs: list[Pair], edges) -> tuple[tuple[int, ...], list[np.ndarray]]:
    """Check ``edges`` and return them with, per bucket, the indices of its pairs (in order)."""
    lengths = np.array([len(p.source) for p in pairs])
    if edges is None:
        edges = bucket_edges(max(int(lengths.max()), 1))
    else:
        if isinstance(edges, (int, np.integer)):
            raise TypeError(f"edges must be a sequence of ints, got the single int {edges}")
        edges = tuple(_check_int(f"edges[{k}]", e, 1) for k, e in enumerate(edges))
        if not edges:
            raise ValueError("edges must contain at least 1 edge, got 0")
        if any(a >= b for a, b in zip(edges, edges[1:])):
            raise ValueError(f"edges must be strictly increasing, got {edges}")
        if lengths.max() > edges[-1]:
            raise ValueError(f"edges[-1] must be >= the longest source ({lengths.max()} words), got {edges[-1]}")
    which = np.searchsorted(np.array(edges), lengths, side="left")
    return edges, [np.flatnonzero(which == b) for b in range(len(edges))]


def _padded_buckets(pairs: list[Pair], task: Task, edges) -> list[Batch]:
    """Each non-empty bucket as one big Batch at that bucket's fixed widths."""
    edges, members = _buckets(pairs, edges)
    out = []
    for edge, idx in zip(edges, members):
        if len(idx):
            chosen = [pairs[k] for k in idx]
            width = max(len(p.target) for p in chosen) + 1
            out.append(make_batch(chosen, task, source_width=edge + 1, target_width=width))
    return out


def _rows(batch: Batch, rows: np.ndarray) -> Batch:
    return Batch(*(a[rows] for a in batch))


def batches(
    pairs: Sequence[Pair],
    task: Task,
    batch_size: int,
    *,
    seed: int,
    edges: Sequence[int] | None = None,
    epochs: int | None = None,
) -> Iterator[Batch]:
    """A shuffled stream of training batches, bucketed by source length.

    Each batch comes from one bucket (default edges: :func:`bucket_edges` of the longest source)
    and is padded to that bucket's fixed shape: source width ``edge + 1``, target width the
    longest target of the bucket + 1. A run therefore compiles its training step once per
    non-empty bucket, not once per batch.

    One epoch: each bucket is shuffled and cut into ``ceil(size / batch_size)`` batches, the last
    one completed by wrapping around to the start of the shuffled bucket (a bucket smaller than
    ``batch_size`` is repeated), so every batch has exactly ``batch_size`` rows and every pair is
    seen at least once. The batches of all buckets are then shuffled together, so buckets come up
    in proportion to their sizes. ``epochs=None`` repeats forever. The same ``seed`` gives the
    same stream.
    """
    task = _resolve_task(task)
    pairs = _check_pairs("pairs", pairs)
    batch_size = _check_int("batch_size", batch_size, 1)
    seed = _check_int("seed", seed, 0)
    if epochs is not None:
        epochs = _check_int("epochs", epochs, 1)
    buckets = _padded_buckets(pairs, task, edges)

    def stream() -> Iterator[Batch]:
        rng = np.random.default_rng(seed)
        epoch = 0
        while epochs is None or epoch < epochs:
            plan = []
            for b, bucket in enumerate(buckets):
                size = len(bucket.source)
                n_batches = -(-size // batch_size)
                rows = np.resize(rng.permutation(size), n_batches * batch_size)
                plan += [(b, r) for r in rows.reshape(n_batches, batch_size)]
            for k in rng.permutation(len(plan)):
                b, rows = plan[k]
                yield _rows(buckets[b], rows)
            epoch += 1

    return stream()


def eval_order(pairs: Sequence[Pair], *, edges: Sequence[int] | None = None) -> list[int]:
    """The indices into ``pairs`` of the real rows of :func:`eval_batches`, in the order they come.

    ``eval_batches`` groups pairs by bucket, so row ``r`` of the concatenated real rows is
    ``pairs[eval_order(pairs)[r]]``: use it to match predictions with gold alignments.
    """
    pairs = _check_pairs("pairs", pairs)
    _, members = _buckets(pairs, edges)
    return [int(k) for idx in members for k in idx]


def eval_batches(
    pairs: Sequence[Pair],
    task: Task,
    batch_size: int,
    *,
    edges: Sequence[int] | None = None,
) -> Iterator[tuple[Batch, np.ndarray]]:
    """Every pair exactly once, bucketed and padded like :func:`batches`, without shuffling.

    Buckets come in order of their edges, and pairs within a bucket in their order in ``pairs``
    (see :func:`eval_order`). The last batch of a bucket is completed with copies of its last
    pair; the second item of each tuple is a ``[batch_size]`` bool array, True on real rows, to
    leave the copies out of the metrics.
    """
    task = _resolve_task(task)
    pairs = _check_pairs("pairs", pairs)
    batch_size = _check_int("batch_size", batch_size, 1)
    buckets = _padded_buckets(pairs, task, edges)

    def stream() -> Iterator[tuple[Batch, np.ndarray]]:
        for bucket in buckets:
            size = len(bucket.source)
            for start in range(0, size, batch_size):
                stop = min(start + batch_size, size)
                rows = np.full(batch_size, stop - 1)
                rows[: stop - start] = np.arange(start, stop)
                real = np.arange(batch_size) < stop - start
                yield _rows(bucket, rows), real

    return stream()
