"""Coursework: a chapter as an otter-grader assignment, and a folder of submissions graded.

The chapter notebook stays the single source.  ``make assignment CHAPTER=NN`` turns it into::

    _build/assignments/NN_slug/
      student/NN_slug.ipynb      the notebook to hand out (Colab link or file): solutions stripped,
                                 the book's visible checks kept; an unfinished exercise says "not
                                 implemented yet" and does not stop Run All
      autograder/autograder.zip  otter-grader's autograder (``otter generate``): hidden tests with
                                 points, otter_config.json, setup.sh/requirements for Gradescope
      autograder/tests/          the same hidden tests, unzipped, to read
      EXERCISES.md               what is graded, the points, what is not graded and why

``make grade CHAPTER=NN SUBMISSIONS=DIR`` grades every ``DIR/*.ipynb`` with ``otter run`` (otter's
non-containerised grader) and writes ``DIR/grades.csv`` and ``DIR/feedback/<name>.md``.

How grading stays honest and safe (see :func:`grade` for the details):

* only what the exercises need runs: the chapter's import cell (the instructor's copy) and the
  student's exercise cells, never the experiments (plus ``ATTENTION_COURSE_FAST=1``);
* the expected values of the hidden cases were computed with the course's references when the
  assignment was made, outside any student's kernel; while the student's code runs on a hidden
  case, those references (and their close relatives) are switched off, so a solution that only
  calls them gets no points;
* each submission runs in its own process, in a scratch copy, with a time limit; as root its kernel
  runs as ``nobody``; a guard in the kernel caps output, limits each cell and case in time, and an
  audit hook refuses writes and deletes outside the scratch folder, subprocesses and ctypes.

Kernel-side pieces (:func:`run_hidden_cases`, :data:`GUARD_SOURCE`) import nothing from otter, so
this module imports on Colab without it.
"""

from __future__ import annotations

import argparse
import ast
import base64
import contextlib
import copy
import csv
import dataclasses
import importlib
import io
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CHAPTERS",
    "build_assignment",
    "grade",
    "grading_notebook",
    "main",
    "run_hidden_cases",
    "student_copy",
]

ROOT = Path(__file__).resolve().parents[2]  # the checkout (src layout)
OTTER_VERSION = "7.0.0"
MARKER = "# exercise: "  # first line of each exercise cell in the grading notebook
TESTS_MARKER = "from otter.execute import Checker"  # otter's final cell, which runs the tests
CELL_LIMIT_S = 10  # each exercise cell, in the student's kernel
CASE_LIMIT_S = 10  # each hidden case
SUBMISSION_LIMIT_S = 60  # one submission, every attempt together
OUTPUT_CAP = 1_000_000  # characters of output a submission may print


# --------------------------------------------------------------------------------------------
# The exercises: what is graded, how many points, the hidden cases, what is switched off
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Part:
    """One graded name of an exercise.

    ``kind="function"``: ``env[name]`` is called on every case from ``cases(rng)``;
    ``kind="value"``: ``env[name]`` is compared with one expected value.  ``reference(*case)``
    gives the expected output; it runs when the assignment is made, never in a student's kernel.
    """

    name: str
    kind: str
    cases: Callable[[np.random.Generator], list[tuple]]
    reference: Callable[..., Any]
    atol: float = 1e-5
    rtol: float = 1e-5


@dataclasses.dataclass(frozen=True)
class Exercise:
    label: str  # the sphinx-exercise label; otter's question name
    points: int
    parts: tuple[Part, ...]
    off: tuple[str, ...] = ()  # course functions switched off while the student's code runs


@dataclasses.dataclass(frozen=True)
class Chapter:
    number: str
    slug: str
    exercises: tuple[Exercise, ...]
    ungraded: dict[str, str]  # label -> why it is not graded

    @property
    def name(self) -> str:
        return f"{self.number}_{self.slug}"

    @property
    def notebook(self) -> Path:
        """The chapter notebook: in ./notebooks when run from a checkout, else next to the package."""
        here = Path.cwd() / "notebooks" / f"{self.name}.ipynb"
        return here if here.exists() else ROOT / "notebooks" / f"{self.name}.ipynb"


def _jnp():
    import jax.numpy as jnp

    return jnp


def _seeded(n: int, make: Callable[[np.random.Generator], tuple]) -> Callable:
    def cases(rng: np.random.Generator) -> list[tuple]:
        return [make(rng) for _ in range(n)]

    return cases


def _one(*case: Any) -> Callable:
    return lambda rng: [case]


def _ref(path: str) -> Callable:
    """The course function at ``module.attr`` (imported when called)."""

    def call(*args, **kwargs):
        module, _, attr = path.rpartition(".")
        return getattr(importlib.import_module(f"attention_course.{module}"), attr)(*args, **kwargs)

    call.__name__ = path
    return call


# chapter 01 ---------------------------------------------------------------------------------


def _states_case(rng):
    jnp = _jnp()
    B, T, H = 5, 9, 4
    return jnp.asarray(rng.normal(size=(B, T, H)), jnp.float32), jnp.asarray(
        rng.integers(1, T + 1, size=B)
    )


def _logits_case(rng):
    jnp = _jnp()
    B, T, V = 2, 7, 11
    mask = rng.random((B, T)) < 0.6
    mask[1, 0] = True
    return (
        jnp.asarray(10 * rng.normal(size=(B, T, V)), jnp.float32),
        jnp.asarray(rng.integers(0, V, size=(B, T))),
        jnp.asarray(mask),
    )


def _source_case(rng):
    from attention_course import tasks

    jnp = _jnp()
    B, T = 5, 11
    lengths = rng.integers(1, T + 1, size=B)
    source = rng.integers(3, 30, size=(B, T))
    source = np.where(np.arange(T)[None] < lengths[:, None] - 1, source, 0)
    source[np.arange(B), lengths - 1] = tasks.EOS_ID
    return jnp.asarray(source), jnp.asarray(lengths)


# chapter 02 ---------------------------------------------------------------------------------


def _lattice_case(rng):
    from attention_course import transducer

    jnp = _jnp()
    T, U = 6, 4
    logits = jnp.asarray(2 * rng.normal(size=(1, T, U + 1, 7)), jnp.float32)
    labels = jnp.asarray(rng.integers(1, 7, size=(1, U)))
    return tuple(
        np.asarray(a[0], np.float64) for a in transducer.lattice(logits, labels, jnp.array([U]))
    )


