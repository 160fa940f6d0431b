"""Reading a chapter notebook: its exercises, solution cells, check cells and import cell."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # the checkout (src layout)

_GATE = re.compile(r"^\s*(`{3,}|:{3,})\{solution-(start|end)\}\s*(\S*)", re.MULTILINE)


def source(cell) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def exercise_cells(nb: dict) -> dict[str, dict]:
    """``label -> the code cell of its gated solution`` (the one with ``# BEGIN SOLUTION``)."""
    found: dict[str, dict] = {}
    label = None
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            for fence, kind, name in _GATE.findall(source(cell)):
                label = name if kind == "start" else None
        elif label and "# BEGIN SOLUTION" in source(cell) and label not in found:
            found[label] = cell
    return found


def imports_cell(nb: dict) -> dict:
    """The chapter's import cell: its second code cell (the first is the setup cell)."""
    return [cell for cell in nb["cells"] if cell["cell_type"] == "code"][1]


def defined_names(source: str) -> list[str]:
    """Top-level names a cell defines (def, class, assignment), in order."""
    try:
        tree = ast.parse(python(source))
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


def python(source: str) -> str:
    """Cell source as Python (IPython magics and shell escapes transformed away)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001
        return source


def solution_names(source: str) -> list[str]:
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
                names += defined_names("\n".join(region))
            inside = False
            continue
        if inside:
            region.append(line)
    return names



# the label of every exercise directive, fenced by ``` or ::: (3 or more), plain or gated
_EXERCISE = re.compile(
    r"^\s*(`{3,}|:{3,})\{exercise(?:-start)?\}[^\n]*\n(?:\s*:[a-z-]+:[^\n]*\n)*?\s*:label:\s*(\S+)",
    re.MULTILINE,
)


def exercise_labels(nb: dict) -> list[str]:
    """The label of every exercise of the notebook, in order."""
    labels: list[str] = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            labels += [label for _, label in _EXERCISE.findall(source(cell))]
    return labels


def check_cell(nb: dict, solution: dict) -> dict | None:
    """The check cell of a solution cell: the first code cell after it that calls ``grading.``
    (before the next exercise), or None."""
    cells = nb["cells"]
    for cell in cells[cells.index(solution) + 1:]:
        if cell["cell_type"] == "markdown" and _EXERCISE.search(source(cell)):
            return None
        if cell["cell_type"] == "code" and "grading." in source(cell):
            return cell
    return None
