"""Point the course at another repository, for a fork: `make repository URL=https://github.com/you/fork`.

The address has one source of truth, `attention_course.runtime.REPOSITORY_URL`. Everything else that
names it follows from it, and tests/test_publish.py checks that they agree:
  * `_config.yml` `repository.url`, from which the book's launch buttons (Colab) and its repository
    button are made;
  * the first code cell of every notebook (`runtime.setup_cell_source()`), which installs the course
    on Colab from that repository;
  * the clone command in book/intro.md.
This script rewrites all of them from the new address. The GitHub Actions workflow needs no
address: it builds and publishes the repository it runs in.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "src" / "attention_course" / "runtime.py"
CONFIG = ROOT / "_config.yml"
INTRO = ROOT / "book" / "intro.md"
URL_RE = re.compile(r"^https://github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


def current_url() -> str:
    match = re.search(r'^REPOSITORY_URL = "([^"]+)"$', RUNTIME.read_text(), re.M)
    if not match:
        raise SystemExit(f"error: no REPOSITORY_URL line in {RUNTIME}")
    return match.group(1)


def point_at(url: str) -> list[pathlib.Path]:
    if not URL_RE.match(url):
        raise SystemExit(f"error: URL must look like https://github.com/OWNER/NAME, got {url!r}")
    old = current_url()
    changed = []
    for path in (RUNTIME, CONFIG, INTRO):
        text = path.read_text()
        if old in text:
            path.write_text(text.replace(old, url))
            changed.append(path)
    sys.path.insert(0, str(ROOT / "src"))
    import importlib

    from attention_course import runtime

    importlib.reload(runtime)
    source = runtime.setup_cell_source()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
        if "".join(cell["source"]) != source:
            cell["source"] = source.splitlines(keepends=True)
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            changed.append(path)
    return changed


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/repository.py https://github.com/OWNER/NAME")
    for path in point_at(sys.argv[1]):
        print(f"updated {path.relative_to(ROOT)}")
