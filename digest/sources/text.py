"""Plain-text paper lists (a copy of huggingface.co/papers): headers, then title and abstract.

Blank lines, line endings and header lines vary from list to list, so the layout is read from the
text itself: an abstract is prose (long, in sentences); a title is the short line right before
one; any other short line is a header (or footer) and never a paper. A text without that shape
(a README, a markdown table, source code, a CSV file) is no paper list, and is refused whole.
"""

from __future__ import annotations

import dataclasses
import re

from digest.papers import PaperIn, make_paper

TITLE_MAX = 300
LONG_PROSE = 200
SHORT_PROSE = 60
SHORT_PROSE_WORDS = 8
MAX_PARAGRAPHS = 8  # an abstract longer than this is a wall of text (a CSV), not an abstract

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
# Markdown blocks (headings, quotes, lists, tables, fences), comments and code statements.
_MARKUP_START_RE = re.compile(
    r"(?:#{1,6}\s|#!|>|\||```|~~~|[-*+]\s|\d{1,3}[.)]\s|//|/\*|\*/|[{}\])=]|@\w"
    r"|(?:def|class|import|from\s+\S+\s+import|return|elif|else|try|except|finally|raise"
    r"|function|var|let|const|public|private|package|namespace|#include)\b)"
)
_CODE_END_RE = re.compile(r"[{};:(\[,\\=]$")
_CODE_MARKS = ("`", " = ", " == ", " != ", "=>", '","', "\t")
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


def _scan(lines: list[str]) -> list[tuple[str, list[str]]]:
    """(title, abstract paragraphs) in reading order; header and footer lines are left out."""
    found: list[tuple[str, list[str]]] = []
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
        found.append((title, parts))
    return found


def _is_markup(line: str) -> bool:
    """A line of markdown, a table, CSV or source code: no paper title or abstract reads so."""
    return bool(
        _MARKUP_START_RE.match(line)
        or _CODE_END_RE.search(line)
        or any(mark in line for mark in _CODE_MARKS)
        or line.count("|") >= 2
    )


def _is_junk_title(title: str) -> bool:
    return _is_markup(title) or not re.search(r"[^\W\d_]{2}", title)


def _is_substantial(line: str) -> bool:
    """A line that says something: markup, code or a sentence (not a menu item or a date)."""
    return not _is_header(line) and (_is_markup(line) or len(line.split()) >= 6)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Reading:
    """What a plain text holds: its papers' (title, abstract) pairs, or why it is no paper list."""

    entries: list[tuple[str, str]]
    dropped: int = 0  # would-be papers under a title of markup or code, or a wall of prose
    problem: str | None = None  # set when the text is not a paper list


def read(text: str) -> Reading:
    """The papers of a plain-text list, checking first that the text has the shape of one.

    A paper list is mostly titles each followed by an abstract, with a few header lines; a
    README, a markdown table, source code or a CSV file has other lines around the few pairs
    that look like one (a heading and its paragraph), and those are refused rather than stored.
    """
    lines = [line.strip(" \t\u00a0\u200b\ufeff") for line in text.splitlines()]
    lines = [line for line in lines if line]
    found = _scan(lines)
    if not found:
        return Reading(entries=[], problem="no title line followed by an abstract")
    kept = [
        (title, parts)
        for title, parts in found
        if not _is_junk_title(title) and len(parts) <= MAX_PARAGRAPHS
    ]
    dropped = len(found) - len(kept)
    if dropped * 2 >= len(found):
        return Reading(
            entries=[],
            dropped=dropped,
            problem=f"{dropped} of its {len(found)} would-be papers are markup, code, table rows "
            "or walls of text",
        )
    covered = sum(1 + len(parts) for _, parts in kept)
    others = sum(map(_is_substantial, lines)) - sum(
        _is_substantial(title) + sum(map(_is_substantial, parts)) for title, parts in kept
    )
    if others > covered:
        return Reading(
            entries=[],
            dropped=dropped,
            problem=f"{others} of its lines are neither titles nor abstracts, against {covered}",
        )
    pairs = [(_strip_glued(title), " ".join(parts)) for title, parts in kept]
    return Reading(entries=pairs, dropped=dropped)


def paper(entry: tuple[str, str]) -> PaperIn | None:
    """One (title, abstract) pair → a paper keyed by its title."""
    title, abstract = entry
    return make_paper(title=title, abstract=abstract)
