"""Small runtime helpers every notebook uses: the setup cell, fast mode, and showing source code.

* :data:`REPOSITORY_URL` is the one place the course's repository address lives. The Colab setup
  cell of every notebook installs the package from it (tests check that each notebook's first cell
  is exactly :func:`setup_cell_source`, and that ``_config.yml`` names the same repository).
* Fast mode (``ATTENTION_COURSE_FAST=1``) shrinks every experiment so a notebook runs in seconds;
  the tests build the book that way. Full mode is what the book and Colab show.
* The seed knob (``ATTENTION_COURSE_SEED=N``, default 0) offsets every model-initialisation and
  data-order seed of every chapter through :func:`seed`; the data sets stay fixed. `make seeds`
  builds the book under several offsets to see which of its conclusions survive a new seed.
* :func:`show_source` displays a package function's source in the notebook and in the built book,
  so chapters show the code that actually runs instead of pasting a copy of it.
"""

from __future__ import annotations

import inspect
import numbers
import os
import sys
import textwrap
from typing import Any, TypeVar

__all__ = [
    "REPOSITORY_URL",
    "FAST_ENV",
    "fast_mode",
    "SEED_ENV",
    "seed",
    "seed_offset",
    "pick",
    "report",
    "setup",
    "show_source",
    "setup_cell_source",
    "glue",
]

REPOSITORY_URL = "https://github.com/attention-course/attention-course"
FAST_ENV = "ATTENTION_COURSE_FAST"
PROGRESS_ENV = "ATTENTION_COURSE_PROGRESS"  # "text": text progress bars, never widgets (the book build)
FAST_MODE_BANNER = "FAST MODE"  # printed by setup(); `make book` refuses HTML that contains it
SEED_ENV = "ATTENTION_COURSE_SEED"
SEED_BANNER = "SEED OFFSET"  # printed by setup() when the offset is not 0; the published book refuses it

T = TypeVar("T")


