"""Coursework: a chapter as an otter-grader assignment, and a folder of submissions graded.

The chapter notebook stays the single source.  ``make assignment CHAPTER=NN`` turns it into::

    _build/assignments/NN_slug/
      student/NN_slug.ipynb      the notebook to hand out (Colab link or file): solutions stripped,
                                 the book's visible checks kept; an unfinished exercise says "not
                                 implemented yet" and does not stop Run All
      autograder/autograder.zip  otter-grader's autograder (``otter generate``): hidden tests with
                                 points, otter_config.json, setup.sh/requirements for Gradescope
      autograder/tests/          the same hidden tests, unzipped, to read
      EXERCISES.md               what is graded, the points, what is graded by hand and why

``make grade CHAPTER=NN SUBMISSIONS=DIR`` grades every ``DIR/*.ipynb`` with ``otter run`` (otter's
non-containerised grader) and writes ``DIR/grades.csv`` and ``DIR/feedback/<name>.md``.

The package:

* ``chNN_slug.py``: one small file per chapter, its :class:`~.spec.Chapter`: points, what is
  graded by hand, hidden cases where the notebook's check has none to draw, references switched
  off beyond the check's own.  A new chapter is one new file; :data:`CHAPTERS` finds it.
* :mod:`.spec`: what a chapter file says, and what is derived from the notebook's check calls;
* :mod:`.notebook`: reading a chapter notebook;
* :mod:`.assignment`: the student copy, the hidden tests, otter's autograder.zip;
* :mod:`.kernel`: what runs in the student's kernel (guard, audit hook, hidden cases); it imports
  nothing from otter, so it imports on Colab without it;
* :mod:`.grader`: grading a folder, one process per submission; :mod:`.plugin`: otter's plugin;
* :mod:`.gradescope`: the autograder run as Gradescope runs it, in a scratch copy of its layout;
* :mod:`.cli`: the command line.
"""

from __future__ import annotations

import importlib
import pkgutil

from attention_course.coursework.spec import Chapter, Exercise, Part

__all__ = [
    "CHAPTERS",
    "Chapter",
    "Exercise",
    "Part",
    "build_assignment",
    "chapter",
    "grade",
    "main",
]


def _chapters() -> dict[str, Chapter]:
    found: dict[str, Chapter] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("ch") and info.name[2:4].isdigit():
            ch = importlib.import_module(f"{__name__}.{info.name}").CHAPTER
            if f"ch{ch.name}" != info.name:
                raise ValueError(f"{info.name}.py: its CHAPTER is {ch.name}, expected {info.name[2:]}")
            found[ch.number] = ch
    return found


CHAPTERS: dict[str, Chapter] = _chapters()


def chapter(number: str) -> Chapter:
    key = str(number).zfill(2)
    if key not in CHAPTERS:
        raise ValueError(f"CHAPTER: expected one of {sorted(CHAPTERS)}, got {number!r}")
    return CHAPTERS[key]


def module_name(ch: Chapter) -> str:
    """The chapter file of ``ch``, as a module name (``ch04_soft_search``)."""
    return f"ch{ch.name}"


def build_assignment(number, out_root=None):
    """See :func:`.assignment.build_assignment`."""
    from attention_course.coursework.assignment import build_assignment as build

    return build(number, out_root)


def grade(number, submissions, **kwargs):
    """See :func:`.grader.grade`."""
    from attention_course.coursework.grader import grade as run

    return run(number, submissions, **kwargs)


def main(argv=None) -> int:
    from attention_course.coursework.cli import main as run

    return run(argv)
