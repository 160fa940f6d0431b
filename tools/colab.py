"""The Colab twin (`make colab`): run every chapter notebook the way Colab would, and check it.

A virtual environment holds Colab's package versions (tests/colab/colab-packages.txt, which names
its source and date), and a Jupyter kernel of that environment imports a stand-in `google.colab`
at start, so each notebook's setup cell takes its Colab branch: it builds a constraint file of
what is installed and `%pip install`s the course, from a copy of this checkout instead of GitHub.

For every notebook, from a fresh state (what an earlier notebook's install added is uninstalled):
  1. execute it top to bottom in fast mode (ATTENTION_COURSE_FAST=1), without myst-nb, as on Colab;
  2. fail if a cell errors, if pip reported a conflict, or if any package of the Colab file
     changed version (the install may only add packages);
  3. fail if it shows fewer figures than the book glues ({glue:figure} in its prose), or the same
     image twice, or a glued number that is not printed with its name; report its progress bars.
Then the same setup cell on a runtime without flax and optax: pip must add versions that fit the
jax that is there, and leave jax alone. Last, the unit tests (tests/) run at Colab's versions, which
are pyproject's lower bounds, with the course installed under the same constraints.

`python tools/colab.py 01 04` runs only the notebooks whose names start so, and no unit tests.

Writes the executed notebooks to _build/colab/executed/ and a summary to _build/colab/summary.txt.
Exit status 0 only if every check passed.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from attention_course.runtime import FAST_ENV, setup_cell_source  # noqa: E402

PACKAGES = ROOT / "tests" / "colab" / "colab-packages.txt"
OUT = ROOT / "_build" / "colab"
VENV = OUT / "venv"
TWIN_PY = VENV / "bin" / "python"
STUB = OUT / "stub"
KERNELS = OUT / "jupyter"
KERNEL_NAME = "colab-twin"
SOURCE = OUT / "source"  # the course as Colab's pip would get it from the repository
CONTENT = OUT / "content"  # the working directory, like Colab's /content
BOOK_TESTS = ("tests/browser", "tests/test_book.py", "tests/test_book_lanes.py", "tests/test_publish.py",
              "tests/test_coursework.py", "tests/test_coursework_chapters.py", "tests/test_gradescope.py",
              "tests/test_claims_build.py")
INSTALL_SPEC = '"attention-course @ git+{repo}"'
CELL_TIMEOUT = 600

STUB_SOURCE = '''"""Stand-in for Colab's google.colab in the course's Colab twin (tools/colab.py).