def fast_mode() -> bool:
    """True when ``ATTENTION_COURSE_FAST`` is set to 1/true/yes (read at every call)."""
    return os.environ.get(FAST_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def pick(full: T, fast: T) -> T:
    """``full`` normally, ``fast`` in fast mode: ``steps = pick(full=3000, fast=30)``."""
    return fast if fast_mode() else full


def seed_offset() -> int:
    """The offset ``ATTENTION_COURSE_SEED`` sets (default 0), read at every call.

    Raises:
      ValueError: when the variable is not a non-negative integer.
    """
    text = os.environ.get(SEED_ENV, "").strip()
    if not text:
        return 0
    try:
        offset = int(text)
    except ValueError:
        raise ValueError(f"{SEED_ENV}: expected a non-negative integer, got {text!r}") from None
    if offset < 0:
        raise ValueError(f"{SEED_ENV}: expected a non-negative integer, got {offset}")
    return offset


def seed(base: int = 0) -> int:
    """The seed to use where a chapter would write ``base``: ``base + 1000 * seed_offset()``.

    The factor keeps the seeds of one offset apart from those of the next (with ``base + offset``
    the second model of offset 0 would be the first model of offset 1).

    Every model's ``nnx.Rngs(...)`` and every training stream's ``seed=`` goes through it, so one
    environment variable gives a whole chapter new initialisations and a new order of batches
    while the data sets (generated from seeds of their own) stay the same.
    """
    if isinstance(base, bool) or not isinstance(base, numbers.Integral) or base < 0:
        raise ValueError(f"base: expected a non-negative integer seed, got {base!r}")
    return int(base) + 1000 * seed_offset()


def report() -> str:
    """Two short lines: package, JAX, backend and devices; then the mode."""
    import jax

    from attention_course import __version__

    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    mode = f"{FAST_MODE_BANNER}: shrunk experiments, the numbers are not the book's" if fast_mode() else "full mode"
    if seed_offset():
        mode += f" · {SEED_BANNER} {seed_offset()}: new initialisations and batch orders"
    return (
        f"attention_course {__version__} · JAX {jax.__version__} · backend {jax.default_backend()} "
        f"({len(devices)} × {', '.join(kinds)})\n{mode}"
    )


def setup() -> None:
    """Called by every notebook's first cell after the (Colab-only) install: prints :func:`report`."""
    print(report())


def setup_cell_source() -> str:
    """The exact source of every notebook's first code cell.

    On Colab it installs the course with pip under a constraint file that pins every package
    already installed to its installed version, so pip may add what is missing (sacrebleu, the
    course itself, flax or optax if the runtime lacks them, in versions that fit its jax) but
    never changes what Colab has: jax and jaxlib carry its GPU/TPU support, IPython its kernel.
    Elsewhere the package is already installed (``make`` installs it into ``.venv``) and the
    cell only prints the report. The Colab twin (``make colab``) runs this cell as Colab would,
    with the checkout in place of :data:`REPOSITORY_URL`.
    """
    return (
        "# Setup. On Colab: install the course and only what Colab lacks; pip may not\n"
        "# change a package Colab has (its jax carries the GPU/TPU runtime). Elsewhere\n"
        "# the course is already installed. Prints the JAX version and backend.\n"
        "import sys\n"
        "if \"google.colab\" in sys.modules:\n"
        "    from importlib.metadata import distributions\n"
        "    keep = {}  # every installed package at its installed version\n"
        "    for dist in distributions():\n"
        "        keep.setdefault(str(dist.metadata[\"Name\"]).lower(), dist.version)\n"
        "    with open(\"/tmp/colab-keep.txt\", \"w\") as pins:\n"
        "        pins.writelines(f\"{name}=={version}\\n\" for name, version in keep.items()\n"
        "                        if name not in (\"none\", \"pip\", \"setuptools\", \"wheel\"))\n"
        f"    repo = \"{REPOSITORY_URL}\"\n"
        "    %pip install -q -c /tmp/colab-keep.txt \"attention-course @ git+{repo}\"\n"
        "from attention_course.runtime import setup\n"
        "setup()"
    )


class _Source:
    """A displayable block of source code: fenced Markdown for Jupyter and the book, text elsewhere."""

    def __init__(self, code: str, language: str = "python"):
        self.code = code
        self.language = language

    def _repr_markdown_(self) -> str:
        fence = "````" if "```" in self.code else "```"
        return f"{fence}{self.language}\n{self.code}\n{fence}"

    def __repr__(self) -> str:
        return self.code


def show_source(obj: Any, *, docstring: bool = True) -> _Source:
    """Display the source of a function, class or method of the package.

    In Jupyter (and in the built book, through myst-nb) it renders as a highlighted code block.
    Use it as the last expression of a cell: ``show_source(pooling.masked_softmax)``.

    Args:
      obj: a function, class or method.
      docstring: keep the docstring (default) or drop it to show only the code.
    """
    target = inspect.unwrap(obj)
    try:
        code = inspect.getsource(target)
    except (TypeError, OSError) as err:
        raise ValueError(f"obj: cannot find the source of {obj!r} ({err})") from None
    code = textwrap.dedent(code).rstrip()
    if not docstring:
        code = _strip_docstring(code)
    return _Source(code)


def _strip_docstring(code: str) -> str:
    import ast

    tree = ast.parse(code)
    node = tree.body[0]
    body = getattr(node, "body", None)
    if not body or not isinstance(body[0], ast.Expr) or not isinstance(getattr(body[0], "value", None), ast.Constant):
        return code
    if not isinstance(body[0].value.value, str):
        return code
    lines = code.splitlines()
    start, end = body[0].lineno - 1, body[0].end_lineno
    return "\n".join(lines[:start] + lines[end:])


def glue(name: str, value: Any, *, display: bool = False) -> None:
    """Bind ``value`` to ``name`` for the book's prose, and show it in the notebook.

    This is the display convention of every chapter, so that a learner on Colab or in plain
    Jupyter sees what a reader of the book sees:

    * In the book build (myst-nb installed) the value is bound with myst-nb's ``glue``; the prose
      quotes it with ``{glue:text}`name:.1f``` or places a figure with ``{glue:figure}``.
    * Everywhere, the value is also shown in the cell that computes it: a matplotlib figure is
      displayed (the :mod:`plots` functions close their figures, so this is the only time it
      shows), and any other value is printed as ``name = value``, so that the prose's
      ``{glue:text}`` roles, which Colab shows raw, can be read off the output by eye.
    * A cell that glues a figure for ``{glue:figure}`` is tagged ``remove-output``: the book then
      shows the figure once, where the prose places it, and Colab shows it in the cell.

    Args:
      name: the key the prose uses.
      value: a number, a string, or a :class:`matplotlib.figure.Figure`.
      display: accepted for myst-nb's signature; the value is always shown in the notebook.
    """
    del display  # always shown: see above
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name: expected an identifier-like string, got {name!r}")
    try:
        from myst_nb import glue as _myst_glue
    except ImportError:
        _myst_glue = None
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()  # a NumPy or JAX scalar: myst-nb formats only
        # Python numbers (it reads back the repr, and "np.float64(0.5)" fails)
    if _myst_glue is not None:
        _myst_glue(name, value, display=False)
    _show(name, value)


def _show(name: str, value: Any) -> None:
    """Display a figure, or print ``name = value`` (floats to 4 significant digits)."""
    from matplotlib.figure import Figure

    if isinstance(value, Figure):
        from IPython.display import display as _display

        _display(value)
        return
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        text = f"{float(value):.4g}"
    else:
        text = str(value)
    say(f"{name} = {text}")


# The book's column holds about 85 characters of 13 px monospace: printed lines are wrapped
# below that, so that a long value never makes a cell's output scroll sideways.
LINE_WIDTH = 76


def say(text: str) -> None:
    """Print ``text`` wrapped at :data:`LINE_WIDTH`, continuation lines indented."""
    import textwrap

    print(textwrap.fill(text, width=LINE_WIDTH, subsequent_indent="    ",
                        break_long_words=True, break_on_hyphens=False))


def in_colab() -> bool:
    return "google.colab" in sys.modules
