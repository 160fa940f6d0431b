"""Build the book: `python tools/book.py full` (make book) or `python tools/book.py fast` (make test).

full: Jupyter Book 1 with the jupyter-cache (`_config.yml`), every notebook executed in full mode,
      into _build/html. Refuses to finish if a page shows fast-mode output. On Linux with two or
      more CPUs, the recurrent chapters that are not cached yet execute first, as many at a time as
      there are CPUs, each kernel confined to one CPU (see `_execute_in_lanes`); Jupyter Book then
      executes the rest (the chapters that time large products) alone, as before.
fast: the strict build (-W -n --keep-going) with ATTENTION_COURSE_FAST=1 and execution forced, from
      a copy of the configuration, into _build/fast: fast-mode outputs never reach the cache or
      _build/html. Checks that every notebook runs top to bottom and that references, citations,
      glue keys, the toc and directives resolve. Exits non-zero on any failure or warning.
"""

from __future__ import annotations

import os
import pathlib
import queue
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from attention_course.runtime import (FAST_ENV, FAST_MODE_BANNER, PROGRESS_ENV, SEED_BANNER,  # noqa: E402
                                      SEED_ENV, seed_offset)

# Progress bars as text on stderr, which the book removes (`stderr_output: remove`): a widget bar
# would stay on the page, frozen, and load the widget manager from a CDN.
BOOK_ENV = {PROGRESS_ENV: "text"}

JB = [sys.executable, "-m", "jupyter_book.cli.main"]


def _jupyter_book() -> list[str]:
    exe = pathlib.Path(sys.executable).with_name("jupyter-book")
    return [str(exe)] if exe.exists() else JB


# Chapters whose kernels always run alone on the whole machine: they time large matrix products
# against each other (chapter 06's Table 1, chapter 07's attention variants), which another
# kernel's load would distort and which use every core. The others train small recurrent models,
# whose XLA:CPU train steps run no slower confined to one core than spread over two (issue 16:
# ch04's step took 93-102 ms on one core, alone or beside another kernel on the other core, and
# 137-152 ms on both). Their compiles are slower on one core, so such a chapter takes about 1.5x
# as long alone, and two side by side take the time of one and a half (measured on 2 cores: all
# five in 777 s, against about 1120 s one after another, unconfined).
ALONE = {"06_self_attention", "07_beyond"}
SEED_STUDY = ROOT / "src" / "attention_course" / "seed_study"  # `make seeds` writes it (tools/seeds.py)
CACHE = ROOT / yaml.safe_load((ROOT / "_config.yml").read_text())["execute"]["cache"]


def _toc_notebooks() -> list[pathlib.Path]:
    """The notebooks the table of contents lists, in its order."""
    def files(node):
        if isinstance(node, dict):
            if "file" in node:
                yield node["file"]
            for value in node.values():
                yield from files(value)
        elif isinstance(node, list):
            for item in node:
                yield from files(item)

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    paths = (ROOT / f"{name}.ipynb" for name in files(toc))
    return [p for p in paths if p.exists()]


def seed_root(seed: int) -> pathlib.Path:
    """Where the build under seed offset ``seed`` (not 0) keeps its cache and its HTML."""
    return ROOT / "_build" / "seeds" / str(seed)


def cache_for(seed: int) -> pathlib.Path:
    """The jupyter-cache of the full build under seed offset ``seed``: the published book's for 0,
    one of its own for any other, so that no other seed's outputs reach the published book."""
    return CACHE if seed == 0 else seed_root(seed) / ".jupyter_cache"


def _execute_one(path: str, out: str, cpu: int) -> int:
    """Execute one notebook as the book does, on CPU ``cpu`` (`tools/book.py execute NB OUT CPU`)
    and write it to OUT. The kernel, started after the mask is set, inherits it; ``cpu`` -1
    leaves the process on every CPU."""
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    import nbformat
    from jupyter_cache.executors.utils import single_nb_execution

    execute = yaml.safe_load((ROOT / "_config.yml").read_text())["execute"]
    nb = nbformat.read(path, as_version=4)
    result = single_nb_execution(nb, cwd=str(pathlib.Path(path).parent), timeout=execute["timeout"],
                                 allow_errors=execute["allow_errors"], meta_override=True)
    if result.err is not None:
        print(result.exc_string, file=sys.stderr)
        return 1
    nb.metadata["attention_course_execution_seconds"] = result.time
    nbformat.write(nb, out)
    return 0


