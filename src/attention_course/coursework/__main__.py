"""``python -m attention_course.coursework``: see :mod:`attention_course.coursework.cli`."""

from attention_course.coursework.cli import main

raise SystemExit(main())
