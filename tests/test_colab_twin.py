"""The Colab twin's own checks (tools/colab.py), on small notebooks made here: each can fail."""

import base64
import importlib.util
import json
import pathlib

import pytest

from attention_course import runtime

ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("colab_twin", ROOT / "tools" / "colab.py")
twin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(twin)

PNG_A = base64.b64encode(b"\x89PNG first").decode()
PNG_B = base64.b64encode(b"\x89PNG second").decode()


def notebook(*cells):
    return {"cells": list(cells), "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def markdown(text):
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def code(source, outputs=()):
    return {"cell_type": "code", "metadata": {}, "source": source, "outputs": list(outputs),
            "execution_count": None}


def image(data):
    return {"output_type": "display_data", "data": {"image/png": data, "text/plain": "<Figure>"},
            "metadata": {}}


def test_the_package_file_names_its_source_and_pins_colabs_kernel():
    text = twin.PACKAGES.read_text()
    assert "googlecolab/backend-info" in text and "2026-08-19" in text
    pins = twin.read_packages()
    assert pins["ipython"] == "7.34.0" and pins["jax"] == "0.7.2" and pins["flax"] == "0.11.2"
    assert "sacrebleu" not in pins and "attention-course" not in pins, "the setup cell must add these"


def test_pyproject_lower_bounds_are_the_twins_versions():
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    bounds = dict(d.split(">=") for d in deps)
    pins = twin.read_packages()
    for name in ("jax", "flax", "optax"):
        assert bounds[name] == pins[name], f"{name}: the lower bound is the version the twin tests"
    assert "ipython" not in bounds, "Colab must keep its IPython: the course may not bound it"


def test_glued_figures_and_numbers_are_read_from_the_prose():
    nb = notebook(markdown("```{glue:figure} bleu_by_length\n:alt: x\n```\nand {glue:text}`aer:.2f`"),
                  markdown(":::{glue:figure} alignments\n:::"))
    assert twin.glued_figures(nb) == ["alignments", "bleu_by_length"]
    assert twin.glued_numbers(nb) == ["aer"]


def test_outputs_summary_counts_images_and_finds_a_figure_shown_twice():
    nb = notebook(code("a", [image(PNG_A)]), code("b", [image(PNG_B), image(PNG_A)]),
                  code("c", [{"output_type": "stream", "name": "stdout", "text": "aer = 0.04\n"}]))
    summary = twin.outputs_summary(nb)
    assert summary["images"] == 3
    assert summary["duplicates"] == ["cell 1 repeats the image of cell 0"]
    assert "aer = 0.04" in summary["text"]


def test_the_setup_cell_is_pointed_at_the_checkout_and_anything_else_is_refused():
    nb = notebook(markdown("# 01"), code(runtime.setup_cell_source()))
    cell = twin.colab_cell(nb)
    assert f'"attention-course @ file://{twin.SOURCE}"' in cell["source"]
    assert "git+" not in cell["source"].split("%pip", 1)[1]
    with pytest.raises(SystemExit, match="setup_cell_source"):
        twin.colab_cell(notebook(code("print('hello')")))


def test_every_chapter_notebook_goes_through_the_twin():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        twin.colab_cell(json.loads(path.read_text()))
