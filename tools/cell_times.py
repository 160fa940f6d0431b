"""Time every cell of the notebooks in full mode: `python tools/cell_times.py [notebooks/NN_*.ipynb ...]`.

Runs each notebook top to bottom in a fresh kernel, as the book does (full mode, text progress
bars, the working directory of the notebook), and prints its total time, its slowest cells, and
how the per-cell timeout of `_config.yml` compares with the slowest one (it should be at least 3x,
DESIGN.md's performance budget). Nothing is written back to the notebooks.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import sys
import time

import nbformat
import yaml
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from attention_course.runtime import FAST_ENV, PROGRESS_ENV  # noqa: E402


def _seconds(cell) -> float:
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    parse = lambda s: datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def time_notebook(path: pathlib.Path, timeout: int) -> tuple[float, list[tuple[float, int, str]]]:
    nb = nbformat.read(path, as_version=4)
    os.environ.pop(FAST_ENV, None)
    os.environ[PROGRESS_ENV] = "text"
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=True,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    total = time.perf_counter() - start
    cells = [(_seconds(c), k, "".join(c.source).splitlines()[0][:60] if c.source else "")
             for k, c in enumerate(nb.cells) if c.cell_type == "code"]
    return total, sorted(cells, reverse=True)


def main(paths: list[str]) -> int:
    timeout = int(yaml.safe_load((ROOT / "_config.yml").read_text())["execute"]["timeout"])
    notebooks = [pathlib.Path(p).resolve() for p in paths] or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    slowest = 0.0
    for path in notebooks:
        total, cells = time_notebook(path, timeout)
        print(f"{path.name}: {total:.0f} s in all", flush=True)
        for seconds, index, first in cells[:3]:
            print(f"   cell {index:3d}  {seconds:6.1f} s  {first}", flush=True)
        slowest = max(slowest, cells[0][0] if cells else 0.0)
    print(f"slowest cell {slowest:.0f} s; per-cell timeout {timeout} s = {timeout / max(slowest, 1e-9):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