Colab's kernel has imported google.colab before the first cell runs; the course's setup cell
only asks whether it is in sys.modules. Nothing else of Colab is imitated here.
"""
TWIN = True
'''

OUTPUT_STUB_SOURCE = '''"""Stand-in for google.colab.output: jax imports it when google.colab is loaded (for its
debugger, which the course does not use). Any use of it fails loudly."""


def __getattr__(name):
    raise AttributeError(f"google.colab.output.{name} is not part of the Colab twin")
'''


def log(message: str) -> None:
    print(message, flush=True)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_packages() -> dict[str, str]:
    pins = {}
    for line in PACKAGES.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[normalise(name)] = version
    return pins


def twin_pip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(TWIN_PY), "-m", "pip", "--disable-pip-version-check", *args],
                          check=check, capture_output=True, text=True)


def installed() -> dict[str, str]:
    listing = json.loads(twin_pip("list", "--format=json").stdout)
    return {normalise(p["name"]): p["version"] for p in listing}


def build_venv(pins: dict[str, str]) -> None:
    """The twin's environment, rebuilt whenever the package file changes."""
    stamp = VENV / ".colab-packages.sha256"
    digest = hashlib.sha256(PACKAGES.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    log(f"building the twin's environment from {PACKAGES.relative_to(ROOT)}")
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    twin_pip("install", "--quiet", f"pip=={pins['pip']}")
    result = twin_pip("install", "--quiet", "-r", str(PACKAGES), check=False)
    if result.returncode != 0:
        sys.exit(f"error: could not install Colab's packages:\n{result.stdout}{result.stderr}")
    stamp.write_text(digest)


def reset_venv(pins: dict[str, str]) -> dict[str, str]:
    """Back to exactly the Colab file: remove what was added, reinstall what was removed."""
    now = installed()
    added = sorted(set(now) - set(pins))
    if added:
        twin_pip("uninstall", "--yes", "--quiet", *added)
    changed = [f"{n}=={v}" for n, v in pins.items() if now.get(n) != v]
    if changed:
        twin_pip("install", "--quiet", "--no-deps", *changed)
    now = installed()
    if now != pins:
        diff = {n: (pins.get(n), now.get(n)) for n in set(pins) | set(now) if pins.get(n) != now.get(n)}
        sys.exit(f"error: the twin's environment differs from {PACKAGES.name}: {diff}")
    return now


def write_kernel() -> None:
    """A kernelspec for the twin's Python that imports the google.colab stand-in at start."""
    (STUB / "google" / "colab").mkdir(parents=True, exist_ok=True)
    (STUB / "google" / "colab" / "__init__.py").write_text(STUB_SOURCE)
    (STUB / "google" / "colab" / "output.py").write_text(OUTPUT_STUB_SOURCE)
    spec_dir = KERNELS / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [str(TWIN_PY), "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.exec_lines=import google.colab"],
        "display_name": "Colab twin",
        "language": "python",
        "env": {"PYTHONPATH": str(STUB), FAST_ENV: "1"},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))


def copy_source() -> None:
    """What `pip install git+URL` would check out: the package's files, not .venv or _build."""
    shutil.rmtree(SOURCE, ignore_errors=True)
    SOURCE.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, SOURCE / name)
    shutil.copytree(ROOT / "src", SOURCE / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))


def colab_cell(nb: dict) -> dict:
    """The notebook's setup cell, pointed at the copy of the checkout instead of GitHub."""
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
    source = "".join(cell["source"])
    if source != setup_cell_source():
        raise SystemExit("error: the first code cell is not runtime.setup_cell_source()")
    if source.count(INSTALL_SPEC) != 1:
        raise SystemExit(f"error: the setup cell does not install {INSTALL_SPEC} exactly once")
    cell["source"] = source.replace(INSTALL_SPEC, f'"attention-course @ file://{SOURCE}"')
    return cell


def glued_figures(nb: dict) -> list[str]:
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    return sorted(set(re.findall(r"\{glue:figure\}\s+([A-Za-z_][A-Za-z0-9_]*)", text)))


def glued_numbers(nb: dict) -> list[str]:
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    return sorted(set(re.findall(r"\{glue:text\}`([A-Za-z_][A-Za-z0-9_]*)", text)))


def cell_seconds(cell: dict) -> float:
    """How long a cell ran, from the timing nbclient records in its metadata."""
    from datetime import datetime

    timing = cell.get("metadata", {}).get("execution", {})
    try:
        start = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return float("nan")
    return (end - start).total_seconds()


def outputs_summary(nb: dict) -> dict:
    images, duplicates, widgets, text = 0, [], 0, []
    seen = {}
    for index, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            for mime in ("image/png", "image/svg+xml"):
                if mime in data:
                    images += 1
                    key = hashlib.sha256("".join(data[mime]).encode()).hexdigest()
                    if key in seen:
                        duplicates.append(f"cell {index} repeats the image of cell {seen[key]}")
                    seen[key] = index
            if "application/vnd.jupyter.widget-view+json" in data:
                widgets += 1
            if out.get("output_type") == "stream":
                text.append("".join(out.get("text", "")))
            elif "text/plain" in data:
                text.append("".join(data["text/plain"]))
    return {"images": images, "duplicates": duplicates, "widgets": widgets, "text": "".join(text)}


