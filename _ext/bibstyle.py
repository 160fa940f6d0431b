"""Citations as (Author, Year) and Author (Year), with round brackets instead of sphinxcontrib-bibtex's square ones.

Registered as the referencing style ``author_year_round`` and selected in ``_config.yml``
(``bibtex_reference_style``). Loaded through ``sphinx.local_extensions``.

The list of references is labelled the same way, "Bahdanau et al. 2015" rather than "[3]": the
pybtex formatting style ``author_year_plain`` (pybtex's ``plain``, sorted by author and year, with
the label style ``author_year_label``), selected by ``bibtex_default_style``.
"""

from collections import Counter
from dataclasses import dataclass, field

import pybtex.plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle

import sphinxcontrib.bibtex.plugin
from sphinxcontrib.bibtex.style.referencing import BracketStyle
from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle


def _round() -> BracketStyle:
    return BracketStyle(left="(", right=")")


@dataclass
class RoundAuthorYearReferenceStyle(AuthorYearReferenceStyle):
    bracket_textual: BracketStyle = field(default_factory=_round)
    bracket_parenthetical: BracketStyle = field(default_factory=_round)
    bracket_author: BracketStyle = field(default_factory=_round)
    bracket_label: BracketStyle = field(default_factory=_round)
    bracket_year: BracketStyle = field(default_factory=_round)


sphinxcontrib.bibtex.plugin.register_plugin(
    "sphinxcontrib.bibtex.style.referencing", "author_year_round", RoundAuthorYearReferenceStyle)


def _author_year(entry) -> str:
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [" ".join(p.last_names).replace("{", "").replace("}", "") for p in persons]
    if not names:
        who = entry.key
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who} {entry.fields.get('year', '')}".strip()


class AuthorYearLabelStyle(BaseLabelStyle):
    """Labels "Author Year", "A and B Year", "A et al. Year"; a, b, ... where two would clash."""

    def format_labels(self, sorted_entries):
        labels = [_author_year(entry) for entry in sorted_entries]
        counts, seen = Counter(labels), Counter()
        for label in labels:
            if counts[label] > 1:
                seen[label] += 1
                label = f"{label}{chr(ord('a') + seen[label] - 1)}"
            yield label


class AuthorYearPlainStyle(PlainStyle):
    default_label_style = "author_year_label"


pybtex.plugin.register_plugin("pybtex.style.labels", "author_year_label", AuthorYearLabelStyle)
pybtex.plugin.register_plugin("pybtex.style.formatting", "author_year_plain", AuthorYearPlainStyle)


def setup(app):
    return {"parallel_read_safe": True, "parallel_write_safe": True}
