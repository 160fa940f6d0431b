"""Tests of attention_course.plots: structure of the figures (axes, labels, cropping) and that
they render to PNG."""

import math
from types import SimpleNamespace

import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from attention_course import plots  # noqa: E402
from attention_course.metrics import Bucket  # noqa: E402

SOURCE = ["the", "black", "cat", "<eos>"]
TARGET = ["le", "chat", "noir", "<eos>"]


def padded_weights(rows=6, cols=7, seed=0):
    """A padded [rows, cols] matrix whose real block is TARGET x SOURCE."""
    w = np.random.default_rng(seed).random((rows, cols))
    return w / w.sum(axis=1, keepdims=True)


def tick_texts(labels):
    return [label.get_text() for label in labels]


def save(fig, tmp_path, name):
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=60)
    assert path.stat().st_size > 1000


# --- alignment_heatmap ---------------------------------------------------------------------


def test_heatmap_labels_crop_and_colorbar(tmp_path):
    fig = plots.alignment_heatmap(padded_weights(), SOURCE, TARGET, title="example")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes  # the colorbar is an inset of the heatmap axes
    assert len(ax.child_axes) == 1
    assert ax.images[0].get_array().shape == (len(TARGET), len(SOURCE))
    assert tick_texts(ax.get_xticklabels()) == SOURCE
    assert tick_texts(ax.get_yticklabels()) == TARGET
    assert ax.get_title() == "example"
    assert ax.images[0].get_clim() == (0.0, 1.0)
    save(fig, tmp_path, "heatmap")


def test_heatmap_does_not_leave_figures_in_pyplot():
    before = plt.get_fignums()
    plots.alignment_heatmap(padded_weights(), SOURCE, TARGET)
    assert plt.get_fignums() == before


def test_heatmap_draws_gold_links():
    gold = {(0, 0), (1, 2), (2, 1), (3, 3)}
    fig = plots.alignment_heatmap(padded_weights(), SOURCE, TARGET, gold=gold)
    ax = fig.axes[0]
    corners = {
        (round(p.get_y() + 0.5), round(p.get_x() + 0.5))
        for p in ax.patches
        if isinstance(p, Rectangle)
    }
    assert corners == gold
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["gold link"]


def test_heatmap_accepts_jax_and_tokens_of_any_type(tmp_path):
    fig = plots.alignment_heatmap(jnp.asarray(padded_weights()), [5, 6, 7], (8, 9))
    ax = fig.axes[0]
    assert tick_texts(ax.get_xticklabels()) == ["5", "6", "7"]
    assert ax.images[0].get_array().shape == (2, 3)
    save(fig, tmp_path, "heatmap_jax")


def test_heatmap_nan_cells_are_masked(tmp_path):
    w = padded_weights()
    w[1, 2] = np.nan
    fig = plots.alignment_heatmap(w, SOURCE, TARGET)
    array = fig.axes[0].images[0].get_array()
    assert array.mask[1, 2] and array.mask.sum() == 1
    save(fig, tmp_path, "heatmap_nan")


def test_heatmap_scores_outside_unit_interval_use_their_range():
    w = np.array([[-2.0, 3.0], [1.0, 0.0]])
    fig = plots.alignment_heatmap(w, ["a", "b"], ["x", "y"])
    assert fig.axes[0].images[0].get_clim() == (-2.0, 3.0)


def test_heatmap_empty_tokens(tmp_path):
    fig = plots.alignment_heatmap(np.zeros((3, 3)), [], TARGET[:2])
    assert len(fig.axes[0].images) == 0
    save(fig, tmp_path, "heatmap_empty")


def test_heatmap_into_given_axes(tmp_path):
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 4), layout="constrained")
    plt.close(fig)
    assert plots.alignment_heatmap(padded_weights(), SOURCE, TARGET, ax=right) is fig
    assert right.images and not left.images
    save(fig, tmp_path, "heatmap_in_axes")


@pytest.mark.parametrize(
    ("weights", "gold", "argument"),
    [
        (np.zeros((3, 4)), None, "weights"),  # fewer rows than target tokens
        (np.zeros((4, 3)), None, "weights"),  # fewer columns than source tokens
        (np.zeros(16), None, "weights"),
        (np.zeros((4, 4)), [(0, 4)], "gold"),
    ],
)
def test_heatmap_rejects_bad_inputs(weights, gold, argument):
    with pytest.raises(ValueError, match=f"^{argument}:"):
        plots.alignment_heatmap(weights, SOURCE, TARGET, gold=gold)


