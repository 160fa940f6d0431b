"""The course's figures: where attention looks, how quality falls with length, how training went.

Four functions, each returning a :class:`matplotlib.figure.Figure`:

* :func:`alignment_heatmap` -- one attention matrix with its words, drawn like Fig. 3 of
  Bahdanau, Cho & Bengio (2014);
* :func:`weights_grid` -- several matrices side by side on one colour scale (fixed diagonal
  attention vs learned attention vs the gold alignment);
* :func:`metric_by_length` -- a metric against sentence length, one line per model, like
  Fig. 2 of Bahdanau et al. (2014);
* :func:`training_curves` -- training loss and evaluation metrics against the step.

Colours.  Attention matrices use the ``"gray"`` colormap, black = 0 and white = the largest
weight, as in Bahdanau et al.  Its lightness rises evenly from black to white, so it reads
the same in colour, in print and for colour-blind readers.  Matrices whose values all lie in
[0, 1] (attention weights, 0/1 gold alignments) are drawn on the fixed scale 0..1, so two
figures can be compared by eye; other values use their own min..max.  NaN cells are drawn in
blue, and gold links as red outlines, colours that cannot be mistaken for a shade of grey.

Figures and pyplot.  Functions that make their own figure (``ax=None``) create it with
``plt.subplots`` and at once ``plt.close`` it: pyplot then forgets the figure, so it is not
shown a second time at the end of a notebook cell and does not pile up in memory.  Show a
figure by making it the last expression of a cell, or with ``IPython.display.display(fig)``;
save it with ``fig.savefig(path)``.  Pass ``ax=`` to draw into an axes of your own layout
instead; the figure of that axes is returned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import LogFormatter, MaxNLocator

from attention_course import _checks
from attention_course.metrics import Bucket, bucket_labels

__all__ = [
    "BOOK_WIDTH",
    "accuracy_by_position",
    "alignment_heatmap",
    "heatmaps",
    "lattice_moves",
    "metric_by_length",
    "metric_panels",
    "recall_curves",
    "ring_steps",
    "scaling_panels",
    "training_curves",
    "use_book_style",
    "weights_grid",
]

NAN_COLOR = "#4c8fd6"  # blue: a missing value is not a shade of grey
GOLD_COLOR = "#e8361c"  # red outlines on black or white cells

# The book's content column is about 672 px wide. Figures are drawn at most BOOK_WIDTH inches wide
# at figure.dpi = 100, so they are shown at their natural size (no scaling down), and text of
# FONT_MIN points or more comes out at 11 px or more; PNGs are rendered at twice that resolution
# ("retina") for sharp lines and text.
BOOK_WIDTH = 6.5
FONT_MIN = 8.0
BOOK_STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "figure.titlesize": 12,
}

# Sizing of token heatmaps: a cell is between 0.16 and 0.45 inches wide, so a 5x5 matrix is
# not a postage stamp, a sentence pair of 25 words fits the column with labels of 8 pt or more,
# and a 60x60 matrix still fits a page.
_MATRIX_INCHES = 5.0
_CELL_MIN, _CELL_MAX = 0.16, 0.45


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def use_book_style() -> None:
    """Apply :data:`BOOK_STYLE` to matplotlib, and in IPython show figures as retina PNGs.

    Called when this module is imported, so every chapter that imports ``plots`` draws its
    figures for the book's column: at most :data:`BOOK_WIDTH` inches wide, text of at least
    :data:`FONT_MIN` points, rendered at twice the screen resolution.
    """
    plt.rcParams.update(BOOK_STYLE)
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency of the notebooks only
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    set_matplotlib_formats("retina")


use_book_style()


def _new_figure(figsize: tuple[float, float], **subplots_kw: Any) -> tuple[Figure, Any]:
    """A constrained-layout figure that pyplot does not keep (see the module docstring)."""
    fig, axes = plt.subplots(figsize=figsize, layout="constrained", **subplots_kw)
    plt.close(fig)
    return fig, axes


def _as_matrix(weights: Any, argument: str) -> np.ndarray:
    """A 2-D float NumPy array from a NumPy/JAX array or nested lists."""
    matrix = np.asarray(weights, dtype=float)
    if matrix.ndim != 2:
        raise ValueError(f"{argument}: expected shape [Ty, Tx], got shape {matrix.shape}")
    return matrix


def _crop(matrix: np.ndarray, rows: int | None, cols: int | None, argument: str) -> np.ndarray:
    """The top-left ``rows x cols`` block (the real words; the rest is padding)."""
    rows = matrix.shape[0] if rows is None else rows
    cols = matrix.shape[1] if cols is None else cols
    if matrix.shape[0] < rows or matrix.shape[1] < cols:
        raise ValueError(
            f"{argument}: expected at least [{rows}, {cols}] (one row per target token, one "
            f"column per source token), got shape {matrix.shape}"
        )
    return matrix[:rows, :cols]


def _color_range(matrices: Sequence[np.ndarray]) -> tuple[float, float]:
    """0..1 when every finite value is a probability, else the finite min..max."""
    finite = np.concatenate([m[np.isfinite(m)] for m in matrices]) if matrices else np.zeros(0)
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    if lo >= 0.0 and hi <= 1.0:
        return 0.0, 1.0
    if lo == hi:
        return lo - 0.5, hi + 0.5
    return lo, hi


def _colormap(cmap: str | Colormap) -> Colormap:
    base = plt.get_cmap(cmap) if isinstance(cmap, str) else cmap
    return base.with_extremes(bad=NAN_COLOR)


def _cell_inches(rows: int, cols: int, room: float | None = None) -> float:
    """A cell's size: the matrix about _MATRIX_INCHES across, and its columns within ``room``."""
    cell = _MATRIX_INCHES / max(rows, cols, 1)
    if room is not None:
        cell = min(cell, room / max(cols, 1))
    return float(np.clip(cell, _CELL_MIN, _CELL_MAX))


