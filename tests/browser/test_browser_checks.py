"""The browser checks fail on a page broken on purpose, and name the page and the defect.

Run by `make browser` (after tools/browser.py has checked the real book): a copy of the strictly
built fast book gets three defects on one chapter page, the kind readers found by hand before these
checks existed: a two-panel figure drawn at 100 dpi and squeezed into the column, a code line of
120 characters, and a JavaScript error.
"""

import importlib.util
import pathlib
import shutil
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILT = ROOT / "_build" / "fast" / "_build" / "html"
spec = importlib.util.spec_from_file_location("browser_checks", ROOT / "tools" / "browser.py")
browser = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = browser  # dataclasses look their module up there
spec.loader.exec_module(browser)

PAGE = "notebooks/01_bottleneck.html"


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory):
    if not (BUILT / PAGE).exists():
        pytest.fail(f"no strict fast build in {BUILT}: run `make fastbook` first")
    site = tmp_path_factory.mktemp("site") / "html"
    shutil.copytree(BUILT, site)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4), dpi=100)
    for ax in axes:
        ax.plot([0, 1], [1, 0])
        ax.set_title("a panel drawn at 100 dpi")
    fig.savefig(site / "notebooks" / "two_panel.png", dpi=100)
    plt.close(fig)
    long_line = "total = " + " + ".join(f"x{k}" for k in range(28))
    assert len(long_line) >= 120
    defects = (
        '<img src="two_panel.png" alt="two panels">'
        f'<div class="cell_input docutils container"><div class="highlight"><pre>{long_line}</pre></div></div>'
        "<script>window.addEventListener('load', () => notDefinedAnywhere());</script>"
    )
    page = site / PAGE
    html = page.read_text()
    assert "</article>" in html
    page.write_text(html.replace("</article>", defects + "</article>", 1))
    return site


@pytest.fixture(scope="module")
def report(broken_site, tmp_path_factory):
    (result,) = browser.check_site(broken_site, tmp_path_factory.mktemp("screens"), pages=[PAGE])
    return result


def test_the_broken_page_is_named(report):
    assert report.page == PAGE and report.problems


def test_a_squeezed_100_dpi_two_panel_figure_fails(report):
    (problem,) = [p for p in report.problems if "two_panel.png" in p]
    assert "squeezed" in problem and "too small to read" in problem


def test_a_120_character_code_line_fails_with_its_first_line(report):
    (problem,) = [p for p in report.problems if "x0 + x1" in p]
    assert problem.startswith("code wider than the column") and "total = x0" in problem


def test_a_javascript_error_fails(report):
    assert any("JavaScript error" in p and "notDefinedAnywhere" in p for p in report.problems)


def test_a_screenshot_of_the_page_is_taken(report):
    shot = pathlib.Path(report.screenshot)
    shot = shot if shot.is_absolute() else ROOT / shot
    assert shot.exists() and shot.stat().st_size > 10_000