def test_heatmap_60x60_labels_fit_their_cells(tmp_path):
    n = 60
    source = [f"word{k}" for k in range(n)]
    target = [f"mot{k}" for k in range(n)]
    fig = plots.alignment_heatmap(np.eye(n), source, target, gold={(i, i) for i in range(n)})
    width, height = fig.get_size_inches()
    assert width <= 16 and height <= 16
    fig.canvas.draw()
    ax = fig.axes[0]
    cell_px = ax.get_window_extent().height / n
    label = ax.get_yticklabels()[0]
    assert 5 <= label.get_fontsize() and label.get_fontsize() * fig.dpi / 72 <= cell_px
    assert tick_texts(ax.get_xticklabels()) == source
    save(fig, tmp_path, "heatmap_60")


# --- weights_grid --------------------------------------------------------------------------


def test_weights_grid_shares_one_colour_scale(tmp_path):
    diagonal = np.eye(5)
    learned = padded_weights(5, 5)
    scores = np.full((5, 5), 2.0)  # outside [0, 1]: the shared scale becomes 0..2
    fig = plots.weights_grid(
        [diagonal, learned, scores],
        ["diagonal", "learned", "scores"],
        source_tokens=SOURCE,
        target_tokens=TARGET,
    )
    assert len(fig.axes) == 3
    clims = {ax.images[0].get_clim() for ax in fig.axes}
    assert clims == {(0.0, 2.0)}
    assert [ax.get_title() for ax in fig.axes] == ["diagonal", "learned", "scores"]
    for ax in fig.axes:
        assert ax.images[0].get_array().shape == (4, 4)
        assert tick_texts(ax.get_xticklabels()) == SOURCE
    assert tick_texts(fig.axes[0].get_yticklabels()) == TARGET
    assert set(tick_texts(fig.axes[1].get_yticklabels())) <= {""}
    save(fig, tmp_path, "grid")


def test_weights_grid_without_tokens_and_with_nan_and_empty(tmp_path):
    all_nan = np.full((3, 4), np.nan)
    fig = plots.weights_grid([np.eye(3, 4), all_nan, np.zeros((0, 4))], ["a", "b", "c"])
    assert len(fig.axes) == 3
    assert fig.axes[0].images[0].get_array().shape == (3, 4)
    assert fig.axes[1].images[0].get_array().mask.all()
    assert len(fig.axes[2].images) == 0
    save(fig, tmp_path, "grid_no_tokens")


def test_weights_grid_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"^titles: expected 2 titles.*got 1"):
        plots.weights_grid([np.eye(2), np.eye(2)], ["one"])
    with pytest.raises(ValueError, match=r"^matrices\[1\]:"):
        plots.weights_grid([np.eye(4), np.eye(2)], ["a", "b"], source_tokens=SOURCE)
    with pytest.raises(ValueError, match="^matrices:"):
        plots.weights_grid([], [])


# --- metric_by_length ----------------------------------------------------------------------


def buckets(values):
    edges = [(1, 10), (11, 20), (21, 30)]
    return [
        Bucket(lo, hi, 0 if math.isnan(v) else 5, v)
        for (lo, hi), v in zip(edges, values, strict=True)
    ]


def test_metric_by_length_with_buckets(tmp_path):
    curves = {"RNNencdec": buckets([25.0, 18.0, math.nan]), "RNNsearch": buckets([27, 26, 25])}
    fig = plots.metric_by_length(curves, title="BLEU by length")
    (ax,) = fig.axes
    assert len(ax.lines) == 2
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [5.5, 15.5, 25.5])
    assert tick_texts(ax.get_xticklabels()) == ["1\u201310", "11\u201320", "21\u201330"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["RNNencdec", "RNNsearch"]
    assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] >= 27
    assert ax.get_ylabel() == "BLEU" and ax.get_xlabel() == "source length"
    save(fig, tmp_path, "by_length")


def test_metric_by_length_with_xy_and_all_nan(tmp_path):
    fig = plots.metric_by_length(
        {"a": ([5, 15], [0.5, 0.25]), "b": (np.array([5.0]), np.array([np.nan]))},
        ylabel="exact match",
    )
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and ax.get_ylim()[0] == 0
    save(fig, tmp_path, "by_length_xy")
    fig = plots.metric_by_length({"only nan": buckets([math.nan] * 3)})
    assert fig.axes[0].get_ylim() == (0.0, 1.0)
    save(fig, tmp_path, "by_length_nan")


def test_metric_by_length_empty_and_bad_inputs(tmp_path):
    fig = plots.metric_by_length({})
    assert len(fig.axes[0].lines) == 0 and fig.axes[0].get_legend() is None
    save(fig, tmp_path, "by_length_empty")
    with pytest.raises(ValueError, match=r"^curves\['a'\]:"):
        plots.metric_by_length({"a": ([1, 2, 3], [1, 2])})
    with pytest.raises(ValueError, match=r"^curves\['a'\]:"):
        plots.metric_by_length({"a": 3.0})
    with pytest.raises(ValueError, match="^curves:"):
        plots.metric_by_length([([1], [2])])


# --- training_curves -----------------------------------------------------------------------