def uncached(notebooks: list[pathlib.Path], cache_path: pathlib.Path) -> list[pathlib.Path]:
    """Those of ``notebooks`` whose code the jupyter-cache at ``cache_path`` has no outputs for."""
    import nbformat
    from jupyter_cache import get_cache

    cache = get_cache(cache_path)
    todo = []
    for path in notebooks:
        try:
            cache.match_cache_notebook(nbformat.read(path, as_version=4))
        except KeyError:
            todo.append(path)
    return todo


def drop_runs_older_than_their_seed_study(notebooks: list[pathlib.Path], cache_path: pathlib.Path) -> list[str]:
    """Take out of the cache at ``cache_path`` the runs of those ``notebooks`` that draw the seed
    study's spread (``claims.spread``) and were executed before their committed study was written
    (`make seeds`): the cache keys on code cells only, and would keep showing figures without the
    study's bands. Returns the names of the notebooks dropped."""
    import datetime

    import nbformat
    from jupyter_cache import get_cache

    study_dir = SEED_STUDY
    cache, dropped = get_cache(cache_path), []
    for path in notebooks:
        study = study_dir / f"{path.stem}.json"
        if not study.exists() or "claims.spread(" not in path.read_text():
            continue
        try:
            record = cache.match_cache_notebook(nbformat.read(path, as_version=4))
        except KeyError:
            continue
        written = datetime.datetime.fromtimestamp(study.stat().st_mtime, datetime.timezone.utc)
        created = record.created if record.created.tzinfo else record.created.replace(tzinfo=datetime.timezone.utc)
        if created < written:
            cache.remove_cache(record.pk)
            dropped.append(path.name)
    if dropped:
        print(f"executing again, to draw the seed study written since their run: {', '.join(dropped)}")
    return dropped


def execute_jobs(jobs: list[tuple[pathlib.Path, pathlib.Path, dict]], *, lanes: bool) -> int:
    """Execute each ``(notebook, cache, env)`` of ``jobs`` into its jupyter-cache.

    With ``lanes``, one kernel per CPU: each notebook runs in a child process confined to one CPU
    (its kernel inherits the mask), and a CPU takes the next job as soon as it is free. Without,
    one job after another on the whole machine. Outputs are keyed as Jupyter Book keys them, so a
    build that follows only renders them. Returns non-zero if a notebook failed (its traceback is
    printed).
    """
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cpus = sorted(os.sched_getaffinity(0)) if lanes else [-1]
    free: queue.Queue[int] = queue.Queue()
    for cpu in cpus[:max(1, len(jobs))]:
        free.put(cpu)
    where = "each on one CPU" if lanes else "on every CPU"
    print(f"executing {len(jobs)} notebooks, {free.qsize()} at a time, {where}", flush=True)

    def run(job) -> tuple[pathlib.Path, pathlib.Path, int, str]:
        path, cache_path, env = job
        cpu = free.get()
        try:
            out = tempfile.NamedTemporaryFile(suffix=".ipynb", delete=False).name
            start = time.perf_counter()
            rc = subprocess.call([sys.executable, __file__, "execute", str(path), out, str(cpu)], env=env,
                                 cwd=ROOT)
            seed = env.get(SEED_ENV, "0") or "0"
            print(f"  {path.name:32s} seed {seed:>2s} {time.perf_counter() - start:6.0f} s"
                  f"{f' on CPU {cpu}' if cpu >= 0 else ''}{'' if rc == 0 else ' FAILED'}", flush=True)
            return path, cache_path, rc, out
        finally:
            free.put(cpu)

    failed = []
    with ThreadPoolExecutor(max_workers=free.qsize()) as pool:
        for path, cache_path, rc, out in pool.map(run, jobs):
            try:
                if rc != 0:
                    failed.append(path.name)
                    continue
                nb = nbformat.read(out, as_version=4)
                seconds = nb.metadata.pop("attention_course_execution_seconds")
                get_cache(cache_path).cache_notebook_bundle(
                    CacheBundleIn(nb, str(path), data={"execution_seconds": seconds}),
                    check_validity=False, overwrite=True)
            finally:
                os.unlink(out)
    if failed:
        print(f"error: executing {', '.join(failed)} failed (traceback above)", file=sys.stderr)
        return 1
    return 0


