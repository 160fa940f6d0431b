"""The seed study: `make seeds` (every chapter) or `make seeds CHAPTER=05`.

Executes each chapter in full mode under several seed offsets (``ATTENTION_COURSE_SEED``, default
0, 1 and 2; ``SEEDS=0,1,2,3`` for more), each offset into the jupyter-cache of its own full build
(`tools/book.py`: offset 0 is the published book's, so `make book` afterwards only renders), then
reads back every number and claim each run glued and writes, per chapter:

* ``src/attention_course/seed_study/NN_slug.json``: for every glued number its value in each seed,
  mean, min and max (element by element for a glued list); for every claim (``claim_<name>``, see
  :mod:`attention_course.claims`) what it gave in each seed. The chapters read it back
  (``Claims.spread``) to show the spread in their figures; it ships with the package, so Colab has it.
* ``book/seed_study.md``: the same as tables, a page of the book.

Claims are recorded, not raised, in these runs (``ATTENTION_COURSE_CLAIMS=record``), so that one
false claim does not hide the rest of its chapter; a run in which a claim failed is then taken out
of its seed's cache, so that the strict build of that seed executes it again and fails, naming it.

``KEEP=1`` keeps the committed study's other seeds: ``KEEP=1 SEEDS=0,1 make seeds`` runs two seeds
again (after a change that adds claims, say) and keeps the third as it was, each seed's run stamped
with its own commit.

Both are stamped with the commit, the CPU, the JAX version, the seeds, the time each run took and
the machine's load. The recurrent chapters run side by side, one per CPU, as `make book` runs them;
chapters 06 and 07, which time large products, run alone.
"""

from __future__ import annotations

import ast
import datetime
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import book  # noqa: E402  (tools/book.py)
from attention_course.claims import CLAIMS_ENV  # noqa: E402

ROOT = book.ROOT
STUDY_DIR = ROOT / "src" / "attention_course" / "seed_study"
PAGE = ROOT / "book" / "seed_study.md"
DEFAULT_SEEDS = (0, 1, 2)


def glued(nb) -> dict:
    """Every value the executed notebook ``nb`` glued, by name (figures left out)."""
    values = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            meta = output.get("metadata", {}).get("scrapbook")
            if not meta:
                continue
            data = output.get("data", {})
            text = data.get(meta.get("mime_prefix", "") + "text/plain")
            if text is None or any(key.endswith(("image/png", "image/svg+xml")) for key in data):
                continue
            try:
                values[meta["name"]] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                values[meta["name"]] = text.strip("'\"")
    return values


def study_env(seed: int) -> dict:
    """A full build's environment under ``seed``, with claims recorded instead of raised, so that
    one false claim does not hide the rest of the chapter from the study."""
    return dict(book.full_env(seed), **{CLAIMS_ENV: "record"})


def read_run(path: pathlib.Path, seed: int) -> tuple[dict, float | None]:
    """The glued values of ``path``'s run under ``seed`` (from its cache), and its seconds.

    A run in which a claim failed is then taken out of the cache: the strict book build of that
    seed executes the chapter again and fails on the claim, as it would have without the study."""
    import nbformat
    from jupyter_cache import get_cache

    cache = get_cache(book.cache_for(seed))
    record = cache.match_cache_notebook(nbformat.read(path, as_version=4))
    bundle = cache.get_cache_bundle(record.pk)
    values = glued(bundle.nb)
    failed = sorted(k[len("claim_"):] for k, v in values.items() if k.startswith("claim_") and v == "failed")
    if failed:
        cache.remove_cache(record.pk)
        print(f"  {path.stem} seed {seed}: claims that did not hold: {', '.join(failed)}")
    return values, (record.data or {}).get("execution_seconds")


def previous_runs(path: pathlib.Path, keep: bool) -> tuple[dict[int, dict], dict[int, dict]]:
    """With ``keep`` (``KEEP=1 make seeds SEEDS=...``), the per-seed values and stamps of the
    committed study at ``path``, so that a run of some seeds adds to the others instead of
    replacing them (each seed's run keeps its own commit in the stamp)."""
    if not keep or not path.exists():
        return {}, {}
    old = json.loads(path.read_text())
    seeds = old["stamp"]["seeds"]
    runs: dict[int, dict] = {s: {} for s in seeds}
    for kind in ("numbers", "claims", "words"):
        for name, entry in old.get(kind, {}).items():
            key = "claim_" + name if kind == "claims" else name
            for s, value in zip(seeds, entry["seeds"]):
                if value is not None:
                    runs[s][key] = value
    meta = {int(s): m for s, m in old["stamp"].get("runs", {}).items()}
    for s in seeds:
        meta.setdefault(s, dict(commit=old["stamp"]["commit"], seconds=None, date=old["stamp"]["date"]))
    return runs, meta


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def summarise(runs: dict[int, dict]) -> dict:
    """``runs``: seed -> glued values. Numbers get mean/min/max; lists of numbers element by
    element; claims and other strings what each seed gave."""
    seeds = sorted(runs)
    names = sorted(set().union(*(r.keys() for r in runs.values())))
    numbers, claims, words = {}, {}, {}
    for name in names:
        values = [runs[s].get(name) for s in seeds]
        present = [v for v in values if v is not None]
        if present and all(_is_number(v) for v in present):
            numbers[name] = dict(seeds=values, mean=statistics.fmean(present), min=min(present),
                                 max=max(present))
        elif present and all(isinstance(v, list) and v and all(_is_number(x) for x in v) for v in present) \
                and len({len(v) for v in present}) == 1:
            columns = list(zip(*present))
            numbers[name] = dict(seeds=values, mean=[statistics.fmean(c) for c in columns],
                                 min=[min(c) for c in columns], max=[max(c) for c in columns])
        elif name.startswith("claim_"):
            claims[name[len("claim_"):]] = dict(seeds=values)
        elif present and all(isinstance(v, str) for v in present):
            words[name] = dict(seeds=values)
    return dict(numbers=numbers, claims=claims, words=words)


