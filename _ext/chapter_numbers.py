"""Exercises and figures numbered per chapter: Exercise 4.1, 4.2, ... in chapter 04.

sphinx-exercise numbers exercises with Sphinx's numfig, whose counters run through the whole book
unless the table of contents is numbered (and then every heading gets a number too). This
extension renumbers, after Sphinx has assigned the numbers, every enumerable node (exercises,
figures) of a chapter page ``notebooks/NN_slug`` as ``(NN, k)``, k counting from 1 in the order of
the page. Solutions and references read the same numbers, so "Solution to Exercise 4.2" follows.
Loaded through ``sphinx.local_extensions`` in ``_config.yml``.
"""

import re

CHAPTER = re.compile(r"(?:^|/)notebooks/(\d\d)_[a-z_]+$")


def renumber(app, env):
    changed = []
    for docname, by_type in env.toc_fignumbers.items():
        match = CHAPTER.search(docname)
        if not match:
            continue
        chapter = int(match.group(1))
        for figtype, numbers in by_type.items():
            ordered = sorted(numbers, key=lambda figure_id: numbers[figure_id])
            renumbered = {fid: (chapter, k) for k, fid in enumerate(ordered, start=1)}
            if renumbered != numbers:
                by_type[figtype] = renumbered
                changed.append(docname)
    return sorted(set(changed))


def setup(app):
    app.connect("env-get-updated", renumber, priority=900)  # after the toctree collector (500)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
