"""Hugging Face Daily Papers API (``/api/daily_papers``): a JSON array of ``{"paper": {...}}``."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

from digest.papers import MAX_AUTHORS, PaperIn, arxiv_id, make_paper


def is_entry(item: object) -> bool:
    """True for one element of a daily_papers response."""
    return isinstance(item, Mapping) and isinstance(item.get("paper"), Mapping)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _authors(raw: object) -> list[str]:
    if not isinstance(raw, list):
        return []
    listed = [a for a in raw[: MAX_AUTHORS * 10] if isinstance(a, Mapping)]
    names = [a.get("name") for a in listed if not a.get("hidden")]
    # HF hides authors that someone unlinked from the page; if every one is hidden the byline
    # would be empty, and the arXiv author list is still the truth, so keep them all.
    if not names:
        names = [a.get("name") for a in listed]
    return [n for n in names if isinstance(n, str)]


def paper(entry: Any) -> PaperIn | None:
    """One daily_papers element → a paper, or None when it is unusable."""
    if not is_entry(entry):
        return None
    p: Mapping[str, Any] = entry["paper"]
    pid = _str(p.get("id"))
    # Nearly every HF paper is an arXiv paper; the rare other one still has its HF page.
    page = None
    if pid and not arxiv_id(pid):
        page = "https://huggingface.co/papers/" + urllib.parse.quote(pid[:200], safe="")
    return make_paper(
        title=_str(p.get("title")) or _str(entry.get("title")),
        abstract=_str(p.get("summary")) or _str(entry.get("summary")),
        authors=_authors(p.get("authors")),
        arxiv=pid,
        url=page,
        code_url=_str(p.get("githubRepo")) or _str(entry.get("githubRepo")),
        published_at=(
            _str(p.get("publishedAt"))
            or _str(p.get("submittedOnDailyAt"))
            or _str(entry.get("publishedAt"))
        ),
        upvotes=p.get("upvotes"),
        comments=entry.get("numComments"),
    )