def _label_inches(tokens: Sequence[str], fontsize: float) -> float:
    """Rough width of the longest label (0.6 em per character)."""
    longest = max((len(t) for t in tokens), default=0)
    return longest * fontsize * 0.6 / 72


def _fontsize_for(ax: Axes, rows: int, cols: int) -> float:
    """Tick-label size that fits the cells of ``ax`` (about 70% of a cell's height)."""
    fig_w, fig_h = ax.figure.get_size_inches()
    box = ax.get_position()
    cell = min(box.width * fig_w / max(cols, 1), box.height * fig_h / max(rows, 1))
    return float(np.clip(cell * 72 * 0.7, FONT_MIN, 11.0))


def _fontsize_for_cell(cell: float) -> float:
    return float(np.clip(cell * 72 * 0.7, FONT_MIN, 11.0))


def _heatmap_figsize(
    rows: int, cols: int, source: Sequence[str], target: Sequence[str], panels: int = 1
) -> tuple[float, float]:
    labels = _label_inches(target, FONT_MIN)
    room = (BOOK_WIDTH - labels - 1.7) / panels - 0.3  # the column, less labels and colorbar
    cell = _cell_inches(rows, cols, room)
    font = _fontsize_for_cell(cell)
    width = panels * (cols * cell + 0.3) + _label_inches(target, font) + 1.3  # + colorbar
    height = rows * cell + _label_inches(source, font) + 0.9  # + title, legend
    return max(width, 3.0), max(height, 2.2)


def _add_colorbar(image, ax: Axes, label: str) -> None:
    """A slim colorbar right of ``ax``, as tall as the drawn matrix (at most ~4.5 inches).

    It is an inset of ``ax``, so it follows the matrix's box after ``aspect="equal"``
    shrinks it, and constrained layout makes room for it.
    """
    fig_w, fig_h = ax.figure.get_size_inches()
    box = ax.get_position()
    rows, cols = image.get_array().shape
    cell = min(box.width * fig_w / max(cols, 1), box.height * fig_h / max(rows, 1))
    width_in, height_in = cols * cell, rows * cell  # the matrix as drawn, in inches
    height = min(1.0, 4.5 / max(height_in, 1e-9))
    cax = ax.inset_axes([1.0 + 0.15 / width_in, 1.0 - height, 0.15 / width_in, height])
    colorbar = ax.figure.colorbar(image, cax=cax)
    colorbar.set_label(label, fontsize="small")
    colorbar.ax.tick_params(labelsize="small")


