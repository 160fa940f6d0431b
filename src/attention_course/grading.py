"""Checks behind the exercises, and the tool that makes student copies of the notebooks.

For students
------------
Each exercise ends with a check cell such as::

    from attention_course.grading import check
    check(my_softmax, pooling.masked_softmax, cases=[(scores, mask)], make_case=random_scores)

It runs your function and the course's reference on the same inputs and prints one line:

    ✓ my_softmax: all 6 cases pass
    ✗ my_softmax: case 3 (random #2): max abs error 0.31 at index (1, 2) (expected 0.5, got 0.19)

A check never crashes the notebook: if your function raises, the verdict says so.  It also
returns True or False, so a grader can count passes.

For instructors
---------------
Solutions in notebook code cells sit between two marker lines::

    def masked_softmax(scores, mask):
        # BEGIN SOLUTION
        scores = jnp.where(mask, scores, -jnp.inf)
        ...
        # END SOLUTION

:func:`strip_solutions` replaces each such region by
``raise NotImplementedError("your code here")``; :func:`student_notebook` does that to every
code cell and also drops solution cells and outputs.  From a shell::

    python -m attention_course.grading strip notebooks/ student/

writes a student copy of every ``notebooks/*.ipynb`` into ``student/``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "check",
    "check_digest",
    "check_raises",
    "check_value",
    "digest",
    "keep_going",
    "main",
    "numerics",
    "strip_solutions",
    "student_notebook",
]

PASS, FAIL = "\u2713", "\u2717"  # ✓ ✗
_MAX_MESSAGE = 200  # characters of an exception message quoted in a verdict


# --------------------------------------------------------------------------------------------
# Comparing results
# --------------------------------------------------------------------------------------------


def _short(value: Any) -> str:
    """A short repr for a verdict line."""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_array(value: Any) -> bool:
    """NumPy and JAX arrays (anything with a shape and an __array__), not NumPy scalars."""
    return (
        hasattr(value, "__array__")
        and hasattr(value, "shape")
        and not isinstance(value, np.generic)
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, complex, np.number, np.bool_)) and not isinstance(
        value, bool
    )


def _where(path: str) -> str:
    return f"{path}: " if path else ""


def _as_numpy(value: Any) -> np.ndarray:
    """``np.asarray``, with JAX's extra float types (bfloat16, float8: dtype kind "V") as
    float32 so NumPy can compute with them."""
    array = np.asarray(value)
    if array.dtype.kind == "V":
        array = array.astype(np.float32)
    return array


def _compare_arrays(got: Any, expected: Any, atol: float, rtol: float, path: str) -> str | None:
    expected_arr = _as_numpy(expected)
    try:
        got_arr = _as_numpy(got)
    except Exception:  # noqa: BLE001 -- a ragged list, say
        return f"{_where(path)}expected an array of shape {expected_arr.shape}, got {_short(got)}"
    if got_arr.shape != expected_arr.shape:
        return f"{_where(path)}expected shape {expected_arr.shape}, got {got_arr.shape}"
    if expected_arr.size == 0:
        return None
    numeric = [
        np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_ for a in (got_arr, expected_arr)
    ]
    if not all(numeric):  # strings, objects: plain equality
        if got_arr.dtype == expected_arr.dtype and np.array_equal(got_arr, expected_arr):
            return None
        return f"{_where(path)}expected {_short(expected_arr)}, got {_short(got_arr)}"
    exact = not np.issubdtype(expected_arr.dtype, np.inexact)
    with np.errstate(all="ignore"):
        if exact:
            bad = got_arr != expected_arr
        else:
            bad = ~np.isclose(got_arr, expected_arr, atol=atol, rtol=rtol, equal_nan=True)
        if not bad.any():
            return None
        common = np.result_type(got_arr, expected_arr, np.float64)  # complex stays complex
        error = np.abs(got_arr.astype(common) - expected_arr.astype(common))
        error = np.where(np.isnan(error), np.inf, error)
        error = np.where(bad, error, -1.0)
    flat = int(np.argmax(error))
    index = tuple(int(k) for k in np.unravel_index(flat, bad.shape))
    got_at, expected_at = got_arr[index], expected_arr[index]
    where = f" at index {index}" if index else ""
    if exact:
        return (
            f"{_where(path)}{int(bad.sum())} of {bad.size} entries differ, e.g.{where}: "
            f"expected {_short(expected_at.item())}, got {_short(got_at.item())}"
        )
    return (
        f"{_where(path)}max abs error {_short(float(error.max()))}{where} "
        f"(expected {_short(expected_at.item())}, got {_short(got_at.item())})"
    )


def _compare(got: Any, expected: Any, atol: float, rtol: float, path: str = "") -> str | None:
    """None when ``got`` matches ``expected``, else one line saying where and how it differs.

    Arrays: same shape, then close (floats, NaN == NaN) or equal (ints, bools).  Sets:
    exactly equal.  Dicts, lists, tuples and dataclasses: recursively (a list may stand for a
    tuple).  Numbers: close.  Anything else: ``==``.
    """
    if expected is None:
        return None if got is None else f"{_where(path)}expected None, got {_short(got)}"
    if isinstance(expected, (set, frozenset)):
        if not isinstance(got, (set, frozenset)):
            return f"{_where(path)}expected a set, got {type(got).__name__}"
        if got == expected:
            return None
        missing, extra = sorted(expected - got, key=repr), sorted(got - expected, key=repr)
        parts = []
        if missing:
            parts.append(f"missing {_short(set(missing[:5]))}")
        if extra:
            parts.append(f"unexpected {_short(set(extra[:5]))}")
        return f"{_where(path)}sets differ: " + ", ".join(parts)
    if isinstance(expected, Mapping):
        if not isinstance(got, Mapping):
            return f"{_where(path)}expected a dict, got {type(got).__name__}"
        if set(got) != set(expected):
            return (
                f"{_where(path)}expected keys {sorted(map(repr, expected))}, "
                f"got {sorted(map(repr, got))}"
            )
        for key in expected:
            problem = _compare(got[key], expected[key], atol, rtol, f"{path}[{key!r}]")
            if problem:
                return problem
        return None
    if dataclasses.is_dataclass(expected) and not isinstance(expected, type):
        if type(got) is not type(expected):
            return f"{_where(path)}expected {type(expected).__name__}, got {type(got).__name__}"
        for field in dataclasses.fields(expected):
            problem = _compare(
                getattr(got, field.name),
                getattr(expected, field.name),
                atol,
                rtol,
                f"{path}.{field.name}",
            )
            if problem:
                return problem
        return None
    if _is_array(expected):
        return _compare_arrays(got, expected, atol, rtol, path)
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return (
                f"{_where(path)}expected a {type(expected).__name__} of {len(expected)}, "
                f"got {type(got).__name__}"
            )
        if len(got) != len(expected):
            return f"{_where(path)}expected {len(expected)} items, got {len(got)}"
        for k, (g, e) in enumerate(zip(got, expected, strict=True)):
            problem = _compare(g, e, atol, rtol, f"{path}[{k}]")
            if problem:
                return problem
        return None
    if isinstance(expected, (bool, np.bool_)):
        if isinstance(got, (bool, np.bool_)) and bool(got) == bool(expected):
            return None
        return f"{_where(path)}expected {expected!r}, got {_short(got)}"
    if _is_number(expected):
        if _is_array(got) and np.shape(got) != ():
            return f"{_where(path)}expected a number, got an array of shape {np.shape(got)}"
        if isinstance(got, (str, bytes, bool, np.bool_)):
            return f"{_where(path)}expected a number, got {_short(got)}"
        try:
            got_number = complex(got) if isinstance(expected, complex) else float(got)
        except (TypeError, ValueError):
            return f"{_where(path)}expected a number, got {_short(got)}"
        expected_number = complex(expected) if isinstance(expected, complex) else float(expected)
        both_nan = (
            not isinstance(expected_number, complex)
            and math.isnan(expected_number)
            and math.isnan(got_number)
        )
        if both_nan or np.isclose(got_number, expected_number, atol=atol, rtol=rtol):
            return None
        with np.errstate(all="ignore"):
            error = abs(got_number - expected_number)
        return (
            f"{_where(path)}expected {_short(expected)}, got {_short(got)} "
            f"(abs error {_short(error)})"
        )
    try:
        equal = bool(got == expected)
    except Exception:  # noqa: BLE001 -- e.g. comparing an array with a string
        equal = False
    return None if equal else f"{_where(path)}expected {_short(expected)}, got {_short(got)}"


def _describe_exception(error: BaseException) -> str:
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 3] + "..."
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


PRECISION = "highest"  # float32 products inside a check, on every backend


@contextlib.contextmanager
def numerics():
    """The numerics a check runs the student's code and the reference under: float32 matrix
    products at the highest precision (``jax.default_matmul_precision``), whatever the
    runtime's default is (one bfloat16 pass on a TPU, TF32 on recent GPUs), so that a right
    answer that orders its products differently from the reference still agrees to 1e-5."""
    try:
        import jax
    except ImportError:  # pragma: no cover -- a check of NumPy code
        yield
        return
    with jax.default_matmul_precision(PRECISION):
        yield


def _call(fn: Callable, case: Any) -> Any:
    """Call ``fn`` with a case: a tuple is positional arguments, a dict keyword arguments,
    anything else the single argument."""
    try:  # fresh copies: a function that edits its inputs in place cannot affect the other
        case = copy.deepcopy(case)
    except Exception:  # noqa: BLE001 -- something that cannot be copied is passed as it is
        pass
    if isinstance(case, tuple):
        return fn(*case)
    if isinstance(case, dict):
        return fn(**case)
    return fn(case)


def _name_of(fn: Any, name: str | None) -> str:
    return name or getattr(fn, "__name__", None) or type(fn).__name__


# --------------------------------------------------------------------------------------------
# Public checks
# --------------------------------------------------------------------------------------------


def check(
    student_fn: Callable,
    reference_fn: Callable,
    cases: Sequence[Any] | Callable[[np.random.Generator], Any] = (),
    *,
    make_case: Callable[[np.random.Generator], Any] | None = None,
    n_random: int = 5,
    seed: int = 0,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    name: str | None = None,
) -> bool:
    """Run a student's function and the reference on the same cases; print one verdict line.

    Cases come from two places, run in this order:

    1. ``cases``: fixed cases, a list whose entries are a tuple of positional arguments, a
       dict of keyword arguments, or any other value (the single argument);
    2. ``n_random`` random cases from ``make_case(rng)``, which returns a case in the same
       form, with ``rng = np.random.default_rng(seed)`` (the same cases every run).

    ``cases`` may itself be the callable ``make_case`` when there are no fixed cases.

    Each case gets fresh deep copies of its arguments, so a function that modifies its inputs
    cannot change what the other sees.  Outputs are compared recursively: arrays by shape,
    then ``np.isclose(got, expected, atol=atol, rtol=rtol)`` (integers and booleans exactly;
    NaN matches NaN); tuples, lists, dicts and dataclasses item by item; sets exactly;
    numbers within tolerance; anything else with ``==``.

    Both functions run with float32 matrix products at the highest precision
    (:func:`numerics`): on a TPU (one bfloat16 pass by default) or a TF32 GPU, a right answer
    that orders its products differently from the reference is still right to 1e-5.

    If the reference raises on a case, the student's function must raise the same kind of
    exception there (a case can test input validation).  If the student's function raises
    anywhere else, the verdict quotes the exception.

    The verdict is one line, stopping at the first failing case:

    * ``✓ name: all 6 cases pass``
    * ``✗ name: case 3 (random #1): expected shape (4, 5), got (5, 4)``
    * ``✗ name: case 1: max abs error 0.3 at index (1, 2) (expected 0.5, got 0.2)``
    * ``✗ name: case 2: raised ValueError: mask must be boolean``

    Args:
      student_fn: the function under test.
      reference_fn: the course's function, taken to be right.
      cases: fixed cases, or ``make_case``.
      make_case: a function ``rng -> case`` for random cases.
      n_random: how many random cases to draw (only with ``make_case``).
      seed: seed of the random cases.
      atol: absolute tolerance.
      rtol: relative tolerance.
      name: name in the verdict (default: the student function's ``__name__``).

    Returns:
      True if every case passes.
    """
    label = _name_of(student_fn, name)
    if callable(cases) and not isinstance(cases, Sequence):
        if make_case is not None:
            raise ValueError("cases: expected a list when make_case is also given, got a callable")
        cases, make_case = (), cases
    fixed = list(cases)
    rng = np.random.default_rng(seed)
    plan: list[tuple[str, Any]] = [(f"case {k + 1}", case) for k, case in enumerate(fixed)]
    if make_case is not None:
        for r in range(n_random):
            plan.append((f"case {len(fixed) + r + 1} (random #{r + 1})", make_case(rng)))
    if not plan:
        raise ValueError("cases: expected at least one case (or make_case), got none")

    with numerics():  # the same numerics for both, on every backend
        for where, case in plan:
            try:
                expected = _call(reference_fn, case)
            except Exception as reference_error:  # the case tests input validation
                try:
                    got = _call(student_fn, case)
                except type(reference_error):
                    continue
                except NotImplementedError:
                    return _verdict(False, f"{label}: not implemented yet")
                except Exception as error:  # noqa: BLE001
                    return _verdict(
                        False,
                        f"{label}: {where}: expected {type(reference_error).__name__}, "
                        f"raised {_describe_exception(error)}",
                    )
                return _verdict(
                    False,
                    f"{label}: {where}: expected {type(reference_error).__name__}, got no exception "
                    f"(returned {_short(got)})",
                )
            try:
                got = _call(student_fn, case)
            except NotImplementedError:
                return _verdict(False, f"{label}: not implemented yet")
            except Exception as error:  # noqa: BLE001 -- report, never crash the notebook
                return _verdict(False, f"{label}: {where}: raised {_describe_exception(error)}")
            problem = _compare(got, expected, atol, rtol)
            if problem:
                return _verdict(False, f"{label}: {where}: {problem}")
    count = len(plan)
    return _verdict(True, f"{label}: all {count} case{'s' if count != 1 else ''} pass")


def check_raises(
    fn: Callable,
    args: Any = (),
    exception: type[BaseException] | tuple[type[BaseException], ...] = ValueError,
    name: str | None = None,
    *,
    match: str | None = None,
) -> bool:
    """Check that ``fn(*args)`` (or ``fn(**args)`` for a dict) raises ``exception``.

    Args:
      fn: the function under test.
      args: a tuple of positional arguments, a dict of keyword arguments, or a single value.
      exception: the exception class (or tuple of classes) expected.
      name: name in the verdict (default: ``fn.__name__``).
      match: optional regular expression the exception message must contain (``re.search``),
        e.g. the name of the offending argument.

    Returns:
      True if it raised as expected.  Prints one verdict line.
    """
    label = _name_of(fn, name)
    wanted = (
        exception.__name__
        if isinstance(exception, type)
        else " or ".join(e.__name__ for e in exception)
    )
    try:
        result = _call(fn, args)
    except exception as error:
        if match is not None and not re.search(match, str(error)):
            return _verdict(
                False,
                f"{label}: raised {wanted} but the message {str(error)[:_MAX_MESSAGE]!r} "
                f"does not mention {match!r}",
            )
        return _verdict(True, f"{label}: raises {_describe_exception(error)}")
    except Exception as error:  # noqa: BLE001
        return _verdict(False, f"{label}: expected {wanted}, raised {_describe_exception(error)}")
    return _verdict(
        False, f"{label}: expected {wanted}, got no exception (returned {_short(result)})"
    )


def check_value(
    got: Any,
    expected: Any,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    name: str = "value",
) -> bool:
    """Compare one result with the expected one (same rules as :func:`check`).

    Use it when the exercise asks for a number or an array rather than a function, e.g.
    ``check_value(my_bleu, 27.3, atol=0.05, name="BLEU of the test set")``.

    Returns:
      True if they match.  Prints one verdict line.
    """
    problem = _compare(got, expected, atol, rtol)
    if problem:
        return _verdict(False, f"{name}: {problem}")
    return _verdict(True, f"{name}: matches")


def digest(value: Any) -> str:
    """A short fingerprint of an answer (a number or a string), so that a check can recognise
    the answer without showing it: integers, and floats with an integer value, by their digits;
    other floats to 6 significant digits; strings as they are.  ``digest(5) == digest(5.0)``."""
    if isinstance(value, (bool, np.bool_)):
        text = repr(bool(value))
    elif _is_number(value) and not isinstance(value, complex):
        number = float(value)
        text = str(int(number)) if number.is_integer() else f"{number:.6g}"
    else:
        text = str(value)
    return hashlib.sha256(f"attention-course:{text}".encode()).hexdigest()[:16]


def check_digest(got: Any, expected_digest: str, name: str = "answer") -> bool:
    """Compare an answer with the :func:`digest` of the expected one; print one verdict line
    that does not give the answer away: ``✓ name: matches`` or ``✗ name: not the expected
    answer``.  For questions whose answer is one number, where the expected value in plain
    view would be the solution."""
    if isinstance(got, BaseException) or got is None:
        return _verdict(False, f"{name}: not implemented yet")
    if digest(got) == expected_digest:
        return _verdict(True, f"{name}: matches")
    return _verdict(False, f"{name}: not the expected answer (got {_short(got)})")


def _verdict(ok: bool, text: str) -> bool:
    print(f"{PASS if ok else FAIL} {text}")
    return ok


# --------------------------------------------------------------------------------------------
# Student copies of notebooks
# --------------------------------------------------------------------------------------------

_BEGIN = re.compile(r"^(?P<indent>[ \t]*)#\s*BEGIN SOLUTION\s*$")
_END = re.compile(r"^[ \t]*#\s*END SOLUTION\s*$")
_PLACEHOLDER = 'raise NotImplementedError("your code here")'
# the opening line of a MyST {solution} directive, fenced by ``` (3 or more) or ::: (3 or more)
_SOLUTION_FENCE = re.compile(r"^[ \t]*(?P<fence>`{3,}|:{3,})[ \t]*\{solution\}")
# the opening line of a gated solution's {solution-start} or {solution-end} directive
_GATE_FENCE = re.compile(r"^[ \t]*(?P<fence>`{3,}|:{3,})[ \t]*\{solution-(?P<kind>start|end)\}")


def _strip(source: str) -> tuple[str, int]:
    """``source`` with solutions replaced, and how many regions were replaced."""
    lines = source.splitlines(keepends=True)
    out: list[str] = []
    begin_line: int | None = None
    regions = 0
    for number, line in enumerate(lines, start=1):
        text = line.rstrip("\r\n")
        begin = _BEGIN.match(text)
        if begin:
            if begin_line is not None:
                raise ValueError(
                    f"source: line {number}: '# BEGIN SOLUTION' inside the solution opened on "
                    f"line {begin_line} (nested markers are not allowed)"
                )
            begin_line = number
            newline = line[len(text) :]  # keep the line ending ("\n", "\r\n")
            out.append(f"{begin.group('indent')}{_PLACEHOLDER}{newline}")
            regions += 1
            continue
        if _END.match(text):
            if begin_line is None:
                raise ValueError(
                    f"source: line {number}: '# END SOLUTION' without a '# BEGIN SOLUTION'"
                )
            begin_line = None
            continue
        if begin_line is None:
            out.append(line)
    if begin_line is not None:
        raise ValueError(
            f"source: line {begin_line}: '# BEGIN SOLUTION' is never closed by '# END SOLUTION'"
        )
    result = "".join(out)
    if not source.endswith(("\n", "\r")):  # the END marker was the last line
        result = result.rstrip("\r\n")
    return result, regions


def strip_solutions(source: str) -> str:
    """Replace every ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` region of a code cell.

    The region, markers included, becomes one line ``raise NotImplementedError("your code
    here")`` at the indentation of the BEGIN marker; everything outside is kept as it is::

        def f(x):                       def f(x):
            # BEGIN SOLUTION      ->        raise NotImplementedError("your code here")
            return 2 * x
            # END SOLUTION

    Raises:
      ValueError: naming the line, for a BEGIN inside another region, an END without a BEGIN,
        or a BEGIN that is never closed.
    """
    return _strip(source)[0]


def _cell_source(cell: Mapping) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _set_source(cell: dict, text: str, as_list: bool) -> None:
    cell["source"] = text.splitlines(keepends=True) if as_list else text


def _remove_solution_directives(text: str) -> tuple[str, int]:
    """Markdown ``text`` without its ``{solution}`` directives, and how many were removed.

    A directive runs from its opening fence to the first line made only of the same fence
    character, at least as long (so a ```` ```python ```` block nested in a ```` ```` ````
    solution does not close it), or to the end of the cell.
    """
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    closing: str | None = None
    removed = 0
    for line in lines:
        if closing is None:
            opening = _SOLUTION_FENCE.match(line)
            if opening:
                fence = opening.group("fence")
                closing = fence
                removed += 1
                continue
            out.append(line)
        else:
            stripped = line.strip()
            if stripped and set(stripped) == {closing[0]} and len(stripped) >= len(closing):
                closing = None
    return "".join(out), removed


def _remove_gated_solutions(text: str, inside: bool) -> tuple[str, bool, int]:
    """Markdown ``text`` without gated-solution directives and the prose between them.

    A gated solution (sphinx-exercise) opens with a ``{solution-start}`` directive in one cell
    and closes with ``{solution-end}`` in the same or a later cell; the code cells between them
    are the student's workspace and stay (stripped), the prose between them is the solution and
    goes.  ``inside`` says whether a gate is open when the cell begins; returns the text left,
    whether a gate is still open at its end, and how many directives were removed.
    """
    out: list[str] = []
    closing: str | None = None
    removed = 0
    for line in text.splitlines(keepends=True):
        if closing is not None:  # the body of a start or end directive (its options)
            stripped = line.strip()
            if stripped and set(stripped) == {closing[0]} and len(stripped) >= len(closing):
                closing = None
            continue
        gate = _GATE_FENCE.match(line)
        if gate:
            closing = gate.group("fence")
            inside = gate.group("kind") == "start"
            removed += 1
            continue
        if not inside:
            out.append(line)
    return "".join(out), inside, removed


def _student_notebook(nb: Mapping) -> tuple[dict, dict[str, int]]:
    """The student copy of ``nb`` and what was taken out of it."""
    student = copy.deepcopy(dict(nb))
    stats = {"regions": 0, "cells_removed": 0, "directives": 0}
    cells = []
    gated = False  # inside a gated solution ({solution-start} ... {solution-end})
    for index, cell in enumerate(student.get("cells", [])):
        tags = cell.get("metadata", {}).get("tags", [])
        if "solution" in tags:
            stats["cells_removed"] += 1
            continue
        as_list = isinstance(cell.get("source", ""), list)
        if cell.get("cell_type") == "code":
            try:
                text, regions = _strip(_cell_source(cell))
            except ValueError as error:
                raise ValueError(f"cells[{index}]: {error}") from None
            _set_source(cell, text, as_list)
            stats["regions"] += regions
            cell["outputs"] = []
            cell["execution_count"] = None
        elif cell.get("cell_type") == "markdown":
            was_gated = gated
            text, gated, gates = _remove_gated_solutions(_cell_source(cell), gated)
            text, directives = _remove_solution_directives(text)
            directives += gates
            if was_gated and not gates:  # all of it prose of a gated solution
                stats["cells_removed"] += 1
                continue
            if directives:
                stats["directives"] += directives
                if not text.strip():
                    stats["cells_removed"] += 1
                    continue
                _set_source(cell, text, as_list)
        cells.append(cell)
    student["cells"] = cells
    return student, stats


def student_notebook(nb: Mapping, keep_going: bool = False) -> dict:
    """A student copy of a notebook (as a JSON dict, nbformat 4).  ``nb`` is not modified.

    * every code cell: solutions stripped (:func:`strip_solutions`), outputs and execution
      counts cleared;
    * cells tagged ``solution`` (in ``metadata.tags``) are removed;
    * ``{solution}`` directives (fenced with ```` ``` ```` or ``:::``) are removed from
      markdown cells, and a cell left empty by that is removed;
    * gated solutions (``{solution-start}`` ... ``{solution-end}``, which the book uses to put a
      code cell and its explanation in one "Solution" dropdown): the two directives and the
      markdown between them are removed, the code cells between them stay, stripped.

    With ``keep_going``, one cell after the chapter's import cell (its second code cell) calls
    :func:`keep_going`, so that Run All goes past every unfinished exercise to the end.

    Raises:
      ValueError: naming the cell index and line of a broken BEGIN/END pair.
    """
    student = _student_notebook(nb)[0]
    return _with_keep_going(nb, student) if keep_going else student


def _with_keep_going(nb: Mapping, student: dict) -> dict:
    from attention_course.coursework.notebook import solution_names

    def text(cell):
        source = cell.get("source", "")
        return "".join(source) if isinstance(source, list) else source

    names = sorted({n for cell in nb["cells"] if cell["cell_type"] == "code"
                    for n in solution_names(text(cell))})
    code = [c for c in student["cells"] if c["cell_type"] == "code"]
    if not _imports_grading(student):
        raise ValueError("nb: keep_going needs an import cell (the second code cell) that "
                         "imports attention_course.grading")
    cell = {
        "cell_type": "code",
        "execution_count": None,
        "id": "keep-going",
        "metadata": {},
        "outputs": [],
        "source": (
            "# An exercise you have not done yet says \"not implemented yet\" and does not\n"
            "# stop Run All. Keep all of an exercise's code in its cell (the one that said\n"
            "# \"your code here\"): a grader runs only those cells.\n"
            f"grading.keep_going({names!r});"
        ),
    }
    student["cells"].insert(student["cells"].index(code[1]) + 1, cell)
    return student


def keep_going(names: Iterable[str] = ()) -> None:
    """In a student copy: an unfinished exercise does not stop Run All.

    After this call, a cell that raises ``NotImplementedError`` (the placeholder the student
    copy puts where a solution was), or a ``NameError`` for one of ``names`` (what an unfinished
    top-level solution would have defined), prints one line saying the exercise is not
    implemented yet and counts as run, so Jupyter and Colab go on to the next cell.  Any other
    error still stops Run All.  Outside IPython it does nothing.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return
    shell = get_ipython()
    if shell is None:
        return
    watched = set(names)

    def unfinished(error: BaseException | None) -> bool:
        return isinstance(error, NotImplementedError) or (
            isinstance(error, NameError) and getattr(error, "name", None) in watched
        )

    def handler(self, etype, value, tb, tb_offset=None):
        if unfinished(value):
            what = f" ({value.name} is not defined)" if isinstance(value, NameError) else ""
            print(f"{FAIL} not implemented yet{what}: the rest of the notebook still runs")
            return []
        return self.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset)

    def after(result) -> None:
        if unfinished(getattr(result, "error_in_exec", None)):
            result.error_in_exec = None

    shell.set_custom_exc((NotImplementedError, NameError), handler)
    for callback in list(shell.events.callbacks["post_run_cell"]):
        if getattr(callback, "__name__", "") == "_keep_going_after":
            shell.events.unregister("post_run_cell", callback)
    after.__name__ = "_keep_going_after"
    shell.events.register("post_run_cell", after)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _imports_grading(student: dict) -> bool:
    code = [c for c in student["cells"] if c["cell_type"] == "code"]
    source = code[1].get("source", "") if len(code) > 1 else ""
    return "grading" in ("".join(source) if isinstance(source, list) else source)


def _strip_directory(source_dir: Path, out_dir: Path) -> int:
    if not source_dir.is_dir():
        print(f"error: {source_dir} is not a directory", file=sys.stderr)
        return 2
    if out_dir.resolve() == source_dir.resolve():
        print(
            "error: OUT_DIR must differ from SRC_DIR (it would overwrite the solutions)",
            file=sys.stderr,
        )
        return 2
    notebooks = sorted(source_dir.glob("*.ipynb"))
    if not notebooks:
        print(f"no notebooks in {source_dir}")
        return 0
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in notebooks:
        with path.open(encoding="utf-8") as file:
            nb = json.load(file)
        try:
            student, stats = _student_notebook(nb)
            if _imports_grading(student):  # a chapter: Run All goes to the end
                student = _with_keep_going(nb, student)
        except ValueError as error:
            print(f"error: {path}: {error}", file=sys.stderr)
            return 1
        target = out_dir / path.name
        with target.open("w", encoding="utf-8") as file:
            json.dump(student, file, indent=1, ensure_ascii=False)
            file.write("\n")
        print(
            f"wrote {target} ({stats['regions']} solution regions stripped, "
            f"{stats['cells_removed']} cells removed, "
            f"{stats['directives']} solution directives removed)"
        )
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m attention_course.grading strip SRC_DIR OUT_DIR``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m attention_course.grading", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    strip = commands.add_parser("strip", help="write student copies of every SRC_DIR/*.ipynb")
    strip.add_argument("src_dir", metavar="SRC_DIR", type=Path)
    strip.add_argument("out_dir", metavar="OUT_DIR", type=Path)
    args = parser.parse_args(None if argv is None else list(argv))
    if args.command == "strip":
        return _strip_directory(args.src_dir, args.out_dir)
    return 2  # pragma: no cover -- argparse rejects unknown commands


if __name__ == "__main__":
    raise SystemExit(main())
