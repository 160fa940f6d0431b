"""`make book`'s side-by-side execution (tools/book.py): each kernel on one CPU, outputs in the cache
that Jupyter Book reads, a failure reported and kept out of the cache."""

import os

import nbformat
import pytest
from jupyter_cache import get_cache

from test_publish import ROOT, load_tool

book = load_tool("book")

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                                reason="side-by-side execution needs Linux and two CPUs")


def notebook(path, source):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source)]
    nbformat.write(nb, path)
    return path


def cached_output(cache, path):
    _, nb = cache.merge_match_into_notebook(nbformat.read(path, as_version=4))  # KeyError if not cached
    return "".join(o.get("text", "") for o in nb.cells[0].outputs)


def test_each_kernel_runs_on_one_cpu_and_jupyter_book_finds_its_outputs(tmp_path, capsys):
    # different sources: the cache keys a notebook by its code
    show = "import os\nprint(sorted(os.sched_getaffinity(0)))  # {}"
    paths = [notebook(tmp_path / f"{name}.ipynb", show.format(name)) for name in ("a", "b")]
    env = dict(os.environ, **book.BOOK_ENV)

    assert book._execute_in_lanes(env, paths, tmp_path / "cache") == 0

    cache = get_cache(tmp_path / "cache")
    masks = [eval(cached_output(cache, p)) for p in paths]
    assert all(len(mask) == 1 for mask in masks), masks
    assert masks[0] != masks[1], "two notebooks, two CPUs: they ran side by side"
    assert all(r.data["execution_seconds"] > 0 for r in cache.list_cache_records())
    capsys.readouterr()
    assert book._execute_in_lanes(env, paths, tmp_path / "cache") == 0
    assert "executing" not in capsys.readouterr().out, "cached notebooks are not executed again"


def test_a_failing_notebook_fails_the_build_and_stays_out_of_the_cache(tmp_path, capsys):
    bad = notebook(tmp_path / "bad.ipynb", "raise ValueError('deliberate')")
    good = notebook(tmp_path / "good.ipynb", "print('fine')")

    assert book._execute_in_lanes(dict(os.environ), [bad, good], tmp_path / "cache") == 1

    assert "bad.ipynb" in capsys.readouterr().err
    cache = get_cache(tmp_path / "cache")
    assert cached_output(cache, good) == "fine\n"
    with pytest.raises(KeyError):
        cached_output(cache, bad)


def test_the_chapters_kept_alone_are_chapters_of_the_book():
    stems = {p.stem for p in book._toc_notebooks()}
    assert book.ALONE <= stems
    assert len(stems - book.ALONE) >= 2, "some chapters run side by side"
    assert book.CACHE.relative_to(ROOT).as_posix() == "_build/.jupyter_cache"