def _note(ax: Axes, text: str) -> None:
    """Write ``text`` in the middle of an axes that has nothing to show."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_matrix(
    ax: Axes,
    matrix: np.ndarray,
    source: Sequence[str] | None,
    target: Sequence[str] | None,
    norm: Normalize,
    cmap: Colormap,
    *,
    show_target_labels: bool = True,
):
    """imshow one ``[Ty, Tx]`` matrix: source words along the top, target words down the left."""
    rows, cols = matrix.shape
    image = ax.imshow(
        np.ma.masked_invalid(matrix), cmap=cmap, norm=norm, interpolation="nearest", aspect="equal"
    )
    fontsize = _fontsize_for(ax, rows, cols)
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    if source is not None:
        ax.set_xticks(np.arange(cols), list(source), rotation=90)
    else:
        ax.set_xlabel("source position")
    if target is not None:
        ax.set_yticks(np.arange(rows), list(target) if show_target_labels else [])
    elif show_target_labels:
        ax.set_ylabel("target position")
    ax.tick_params(axis="both", labelsize=fontsize, length=2, pad=2)
    return image


# --------------------------------------------------------------------------------------------
# Attention matrices
# --------------------------------------------------------------------------------------------


def alignment_heatmap(
    weights: Any,
    source_tokens: Sequence[Any],
    target_tokens: Sequence[Any],
    *,
    gold: Any = None,
    ax: Axes | None = None,
    title: str | None = None,
    cmap: str | Colormap = "gray",
    label: str = "attention weight",
) -> Figure:
    r"""Draw an attention matrix with its words, like Fig. 3 of Bahdanau et al. (2014).

    Cell ``(i, j)`` is the weight :math:`\alpha_{ij}` that target word ``i`` (row) puts on
    source word ``j`` (column); white = high, black = 0 (see the module docstring for the
    colours).  Source words run along the top, rotated 90°; target words down the left.

    Args:
      label: the colorbar's label (say "gold link" when drawing a gold alignment).
      weights: ``[Ty, Tx]`` attention weights, possibly padded; only the top-left
        ``len(target_tokens) x len(source_tokens)`` block is drawn.
      source_tokens: the source words (anything printable; ``EOS`` included if the model
        attends to it).
      target_tokens: the target words.
      gold: optional gold alignment, an iterable of ``(i, j)`` links (target, source), drawn
        as red outlines around those cells.
      ax: draw into this axes; by default a new figure sized to the matrix.
      title: optional title, written above the source words.
      cmap: the colormap (default ``"gray"``).
      label: the colorbar's label (say "gold link" when drawing a gold alignment).

    Returns:
      The figure.  The colorbar is an inset of the heatmap's axes (``ax.child_axes``), so a
      figure made here has exactly one entry in ``fig.axes``.  With no tokens on one side,
      the axes only says "empty".
    """
    source = [str(t) for t in source_tokens]
    target = [str(t) for t in target_tokens]
    matrix = _crop(_as_matrix(weights, "weights"), len(target), len(source), "weights")
    links = []
    if gold is not None:
        for link in gold:
            i, j = (int(v) for v in link)
            if not (0 <= i < len(target) and 0 <= j < len(source)):
                raise ValueError(
                    f"gold: expected links (i, j) with 0 <= i < {len(target)} and "
                    f"0 <= j < {len(source)}, got {(i, j)}"
                )
            links.append((i, j))

    rows, cols = matrix.shape
    if ax is None:
        fig, ax = _new_figure(_heatmap_figsize(rows, cols, source, target))
    else:
        fig = ax.figure
    if title:
        ax.set_title(title, fontsize="medium")
    if rows == 0 or cols == 0:
        _note(ax, "empty")
        return fig

    vmin, vmax = _color_range([matrix])
    image = _draw_matrix(ax, matrix, source, target, Normalize(vmin, vmax), _colormap(cmap))
    if links:
        for i, j in links:
            ax.add_patch(
                Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=GOLD_COLOR, linewidth=1.2)
            )
        ax.legend(
            handles=[Rectangle((0, 0), 1, 1, fill=False, edgecolor=GOLD_COLOR, label="gold link")],
            loc="upper left",
            bbox_to_anchor=(0.0, -0.01),
            frameon=False,
            fontsize="small",
            handlelength=1.0,
        )
    _add_colorbar(image, ax, label)
    return fig


def weights_grid(
    matrices: Sequence[Any],
    titles: Sequence[str],
    *,
    source_tokens: Sequence[Any] | None = None,
    target_tokens: Sequence[Any] | None = None,
    cmap: str | Colormap = "gray",
) -> Figure:
    """Several ``[Ty, Tx]`` matrices side by side on one shared colour scale.

    Used to compare, for one sentence, e.g. hard-coded diagonal attention, learned attention
    and the gold alignment as a 0/1 matrix.  Because the colour scale is shared, equal shades
    mean equal weights across panels; there is a single colorbar.

    Args:
      matrices: the matrices, each ``[Ty, Tx]`` (possibly padded, possibly of different
        padded sizes when tokens are given).
      titles: one title per matrix.
      source_tokens: optional source words, shared by all panels; crops the columns and labels
        the top axis of every panel.  Without it, columns are numbered.
      target_tokens: optional target words; crops the rows and labels the left axis of the
        first panel.
      cmap: the colormap (default ``"gray"``, white = high).

    Returns:
      The figure: one axes per matrix, in order, in ``fig.axes``; the colorbar is an inset
      of the last non-empty panel (in its ``child_axes``).
    """
    if len(titles) != len(matrices):
        raise ValueError(
            f"titles: expected {len(matrices)} titles (one per matrix), got {len(titles)}"
        )
    if len(matrices) == 0:
        raise ValueError("matrices: expected at least one matrix, got none")
    source = None if source_tokens is None else [str(t) for t in source_tokens]
    target = None if target_tokens is None else [str(t) for t in target_tokens]
    cropped = [
        _crop(
            _as_matrix(m, f"matrices[{k}]"),
            None if target is None else len(target),
            None if source is None else len(source),
            f"matrices[{k}]",
        )
        for k, m in enumerate(matrices)
    ]
    rows = max(m.shape[0] for m in cropped)
    cols = max(m.shape[1] for m in cropped)
    fig, axes = _new_figure(
        _heatmap_figsize(rows, cols, source or [], target or [], panels=len(cropped)),
        ncols=len(cropped),
        squeeze=False,
    )
    axes = list(axes[0])
    fig.get_layout_engine().set(wspace=0.06)  # a gap between panels that share no labels
    vmin, vmax = _color_range(cropped)
    norm, colormap = Normalize(vmin, vmax), _colormap(cmap)
    image = None
    for k, (ax, matrix, title) in enumerate(zip(axes, cropped, titles, strict=True)):
        ax.set_title(title, fontsize="medium")
        if matrix.size == 0:
            _note(ax, "empty")
            continue
        image = _draw_matrix(
            ax, matrix, source, target, norm, colormap, show_target_labels=(k == 0)
        )
    if image is not None:
        _add_colorbar(image, image.axes, "weight")
    return fig


def heatmaps(
    panels: Sequence[Mapping[str, Any]],
    *,
    ncols: int = 1,
    label: str = "attention weight",
    colorbar: str = "last",
) -> Figure:
    """Several attention matrices with their words, stacked for the book's column.

    Each panel is drawn by :func:`alignment_heatmap` with the same cell size, so that equal
    shades and equal sizes mean the same thing in every panel, and the figure is at most
    :data:`BOOK_WIDTH` inches wide whenever the matrices allow labels of :data:`FONT_MIN` points.

    Args:
      panels: one mapping per matrix, with keys ``weights``, ``source``, ``target`` and,
        optionally, ``title`` and ``gold`` (as for :func:`alignment_heatmap`).
      ncols: panels per row (1: stacked, one under the other).
      label: the colorbar's label.
      colorbar: ``"last"`` (one colorbar, on the last panel; all panels share the 0..1 scale
        when their values are weights), ``"each"``, or ``"none"``.

    Returns:
      The figure; ``fig.axes[k]`` is the axes of panel ``k`` (draw on it to add a path).
    """
    if not panels:
        raise ValueError("panels: expected at least one panel, got none")
    if colorbar not in {"last", "each", "none"}:
        raise ValueError(f"colorbar: expected 'last', 'each' or 'none', got {colorbar!r}")
    shapes = [(len(p["target"]), len(p["source"])) for p in panels]
    rows, cols = max(r for r, _ in shapes), max(c for _, c in shapes)
    targets = [str(t) for p in panels for t in p["target"]]
    sources = [str(t) for p in panels for t in p["source"]]
    labels = _label_inches(targets, FONT_MIN)
    bar = 1.1 if colorbar != "none" else 0.2
    # Panels side by side with the same words share their labels: target words only left of
    # the first column, source words only above the first row.
    shared = ncols > 1 and all(
        [str(t) for t in p["source"]] == [str(t) for t in panels[0]["source"]]
        and [str(t) for t in p["target"]] == [str(t) for t in panels[0]["target"]]
        for p in panels
    )
    if shared:
        room = (BOOK_WIDTH - 0.3 - labels - bar - 0.2 * (ncols - 1)) / ncols
        cell = float(np.clip(min(_MATRIX_INCHES / max(rows, cols), room / cols), 0.12, _CELL_MAX))
    else:
        cell = _cell_inches(rows, cols, BOOK_WIDTH / ncols - labels - bar - 0.3)
    font = max(_fontsize_for_cell(cell), FONT_MIN)
    nrows = math.ceil(len(panels) / ncols)
    per_row = [
        max(r for r, _ in shapes[k * ncols:(k + 1) * ncols]) for k in range(nrows)
    ]
    head = _label_inches(sources, font) + 0.6  # rotated source words and a title
    if shared:
        width = labels + ncols * cols * cell + 0.2 * (ncols - 1) + bar + 0.2
        heights = [r * cell + (head if k == 0 else 0.65) for k, r in enumerate(per_row)]
    else:
        width = ncols * (cols * cell + _label_inches(targets, font) + 0.3) + bar
        heights = [r * cell + head for r in per_row]
    fig, axes = _new_figure(
        (max(width, 3.0), sum(heights)),
        nrows=nrows, ncols=ncols, squeeze=False, height_ratios=heights,
    )
    flat = list(axes.flat)
    for k, (ax, panel) in enumerate(zip(flat, panels)):
        alignment_heatmap(
            panel["weights"], panel["source"], panel["target"], gold=panel.get("gold"),
            ax=ax, title=panel.get("title"), label=label,
        )
        keep = colorbar == "each" or (colorbar == "last" and k == len(panels) - 1)
        if not keep:
            for child in list(ax.child_axes):
                child.remove()
        if shared:
            ax.tick_params(labelsize=FONT_MIN)
            if k % ncols:
                ax.tick_params(labelleft=False)
            if k >= ncols:
                ax.tick_params(labeltop=False)
    for ax in flat[len(panels):]:
        ax.remove()
    return fig


def lattice_moves(
    T: int,
    U: int,
    flow: Mapping[tuple[tuple[int, int], tuple[int, int]], float],
    best_path: Sequence[tuple[int, int]],
    occupancy: Any,
) -> Figure:
    """A transducer lattice twice, one panel under the other (chapter 02).

    Top: every move right (a blank: next frame) or down (a label) drawn as thick as its
    probability ``flow[(t0, u0), (t1, u1)]``, written beside it, with the best path dashed.
    Bottom: the occupancy of each node (``[T, U+1]``) as a grey heatmap with its values.
    Frames ``t`` run left to right, labels written ``u`` top to bottom; both 0-based.
    """
    occupancy = np.asarray(occupancy, dtype=float)
    if occupancy.shape != (T, U + 1):
        raise ValueError(f"occupancy: expected shape {(T, U + 1)}, got {occupancy.shape}")
    cell = min(0.75, (BOOK_WIDTH - 2.4) / max(T, 1))  # inches per node, room for the colorbar
    size = (T * cell + 2.4, 2 * ((U + 1) * cell + 1.1) + 0.3)
    fig, (top, bottom) = _new_figure(size, nrows=2)

    def frame(ax, title):
        ax.set_xticks(range(T), [f"{t + 1}" for t in range(T)])
        ax.set_yticks(range(U + 1), [f"{u}" for u in range(U + 1)])
        ax.set(xlim=(-0.5, T - 0.5), ylim=(U + 0.5, -0.5), title=title,
               xlabel="frame t (source cursor)", ylabel="labels written u")
        ax.set_aspect("equal")

    frame(top, "every alignment, added up move by move")
    for ((t0, u0), (t1, u1)), f in flow.items():
        top.plot([t0, t1], [u0, u1], color="tab:blue", lw=0.5 + 10 * f,
                 solid_capstyle="round", zorder=1)
        top.text((t0 + t1) / 2 + 0.06, (u0 + u1) / 2 - 0.06, f"{f:.2f}",
                 fontsize=FONT_MIN + 1, color="0.25")
    top.plot([t for t, _ in best_path], [u for _, u in best_path], color="tab:red", lw=1.5,
             ls="--", label="best alignment", zorder=2)
    top.plot([T - 1, T - 0.6], [U, U], color="tab:red", lw=1.5, ls="--", zorder=2)
    nodes = [(t, u) for t in range(T) for u in range(U + 1)]
    top.scatter([t for t, _ in nodes], [u for _, u in nodes], s=12, color="black", zorder=3)
    fig.legend(loc="outside upper center", frameon=False)

    image = bottom.imshow(occupancy.T, cmap="gray", vmin=0, vmax=1)
    frame(bottom, "occupancy of each node")
    for t, u in nodes:
        bottom.text(t, u, f"{occupancy[t, u]:.2f}", ha="center", va="center",
                    fontsize=FONT_MIN + 1, color="black" if occupancy[t, u] > 0.5 else "white")
    fig.colorbar(image, ax=bottom, shrink=0.9, pad=0.03, label="Pr(node on the path)")
    return fig


# --------------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------------


class _PlainLogFormatter(LogFormatter):
    """Log-axis labels as plain numbers ("0.3", "2"); matplotlib still picks which ticks."""

    def __call__(self, x, pos=None):
        return f"{x:g}" if super().__call__(x, pos) else ""


def _is_buckets(curve: Any) -> bool:
    return (
        isinstance(curve, Sequence) and len(curve) > 0 and all(isinstance(b, Bucket) for b in curve)
    )


def metric_by_length(
    curves: Mapping[str, Any],
    *,
    xlabel: str = "source length",
    ylabel: str = "BLEU",
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """A metric against sentence length, one line per model (Bahdanau et al. 2014, Fig. 2).

    Args:
      curves: ``name -> (x, y)`` with two equal-length 1-D sequences, or
        ``name -> list of metrics.Bucket`` (from :func:`attention_course.metrics.by_length`),
        plotted at the bucket midpoints.  When every curve is a bucket list with the same
        buckets, the x ticks are labelled with the bucket ranges ("1–10", ...).  NaN values
        (empty buckets) leave a gap in the line.
      xlabel: label of the x axis.
      ylabel: label of the y axis.
      ax: draw into this axes; by default a new figure.
      title: optional title.

    Returns:
      The figure, with lines and markers, a legend, a grid, and the y axis starting at 0.
    """
    if not isinstance(curves, Mapping):
        raise ValueError(
            f"curves: expected a mapping name -> (x, y) or name -> buckets, "
            f"got {type(curves).__name__}"
        )
    if ax is None:
        fig, ax = _new_figure((6.0, 3.8))
    else:
        fig = ax.figure

    bucket_sets = []
    y_max = -math.inf
    markers = "osD^vP*X"
    for k, (name, curve) in enumerate(curves.items()):
        if _is_buckets(curve):
            bucket_sets.append(tuple((b.lo, b.hi) for b in curve))
            x = np.array([b.mid for b in curve], dtype=float)
            y = np.array([b.value for b in curve], dtype=float)
        else:
            try:
                x_raw, y_raw = curve
            except (TypeError, ValueError):
                raise ValueError(
                    f"curves[{name!r}]: expected (x, y) or a list of Buckets, "
                    f"got {type(curve).__name__}"
                ) from None
            x = np.asarray(x_raw, dtype=float)
            y = np.asarray(y_raw, dtype=float)
            if x.ndim != 1 or x.shape != y.shape:
                raise ValueError(
                    f"curves[{name!r}]: expected x and y of the same 1-D shape, "
                    f"got {x.shape} and {y.shape}"
                )
        finite = y[np.isfinite(y)]
        if finite.size:
            y_max = max(y_max, float(finite.max()))
        ax.plot(x, y, marker=markers[k % len(markers)], markersize=5, linewidth=1.6, label=name)

    if bucket_sets and len(bucket_sets) == len(curves) and len(set(bucket_sets)) == 1:
        buckets = next(c for c in curves.values())
        ax.set_xticks([b.mid for b in buckets], bucket_labels(buckets))
    ax.set_ylim(0, y_max * 1.05 if y_max > 0 else 1.0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.35)
    if title:
        ax.set_title(title)
    if curves:
        ax.legend(frameon=False)
    else:
        _note(ax, "no curves")
    return fig


def metric_panels(
    panels: Mapping[str, Mapping[str, Any]],
    *,
    xlabel: str = "source length",
    ylabel: str = "BLEU",
    ylim: tuple[float, float] | None = None,
    height: float = 2.6,
) -> Figure:
    """Several :func:`metric_by_length` plots stacked, one per title, sharing the x axis.

    Args:
      panels: ``title -> curves`` (the ``curves`` argument of :func:`metric_by_length`).
      xlabel: label of the (shared) x axis, written under the last panel.
      ylabel: label of every y axis.
      ylim: the y range of every panel (default: each panel's own, from 0).
      height: inches per panel; the figure is :data:`BOOK_WIDTH` wide.
    """
    if not panels:
        raise ValueError("panels: expected at least one panel, got none")
    fig, axes = _new_figure((BOOK_WIDTH, height * len(panels)), nrows=len(panels),
                            sharex=True, squeeze=False)
    axes = list(axes[:, 0])
    for k, (ax, (title, curves)) in enumerate(zip(axes, panels.items())):
        metric_by_length(curves, xlabel=xlabel if k == len(axes) - 1 else "",
                         ylabel=ylabel, ax=ax, title=title)
        if ylim is not None:
            ax.set_ylim(*ylim)
    # one legend for all panels, above them: the panel with the most curves names them all
    # (curves of the same name have the same colour in every panel when listed in one order)
    fullest = max(axes, key=lambda ax: len(ax.get_legend_handles_labels()[1]))
    handles, names = fullest.get_legend_handles_labels()
    for ax in axes:
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if names:
        fig.legend(handles, names, loc="outside upper center", ncols=min(len(names), 4),
                   frameon=False)
    return fig


def accuracy_by_position(
    curves: Mapping[str, tuple[Any, Any]],
    *,
    min_count: int = 10,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Next-word accuracy (%) against target position, one line per model.

    Args:
      curves: ``name -> (accuracy, count)``: two arrays indexed by 0-based target position, the
        fraction of correct predictions and the number of sentences long enough to have it.
      min_count: positions with fewer sentences than this are not drawn.
      ax: draw into this axes; by default a new figure.
      title: optional title.
    """
    if ax is None:
        fig, ax = _new_figure((BOOK_WIDTH, 3.2))
    else:
        fig = ax.figure
    for name, (accuracy, count) in curves.items():
        accuracy, count = np.asarray(accuracy, dtype=float), np.asarray(count)
        keep = count >= min_count
        ax.plot(np.flatnonzero(keep) + 1, 100 * accuracy[keep], marker=".", label=name)
    ax.set(xlabel="target position i", ylabel="next-word accuracy (%)", ylim=(0, 100))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.35)
    if title:
        ax.set_title(title)
    if curves:
        ax.legend(frameon=False)
    return fig


