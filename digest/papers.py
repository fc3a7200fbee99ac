"""Papers as sources give them (:class:`PaperIn`), normalised and keyed the same way everywhere."""

from __future__ import annotations

import calendar
import dataclasses
import hashlib
import html
import re
import time
import unicodedata
import urllib.parse
from collections.abc import Iterable
from datetime import UTC, datetime

TITLE_LIMIT = 500
ABSTRACT_LIMIT = 8_000
AUTHOR_LIMIT = 200
MAX_AUTHORS = 100
URL_LIMIT = 2_000
COUNT_LIMIT = 1_000_000_000


@dataclasses.dataclass(frozen=True, kw_only=True)
class PaperIn:
    """One paper from one source, already cleaned: plain-text fields, bounded sizes."""

    # canonical: "arxiv:2411.01234" (no version), "doi:10.x/y" or "title:<sha1 of the title>"
    key: str
    title: str
    abstract: str = ""
    authors: tuple[str, ...] = ()
    url: str | None = None  # the abstract page
    pdf_url: str | None = None
    code_url: str | None = None
    published_at: datetime | None = None  # UTC, aware
    upvotes: int | None = None
    comments: int | None = None


# Script and style bodies are code, not prose: drop them with their tags.
_SCRIPT_RE = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_COMMENT_RE = re.compile(r"<!--.*?(?:-->|$)|<!\[CDATA\[|\]\]>", re.DOTALL)
# Block-level tags separate words; inline ones (<i>, <sub>) must not split "H<sub>2</sub>O".
_BLOCK_TAG_RE = re.compile(
    r"</?(?:p|br|div|li|ul|ol|h[1-6]|tr|td|th|table|blockquote|pre|hr|section|article|dd|dt)\b[^<>]*>",
    re.IGNORECASE,
)
# A tag must start with a letter (or "/", "!", "?") so that "a < b > c" in prose survives.
_TAG_RE = re.compile(r"</?[A-Za-z][^<>]*>|<[!?][^<>]*>")
_SPACE_RE = re.compile(r"\s+")
_UNESCAPE_ROUNDS = 4


def _strip_tags(s: str) -> str:
    s = _SCRIPT_RE.sub(" ", s)
    s = _COMMENT_RE.sub(" ", s)
    s = _BLOCK_TAG_RE.sub(" ", s)
    return _TAG_RE.sub("", s)


def _drop_controls(s: str) -> str:
    out = []
    for ch in s:
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Zl", "Zp"):
            out.append(" ")  # CR, LF, tabs and friends become word breaks
        elif cat in ("Cf", "Cs", "Co", "Cn"):
            continue  # zero-width, bidi overrides, lone surrogates: invisible and abusable
        else:
            out.append(ch)
    return "".join(out)


def _bound(s: str, limit: int) -> str:
    if len(s) <= limit:
        return s
    if limit <= 1:
        return "…"[:limit]
    cut = s[: limit - 1]
    space = cut.rfind(" ")
    # Cut at a word unless that throws away most of the text (one giant "word").
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-–—") + "…"


def clean_text(s: str | None, *, limit: int) -> str:
    """Plain text from untrusted text or HTML: no tags, entities or controls; ≤ ``limit`` chars."""
    if not s:
        return ""
    # Bound the work before any regex: markup overhead rarely exceeds a few times the text.
    s = s[: max(limit * 8, 10_000)]
    # Feeds double-escape ("&amp;lt;b&amp;gt;"): unescape until stable, stripping tags each round
    # so that an escaped "<script>" never comes out as markup.
    for _ in range(_UNESCAPE_ROUNDS):
        stripped = _strip_tags(s)
        unescaped = html.unescape(stripped)
        if unescaped == s:
            break
        s = unescaped
    s = _strip_tags(s)
    s = unicodedata.normalize("NFC", _drop_controls(s))
    s = _SPACE_RE.sub(" ", s).strip()
    return _bound(s, limit)


_ARCHIVES = (
    "acc-phys|adap-org|alg-geom|ao-sci|astro-ph|atom-ph|bayes-an|chao-dyn|chem-ph|cmp-lg|comp-gas"
    "|cond-mat|cs|dg-ga|funct-an|gr-qc|hep-ex|hep-lat|hep-ph|hep-th|math|math-ph|mtrl-th|nlin"
    "|nucl-ex|nucl-th|patt-sol|physics|plasm-ph|q-alg|q-bio|q-fin|quant-ph|solv-int|stat|supr-con"
)
# New style since 2007: YYMM.NNNN (to 2014) or YYMM.NNNNN; the month check rejects 0000.0000.
_NEW_ID_RE = re.compile(r"(?<![\d.])(\d{2}(?:0[1-9]|1[0-2])\.\d{4,5})(?:v\d+)?(?![\d])")
# Old style: archive(.SUBJ)/YYMMNNN; only real archive names, so "posts/1234567" is no id.
_OLD_ID_RE = re.compile(
    rf"(?<![A-Za-z-])((?:{_ARCHIVES})(?:\.[A-Za-z]{{2}})?/\d{{2}}(?:0[1-9]|1[0-2])\d{{3}})(?:v\d+)?(?!\d)"
)