def _forward_table_reference(log_blank, log_y):
    """The notebook's reference: the package's sweep on one full lattice."""
    from attention_course import transducer

    jnp = _jnp()
    T, U1 = log_blank.shape
    lattice = [transducer.diagonals(jnp.asarray(x, jnp.float32)[None]) for x in (log_blank, log_y)]
    valid = transducer.diagonals(jnp.ones((1, T, U1)), fill=0.0) > 0
    alpha = transducer.forward_sweep(*lattice, valid)
    return np.asarray(transducer.unskew(jnp.swapaxes(alpha, 0, 1), T)[0])


def _count_cases(rng):
    return [(T, U) for T in (1, 2, 5, 8) for U in (0, 1, 4, 7)] + [(20, 9), (60, 30)]


def _one_frame_case(rng):
    U, V = 5, 9
    return 2 * rng.normal(size=(U + 1, V)).astype(np.float32), rng.integers(1, V, size=U)


def _one_frame_reference(logits, labels):
    from attention_course import transducer

    jnp = _jnp()
    return float(
        transducer.rnnt_loss(
            jnp.asarray(logits)[None, None],
            jnp.asarray(labels)[None],
            jnp.array([1]),
            jnp.array([len(labels)]),
        )[0]
    )


# chapter 03 ---------------------------------------------------------------------------------


def _pairs(task: str, n: int, seed: int, max_length: int = 14):
    from attention_course import tasks

    return tasks.generate(task, n, seed=seed, min_length=1, max_length=max_length)


def _rms_cases(rng):
    return [(_pairs("translate", 120, 1501),), (_pairs("reverse", 80, 1502),)]


def _rms_reference(pairs):
    from attention_course import diagonal

    return float(np.sqrt(np.mean(diagonal.gold_offsets(pairs) ** 2)))


def _near_cases(rng):
    return [
        (_pairs("copy", 100, 1503), 0.5),
        (_pairs("reverse", 100, 1504), 2.0),
        (_pairs("translate", 100, 1505), 1.0),
        (_pairs("translate", 60, 1506), 0.0),
    ]


# chapter 04 ---------------------------------------------------------------------------------


def _score_case(rng):
    jnp = _jnp()
    B, T, n, m, k = 3, 6, 4, 5, 7
    shapes = [(B, n), (B, T, m), (n, k), (m, k), (k,)]
    return tuple(jnp.asarray(rng.normal(size=shape), jnp.float32) for shape in shapes)


def _projected_case(rng):
    s, h, W_a, U_a, v_a = _score_case(rng)
    return s, h @ U_a, W_a, v_a


def _mask_case(rng):
    jnp = _jnp()
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


CHAPTERS: dict[str, Chapter] = {
    "01": Chapter(
        "01",
        "bottleneck",
        (
            Exercise(
                "ex-bottleneck-final-state",
                2,
                (Part("last_states", "function", _seeded(6, _states_case), _ref("rnn.state_at_length")),),
                off=("rnn.state_at_length",),
            ),
            Exercise(
                "ex-bottleneck-objective",
                2,
                (
                    Part(
                        "masked_nll",
                        "function",
                        _seeded(5, _logits_case),
                        _ref("train.sequence_cross_entropy"),
                        atol=1e-4,
                    ),
                ),
                off=("train.sequence_cross_entropy",),
            ),
            Exercise(
                "ex-bottleneck-reverse",
                2,
                (
                    Part(
                        "reverse_words",
                        "function",
                        _seeded(6, _source_case),
                        _ref("bottleneck.reverse_source_words"),
                    ),
                ),
                off=("bottleneck.reverse_source_words", "rnn.reverse_padded"),
            ),
        ),
        {
            "ex-bottleneck-halve": "predict, then measure on the trained sweep: its answer is a "
            "prediction in prose and a measurement of models that only full mode trains",
        },
    ),
    "02": Chapter(
        "02",
        "cursors",
        (
            Exercise(
                "ex-cursors-forward",
                2,
                (
                    Part(
                        "forward_table",
                        "function",
                        _seeded(4, _lattice_case),
                        _forward_table_reference,
                        atol=1e-4,
                    ),
                ),
                off=("transducer.forward_sweep", "transducer.rnnt_loss", "transducer.unskew"),
            ),
            Exercise(
                "ex-cursors-count",
                2,
                (Part("count_paths", "function", _count_cases, _ref("transducer.count_alignments")),),
                off=("transducer.count_alignments", "transducer.alignments"),
            ),
            Exercise(
                "ex-cursors-short",
                2,
                (
                    Part(
                        "one_frame_nll",
                        "function",
                        _seeded(5, _one_frame_case),
                        _one_frame_reference,
                        atol=1e-4,
                    ),
                ),
                off=(
                    "transducer.rnnt_loss",
                    "transducer.rnnt_loss_brute_force",
                    "transducer.rnnt_loss_nested_scan",
                    "transducer.forward_sweep",
                ),
            ),
        ),
        {
            "ex-cursors-frames": "predict, then measure on the trained transducers: the share "
            "depends on models that only full mode trains",
        },
    ),
    "03": Chapter(
        "03",
        "diagonal",
        (
            Exercise(
                "ex-diagonal-synchronous",
                2,
                (
                    Part(
                        "synchronous_weights",
                        "function",
                        lambda rng: [(4, 7), (7, 4), (1, 3), (6, 6), (10, 3)],
                        lambda T_y, T_x: _ref("diagonal.diagonal_weights")(T_y, T_x, scaled=False),
                    ),
                ),
                off=("diagonal.diagonal_weights", "diagonal.batched_diagonal_weights"),
            ),
            Exercise(
                "ex-diagonal-width",
                2,
                (Part("rms_offset", "function", _rms_cases, _rms_reference, atol=1e-4),),
                off=("diagonal.gold_offsets", "diagonal.coverage"),
            ),
            Exercise(
                "ex-diagonal-reverse",
                2,
                (
                    Part(
                        "near_cursor",
                        "function",
                        _near_cases,
                        lambda pairs, radius: _ref("diagonal.coverage")(pairs, radius=radius),
                    ),
                ),
                off=("diagonal.coverage",),
            ),
        ),
        {},
    ),
    "04": Chapter(
        "04",
        "soft_search",
        (
            Exercise(
                "ex-search-score",
                2,
                (
                    Part(
                        "my_additive_score",
                        "function",
                        _seeded(5, _score_case),
                        _ref("soft_search.additive_score"),
                        atol=1e-5,
                    ),
                ),
                off=("soft_search.additive_score", "soft_search.additive_score_projected"),
            ),
            Exercise(
                "ex-search-precompute",
                2,
                (
                    Part(
                        "scores_with_precomputed",
                        "function",
                        _seeded(4, _projected_case),
                        _ref("soft_search.additive_score_projected"),
                    ),
                    Part("saved", "value", _one(), lambda: (50 - 1) * 50 * 64 * 32),
                ),
                off=("soft_search.additive_score", "soft_search.additive_score_projected"),
            ),
            Exercise(
                "ex-search-mask",
                2,
                (
                    Part(
                        "my_masked_softmax",
                        "function",
                        _seeded(5, _mask_case),
                        _ref("pooling.masked_softmax"),
                    ),
                ),
                off=("pooling.masked_softmax",),
            ),
            Exercise(
                "ex-search-predict",
                1,
                (
                    Part("my_pendant", "value", _one(), lambda: _gold_position("pendant")),
                    Part("my_verte", "value", _one(), lambda: _gold_position("verte")),
                ),
            ),
        ),
        {
            "ex-search-capacity": "an open experiment (train again, compare seeds); its answer "
            "is prose",
        },
    ),
}

