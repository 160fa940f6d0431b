"""The course's train step against the eager PyTorch a learner would otherwise write (issue 16).

Chapter 04's RNNsearch at its longest training bucket (H = k = 64, E = 32, batch 64, sources of
41-50 words padded to 51): our jit-compiled `train.Trainer` step against the twin in
`torch_twins.py`, run in the benchmark's own environment (`_build/bench/venv`, made by `make
bench`). Measured alternately, three rounds each, in one run; PyTorch gets the better of its
default thread count and one thread, since its thread pool slows down badly on a busy machine.
Prints steps/s, the ratio, and our first compile; asserts nothing about time.
"""

import json
import pathlib
import subprocess
import time

import jax
import pytest
from flax import nnx

from attention_course import seq2seq, soft_search, tasks, train

ROOT = pathlib.Path(__file__).resolve().parents[2]
TORCH_PYTHON = ROOT / "_build" / "bench" / "venv" / "bin" / "python"
TWINS = pathlib.Path(__file__).with_name("torch_twins.py")


def torch_rate(model: str, steps: int, threads: int) -> float:
    out = subprocess.run([str(TORCH_PYTHON), str(TWINS), model, "--steps", str(steps),
                          "--threads", str(threads)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["steps_per_second"]


def jax_rnnsearch():
    task = tasks.get_task("translate")
    pairs = tasks.generate(task, 640, seed=1, min_length=41, max_length=50)
    batch = next(tasks.batches(pairs, task, 64, seed=0, edges=(50,)))
    model = soft_search.rnnsearch(len(task.source_vocab), len(task.target_vocab), embed=32,
                                  hidden=64, attention=64, rngs=nnx.Rngs(0))
    trainer = train.Trainer(model, seq2seq.loss, train.default_optimizer(3e-3))
    start = time.perf_counter()
    jax.block_until_ready(trainer.step(batch))
    compile_seconds = time.perf_counter() - start

    def rate(steps):
        start = time.perf_counter()
        for _ in range(steps):
            loss, _ = trainer.step(batch)
        jax.block_until_ready(loss)
        return steps / (time.perf_counter() - start)

    return batch, compile_seconds, rate


@pytest.mark.skipif(not TORCH_PYTHON.exists(), reason="`make bench` creates the PyTorch environment")
def test_rnnsearch_train_step_against_eager_pytorch():
    batch, compile_seconds, ours = jax_rnnsearch()
    print(f"\nRNNsearch (ch04), batch {batch.source.shape[0]}, source width {batch.source.shape[1]}, "
          f"target width {batch.target_in.shape[1]}, {jax.default_backend()}")
    rounds = []
    for _ in range(3):
        mine = ours(10)
        theirs = max(torch_rate("rnnsearch", 5, threads) for threads in (0, 1))
        rounds.append((mine, theirs))
        print(f"  ours {mine:6.2f} steps/s   PyTorch eager {theirs:6.2f} steps/s   ratio {mine / theirs:5.2f}")
    ratios = sorted(m / t for m, t in rounds)
    print(f"  median ratio {ratios[1]:.2f}; our first compile {compile_seconds:.1f} s")
    assert all(m > 0 and t > 0 for m, t in rounds)