def training_curves(
    history: Any, *, metrics: Sequence[str] | None = None, ax: Axes | None = None
) -> Figure:
    """Training loss (log scale, left axis) and evaluation metrics (right axis) against step.

    Args:
      history: any object with ``step`` and ``loss`` (training loss at those steps), and
        ``eval_step`` and ``evals`` (a dict ``name -> values``, each aligned with
        ``eval_step``), such as the ``History`` returned by :mod:`attention_course.train`.
      metrics: names of the evaluation metrics to draw (default: all of ``history.evals``).
        They share the right axis, so pick metrics on similar scales (e.g. accuracy and
        exact match, or BLEU alone).
      ax: draw into this axes (the right axis is its twin); by default a new figure.

    Returns:
      The figure: one axes for the loss, plus a twin axes when there are metrics to draw.
    """
    steps = np.asarray(history.step, dtype=float)
    loss = np.asarray(history.loss, dtype=float)
    if steps.shape != loss.shape:
        raise ValueError(
            f"history.loss: expected {steps.shape[0]} values (one per history.step), "
            f"got {loss.shape[0] if loss.ndim else loss.shape}"
        )
    evals = dict(history.evals)
    names = list(evals) if metrics is None else list(metrics)
    missing = [n for n in names if n not in evals]
    if missing:
        raise ValueError(
            f"metrics: expected names from history.evals {sorted(evals)}, got unknown {missing}"
        )
    eval_steps = np.asarray(history.eval_step, dtype=float)
    for name in names:
        if len(evals[name]) != eval_steps.shape[0]:
            raise ValueError(
                f"history.evals[{name!r}]: expected {eval_steps.shape[0]} values "
                f"(one per history.eval_step), got {len(evals[name])}"
            )

    if ax is None:
        fig, ax = _new_figure((BOOK_WIDTH, 4.0))
    else:
        fig = ax.figure
    handles = ax.plot(steps, loss, color="0.25", linewidth=1.2, label="training loss")
    if np.any(np.isfinite(loss) & (loss > 0)):
        ax.set_yscale("log")
        # plain numbers (0.3, 2) rather than 3x10^-1, on major and (when few) minor ticks
        ax.yaxis.set_major_formatter(_PlainLogFormatter(labelOnlyBase=False))
        ax.yaxis.set_minor_formatter(
            _PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1.2, 0.5))
        )
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (log scale)")
    ax.grid(True, which="major", alpha=0.35)
    top = ax
    if names:
        right = ax.twinx()
        for k, name in enumerate(names):
            handles += right.plot(
                eval_steps,
                np.asarray(evals[name], dtype=float),
                color=f"C{k}",
                marker="o",
                markersize=4,
                linewidth=1.6,
                label=name,
            )
        right.set_ylabel(names[0] if len(names) == 1 else "evaluation metrics")
        values = np.concatenate([np.asarray(evals[n], dtype=float) for n in names])
        values = values[np.isfinite(values)]
        if values.size and values.min() >= 0:
            right.set_ylim(0, max(values.max() * 1.05, 1e-9))
        top = right
    if steps.size == 0 and eval_steps.size == 0:
        _note(ax, "no history yet")
    else:
        top.legend(
            handles=handles,
            loc="lower center",
            bbox_to_anchor=(0.5, 1.0),
            ncol=min(len(handles), 4),
            frameon=False,
        )
    return fig


