"""The course's train step against the eager PyTorch a learner would otherwise write (issue 16).

Each chapter's headline model at its longest training bucket, with the chapter's sizes:

* ch01 ``encdec``: RNNencdec-50 (Cho's flavour, E = 64, H = 128), batch 64, sources of 41-50
  words padded to 51;
* ch02 ``transducer``: the RNN Transducer on translate (E = 32, H = P = J = 64), batch 32,
  sources of up to 15 words padded to 16, the whole [B, T, U+1, |V_y|] lattice;
* ch04 ``rnnsearch``: RNNsearch (E = 32, H = k = 64), batch 64, sources of 41-50 words;
* ch05 ``local-p``: Luong's local-p with the general score and input feeding (E = 32, H = 32,
  n = 64, k = 32, D = 10), batch 32, sources of 21-30 words.

Our jit-compiled `train.Trainer` step against the twin in `torch_twins.py` (same shapes, same
vocabularies), run in the benchmark's own environment (`_build/bench/venv`, made by `make bench`).
Measured alternately, three rounds per model, in one run; PyTorch gets the better of its default
thread count and one thread, since its thread pool slows down badly on a busy machine. Prints
steps/s, the ratio and our first compile; asserts nothing about time.

On Linux the table also has a one-core column: both sides again, each in a process confined to one
CPU (``sched_setaffinity``), PyTorch with one thread. It separates the speed of the code from how
each runtime spreads small operations over the cores: on the 2-core developers' machine, PyTorch's
eager step gained about 1.9x from its second core, and XLA:CPU's gained nothing (issue 16).
"""

import json
import os
import pathlib
import subprocess
import sys
import time

import jax
import pytest
from flax import nnx

from attention_course import bottleneck, luong, seq2seq, soft_search, tasks, train, transducer

ROOT = pathlib.Path(__file__).resolve().parents[2]
TORCH_PYTHON = ROOT / "_build" / "bench" / "venv" / "bin" / "python"
TWINS = pathlib.Path(__file__).with_name("torch_twins.py")


ONE_CORE = hasattr(os, "sched_setaffinity")


# Confines itself to one CPU, then becomes the command (no preexec_fn: this process has threads).
ON_ONE_CORE = "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])}); os.execv(sys.argv[2], sys.argv[2:])"


def _last_json(command: list, one_core: bool = False) -> dict:
    if one_core:
        command = [sys.executable, "-c", ON_ONE_CORE, str(min(os.sched_getaffinity(0))), *command]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def torch_rate(model: str, shape: tuple, steps: int, threads: int, one_core: bool = False) -> float:
    return _last_json([str(TORCH_PYTHON), str(TWINS), model, "--steps", str(steps),
                       "--shape", ",".join(map(str, shape)), "--threads", str(threads)],
                      one_core)["steps_per_second"]


def one_core_rates(name: str, shape: tuple) -> tuple[float, float]:
    """(ours, PyTorch's) steps/s, each in a process confined to one CPU (medians of three)."""
    ours = _last_json([sys.executable, __file__, name], one_core=True)["steps_per_second"]
    theirs = sorted(torch_rate(name, shape, 5, 1, one_core=True) for _ in range(3))[1]
    return ours, theirs


def _encdec(V_x, V_y):
    model = bottleneck.EncoderDecoder(V_x, V_y, embed=64, hidden=128, flavour="cho", rngs=nnx.Rngs(0))
    return model, bottleneck.loss


def _transducer(V_x, V_y):
    model = transducer.Transducer(V_x, V_y, embed=32, hidden=64, prediction=64, joint=64,
                                  rngs=nnx.Rngs(0))
    return model, transducer.loss


def _rnnsearch(V_x, V_y):
    model = soft_search.rnnsearch(V_x, V_y, embed=32, hidden=64, attention=64, rngs=nnx.Rngs(0))
    return model, seq2seq.loss


