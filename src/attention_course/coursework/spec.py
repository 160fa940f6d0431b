"""What a chapter file says about its exercises, and what is derived from the notebook.

A chapter file (``chNN_slug.py`` beside this one) holds one :class:`Chapter`: the points of each
exercise, which exercises (or which parts of one) are graded by hand, and only what the notebook
cannot say.  Everything else comes from the notebook's own check cell,
``grading.check(my_fn, reference, cases=..., make_case=..., atol=...)``: the graded name
(``my_fn``), the reference, the tolerances, and the hidden cases (``make_case`` drawn with the
hidden seed).  :func:`derive` runs the chapter's import cell, each solution cell and its check
cell up to the check, with ``grading.check`` recording instead of checking.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from attention_course.coursework import notebook as nbtools

HIDDEN_SEED = 20_141_001  # the hidden cases' seed (not the notebooks' seed 0)
MIN_HIDDEN = 5  # hidden cases drawn from a check's make_case, at least


@dataclasses.dataclass(frozen=True)
class Part:
    """One graded name of an exercise, when the notebook's check cannot say it.

    ``kind="function"``: ``env[name]`` is called on every case from ``cases(rng)``;
    ``kind="value"``: ``env[name]`` is compared with one expected value.  ``reference(*case)``
    gives the expected output; it runs when the assignment is made, never in a student's kernel.
    """

    name: str
    kind: str
    cases: Callable[[np.random.Generator], list]
    reference: Callable[..., Any]
    atol: float = 1e-5
    rtol: float = 1e-5


@dataclasses.dataclass(frozen=True)
class Exercise:
    """An auto-graded exercise.  With ``parts=()`` its parts are the notebook's check calls."""

    label: str  # the sphinx-exercise label; otter's question name
    points: int
    parts: tuple[Part, ...] = ()
    off: tuple[str, ...] = ()  # more course functions switched off, beyond the check's reference
    hidden: Callable[[np.random.Generator], list] | None = None  # for a check with fixed cases only


@dataclasses.dataclass(frozen=True)
class Chapter:
    number: str
    slug: str
    exercises: tuple[Exercise, ...]
    manual: dict[str, str]  # label -> what is graded by hand (the whole exercise or its prose)
    imports_without: tuple[str, ...] = ()  # statements of the import cell grading leaves out

    @property
    def name(self) -> str:
        return f"{self.number}_{self.slug}"

    @property
    def notebook(self) -> Path:
        """The chapter notebook: in ./notebooks when run from a checkout, else next to the package."""
        here = Path.cwd() / "notebooks" / f"{self.name}.ipynb"
        return here if here.exists() else nbtools.ROOT / "notebooks" / f"{self.name}.ipynb"

    def exercise(self, label: str) -> Exercise:
        (found,) = [ex for ex in self.exercises if ex.label == label]
        return found


# helpers for chapter files ------------------------------------------------------------------


def jnp():
    import jax.numpy

    return jax.numpy


def seeded(n: int, make: Callable[[np.random.Generator], tuple]) -> Callable:
    """``n`` cases from ``make(rng)``."""

    def cases(rng: np.random.Generator) -> list[tuple]:
        return [make(rng) for _ in range(n)]

    return cases


def one(*case: Any) -> Callable:
    return lambda rng: [case]


def ref(path: str) -> Callable:
    """The course function at ``module.attr`` (imported when called)."""

    def call(*args, **kwargs):
        module, _, attr = path.rpartition(".")
        return getattr(importlib.import_module(f"attention_course.{module}"), attr)(*args, **kwargs)

    call.__name__ = path
    return call


# what the notebook says ---------------------------------------------------------------------


@dataclasses.dataclass
class Recorded:
    """One ``grading.check(...)`` call of a check cell, as the notebook makes it."""

    name: str  # the student's function, as the call names it
    student: Callable
    reference: Callable
    cases: list
    make_case: Callable | None
    n_random: int
    seed: int
    atol: float
    rtol: float
    course: tuple[str, ...]  # course functions the reference is or calls: switched off


@dataclasses.dataclass
class Resolved:
    """A graded name, ready for the assignment: cases and the course functions switched off."""

    name: str
    kind: str
    cases: list
    reference: Callable
    atol: float
    rtol: float


def imports_source(ch: Chapter, nb: dict) -> str:
    """The chapter's import cell, less the top-level statements that use ``imports_without``
    (e.g. chapter 07's eight-device subprocess, which no exercise needs)."""
    source = nbtools.source(nbtools.imports_cell(nb))
    if not ch.imports_without:
        return source
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    drop = set()
    for node in tree.body:
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        if names & set(ch.imports_without):
            drop.update(range(node.lineno - 1, node.end_lineno))
    return "".join(line for k, line in enumerate(lines) if k not in drop)


def _check_calls(tree: ast.Module) -> tuple[int, list[ast.Call]]:
    """The ``grading.check`` calls of a cell, and the index of the last top-level statement
    that holds one."""
    calls, last = [], -1
    for k, node in enumerate(tree.body):
        found = [
            sub for sub in ast.walk(node)
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute)
            and sub.func.attr == "check" and isinstance(sub.func.value, ast.Name)
            and sub.func.value.id == "grading"
        ]
        if found:
            calls += found
            last = k
    return last, calls


