"""Any other RSS/Atom feed (through feedparser) or JSON Feed: third-party paper feeds and blogs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from digest.papers import ABSTRACT_LIMIT, PaperIn, arxiv_id, clean_text, doi_of, make_paper

_BLOCK_RE = re.compile(
    r"</?(?:p|br|div|li|ul|ol|h[1-6]|tr|td|th|table|blockquote|section|article|dd|dt)\b[^<>]*>",
    re.IGNORECASE,
)
# Feeds scraped from huggingface.co label their parts: "<b>Upvotes:</b> 12", "<h3>Abstract</h3>".
_LABEL_RE = re.compile(
    r"^(authors?|upvotes?|likes|comments|summary|abstract)\s*(?::\s*(.*))?$",
    re.IGNORECASE | re.DOTALL,
)
_ARXIV_IN_TEXT_RE = re.compile(r"arxiv\.org/(?:abs|pdf)/[\w./-]+|arXiv:\s*[\w./-]+", re.IGNORECASE)
_MAX_BLOCKS = 200


def is_json_feed(doc: Mapping[str, Any]) -> bool:
    """True for a JSON Feed (https://jsonfeed.org) document."""
    return str(doc.get("version", "")).startswith("https://jsonfeed.org/version/") and isinstance(
        doc.get("items"), list
    )


def _json_authors(item: Mapping[str, Any]) -> list[dict[str, Any]]:
    # Version 1.1 has "authors", version 1 a single "author".
    raw = item.get("authors")
    if not isinstance(raw, list):
        raw = [item.get("author")]
    return [{"name": a.get("name")} for a in raw if isinstance(a, Mapping)]


def json_feed_entries(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """JSON Feed items as feedparser-shaped entries, so that :func:`paper` reads both."""
    entries: list[dict[str, Any]] = []
    for item in doc["items"]:
        if not isinstance(item, Mapping):
            entries.append({})
            continue
        body = item.get("content_html") or item.get("content_text") or item.get("summary")
        external = item.get("external_url")
        entries.append(
            {
                "title": item.get("title"),
                "link": item.get("url") or external,
                "id": item.get("id"),
                "summary": body,
                "authors": _json_authors(item),
                "links": [{"href": external, "rel": "related"}] if external else [],
                "published": item.get("date_published") or item.get("date_modified"),
            }
        )
    return entries


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _labelled(description: str) -> dict[str, str]:
    """The labelled parts of an HTML description: {"abstract": …, "upvotes": …, …}."""
    blocks = [clean_text(b, limit=ABSTRACT_LIMIT) for b in _BLOCK_RE.split(description)]
    blocks = [b for b in blocks[:_MAX_BLOCKS] if b]
    found: dict[str, str] = {}
    for i, block in enumerate(blocks):
        m = _LABEL_RE.match(block)
        if not m:
            continue
        label = m.group(1).lower().rstrip("s")
        value = m.group(2)
        if value is None:
            # A heading ("<h3>Abstract</h3>") labels the block after it.
            value = blocks[i + 1] if i + 1 < len(blocks) else ""
        found.setdefault(label, value.strip())
    return found


def _authors(entry: Mapping[str, Any], labelled: Mapping[str, str]) -> list[str]:
    names = [_str(a.get("name")) for a in entry.get("authors") or [] if isinstance(a, Mapping)]
    names = [n for n in names if n]
    if not names and labelled.get("author"):
        names = [labelled["author"]]
    out: list[str] = []
    for name in names:
        # "A, B, C" is a list; "Smith, John" (one comma) is one name.
        out.extend(name.split(",") if name.count(",") >= 2 or ";" in name else [name])
    return [n.replace(";", "").strip() for n in out]


def _find_arxiv(entry: Mapping[str, Any], description: str) -> str | None:
    candidates = [_str(entry.get("link")), _str(entry.get("id"))]
    candidates += [_str(link.get("href")) for link in entry.get("links") or []]
    for candidate in candidates:
        found = arxiv_id(candidate)
        if found:
            return found
    # An explicit arXiv link or "arXiv:" reference inside the description.
    for m in _ARXIV_IN_TEXT_RE.finditer(description[:20_000]):
        found = arxiv_id(m.group(0))
        if found:
            return found
    return None


def _find_doi(entry: Mapping[str, Any]) -> str | None:
    for key in ("prism_doi", "arxiv_doi", "dc_identifier", "id", "link"):
        value = _str(entry.get(key))
        is_doi = key.endswith("doi") or value.lower().startswith(("doi:", "https://doi.org/"))
        if is_doi and doi_of(value):
            return value
    return None


def _pdf_link(entry: Mapping[str, Any]) -> str | None:
    for link in entry.get("links") or []:
        if link.get("type") == "application/pdf" or link.get("title") == "pdf":
            return _str(link.get("href")) or None
    return None


def paper(entry: Mapping[str, Any]) -> PaperIn | None:
    """One feed entry → a paper; the key is its arXiv id, else its DOI, else its title."""
    content = entry.get("content") or []
    description = _str(entry.get("summary")) or (
        _str(content[0].get("value")) if content and isinstance(content[0], Mapping) else ""
    )
    labelled = _labelled(description) if description else {}
    abstract = labelled.get("abstract") or labelled.get("summary") or description
    return make_paper(
        title=_str(entry.get("title")),
        abstract=abstract,
        authors=_authors(entry, labelled),
        arxiv=_find_arxiv(entry, description),
        doi=_find_doi(entry),
        url=_str(entry.get("link")) or None,
        pdf_url=_pdf_link(entry),
        published_at=(
            entry.get("published_parsed") or entry.get("updated_parsed") or entry.get("published")
        ),
        upvotes=labelled.get("upvote") or labelled.get("like"),
        comments=labelled.get("comment"),
    )
