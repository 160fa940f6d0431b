"""Chapter 05's autograder.zip run as Gradescope runs it (:mod:`.coursework.gradescope`, in a
scratch copy of its layout) gives the scores that ``make grade`` (``otter run``) gives."""

import csv
import json
from pathlib import Path

import pytest

from attention_course import coursework
from attention_course.coursework import gradescope

from notebook_edits import with_cell

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "05"
POINTS = {
    "ex-luong-general": 2,
    "ex-luong-window": 2,
    "ex-luong-position": 2,
    "ex-luong-reverse": 2,
}
EXPECTED_TOTAL = {"full.ipynb": 8, "zero.ipynb": 0, "wrong_general.ipynb": 6}

# well-shaped ([B, S]) but wrong: h @ W_a is [B, m], hbar [B, S, m]
WRONG_GENERAL = '''\
def my_general_score(h, hbar, W_a):
    return (h @ W_a).sum(-1)[:, None] * hbar.sum(-1)
'''



@pytest.fixture(scope="module")
def assignment(tmp_path_factory):
    return coursework.build_assignment(CHAPTER, tmp_path_factory.mktemp("assignments"))


@pytest.fixture(scope="module")
def submissions(assignment, tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    book = json.loads((ROOT / "notebooks" / "05_luong.ipynb").read_text(encoding="utf-8"))
    student = (assignment / "student" / "05_luong.ipynb").read_text(encoding="utf-8")
    (folder / "full.ipynb").write_text(json.dumps(book), encoding="utf-8")
    (folder / "zero.ipynb").write_text(student, encoding="utf-8")
    wrong = with_cell(book, "ex-luong-general", WRONG_GENERAL)
    (folder / "wrong_general.ipynb").write_text(json.dumps(wrong), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """Where the Gradescope-style runs happen: ``scratch/<stem>/`` for each submission."""
    return tmp_path_factory.mktemp("gradescope")


@pytest.fixture(scope="module")
def on_gradescope(assignment, submissions, scratch):
    """``file -> results.json`` of the Gradescope-style run, each in its own scratch folder
    (run before ``make grade`` writes its files into the submissions folder)."""
    zip_path = assignment / "autograder" / "autograder.zip"
    return {
        name: gradescope.run(zip_path, submissions / name, scratch / Path(name).stem)
        for name in EXPECTED_TOTAL
    }


@pytest.fixture(scope="module")
def graded(assignment, submissions, on_gradescope):
    """``(results by file, grades.csv rows by file)`` of ``make grade`` on the folder."""
    results = coursework.grade(CHAPTER, submissions, assignment=assignment)
    with (submissions / "grades.csv").open(newline="", encoding="utf-8") as file:
        rows = {row["file"]: row for row in csv.DictReader(file)}
    return {r.file: r for r in results}, rows


def graded_tests(results_json):
    """``name -> (score, max_score)`` of results.json's scored entries (not "Public Tests")."""
    return {
        t["name"]: (float(t["score"]), float(t["max_score"]))
        for t in results_json["tests"]
        if "max_score" in t
    }


def test_chapter_points_are_what_this_test_expects():
    assert {ex.label: ex.points for ex in coursework.chapter(CHAPTER).exercises} == POINTS


@pytest.mark.parametrize("name", sorted(EXPECTED_TOTAL))
def test_gradescope_scores_equal_make_grade(name, on_gradescope, graded):
    results, rows = graded
    tests = graded_tests(on_gradescope[name])
    assert sorted(tests) == sorted(POINTS)
    assert {label: possible for label, (_, possible) in tests.items()} == POINTS
    row = rows[name]
    for label in POINTS:
        assert tests[label][0] == float(row[label]), label
        assert tests[label][0] == results[name].scores[label], label
    total = sum(score for score, _ in tests.values())
    assert on_gradescope[name].get("score", total) == total
    assert total == float(row["total"]) == EXPECTED_TOTAL[name]


def test_wrong_general_fails_only_its_exercise_and_says_which_function(on_gradescope):
    results_json = on_gradescope["wrong_general.ipynb"]
    tests = graded_tests(results_json)
    assert tests["ex-luong-general"] == (0.0, 2.0)
    assert all(tests[label] == (2.0, 2.0) for label in POINTS if label != "ex-luong-general")
    failed = next(t for t in results_json["tests"] if t["name"] == "ex-luong-general")
    assert "my_general_score" in failed["output"]


def test_layout_is_gradescopes(on_gradescope, scratch):
    full = scratch / "full"
    assert (full / "source" / "run_otter.py").is_file()
    assert (full / "run_autograder").is_file()
    assert (full / "submission" / "full.ipynb").is_file()
    results = json.loads((full / "results" / "results.json").read_text())
    assert results == on_gradescope["full.ipynb"]
    assert (full / "results" / "stdout").is_file()
    metadata = json.loads((full / "submission_metadata.json").read_text())
    assert metadata["users"] and "assignment" in metadata


def test_missing_zip_or_submission_is_a_value_error(assignment, tmp_path):
    zip_path = assignment / "autograder" / "autograder.zip"
    student = assignment / "student" / "05_luong.ipynb"
    with pytest.raises(ValueError, match="autograder zip not found"):
        gradescope.run(tmp_path / "nope.zip", student, tmp_path / "scratch")
    with pytest.raises(ValueError, match="submission not found"):
        gradescope.run(zip_path, tmp_path / "nope.ipynb", tmp_path / "scratch")
    with pytest.raises(ValueError, match="not a zip file"):
        gradescope.run(student, student, tmp_path / "scratch")
