"""``make assignment CHAPTER=NN``: the student copy, the hidden tests and otter's autograder.zip."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
from pathlib import Path

from attention_course.coursework import notebook as nbtools
from attention_course.coursework import spec
from attention_course.coursework.kernel import Raised, encode, freeze, numpy_tree

OTTER_VERSION = "7.0.0"


def student_copy(nb: dict, ch: spec.Chapter) -> dict:
    """The notebook to hand out: :func:`grading.student_notebook` with its keep-going cell (an
    unfinished exercise's check says "not implemented yet" and Run All goes on)."""
    from attention_course import grading

    student = grading.student_notebook(nb, keep_going=True)
    student["metadata"]["attention_course"] = {"assignment": ch.name}
    return student


def hidden_tests(ch: spec.Chapter, nb: dict) -> dict[str, dict]:
    """``label -> what its test file carries``: the graded names, their hidden cases and the
    expected values (computed here, with the course's references), the tolerances, and the
    course functions switched off while the student's code runs."""
    recorded, _ = spec.record(ch, nb)
    out = {}
    for ex in ch.exercises:
        parts, off = spec.resolve(ex, recorded.get(ex.label, []))
        carried = []
        for part in parts:
            expected = []
            for case in part.cases:
                try:
                    if part.kind == "function":
                        value = _call(part.reference, case)
                    else:
                        value = part.reference(*case)
                except Exception as error:  # noqa: BLE001 -- a case of input validation
                    value = Raised(type(error).__name__)
                expected.append(value if isinstance(value, Raised) else numpy_tree(value))
            carried.append({
                "name": part.name, "kind": part.kind, "cases": freeze(part.cases),
                "expected": expected, "atol": part.atol, "rtol": part.rtol,
            })
        out[ex.label] = {"parts": carried, "off": list(off), "points": ex.points}
    return out


def _call(fn, case):
    from attention_course.grading import _call as call, numerics

    with numerics():
        return call(fn, case)


TEST_TEMPLATE = """\
\"\"\"Hidden cases of {label} ({points} points), made by `make assignment` from the chapter notebook.

The cases and their expected values (computed with the course's references when the assignment
was made) are in HIDDEN; see attention_course/coursework/{module}.py for the exercise.
\"\"\"

from otter.test_files import test_case

OK_FORMAT = False

name = "{label}"
points = {points}

HIDDEN = (
{hidden}
)


@test_case(points={points}, hidden=True)
def hidden_cases(env):
    from attention_course.coursework.kernel import run_hidden_cases

    run_hidden_cases(env, name, HIDDEN)
"""


def _wrap(text: str, width: int = 92) -> str:
    return "\n".join(f'    "{text[i:i + width]}"' for i in range(0, len(text), width)) or '    ""'


def build_assignment(number: str, out_root: Path | None = None) -> Path:
    """Write ``_build/assignments/NN_slug/`` (see the package's docstring); returns its path."""
    from attention_course.coursework import chapter, module_name

    ch = chapter(number)
    out_root = Path(out_root) if out_root else nbtools.ROOT / "_build" / "assignments"
    target = out_root / ch.name
    nb = json.loads(ch.notebook.read_text(encoding="utf-8"))
    cells = nbtools.exercise_cells(nb)
    missing = [ex.label for ex in ch.exercises if ex.label not in cells]
    if missing:
        raise ValueError(f"{ch.notebook.name}: no solution cell for {missing}")
    tests_of = hidden_tests(ch, nb)
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
        (tests / f"q{k:02d}_{ex.label}.py").write_text(
            TEST_TEMPLATE.format(label=ex.label, points=ex.points, module=module_name(ch),
                                 hidden=_wrap(encode(tests_of[ex.label]))),
            encoding="utf-8",
        )
    plugin = {
        "chapter": ch.number,
        "imports": spec.imports_source(ch, nb),
        "cells": {
            ex.label: {
                "id": cells[ex.label].get("id"),
                "defines": [p["name"] for p in tests_of[ex.label]["parts"]],
            }
            for ex in ch.exercises
        },
    }
    config = {
        "lang": "python",
        "plugins": [{"attention_course.coursework.plugin.CourseworkPlugin": plugin}],
        "show_hidden": True,
        # every test is hidden: otter's summary of the public ones would say "All test cases
        # passed!" to a student who scored 0, until the grades are published
        "force_public_test_summary": False,
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
    _write_exercises_md(target, ch, tests_of)
    return target


def _repository_url() -> str:
    from attention_course.runtime import REPOSITORY_URL

    return REPOSITORY_URL


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


def _write_exercises_md(target: Path, ch: spec.Chapter, tests_of: dict) -> None:
    lines = [
        f"# Assignment {ch.name}",
        "",
        "| exercise | graded names | hidden cases | points |",
        "|---|---|---|---|",
    ]
    for ex in ch.exercises:
        parts = tests_of[ex.label]["parts"]
        names = ", ".join(f"`{p['name']}`" for p in parts)
        counts = ", ".join(str(len(p["cases"])) for p in parts)
        lines.append(f"| {ex.label} | {names} | {counts} | {ex.points} |")
    lines.append(f"| **total** | | | {sum(ex.points for ex in ch.exercises)} |")
    if ch.manual:
        lines += ["", "Graded by hand (blank columns in grades.csv; the student's notebook has "
                  "them, with their checks where they have one):", ""]
        lines += [f"- {label}: {why}." for label, why in ch.manual.items()]
    lines += [
        "",
        f"Hand out `student/{ch.name}.ipynb`; grade with "
        f"`make grade CHAPTER={ch.number} SUBMISSIONS=DIR`; on Gradescope, upload "
        "`autograder/autograder.zip` (see the instructors' page).",
    ]
    (target / "EXERCISES.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