def execute(nb: dict, name: str) -> tuple[dict, float]:
    import nbformat
    from nbclient import NotebookClient

    CONTENT.mkdir(parents=True, exist_ok=True)
    notebook = nbformat.reads(json.dumps(nb), as_version=4)  # joins list-of-lines sources
    client = NotebookClient(notebook, kernel_name=KERNEL_NAME, timeout=CELL_TIMEOUT,
                            resources={"metadata": {"path": str(CONTENT)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    (OUT / "executed").mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, OUT / "executed" / name)
    return json.loads(nbformat.writes(notebook)), seconds


def check_notebook(path: pathlib.Path, pins: dict[str, str]) -> tuple[list[str], str]:
    nb = json.loads(path.read_text())
    colab_cell(nb)
    failures = []
    try:
        executed, seconds = execute(nb, path.name)
    except Exception as err:  # a cell error: nbclient names the cell and the traceback
        return [f"{path.name}: a cell failed: {str(err)[-3000:]}"], f"{path.name}: FAILED"
    after = installed()
    freeze = OUT / "freeze"
    freeze.mkdir(exist_ok=True)
    (freeze / f"{path.stem}.before.txt").write_text("".join(f"{n}=={v}\n" for n, v in sorted(pins.items())))
    (freeze / f"{path.stem}.after.txt").write_text("".join(f"{n}=={v}\n" for n, v in sorted(after.items())))
    changed = {n: (v, after.get(n)) for n, v in pins.items() if after.get(n) != v}
    if changed:
        failures.append(f"{path.name}: the setup cell changed Colab's packages: {changed}")
    added = sorted(f"{n}=={after[n]}" for n in set(after) - set(pins))
    summary = outputs_summary(executed)
    if "dependency resolver" in summary["text"] or "ERROR:" in summary["text"]:
        failures.append(f"{path.name}: pip reported a problem: {summary['text'][:2000]}")
    figures = glued_figures(nb)
    if summary["images"] < len(figures):
        failures.append(f"{path.name}: shows {summary['images']} figures, the book glues "
                        f"{len(figures)} ({', '.join(figures)})")
    failures += [f"{path.name}: {d}" for d in summary["duplicates"]]
    trains = any("train.fit(" in "".join(c["source"]) or "Trainer(" in "".join(c["source"])
                 for c in nb["cells"] if c["cell_type"] == "code")
    if trains and summary["widgets"] == 0:
        failures.append(f"{path.name}: trains models but showed no progress bar")
    unprinted = [n for n in glued_numbers(nb) if f"{n} = " not in summary["text"]]
    if unprinted:
        failures.append(f"{path.name}: glued numbers not printed with their names: {unprinted}")
    setup = cell_seconds(next(c for c in executed["cells"] if c["cell_type"] == "code"))
    line = (f"{path.name}: {seconds:5.0f} s (setup cell {setup:.0f} s), {summary['images']} figures shown "
            f"(book glues {len(figures)}), {len(glued_numbers(nb))} glued numbers printed, "
            f"{summary['widgets']} progress-bar widgets; pip added {', '.join(added) or 'nothing'}")
    return failures, line


def check_without_flax(pins: dict[str, str]) -> tuple[list[str], str]:
    """A runtime that has jax but not flax/optax: pip must pick versions that fit its jax."""
    twin_pip("uninstall", "--yes", "--quiet", "flax", "optax")
    before = installed()
    import nbformat

    cell = colab_cell(json.loads((sorted((ROOT / "notebooks").glob("*.ipynb"))[0]).read_text()))
    probe = nbformat.v4.new_code_cell(
        "import flax, jax, optax\nfrom flax import nnx\n"
        "print('versions', jax.__version__, flax.__version__, optax.__version__)\n"
        "print(nnx.Linear(2, 3, rngs=nnx.Rngs(0))(jax.numpy.ones((1, 2))).shape)")
    nb = nbformat.v4.new_notebook(cells=[nbformat.reads(json.dumps(
        nbformat.v4.new_notebook(cells=[cell])), as_version=4).cells[0], probe])
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Colab twin", "language": "python"}
    failures = []
    try:
        executed, seconds = execute(json.loads(nbformat.writes(nb)), "no_flax.ipynb")
    except Exception as err:
        return [f"without flax: the setup cell failed: {str(err)[-3000:]}"], "without flax: FAILED"
    after = installed()
    changed = {n: (v, after.get(n)) for n, v in before.items() if after.get(n) != v}
    if changed:
        failures.append(f"without flax: the setup cell changed installed packages: {changed}")
    for name in ("flax", "optax"):
        if name not in after:
            failures.append(f"without flax: {name} was not installed")
    return failures, (f"without flax/optax: {seconds:.0f} s; jax kept at {after.get('jax')}, "
                      f"pip added flax {after.get('flax')}, optax {after.get('optax')}")


def run_unit_tests(pins: dict[str, str]) -> tuple[list[str], str]:
    """The unit tests at Colab's versions: pytest and hypothesis are added, nothing is changed.

    Not the tests of the book's own tooling (BOOK_TESTS): they test the book build, its browser
    checks, publishing and the autograder, whose tools (Jupyter Book, pybtex, Playwright, ghp-import,
    the grader) are not part of what a learner installs on Colab.
    """
    constraints = OUT / "colab-keep.txt"
    constraints.write_text("".join(f"{n}=={v}\n" for n, v in pins.items() if n not in ("pip", "setuptools")))
    result = twin_pip("install", "--quiet", "-c", str(constraints), str(SOURCE),
                      "pytest", "pytest-xdist", "hypothesis", check=False)
    if result.returncode != 0:
        return [f"unit tests: could not install the course and pytest: {result.stderr[-2000:]}"], \
            "unit tests: FAILED to install"
    start = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != FAST_ENV}
    ignore = [f"--ignore={path}" for path in BOOK_TESTS]
    run = subprocess.run([str(TWIN_PY), "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider", *ignore, "tests"],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    tail = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-500:]
    failures = [] if run.returncode == 0 else [f"unit tests at Colab's versions failed:\n{run.stdout[-6000:]}"]
    return failures, f"unit tests at Colab's versions: {tail} ({seconds:.0f} s)"


def main() -> int:
    start = time.perf_counter()
    pins = read_packages()
    OUT.mkdir(parents=True, exist_ok=True)
    build_venv(pins)
    reset_venv(pins)
    write_kernel()
    copy_source()
    os.environ["JUPYTER_PATH"] = str(KERNELS)
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if len(sys.argv) > 1:
        notebooks = [p for p in notebooks if any(p.name.startswith(a) for a in sys.argv[1:])]
    failures, lines = [], [f"Colab twin: Python {sys.version.split()[0]}, jax {pins['jax']}, "
                           f"flax {pins['flax']}, optax {pins['optax']}, ipython {pins['ipython']}"]
    for path in notebooks:
        log(f"running {path.name} as on Colab (fast mode)")
        found, line = check_notebook(path, pins)
        failures += found
        lines.append(line)
        log(line)
        reset_venv(pins)
    steps = [check_without_flax] + ([] if len(sys.argv) > 1 else [run_unit_tests])
    for step in steps:
        found, line = step(pins)
        failures += found
        lines.append(line)
        log(line)
        reset_venv(pins)
    lines.append(f"total {time.perf_counter() - start:.0f} s")
    (OUT / "summary.txt").write_text("\n".join(lines + failures) + "\n")
    print("\n".join(["", *lines]))
    if failures:
        print("\nColab twin FAILED:\n- " + "\n- ".join(failures), file=sys.stderr)
        return 1
    print("Colab twin passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
