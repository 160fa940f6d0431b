"""The autograder run as Gradescope runs it, in a scratch copy of Gradescope's layout.

``make grade`` grades with ``otter run``, otter's grader without a container.  Gradescope runs the
same autograder.zip differently: it unzips it into ``/autograder/source``, runs ``setup.sh`` once
when it builds the image, and for each submission puts the student's files in
``/autograder/submission`` and runs ``/autograder/run_autograder`` as root, with ``/autograder``
as the working directory.  That script (made by ``otter generate``) activates the mamba
environment ``otter-env`` and runs ``python /autograder/source/run_otter.py``, which calls
``otter.run.run_autograder.main("/autograder")``: otter's own entry point with ``otter_run``
false.  Gradescope then reads ``/autograder/results/results.json``.  :func:`run` does the same
under a scratch folder, so that a test can check that Gradescope would give the scores that
``make grade`` gives.

What is imitated:

* the layout: ``scratch/source`` holds the unzipped autograder.zip, ``scratch/run_autograder``
  a copy of its script (as Gradescope copies it when it builds the image),
  ``scratch/submission/`` the submitted notebook under its own name, ``scratch/results/`` the
  results (``results.json`` from otter, ``stdout`` the script's output, as Gradescope keeps it);
* ``scratch/submission_metadata.json``, which Gradescope writes for each submission and which
  otter insists on when the config names a plugin (it reads ``../submission_metadata.json``
  before loading the plugins); it is written with Gradescope's fields and made-up values
  (one user, ``student@example.com``, no previous submissions);
* the run itself: the zip's own ``run_otter.py`` is executed as ``__main__`` in a new process,
  with the working directory ``scratch``, and otter's entry point gets ``scratch`` where the
  file says ``/autograder`` (the file is read, checked to call exactly
  ``run_autograder("/autograder")`` and left unchanged); so ``otter_run`` is false as on
  Gradescope: otter forces the kernel named ``python3`` and puts ``/root/miniforge3/bin`` in
  front of ``PATH``, and no audit hook or ``nobody`` user of ``make grade`` is involved;
* the whole run has a time limit, as Gradescope's has (its limit is set per assignment).

What is not imitated:

* ``setup.sh`` is not run and nothing is installed (no apt-get, no mamba, no pip): the
  environment is the one running this code, ``sys.executable`` and its site-packages, which
  stand for the ``otter-env`` environment that ``setup.sh`` builds from environment.yml;
  ``run_autograder`` itself is not executed (it would ``mamba activate otter-env``), its last
  line is done directly, with this interpreter's ``bin`` folder first on ``PATH`` as
  ``mamba activate`` would put the environment's;
* no Docker container, no fresh Ubuntu image, no separate machine: the process runs as the
  current user, with this machine's environment variables (those of ``make grade``'s grader,
  ``ATTENTION_COURSE_*``, removed; ``JAX_PLATFORMS=cpu`` unless set, as Gradescope's machines
  have no accelerator);
* nothing is uploaded: ``results.json`` is returned, not shown to a student, and its
  ``visibility`` fields are not applied.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

AUTOGRADER_DIR = "/autograder"  # what the zip's run_otter.py hands to otter on Gradescope

# Made-up values in the fields Gradescope writes (see its "Submission Metadata" page).
SUBMISSION_METADATA: dict[str, Any] = {
    "id": 1,
    "created_at": "2024-01-01T12:00:00.000000+00:00",
    "assignment": {
        "id": 1,
        "course_id": 1,
        "title": "attention-course assignment",
        "due_date": "2024-01-08T12:00:00.000000+00:00",
        "late_due_date": None,
        "release_date": "2024-01-01T00:00:00.000000+00:00",
        "group_submission": False,
        "group_size": None,
        "total_points": "0.0",
    },
    "submission_method": "upload",
    "users": [{"email": "student@example.com", "id": 1, "name": "Student User"}],
    "previous_submissions": [],
}

# Runs the zip's run_otter.py as __main__, with otter's entry point handed the scratch folder
# where the file says /autograder.  argv: scratch folder, run_otter.py.
_LAUNCHER = """\
import runpy, sys
import otter.run.run_autograder as entry

scratch, script = sys.argv[1], sys.argv[2]
real_main = entry.main

def main(autograder_dir, *args, **kwargs):
    if autograder_dir != {expected!r}:
        raise SystemExit(f"run_otter.py passed {{autograder_dir!r}}, expected {expected!r}")
    return real_main(scratch, *args, **kwargs)

