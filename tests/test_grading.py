"""Tests of attention_course.grading: the verdicts of the checks and the student copies."""

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from attention_course import grading
from attention_course.grading import check, check_raises, check_value

# --- check ---------------------------------------------------------------------------------


def reference_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def random_scores(rng):
    return (rng.normal(size=(3, 4)),)


def verdict(capsys):
    out = capsys.readouterr().out
    assert out.count("\n") == 1, f"expected one line, got {out!r}"
    return out.strip()


def test_check_passes_fixed_and_random_cases(capsys):
    def student(x):
        return jnp.exp(x) / jnp.exp(x).sum(axis=-1, keepdims=True)

    fixed = [(np.zeros((2, 3)),), {"x": np.array([[1.0, 2.0]])}]
    assert check(student, reference_softmax, fixed, make_case=random_scores, name="softmax")
    assert verdict(capsys) == "\u2713 softmax: all 7 cases pass"


def test_check_accepts_make_case_as_cases(capsys):
    assert check(reference_softmax, reference_softmax, random_scores, n_random=3)
    assert verdict(capsys) == "\u2713 reference_softmax: all 3 cases pass"


def test_check_reports_shape_mismatch_with_case_number(capsys):
    fixed = [(np.zeros((2, 3)),), (np.zeros((2, 3)),)]
    ok = check(lambda x: reference_softmax(x).T, reference_softmax, [], make_case=random_scores)
    assert not ok
    assert verdict(capsys) == (
        "\u2717 <lambda>: case 1 (random #1): expected shape (3, 4), got (4, 3)"
    )
    check(lambda x: x.T, lambda x: x, fixed, make_case=random_scores, name="t")
    assert verdict(capsys) == "\u2717 t: case 1: expected shape (2, 3), got (3, 2)"

    def square_only_fixed(x):
        return x if x.shape == (2, 3) else x.T

    check(square_only_fixed, lambda x: x, fixed, make_case=random_scores, name="t")
    assert verdict(capsys) == "\u2717 t: case 3 (random #1): expected shape (3, 4), got (4, 3)"


def test_check_reports_largest_error_and_its_index(capsys):
    x = np.array([[0.1, 0.5, 0.2], [0.2, 0.9, 0.4]])

    def student(x):
        y = x.copy()
        y[1, 2] += 0.3
        y[0, 0] += 0.1
        return y

    assert not check(student, lambda x: x, [(x,)], name="shift")
    assert verdict(capsys) == (
        "\u2717 shift: case 1: max abs error 0.3 at index (1, 2) (expected 0.4, got 0.7)"
    )


def test_check_tolerances():
    assert check(lambda x: x + 1e-7, lambda x: x, [(np.ones(3),)])
    assert not check(lambda x: x + 1e-3, lambda x: x, [(np.ones(3),)])
    assert check(lambda x: x + 1e-3, lambda x: x, [(np.ones(3),)], atol=1e-2)


def test_check_catches_student_exceptions(capsys):
    def broken(x):
        raise NotImplementedError("your code here")

    assert check(broken, reference_softmax, random_scores) is False
    assert verdict(capsys) == (
        "\u2717 broken: not implemented yet"
    )


def test_check_inputs_are_copied_for_each_function():
    def mutating(x):
        x *= 0  # in place: must not change what the reference sees
        return x

    assert not check(mutating, lambda x: x, [(np.ones(3),)])
    assert check(lambda x: x * 2, lambda x: 2 * x, [(np.ones(3),)])


def test_check_expects_the_same_exception_as_the_reference(capsys):
    def reference(x):
        if x < 0:
            raise ValueError("x: expected >= 0")
        return np.sqrt(x)

    def lenient(x):
        return np.sqrt(abs(x))

    assert check(reference, reference, [(4.0,), (-1.0,)])
    capsys.readouterr()
    assert not check(lenient, reference, [(4.0,), (-1.0,)], name="sqrt")
    assert verdict(capsys) == (
        "\u2717 sqrt: case 2: expected ValueError, got no exception (returned 1)"
    )