HIDDEN_SEED = 20_141_001  # the hidden cases' seed (not the notebooks' seed 0)


def chapter(number: str) -> Chapter:
    key = str(number).zfill(2)
    if key not in CHAPTERS:
        raise ValueError(f"CHAPTER: expected one of {sorted(CHAPTERS)}, got {number!r}")
    return CHAPTERS[key]


# --------------------------------------------------------------------------------------------
# Reading the chapter notebook
# --------------------------------------------------------------------------------------------

_GATE = re.compile(r"^\s*(`{3,}|:{3,})\{solution-(start|end)\}\s*(\S*)", re.MULTILINE)


def _source(cell) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def exercise_cells(nb: dict) -> dict[str, dict]:
    """``label -> the code cell of its gated solution`` (the one with ``# BEGIN SOLUTION``)."""
    found: dict[str, dict] = {}
    label = None
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            for fence, kind, name in _GATE.findall(_source(cell)):
                label = name if kind == "start" else None
        elif label and "# BEGIN SOLUTION" in _source(cell) and label not in found:
            found[label] = cell
    return found


def imports_cell(nb: dict) -> dict:
    """The chapter's import cell: its second code cell (the first is the setup cell)."""
    return [cell for cell in nb["cells"] if cell["cell_type"] == "code"][1]


def _defined_names(source: str) -> list[str]:
    """Top-level names a cell defines (def, class, assignment), in order."""
    try:
        tree = ast.parse(_python(source))
    except SyntaxError:
        return []
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name):
                        names.append(sub.id)
    return names


def _python(source: str) -> str:
    """Cell source as Python (IPython magics and shell escapes transformed away)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001
        return source


def _solution_names(source: str) -> list[str]:
    """Names assigned at the top level inside a cell's solution regions (``saved = ...``)."""
    names: list[str] = []
    inside, region = False, []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped == "# BEGIN SOLUTION":
            inside, region = not line[: len(line) - len(line.lstrip())], []
            continue
        if stripped == "# END SOLUTION":
            if inside:
                names += _defined_names("\n".join(region))
            inside = False
            continue
        if inside:
            region.append(line)
    return names


# --------------------------------------------------------------------------------------------
# The student copy and the autograder
# --------------------------------------------------------------------------------------------


def student_copy(nb: dict, ch: Chapter) -> dict:
    """The notebook to hand out: :func:`grading.student_notebook`, plus one cell after the import
    cell that lets Run All go on past an unfinished exercise (its check says "not implemented
    yet")."""
    from attention_course import grading

    student = grading.student_notebook(nb)
    names = sorted({n for cell in nb["cells"] if cell["cell_type"] == "code"
                    for n in _solution_names(_source(cell))})
    position = student["cells"].index(
        [c for c in student["cells"] if c["cell_type"] == "code"][1]
    ) + 1
    cell = {
        "cell_type": "code",
        "execution_count": None,
        "id": f"coursework-{ch.number}",
        "metadata": {},
        "outputs": [],
        "source": (
            "# Coursework: an exercise you have not done yet says \"not implemented yet\"\n"
            "# and does not stop Run All. Grading runs only the exercise cells (the ones\n"
            "# that said \"your code here\"): keep all of an exercise's code in its cell.\n"
            f"grading.keep_going({names!r});"
        ),
    }
    student["cells"].insert(position, cell)
    student["metadata"]["attention_course"] = {"assignment": ch.name}
    return student


def _encode(value: Any) -> str:
    return base64.b64encode(pickle.dumps(value, protocol=4)).decode("ascii")


def _numpy_tree(value: Any) -> Any:
    if hasattr(value, "__array__") and hasattr(value, "shape") and not isinstance(value, np.ndarray):
        return np.asarray(value)
    if isinstance(value, tuple):
        return tuple(_numpy_tree(v) for v in value)
    if isinstance(value, list):
        return [_numpy_tree(v) for v in value]
    if isinstance(value, dict):
        return {k: _numpy_tree(v) for k, v in value.items()}
    return value


def expected_values(ex: Exercise) -> dict[str, list]:
    """``part name -> expected outputs`` of the hidden cases, from the course's references."""
    out = {}
    for k, part in enumerate(ex.parts):
        cases = part.cases(np.random.default_rng([HIDDEN_SEED, k]))
        out[part.name] = [_numpy_tree(part.reference(*case)) for case in cases]
    return out


TEST_TEMPLATE = '''\
"""Hidden cases of {label} ({points} points), made by `make assignment` from the chapter notebook.

The expected values were computed with the course's reference when the assignment was made; the
cases themselves come from attention_course.coursework.CHAPTERS["{number}"].
"""

from otter.test_files import test_case

OK_FORMAT = False

name = "{label}"
points = {points}

EXPECTED = (
{expected}
)


@test_case(points={points}, hidden=True)
def hidden_cases(env):
    from attention_course.coursework import run_hidden_cases

    run_hidden_cases(env, "{number}", name, EXPECTED)
'''


