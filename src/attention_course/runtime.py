"""Small runtime helpers every notebook uses: the setup cell, fast mode, and showing source code.

* :data:`REPOSITORY_URL` is the one place the course's repository address lives. The Colab setup
  cell of every notebook installs the package from it (tests check that each notebook's first cell
  is exactly :func:`setup_cell_source`, and that ``_config.yml`` names the same repository).
* Fast mode (``ATTENTION_COURSE_FAST=1``) shrinks every experiment so a notebook runs in seconds;
  the tests build the book that way. Full mode is what the book and Colab show.
* :func:`show_source` displays a package function's source in the notebook and in the built book,
  so chapters show the code that actually runs instead of pasting a copy of it.
"""

from __future__ import annotations

import inspect
import os
import sys
import textwrap
from typing import Any, TypeVar

__all__ = [
    "REPOSITORY_URL",
    "FAST_ENV",
    "fast_mode",
    "pick",
    "report",
    "setup",
    "show_source",
    "setup_cell_source",
    "glue",
]

REPOSITORY_URL = "https://github.com/attention-course/attention-course"
FAST_ENV = "ATTENTION_COURSE_FAST"
FAST_MODE_BANNER = "FAST MODE"  # printed by setup(); `make book` refuses HTML that contains it

T = TypeVar("T")


def fast_mode() -> bool:
    """True when ``ATTENTION_COURSE_FAST`` is set to 1/true/yes (read at every call)."""
    return os.environ.get(FAST_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def pick(full: T, fast: T) -> T:
    """``full`` normally, ``fast`` in fast mode: ``steps = pick(full=3000, fast=30)``."""
    return fast if fast_mode() else full


def report() -> str:
    """One line: package and JAX versions, the backend and its devices, and the mode."""
    import jax

    from attention_course import __version__

    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    mode = f"{FAST_MODE_BANNER} (shrunk experiments; numbers are not the book's)" if fast_mode() else "full mode"
    return (
        f"attention_course {__version__} · JAX {jax.__version__} · backend {jax.default_backend()} "
        f"({len(devices)} × {', '.join(kinds)}) · {mode}"
    )


def setup() -> None:
    """Called by every notebook's first cell after the (Colab-only) install: prints :func:`report`."""
    print(report())


def setup_cell_source() -> str:
    """The exact source of every notebook's first code cell.

    On Colab it installs the package from the repository with pip, which keeps Colab's own
    jax/jaxlib (the package asks only for lower bounds, so the preinstalled versions satisfy it);
    elsewhere the package is already installed (``make`` installs it into ``.venv``) and the cell
    only prints the report.
    """
    return (
        "# Setup: on Colab, install the course package (Colab's own jax/jaxlib are kept);\n"
        "# elsewhere it is already installed. Prints the JAX version and backend.\n"
        "import sys\n"
        "if \"google.colab\" in sys.modules:\n"
        f"    %pip install --quiet \"attention-course @ git+{REPOSITORY_URL}\"\n"
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
    """Bind ``value`` to ``name`` for the book's prose (myst-nb ``glue``).

    In the book build the prose quotes it with ``{glue:text}`name:.1f``` or places a figure with
    ``{glue:figure}``. Where myst-nb is not installed (Colab) it does nothing, except that with
    ``display=True`` the value is shown as the cell's output, as myst-nb would.
    """
    try:
        from myst_nb import glue as _myst_glue
    except ImportError:
        if display:
            from IPython.display import display as _display

            _display(value)
        return
    _myst_glue(name, value, display=display)


def in_colab() -> bool:
    return "google.colab" in sys.modules
