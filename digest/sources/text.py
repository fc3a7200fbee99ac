"""Plain-text paper lists (a copy of huggingface.co/papers): headers, then title and abstract.

Blank lines, line endings and header lines vary from list to list, so the layout is read from the
text itself: an abstract is prose (long, in sentences); a title is the short line right before
one; any other short line is a header (or footer) and never a paper.
"""

from __future__ import annotations

import re

from digest.papers import PaperIn, make_paper

TITLE_MAX = 300
LONG_PROSE = 200
SHORT_PROSE = 60
SHORT_PROSE_WORDS = 8

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
_MONTHS = _MONTH + r"\.?"
_WEEKDAY = r"(?:(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*\.?,?\s+)?"
_DATE = (
    rf"{_WEEKDAY}(?:{_MONTHS}\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTHS}(?:,?\s+\d{{4}})?"
    rf"|\d{{4}}-\d{{2}}-\d{{2}}|{_MONTHS}\s+\d{{4}})"
)
_DATE_RE = re.compile(rf"^{_DATE}$", re.IGNORECASE)
# Header lines the huggingface.co/papers page shows above the list, in its own spelling.
_HEADERS = (
    "new",
    "get trending papers in your email inbox!",
    "subscribe",
    "daily papers",
    "trending papers",
    "byak and the research community",
    "by ak and the research community",
)
_HEADER_SET = frozenset(_HEADERS)
# A header glued to the first title when the page was copied: "Daily PapersMARLIN: …",
# "Aug 1MARLIN: …". Only when a capital, digit or quote follows at once, which a title never does
# after these words.
_GLUED_RE = re.compile(
    r"^(?:Daily Papers|Trending Papers|Subscribe|Get trending papers in your email inbox!"
    r"|by ?AK and the research community|new"
    rf"|(?i:{_MONTH})\s+\d{{1,2}}(?:,\s*\d{{4}})?)(?=[A-Z0-9\"'“(\[])",
)
_SENTENCE_END_RE = re.compile(r"[.!?][\"')\]”’]?(?:\s|$)")


def _is_header(line: str) -> bool:
    return line.casefold().rstrip(" :") in _HEADER_SET or bool(_DATE_RE.match(line))


def _is_long_prose(line: str) -> bool:
    return len(line) >= LONG_PROSE and bool(_SENTENCE_END_RE.search(line))


def _is_short_prose(line: str) -> bool:
    """A one- or two-sentence abstract: long enough, several words, ends with a full stop."""
    return (
        len(line) >= SHORT_PROSE
        and len(line.split()) >= SHORT_PROSE_WORDS
        and bool(re.search(r"\.[\"')\]”’]?$", line))
    )


def _is_title(line: str) -> bool:
    return 2 <= len(line) <= TITLE_MAX and not _is_header(line) and not _is_long_prose(line)


def _is_clear_title(line: str) -> bool:
    """A line that reads as a paper title: "Name: Subtitle" or mostly Capitalised Words."""
    words = re.findall(r"[^\W\d_][\w'-]*", line)
    if len(words) < 3 or _is_short_prose(line):
        return False
    if ":" in line:
        return True
    significant = [w for w in words if len(w) > 3]
    return bool(significant) and sum(w[0].isupper() for w in significant) >= 0.6 * len(significant)


def _strip_glued(title: str) -> str:
    for _ in range(3):
        stripped = _GLUED_RE.sub("", title, count=1)
        if stripped == title:
            break
        title = stripped
    return title


def _starts_paper(lines: list[str], i: int) -> bool:
    """True when lines[i] is a title: a title-like line with an abstract right after it."""
    if i + 1 >= len(lines) or not _is_title(lines[i]):
        return False
    nxt = lines[i + 1]
    if _is_long_prose(nxt):
        return True
    if not _is_short_prose(nxt):
        return False
    # A short abstract is trusted only under a clear title, so that a header and a sentence of
    # site blurb never pass for a paper, and only when the line is not itself the title of a
    # paper that follows.
    if not _is_clear_title(lines[i]):
        return False
    return not (i + 2 < len(lines) and _is_long_prose(lines[i + 2]))


def entries(text: str) -> list[tuple[str, str]]:
    """(title, abstract) pairs in reading order; header and footer lines are left out."""
    lines = [line.strip(" \t\u00a0\u200b\ufeff") for line in text.splitlines()]
    lines = [line for line in lines if line]
    found: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        if not _starts_paper(lines, i):
            i += 1
            continue
        title, parts = lines[i], [lines[i + 1]]
        i += 2
        # Further prose paragraphs belong to the same abstract, until the next title.
        while i < len(lines) and not _starts_paper(lines, i):
            if not (_is_long_prose(lines[i]) or _is_short_prose(lines[i])):
                break
            parts.append(lines[i])
            i += 1
        found.append((_strip_glued(title), " ".join(parts)))
    return found


def paper(entry: tuple[str, str]) -> PaperIn | None:
    """One (title, abstract) pair → a paper keyed by its title."""
    title, abstract = entry
    return make_paper(title=title, abstract=abstract)