def test_check_compares_structures(capsys):
    def reference(x):
        return {"links": {(0, 1), (1, 0)}, "weights": (x, float(x.sum())), "n": 2}

    assert check(reference, reference, [(np.ones(2),)])
    capsys.readouterr()

    def wrong_links(x):
        out = reference(x)
        out["links"] = {(0, 1), (1, 1)}
        return out

    assert not check(wrong_links, reference, [(np.ones(2),)], name="align")
    assert verdict(capsys) == (
        "\u2717 align: case 1: ['links']: sets differ: missing {(1, 0)}, unexpected {(1, 1)}"
    )

    def wrong_sum(x):
        out = reference(x)
        out["weights"] = [x, 3.0]  # a list may stand for a tuple
        return out

    assert not check(wrong_sum, reference, [(np.ones(2),)], name="align")
    assert verdict(capsys) == (
        "\u2717 align: case 1: ['weights'][1]: expected 2, got 3 (abs error 1)"
    )


def test_check_without_cases_is_an_error():
    with pytest.raises(ValueError, match="^cases:"):
        check(abs, abs, [])


# --- check_value ---------------------------------------------------------------------------


@dataclass
class Pair:
    a: float
    b: np.ndarray


@pytest.mark.parametrize(
    ("got", "expected", "fragment"),
    [
        (np.zeros((4, 5)), np.zeros((5, 4)), "expected shape (5, 4), got (4, 5)"),
        (np.array([1, 2, 3]), np.array([1, 2, 4]), "1 of 3 entries differ, e.g. at index (2,)"),
        (np.array([True, False]), np.array([True, True]), "at index (1,)"),
        (np.array([np.nan, 1.0]), np.array([0.0, 1.0]), "max abs error inf at index (0,)"),
        (0.5, 0.7, "expected 0.7, got 0.5"),
        ("0.7", 0.7, "expected a number"),
        (np.ones(2), 1.0, "expected a number, got an array of shape (2,)"),
        ((1, 2), (1, 2, 3), "expected 3 items, got 2"),
        (None, (1,), "expected a tuple of 1, got NoneType"),
        ({"a": 1}, {"b": 1}, "expected keys"),
        (True, False, "expected False, got True"),
        ("cat", "chat", "expected 'chat', got 'cat'"),
        (Pair(1.0, np.ones(2)), Pair(1.0, np.zeros(2)), ".b: max abs error 1"),
        ([(0, 1)], {(0, 1)}, "expected a set, got list"),
    ],
)
def test_check_value_failures(capsys, got, expected, fragment):
    assert check_value(got, expected, name="x") is False
    line = verdict(capsys)
    assert line.startswith("\u2717 x: ") and fragment in line


@pytest.mark.parametrize(
    ("got", "expected"),
    [
        (jnp.ones((2, 3)), np.ones((2, 3))),
        (jnp.full((2,), 0.5, dtype=jnp.bfloat16), np.full((2,), 0.5)),
        (np.array([np.nan, 1.0]), np.array([np.nan, 1.0])),
        ([1.0, 2.0], np.array([1.0, 2.0])),
        (jnp.float32(0.1), 0.1),
        (np.int64(3), 3),
        (float("nan"), float("nan")),
        ({(0, 1)}, frozenset({(0, 1)})),
        (Pair(1.0, np.ones(2)), Pair(1.0 + 1e-9, np.ones(2))),
        (None, None),
        ("chat", "chat"),
    ],
)
def test_check_value_passes(capsys, got, expected):
    assert check_value(got, expected, name="x") is True
    assert verdict(capsys) == "\u2713 x: matches"


# --- check_raises --------------------------------------------------------------------------


def needs_positive(x):
    if x <= 0:
        raise ValueError(f"x: expected a positive number, got {x}")
    return x


def test_check_raises(capsys):
    assert check_raises(needs_positive, (-1,))
    assert verdict(capsys) == (
        "\u2713 needs_positive: raises ValueError: x: expected a positive number, got -1"
    )
    assert not check_raises(needs_positive, (1,))
    assert verdict(capsys) == (
        "\u2717 needs_positive: expected ValueError, got no exception (returned 1)"
    )
    assert not check_raises(needs_positive, {"x": "a"}, name="typed")
    assert verdict(capsys).startswith("\u2717 typed: expected ValueError, raised TypeError:")
    assert check_raises(needs_positive, (0,), match="^x:")
    assert not check_raises(needs_positive, (0,), match="mask")
    assert "does not mention 'mask'" in capsys.readouterr().out.splitlines()[-1]
    assert check_raises(needs_positive, (0,), exception=(TypeError, ValueError))


# --- strip_solutions -----------------------------------------------------------------------

SOLVED = """\
import numpy as np

def masked_mean(x, mask):
    \"\"\"Mean of x where mask is True.\"\"\"
    # BEGIN SOLUTION
    total = (x * mask).sum()
    return total / mask.sum()
    # END SOLUTION

# BEGIN SOLUTION
answer = 42
# END SOLUTION
print("done")
"""

