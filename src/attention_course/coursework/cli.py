"""The command line: ``python -m attention_course.coursework assignment|grade|gradescope``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from attention_course.coursework.assignment import build_assignment
from attention_course.coursework.grader import SUBMISSION_LIMIT_S, _format_points, grade


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
    s = commands.add_parser("gradescope", help="run autograder.zip on one notebook as Gradescope "
                            "would, in a scratch copy of its layout; print results.json's tests")
    s.add_argument("chapter")
    s.add_argument("submission", type=Path)
    s.add_argument("--assignment", type=Path, default=None)
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
    if args.command == "gradescope":
        return _gradescope(args.chapter, args.submission, args.assignment)
    if args.command == "_run":
        return _run(args.zip, args.notebook, args.out)
    return 2


def _gradescope(number: str, submission: Path, assignment: Path | None) -> int:
    """What Gradescope would record for ``submission``: each test's score and output."""
    import tempfile

    from attention_course.coursework import chapter, gradescope
    from attention_course.coursework.notebook import ROOT

    ch = chapter(number)
    assignment = assignment or ROOT / "_build" / "assignments" / ch.name
    zip_path = assignment / "autograder" / "autograder.zip"
    if not zip_path.exists():
        build_assignment(ch.number)
    with tempfile.TemporaryDirectory(prefix="gradescope-") as scratch:
        results = gradescope.run(zip_path, submission, Path(scratch) / "autograder")
    total = 0.0
    for test in results.get("tests", []):
        if "max_score" not in test:
            continue
        total += float(test.get("score", 0))
        print(f"{test['name']}: {test.get('score', 0):g} / {test['max_score']:g} "
              f"(shown to the student: {test.get('visibility', 'visible')})")
        for line in str(test.get("output", "")).strip().splitlines()[-1:]:
            print(f"  {line.strip()}")
    print(f"total {total:g}")
    return 0