def _local_p(V_x, V_y):
    model = luong.luong(V_x, V_y, score="general", window="local-p", input_feeding=True, D=10,
                        embed=32, hidden=32, k=32, max_source=61, rngs=nnx.Rngs(0))
    return model, seq2seq.loss


# name: (chapter, builder, batch size, shortest and longest source of the bucket)
HEADLINES = {
    "encdec": ("01", _encdec, 64, 41, 50),
    "transducer": ("02", _transducer, 32, 1, 15),
    "rnnsearch": ("04", _rnnsearch, 64, 41, 50),
    "local-p": ("05", _local_p, 32, 21, 30),
}


def jax_model(name):
    """(batch, first-compile seconds, rate(steps) -> steps/s) for a headline model."""
    _, build, batch_size, shortest, longest = HEADLINES[name]
    task = tasks.get_task("translate")
    pairs = tasks.generate(task, 10 * batch_size, seed=1, min_length=shortest, max_length=longest)
    batch = next(tasks.batches(pairs, task, batch_size, seed=0, edges=(longest,)))
    model, loss = build(len(task.source_vocab), len(task.target_vocab))
    trainer = train.Trainer(model, loss, train.default_optimizer(3e-3))
    start = time.perf_counter()
    jax.block_until_ready(trainer.step(batch))
    compile_seconds = time.perf_counter() - start

    def rate(steps):
        start = time.perf_counter()
        for _ in range(steps):
            loss, _ = trainer.step(batch)
        jax.block_until_ready(loss)
        return steps / (time.perf_counter() - start)

    shape = (*batch.source.shape, batch.target_in.shape[1], len(task.source_vocab), len(task.target_vocab))
    return shape, compile_seconds, rate


def _ours_alone(name: str) -> None:
    """Our steady rate for one model (median of three), as the last line of JSON (run on one core)."""
    _, _, rate = jax_model(name)
    rate(2)
    print(json.dumps({"model": name, "steps_per_second": sorted(rate(10) for _ in range(3))[1]}))


@pytest.mark.skipif(not TORCH_PYTHON.exists(), reason="`make bench` creates the PyTorch environment")
def test_headline_train_steps_against_eager_pytorch():
    rows = []
    print(f"\ntrain steps per second, {jax.default_backend()}; shape = B, source width, target width")
    for name, (chapter, *_) in HEADLINES.items():
        shape, compile_seconds, ours = jax_model(name)
        ours(2)  # warm
        rounds = []
        for _ in range(3):
            mine = ours(10)
            theirs = max(torch_rate(name, shape, 5, threads) for threads in (0, 1))
            rounds.append((mine, theirs))
            print(f"  ch{chapter} {name:10s} ours {mine:6.2f}   PyTorch eager {theirs:6.2f}   "
                  f"ratio {mine / theirs:5.2f}", flush=True)
        ratios = sorted(m / t for m, t in rounds)
        mine, theirs = (sorted(r[k] for r in rounds)[1] for k in (0, 1))
        single = one_core_rates(name, shape) if ONE_CORE else (float("nan"),) * 2
        rows.append((chapter, name, shape[:3], mine, theirs, ratios[1], compile_seconds, single))
        assert all(m > 0 and t > 0 for m, t in rounds)
    print(f"\n  medians of the three rounds ({os.cpu_count()} cores); then both confined to one core")
    print(f"  {'chapter':8s}{'model':11s}{'shape':15s}{'ours':>8s}{'PyTorch':>9s}"
          f"{'median ratio':>14s}{'first compile':>15s}{'1 core: ours':>14s}{'PyTorch':>9s}{'ratio':>7s}")
    for chapter, name, shape, mine, theirs, ratio, seconds, (one, other) in rows:
        print(f"  ch{chapter:6s}{name:11s}{str(shape):15s}{mine:8.2f}{theirs:9.2f}"
              f"{ratio:13.2f}x{seconds:13.1f} s{one:14.2f}{other:9.2f}{one / other:6.2f}x")


if __name__ == "__main__":
    _ours_alone(sys.argv[1])