def can_use_lanes() -> bool:
    return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2


def _execute_in_lanes(env: dict, notebooks: list[pathlib.Path], cache_path: pathlib.Path) -> int:
    """Execute those of ``notebooks`` the cache lacks into it, one kernel per CPU (see
    :func:`execute_jobs`); nothing where there is one CPU or one notebook to execute: Jupyter
    Book then executes them one after another."""
    if not can_use_lanes():
        return 0
    todo = uncached(notebooks, cache_path)
    if len(todo) < 2:
        return 0
    return execute_jobs([(path, cache_path, env) for path in todo], lanes=True)


def full_env(seed: int) -> dict:
    """The environment of a full build under seed offset ``seed``: never fast mode."""
    env = {**{k: v for k, v in os.environ.items() if k not in (FAST_ENV, SEED_ENV)}, **BOOK_ENV}
    if seed:
        env[SEED_ENV] = str(seed)
    return env


def _seeded_config(seed: int) -> pathlib.Path:
    """A copy of the configuration whose cache is the seed's own (see :func:`cache_for`)."""
    out = seed_root(seed)
    out.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"] = dict(config.get("execute", {}), cache=str(cache_for(seed)))
    local = config.get("sphinx", {}).get("local_extensions") or {}
    for name, path in local.items():
        local[name] = str((ROOT / path).resolve())
    path = out / "_config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def build_full(seed: int | None = None) -> int:
    """The full build. Under a seed offset other than 0 (``ATTENTION_COURSE_SEED``) it is strict
    (``-W -n --keep-going``) and keeps its cache and HTML in ``_build/seeds/N/``: the published
    book (``_build/html``, ``_build/.jupyter_cache``) only ever holds seed 0."""
    seed = seed_offset() if seed is None else seed
    env = full_env(seed)
    start = time.perf_counter()
    drop_runs_older_than_their_seed_study(_toc_notebooks(), cache_for(seed))
    rc = _execute_in_lanes(env, [p for p in _toc_notebooks() if p.stem not in ALONE], cache_for(seed))
    if rc != 0:
        return rc
    if seed:
        html = seed_root(seed) / "_build" / "html"
        args = ["build", str(ROOT), "--config", str(_seeded_config(seed)), "--path-output",
                str(seed_root(seed)), "-W", "-n", "--keep-going"]
    else:
        html = ROOT / "_build" / "html"
        args = ["build", str(ROOT)]
    rc = subprocess.call(_jupyter_book() + args, env=env, cwd=ROOT)
    if rc != 0:
        return rc
    banners = [FAST_MODE_BANNER] + ([] if seed else [SEED_BANNER])
    leaked = [p for p in html.rglob("*.html") if any(b in p.read_text(errors="ignore") for b in banners)]
    if leaked:
        print(f"error: fast-mode or seeded output reached the book in: {', '.join(map(str, leaked))}\n"
              f"clear the cache (rm -rf {cache_for(seed)}) and build again", file=sys.stderr)
        return 1
    print(f"\nbook built in {time.perf_counter() - start:.0f} s"
          f"{f' (seed offset {seed}, strict)' if seed else ''}: {html / 'index.html'}")
    _print_execution_times(cache_for(seed))
    return 0


def _print_execution_times(cache_path: pathlib.Path = CACHE) -> None:
    """Each notebook's full-mode execution time, as the jupyter-cache recorded it (`tools/cell_times.py`
    times the cells)."""
    from jupyter_cache import get_cache

    records = get_cache(cache_path).list_cache_records()
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
    if len(sys.argv) == 5 and sys.argv[1] == "execute":
        sys.exit(_execute_one(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    if len(sys.argv) != 2 or sys.argv[1] not in {"full", "fast"}:
        sys.exit("usage: python tools/book.py full|fast")
    sys.exit(build_full() if sys.argv[1] == "full" else build_fast())
