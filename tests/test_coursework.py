"""End to end: chapters made into otter-grader assignments, folders of generated submissions
graded by the real autograder (``otter run``, one process per submission)."""

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from attention_course import coursework
from attention_course.coursework import grader

from notebook_edits import with_cell

ROOT = Path(__file__).resolve().parents[1]


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as file:
        return {row["file"]: row for row in csv.DictReader(file)}


def source_notebook(number):
    return json.loads(coursework.chapter(number).notebook.read_text(encoding="utf-8"))



def write(folder, name, nb):
    (folder / name).write_text(json.dumps(nb), encoding="utf-8")


def digest(folder):
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def assignments(tmp_path_factory):
    out = tmp_path_factory.mktemp("assignments")
    return {number: coursework.build_assignment(number, out) for number in ("01", "04")}


# --- the assignment ----------------------------------------------------------------------


def test_assignment_layout_and_student_copy(assignments):
    target = assignments["04"]
    assert target.name == "04_soft_search"
    student = json.loads((target / "student" / "04_soft_search.ipynb").read_text())
    nbformat.validate(nbformat.from_dict(student))
    text = json.dumps(student)
    assert "BEGIN SOLUTION" not in text and "solution-start" not in text
    assert "grading.check(" in text  # the visible checks stay
    assert "grading.keep_going(['my_pendant', 'my_verte', 'saved'])" in text
    # the first cell (Colab's install) is the chapter's own
    source = source_notebook("04")
    assert student["cells"][1]["source"] == source["cells"][1]["source"]
    tests = sorted(p.name for p in (target / "autograder" / "tests").iterdir())
    assert tests == [
        "q01_ex-search-score.py",
        "q02_ex-search-precompute.py",
        "q03_ex-search-mask.py",
        "q04_ex-search-predict.py",
    ]
    import zipfile

    with zipfile.ZipFile(target / "autograder" / "autograder.zip") as zf:
        names = set(zf.namelist())
    assert {"otter_config.json", "setup.sh", "run_autograder", "environment.yml"} <= names
    assert "tests/q04_ex-search-predict.py" in names
    # hidden: the expected values are not in the student's copy
    hidden = (target / "autograder" / "tests" / "q01_ex-search-score.py").read_text()
    blob = hidden.split('HIDDEN = (\n')[1].split('"')[1]
    assert blob[:40] not in text
    assert "ex-search-capacity" in (target / "EXERCISES.md").read_text()


def test_student_copy_runs_all_with_unfinished_exercises(assignments, tmp_path):
    """Run All on the untouched student copy (fast mode) reaches the end; every check says
    "not implemented yet"."""
    from nbclient import NotebookClient

    nb = nbformat.read(assignments["01"] / "student" / "01_bottleneck.ipynb", as_version=4)
    os.environ["ATTENTION_COURSE_FAST"] = "1"
    try:
        NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        os.environ.pop("ATTENTION_COURSE_FAST", None)
    out = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    for name in ("last_states", "masked_nll", "reverse_words"):
        assert f"\u2717 {name}: not implemented yet" in out
    assert "not implemented yet (loss is not defined)" in out or "not implemented yet" in out
    assert nb.cells[-1].cell_type == "markdown" or nb.cells[-1].get("execution_count")


# --- grading -----------------------------------------------------------------------------

CORRECT_REVERSE = (
    "def reverse_words(source, lengths):\n"
    "    T = source.shape[1]\n"
    "    t = jnp.arange(T)[None, :]\n"
    "    n = (lengths - 1)[:, None]\n"
    "    return jnp.take_along_axis(source, jnp.where(t < n, n - 1 - t, t), axis=1)\n"
)

# name: {label: cell source}, expected points per exercise, fragments of the status
BAD_01 = {
    "syntax_and_raises.ipynb": (
        {
            "ex-bottleneck-final-state": "def last_states(states, lengths):\n    return (\n",
            "ex-bottleneck-objective": "def masked_nll(logits, targets, mask):\n    return 1 / 0\n",
        },
        ["0", "0", "2", "2"],
        ["ex-bottleneck-final-state: syntax error (line 2)",
         "ex-bottleneck-objective: raised ZeroDivisionError on a hidden case"],
    ),
    "loop_and_exit.ipynb": (
        {
            "ex-bottleneck-final-state": "import sys\nsys.exit(1)\n",
            "ex-bottleneck-reverse": "while True:\n    pass\n",
        },
        ["0", "2", "0", "2"],
        ["ex-bottleneck-final-state: called exit", "ex-bottleneck-reverse: time limit (10 s)"],
    ),
    "os_exit.ipynb": (
        {"ex-bottleneck-objective": "import os\nos._exit(3)\n"},
        ["2", "0", "2", "4"],
        ["ex-bottleneck-objective: the kernel died"],
    ),
    "segfault_and_huge_output.ipynb": (
        {
            "ex-bottleneck-reverse": "print('x' * 300_000_000)\n" + CORRECT_REVERSE,
            "ex-bottleneck-objective": "import faulthandler\nfaulthandler._sigsegv()\n",
        },
        ["2", "0", "2", "4"],
        ["ex-bottleneck-objective: the kernel died", "output truncated"],
    ),
}