STUDENT = """\
import numpy as np

def masked_mean(x, mask):
    \"\"\"Mean of x where mask is True.\"\"\"
    raise NotImplementedError("your code here")

raise NotImplementedError("your code here")
print("done")
"""


def test_strip_solutions_keeps_indentation_and_everything_else():
    assert grading.strip_solutions(SOLVED) == STUDENT
    assert grading.strip_solutions("x = 1") == "x = 1"
    assert grading.strip_solutions("") == ""


def test_strip_solutions_end_marker_on_last_line_and_crlf():
    assert grading.strip_solutions("  # BEGIN SOLUTION\n  x = 1\n  # END SOLUTION") == (
        '  raise NotImplementedError("your code here")'
    )
    assert grading.strip_solutions("a\r\n# BEGIN SOLUTION\r\nb\r\n# END SOLUTION\r\nc\r\n") == (
        'a\r\nraise NotImplementedError("your code here")\r\nc\r\n'
    )


def test_stripped_code_raises_not_implemented():
    namespace = {}
    code = grading.strip_solutions(
        "def f(x):\n    # BEGIN SOLUTION\n    return 2 * x\n    # END SOLUTION\n"
    )
    exec(code, namespace)
    with pytest.raises(NotImplementedError, match="your code here"):
        namespace["f"](1)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION\n",
            r"line 2: .*opened on line 1 \(nested",
        ),
        ("x = 1\n# END SOLUTION\n", r"line 2: '# END SOLUTION' without"),
        ("x = 1\n\n  # BEGIN SOLUTION\nx = 2\n", r"line 3: .*never closed"),
    ],
)
def test_strip_solutions_rejects_broken_markers(source, message):
    with pytest.raises(ValueError, match=message):
        grading.strip_solutions(source)


# --- student_notebook and the CLI ----------------------------------------------------------


def make_notebook():
    def code(source, tags=(), outputs=True):
        return {
            "cell_type": "code",
            "execution_count": 3 if outputs else None,
            "metadata": {"tags": list(tags)} if tags else {},
            "outputs": [{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}]
            if outputs
            else [],
            "source": source,
        }

    def markdown(source, tags=()):
        return {
            "cell_type": "markdown",
            "metadata": {"tags": list(tags)} if tags else {},
            "source": source,
        }

    nb = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "cells": [
            markdown("# Chapter\n"),
            code(SOLVED.splitlines(keepends=True)),  # a list of lines, as on disk
            code("check(masked_mean, reference, cases)"),
            code("full_solution = 1\n", tags=["solution", "hide-input"]),
            markdown("````{solution} ex-mean\n:class: dropdown\n```python\nx = 1\n```\n````\n"),
            markdown(
                "```{exercise}\n:label: ex-mean\nWrite it.\n```\n\n"
                ":::{solution} ex-mean\n:class: dropdown\nUse a mask.\n:::\nAfter.\n"
            ),
            markdown("Just prose.", tags=["solution"]),
        ],
    }
    for k, cell in enumerate(nb["cells"]):
        cell["id"] = f"cell-{k}"
    return nb


def test_student_notebook():
    nb = make_notebook()
    original = json.dumps(nb, sort_keys=True)
    student = grading.student_notebook(nb)
    assert json.dumps(nb, sort_keys=True) == original  # the input is not modified
    cells = student["cells"]
    assert [c["cell_type"] for c in cells] == ["markdown", "code", "code", "markdown"]
    assert "".join(cells[1]["source"]) == STUDENT
    assert isinstance(cells[1]["source"], list)  # the source keeps its form
    for cell in cells[1:3]:
        assert cell["outputs"] == [] and cell["execution_count"] is None
    assert cells[3]["source"] == "```{exercise}\n:label: ex-mean\nWrite it.\n```\n\nAfter.\n"
    assert student["metadata"] == nb["metadata"]