def stamp(seeds, seconds: float, load: tuple[float, float]) -> dict:
    import jax

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "notebooks", "src"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return dict(commit=commit + ("+changes" if dirty else ""), cpu=cpu, cpus=os.cpu_count(),
                jax=jax.__version__, seeds=list(seeds), seconds=round(seconds),
                load=[round(x, 2) for x in load],
                date=datetime.date.today().isoformat())


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def page(studies: dict[str, dict]) -> str:
    first = next(iter(studies.values()))["stamp"]
    lines = [
        "# The seed study",
        "",
        "Every chapter's experiments, run again under other seeds: the same data, new initial",
        "weights and a new order of batches (`ATTENTION_COURSE_SEED`, see the README). The prose",
        "states a ranking or a direction only where it held in every seed; elsewhere it gives the",
        "spread. `make seeds` writes this page; the numbers below are the names the chapters glue.",
        "",
        f"Run at commit `{first['commit']}` on {first['cpus']} × {first['cpu']}, JAX {first['jax']},"
        f" {first['date']}.",
        "",
    ]
    for chapter, study in studies.items():
        st = study["stamp"]
        lines += [f"## {chapter}", "",
                  f"Seeds {', '.join(map(str, st['seeds']))}; {st['seconds']} s of runs"
                  f" (load average {st['load'][0]} before, {st['load'][1]} after)"
                  + "".join(f"; seed {k}: commit `{m['commit']}`, {m['seconds']} s"
                            for k, m in st.get("runs", {}).items()) + ".", ""]
        if study["claims"] or study["words"]:
            lines += ["| claim | " + " | ".join(f"seed {s}" for s in st["seeds"]) + " |",
                      "|---|" + "---|" * len(st["seeds"])]
            for name, c in {**study["claims"], **study["words"]}.items():
                lines.append(f"| `{name}` | " + " | ".join(_fmt(v) if v is not None else "–" for v in c["seeds"])
                             + " |")
            lines.append("")
        scalars = {k: v for k, v in study["numbers"].items() if not isinstance(v["mean"], list)}
        if scalars:
            lines += ["| number | mean | min | max | " + " | ".join(f"seed {s}" for s in st["seeds"]) + " |",
                      "|---|---|---|---|" + "---|" * len(st["seeds"])]
            for name, n in scalars.items():
                lines.append(f"| `{name}` | {_fmt(n['mean'])} | {_fmt(n['min'])} | {_fmt(n['max'])} | "
                             + " | ".join(_fmt(v) if v is not None else "–" for v in n["seeds"]) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    chapter = argv[0] if argv else os.environ.get("CHAPTER", "")
    seeds = tuple(int(s) for s in os.environ.get("SEEDS", "").split(",") if s.strip()) or DEFAULT_SEEDS
    notebooks = [p for p in book._toc_notebooks() if p.stem[:2].isdigit() and p.stem.startswith(chapter)]
    if not notebooks:
        print(f"error: no chapter notebook matches CHAPTER={chapter!r}", file=sys.stderr)
        return 2
    start, load0 = time.perf_counter(), os.getloadavg()[0]
    lanes = book.can_use_lanes()
    side = [(p, book.cache_for(s), study_env(s)) for s in seeds for p in notebooks
            if p.stem not in book.ALONE and p in book.uncached([p], book.cache_for(s))]
    alone = [(p, book.cache_for(s), study_env(s)) for s in seeds for p in notebooks
             if (p.stem in book.ALONE or not lanes) and p in book.uncached([p], book.cache_for(s))]
    side = [job for job in side if lanes]
    for jobs, in_lanes in ((side, True), (alone, False)):
        if jobs and book.execute_jobs(jobs, lanes=in_lanes) != 0:
            return 1
    seconds, load1 = time.perf_counter() - start, os.getloadavg()[0]
    STUDY_DIR.mkdir(parents=True, exist_ok=True)
    for path in notebooks:
        runs, meta = previous_runs(STUDY_DIR / f"{path.stem}.json", keep=os.environ.get("KEEP", "") == "1")
        here = stamp(seeds, 0, (load0, load1))
        for s in seeds:
            runs[s], t = read_run(path, s)
            meta[s] = dict(commit=here["commit"], seconds=round(t) if t else None, date=here["date"])
        study = summarise(runs)
        study["stamp"] = dict(here, seeds=sorted(runs), seconds=sum(m["seconds"] or 0 for m in meta.values()),
                              runs={str(s): meta[s] for s in sorted(meta)})
        (STUDY_DIR / f"{path.stem}.json").write_text(json.dumps(study, indent=1) + "\n")
        print(f"  {path.stem}: {len(study['numbers'])} numbers, {len(study['claims'])} claims")
    studies = {}
    for path in book._toc_notebooks():
        f = STUDY_DIR / f"{path.stem}.json"
        if f.exists():
            studies[path.stem] = json.loads(f.read_text())
    PAGE.write_text(page(studies))
    print(f"seed study of {len(notebooks)} chapters under seeds {seeds} in {seconds:.0f} s: {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