def reference_callers(nb):
    nb = with_cell(
        nb,
        "ex-bottleneck-final-state",
        "def last_states(states, lengths):\n    return rnn.state_at_length(states, lengths)\n",
    )
    nb = with_cell(nb, "ex-bottleneck-objective", "masked_nll = train.sequence_cross_entropy\n")
    return with_cell(
        nb,
        "ex-bottleneck-reverse",
        "from attention_course.bottleneck import reverse_source_words as reverse_words\n",
    )


def vandal(nb, targets):
    code = (
        "import pathlib, shutil\n"
        + "".join(f"pathlib.Path({str(p)!r}).write_text('hacked')\n" for p in targets["write"])
        + "".join(f"shutil.rmtree({str(p)!r})\n" for p in targets["delete"])
        + "def last_states(states, lengths):\n"
        "    return states[:, -1]\n"
    )
    return with_cell(nb, "ex-bottleneck-final-state", code)


def test_grade_chapter_01_good_wrong_and_bad_submissions(assignments, tmp_path):
    folder = tmp_path / "submissions"
    folder.mkdir()
    assignment = assignments["01"]
    source = source_notebook("01")
    student = json.loads((assignment / "student" / "01_bottleneck.ipynb").read_text())
    write(folder, "reference.ipynb", source)
    write(folder, "untouched.ipynb", student)
    write(
        folder,
        "wrong.ipynb",
        with_cell(
            source,
            "ex-bottleneck-objective",
            "def masked_nll(logits, targets, mask):\n"
            "    logp = jax.nn.log_softmax(logits, axis=-1)\n"
            "    picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]\n"
            "    return -picked.mean()  # counts the padding\n",
        ),
    )
    # the kernel runs as nobody when we are root (unless nobody cannot read the checkout)
    popen = grader._runner()[2]
    uid = popen.get("user", os.getuid())
    BAD_01["segfault_and_huge_output.ipynb"][0]["ex-bottleneck-reverse"] = (
        f"import os\nassert os.getuid() == {uid}, os.getuid()\n" + CORRECT_REVERSE
        + "print('x' * 300_000_000)\n"
    )
    for name, (cells, _, _) in BAD_01.items():
        nb = source
        for label, code in cells.items():
            nb = with_cell(nb, label, code)
        write(folder, name, nb)
    write(folder, "calls_reference.ipynb", reference_callers(source))
    (folder / "grades.csv").write_text("instructor's old gradebook\n")
    keep = tmp_path / "instructor" / "keep.txt"
    keep.parent.mkdir()
    keep.write_text("mine")
    write(
        folder,
        "vandal.ipynb",
        vandal(source, {"write": [folder / "grades.csv", keep],
                        "delete": [assignment / "autograder", folder]}),
    )
    (folder / "notes.ipynb").write_text("These are my notes, not a notebook.")
    (folder / "corrupt.ipynb").write_text(json.dumps(source)[:5000])
    before = digest(assignment)

    results = coursework.grade("01", folder, assignment=assignment)

    assert digest(assignment) == before  # the assignment is untouched
    assert keep.read_text() == "mine"
    rows = read_csv(folder / "grades.csv")
    assert len(rows) == len(results) == 11
    labels = ["ex-bottleneck-final-state", "ex-bottleneck-objective", "ex-bottleneck-reverse"]

    def points(name):
        return [rows[name][label] for label in labels] + [rows[name]["total"]]

    assert points("reference.ipynb") == ["2", "2", "2", "6"]
    assert rows["reference.ipynb"]["status"] == "ok"
    assert points("untouched.ipynb") == ["0", "0", "0", "0"]
    assert rows["untouched.ipynb"]["status"] == "ok"
    assert points("wrong.ipynb") == ["2", "0", "2", "4"]
    for name, (_, expected, fragments) in BAD_01.items():
        assert points(name) == expected, (name, rows[name])
        for fragment in fragments:
            assert fragment in rows[name]["status"], (name, rows[name]["status"])
    assert points("calls_reference.ipynb") == ["0", "0", "0", "0"]
    assert rows["calls_reference.ipynb"]["status"].count("calls the course's reference") == 3
    assert points("vandal.ipynb") == ["0", "2", "2", "4"]
    assert "ex-bottleneck-final-state: refused a write" in rows["vandal.ipynb"]["status"] or (
        "ex-bottleneck-final-state: its cell raised PermissionError" in rows["vandal.ipynb"]["status"]
    )
    for name in ("notes.ipynb", "corrupt.ipynb"):
        assert points(name) == ["0", "0", "0", "0"]
        assert rows[name]["status"].startswith("not a notebook (JSONDecodeError")

    feedback = {p.name for p in (folder / "feedback").iterdir()}
    assert feedback == {Path(name).stem + ".md" for name in rows}
    text = (folder / "feedback" / "wrong.md").read_text()
    assert "Score: 4 / 6" in text
    assert "\u2717 ex-bottleneck-objective (0/2): masked_nll: hidden case 1 of 5" in text
    assert "\u2713 ex-bottleneck-final-state (2/2)" in text
    assert "ex-bottleneck-halve, graded by hand" in text
    assert "switched off while grading" in (folder / "feedback" / "calls_reference.md").read_text()