def _wrap(text: str, width: int = 92) -> str:
    return "\n".join(f'    "{text[i:i + width]}"' for i in range(0, len(text), width)) or '    ""'


def build_assignment(number: str, out_root: Path | None = None) -> Path:
    """Write ``_build/assignments/NN_slug/`` (see the module docstring); returns its path."""
    ch = chapter(number)
    out_root = Path(out_root) if out_root else ROOT / "_build" / "assignments"
    target = out_root / ch.name
    nb = json.loads(ch.notebook.read_text(encoding="utf-8"))
    cells = exercise_cells(nb)
    missing = [ex.label for ex in ch.exercises if ex.label not in cells]
    if missing:
        raise ValueError(f"{ch.notebook.name}: no solution cell for {missing}")
    if target.exists():
        shutil.rmtree(target)
    (target / "student").mkdir(parents=True)
    tests = target / "autograder" / "tests"
    tests.mkdir(parents=True)

    student = student_copy(nb, ch)
    (target / "student" / f"{ch.name}.ipynb").write_text(
        json.dumps(student, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    for k, ex in enumerate(ch.exercises, start=1):
        blob = _encode(expected_values(ex))
        (tests / f"q{k:02d}_{ex.label}.py").write_text(
            TEST_TEMPLATE.format(label=ex.label, points=ex.points, number=ch.number, expected=_wrap(blob)),
            encoding="utf-8",
        )
    plugin = {
        "chapter": ch.number,
        "imports": _source(imports_cell(nb)),
        "cells": {
            ex.label: {
                "id": cells[ex.label].get("id"),
                "defines": [p.name for p in ex.parts],
            }
            for ex in ch.exercises
        },
    }
    config = {
        "lang": "python",
        "plugins": [{"attention_course.coursework_plugin.CourseworkPlugin": plugin}],
        "show_hidden": True,
        "logo": False,
        "print_summary": False,
        "print_score": False,
    }
    ag = target / "autograder"
    (ag / "otter_config.json").write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    (ag / "requirements.txt").write_text(
        "# Gradescope: the course (its package holds the grading plugin) and otter-grader\n"
        f"attention-course @ git+{_repository_url()}\n"
        f"otter-grader=={OTTER_VERSION}\n",
        encoding="utf-8",
    )
    _otter_generate(ag)
    _write_exercises_md(target, ch, cells)
    return target


def _repository_url() -> str:
    try:
        from attention_course.runtime import REPOSITORY_URL

        return REPOSITORY_URL
    except Exception:  # noqa: BLE001
        return "https://github.com/attention-course/attention-course"


def _otter_generate(ag: Path) -> None:
    """``otter generate`` in ``ag``: autograder.zip from tests/, otter_config.json, requirements.txt."""
    with contextlib.chdir(ag):
        from otter.generate import main as generate

        with contextlib.redirect_stdout(io.StringIO()):
            generate(
                tests_dir="tests",
                output_path="autograder.zip",
                config="otter_config.json",
                requirements="requirements.txt",
                python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
            )


def _write_exercises_md(target: Path, ch: Chapter, cells: dict) -> None:
    lines = [f"# Assignment {ch.name}", "", "| exercise | graded names | points |", "|---|---|---|"]
    for ex in ch.exercises:
        names = ", ".join(f"`{p.name}`" for p in ex.parts)
        lines.append(f"| {ex.label} | {names} | {ex.points} |")
    lines.append(f"| **total** | | {sum(ex.points for ex in ch.exercises)} |")
    if ch.ungraded:
        lines += ["", "Not graded (the student's notebook still has them, with their checks):", ""]
        lines += [f"- {label}: {why}." for label, why in ch.ungraded.items()]
    lines += [
        "",
        f"Hand out `student/{ch.name}.ipynb`; grade with "
        f"`make grade CHAPTER={ch.number} SUBMISSIONS=DIR`.",
    ]
    (target / "EXERCISES.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------
# In the student's kernel: the guard and the hidden cases
# --------------------------------------------------------------------------------------------

GUARD_SOURCE = r'''
# attention-course grading guard: output cap, time limits, exit(), progress log
def _attention_course_guard():
    import builtins, os, signal, sys
    from IPython import get_ipython

    ip = get_ipython()
    # make grade sets the scratch folder; under a plain `otter run` or on Gradescope: the cwd
    scratch = os.environ.get("ATTENTION_COURSE_SCRATCH") or os.getcwd()
    log = open(os.path.join(scratch, "progress.log"), "a", buffering=1)
    sys.modules["__attention_course_log__"] = log
    cap = int(os.environ.get("ATTENTION_COURSE_OUTPUT_CAP", "1000000"))
    limit = int(os.environ.get("ATTENTION_COURSE_CELL_LIMIT", "10"))
    printed = [0, False]

    import contextlib
    import ipykernel.iostream as iostream

    write = iostream.OutStream.write

    def capped(self, text, *args, **kwargs):
        if printed[0] + len(text) > cap:
            if not printed[1]:
                printed[1] = True
                log.write("truncated\n")
                write(self, "\n[output truncated by the grader]\n")
            return len(text)
        printed[0] += len(text)
        return write(self, text, *args, **kwargs)

    iostream.OutStream.write = capped
    # IPython 9 wraps each stream's bound write for its output history, cell by cell, and puts
    # the bound method back as an instance attribute: no history, and the instance attributes
    # are dropped before each cell (pre) so that the capped class method is the one called.
    ip._tee = lambda channel: contextlib.nullcontext()
    format_data = ip.displayhook.write_format_data

    def capped_display(format_dict, md_dict=None):
        if sum(len(str(v)) for v in format_dict.values()) > cap:
            log.write("truncated\n")
            format_dict = {"text/plain": "[output truncated by the grader]"}
        return format_data(format_dict, md_dict)

    ip.displayhook.write_format_data = capped_display

    def alarm(signum, frame):
        raise TimeoutError(f"ran longer than {limit} s")

    signal.signal(signal.SIGALRM, alarm)
    current = [None]

    def pre(info):
        for stream in (sys.stdout, sys.stderr):
            vars(stream).pop("write", None)
        first = (info.raw_cell or "").split("\n", 1)[0]
        current[0] = first[len("# exercise: "):].strip() if first.startswith("# exercise: ") else None
        if current[0]:
            log.write(f"cell {current[0]}\n")
            signal.setitimer(signal.ITIMER_REAL, limit)

    def post(result):
        signal.setitimer(signal.ITIMER_REAL, 0)
        error = result.error_in_exec or result.error_before_exec
        if current[0] and error is not None:
            kind = type(error).__name__
            log.write(f"error {current[0]} {kind}\n")

    ip.events.register("pre_run_cell", pre)
    ip.events.register("post_run_cell", post)

    def no_exit(*args, **kwargs):
        raise SystemExit("exit() called")

    builtins.exit = builtins.quit = no_exit
    ip.user_ns["exit"] = ip.user_ns["quit"] = no_exit
    ip.ask_exit = lambda: None


_attention_course_guard()
del _attention_course_guard
'''

AUDIT_SOURCE = r'''
# attention-course grading guard: no writes or deletes outside this folder, no subprocesses
def _attention_course_audit():
    import os, sys

    if not os.environ.get("ATTENTION_COURSE_SCRATCH"):
        return  # a plain `otter run` or Gradescope: otter writes results to /tmp; no hook
    scratch = os.path.realpath(os.environ["ATTENTION_COURSE_SCRATCH"]) + os.sep
    log = sys.modules["__attention_course_log__"]
    realpath, fspath, getcwd, join = os.path.realpath, os.fspath, os.getcwd, os.path.join
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    path_events = {
        "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
        "os.symlink", "os.link", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile",
        "shutil.copytree", "shutil.chown", "os.chflags", "os.lchmod", "os.lchown", "os.setxattr",
        "os.removexattr", "shutil.unpack_archive", "shutil.make_archive",
    }
    refused = {
        "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
        "os.forkpty", "os.kill", "os.killpg", "ctypes.dlopen", "ctypes.dlsym",
        "ctypes.call_function", "os.startfile", "pty.spawn", "sys.remote_exec",
    }

    def outside(path):
        if path is None or isinstance(path, int):
            return False
        try:
            path = fspath(path)
            if isinstance(path, bytes):
                path = path.decode(errors="replace")
            full = realpath(join(getcwd(), path))
        except Exception:
            return True
        return full != "/dev/null" and not (full + os.sep).startswith(scratch)

    def hook(event, args):
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(flags, int) and flags & write_flags) or (
                isinstance(mode, str) and any(c in mode for c in "wax+")
            )
            if writing and outside(path):
                log.write(f"blocked write {path}\n")
                raise PermissionError(f"grading: writing outside the working folder: {path}")
        elif event in path_events:
            for path in args[:2]:
                if isinstance(path, (str, bytes, os.PathLike)) and outside(path):
                    log.write(f"blocked {event} {path}\n")
                    raise PermissionError(f"grading: {event} outside the working folder: {path}")
        elif event in refused:
            log.write(f"blocked {event}\n")
            raise PermissionError(f"grading: {event} is not allowed")

    sys.addaudithook(hook)


_attention_course_audit()
del _attention_course_audit
'''


class ReferenceOff(RuntimeError):
    """Raised by a course function that is switched off while a student's code runs."""


def _resolve(path: str):
    module, _, attr = path.rpartition(".")
    return getattr(importlib.import_module(f"attention_course.{module}"), attr)


def _python_function(obj):
    """The plain Python function under ``obj`` (jax.jit and functools.wraps unwrapped)."""
    seen = 0
    while not hasattr(obj, "__code__") and hasattr(obj, "__wrapped__") and seen < 10:
        obj, seen = obj.__wrapped__, seen + 1
    return obj if hasattr(obj, "__code__") else None


def _stub_code(path: str, freevars: tuple[str, ...]):
    """A code object that raises :class:`ReferenceOff`, with the same free variables."""
    closure = "".join(f"    {v} = None\n" for v in freevars)
    uses = "".join(f"        {v}\n" for v in freevars)
    source = (
        "def outer():\n"
        f"{closure}"
        "    def off(*args, **kwargs):\n"
        f"{uses}"
        f"        raise __ReferenceOff(\"attention_course.{path} is switched off while grading: \"\n"
        "                             \"write your own\")\n"
        "    return off\n"
    )
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    return namespace["outer"]().__code__


@contextlib.contextmanager
def references_off(paths: Iterable[str]):
    """While inside, every course function in ``paths`` raises :class:`ReferenceOff`, however the
    student reached it (an alias, ``from ... import``, a ``functools.partial``, a function of the
    course that calls it): its code object is swapped, and JAX's caches are cleared so a jitted
    copy traced earlier cannot answer either."""
    import jax

    swapped = []
    try:
        for path in paths:
            fn = _python_function(_resolve(path))
            if fn is None:
                continue
            stub = _stub_code(path, fn.__code__.co_freevars)
            fn.__globals__.setdefault("__ReferenceOff", ReferenceOff)
            swapped.append((fn, fn.__code__))
            fn.__code__ = stub
        jax.clear_caches()
        yield
    finally:
        for fn, code in swapped:
            fn.__code__ = code
        jax.clear_caches()


@contextlib.contextmanager
def _time_limit(seconds: float):
    def alarm(signum, frame):
        raise TimeoutError(f"ran longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _log(line: str) -> None:
    log = sys.modules.get("__attention_course_log__")
    if log is not None:
        try:
            log.write(line + "\n")
        except Exception:  # noqa: BLE001
            pass


def run_hidden_cases(env: dict, number: str, label: str, expected_blob: str) -> None:
    """Otter's test body: run the student's names of exercise ``label`` on its hidden cases.

    Raises AssertionError with one line (what failed, on which hidden case) unless every case
    passes; otter turns that into the exercise's score and feedback.
    """
    from attention_course.grading import _compare, _describe_exception, _short

    ch = chapter(number)
    (ex,) = [e for e in ch.exercises if e.label == label]
    skipped = os.environ.get("ATTENTION_COURSE_SKIP", "").split(",")
    if label in skipped:
        raise AssertionError("not graded: its cell stopped the kernel or ran out of time")
    _log(f"test {label}")
    expected = pickle.loads(base64.b64decode("".join(expected_blob)))
    for k, part in enumerate(ex.parts):
        if part.name not in env:
            raise AssertionError(f"{part.name} is not defined (did its cell run without error?)")
        got_object = env[part.name]
        cases = part.cases(np.random.default_rng([HIDDEN_SEED, k]))
        wanted = expected[part.name]
        for n, (case, want) in enumerate(zip(cases, wanted), start=1):
            where = f"{part.name}: hidden case {n} of {len(cases)}"
            if part.kind == "value":
                where = part.name
            try:
                with _time_limit(CASE_LIMIT_S), references_off(ex.off):
                    got = got_object(*copy.deepcopy(case)) if part.kind == "function" else got_object
                    got = _numpy_tree(got)
            except NotImplementedError:
                raise AssertionError(f"{part.name}: not implemented yet") from None
            except ReferenceOff as error:
                _log(f"reference {label}")
                raise AssertionError(f"{where}: {error}") from None
            except TimeoutError:
                _log(f"timeout {label}")
                raise AssertionError(f"{where}: ran longer than {CASE_LIMIT_S} s") from None
            except PermissionError as error:
                raise AssertionError(f"{where}: {error}") from None
            except BaseException as error:  # noqa: BLE001 -- SystemExit, KeyboardInterrupt too
                _log(f"exit {label}" if isinstance(error, SystemExit) else
                     f"raised {label} {type(error).__name__}")
                raise AssertionError(f"{where}: raised {_describe_exception(error)}") from None
            problem = _compare(got, want, part.atol, part.rtol)
            if problem and part.kind == "value":  # the answer itself: do not give it away
                raise AssertionError(f"{where}: not the expected answer (got {_short(got)})")
            if problem:
                raise AssertionError(f"{where}: {problem}")
    _log(f"passed {label}")


# --------------------------------------------------------------------------------------------
# The grading notebook (otter plugin's before_execution)
# --------------------------------------------------------------------------------------------


def _find_cell(cells: list, wanted_id: str | None, defines: Sequence[str]):
    for cell in cells:
        if cell.get("cell_type") == "code" and wanted_id and cell.get("id") == wanted_id:
            return cell
    candidates = [
        cell
        for cell in cells
        if cell.get("cell_type") == "code"
        and any(name in _defined_names(_source(cell)) for name in defines)
    ]
    return candidates[-1] if candidates else None


def grading_notebook(nb, config: dict, skip: Iterable[str] = ()):
    """What otter executes for a submission ``nb``: the guard, the chapter's import cell (the
    instructor's copy), the audit hook, then each graded exercise's cell from the submission
    (found by its cell id, else by the name it defines), first line ``# exercise: <label>``."""
    import nbformat

    skip = set(skip)
    cells = [nbformat.v4.new_code_cell(GUARD_SOURCE), nbformat.v4.new_code_cell(config["imports"])]
    cells.append(nbformat.v4.new_code_cell(AUDIT_SOURCE))
    for label, where in config["cells"].items():
        if label in skip:
            continue
        cell = _find_cell(nb.get("cells", []), where.get("id"), where.get("defines", ()))
        if cell is None:
            continue
        cells.append(nbformat.v4.new_code_cell(f"{MARKER}{label}\n{_source(cell)}"))
    out = nbformat.v4.new_notebook(cells=cells)
    out.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return out


# --------------------------------------------------------------------------------------------
# Grading a folder
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    file: str
    scores: dict[str, float]
    status: str
    feedback: dict[str, str]


def _status_notes(log_lines: list[str]) -> list[str]:
    notes: list[str] = []

    def add(note):
        if note not in notes:
            notes.append(note)

    for line in log_lines:
        word, _, rest = line.partition(" ")
        if word == "error":
            label, _, kind = rest.partition(" ")
            if kind in ("NotImplementedError", "SyntaxError"):  # not done; checked before
                continue
            if kind == "TimeoutError":
                add(f"{label}: time limit ({CELL_LIMIT_S} s) in its cell")
            elif kind == "SystemExit":
                add(f"{label}: called exit")
            elif kind == "PermissionError":
                add(f"{label}: refused a write, delete or subprocess outside its folder")
            else:
                add(f"{label}: its cell raised {kind}")
        elif word == "reference":
            add(f"{rest}: calls the course's reference (switched off while grading)")
        elif word == "timeout":
            add(f"{rest}: time limit ({CASE_LIMIT_S} s) on a hidden case")
        elif word == "exit":
            add(f"{rest}: called exit")
        elif word == "raised":
            label, _, kind = rest.partition(" ")
            add(f"{label}: raised {kind} on a hidden case")
        elif word == "truncated":
            add("output truncated")
        elif word == "blocked":
            add("blocked: " + rest.split(" ")[0] + " outside the working folder")
    return notes


def _syntax_notes(nb: dict, config: dict) -> list[str]:
    notes = []
    for label, where in config["cells"].items():
        cell = _find_cell(nb.get("cells", []), where.get("id"), where.get("defines", ()))
        if cell is None:
            notes.append(f"{label}: no exercise cell found")
            continue
        try:
            compile(_python(_source(cell)), label, "exec")
        except SyntaxError as error:
            notes.append(f"{label}: syntax error (line {error.lineno})")
    return notes


def _last_label(log_lines: list[str], labels: Sequence[str]) -> str | None:
    for line in reversed(log_lines):
        word, _, rest = line.partition(" ")
        if word in ("cell", "test"):
            label = rest.strip()
            if label in labels:
                return label
    return None


_RUNNER: dict[str, Any] = {}
_RUNNER_LOCK = threading.Lock()


def _runner() -> tuple[str, dict[str, str], dict]:
    """The interpreter, extra environment and Popen arguments of the grading process.

    As root: the process (otter, and the kernel it starts) runs as ``nobody``.  When ``nobody``
    cannot execute this interpreter (a Python under /root, as with pyenv), the same Python
    version elsewhere on the machine (``/usr/bin/python3.11``, ...) runs with this
    environment's site-packages on PYTHONPATH.  Not root: this interpreter, as this user.
    """
    with _RUNNER_LOCK:
        if _RUNNER:
            return _RUNNER["python"], _RUNNER["env"], _RUNNER["popen"]
        python, env, popen = sys.executable, {}, {}
        if os.name == "posix" and os.geteuid() == 0:
            import pwd
            import site

            user = pwd.getpwnam("nobody")
            popen = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            version = f"{sys.version_info.major}.{sys.version_info.minor}"
            paths = [str(ROOT / "src"), *site.getsitepackages()]
            paths += [p for p in sys.path if "-packages" in p and p not in paths]
            candidates = [(sys.executable, {})] + [
                (path, {"PYTHONPATH": os.pathsep.join(paths)})
                for path in (f"/usr/bin/python{version}", f"/usr/local/bin/python{version}",
                             "/usr/bin/python3", "/usr/local/bin/python3")
                if os.path.exists(path)
            ]
            probe = "import sys, attention_course, otter, ipykernel; print(sys.version_info[:2])"
            for candidate, extra in candidates:
                try:
                    done = subprocess.run(
                        [candidate, "-c", probe], env={**extra, "HOME": "/"}, cwd="/",
                        capture_output=True, text=True, timeout=60, **popen,
                    )
                except (OSError, subprocess.SubprocessError):
                    continue
                if done.returncode == 0 and done.stdout.strip() == str(sys.version_info[:2]):
                    python, env = candidate, extra
                    break
            else:  # e.g. a checkout under /root: nobody cannot read the course
                popen = {}
                print(
                    f"warning: no Python {version} that 'nobody' can run imports the course and "
                    "otter-grader (is the checkout readable by others?); grading as root, "
                    "guarded by the kernel's audit hook only",
                    file=sys.stderr,
                )
        _RUNNER.update(python=python, env=env, popen=popen)
        return python, env, popen


def _load_json_notebook(path: Path) -> dict:
    import nbformat

    raw = path.read_bytes()
    text = raw.decode("utf-8")
    data = json.loads(text)
    if not isinstance(data, dict) or "cells" not in data:
        raise ValueError("not a notebook (no cells)")
    nb = nbformat.reads(text, as_version=4)
    return nb


def _clean(nb) -> dict:
    """Sources only: outputs (which may be huge) and attachments dropped."""
    cells = []
    for cell in nb.get("cells", []):
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            continue
        cells.append(
            {
                "cell_type": cell["cell_type"],
                "id": str(cell.get("id") or f"cell-{len(cells)}")[:64],
                "metadata": {},
                "source": _source(cell),
                **({"outputs": [], "execution_count": None} if cell["cell_type"] == "code" else {}),
            }
        )
    return {
        "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _grade_one(path: Path, ch: Chapter, zip_path: Path, config: dict, limit: float, work: Path) -> Result:
    labels = [ex.label for ex in ch.exercises]
    zero = {label: 0.0 for label in labels}
    try:
        nb = _load_json_notebook(path)
    except Exception as error:  # noqa: BLE001
        reason = f"{type(error).__name__}: {str(error)[:120]}".replace("\n", " ")
        return Result(path.name, zero, f"not a notebook ({reason})", {})
    clean = _clean(nb)
    notes = _syntax_notes(clean, config)
    scratch = Path(tempfile.mkdtemp(prefix="submission-", dir=work))
    python, extra_env, demote = _runner()
    for sub in ("tmp", "home", "out"):
        (scratch / sub).mkdir()
    (scratch / "submission.ipynb").write_text(json.dumps(clean), encoding="utf-8")
    shutil.copy(zip_path, scratch / "autograder.zip")
    if demote:
        for item in [scratch, *scratch.rglob("*")]:
            os.chown(item, demote["user"], demote["group"])
    bin_dir = str(Path(python).parent)
    env = {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(scratch / "home"),
        "TMPDIR": str(scratch / "tmp"),
        "MPLCONFIGDIR": str(scratch / "home"),
        "IPYTHONDIR": str(scratch / "home" / ".ipython"),
        "JUPYTER_RUNTIME_DIR": str(scratch / "home" / "runtime"),
        "JUPYTER_DATA_DIR": str(scratch / "home" / "data"),
        "JUPYTER_CONFIG_DIR": str(scratch / "home" / "config"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "ATTENTION_COURSE_FAST": "1",
        "ATTENTION_COURSE_SCRATCH": str(scratch),
        "ATTENTION_COURSE_OUTPUT_CAP": str(OUTPUT_CAP),
        "ATTENTION_COURSE_CELL_LIMIT": str(CELL_LIMIT_S),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
        **extra_env,
    }
    skip: list[str] = []
    deadline = time.monotonic() + limit
    results = None
    log_lines: list[str] = []
    try:
        while True:
            env["ATTENTION_COURSE_SKIP"] = ",".join(skip)
            progress = scratch / "progress.log"
            if progress.exists():
                progress.unlink()
            (scratch / "out" / "results.json").unlink(missing_ok=True)
            remaining = deadline - time.monotonic()
            timed_out = False
            process = subprocess.Popen(
                [python, "-m", "attention_course.coursework", "_run", "autograder.zip",
                 "submission.ipynb", "out"],
                cwd=scratch,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                **demote,
            )
            try:
                process.wait(timeout=max(remaining, 1))
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            attempt_log = progress.read_text(errors="replace").splitlines() if progress.exists() else []
            log_lines += attempt_log
            results_file = scratch / "out" / "results.json"
            if not timed_out and results_file.exists():
                results = json.loads(results_file.read_text(encoding="utf-8"))
                break
            culprit = _last_label(attempt_log, [l for l in labels if l not in skip])
            why = "time limit of the submission" if timed_out else "the kernel died (os._exit, exit or a crash)"
            if culprit is None:
                notes.append(f"{why} before any exercise ran")
                break
            notes.append(f"{culprit}: {why}")
            skip.append(culprit)
            if time.monotonic() > deadline - 5:
                notes.append("out of time: the other exercises were not graded")
                break
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    notes += [n for n in _status_notes(log_lines) if n not in notes]
    scores, feedback = dict(zero), {}
    if results is not None:
        scores, feedback = _read_results(results, labels, {ex.label: ex.points for ex in ch.exercises})
    for label in skip:
        scores[label] = 0.0
        feedback[label] = "not graded: its cell stopped the kernel or ran out of time"
    status = "ok" if not notes else "; ".join(notes)
    return Result(path.name, scores, status, feedback)


def _read_results(results: dict, labels: Sequence[str], points: dict[str, int]):
    """Scores and messages from otter's results.json, checked against the exercises' points (the
    file comes from a process the student's code shared, so nothing in it is taken on trust)."""
    scores = {label: 0.0 for label in labels}
    feedback: dict[str, str] = {}
    for test in results.get("tests", []) if isinstance(results, dict) else []:
        name = test.get("name") if isinstance(test, dict) else None
        if name not in scores:
            continue
        try:
            score = float(test.get("score", 0))
        except (TypeError, ValueError):
            score = 0.0
        scores[name] = score if score in (0.0, float(points[name])) else 0.0
        output = str(test.get("output", ""))
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        if scores[name] == points[name]:
            feedback[name] = "all hidden cases pass"
        else:
            message = next(
                (line for line in reversed(lines) if line.startswith("AssertionError")), None
            )
            message = message[len("AssertionError: "):] if message else (lines[-1] if lines else "failed")
            feedback[name] = message[:300]
    return scores, feedback


def _format_points(value: float) -> str:
    return f"{value:g}"


def grade(
    number: str,
    submissions: Path,
    *,
    assignment: Path | None = None,
    jobs: int = 2,
    limit: float = SUBMISSION_LIMIT_S,
) -> list[Result]:
    """Grade every ``submissions/*.ipynb``; write ``grades.csv`` and ``feedback/<name>.md`` there.

    Each submission is graded by ``otter run`` (otter.run.main) in a process of its own, in a
    scratch copy of the submission and the autograder, as ``nobody`` when we are root, with
    ``limit`` seconds for all its attempts; ``jobs`` submissions at a time.  A kernel that dies or
    runs out of time is restarted without the exercise it was running, so that only that exercise
    loses its points.
    """
    ch = chapter(number)
    submissions = Path(submissions).resolve()
    assignment = Path(assignment) if assignment else ROOT / "_build" / "assignments" / ch.name
    zip_path = assignment / "autograder" / "autograder.zip"
    if not zip_path.exists():
        raise FileNotFoundError(f"{zip_path}: run `make assignment CHAPTER={ch.number}` first")
    config = json.loads((assignment / "autograder" / "otter_config.json").read_text())
    plugin = config["plugins"][0]["attention_course.coursework_plugin.CourseworkPlugin"]
    paths = sorted(p for p in submissions.glob("*.ipynb") if p.is_file())
    work = Path(tempfile.mkdtemp(prefix="attention-grading-"))
    os.chmod(work, 0o711)  # nobody may enter its own folder below, list nothing
    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            results = list(
                pool.map(lambda p: _grade_one(p, ch, zip_path, plugin, limit, work), paths)
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    labels = [ex.label for ex in ch.exercises]
    with (submissions / "grades.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["file", *labels, "total", "status"])
        for r in results:
            writer.writerow(
                [r.file, *(_format_points(r.scores[l]) for l in labels),
                 _format_points(sum(r.scores.values())), r.status]
            )
    feedback_dir = submissions / "feedback"
    feedback_dir.mkdir(exist_ok=True)
    for r in results:
        (feedback_dir / f"{Path(r.file).stem}.md").write_text(_feedback_text(r, ch), encoding="utf-8")
    return results


def _feedback_text(r: Result, ch: Chapter) -> str:
    total = sum(ex.points for ex in ch.exercises)
    lines = [
        f"# Feedback: {r.file} (chapter {ch.name})",
        "",
        f"Score: {_format_points(sum(r.scores.values()))} / {total}",
        "",
    ]
    if r.status != "ok":
        lines += [f"Notes from the grader: {r.status}", ""]
    for ex in ch.exercises:
        got = r.scores.get(ex.label, 0.0)
        mark = "\u2713" if got == ex.points else "\u2717"
        message = r.feedback.get(ex.label, "not graded" if r.status.startswith("not a notebook") else "failed")
        lines.append(f"- {mark} {ex.label} ({_format_points(got)}/{ex.points}): {message}")
    for label, why in ch.ungraded.items():
        lines.append(f"- {label}: not graded ({why})")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _run(zip_name: str, notebook: str, out: str) -> int:
    """Inside the scratch folder (as nobody when root): ``otter run`` on one notebook."""
    from otter.run import main as otter_run

    otter_run(notebook, autograder=zip_name, output_dir=out, no_logo=True)
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attention_course.coursework")
    commands = parser.add_subparsers(dest="command", required=True)
    a = commands.add_parser("assignment", help="make _build/assignments/NN_slug/")
    a.add_argument("chapter")
    a.add_argument("--out", type=Path, default=None)
    g = commands.add_parser("grade", help="grade every DIR/*.ipynb")
    g.add_argument("chapter")
    g.add_argument("submissions", type=Path)
    g.add_argument("--assignment", type=Path, default=None)
    g.add_argument("--jobs", type=int, default=2)
    g.add_argument("--limit", type=float, default=SUBMISSION_LIMIT_S)
    r = commands.add_parser("_run")
    r.add_argument("zip")
    r.add_argument("notebook")
    r.add_argument("out")
    args = parser.parse_args(None if argv is None else list(argv))
    if args.command == "assignment":
        target = build_assignment(args.chapter, args.out)
        print(f"wrote {target}")
        for path in sorted(target.rglob("*")):
            if path.is_file() and "tests" not in path.parts:
                print(f"  {path.relative_to(target)}")
        return 0
    if args.command == "grade":
        if not args.submissions.is_dir():
            print(f"error: SUBMISSIONS={args.submissions} is not a folder", file=sys.stderr)
            return 2
        start = time.monotonic()
        results = grade(args.chapter, args.submissions, assignment=args.assignment,
                        jobs=args.jobs, limit=args.limit)
        seconds = time.monotonic() - start
        print(f"graded {len(results)} submissions in {seconds:.0f} s: "
              f"{args.submissions / 'grades.csv'}, {args.submissions / 'feedback'}/")
        for r in results:
            print(f"  {r.file}: {_format_points(sum(r.scores.values()))} ({r.status})")
        return 0
    if args.command == "_run":
        return _run(args.zip, args.notebook, args.out)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
