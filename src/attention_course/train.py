"""One generic training loop for every chapter.

A chapter supplies a model (a Flax NNX module), a loss function ``loss_fn(model, batch)`` and a
stream of batches; :func:`fit` does the rest: an optax optimiser (Adam with gradient clipping by
default), a jit-compiled train step, a tqdm progress bar, periodic evaluation, and a
:class:`History` for the training-curve plots.

The train step is compiled once per batch *shape*. Batches from :func:`attention_course.tasks.batches`
are padded to a fixed width per length bucket, so a run compiles once per bucket and never per
batch; :attr:`History.compiles` records how many compilations happened and how long each took.
Internally the model is split into its parameters and the rest of its state (``nnx.split``) and the
step is a pure function of arrays, which keeps per-step Python overhead small on a CPU.
"""

from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.std import tqdm as _tqdm_text

from attention_course import _checks, runtime

__all__ = ["History", "fit", "sequence_cross_entropy", "default_optimizer", "Trainer"]


def sequence_cross_entropy(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean negative log-likelihood per real target token (teacher forcing).

    -1/N sum_{b,i: mask} log p(y_i | y_<i, x), with N the number of real tokens.

    Args:
      logits: ``[B, T_y, V]`` unnormalised scores.
      targets: ``[B, T_y]`` int, the tokens to predict (y_1 .. y_n EOS, PAD after).
      mask: ``[B, T_y]`` bool, True on real target tokens.
    """
    if logits.ndim != 3 or logits.shape[:2] != targets.shape or targets.shape != mask.shape:
        raise ValueError(
            f"logits [B, T, V], targets [B, T] and mask [B, T] must agree: got logits {tuple(logits.shape)}, "
            f"targets {tuple(targets.shape)}, mask {tuple(mask.shape)}"
        )
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)  # [B, T]
    mask = mask.astype(nll.dtype)
    return jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1.0)


@functools.lru_cache(maxsize=None)
def default_optimizer(learning_rate: float = 3e-3, clip: float = 1.0,
                      decay_steps: int | None = None) -> optax.GradientTransformation:
    """Adam with the global gradient norm clipped (recurrent nets occasionally produce large gradients).

    With ``decay_steps``, the learning rate follows a cosine from ``learning_rate`` down to
    ``FINAL_LEARNING_RATE_FRACTION`` of it over that many steps (and stays there); without, it is
    constant. The same arguments return the same (stateless) object, so models of the same
    structure trained with it share their compiled train steps.
    """
    if not learning_rate > 0:
        raise ValueError(f"learning_rate: expected a positive number, got {learning_rate}")
    if decay_steps is None:
        rate = learning_rate
    elif isinstance(decay_steps, bool) or not isinstance(decay_steps, int) or decay_steps < 1:
        raise ValueError(f"decay_steps: expected a positive int or None, got {decay_steps!r}")
    else:
        rate = optax.cosine_decay_schedule(learning_rate, decay_steps, alpha=FINAL_LEARNING_RATE_FRACTION)
    return optax.chain(optax.clip_by_global_norm(clip), optax.adam(rate))


FINAL_LEARNING_RATE_FRACTION = 0.05


@dataclass
class History:
    """What happened during training, for plots and for the prose.

    step, loss: the training loss averaged over each logging interval, at the interval's last step.
    eval_step, evals: each metric returned by ``eval_fn``, aligned with ``eval_step``.
    compiles: one entry per batch shape compiled during the run: ``{"shapes": ..., "seconds": ...}``
      (a shape already compiled for a model of the same structure is reused, and not listed).
    train_seconds: wall time of the training steps, compilation excluded.
    steps_per_second: steps / train_seconds.
    """

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    eval_step: list[int] = field(default_factory=list)
    evals: dict[str, list[float]] = field(default_factory=dict)
    compiles: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    steps: int = 0

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.train_seconds if self.train_seconds > 0 else float("nan")

    @property
    def compile_seconds(self) -> float:
        """Time of the first compilation of the train step (the first batch shape)."""
        return self.compiles[0]["seconds"] if self.compiles else float("nan")

    def last(self, metric: str) -> float:
        """The last evaluated value of ``metric`` (or the last logged loss for "loss")."""
        if metric == "loss":
            return self.loss[-1]
        if metric not in self.evals or not self.evals[metric]:
            raise ValueError(f"metric: {metric!r} was never evaluated; known: {sorted(self.evals)}")
        return self.evals[metric][-1]

    def _record_eval(self, step: int, metrics: Mapping[str, float]) -> None:
        self.eval_step.append(step)
        for key, value in metrics.items():
            self.evals.setdefault(key, []).append(float(value))


def _shape_key(tree) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    # str(dtype), not np.dtype(...): a model's state may hold PRNG keys (nnx.Dropout's rngs),
    # whose dtype (key<fry>) NumPy does not know.
    return (treedef, tuple((np.shape(x), str(getattr(x, "dtype", None) or np.result_type(x)))
                           for x in leaves))


def _compiler_options() -> dict | None:
    """XLA options for compiling a train step on this backend.

    On the CPU, LLVM's optimisation level 1 instead of 3 compiled the chapters'
    train steps 25-30 % faster, and they ran as fast: the time goes into
    matrix products and loops, which that level does not change. Where XLA
    hands matrix products to YNNPACK (jaxlib 0.8 on), its own kernels ran the
    chapters' small recurrent steps 6-14 % faster on two cores
    (tests/benchmarks/bench_torch.py, issue 16). Other backends keep their
    defaults.
    """
    return _options_for(jax.default_backend())


@functools.cache
def _options_for(backend: str) -> dict | None:
    if backend != "cpu":
        return None
    options = {"xla_backend_optimization_level": 1}
    without_ynnpack = dict(options, xla_cpu_experimental_ynn_fusion_type="")
    try:  # an XLA without YNNPACK (jax 0.7, Colab's) rejects the option
        jax.jit(lambda x: x + 1.0).lower(1.0).compile(without_ynnpack)
    except Exception:  # noqa: BLE001 (the probe's only question: is it known?)
        return options
    return without_ynnpack


# Compiled train steps shared by every Trainer: models with the same structure (equal nnx GraphDefs),
# loss function and optimiser object reuse each other's executables for the same shapes, so e.g. a
# chapter that trains one architecture on two datasets compiles each bucket shape once.
_COMPILED: dict[tuple, Any] = {}


class Trainer:
    """The compiled train step of one model, reusable across calls to :meth:`run`.

    ``Trainer(model, loss_fn, optimizer)`` splits the model into parameters and other state,
    initialises the optimiser, and compiles ``step`` lazily, once per batch shape.
    ``loss_fn(model, batch)`` returns a scalar loss, or ``(loss, metrics)`` with a dict of scalars.
    """

    def __init__(self, model: nnx.Module, loss_fn: Callable, optimizer: optax.GradientTransformation | None = None):
        if not isinstance(model, nnx.Module):
            raise ValueError(f"model: expected a flax.nnx.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise ValueError(f"loss_fn: expected a callable loss_fn(model, batch), got {type(loss_fn).__name__}")
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer if optimizer is not None else default_optimizer()
        self.graphdef, self.params, self.rest = nnx.split(model, nnx.Param, ...)
        self.opt_state = self.optimizer.init(self.params)
        self.compiled: dict[tuple, Any] = {}
        self.traces = 0  # how many times the step was traced (the no-recompile test reads this)
        self.compile_log: list[dict[str, Any]] = []

    def _step(self, params, rest, opt_state, batch):
        self.traces += 1  # runs at trace time only
        graphdef, loss_fn, optimizer = self.graphdef, self.loss_fn, self.optimizer

        # The non-parameter state (dropout's RNG counter, say) is copied inside the differentiated
        # function: merged as it comes, its Variables would belong to the outer trace, and a
        # Dropout's update of its counter would fail ("Cannot mutate RngCount from a different
        # trace level"). A tree map rebuilds them in the gradient's trace, in every flax version.
        def objective(p, r):
            model = nnx.merge(graphdef, p, jax.tree.map(lambda x: x, r))
            out = loss_fn(model, batch)
            loss, metrics = out if isinstance(out, tuple) else (out, {})
            _, _, new_rest = nnx.split(model, nnx.Param, ...)
            return loss, (metrics, new_rest)

        (loss, (metrics, new_rest)), grads = jax.value_and_grad(objective, has_aux=True)(params, rest)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, new_rest, opt_state, loss, metrics

    def step(self, batch) -> tuple[jax.Array, dict]:
        """One optimisation step on ``batch``; returns (loss, metrics) as device arrays."""
        key = _shape_key(batch)
        fn = self.compiled.get(key)
        args = (self.params, self.rest, self.opt_state, batch)
        if fn is None:
            shared_key = (self.graphdef, self.loss_fn, self.optimizer, _shape_key(args))
            fn = _COMPILED.get(shared_key)
            if fn is None:
                start = time.perf_counter()
                fn = jax.jit(self._step).lower(*args).compile(_compiler_options())
                seconds = time.perf_counter() - start
                _COMPILED[shared_key] = fn
                self.compile_log.append({"shapes": [s for s, _ in key[1]], "seconds": seconds})
            self.compiled[key] = fn
        self.params, self.rest, self.opt_state, loss, metrics = fn(*args)
        return loss, metrics

    def sync_model(self) -> nnx.Module:
        """Write the trained parameters back into the model object and return it."""
        nnx.update(self.model, self.params, self.rest)
        return self.model

    def run(self, batches: Iterable, steps: int, *, eval_fn: Callable[[nnx.Module], Mapping[str, float]] | None = None,
            eval_every: int | None = None, log_every: int = 25, progress: bool = True, desc: str = "training",
            history: History | None = None) -> History:
        """Train for ``steps`` steps; see :func:`fit` for the arguments."""
        if steps <= 0:
            raise ValueError(f"steps: expected a positive number of steps, got {steps}")
        if log_every <= 0:
            raise ValueError(f"log_every: expected a positive interval, got {log_every}")
        if eval_every is not None and eval_every <= 0:
            raise ValueError(f"eval_every: expected a positive interval or None, got {eval_every}")
        history = history if history is not None else History()
        self.compile_log = history.compiles
        iterator: Iterator = iter(batches)
        start_step = history.steps
        pending: list[jax.Array] = []
        bar = _progress_bar(steps, desc) if progress else None
        try:
            for k in range(1, steps + 1):
                try:
                    batch = next(iterator)
                except StopIteration:
                    raise ValueError(f"batches: the stream ended after {k - 1} of {steps} steps") from None
                n_compiled = len(self.compiled)
                t0 = time.perf_counter()
                loss, _ = self.step(batch)
                pending.append(loss)
                if len(self.compiled) == n_compiled:  # compilation time is not training time
                    history.train_seconds += time.perf_counter() - t0
                step = start_step + k
                if k % log_every == 0 or k == steps:
                    t0 = time.perf_counter()
                    mean_loss = float(jnp.mean(jnp.stack(pending)))  # waits for the device
                    history.train_seconds += time.perf_counter() - t0
                    pending.clear()
                    if not math.isfinite(mean_loss):
                        raise FloatingPointError(f"training loss became {mean_loss} at step {step}")
                    history.step.append(step)
                    history.loss.append(mean_loss)
                    if bar is not None:
                        bar.set_postfix(loss=f"{mean_loss:.3f}", refresh=False)
                if eval_fn is not None and eval_every is not None and (k % eval_every == 0 or k == steps):
                    history._record_eval(step, eval_fn(self.sync_model()))
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
            history.steps = start_step + (k if steps else 0)
            self.sync_model()
        if eval_fn is not None and eval_every is None:
            history._record_eval(history.steps, eval_fn(self.model))
        return history


def _progress_bar(total: int, desc: str):
    # In Jupyter (and on Colab) tqdm.auto draws a widget when ipywidgets is installed, else falls
    # back to text. The book asks for text: its build drops stderr, while a widget would stay on the
    # page as a frozen bar and make the page load the widget manager from a CDN.
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        cls = _tqdm_text  # importing tqdm.auto without ipywidgets would print a warning
    else:
        from tqdm.auto import tqdm as cls
    if os.environ.get(runtime.PROGRESS_ENV, "").strip().lower() == "text":
        cls = _tqdm_text
    return cls(total=total, desc=desc, mininterval=1.0, dynamic_ncols=False, ncols=90)


def fit(model: nnx.Module, loss_fn: Callable, batches: Iterable, *, steps: int,
        optimizer: optax.GradientTransformation | None = None, learning_rate: float = 3e-3,
        decay: bool = False, eval_fn: Callable[[nnx.Module], Mapping[str, float]] | None = None,
        eval_every: int | None = None, log_every: int = 25, progress: bool = True, desc: str = "training") -> History:
    """Train ``model`` in place and return its :class:`History`.

    Args:
      model: a Flax NNX module; its parameters (``nnx.Param``) are trained.
      loss_fn: ``loss_fn(model, batch) -> loss`` or ``(loss, metrics)``; pure JAX, it is jit-compiled.
      batches: an iterable of batches (any pytree of arrays, e.g. :class:`attention_course.tasks.Batch`)
        with at least ``steps`` items; batches of the same shapes share one compilation.
      steps: number of optimisation steps.
      optimizer: an optax transformation; default :func:`default_optimizer` with ``learning_rate``.
      decay: for the default optimizer, let the learning rate decay (cosine) over the ``steps`` of
        this run instead of keeping it constant. Ignored when ``optimizer`` is given.
      eval_fn: ``eval_fn(model) -> {name: value}``, called every ``eval_every`` steps and at the end
        (or only at the end when ``eval_every`` is None).
      log_every: the training loss is averaged and recorded every ``log_every`` steps.
      progress: show a tqdm progress bar.
    """
    if optimizer is None:  # default_optimizer checks learning_rate; steps is checked first so that a bad
        # run length is reported as ``steps`` rather than as ``decay_steps``
        _checks.positive_int("steps", steps)
        optimizer = default_optimizer(learning_rate, decay_steps=steps if decay else None)
    trainer = Trainer(model, loss_fn, optimizer)
    return trainer.run(batches, steps, eval_fn=eval_fn, eval_every=eval_every, log_every=log_every,
                       progress=progress, desc=desc)
