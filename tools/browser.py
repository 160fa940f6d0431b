"""Open every page of the built book in headless Chromium and check it as a reader would see it.

`make browser` runs `python tools/browser.py _build/fast/_build/html`: the strict fast build that
`make test` makes. Debian's Chromium is driven by Playwright's Python API (Playwright's own browser
download is not used); the pages are served on 127.0.0.1, and any request to another host is
refused, so a page that needs a CDN (MathJax, fonts) fails here as it would for a reader offline.

Checks on every page:
  * no console errors and no uncaught JavaScript exceptions;
  * every image loaded and shown at a legible size: a vector image, or displayed at least 80 % of
    its intended width, which is its natural width, or the width its HTML declares for a
    high-resolution ("retina") PNG, drawn at twice the pixels it is meant to fill;
  * no code cell or output wider than the content column (reported with the cell's first line);
  * all math typeset by MathJax, and no raw TeX delimiters left in the text;
  * on a chapter page: a Colab launch link to that chapter's notebook on branch main, every
    "Solution" dropdown opens on a click and holds content, and exercises are numbered per chapter.
A full-page screenshot of every page goes to _build/screens/. Exit status 1 on any failure, each
reported as `page: defect`.
"""

from __future__ import annotations

import functools
import http.server
import os
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 900}  # a laptop screen: the book's widest layout
MIN_SCALE = 0.8
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


@dataclass
class PageReport:
    page: str
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    screenshot: str = ""


