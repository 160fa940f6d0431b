import itertools

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from attention_course import train
from toy_models import ToyAttention, toy_batch, toy_loss


def _stream(seed: int, widths=(3, 5), batch=8, vocab=7):
    rng = np.random.default_rng(seed)
    while True:
        width = widths[rng.integers(len(widths))]
        seqs = [list(rng.integers(3, vocab, size=rng.integers(1, width + 1))) for _ in range(batch)]
        yield toy_batch(seqs, width)


def test_step_compiles_once_per_shape_not_per_batch():
    model = ToyAttention()
    trainer = train.Trainer(model, toy_loss, optax.adam(1e-2))
    history = trainer.run(_stream(0), 30, progress=False, log_every=10)
    assert trainer.traces == 2  # two widths -> two shapes -> two traces, over 30 batches
    assert len(trainer.compiled) == 2 and len(history.compiles) == 2
    assert history.compile_seconds > 0 and history.steps == 30
    trainer.run(_stream(1), 10, progress=False)
    assert trainer.traces == 2  # a second run reuses the compiled steps


def test_loss_falls_and_model_memorises_eight_pairs():
    rng = np.random.default_rng(0)
    pairs = [list(rng.integers(3, 7, size=4)) for _ in range(8)]
    batch = toy_batch(pairs, 4)
    model = ToyAttention(hidden=16)
    history = train.fit(model, toy_loss, itertools.repeat(batch), steps=300, learning_rate=2e-2,
                        progress=False, log_every=50)
    assert history.loss[-1] < 0.1 * history.loss[0]
    logits = model(batch.source, batch.source_lengths, batch.target_in)
    pred = np.asarray(logits.argmax(-1))
    assert np.all(pred[batch.target_mask] == batch.target_out[batch.target_mask])


def test_same_seed_same_result():
    def run():
        model = ToyAttention(seed=3)
        train.fit(model, toy_loss, _stream(5), steps=12, progress=False)
        return nnx.state(model, nnx.Param)

    a, b = run(), run()
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_evaluation_and_history():
    calls = []

    def eval_fn(model):
        calls.append(1)
        return {"accuracy": 0.5 * len(calls)}

    history = train.fit(ToyAttention(), toy_loss, _stream(2), steps=20, eval_fn=eval_fn, eval_every=5,
                        log_every=4, progress=False)
    assert history.eval_step == [5, 10, 15, 20]
    assert history.evals["accuracy"] == [0.5, 1.0, 1.5, 2.0]
    assert history.step == [4, 8, 12, 16, 20] and len(history.loss) == 5
    assert history.last("accuracy") == 2.0 and history.steps_per_second > 0
    with pytest.raises(ValueError, match="metric"):
        history.last("bleu")


def test_training_updates_the_model_in_place():
    model = ToyAttention()
    before = np.asarray(model.out.kernel[...]).copy()
    train.fit(model, toy_loss, _stream(3), steps=3, progress=False)
    assert not np.allclose(before, model.out.kernel[...])


def test_progress_bar_runs(capsys):
    train.fit(ToyAttention(), toy_loss, _stream(4), steps=3, progress=True, desc="toy")


def test_sequence_cross_entropy_by_hand():
    logits = np.log(np.array([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]], np.float32))
    targets = np.array([[0, 2]])
    mask = np.array([[True, False]])
    np.testing.assert_allclose(train.sequence_cross_entropy(logits, targets, mask), -np.log(0.5), rtol=1e-6)
    mask = np.array([[True, True]])
    np.testing.assert_allclose(train.sequence_cross_entropy(logits, targets, mask),
                               -(np.log(0.5) + np.log(0.8)) / 2, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(steps=0), "steps"), (dict(steps=5, log_every=0), "log_every"),
     (dict(steps=5, eval_every=0), "eval_every"), (dict(steps=5, learning_rate=-1.0), "learning_rate")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train.fit(ToyAttention(), toy_loss, _stream(0), progress=False, **kwargs)


def test_stream_too_short_and_bad_model():
    batch = toy_batch([[3, 4]], 2)
    with pytest.raises(ValueError, match="batches"):
        train.fit(ToyAttention(), toy_loss, [batch] * 2, steps=3, progress=False)
    with pytest.raises(ValueError, match="model"):
        train.fit(object(), toy_loss, [batch], steps=1, progress=False)
    with pytest.raises(ValueError, match="shape|agree"):
        train.sequence_cross_entropy(np.zeros((1, 2, 3)), np.zeros((1, 3), int), np.ones((1, 3), bool))


