"""A measured number patched on purpose makes a claim false, and the book build fails naming the
chapter and the claim (issue 24). The book here is a one-chapter Jupyter Book built as `make test`
builds the course (strict, fast mode, raise_on_error), around a real measurement: the compiled
memory of chapter 07's sliding-window attention, which grows linearly with the length."""

import os
import subprocess

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from attention_course import runtime
from test_publish import ROOT, load_tool

MEASURE = """\
from attention_course import efficient
from attention_course.claims import Claims
from attention_course.runtime import glue

claims = Claims("99_falsified")
memory = {{n: efficient.compiled_memory(
    lambda q, k, v: efficient.sliding_window_attention(q, k, v, 8),
    *[(n, 16)] * 3)["temp"] for n in (256, 1024)}}
growth = memory[1024] / memory[256] * {patch}  # the measurement, patched by {patch}
glue("window_memory_growth_4x", growth)
claims.check("window_memory_linear", growth <= 5,
             "local attention's memory grows at most 5x when n grows 4x",
             fast=True, growth=growth)
"""


def chapter(patch: float):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# A chapter\n\nMemory grew {glue:text}`window_memory_growth_4x:.1f` "
                                              "times when n grew 4 times."),
                nbformat.v4.new_code_cell(MEASURE.format(patch=patch))]
    return nb


def test_the_unpatched_measurement_holds(monkeypatch):
    monkeypatch.setenv(runtime.FAST_ENV, "1")
    nb = chapter(1)
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    text = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert "checked: local attention's memory grows at most 5x" in text


@pytest.mark.slow
def test_a_falsified_number_fails_the_strict_build_and_names_the_claim(tmp_path):
    book = load_tool("book")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    (tmp_path / "_config.yml").write_text(yaml.safe_dump({
        "title": "falsified", "only_build_toc_files": True,
        "execute": dict(config["execute"], execute_notebooks="force", cache=""),
    }))
    (tmp_path / "_toc.yml").write_text(yaml.safe_dump({"format": "jb-book", "root": "intro",
                                                       "chapters": [{"file": "99_falsified"}]}))
    (tmp_path / "intro.md").write_text("# Intro\n")
    nbformat.write(chapter(4), tmp_path / "99_falsified.ipynb")
    env = dict(os.environ, **{runtime.FAST_ENV: "1"}, **book.BOOK_ENV)
    result = subprocess.run(book._jupyter_book() + ["build", str(tmp_path), "-W", "-n", "--keep-going"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode != 0, log[-3000:]
    assert "ClaimError" in log and "chapter 99_falsified, claim 'window_memory_linear' does not hold" in log, \
        log[-3000:]
    assert "growth = " in log, "the failure shows the numbers"
