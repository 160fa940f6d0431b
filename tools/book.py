"""Build the book: `python tools/book.py full` (make book) or `python tools/book.py fast` (make test).

full: Jupyter Book 1 with the jupyter-cache (`_config.yml`), every notebook executed in full mode,
      into _build/html. Refuses to finish if a page shows fast-mode output.
fast: the strict build (-W -n --keep-going) with ATTENTION_COURSE_FAST=1 and execution forced, from
      a copy of the configuration, into _build/fast: fast-mode outputs never reach the cache or
      _build/html. Checks that every notebook runs top to bottom and that references, citations,
      glue keys, the toc and directives resolve. Exits non-zero on any failure or warning.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from attention_course.runtime import FAST_ENV, FAST_MODE_BANNER, PROGRESS_ENV  # noqa: E402

# Progress bars as text on stderr, which the book removes (`stderr_output: remove`): a widget bar
# would stay on the page, frozen, and load the widget manager from a CDN.
BOOK_ENV = {PROGRESS_ENV: "text"}

JB = [sys.executable, "-m", "jupyter_book.cli.main"]


def _jupyter_book() -> list[str]:
    exe = pathlib.Path(sys.executable).with_name("jupyter-book")
    return [str(exe)] if exe.exists() else JB


def build_full() -> int:
    env = {**{k: v for k, v in os.environ.items() if k != FAST_ENV}, **BOOK_ENV}
    start = time.perf_counter()
    rc = subprocess.call(_jupyter_book() + ["build", str(ROOT)], env=env, cwd=ROOT)
    if rc != 0:
        return rc
    leaked = [p for p in (ROOT / "_build" / "html").rglob("*.html") if FAST_MODE_BANNER in p.read_text(errors="ignore")]
    if leaked:
        print(f"error: fast-mode output reached the published book in: {', '.join(map(str, leaked))}\n"
              f"clear the cache (rm -rf _build/.jupyter_cache) and build again", file=sys.stderr)
        return 1
    print(f"\nbook built in {time.perf_counter() - start:.0f} s: {ROOT / '_build' / 'html' / 'index.html'}")
    _print_execution_times()
    return 0


def _print_execution_times() -> None:
    """Each notebook's full-mode execution time, as the jupyter-cache recorded it (`tools/cell_times.py`
    times the cells)."""
    from jupyter_cache import get_cache

    records = get_cache(ROOT / "_build" / ".jupyter_cache").list_cache_records()
    for record in sorted(records, key=lambda r: r.uri):
        seconds = (record.data or {}).get("execution_seconds")
        if seconds is not None:
            print(f"  {pathlib.Path(record.uri).name:32s} {seconds:6.0f} s (executed {record.created:%Y-%m-%d %H:%M})")


def build_fast() -> int:
    out = ROOT / "_build" / "fast"
    out.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"] = dict(config.get("execute", {}), execute_notebooks="force")
    config["execute"].pop("cache", None)
    # Paths of local extensions are relative to the config file: make them absolute for the copy.
    local = config.get("sphinx", {}).get("local_extensions") or {}
    for name, path in local.items():
        local[name] = str((ROOT / path).resolve())
    fast_config = out / "_config.yml"
    fast_config.write_text(yaml.safe_dump(config, sort_keys=False))
    env = dict(os.environ, **{FAST_ENV: "1"}, **BOOK_ENV)
    start = time.perf_counter()
    rc = subprocess.call(
        _jupyter_book() + ["build", str(ROOT), "--config", str(fast_config), "--path-output", str(out),
                           "-W", "-n", "--keep-going"],
        env=env, cwd=ROOT)
    print(f"\nstrict fast-mode build {'passed' if rc == 0 else 'FAILED'} in {time.perf_counter() - start:.0f} s "
          f"({out / '_build' / 'html' / 'index.html'})")
    return rc


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in {"full", "fast"}:
        sys.exit("usage: python tools/book.py full|fast")
    sys.exit(build_full() if sys.argv[1] == "full" else build_fast())