def _course_functions(obj: Any, namespace: dict, depth: int = 0) -> set[str]:
    """``module.attr`` of the course functions ``obj`` is, or calls by ``module.attr`` in its
    code (a lambda or a function of the check cell); never those of the student's names."""
    from attention_course.coursework.kernel import python_function

    fn = python_function(obj)
    if fn is None or depth > 3:
        return set()
    module = getattr(fn, "__module__", "") or ""
    if module.startswith("attention_course.") and not module.startswith("attention_course.coursework"):
        return {f"{module[len('attention_course.'):]}.{fn.__name__}"}
    found: set[str] = set()
    codes = [fn.__code__]
    while codes:
        code = codes.pop()
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
        names = code.co_names
        for k, name in enumerate(names):
            value = namespace.get(name)
            if isinstance(value, types.ModuleType) and value.__name__.startswith("attention_course."):
                for attr in names[k + 1:]:
                    target = getattr(value, attr, None)
                    if callable(target) and getattr(target, "__module__", None) == value.__name__:
                        found.add(f"{value.__name__[len('attention_course.'):]}.{attr}")
            elif isinstance(value, types.FunctionType) and value is not obj:
                found |= _course_functions(value, namespace, depth + 1)
    return found


class _Recorder(types.SimpleNamespace):
    pass


def record(ch: Chapter, nb: dict) -> tuple[dict[str, list[Recorded]], dict]:
    """``label -> the check calls of its check cell``, by running the import cell, each solution
    cell and its check cell up to the last check (with ``grading.check`` recording); and the
    namespace they ran in."""
    import os

    from attention_course import grading
    from attention_course.runtime import FAST_ENV

    namespace: dict[str, Any] = {"__name__": "__coursework__"}
    before = os.environ.get(FAST_ENV)
    os.environ[FAST_ENV] = "1"  # the import cell's CONFIG as the grading kernel sees it
    try:
        exec(compile(imports_source(ch, nb), f"{ch.name}: import cell", "exec"), namespace)
    finally:
        if before is None:
            os.environ.pop(FAST_ENV)
        else:
            os.environ[FAST_ENV] = before
    found: dict[str, list[Recorded]] = {}
    solutions = nbtools.exercise_cells(nb)
    for label in [ex.label for ex in ch.exercises]:  # what is graded by hand may need more
        cell = solutions[label]
        exec(compile(nbtools.python(nbtools.source(cell)), f"{label}: solution", "exec"), namespace)
        check_cell = nbtools.check_cell(nb, cell)
        if check_cell is None:
            found[label] = []
            continue
        tree = ast.parse(nbtools.python(nbtools.source(check_cell)))
        last, calls = _check_calls(tree)
        prefix = ast.Module(body=tree.body[: last + 1], type_ignores=[])
        calls_made: list[tuple[tuple, dict]] = []

        def recording(*args, **kwargs):
            calls_made.append((args, kwargs))
            return True

        recorder = _Recorder(**{k: getattr(grading, k) for k in grading.__all__})
        recorder.check = recording
        real = namespace.get("grading")
        namespace["grading"] = recorder
        try:
            exec(compile(prefix, f"{label}: check cell", "exec"), namespace)
        except NameError as error:  # the check needs the chapter's experiments
            if not ch.exercise(label).parts:
                raise ValueError(
                    f"{label}: its check cell needs {error.name!r} from earlier in the chapter: "
                    "give the exercise its parts in its chapter file"
                ) from None
            found[label] = []  # the chapter file's parts say it all
            continue
        finally:
            namespace["grading"] = real
        found[label] = []
        for call, (args, kwargs) in zip(calls, calls_made, strict=True):
            if not (call.args and isinstance(call.args[0], ast.Name)):
                raise ValueError(f"{label}: grading.check's first argument must be a name")
            bound = _bind(grading.check, args, kwargs)
            cases, make_case = bound["cases"], bound["make_case"]
            if callable(cases) and not isinstance(cases, (list, tuple)):
                cases, make_case = [], cases
            reference = bound["reference_fn"]
            found[label].append(
                Recorded(
                    name=call.args[0].id,
                    student=bound["student_fn"],
                    reference=reference,
                    cases=list(cases),
                    make_case=make_case,
                    n_random=bound["n_random"],
                    seed=bound["seed"],
                    atol=bound["atol"],
                    rtol=bound["rtol"],
                    course=tuple(sorted(_course_functions(reference, namespace))),
                )
            )
    return found, namespace


def _bind(fn: Callable, args: tuple, kwargs: dict) -> dict:
    import inspect

    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def resolve(ex: Exercise, recorded: list[Recorded]) -> tuple[list[Resolved], tuple[str, ...]]:
    """The exercise's graded names with their hidden cases, and the course functions switched
    off while the student's code runs."""
    off = set(ex.off)
    out: list[Resolved] = []
    if ex.parts:
        for k, part in enumerate(ex.parts):
            cases = part.cases(np.random.default_rng([HIDDEN_SEED, k]))
            out.append(Resolved(part.name, part.kind, list(cases), part.reference, part.atol, part.rtol))
        for r in recorded:
            off |= set(r.course)
        return out, tuple(sorted(off))
    if not recorded:
        raise ValueError(f"{ex.label}: its check cell has no grading.check call; give its parts")
    for k, r in enumerate(recorded):
        rng = np.random.default_rng([HIDDEN_SEED, k])
        if ex.hidden is not None and len(recorded) == 1:
            cases = list(ex.hidden(rng))
        elif r.make_case is not None:
            cases = [r.make_case(rng) for _ in range(max(r.n_random, MIN_HIDDEN))]
        else:
            raise ValueError(
                f"{ex.label}: the check of {r.name} has fixed cases only: give the exercise "
                "hidden cases (Exercise(..., hidden=lambda rng: [...])) in its chapter file"
            )
        out.append(Resolved(r.name, "function", cases, r.reference, r.atol, r.rtol))
        off |= set(r.course)
    return out, tuple(sorted(off))
