import textwrap

import pytest

from attention_course import pooling, runtime


def test_fast_mode_follows_the_environment(monkeypatch):
    monkeypatch.delenv(runtime.FAST_ENV, raising=False)
    assert not runtime.fast_mode() and runtime.pick(full=100, fast=2) == 100
    monkeypatch.setenv(runtime.FAST_ENV, "1")
    assert runtime.fast_mode() and runtime.pick(full=100, fast=2) == 2
    assert runtime.FAST_MODE_BANNER in runtime.report()
    monkeypatch.setenv(runtime.FAST_ENV, "0")
    assert not runtime.fast_mode()


def test_report_names_jax_and_backend(monkeypatch):
    import jax

    monkeypatch.delenv(runtime.FAST_ENV, raising=False)
    line = runtime.report()
    assert jax.__version__ in line and jax.default_backend() in line and "full mode" in line
    assert runtime.FAST_MODE_BANNER not in line


def test_show_source_renders_the_function_as_markdown():
    shown = runtime.show_source(pooling.masked_softmax)
    md = shown._repr_markdown_()
    assert md.startswith("```python\ndef masked_softmax(") and md.endswith("```")
    assert "Softmax of" in md
    bare = runtime.show_source(pooling.masked_softmax, docstring=False)._repr_markdown_()
    assert "Softmax of" not in bare and "def masked_softmax(" in bare and "return (exp /" in bare


def test_show_source_rejects_objects_without_source():
    with pytest.raises(ValueError, match="obj"):
        runtime.show_source(len)


def test_setup_cell_installs_only_on_colab_and_from_the_repository():
    src = runtime.setup_cell_source()
    assert 'if "google.colab" in sys.modules:' in src
    assert f'repo = "{runtime.REPOSITORY_URL}"' in src
    install = next(line for line in src.splitlines() if "%pip install" in line)
    assert install.split() == ["%pip", "install", "-q", "-c", "/tmp/colab-keep.txt",
                               '"attention-course', "@", 'git+{repo}"']
    assert src.rstrip().endswith("setup()")
    assert max(len(line) for line in src.splitlines()) <= 80, "the cell fits the book's column"


def test_setup_cell_pins_every_installed_package_but_the_build_tools(tmp_path):
    """Run the cell's Colab branch up to the install here: the constraints keep this venv as it is."""
    from importlib.metadata import version

    src = runtime.setup_cell_source()
    body = src.split('if "google.colab" in sys.modules:\n', 1)[1].split("    %pip", 1)[0]
    pins = tmp_path / "keep.txt"
    exec(textwrap.dedent(body).replace("/tmp/colab-keep.txt", str(pins)), {})
    lines = pins.read_text().splitlines()
    constraints = dict(line.split("==", 1) for line in lines)
    assert len(constraints) == len(lines), "one pin per package"
    for name in ("jax", "jaxlib", "flax", "optax", "numpy", "ipython", "matplotlib"):
        assert constraints[name] == version(name)
    assert not {"pip", "setuptools", "wheel", "none"} & set(constraints)



def _block_myst_nb(monkeypatch):
    """Make ``import myst_nb`` fail, as on Colab."""
    import sys

    monkeypatch.setitem(sys.modules, "myst_nb", None)


def test_glue_prints_numbers_with_their_name_without_myst_nb(monkeypatch, capsys):
    import numpy as np

    _block_myst_nb(monkeypatch)
    runtime.glue("bleu_short", np.float32(97.3456))
    runtime.glue("steps", 1500)
    runtime.glue("best", "local-p")
    assert capsys.readouterr().out.splitlines() == ["bleu_short = 97.35", "steps = 1500", "best = local-p"]


def test_glue_displays_figures_without_myst_nb(monkeypatch):
    import IPython.display
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    _block_myst_nb(monkeypatch)
    fig, _ = plt.subplots()
    plt.close(fig)
    runtime.glue("a_figure", fig)
    assert shown == [fig]


def test_glue_binds_for_the_book_and_still_shows(monkeypatch, capsys):
    import sys
    import types

    bound = []
    fake = types.SimpleNamespace(glue=lambda name, value, display: bound.append((name, value, display)))
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    runtime.glue("x", 0.5)
    assert bound == [("x", 0.5, False)]
    assert capsys.readouterr().out == "x = 0.5\n"


def test_glue_binds_numpy_and_jax_scalars_as_python_numbers(monkeypatch, capsys):
    # myst-nb formats {glue:text}`x:.1f` by reading back the repr of the value; the repr of a
    # NumPy 2 scalar, "np.float64(0.5)", is not a number, and the strict build fails on it
    import sys
    import types

    import jax.numpy as jnp
    import numpy as np

    bound = []
    fake = types.SimpleNamespace(glue=lambda name, value, display: bound.append((name, value)))
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    runtime.glue("a", np.float64(0.25))
    runtime.glue("b", jnp.float32(0.5))
    runtime.glue("c", np.int64(3))
    assert [(name, type(value)) for name, value in bound] == [("a", float), ("b", float), ("c", int)]
    assert [repr(value) for _, value in bound] == ["0.25", "0.5", "3"]
    assert capsys.readouterr().out == "a = 0.25\nb = 0.5\nc = 3\n"


def test_glue_rejects_names_the_prose_cannot_use():
    with pytest.raises(ValueError, match="name"):
        runtime.glue("not a name", 1.0)