# --------------------------------------------------------------------------------------------
# Chapter 05: local attention's window
# --------------------------------------------------------------------------------------------


def window_heatmaps(
    panels: Sequence[tuple[str, Any, Any]],
    source_tokens: Sequence[Any],
    target_tokens: Sequence[Any],
    *,
    D: int,
) -> Figure:
    """Attention matrices of one sentence pair stacked vertically, with local attention's window.

    Args:
      panels: ``(title, weights, centers)`` per model: weights ``[Ty, Tx]`` (cropped to the
        tokens), centers ``[Ty]`` the aligned positions p_t, or None for global attention. Each
        p_t is drawn as a red line through the rows, and the window |s - p_t| <= D is shaded.
      source_tokens, target_tokens: the words along the top and down the left.
      D: the window's half-width.

    Returns:
      The figure, at most :data:`BOOK_WIDTH` inches wide, on the 0..1 grey scale.
    """
    if not panels:
        raise ValueError("panels: expected at least one (title, weights, centers) triple, got none")
    source = [str(t) for t in source_tokens]
    target = [str(t) for t in target_tokens]
    rows, cols = len(target), len(source)
    matrices = [_crop(_as_matrix(w, "weights"), rows, cols, "weights") for _, w, _ in panels]
    cell = min(0.26, (BOOK_WIDTH - 1.6) / max(cols, 1))
    font = float(np.clip(cell * 72 * 0.7, FONT_MIN, 10.0))
    width = min(BOOK_WIDTH, cols * cell + 1.6)
    height = len(panels) * (rows * cell + 1.2) + 0.3
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, height), layout="constrained", squeeze=False)
    plt.close(fig)
    norm = Normalize(0.0, 1.0)
    for ax, (title, _, centers), matrix in zip(axes[:, 0], panels, matrices):
        image = ax.imshow(matrix, cmap="gray", norm=norm, interpolation="nearest", aspect="equal")
        ax.xaxis.tick_top()
        ax.set_xticks(np.arange(cols), source, rotation=90)
        ax.set_yticks(np.arange(rows), target)
        ax.tick_params(axis="both", labelsize=font, length=2, pad=2)
        ax.set_title(title, fontsize=11, loc="left")
        if centers is not None:
            p = np.asarray(centers, dtype=float)[:rows]
            y = np.arange(rows)
            ax.fill_betweenx(y, p - D, p + D, color=NAN_COLOR, alpha=0.15, linewidth=0)
            for edge in (p - D, p + D):
                ax.plot(edge, y, color=NAN_COLOR, linewidth=1.2, linestyle="--")
            ax.plot(p, y, color=GOLD_COLOR, linewidth=1.5, label=r"$p_t$")
            ax.set_xlim(-0.5, cols - 0.5)
            ax.set_ylim(rows - 0.5, -0.5)
            ax.legend(loc="lower left", fontsize=9, frameon=True)
        bar = fig.colorbar(image, ax=ax, shrink=0.6, pad=0.02)
        bar.ax.tick_params(labelsize=9)
        bar.set_label("attention weight", fontsize=9)
    return fig


