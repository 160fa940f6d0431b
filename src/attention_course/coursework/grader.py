"""``make grade CHAPTER=NN SUBMISSIONS=DIR``: every submission graded by otter, one process each.

How grading stays honest and safe:

* only what the exercises need runs: the chapter's import cell (the instructor's copy) and the
  student's exercise cells, never the experiments (plus ``ATTENTION_COURSE_FAST=1``);
* the expected values of the hidden cases were computed with the course's references when the
  assignment was made, outside any student's kernel; while the student's code runs on a hidden
  case, those references (and their close relatives) are switched off, so a solution that only
  calls them gets no points;
* each submission runs in its own process, in a scratch copy, with a time limit; as root its kernel
  runs as ``nobody``; a guard in the kernel caps output, limits each cell and case in time, and an
  audit hook refuses writes and deletes outside the scratch folder, subprocesses and ctypes.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from attention_course.coursework import spec
from attention_course.coursework.kernel import AUDIT_SOURCE, CASE_LIMIT_S, GUARD_SOURCE
from attention_course.coursework.notebook import ROOT, defined_names, python, source

MARKER = "# exercise: "  # first line of each exercise cell in the grading notebook
CELL_LIMIT_S = 10  # each exercise cell, in the student's kernel
SUBMISSION_LIMIT_S = 60  # one submission, every attempt together
OUTPUT_CAP = 1_000_000  # characters of output a submission may print
PLUGIN = "attention_course.coursework.plugin.CourseworkPlugin"


def _find_cell(cells: list, wanted_id: str | None, defines: Sequence[str]):
    for cell in cells:
        if cell.get("cell_type") == "code" and wanted_id and cell.get("id") == wanted_id:
            return cell
    candidates = [
        cell
        for cell in cells
        if cell.get("cell_type") == "code"
        and any(name in defined_names(source(cell)) for name in defines)
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
        cells.append(nbformat.v4.new_code_cell(f"{MARKER}{label}\n{source(cell)}"))
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
            compile(python(source(cell)), label, "exec")
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
                "source": source(cell),
                **({"outputs": [], "execution_count": None} if cell["cell_type"] == "code" else {}),
            }
        )
    return {
        "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _grade_one(path: Path, ch: spec.Chapter, zip_path: Path, config: dict, limit: float, work: Path) -> Result:
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
            feedback[name] = message[:400]
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
    from attention_course.coursework import chapter

    ch = chapter(number)
    submissions = Path(submissions).resolve()
    assignment = Path(assignment) if assignment else ROOT / "_build" / "assignments" / ch.name
    zip_path = assignment / "autograder" / "autograder.zip"
    if not zip_path.exists():
        raise FileNotFoundError(f"{zip_path}: run `make assignment CHAPTER={ch.number}` first")
    config = json.loads((assignment / "autograder" / "otter_config.json").read_text())
    plugin = config["plugins"][0][PLUGIN]
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
        by_hand = [f"{label} (by hand)" for label in ch.manual]
        writer.writerow(["file", *labels, "total", *by_hand, "status"])
        for r in results:  # the columns graded by hand stay blank, for the instructor
            writer.writerow(
                [r.file, *(_format_points(r.scores[l]) for l in labels),
                 _format_points(sum(r.scores.values())), *([""] * len(by_hand)), r.status]
            )
    feedback_dir = submissions / "feedback"
    feedback_dir.mkdir(exist_ok=True)
    for r in results:
        (feedback_dir / f"{Path(r.file).stem}.md").write_text(_feedback_text(r, ch), encoding="utf-8")
    return results


def _feedback_text(r: Result, ch: spec.Chapter) -> str:
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
    for label, why in ch.manual.items():
        lines.append(f"- {label}, graded by hand: {why}")
    return "\n".join(lines) + "\n"