entry.main = main
sys.argv = [script]
runpy.run_path(script, run_name="__main__")
"""


def _check_run_otter(path: Path) -> None:
    """Raise ``RuntimeError`` unless ``run_otter.py`` calls ``run_autograder("/autograder")``
    and nothing else of otter's: what :func:`run` imitates is only that call."""
    if not path.is_file():
        raise RuntimeError(f"{path}: the autograder zip has no run_otter.py")
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    calls = [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        and node.func.id == "run_autograder"
    ]
    ok = (
        len(calls) == 1
        and not calls[0].keywords
        and len(calls[0].args) == 1
        and isinstance(calls[0].args[0], ast.Constant)
        and calls[0].args[0].value == AUTOGRADER_DIR
    )
    if not ok:
        raise RuntimeError(
            f"{path}: expected one call run_autograder({AUTOGRADER_DIR!r}); otter's template "
            "changed, so gradescope.run no longer imitates it"
        )


def _layout(zip_path: Path, submission: Path, scratch: Path) -> None:
    """Gradescope's ``/autograder`` under ``scratch``: source, run_autograder, submission,
    results and submission_metadata.json (any earlier copy replaced)."""
    scratch.mkdir(parents=True, exist_ok=True)
    for name in ("source", "submission", "results"):
        shutil.rmtree(scratch / name, ignore_errors=True)
        (scratch / name).mkdir()
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(scratch / "source")
    script = scratch / "source" / "run_autograder"
    if script.is_file():  # Gradescope copies it to /autograder/run_autograder; not executed here
        shutil.copy(script, scratch / "run_autograder")
        os.chmod(scratch / "run_autograder", 0o755)
    shutil.copy(submission, scratch / "submission" / submission.name)
    (scratch / "submission_metadata.json").write_text(
        json.dumps(SUBMISSION_METADATA, indent=2) + "\n", encoding="utf-8"
    )


def _environment() -> dict[str, str]:
    """This process's environment as the autograder's: the interpreter's ``bin`` first on
    ``PATH`` (what ``mamba activate otter-env`` does), ``make grade``'s variables removed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATTENTION_COURSE_")}
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "/usr/local/bin:/usr/bin:/bin")])
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(zip_path, submission, scratch, timeout: float = 300) -> dict:
    """Grade ``submission`` with the autograder ``zip_path`` as Gradescope would; return the
    parsed ``results.json``.

    ``scratch`` becomes Gradescope's ``/autograder`` (see the module's docstring for what is
    imitated and what is not); the script's output is kept in ``scratch/results/stdout``.  The
    environment is this interpreter's (``sys.executable``): ``setup.sh`` is not run and nothing
    is installed.

    Raises ``ValueError`` when the zip or the submission is missing (or the zip is not a zip),
    ``RuntimeError`` when ``run_otter.py`` is not the one this imitates or the run wrote no
    ``results.json``, and ``TimeoutError`` after ``timeout`` seconds (the process group is
    killed, the kernel with it).  A run that fails after otter wrote ``results.json`` (otter
    writes its "Autograder Error" entry, then exits with an error) returns that file, as
    Gradescope would show it.
    """
    zip_path, submission = Path(zip_path), Path(submission)
    if not zip_path.is_file():
        raise ValueError(f"autograder zip not found: {zip_path}")
    if not zipfile.is_zipfile(zip_path):
        raise ValueError(f"not a zip file: {zip_path}")
    if not submission.is_file():
        raise ValueError(f"submission not found: {submission}")
    scratch = Path(scratch).resolve()
    _layout(zip_path.resolve(), submission.resolve(), scratch)
    run_otter = scratch / "source" / "run_otter.py"
    _check_run_otter(run_otter)
    launcher = _LAUNCHER.format(expected=AUTOGRADER_DIR)
    stdout_path = scratch / "results" / "stdout"
    with stdout_path.open("wb") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-c", launcher, str(scratch), str(run_otter)],
            cwd=scratch,
            env=_environment(),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the kernel otter started, too
            except (ProcessLookupError, PermissionError):
                pass
            process.wait()
    if returncode is None:
        raise TimeoutError(f"the autograder ran longer than {timeout} s (see {stdout_path})")
    results = scratch / "results" / "results.json"
    if not results.is_file():
        tail = stdout_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(
            f"the autograder exited with status {returncode} and wrote no results.json; "
            f"its output ends:\n{tail}"
        )
    return json.loads(results.read_text(encoding="utf-8"))