# --------------------------------------------------------------------------------------------
# Chapter 07: attention at scale
# --------------------------------------------------------------------------------------------


def _check_curves(curves: Any, argument: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if not isinstance(curves, Mapping):
        raise ValueError(f"{argument}: expected a mapping name -> (x, y), got {type(curves).__name__}")
    out = {}
    for name, curve in curves.items():
        try:
            x, y = (np.asarray(a, dtype=float) for a in curve)
        except (TypeError, ValueError):
            raise ValueError(f"{argument}[{name!r}]: expected (x, y), got {type(curve).__name__}") from None
        if x.ndim != 1 or x.shape != y.shape:
            raise ValueError(f"{argument}[{name!r}]: expected x and y of the same 1-D shape, got {x.shape} "
                             f"and {y.shape}")
        out[str(name)] = (x, y)
    return out


def scaling_panels(
    panels: Mapping[str, Mapping[str, Any]],
    *,
    xlabel: str = "sequence length n",
    dashed: Mapping[str, Any] | None = None,
) -> Figure:
    """Cost against size on log–log axes: one panel per quantity, stacked, one line per method.

    Args:
      panels: ``panel title (its y label) -> {method -> (x, y)}``; non-finite or non-positive
        values are left out of a line.
      xlabel: label of the shared x axis (base-2 ticks).
      dashed: ``method -> x values``: the points of a method drawn hollow and joined by a dashed
        line (e.g. memory known from the compiled analysis where the method was not run).

    Returns:
      The figure, :data:`BOOK_WIDTH` wide, one row per panel; the same colour and marker for a
      method in every panel.
    """
    if not isinstance(panels, Mapping) or not panels:
        raise ValueError(f"panels: expected a non-empty mapping title -> curves, got {panels!r}")
    checked = {title: _check_curves(curves, f"panels[{title!r}]") for title, curves in panels.items()}
    dashed = {k: set(np.asarray(v, dtype=float).tolist()) for k, v in (dashed or {}).items()}
    methods = list(dict.fromkeys(name for curves in checked.values() for name in curves))
    colors = {name: f"C{i}" for i, name in enumerate(methods)}
    markers = {name: "osD^vP*X"[i % 8] for i, name in enumerate(methods)}
    fig, axes = _new_figure((min(BOOK_WIDTH, 6.0), 2.9 * len(checked)), nrows=len(checked), sharex=True,
                            squeeze=False)
    for ax, (title, curves) in zip(axes[:, 0], checked.items()):
        for name, (x, y) in curves.items():
            ok = np.isfinite(y) & (y > 0)
            hollow = np.array([v in dashed.get(name, ()) for v in x]) & ok
            solid = ok & ~hollow
            ax.plot(x[solid], y[solid], marker=markers[name], color=colors[name], linewidth=1.6, markersize=5,
                    label=name)
            if hollow.any():
                # join the last solid point to the hollow ones with a dashed line
                last = np.flatnonzero(solid)
                idx = np.concatenate([last[-1:], np.flatnonzero(hollow)]) if last.size else np.flatnonzero(hollow)
                ax.plot(x[idx], y[idx], linestyle="--", color=colors[name], linewidth=1.2)
                ax.plot(x[hollow], y[hollow], marker=markers[name], color=colors[name], linestyle="none",
                        markersize=5, markerfacecolor="white")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_ylabel(title)
        ax.grid(True, which="major", alpha=0.35)
        ax.legend(frameon=False, fontsize=9)
    axes[-1, 0].set_xlabel(xlabel)
    return fig


def recall_curves(curves: Mapping[str, Any], *, d: int, xlabel: str = "stored pairs N") -> Figure:
    """Recall against the number of stored key–value pairs, one line per memory; a dotted line at ``N = d``.

    Args:
      curves: ``name -> (N values, recall in [0, 1])``.
      d: the key dimension, marked on the x axis.
    """
    checked = _check_curves(curves, "curves")
    _checks.positive_int("d", d)
    fig, ax = _new_figure((min(BOOK_WIDTH, 6.0), 4.2))
    for i, (name, (x, y)) in enumerate(checked.items()):
        ax.plot(x, y, marker="osD^vP*X"[i % 8], markersize=5, linewidth=1.6, label=name)
    ax.axvline(d, color="0.5", linestyle=":", linewidth=1)
    ax.text(d, 1.02, f" N = d = {d}", fontsize=9, color="0.35", va="bottom")
    ax.set_xscale("log", base=2)
    xs = sorted({float(v) for x, _ in checked.values() for v in x})
    if xs:
        ax.set_xticks(xs, [f"{v:g}" for v in xs])
        ax.minorticks_off()
    ax.set_ylim(0, 1.1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("recall")
    ax.grid(True, alpha=0.35)
    ax.legend(frameon=False, fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    return fig


def ring_steps(schedule: Any) -> Figure:
    """What each device holds at each step of ring attention.

    Args:
      schedule: ``[steps, devices]`` ints, the key/value block that a device holds at a step
        (:func:`attention_course.efficient.ring_schedule`). Device ``i`` always keeps query block
        ``i``.

    Returns:
      A grid, one row per step and one column per device; each cell names the blocks ``Q_i`` and
      ``K/V_j`` it combines, coloured by ``j``; the arrows under the grid show where the key/value
      blocks go after each step.
    """
    s = np.asarray(schedule)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or s.size == 0:
        raise ValueError(f"schedule: expected a square [steps, devices] array, got shape {s.shape}")
    P = s.shape[1]
    width = min(BOOK_WIDTH, 0.75 * P + 1.2)
    fig, ax = _new_figure((width, 0.5 * P + 1.3))
    cmap = plt.get_cmap("tab10" if P <= 10 else "viridis")
    for step in range(P):
        for dev in range(P):
            j = int(s[step, dev])
            ax.add_patch(Rectangle((dev, step), 1, 1, facecolor=cmap(j % 10 if P <= 10 else j / P), alpha=0.35,
                                   edgecolor="white", linewidth=1.5))
            ax.text(dev + 0.5, step + 0.5, f"Q{dev}\nKV{j}", ha="center", va="center", fontsize=8, linespacing=0.95)
    ax.set_xlim(0, P)
    ax.set_ylim(P, 0)
    ax.set_xticks(np.arange(P) + 0.5, [str(i) for i in range(P)])
    ax.set_yticks(np.arange(P) + 0.5, [str(i + 1) for i in range(P)])
    ax.set_xlabel("device (keeps its query block Q)   →   sends its K/V block to the next")
    ax.set_ylabel("step")
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return fig
