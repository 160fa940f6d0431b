"""Every chapter as coursework: nothing left out, and a forged class graded right.

The forged class of a chapter is made from its own notebook, whatever its exercises are: the
book's solutions, the untouched student copy, one exercise wrong, one that calls the course's
reference, a hostile one (an infinite loop, ``os._exit``, an output flood, a write outside its
folder, one exercise each) and a corrupt file.  CI grades chapters 05, 06 and 07;
``COURSEWORK_CHAPTERS=01,02,03,04,05,06,07`` grades them all (about a minute each on 2 cores).
"""

import ast
import csv
import json
import os
from pathlib import Path

import pytest

from attention_course import coursework
from attention_course.coursework import notebook, spec

from notebook_edits import with_cell

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))
GRADED = os.environ.get("COURSEWORK_CHAPTERS", "05,06,07").split(",")


def load(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


# --- nothing left out ----------------------------------------------------------------------


def test_every_chapter_notebook_has_a_chapter_file():
    assert sorted(coursework.CHAPTERS) == [p.name[:2] for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        assert coursework.chapter(path.name[:2]).notebook.name == path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_every_exercise_is_graded_or_listed_as_graded_by_hand(path):
    ch = coursework.chapter(path.name[:2])
    labels = notebook.exercise_labels(load(path))
    assert labels, "no exercise found: the directive pattern no longer matches"
    graded = {ex.label for ex in ch.exercises}
    left_out = [label for label in labels if label not in graded and label not in ch.manual]
    assert not left_out, f"{path.name}: neither graded nor graded by hand: {left_out}"
    unknown = (graded | set(ch.manual)) - set(labels)
    assert not unknown, f"{ch.name}'s chapter file names exercises the notebook lacks: {unknown}"


def test_a_new_exercise_without_a_chapter_entry_is_caught():
    nb = load(NOTEBOOKS[0])
    nb["cells"].append({"cell_type": "markdown", "id": "x", "metadata": {},
                        "source": "```{exercise} New\n:label: ex-new\n\nWrite it.\n```"})
    assert notebook.exercise_labels(nb)[-1] == "ex-new"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_the_graded_names_are_the_notebooks_check_calls(path):
    """Every graded exercise's check call is found, and names what the chapter file grades."""
    ch = coursework.chapter(path.name[:2])
    recorded, _ = spec.record(ch, load(path))
    for ex in ch.exercises:
        names = [r.name for r in recorded[ex.label]]
        if ex.parts:
            functions = [p.name for p in ex.parts if p.kind == "function"]
            assert set(functions) <= set(names) or not names, (ex.label, names, functions)
        else:
            assert names, f"{ex.label}: no grading.check call to derive its parts from"


# --- a forged class ------------------------------------------------------------------------



def solution(nb, label):
    return notebook.source(notebook.exercise_cells(nb)[label])


WRONG = '''
import numpy as _np


def _off(x):  # every output a little wrong
    if isinstance(x, tuple):
        return tuple(_off(v) for v in x)
    a = _np.asarray(x)
    if a.dtype == bool:
        return ~a
    return a * 1.5 + 1


_right_{name} = {name}


def {name}(*args, **kwargs):
    return _off(_right_{name}(*args, **kwargs))
'''


def cheat(nb, label, recorded):
    """The exercise's cell as the course's reference: the check cell's own reference
    expression, and the functions of the check cell it needs."""
    check = notebook.check_cell(nb, notebook.exercise_cells(nb)[label])
    tree = ast.parse(notebook.source(check))
    source = notebook.source(check)
    defs = [ast.get_source_segment(source, node) for node in tree.body
            if isinstance(node, ast.FunctionDef)]
    (call,) = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
               and getattr(n.func, "attr", None) == "check"][:1]
    reference = ast.get_source_segment(source, call.args[1])
    return "\n\n".join(defs + [f"{recorded.name} = {reference}\n"])


@pytest.fixture(scope="module")
def assignments(tmp_path_factory):
    out = tmp_path_factory.mktemp("assignments")
    return {n: coursework.build_assignment(n, out) for n in GRADED}


@pytest.mark.parametrize("number", GRADED)
def test_a_forged_class_is_graded_right(number, assignments, tmp_path):
    ch = coursework.chapter(number)
    assignment = assignments[number]
    source = load(ch.notebook)
    recorded, _ = spec.record(ch, source)
    labels = [ex.label for ex in ch.exercises]
    points = {ex.label: ex.points for ex in ch.exercises}
    full = sum(points.values())
    folder = tmp_path / "class"
    folder.mkdir()

    def write(name, nb):
        (folder / name).write_text(json.dumps(nb), encoding="utf-8")

    write("reference.ipynb", source)
    write("untouched.ipynb", load(assignment / "student" / f"{ch.name}.ipynb"))
    functions = {label: [r.name for r in recorded[label]] or [
        p.name for p in ch.exercise(label).parts if p.kind == "function"] for label in labels}
    wrong_label = [label for label in labels if functions[label]][-1]
    wrong_name = functions[wrong_label][0]
    write("wrong.ipynb", with_cell(source, wrong_label, solution(source, wrong_label)
                                   + WRONG.format(name=wrong_name)))
    cheat_label = next(label for label in labels
                       if recorded[label] and recorded[label][0].course)
    write("cheat.ipynb", with_cell(source, cheat_label,
                                   cheat(source, cheat_label, recorded[cheat_label][0])))
    outside = tmp_path / "outside.txt"
    loop, dies, floods, writes = labels[:4] if len(labels) >= 4 else [*labels[:3], labels[2]]
    cells = {loop: "while True:\n    pass\n", dies: "import os\nos._exit(3)\n",
             floods: "print('x' * 300_000_000)\n"}
    cells[writes] = cells.get(writes, "") + (  # with 3 exercises, in the flood's cell
        f"try:\n    open({str(outside)!r}, 'w').write('mine')\n"
        "except PermissionError:\n    pass\n")
    hostile = source
    for label in {floods, writes}:
        cells[label] += solution(source, label)
    for label, code in cells.items():
        hostile = with_cell(hostile, label, code)
    write("hostile.ipynb", hostile)
    (folder / "corrupt.ipynb").write_text(json.dumps(source)[:3000])

    coursework.grade(number, folder, assignment=assignment)

    with open(folder / "grades.csv", newline="", encoding="utf-8") as file:
        rows = {row["file"]: row for row in csv.DictReader(file)}

    def scores(name):
        return {label: float(rows[name][label]) for label in labels}

    assert scores("reference.ipynb") == points, rows["reference.ipynb"]["status"]
    assert rows["reference.ipynb"]["status"] == "ok"
    assert float(rows["reference.ipynb"]["total"]) == full
    assert set(scores("untouched.ipynb").values()) == {0.0}
    assert scores("wrong.ipynb") == {**points, wrong_label: 0.0}, rows["wrong.ipynb"]["status"]
    assert scores("cheat.ipynb") == {**points, cheat_label: 0.0}
    assert f"{cheat_label}: calls the course's reference" in rows["cheat.ipynb"]["status"]
    got = scores("hostile.ipynb")
    assert got[loop] == got[dies] == 0.0, rows["hostile.ipynb"]
    assert got[floods] == points[floods] and got[writes] == points[writes], rows["hostile.ipynb"]
    status = rows["hostile.ipynb"]["status"]
    assert f"{loop}: time limit" in status and f"{dies}: the kernel died" in status, status
    assert "output truncated" in status and "blocked" in status, status
    assert not outside.exists()
    assert set(scores("corrupt.ipynb").values()) == {0.0}
    assert rows["corrupt.ipynb"]["status"].startswith("not a notebook")
    for label in ch.manual:  # graded by hand: a blank column for the instructor
        assert rows["reference.ipynb"][f"{label} (by hand)"] == ""

    feedback = (folder / "feedback" / "wrong.md").read_text(encoding="utf-8")
    line = next(l for l in feedback.splitlines() if l.startswith(f"- \u2717 {wrong_label}"))
    assert f"{wrong_name}: hidden case 1 of" in line and "expected" in line, line
    assert "(" in line.split("hidden case 1 of", 1)[1]  # the case's arguments are named


# --- Run All on a student copy ---------------------------------------------------------------


def _unguarded_calls(source, names):
    """Calls of ``names`` that run when the cell runs: not inside a function, a lambda, an
    ``if`` (``if done:``) or a ``try``, and not an argument of a ``grading.`` call."""
    tree = ast.parse(notebook.python(source))
    found = []

    def visit(node, guarded):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            return
        if isinstance(node, (ast.If, ast.Try)):
            guarded = True
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and getattr(func.value, "id", None) == "grading":
                guarded = True
            elif isinstance(func, ast.Name) and func.id in names and not guarded:
                found.append(f"line {node.lineno}: {func.id}(...)")
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(tree, False)
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_run_all_on_a_student_copy_never_calls_an_unfinished_solution(path):
    """In ``make student``'s copy a solution is ``raise NotImplementedError``: a cell after its
    check that calls it must wait for the check to pass (``if done:``), or Run All stops there."""
    nb = load(path)
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    solutions = [c for c in cells if "# BEGIN SOLUTION" in notebook.source(c)]
    names = {n for c in solutions for n in notebook.defined_names(notebook.source(c))
             if n in notebook.solution_names(notebook.source(c))
             or f"def {n}(" in notebook.source(c)}
    stops = {c.get("id"): _unguarded_calls(notebook.source(c), names)
             for c in cells if c not in solutions}
    stops = {cell: calls for cell, calls in stops.items() if calls}
    assert not stops, f"{path.name}: Run All would stop at {stops}"


def test_the_run_all_rule_catches_chapter_07s_old_cell():
    old = ("grading.check(my_scores_bytes, lambda n: 4 * n * n, cases=[1024])\n"
           "print(my_scores_bytes(32_768) / 2**30)\n")
    assert _unguarded_calls(old, {"my_scores_bytes"}) == ["line 2: my_scores_bytes(...)"]
    guarded = "done = grading.check(my_scores_bytes, f)\nif done:\n    my_scores_bytes(1)\n"
    assert _unguarded_calls(guarded, {"my_scores_bytes"}) == []
