"""A reader's keywords: how typed text becomes a keyword list, and the limits on one.

Small and dependency-free, so that the subscription rules (:mod:`digest.subscriptions`) and the
ranking (:mod:`digest.ranking`) share one definition of each limit without either importing
the other. The ranking reads at most ``MAX_KEYWORDS`` keywords of at most ``MAX_KEYWORD_CHARS``
characters; the subscription rules refuse more rather than cut it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

MAX_KEYWORDS = 50  # per list: a reader's keywords, and their excluded keywords
MAX_KEYWORD_CHARS = 100  # per keyword
MAX_KEYWORD_LIST_CHARS = 2000  # a typed list: a form field, a --keywords option, a mail's lines

_SPLIT_RE = re.compile(r"[,;\n\r]+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")


def _pieces(text: str) -> Iterator[str]:
    """Each piece of ``text`` between separators, control characters and runs of spaces made
    one space, trimmed; empty pieces skipped."""
    for piece in _SPLIT_RE.split(text):
        keyword = " ".join(_CONTROL_RE.sub(" ", piece).split())
        if keyword:
            yield keyword


def split_keywords(text: str) -> tuple[str, ...]:
    """Every keyword in ``text``, trimmed and deduped (case-insensitively), none cut short.

    Unbounded: check the text's length first (the subscription rules do), then refuse a list
    over the limits rather than cut it.
    """
    out: list[str] = []
    seen: set[str] = set()
    for keyword in _pieces(text):
        folded = keyword.casefold()
        if folded not in seen:
            seen.add(folded)
            out.append(keyword)
    return tuple(out)


def parse_keywords(text: str) -> tuple[str, ...]:
    """Split a reader's keyword text on commas, semicolons and newlines; trim, dedupe, bound."""
    out: list[str] = []
    seen: set[str] = set()
    for keyword in _pieces(text[: MAX_KEYWORDS * (MAX_KEYWORD_CHARS + 1) * 20]):
        keyword = keyword[:MAX_KEYWORD_CHARS].rstrip()
        folded = keyword.casefold()
        if not keyword or folded in seen:
            continue
        seen.add(folded)
        out.append(keyword)
        if len(out) >= MAX_KEYWORDS:
            break
    return tuple(out)
