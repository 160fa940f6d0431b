"""The otter-grader plugin of the coursework (``otter_config.json`` names it).

Its ``before_execution`` replaces the submission that otter is about to execute by
:func:`attention_course.coursework.grader.grading_notebook`: a guard, the chapter's import cell and the
student's exercise cells, so that grading runs none of the chapter's experiments.  It needs
otter-grader installed (the instructor's machine, Gradescope), never the student's.
"""

from __future__ import annotations

import os

from otter.plugins import AbstractOtterPlugin

from attention_course.coursework.grader import grading_notebook


class CourseworkPlugin(AbstractOtterPlugin):
    """``before_execution``: the grading notebook of the submission."""

    def before_execution(self, submission):
        skip = [s for s in os.environ.get("ATTENTION_COURSE_SKIP", "").split(",") if s]
        return grading_notebook(submission, self.plugin_config, skip=skip)