def ensure_chromium() -> None:
    """Install Debian's chromium when it is missing (as root, as in CI)."""
    if os.path.exists(CHROMIUM):
        return
    if os.geteuid() != 0:
        sys.exit(f"error: {CHROMIUM} is missing; install Debian's package: sudo apt-get install chromium")
    print("installing Debian's chromium (apt-get)", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: D102 - keep the test output readable
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a browser that stops a download early
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def serve(directory: pathlib.Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = _QuietServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


# The checks that run inside the page. Each returns a list of defects as strings.
_IMAGES_JS = """(minScale) => {
  const out = [];
  for (const img of document.querySelectorAll('article img')) {
    const name = (img.getAttribute('src') || '').split('/').pop();
    if (!img.complete || img.naturalWidth === 0) { out.push(`image ${name} did not load`); continue; }
    if (/\\.svg($|\\?)/i.test(img.currentSrc || img.src)) continue;  // vector: legible at any size
    // The width the page asks for: a retina PNG is drawn at twice the pixels it is meant to fill
    // and says so with a width attribute or style; an image that declares nothing means its own.
    const styled = /px$/.test(img.style.width) ? parseFloat(img.style.width) : NaN;
    const declared = parseFloat(img.getAttribute('width')) || styled;
    const intended = declared > 0 ? Math.min(declared, img.naturalWidth) : img.naturalWidth;
    const shown = img.getBoundingClientRect().width;
    if (shown < minScale * intended - 0.5) {
      out.push(`image ${name} is squeezed to ${Math.round(100 * shown / intended)}% of its width ` +
               `(${Math.round(shown)} of ${Math.round(intended)} px): its text is too small to read`);
    }
  }
  return out;
}"""

_CODE_WIDTH_JS = """() => {
  const out = [];
  for (const pre of document.querySelectorAll('article pre')) {
    if (pre.scrollWidth > pre.clientWidth + 1) {
      const kind = pre.closest('.cell_output, .output') ? 'output' : 'code';
      const first = (pre.innerText || '').split('\\n').find(l => l.trim()) || '';
      out.push(`${kind} wider than the column (${pre.scrollWidth} > ${pre.clientWidth} px), ` +
               `starting: ${first.trim().slice(0, 70)}`);
    }
  }
  return out;
}"""

_MATH_JS = """() => {
  const out = [];
  const math = document.querySelectorAll('article .math');
  let raw = 0;
  for (const m of math) if (!m.querySelector('mjx-container')) raw += 1;
  if (raw) out.push(`${raw} of ${math.length} math elements were not typeset by MathJax`);
  const walker = document.createTreeWalker(document.querySelector('article') || document.body,
                                           NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement.closest('pre, code, script, style, mjx-container')) continue;
    const t = n.textContent;
    if (t.includes('\\\\(') || t.includes('\\\\[') || /\\$\\$/.test(t)) {
      out.push(`raw TeX left in the text: ${t.trim().slice(0, 60)}`); break;
    }
  }
  return out;
}"""

_EXERCISES_JS = """() => Array.from(document.querySelectorAll('article .exercise .admonition-title, ' +
  'article .exercise p.admonition-title, article div.exercise > p:first-child'))
  .map(e => e.innerText.trim())"""


def check_page(page, url: str, rel: str, screens: pathlib.Path) -> PageReport:
    report = PageReport(rel)
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(f"console error: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"JavaScript error: {exc}"))
    start = time.perf_counter()
    page.goto(f"{url}/{rel}", wait_until="load")
    page.evaluate("() => document.fonts.ready")
    has_math = page.evaluate("() => document.querySelectorAll('article .math').length > 0")
    if has_math:
        try:
            page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                                   timeout=15_000)
            page.evaluate("() => MathJax.startup.promise")
        except Exception:  # noqa: BLE001 - reported as a defect below
            report.problems.append("MathJax did not load")
    report.problems += page.evaluate(_IMAGES_JS, MIN_SCALE)
    report.problems += page.evaluate(_CODE_WIDTH_JS)
    if has_math:
        report.problems += page.evaluate(_MATH_JS)
    chapter = re.match(r"notebooks/(\d\d)_([a-z_]+)\.html$", rel)
    if chapter:
        report.problems += check_chapter(page, chapter.group(1), chapter.group(0))
    shot = screens / (rel.replace("/", "__").removesuffix(".html") + ".png")
    page.screenshot(path=str(shot), full_page=True)
    report.screenshot = str(shot.relative_to(ROOT)) if shot.is_relative_to(ROOT) else str(shot)
    report.problems = errors + report.problems
    report.seconds = time.perf_counter() - start
    return report


def check_chapter(page, number: str, rel: str) -> list[str]:
    problems = []
    notebook = rel.replace(".html", ".ipynb")
    links = page.eval_on_selector_all("a[href*='colab.research.google.com']", "as => as.map(a => a.href)")
    wanted = re.compile(rf"colab\.research\.google\.com/github/[^/]+/[^/]+/blob/main/{re.escape(notebook)}$")
    if not any(wanted.search(href) for href in links):
        problems.append(f"no Colab launch link to {notebook} on branch main (found: {links or 'none'})")
    titles = page.evaluate(_EXERCISES_JS)
    numbers = [m.group(1) for t in titles if (m := re.search(r"Exercise\s+([\d.]+)", t))]
    expected = [f"{int(number)}.{k}" for k in range(1, len(numbers) + 1)]
    if numbers != expected:
        problems.append(f"exercises are numbered {numbers}, expected {expected} (per chapter)")
    problems += check_solutions(page)
    return problems


def check_solutions(page) -> list[str]:
    """Every dropdown titled 'Solution...' opens on a click and shows content."""
    problems = []
    toggles = page.locator("article details:has(> summary:text-matches('^\\\\s*Solution', 'i')),"
                           " article .solution.dropdown, article .dropdown:has(.admonition-title:text-matches("
                           "'^\\\\s*Solution', 'i'))")
    count = toggles.count()
    for k in range(count):
        box = toggles.nth(k)
        title = box.locator("summary, .admonition-title").first
        label = (title.inner_text() if title.count() else "Solution").strip().splitlines()[0][:50]
        try:
            title.scroll_into_view_if_needed()
            title.click()
            page.wait_for_timeout(150)
            shown = box.evaluate(
                """(b) => {
                  const body = b.tagName === 'DETAILS' ? (b.open ? b : null) : b;
                  if (!body) return 0;
                  let h = 0;
                  for (const c of body.children) {
                    if (c.matches('summary, .admonition-title, button')) continue;
                    const r = c.getBoundingClientRect();
                    if (getComputedStyle(c).display !== 'none' && r.height > 0) h += r.height;
                  }
                  return h;
                }""")
        except Exception as err:  # noqa: BLE001
            problems.append(f"dropdown '{label}' could not be opened: {err}")
            continue
        if shown < 10:
            problems.append(f"dropdown '{label}' shows no content after a click")
    if count == 0 and page.locator("article .exercise").count():
        problems.append("the chapter has exercises but no 'Solution' dropdown")
    return problems


def pages_of(html: pathlib.Path) -> list[str]:
    """Every page of the book; a redirect stub (the root index.html) is not a page."""
    skip = {"genindex.html", "search.html", "py-modindex.html"}
    return sorted(str(p.relative_to(html)) for p in html.rglob("*.html")
                  if not p.relative_to(html).parts[0].startswith("_") and p.name not in skip
                  and 'http-equiv="Refresh"' not in p.read_text(errors="ignore")[:2000])


def check_site(html: pathlib.Path, screens: pathlib.Path, pages: list[str] | None = None) -> list[PageReport]:
    from playwright.sync_api import sync_playwright

    ensure_chromium()
    shutil.rmtree(screens, ignore_errors=True)
    screens.mkdir(parents=True)
    server, url = serve(html)
    reports = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport=VIEWPORT)
            # Nothing but this server: a page that needs a CDN must fail here, naming what it asked for.
            refused: list[str] = []

            def refuse(route):
                refused.append(route.request.url)
                route.abort()

            context.route(re.compile(r"^(?!http://127\.0\.0\.1:).*"), refuse)
            for rel in pages or pages_of(html):
                page = context.new_page()
                refused.clear()
                try:
                    report = check_page(page, url, rel, screens)
                finally:
                    page.close()
                report.problems += [f"requests a resource from outside the book: {u[:100]}" for u in refused]
                reports.append(report)
            browser.close()
    finally:
        server.shutdown()
    return reports


def main(argv: list[str]) -> int:
    html = pathlib.Path(argv[1] if len(argv) > 1 else ROOT / "_build" / "fast" / "_build" / "html").resolve()
    if not (html / "index.html").exists():
        sys.exit(f"error: no built book in {html}: run `make test` (or `make fastbook`) first")
    start = time.perf_counter()
    reports = check_site(html, ROOT / "_build" / "screens")
    failed = 0
    for r in reports:
        status = "ok" if not r.problems else f"{len(r.problems)} defect(s)"
        print(f"{r.page:40s} {r.seconds:5.1f} s  {status}  screenshot {r.screenshot}")
        for problem in r.problems:
            print(f"  {r.page}: {problem}")
        failed += bool(r.problems)
    print(f"\n{len(reports)} pages checked in {time.perf_counter() - start:.0f} s: "
          f"{len(reports) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
