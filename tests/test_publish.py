"""Publishing: the GitHub Actions workflow, `make publish`, and the one repository address."""

import importlib.util
import json
import pathlib
import re
import shutil
import subprocess

import yaml

from attention_course import runtime

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def workflow():
    data = yaml.safe_load(WORKFLOW.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def steps(job):
    return workflow()["jobs"][job]["steps"]


def test_workflow_builds_on_every_push_to_main_with_the_command_people_use():
    wf = workflow()
    assert wf["on"]["push"]["branches"] == ["main"]
    runs = [s["run"] for s in steps("build") if "run" in s]
    assert runs == ["make book"], "the workflow runs what a person runs"
    python = next(s for s in steps("build") if s.get("uses", "").startswith("actions/setup-python"))
    requires = re.search(r'requires-python = ">=(\d+\.\d+)"', (ROOT / "pyproject.toml").read_text())
    assert python["with"]["python-version"] == requires.group(1)


def test_workflow_keeps_the_jupyter_cache_and_deploys_the_html_to_pages():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    cache = next(s for s in steps("build") if s.get("uses", "").startswith("actions/cache"))
    assert cache["with"]["path"] == config["execute"]["cache"]
    assert cache["with"]["restore-keys"], "a changed notebook still starts from the last cache"
    upload = next(s for s in steps("build") if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html"
    deploy = workflow()["jobs"]["deploy"]
    assert deploy["needs"] == "build"
    assert any(s.get("uses", "").startswith("actions/deploy-pages") for s in deploy["steps"])
    assert workflow()["permissions"]["pages"] == "write"


def test_make_book_and_make_publish_build_and_push_the_same_folder():
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^publish: .*\n(\t.*\n)*\t\$\(VENV\)/bin/ghp-import -n -p -f _build/html$", make, re.M)
    assert "$(PY) tools/book.py full" in make
    assert (ROOT / ".venv" / "bin" / "ghp-import").exists() or shutil.which("ghp-import"), \
        "ghp-import is pinned in requirements.txt"


def test_ghp_import_commits_the_built_html_to_gh_pages(tmp_path):
    """ghp-import, as `make publish` calls it, minus the push: the pages land on gh-pages."""
    ghp = ROOT / ".venv" / "bin" / "ghp-import"
    repo, html = tmp_path / "repo", tmp_path / "html"
    html.mkdir()
    (html / "index.html").write_text("<p>book</p>")
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "PATH": "/usr/bin:/bin"}
    subprocess.run([str(ghp), "-n", "-f", str(html)], cwd=repo, check=True, env=env)
    files = subprocess.run(["git", "ls-tree", "--name-only", "gh-pages"], cwd=repo, check=True,
                           capture_output=True, text=True).stdout.split()
    assert sorted(files) == [".nojekyll", "index.html"]


def test_the_repository_address_is_in_one_place_and_everything_follows_it():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["repository"]["url"] == runtime.REPOSITORY_URL
    assert config["repository"]["branch"] == "main"
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        first = next(c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
        assert "".join(first["source"]) == runtime.setup_cell_source(), path.name
    named = re.compile(r"https://github\.com/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
    for path in [ROOT / "README.md", ROOT / "_config.yml", WORKFLOW, *sorted((ROOT / "book").glob("*.md"))]:
        for url in named.findall(path.read_text()):
            if "attention-course" in url or "you/" in url:
                assert url in (runtime.REPOSITORY_URL, "https://github.com/you/fork"), f"{path.name}: {url}"


def test_make_repository_points_every_copy_at_a_fork(tmp_path):
    copy = tmp_path / "course"
    for part in ("src", "notebooks", "book", "tools"):
        shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy2(ROOT / "_config.yml", copy / "_config.yml")
    fork = "https://github.com/someone/attention-fork"
    subprocess.run([str(ROOT / ".venv" / "bin" / "python"), str(copy / "tools" / "repository.py"), fork],
                   check=True, capture_output=True)
    assert f'REPOSITORY_URL = "{fork}"' in (copy / "src" / "attention_course" / "runtime.py").read_text()
    assert yaml.safe_load((copy / "_config.yml").read_text())["repository"]["url"] == fork
    for path in (copy / "notebooks").glob("*.ipynb"):
        text = path.read_text()
        assert fork in text and runtime.REPOSITORY_URL not in text
    assert fork in (copy / "book" / "intro.md").read_text()
    tool = load_tool("repository")
    try:
        tool.point_at("not a url")
    except SystemExit as err:
        assert "URL must look like" in str(err)
    else:
        raise AssertionError("a malformed URL must be refused")