def arxiv_id(text: str | None) -> str | None:
    """The arXiv id (no version) in an id, URL or guid, e.g. ``oai:arXiv.org:2404.12345v2``."""
    if not text:
        return None
    text = text[:URL_LIMIT]
    m = _NEW_ID_RE.search(text)
    if m:
        return m.group(1)
    m = _OLD_ID_RE.search(text)
    return m.group(1) if m else None


_DOI_RE = re.compile(r"\b(10\.\d{4,9}/[^\s\"'<>]+)")


def doi_of(text: str | None) -> str | None:
    """The DOI (lowercased) in ``doi:10.x/y``, a doi.org URL or a bare DOI; else None."""
    if not text:
        return None
    m = _DOI_RE.search(urllib.parse.unquote(text[:URL_LIMIT]))
    return m.group(1).rstrip(".,;)").lower() if m else None


def _title_fingerprint(title: str) -> str:
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", title).casefold())
    kept = "".join(ch for ch in folded if ch.isalnum())
    return kept or folded


def canonical_key(*, arxiv: str | None = None, doi: str | None = None, title: str) -> str:
    """``arxiv:<id>``, else ``doi:<doi>``, else ``title:<sha1[:20] of the normalised title>``."""
    aid = arxiv_id(arxiv)
    if aid:
        return f"arxiv:{aid}"
    d = doi_of(doi)
    if d:
        return f"doi:{d}"
    digest = hashlib.sha1(_title_fingerprint(title).encode("utf-8")).hexdigest()
    return f"title:{digest[:20]}"


def safe_url(u: str | None) -> str | None:
    """The URL if it is a plain http(s) URL of at most 2,000 chars, else None."""
    if not u:
        return None
    u = u.strip()
    if not u or len(u) > URL_LIMIT:
        return None
    if any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in u):
        return None
    try:
        parts = urllib.parse.urlsplit(u)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    # "https://arxiv.org@evil.example/" reads as arXiv but goes elsewhere.
    if "@" in parts.netloc:
        return None
    return u


def utc_datetime(value: object) -> datetime | None:
    """An aware UTC datetime from a datetime, an ISO 8601 string or a UTC ``struct_time``."""
    try:
        if isinstance(value, datetime):
            dt = value
        elif isinstance(value, time.struct_time):
            # feedparser's *_parsed values are already in UTC.
            return datetime.fromtimestamp(calendar.timegm(value), UTC)
        elif isinstance(value, str) and value.strip():
            dt = datetime.fromisoformat(value.strip()[:64])
        else:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.astimezone(UTC)
    except (ValueError, OverflowError, OSError):
        return None


def count(value: object) -> int | None:
    """A non-negative count from an int or a digit string; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 10:
        value = int(value.strip())
    if isinstance(value, int) and 0 <= value <= COUNT_LIMIT:
        return value
    return None


def clean_authors(names: Iterable[object]) -> tuple[str, ...]:
    """At most 100 cleaned, non-empty author names, each at most 200 chars."""
    out: list[str] = []
    for i, name in enumerate(names):
        if len(out) >= MAX_AUTHORS or i >= MAX_AUTHORS * 10:
            break
        if isinstance(name, str):
            cleaned = clean_text(name, limit=AUTHOR_LIMIT)
            if cleaned:
                out.append(cleaned)
    return tuple(out)


def make_paper(
    *,
    title: str | None,
    abstract: str | None = None,
    authors: Iterable[object] = (),
    arxiv: str | None = None,
    doi: str | None = None,
    url: str | None = None,
    pdf_url: str | None = None,
    code_url: str | None = None,
    published_at: object = None,
    upvotes: object = None,
    comments: object = None,
) -> PaperIn | None:
    """A cleaned, bounded :class:`PaperIn`, or None when the title is empty after cleaning."""
    clean_title = clean_text(title, limit=TITLE_LIMIT)
    if not clean_title:
        return None
    aid = arxiv_id(arxiv)
    return PaperIn(
        key=canonical_key(arxiv=aid, doi=doi, title=clean_title),
        title=clean_title,
        abstract=clean_text(abstract, limit=ABSTRACT_LIMIT),
        authors=clean_authors(authors),
        url=safe_url(url) or (f"https://arxiv.org/abs/{aid}" if aid else None),
        pdf_url=safe_url(pdf_url) or (f"https://arxiv.org/pdf/{aid}" if aid else None),
        code_url=safe_url(code_url),
        published_at=utc_datetime(published_at),
        upvotes=count(upvotes),
        comments=count(comments),
    )