def make_history(n_steps=50, evals=("accuracy", "exact match")):
    steps = list(range(0, 10 * n_steps, 10))
    eval_steps = steps[::10]
    return SimpleNamespace(
        step=steps,
        loss=[2.0 * math.exp(-s / 200) + 0.05 for s in steps],
        eval_step=eval_steps,
        evals={name: [min(1.0, s / 400) for s in eval_steps] for name in evals},
    )


def test_training_curves_loss_and_metrics(tmp_path):
    fig = plots.training_curves(make_history())
    loss_ax, metric_ax = fig.axes
    assert loss_ax.get_yscale() == "log"
    assert len(loss_ax.lines) == 1 and len(metric_ax.lines) == 2
    legend = metric_ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [
        "training loss",
        "accuracy",
        "exact match",
    ]
    assert metric_ax.get_ylim()[0] == 0
    save(fig, tmp_path, "training")


def test_training_curves_metric_subset_and_no_metrics(tmp_path):
    fig = plots.training_curves(make_history(), metrics=["accuracy"])
    assert len(fig.axes[1].lines) == 1 and fig.axes[1].get_ylabel() == "accuracy"
    fig = plots.training_curves(make_history(evals=()))
    assert len(fig.axes) == 1
    save(fig, tmp_path, "training_loss_only")


def test_training_curves_empty_history(tmp_path):
    empty = SimpleNamespace(step=[], loss=[], eval_step=[], evals={})
    fig = plots.training_curves(empty)
    assert len(fig.axes) == 1
    save(fig, tmp_path, "training_empty")


def test_training_curves_rejects_bad_inputs():
    with pytest.raises(ValueError, match="^metrics:.*unknown"):
        plots.training_curves(make_history(), metrics=["bleu"])
    history = make_history()
    history.loss = history.loss[:-1]
    with pytest.raises(ValueError, match=r"^history.loss: expected 50 values.*got 49"):
        plots.training_curves(history)
    history = make_history()
    history.evals["accuracy"] = [0.5]
    with pytest.raises(ValueError, match=r"^history.evals\['accuracy'\]:"):
        plots.training_curves(history)


def test_heatmap_colorbar_label():
    fig = plots.alignment_heatmap(padded_weights(), SOURCE, TARGET, label="gold link")
    labels = [child.get_ylabel() for ax in fig.axes for child in ax.child_axes]
    assert "gold link" in labels


# --- figures for the book's column -----------------------------------------------------------


def test_book_style_is_applied_on_import():
    assert plt.rcParams["figure.dpi"] == plots.BOOK_STYLE["figure.dpi"]
    assert plt.rcParams["font.size"] >= 11


def _drawn_width_inches(fig, tmp_path, name):
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    from PIL import Image

    return Image.open(path).size[0] / 100


def test_heatmaps_stack_fit_the_column_with_readable_labels(tmp_path):
    words = [f"w{k}" for k in range(16)]
    panels = [dict(weights=np.eye(16), source=words, target=words, title=str(k)) for k in range(4)]
    for ncols in (1, 2):
        fig = plots.heatmaps(panels, ncols=ncols)
        assert len([ax for ax in fig.axes if ax.get_images()]) == 4
        assert _drawn_width_inches(fig, tmp_path, f"stack{ncols}") <= 6.72
        fig.canvas.draw()
        sizes = [t.get_fontsize() for ax in fig.axes for t in ax.get_yticklabels() if t.get_text()]
        assert sizes and min(sizes) >= plots.FONT_MIN
    with pytest.raises(ValueError, match="panels"):
        plots.heatmaps([])
    with pytest.raises(ValueError, match="colorbar"):
        plots.heatmaps(panels, colorbar="some")


def test_metric_panels_and_accuracy_by_position(tmp_path):
    buckets = [Bucket(1, 10, 5, 90.0), Bucket(11, 20, 5, 40.0)]
    fig = plots.metric_panels({"copy": {"a": buckets}, "reverse": {"a": buckets, "b": buckets}},
                              ylim=(0, 100))
    assert len(fig.axes) == 2 and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b"]
    assert _drawn_width_inches(fig, tmp_path, "panels") <= 6.72
    fig = plots.accuracy_by_position({"m": (np.array([0.5, 0.25, 1.0]), np.array([20, 20, 3]))})
    assert len(fig.axes[0].lines[0].get_xdata()) == 2  # the rare position is not drawn


def test_lattice_moves(tmp_path):
    fig = plots.lattice_moves(3, 2, {((0, 0), (0, 1)): 0.6, ((0, 0), (1, 0)): 0.4},
                              [(0, 0), (0, 1)], np.full((3, 3), 0.5))
    assert _drawn_width_inches(fig, tmp_path, "lattice") <= 6.72
    with pytest.raises(ValueError, match="occupancy"):
        plots.lattice_moves(3, 2, {}, [], np.zeros((2, 2)))
