"""Claims: the sentences of the book whose truth depends on a measured number.

A chapter measures something, then says something about it: "faster", "about the same", "the
best", "falls with length". Another machine, another XLA version or another seed gives other
numbers, so such words are never written by hand. Each is backed by a claim, computed in the
notebook next to its measurement, in one of two ways:

* **Words that follow the numbers.** :meth:`Claims.ratio`, :meth:`Claims.compare`,
  :meth:`Claims.choose` and :meth:`Claims.best` choose the words by a rule stated in the call
  (``within=0.15``: a ratio within ±15 % of 1 reads "about the same") and glue them, so the prose
  says ``{glue:text}`blockwise_time_words``` where it would have said "less time than".
* **Fixed sentences, asserted.** :meth:`Claims.check` asserts what the prose states as it stands.
  In full mode (the book, Colab, `make seeds`) a false claim raises :class:`ClaimError`, which
  names the chapter, the claim and the numbers, and so fails the build (``raise_on_error``). In
  fast mode the experiments are shrunk and the book's sentences need not hold: a false claim
  prints that it was not checked, unless it is marked ``fast=True`` (a claim on exact or compiled
  quantities, which holds at any size). ``ATTENTION_COURSE_CLAIMS=strict`` checks every claim in
  fast mode too; ``ATTENTION_COURSE_CLAIMS=record`` (the seed study's runs) records a false claim
  as failed and lets the notebook run on.

Each claim prints one line under its cell (what was claimed, the numbers, held or not), and is
recorded for the seed study: glued, without display, as ``claim_<name>`` with the words chosen or
``"held"``/``"failed"``/``"unchecked"``, so `make seeds` can count in how many seeds each held.
:meth:`Claims.spread` reads the committed seed study back, for figures that show the spread.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from attention_course import runtime

__all__ = ["ClaimError", "Claims", "CLAIMS_ENV", "SEED_STUDY_DIR", "seed_study"]

CLAIMS_ENV = "ATTENTION_COURSE_CLAIMS"  # "strict": fast mode checks every claim too; "record":
# a false claim is recorded, not raised (the seed study's runs)
SEED_STUDY_DIR = Path(__file__).with_name("seed_study")  # written by `make seeds` (tools/seeds.py)
PREFIX = "claim_"


class ClaimError(AssertionError):
    """A sentence of the book that its own numbers contradict."""


def _strict() -> bool:
    return os.environ.get(CLAIMS_ENV, "").strip().lower() == "strict"


def _recording() -> bool:
    """``ATTENTION_COURSE_CLAIMS=record`` (`make seeds`): a false claim is recorded and printed,
    and the notebook runs on, so that the seed study sees every claim of every seed."""
    return os.environ.get(CLAIMS_ENV, "").strip().lower() == "record"


def _number(name: str, value: Any) -> float:
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: expected a real number, got {value!r}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name}: got NaN, which no claim can rest on")
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return f"{float(value):.4g}"
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return _fmt(value.item())
    return str(value)


_say = runtime.say  # wrapped at the book's column


def _numbers_text(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} = {_fmt(v)}" for k, v in values.items())


def seed_study(chapter: str) -> dict | None:
    """The committed seed study of ``chapter`` (e.g. ``"05_luong"``), or None if there is none."""
    path = SEED_STUDY_DIR / f"{chapter}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


class Claims:
    """The claims of one chapter: ``claims = Claims("05_luong")`` at the top of the notebook.

    Args:
      chapter: the notebook's stem (``"NN_slug"``); it names the chapter in every failure and
        finds the chapter's seed study.
    """

    def __init__(self, chapter: str):
        if not isinstance(chapter, str) or not chapter[:2].isdigit():
            raise ValueError(f"chapter: expected the notebook's stem like '05_luong', got {chapter!r}")
        self.chapter = chapter
        self.results: dict[str, str] = {}

    # -- recording ---------------------------------------------------------------------------

    def _record(self, name: str, verdict: str) -> None:
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"name: expected an identifier-like string, got {name!r}")
        self.results[name] = verdict
        try:
            from myst_nb import glue as _myst_glue
        except ImportError:
            return
        _myst_glue(PREFIX + name, verdict, display=False)

    def _words(self, name: str, words: str, rule: str, values: Mapping[str, Any]) -> str:
        self._record(name, words)
        runtime.glue(name, words)
        _say(f"  (rule: {rule}; {_numbers_text(values)})")
        return words

    # -- words that follow the numbers --------------------------------------------------------

    def ratio(self, name: str, value: Any, reference: Any, *, within: float = 0.15,
              words: Sequence[str] = ("less than", "about the same as", "more than")) -> str:
        """Glue ``name``: ``words[1]`` if ``value / reference`` is within ``±within`` of 1, else
        ``words[0]`` (below) or ``words[2]`` (above). Returns the words."""
        value, reference = _number("value", value), _number("reference", reference)
        if reference <= 0:
            raise ValueError(f"reference: expected a positive number, got {reference}")
        if not 0 <= within < 1:
            raise ValueError(f"within: expected a fraction in [0, 1), got {within}")
        if len(words) != 3:
            raise ValueError(f"words: expected (below, about the same, above), got {words!r}")
        r = value / reference
        chosen = words[1] if abs(r - 1) <= within else words[0] if r < 1 else words[2]
        rule = f"'{words[1]}' when the ratio is within ±{within:.0%} of 1"
        return self._words(name, chosen, rule, {"ratio": r})

    def compare(self, name: str, a: Any, b: Any, *, atol: float = 0.0, rtol: float = 0.0,
                words: Sequence[str] = ("lower than", "the same as", "higher than")) -> str:
        """Glue ``name``: ``words[1]`` if ``|a - b| <= atol + rtol * |b|``, else ``words[0]``
        (``a < b``) or ``words[2]`` (``a > b``). Returns the words."""
        a, b = _number("a", a), _number("b", b)
        if atol < 0 or rtol < 0:
            raise ValueError(f"atol, rtol: expected non-negative tolerances, got {atol}, {rtol}")
        if len(words) != 3:
            raise ValueError(f"words: expected (lower, the same, higher), got {words!r}")
        same = abs(a - b) <= atol + rtol * abs(b)
        chosen = words[1] if same else words[0] if a < b else words[2]
        rule = f"'{words[1]}' when |a - b| <= {atol:g} + {rtol:g}·|b|"
        return self._words(name, chosen, rule, {"a": a, "b": b})

    def choose(self, name: str, condition: bool, if_true: str, if_false: str, *, rule: str,
               **values: Any) -> str:
        """Glue ``name``: ``if_true`` where ``condition`` holds, else ``if_false``. ``rule`` says
        in words what the condition is; ``values`` are the numbers it rests on."""
        if not isinstance(rule, str) or not rule:
            raise ValueError("rule: say in words what the condition tests")
        chosen = if_true if bool(condition) else if_false
        return self._words(name, chosen, rule, values)

    def best(self, name: str, values: Mapping[str, Any], *, lower_is_better: bool = True) -> str:
        """Glue ``name``: the key of ``values`` with the lowest (or highest) number."""
        if not values:
            raise ValueError("values: expected at least one labelled number")
        clean = {str(k): _number(f"values[{k!r}]", v) for k, v in values.items()}
        pick = min if lower_is_better else max
        chosen = pick(clean, key=clean.__getitem__)
        rule = f"the {'lowest' if lower_is_better else 'highest'} of {len(clean)}"
        return self._words(name, chosen, rule, clean)

    # -- fixed sentences ----------------------------------------------------------------------

    def check(self, name: str, holds: bool, statement: str, *, fast: bool = False, **values: Any) -> bool:
        """Assert that ``statement``, which the prose states as it stands, holds.

        Args:
          name: the claim's name (an identifier), as the seed study lists it.
          holds: the claim computed from the measurement.
          statement: the sentence in words, as the failure message shows it.
          fast: also fail in fast mode (for exact or compiled quantities that hold at any size).
          **values: the numbers the claim rests on; a failure prints them.

        Raises:
          ClaimError: in full mode (or with ``fast=True``, or ``ATTENTION_COURSE_CLAIMS=strict``)
            when the claim does not hold; never under ``ATTENTION_COURSE_CLAIMS=record``.
        """
        if not isinstance(statement, str) or not statement:
            raise ValueError("statement: say in words what the prose claims")
        ok = bool(holds)
        numbers_text = _numbers_text(values)
        if ok:
            self._record(name, "held")
            _say(f"checked: {statement}" + (f" ({numbers_text})" if numbers_text else ""))
            return True
        if runtime.fast_mode() and not fast and not _strict():
            self._record(name, "unchecked")
            _say(f"not checked in fast mode (shrunk experiments): {statement}"
                  + (f" ({numbers_text})" if numbers_text else ""))
            return False
        self._record(name, "failed")
        seed = f", seed offset {runtime.seed_offset()}" if runtime.seed_offset() else ""
        message = (f"chapter {self.chapter}, claim {name!r} does not hold{seed}: {statement}"
                   + (f" ({numbers_text})" if numbers_text else ""))
        if _recording():
            _say(f"DOES NOT HOLD (recorded for the seed study): {message}")
            return False
        raise ClaimError(message)

    # -- the seed study ---------------------------------------------------------------------

    def spread(self, name: str, like: Sequence | None = None) -> dict | None:
        """The seed study's record of the glued number ``name``: a dict with ``mean``, ``min``,
        ``max`` and ``seeds`` (the values, one per seed, for lists one list per seed), or None
        where there is nothing to draw: the committed study lacks it (a number added since it
        ran), the notebook runs in fast mode (the study ran the full experiments), or ``like``
        (this run's list) has another length than the study's (the experiment has changed)."""
        if runtime.fast_mode():
            return None
        study = seed_study(self.chapter)
        if study is None:
            return None
        entry = study.get("numbers", {}).get(name)
        if entry is not None and like is not None and (
                not isinstance(entry["min"], list) or len(entry["min"]) != len(like)):
            return None
        return entry