def test_student_notebook_removes_gated_solutions_and_keeps_their_code_cells():
    nb = make_notebook()
    gated = [
        {"cell_type": "markdown", "metadata": {}, "id": "g0",
         "source": "```{exercise}\n:label: ex-g\nDo it.\n```\n"},
        {"cell_type": "markdown", "metadata": {}, "id": "g1",
         "source": "```{solution-start} ex-g\n:class: dropdown\n```\n"},
        {"cell_type": "code", "metadata": {}, "id": "g2", "execution_count": None, "outputs": [],
         "source": "def f():\n    # BEGIN SOLUTION\n    return 1\n    # END SOLUTION\n"},
        {"cell_type": "markdown", "metadata": {}, "id": "g3", "source": "Secret prose.\n"},
        {"cell_type": "markdown", "metadata": {}, "id": "g4",
         "source": "Why it works.\n\n```{solution-end}\n```\n\nNext exercise.\n"},
        {"cell_type": "code", "metadata": {}, "id": "g5", "execution_count": None, "outputs": [],
         "source": "check(f)"},
    ]
    nb["cells"] = gated
    cells = grading.student_notebook(nb)["cells"]
    assert [c["id"] for c in cells] == ["g0", "g2", "g4", "g5"]
    assert "NotImplementedError" in "".join(cells[1]["source"])
    assert cells[2]["source"].strip() == "Next exercise."
    text = json.dumps(cells)
    assert "Secret" not in text and "Why it works" not in text and "solution-" not in text


def test_student_notebook_is_valid_nbformat():
    nbformat = pytest.importorskip("nbformat")
    student = grading.student_notebook(make_notebook())
    nbformat.validate(nbformat.from_dict(student))


def test_student_notebook_names_the_broken_cell():
    nb = make_notebook()
    nb["cells"][2]["source"] = "x = 1\n# BEGIN SOLUTION\n"
    with pytest.raises(ValueError, match=r"^cells\[2\]: source: line 2:"):
        grading.student_notebook(nb)


def test_round_trip_through_files_and_cli(tmp_path, capsys):
    src, out = tmp_path / "notebooks", tmp_path / "student"
    src.mkdir()
    (src / "01_demo.ipynb").write_text(json.dumps(make_notebook(), indent=1), encoding="utf-8")
    (src / "notes.md").write_text("not a notebook")
    assert grading.main(["strip", str(src), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "01_demo.ipynb" in printed and "2 solution regions stripped" in printed
    assert sorted(p.name for p in out.iterdir()) == ["01_demo.ipynb"]
    written = json.loads((out / "01_demo.ipynb").read_text(encoding="utf-8"))
    assert written == grading.student_notebook(make_notebook())
    # stripping a student copy again changes nothing
    assert grading.student_notebook(written) == written


def test_cli_refuses_to_overwrite_the_sources(tmp_path, capsys):
    (tmp_path / "a.ipynb").write_text(json.dumps(make_notebook()))
    assert grading.main(["strip", str(tmp_path), str(tmp_path)]) == 2
    assert "must differ" in capsys.readouterr().err


def test_cli_as_a_module(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.ipynb").write_text(json.dumps(make_notebook()))
    result = subprocess.run(
        [sys.executable, "-m", "attention_course.grading", "strip", str(src), str(tmp_path / "o")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "wrote" in result.stdout and (tmp_path / "o" / "a.ipynb").exists()


# --- check_digest ----------------------------------------------------------------------------


def test_check_digest_recognises_the_answer_without_showing_it(capsys):
    answer = grading.digest(5_017_600)
    assert "5017600" not in answer and len(answer) == 16
    assert grading.digest(5_017_600.0) == answer == grading.digest(np.int64(5_017_600))
    assert grading.check_digest(49 * 50 * 64 * 32, answer, name="saved")
    assert verdict(capsys) == "\u2713 saved: matches"
    assert not grading.check_digest(50 * 50 * 64 * 32, answer, name="saved")
    assert verdict(capsys) == "\u2717 saved: not the expected answer (got 5120000)"
    assert grading.digest(0.1 + 0.2) == grading.digest(0.3)
    assert grading.digest("verte") != grading.digest("vert")


def test_student_copies_of_the_chapters_keep_going_past_unfinished_exercises(tmp_path):
    """``make student``: each chapter's copy has the keep-going cell right after its import
    cell, watching the names its top-level solutions define; a notebook without the course's
    import cell gets none (keep_going=True refuses it)."""
    root = Path(__file__).resolve().parents[1] / "notebooks"
    assert grading.main(["strip", str(root), str(tmp_path)]) == 0
    for path in sorted(tmp_path.glob("0*.ipynb")):
        code = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        assert code[2]["id"] == "keep-going", path.name
        assert "grading.keep_going([" in "".join(code[2]["source"]), path.name
    plain = {"cells": [{"cell_type": "code", "id": "a", "metadata": {}, "outputs": [],
                        "execution_count": None, "source": "x = 1"}],
             "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    assert len(grading.student_notebook(plain)["cells"]) == 1
    with pytest.raises(ValueError, match="import cell"):
        grading.student_notebook(plain, keep_going=True)
