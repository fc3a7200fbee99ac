"""Source adapters: bytes from a paper list or feed → :class:`ParsedSource` of normalised papers.

The kind is told from the content, never from the file name or URL: an HF Daily Papers JSON
array ("hf-daily"), an rss.arxiv.org announcement feed ("arxiv-rss"), an export.arxiv.org API
response ("arxiv-atom"), any other RSS/Atom/JSON Feed ("feed"), or a plain-text list ("text").
Only the first ``max_entries`` entries of a source are read; the rest are counted as cut.
"""

from __future__ import annotations

import codecs
import dataclasses
import io
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import feedparser

from digest.errors import SourceError
from digest.papers import PaperIn
from digest.sources import arxiv, feed, hf, text

MAX_ENTRIES = 2_000  # the default of [ingest] max_entries

T = TypeVar("T")

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_CHARSET_RE = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9._:-]+)", re.IGNORECASE)
# Exceptions a malformed entry can raise in an adapter; anything else is a bug and propagates.
_ENTRY_ERRORS = (LookupError, TypeError, ValueError, AttributeError)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ParsedSource:
    """One fetch of one source: its kind, its papers (unique keys), the entries dropped."""

    kind: str  # "hf-daily" · "arxiv-rss" · "arxiv-atom" · "feed" · "text"
    papers: list[PaperIn]
    skipped: int = 0  # entries that were no usable paper
    cut: int = 0  # entries past the max_entries cap, left unread


def parse_source(
    data: bytes,
    *,
    location: str,
    content_type: str | None = None,
    max_entries: int = MAX_ENTRIES,
) -> ParsedSource:
    """Parse one source's bytes into papers (the first ``max_entries`` entries); the kind is
    detected from the content."""
    if not data or not data.strip(b" \t\r\n\x00\x0b\x0c"):
        raise SourceError(f"{location}: the source is empty")
    decoded = _decode(data, content_type)
    head = decoded.lstrip(" \t\r\n\x00\ufeff")[:1]
    limits = _Limits(location=location, max_entries=max_entries)
    if head in ("[", "{"):
        try:
            doc = json.loads(decoded)
        except (ValueError, RecursionError):
            doc = None  # not JSON after all: maybe a text list that opens with a bracket
        else:
            return _parse_json(doc, data, limits=limits, content_type=content_type)
    if head == "<":
        return _parse_feed(data, limits=limits, content_type=content_type)
    reading = text.read(decoded)
    if reading.problem is not None:
        raise SourceError(f"{location}: not a paper list ({reading.problem})")
    return _collect("text", reading.entries, text.paper, limits=limits, skipped=reading.dropped)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Limits:
    location: str
    max_entries: int
    cut: int = 0  # entries already dropped before parsing


def _decode(data: bytes, content_type: str | None) -> str:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    m = _CHARSET_RE.search(content_type or "")
    if m:
        try:
            return data.decode(m.group(1), errors="replace")
        except LookupError:
            pass  # an unknown charset name from a server: fall back to UTF-8
    return data.decode("utf-8", errors="replace")


def _collect(
    kind: str,
    entries: Sequence[T],
    convert: Callable[[T], PaperIn | None],
    *,
    limits: _Limits,
    require: bool = False,
    skipped: int = 0,
) -> ParsedSource:
    cut = limits.cut + max(0, len(entries) - limits.max_entries)
    papers: dict[str, PaperIn] = {}
    for entry in entries[: limits.max_entries]:
        try:
            paper = convert(entry)
        except _ENTRY_ERRORS:
            paper = None
        if paper is None:
            skipped += 1
        elif paper.key not in papers:
            papers[paper.key] = paper
    if require and not papers:
        raise SourceError(f"{limits.location}: no papers found (not a feed, JSON or paper list?)")
    return ParsedSource(kind=kind, papers=list(papers.values()), skipped=skipped, cut=cut)


def _parse_json(
    doc: object, data: bytes, *, limits: _Limits, content_type: str | None
) -> ParsedSource:
    location = limits.location
    if isinstance(doc, list) and (not doc or any(hf.is_entry(item) for item in doc)):
        return _collect("hf-daily", doc, hf.paper, limits=limits)
    if isinstance(doc, dict) and feed.is_json_feed(doc):
        items = doc["items"]
        cut = dataclasses.replace(limits, cut=max(0, len(items) - limits.max_entries))
        doc = {**doc, "items": items[: limits.max_entries]}
        return _collect("feed", feed.json_feed_entries(doc), feed.paper, limits=cut)
    # A newer feedparser may read other JSON feed flavours; feedparser 6 does not.
    parsed = _feedparser(data, location=location, content_type=content_type)
    if parsed.get("version") and not parsed.get("bozo"):
        return _collect("feed", parsed.entries, feed.paper, limits=limits)
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        raise SourceError(f"{location}: the source answered with an error: {doc['error'][:300]}")
    raise SourceError(f"{location}: JSON that is neither HF Daily Papers nor a JSON Feed")


def _feedparser(data: bytes, *, location: str, content_type: str | None) -> Any:
    headers = {}
    if content_type:
        headers["content-type"] = content_type
    if location.startswith(("http://", "https://")):
        headers["content-location"] = location  # base for relative links
    try:
        # A stream, never bytes or str: feedparser would open a str as a URL or a file name.
        return feedparser.parse(io.BytesIO(data), response_headers=headers)
    except Exception as e:
        # feedparser's loose parser can fail in many ways on hostile input; all mean "unreadable".
        raise SourceError(f"{location}: the feed could not be parsed: {e!r}"[:500]) from e


# The end of an RSS item or an Atom entry, with or without a namespace prefix.
_ENTRY_END_RE = re.compile(rb"</(?:[A-Za-z_][\w.-]*:)?(?:item|entry)\s*>", re.IGNORECASE)


def _cut_feed(data: bytes, keep: int) -> tuple[bytes, int]:
    """The feed with only its first ``keep`` entries, and how many it had past them.

    feedparser reads every entry of a document, and that is most of the cost of a big feed;
    counting the entries' end tags is cheap, and dropping the run of entries between the
    ``keep``-th end and the last one leaves the document's own closing tags in place.
    """
    count, cut_at, last_end = 0, 0, 0
    for m in _ENTRY_END_RE.finditer(data):
        count += 1
        if count == keep:
            cut_at = m.end()
        last_end = m.end()
    if count <= keep:
        return data, 0
    return data[:cut_at] + data[last_end:], count - keep


def _parse_feed(data: bytes, *, limits: _Limits, content_type: str | None) -> ParsedSource:
    location = limits.location
    data, cut = _cut_feed(data, limits.max_entries)
    limits = dataclasses.replace(limits, cut=cut)
    parsed = _feedparser(data, location=location, content_type=content_type)
    entries: list[Mapping[str, Any]] = list(parsed.entries)
    version = str(parsed.get("version") or "")
    if not version and not entries:
        reason = parsed.get("bozo_exception")
        detail = f": {reason}" if reason else ""
        raise SourceError(f"{location}: not an RSS or Atom feed{detail}"[:500])
    kind = arxiv.kind(parsed)
    if kind == "arxiv-rss":
        return _collect(kind, entries, arxiv.rss_paper, limits=limits)
    if kind == "arxiv-atom":
        message = arxiv.api_error(entries)
        if message is not None:
            raise SourceError(f"{location}: arXiv API error: {message}")
        return _collect(kind, entries, arxiv.atom_paper, limits=limits)
    return _collect("feed", entries, feed.paper, limits=limits)
