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
    assert "Softmax of" not in bare and "def masked_softmax(" in bare and "return exp /" in bare


def test_show_source_rejects_objects_without_source():
    with pytest.raises(ValueError, match="obj"):
        runtime.show_source(len)


def test_setup_cell_installs_only_on_colab_and_from_the_repository():
    src = runtime.setup_cell_source()
    assert 'if "google.colab" in sys.modules:' in src
    assert f"git+{runtime.REPOSITORY_URL}" in src
    assert "jax" not in src.split("%pip install", 1)[1].split("\n")[0].replace("attention-course", "")
    assert src.rstrip().endswith("setup()")
