"""Compose one reader's digest: ranked papers → template context → rendered parts → MIME bytes.

Used alike by sending, by ``digest preview`` and by the web's "view in browser", so that what a
reader previews is exactly what is sent.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from digest.config import Settings
from digest.edition import Edition
from digest.mailer import build_message
from digest.ranking import MAX_KEYWORDS, Doc, Profile, Ranked, highlight_spans, merge_spans
from digest.render import DigestContext, DigestItem, Rendered
from digest.tokens import Purpose, make_tokens


class PaperFields(Protocol):
    """What composing reads of a paper: a ``Paper`` row, or a plain record of its fields (the
    outbox keeps those: reading a mapped attribute goes through SQLAlchemy's instrumentation)."""

    @property
    def id(self) -> int | None: ...
    @property
    def key(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def abstract(self) -> str: ...
    @property
    def authors(self) -> Sequence[str]: ...
    @property
    def url(self) -> str | None: ...
    @property
    def pdf_url(self) -> str | None: ...
    @property
    def upvotes(self) -> int | None: ...


class ReaderFields(Protocol):
    """What composing reads of a subscriber: a ``Subscriber`` row, or a plain record."""

    @property
    def id(self) -> int | None: ...
    @property
    def email(self) -> str: ...
    @property
    def keywords(self) -> Sequence[str]: ...
    @property
    def exclude(self) -> Sequence[str]: ...
    @property
    def max_papers(self) -> int: ...
    @property
    def token_version(self) -> int: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class Links:
    """The signed links a digest carries for its reader."""

    unsubscribe: str
    preferences: str
    view: str | None


def links_for(settings: Settings, subscriber: ReaderFields, edition_id: str | None) -> Links:
    """Signed unsubscribe / preferences / view-in-browser URLs for one reader."""
    assert subscriber.id is not None
    base = settings.site.base_url.rstrip("/")
    purposes: tuple[Purpose, ...] = ("unsubscribe", "preferences")
    if edition_id:
        purposes += ("view",)
    tokens = make_tokens(
        settings.secret_key,
        purposes,
        subscriber_id=subscriber.id or 0,
        version=subscriber.token_version,
    )
    return Links(
        unsubscribe=f"{base}/unsubscribe/{tokens[0]}",
        preferences=f"{base}/preferences/{tokens[1]}",
        view=f"{base}/digest/{tokens[2]}/{edition_id}" if edition_id else None,
    )


def doc_of(paper: PaperFields) -> Doc:
    """A paper as the ranker sees it."""
    return Doc(key=paper.key, title=paper.title, abstract=paper.abstract, upvotes=paper.upvotes)


def profile_of(subscriber: ReaderFields, *, seen: frozenset[str] = frozenset()) -> Profile:
    """A subscriber's interests as the ranker sees them."""
    return Profile(
        id=subscriber.id or 0,
        keywords=tuple(subscriber.keywords),
        exclude=tuple(subscriber.exclude),
        limit=subscriber.max_papers,
        seen=seen,
    )


def _highlight(abstract: str, keywords: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """``highlight_spans(abstract, keywords)``, from a cache of each keyword's spans.

    An edition's readers ask for many more different (paper, matched keywords) combinations
    than (paper, keyword) pairs, and highlight_spans pays for each keyword even on an abstract
    it has already tokenised. A keyword's spans do not depend on the other keywords, so the
    union of each keyword's spans, merged the same way, is the same answer.
    """
    if not keywords:
        return ()
    if len(keywords) == 1:
        return _keyword_spans(abstract, keywords[0])
    return tuple(
        merge_spans(s for kw in keywords[:MAX_KEYWORDS] for s in _keyword_spans(abstract, kw))
    )


@functools.lru_cache(maxsize=1 << 17)
def _keyword_spans(abstract: str, keyword: str) -> tuple[tuple[int, int], ...]:
    # Pure, and the result is immutable: shared across threads and runs.
    return tuple(highlight_spans(abstract, [keyword]))


def context_for(
    settings: Settings,
    *,
    subscriber: ReaderFields,
    edition: Edition,
    ranked: Sequence[Ranked],
    papers: Mapping[str, PaperFields],
    links: Links,
) -> DigestContext:
    """The template context of one reader's digest."""
    items = []
    for r in ranked:
        p = papers[r.key]
        items.append(
            DigestItem(
                key=p.key,
                title=p.title,
                url=p.url or p.pdf_url or f"{settings.site.base_url.rstrip('/')}/",
                authors=tuple(p.authors),
                abstract=p.abstract,
                upvotes=p.upvotes,
                score=r.score,
                reason=r.reason(),
                # Mark only what matched in the abstract, as the ranker saw it.
                highlight=_highlight(
                    p.abstract, tuple(m.keyword for m in r.matches if m.field == "abstract")
                ),
            )
        )
    return DigestContext(
        site_name=settings.site.name,
        base_url=settings.site.base_url,
        recipient=subscriber.email,
        edition=edition.id,
        edition_label=edition.label,
        items=tuple(items),
        keywords=tuple(subscriber.keywords),
        unsubscribe_url=links.unsubscribe,
        preferences_url=links.preferences,
        view_url=links.view,
        empty_note=None if items else "Nothing in today's papers matched your keywords.",
    )


def message_id(settings: Settings, *, delivery_id: int, edition_id: str) -> str:
    """A Message-ID stable per delivery, so a retried message is recognisable."""
    domain = settings.smtp.from_address.rpartition("@")[2] or "localhost"
    return f"<digest.{edition_id}.{delivery_id}@{domain}>"


def to_mime(
    settings: Settings,
    rendered: Rendered,
    *,
    to_addr: str,
    links: Links,
    msg_id: str,
    date: datetime,
) -> bytes:
    """The wire bytes of one digest."""
    return build_message(
        from_addr=settings.smtp.from_address,
        from_name=settings.smtp.from_name,
        to_addr=to_addr,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        message_id=msg_id,
        date=date,
        list_id=settings.site.list_id,
        unsubscribe_url=links.unsubscribe,
        unsubscribe_mailto=settings.site.unsubscribe_mailto,
    )
