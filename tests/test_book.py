"""Checks of the book's structure that need no build: toc, notebooks, setup cells, config, citations.

The build itself (every notebook executed in fast mode, strict warnings) runs after the unit tests
in `make test` (tools/book.py fast).
"""

import json
import pathlib
import re

import pytest
import yaml

from attention_course import runtime

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def toc_files():
    files = [TOC["root"]]
    for part in TOC.get("parts", []):
        for chapter in part.get("chapters", []):
            files.append(chapter["file"])
            files += [s["file"] for s in chapter.get("sections", [])]
    return files


def resolve(entry: str) -> pathlib.Path | None:
    for suffix in (".md", ".ipynb"):
        path = ROOT / (entry + suffix)
        if path.exists():
            return path
    return None


def test_every_toc_entry_exists():
    missing = [f for f in toc_files() if resolve(f) is None]
    assert not missing, f"_toc.yml lists pages that do not exist: {missing}"


def test_every_notebook_is_in_the_toc_and_named_NN_slug():
    listed = set(toc_files())
    for nb in NOTEBOOKS:
        assert re.fullmatch(r"\d\d_[a-z_]+\.ipynb", nb.name), nb.name
        assert f"notebooks/{nb.stem}" in listed, f"{nb.name} is not in _toc.yml"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean_and_starts_with_the_setup_cell(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "a chapter notebook has code"
    for cell in code:
        assert not cell.get("outputs") and not cell.get("execution_count"), "commit notebooks without outputs"
    first = "".join(code[0]["source"])
    assert first == runtime.setup_cell_source(), "the first code cell must be runtime.setup_cell_source()"
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3"


def test_config_matches_the_design():
    assert CONFIG["repository"]["url"] == runtime.REPOSITORY_URL
    assert CONFIG["repository"]["branch"] == "main"
    assert CONFIG["only_build_toc_files"] is True
    for pattern in (".venv/*", "src/*", "tests/*", "_build/*"):
        assert pattern in CONFIG["exclude_patterns"]
    execute = CONFIG["execute"]
    assert execute["execute_notebooks"] == "cache" and execute["timeout"] >= 300
    assert execute["allow_errors"] is False
    assert CONFIG["launch_buttons"]["colab_url"].startswith("https://colab.research.google.com")
    assert {"sphinx_exercise", "sphinx_proof"} <= set(CONFIG["sphinx"]["extra_extensions"])
    assert {"amsmath", "dollarmath"} <= set(CONFIG["parse"]["myst_enable_extensions"])


def _bib_keys():
    from pybtex.database import parse_file

    return set(parse_file(str(ROOT / "book" / "references.bib")).entries.keys())


def test_bibliography_parses_and_primary_papers_have_arxiv_ids():
    from pybtex.database import parse_file

    db = parse_file(str(ROOT / "book" / "references.bib"))
    assert len(db.entries) >= 10
    for key in ("bahdanau2014neural", "graves2012sequence", "vaswani2017attention", "luong2015effective"):
        fields = db.entries[key].fields
        assert "eprint" in fields and re.fullmatch(r"\d{4}\.\d{4,5}", fields["eprint"]), key
        assert "year" in fields


def _sources():
    for page in toc_files():
        path = resolve(page)
        if path is None:
            continue
        if path.suffix == ".ipynb":
            nb = json.loads(path.read_text())
            yield path, "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
        else:
            yield path, path.read_text()


def test_every_citation_key_is_in_the_bibliography():
    keys = _bib_keys()
    cited = set()
    for path, text in _sources():
        for match in re.finditer(r"\{cite(?::[a-z]+)?\}`([^`]+)`", text):
            for key in match.group(1).split(","):
                key = key.strip()
                cited.add(key)
                assert key in keys, f"{path.name} cites {key!r}, which is not in book/references.bib"
    assert cited, "the book cites its sources"


def test_readme_python_version_matches_pyproject():
    import tomllib

    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = re.fullmatch(r">=\s*(3\.\d+)", requires.strip())
    assert minimum, f"requires-python is not a plain lower bound: {requires!r}"
    readme = (ROOT / "README.md").read_text()
    stated = set(re.findall(r"Python (3\.\d+)\+", readme))
    assert stated == {minimum.group(1)}, (
        f"README states Python {sorted(stated)}+, pyproject requires {requires}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_glued_figure_shows_once_in_the_book_and_in_its_cell_on_colab(path):
    """`runtime.glue` displays each figure in its cell (for Colab); the book places it with
    {glue:figure}, so the gluing cell must be tagged remove-output, or the book shows it twice."""
    nb = json.loads(path.read_text())
    prose = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    figures = set(re.findall(r"\{glue:figure\}\s+([A-Za-z_][A-Za-z0-9_]*)", prose))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for name in sorted(figures):
        gluing = [c for c in code if re.search(rf"glue\(\s*[\"']{name}[\"']", "".join(c["source"]))]
        assert len(gluing) == 1, f"{name}: glued by {len(gluing)} cells (write its name literally, once)"
        tags = set(gluing[0].get("metadata", {}).get("tags", []))
        assert tags & {"remove-output", "remove-cell"}, (
            f"the cell that glues the figure {name} must be tagged remove-output: the book places "
            f"it with {{glue:figure}}, and glue() also shows it in the cell")


def _shown_sources():
    """Every `show_source(obj)` of the notebooks, resolved to the package object it shows."""
    import importlib

    for path in NOTEBOOKS:
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            for match in re.finditer(r"show_source\(([A-Za-z_][\w.]*)((?:,[^)]*)?)\)", "".join(cell["source"])):
                head, *rest = match.group(1).split(".")
                obj = importlib.import_module(f"attention_course.{head}")
                for name in rest:
                    obj = getattr(obj, name)
                yield path.name, match.group(1), "docstring=False" not in match.group(2), obj


def test_source_shown_in_the_book_fits_its_column():
    """The book's column holds 80 characters of code (tools/browser.py measures it in Chromium)."""
    shown = list(_shown_sources())
    assert shown, "the chapters show the package's code"
    for notebook, name, docstring, obj in shown:
        code = runtime.show_source(obj, docstring=docstring).code
        wide = [line for line in code.splitlines() if len(line) > 80]
        assert not wide, f"{notebook}: show_source({name}) has lines over 80 characters: {wide[:2]}"