def test_models_of_the_same_structure_share_compiled_steps():
    first = train.Trainer(ToyAttention(seed=1), toy_loss, train.default_optimizer(1e-2))
    first.run(_stream(0, widths=(4,)), 3, progress=False)
    second = train.Trainer(ToyAttention(seed=2), toy_loss, train.default_optimizer(1e-2))
    history = second.run(_stream(1, widths=(4,)), 3, progress=False)
    assert first.traces == 1 and second.traces == 0 and history.compiles == []
    assert train.default_optimizer(1e-2) is train.default_optimizer(1e-2)
    # sharing executables does not mix up parameters: each model trained on its own
    assert not np.allclose(first.model.out.kernel[...], second.model.out.kernel[...])


def _adam_step_sizes(optimizer, steps):
    """Size of each Adam update for a constant unit gradient: exactly the learning rate of that step."""
    params = {"w": np.zeros(3, np.float32)}
    state = optimizer.init(params)
    sizes = []
    for _ in range(steps):
        updates, state = optimizer.update({"w": np.full(3, 0.1, np.float32)}, state, params)
        sizes.append(float(np.abs(updates["w"][0])))
    return np.array(sizes)


def test_default_optimizer_cosine_decay():
    constant = _adam_step_sizes(train.default_optimizer(1e-2), 30)
    np.testing.assert_allclose(constant, 1e-2, rtol=1e-3)
    decayed = _adam_step_sizes(train.default_optimizer(1e-2, decay_steps=20), 30)
    # optax's cosine schedule: lr * (f + (1 - f) * (1 + cos(pi t / T)) / 2), held at lr * f after T
    t = np.minimum(np.arange(30), 20)
    f = train.FINAL_LEARNING_RATE_FRACTION
    expected = 1e-2 * (f + (1 - f) * 0.5 * (1 + np.cos(np.pi * t / 20)))
    np.testing.assert_allclose(decayed, expected, rtol=1e-3)
    assert train.default_optimizer(1e-2, decay_steps=20) is train.default_optimizer(1e-2, decay_steps=20)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="decay_steps"):
            train.default_optimizer(1e-2, decay_steps=bad)


def test_fit_with_decay_uses_the_run_length():
    model = ToyAttention()
    history = train.fit(model, toy_loss, _stream(0, widths=(4,)), steps=6, learning_rate=1e-2, decay=True,
                        progress=False)
    assert history.steps == 6
    with pytest.raises(ValueError, match="steps"):
        train.fit(model, toy_loss, _stream(0), steps=2.5, decay=True, progress=False)


def test_progress_bars_are_text_when_the_book_asks(monkeypatch):
    """The book build sets ATTENTION_COURSE_PROGRESS=text: no widget may reach its pages."""
    from tqdm.std import tqdm as text_bar

    from attention_course import runtime

    monkeypatch.setenv(runtime.PROGRESS_ENV, "text")
    bar = train._progress_bar(10, "x")
    try:
        assert type(bar) is text_bar
    finally:
        bar.close()


def test_compiler_options_keep_the_numbers(monkeypatch):
    # The train step compiles with _compiler_options() (LLVM level 1 on the CPU,
    # and XLA's own matrix products where it has YNNPACK): the same losses and
    # parameters as XLA's defaults, to float32 rounding.
    results = []
    for options in (train._compiler_options(), None):
        monkeypatch.setattr(train, "_compiler_options", lambda options=options: options)
        train._COMPILED.clear()
        trainer = train.Trainer(ToyAttention(), toy_loss, optax.adam(1e-2))
        batches = itertools.islice(_stream(0, widths=(5,)), 5)
        losses = [float(trainer.step(batch)[0]) for batch in batches]
        results.append((losses, jax.tree_util.tree_leaves(trainer.params)))
    train._COMPILED.clear()
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_compiler_options_are_known_to_this_xla():
    # Every option is one this XLA accepts (the YNNPACK one only where it exists).
    options = train._compiler_options()
    if jax.default_backend() == "cpu":
        assert options["xla_backend_optimization_level"] == 1
    jax.jit(lambda x: 2.0 * x).lower(1.0).compile(options)
