"""A measured number patched on purpose makes a claim false, and the book build fails naming the
chapter and the claim (issue 24). The book here is a one-chapter Jupyter Book built as `make test`
builds the course (strict, fast mode, raise_on_error), around a real measurement: the compiled
memory of chapter 07's sliding-window attention, which grows linearly with the length.

Also the seed study's reading of what an executed notebook glued with myst-nb (tools/seeds.py).
Both need the book's own packages (Jupyter Book, myst-nb), so the Colab twin leaves this file out."""

import json
import os
import subprocess

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from attention_course import claims as claims_module
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


# -- the seed study reads what a notebook glued ------------------------------------------------------


def test_seed_study_reads_glued_numbers_and_claims_from_an_executed_notebook(tmp_path):
    from nbclient import NotebookClient

    seeds = load_tool("seeds")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(
        "from attention_course.runtime import glue\n"
        "from attention_course.claims import Claims\n"
        "claims = Claims('99_test')\n"
        "glue('bleu', 12.5)\nglue('buckets', 3)\nglue('curve', [1.0, 2.0])\n"
        "claims.check('positive', 12.5 > 0, 'BLEU is positive')\n"
        "claims.ratio('speed', 0.5, 1.0)")]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    values = seeds.glued(nb)
    assert values["bleu"] == 12.5 and values["buckets"] == 3 and values["curve"] == [1.0, 2.0]
    assert values["claim_positive"] == "held" and values["claim_speed"] == "less than"

    study = seeds.summarise({0: values, 1: dict(values, bleu=10.5, curve=[3.0, 0.0],
                                                 claim_positive="failed")})
    assert study["numbers"]["bleu"] == dict(seeds=[12.5, 10.5], mean=11.5, min=10.5, max=12.5)
    assert study["numbers"]["curve"]["min"] == [1.0, 0.0] and study["numbers"]["curve"]["max"] == [3.0, 2.0]
    assert study["claims"]["positive"]["seeds"] == ["held", "failed"]
    assert study["claims"]["speed"]["seeds"] == ["less than", "less than"]
    page = seeds.page({"99_test": dict(study, stamp=dict(commit="abc", cpus=2, cpu="cpu", jax="0",
                                                          date="d", seeds=[0, 1], seconds=1,
                                                          load=[0.0, 0.0]))})
    assert "| `positive` | held | failed |" in page and "| `bleu` | 11.5 | 10.5 | 12.5 |" in page


def test_a_seed_whose_claim_failed_is_recorded_and_leaves_the_cache(tmp_path, monkeypatch):
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    seeds = load_tool("seeds")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(
        "from attention_course.claims import Claims\n"
        "claims = Claims('99_test')\n"
        "claims.check('flat', False, 'the curve is flat', drop=0.4)\n"
        "claims.check('positive', True, 'BLEU is positive')")]
    path = tmp_path / "99_test.ipynb"
    env = seeds.study_env(1)
    assert env[claims_module.CLAIMS_ENV] == "record" and env[runtime.SEED_ENV] == "1"
    monkeypatch.setenv(claims_module.CLAIMS_ENV, "record")
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()  # runs on past the false claim
    nbformat.write(nb, path)
    cache_dir = tmp_path / "cache"
    monkeypatch.setattr(seeds.book, "cache_for", lambda seed: cache_dir)
    get_cache(cache_dir).cache_notebook_bundle(CacheBundleIn(nb, str(path)), check_validity=False)
    values, _ = seeds.read_run(path, 1)
    assert values["claim_flat"] == "failed" and values["claim_positive"] == "held"
    with pytest.raises(KeyError):  # the strict build of seed 1 will execute it again, and fail
        get_cache(cache_dir).match_cache_notebook(nbformat.read(path, as_version=4))


def test_a_run_older_than_the_seed_study_it_draws_is_executed_again(tmp_path, monkeypatch):
    import time

    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    book = load_tool("book")
    monkeypatch.setattr(book, "SEED_STUDY", tmp_path)
    cache_dir = tmp_path / "cache"
    paths = []
    for stem, code in (("98_band", "band = claims.spread('curve')"), ("99_plain", "x = 1")):
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbformat.v4.new_code_cell(code)]
        nbformat.write(nb, tmp_path / f"{stem}.ipynb")
        get_cache(cache_dir).cache_notebook_bundle(CacheBundleIn(nb, str(tmp_path / f"{stem}.ipynb")),
                                                   check_validity=False)
        paths.append(tmp_path / f"{stem}.ipynb")
    assert book.drop_runs_older_than_their_seed_study(paths, cache_dir) == [], "no study yet"
    time.sleep(1.1)
    for stem in ("98_band", "99_plain"):
        (tmp_path / f"{stem}.json").write_text("{}")
    assert book.drop_runs_older_than_their_seed_study(paths, cache_dir) == ["98_band.ipynb"]
    assert book.uncached(paths, cache_dir) == [paths[0]], "the chapter without a band keeps its run"
