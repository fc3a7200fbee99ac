"""arXiv's own feeds: rss.arxiv.org announcements and export.arxiv.org API responses (Atom)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from digest.papers import PaperIn, arxiv_id, make_paper

ARXIV_NS = "http://arxiv.org/schemas/atom"

_ABSTRACT_RE = re.compile(r"^\s*arXiv:\S+\s+Announce Type:\s*\S+\s*Abstract:\s*", re.IGNORECASE)
_AUTHOR_SPLIT_RE = re.compile(r",\s*(?:and\s+)?|\s+and\s+")


def _links(parsed: Mapping[str, Any]) -> list[str]:
    feed = parsed.get("feed") or {}
    hrefs = [str(link.get("href") or "") for link in feed.get("links") or []]
    return [*hrefs, str(feed.get("id") or ""), str(feed.get("link") or "")]


def kind(parsed: Mapping[str, Any]) -> str:
    """The kind of a feedparser result: "arxiv-rss", "arxiv-atom" or "feed"."""
    entries = parsed.get("entries") or []
    version = str(parsed.get("version") or "")
    if any("rss.arxiv.org" in link for link in _links(parsed)):
        return "arxiv-rss"
    for entry in entries[:50]:
        if entry.get("arxiv_announce_type") or str(entry.get("id", "")).startswith(
            "oai:arXiv.org:"
        ):
            return "arxiv-rss"
    namespaces = parsed.get("namespaces") or {}
    api_feed = any("arxiv.org/api" in link for link in _links(parsed))
    if version.startswith("atom") and (api_feed or ARXIV_NS in namespaces.values()):
        return "arxiv-atom"
    return "feed"


def api_error(entries: Sequence[Mapping[str, Any]]) -> str | None:
    """The message of the API's error-as-feed (an entry under arxiv.org/api/errors), else None."""
    for entry in entries[:5]:
        if "arxiv.org/api/errors" in str(entry.get("id", "")):
            return str(entry.get("summary") or entry.get("title") or "unknown error")[:300]
    return None


def _authors(entry: Mapping[str, Any], *, split: bool) -> list[str]:
    names: list[str] = []
    for author in entry.get("authors") or []:
        name = author.get("name") if isinstance(author, Mapping) else None
        if not isinstance(name, str):
            continue
        # rss.arxiv.org puts every author into one dc:creator, comma-separated; the API
        # gives one <author> each, where a comma belongs to the name ("Smith, Jr.").
        if split:
            names.extend(n for n in _AUTHOR_SPLIT_RE.split(name) if n.strip())
        else:
            names.append(name)
    return names


def _link(
    entry: Mapping[str, Any], *, title: str | None = None, rel: str | None = None
) -> str | None:
    for link in entry.get("links") or []:
        if (title is None or link.get("title") == title) and (
            rel is None or link.get("rel") == rel
        ):
            href = link.get("href")
            return href if isinstance(href, str) else None
    return None


def rss_paper(entry: Mapping[str, Any]) -> PaperIn | None:
    """One rss.arxiv.org item → a paper, without the "arXiv:… Announce Type:" prefix."""
    aid = arxiv_id(str(entry.get("id") or "")) or arxiv_id(str(entry.get("link") or ""))
    description = str(entry.get("summary") or "")
    return make_paper(
        title=entry.get("title"),
        abstract=_ABSTRACT_RE.sub("", description, count=1),
        authors=_authors(entry, split=True),
        arxiv=aid,
        doi=entry.get("arxiv_doi"),
        # Canonical, unversioned arXiv links when there is an id; the item's own link otherwise.
        url=None if aid else entry.get("link"),
        published_at=entry.get("published_parsed") or entry.get("updated_parsed"),
    )


def atom_paper(entry: Mapping[str, Any]) -> PaperIn | None:
    """One export.arxiv.org API entry → a paper (current and pre-2025 formats)."""
    aid = arxiv_id(str(entry.get("id") or ""))
    return make_paper(
        title=entry.get("title"),
        abstract=entry.get("summary"),
        authors=_authors(entry, split=False),
        arxiv=aid,
        doi=entry.get("arxiv_doi"),
        # The API links to versioned pages (…/abs/2404.12345v1); readers want the latest version.
        url=None if aid else _link(entry, rel="alternate"),
        pdf_url=None if aid else _link(entry, title="pdf"),
        published_at=entry.get("published_parsed") or entry.get("updated_parsed"),
    )