def test_grade_chapter_04_twice_gives_the_same_csv(assignments, tmp_path):
    folder = tmp_path / "submissions"
    folder.mkdir()
    assignment = assignments["04"]
    source = source_notebook("04")
    student = json.loads((assignment / "student" / "04_soft_search.ipynb").read_text())
    write(folder, "a_reference.ipynb", source)
    write(folder, "b_untouched.ipynb", student)
    predicted = with_cell(
        source,
        "ex-search-predict",
        'pair = tasks.translate_sentence("the cat sleeps while the green car waits".split())\n'
        "my_pendant, my_verte = 3, 6\n",
    )
    predicted = with_cell(predicted, "ex-search-mask", "my_masked_softmax = pooling.masked_softmax\n")
    write(folder, "c_wrong_prediction_and_reference.ipynb", predicted)

    coursework.grade("04", folder, assignment=assignment)
    first = (folder / "grades.csv").read_text()
    rows = read_csv(folder / "grades.csv")
    labels = ["ex-search-score", "ex-search-precompute", "ex-search-mask", "ex-search-predict"]
    assert [rows["a_reference.ipynb"][l] for l in labels] == ["2", "2", "2", "1"]
    assert rows["a_reference.ipynb"]["total"] == "7"
    assert rows["b_untouched.ipynb"]["total"] == "0"
    assert rows["b_untouched.ipynb"]["status"] == "ok"
    row = rows["c_wrong_prediction_and_reference.ipynb"]
    assert [row[l] for l in labels] == ["2", "2", "0", "0"]
    assert row["status"] == "ex-search-mask: calls the course's reference (switched off while grading)"
    feedback = (folder / "feedback" / "c_wrong_prediction_and_reference.md").read_text()
    assert "\u2717 ex-search-predict (0/1): my_verte: not the expected answer (got 6)" in feedback

    coursework.grade("04", folder, assignment=assignment)
    assert (folder / "grades.csv").read_text() == first


def test_cli_usage(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "attention_course.coursework", "grade", "01", str(tmp_path / "no")],
        capture_output=True, text=True,
    )
    assert done.returncode == 2 and "is not a folder" in done.stderr
    with pytest.raises(ValueError, match="CHAPTER"):
        coursework.chapter("09")


def test_without_root_the_audit_hook_refuses_writes_outside(assignments, tmp_path, monkeypatch):
    """Grading as an ordinary user (no switch to nobody): the kernel's audit hook alone keeps
    the instructor's files, and the other exercises are still graded."""
    monkeypatch.setattr(grader, "_RUNNER", {"python": sys.executable, "env": {}, "popen": {}})
    folder = tmp_path / "submissions"
    folder.mkdir()
    assignment = assignments["01"]
    keep = tmp_path / "keep.txt"
    keep.write_text("mine")
    (folder / "grades.csv").write_text("old")
    source = source_notebook("01")
    nb = vandal(source, {"write": [keep, folder / "grades.csv"], "delete": [assignment]})
    nb = with_cell(
        nb,
        "ex-bottleneck-objective",
        "import subprocess\nsubprocess.run(['rm', '-rf', " + repr(str(assignment)) + "])\n",
    )
    write(folder, "vandal.ipynb", nb)
    before = digest(assignment)
    coursework.grade("01", folder, assignment=assignment)
    assert keep.read_text() == "mine" and digest(assignment) == before
    row = read_csv(folder / "grades.csv")["vandal.ipynb"]
    assert [row["ex-bottleneck-final-state"], row["ex-bottleneck-objective"]] == ["0", "0"]
    assert row["ex-bottleneck-reverse"] == "2"
    assert "blocked" in row["status"]
