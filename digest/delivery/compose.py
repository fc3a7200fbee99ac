"""Compose digests: an edition's papers and a chunk of readers -> ranked -> rendered -> MIME bytes.

Used alike by sending, by ``digest preview`` and by the web's "view in browser", so that what a
reader previews is exactly what is sent. :func:`compose_chunk` turns a chunk of taken
deliveries into :class:`~digest.delivery.record.Job` s (closing those with nothing to send); a
composer (:mod:`digest.delivery.composers`) runs it here or in a composing process.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
import logging
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import NamedTuple, Protocol

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col
from sqlmodel import select as sqlmodel_select

from digest import edition as editions
from digest.config import Settings
from digest.delivery.record import Counts, Job, finish
from digest.edition import Edition
from digest.keywords import MAX_KEYWORDS
from digest.links import Links, links_for
from digest.mailer import build_message
from digest.models import Delivery, Paper, SentPaper, Subscriber
from digest.ranking import Doc, Index, Profile, Ranked, highlight_spans, merge_spans
from digest.render import DigestContext, DigestItem, Rendered, Renderer

log = logging.getLogger("digest.delivery")


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


def message_id(settings: Settings, delivery: DueDelivery) -> str:
    """A Message-ID stable across the retries of one delivery, and unique across installations
    and databases: the delivery's identity (its row and when it was planned) signed with this
    installation's secret, since a mailbox drops a message whose ID it has seen before."""
    domain = settings.smtp.from_address.rpartition("@")[2] or "localhost"
    identity = (
        f"{delivery.id}:{delivery.subscriber_id}:{delivery.edition}:"
        f"{delivery.created_at.isoformat()}"
    )
    mac = hmac.new(settings.secret_key.encode(), identity.encode(), hashlib.sha256).hexdigest()
    return f"<digest.{delivery.edition}.{delivery.id}.{mac[:20]}@{domain}>"


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


def edition_papers(engine: Engine, settings: Settings, edition: Edition) -> list[Paper]:
    """The papers an edition can carry: first seen in its window."""
    start = edition.window_start(settings.digest.lookback_days)
    with Session(engine) as session:
        return list(
            session.exec(
                sqlmodel_select(Paper)
                .where(col(Paper.first_seen_at) >= start, col(Paper.first_seen_at) < edition.end)
                .order_by(col(Paper.id))
            ).all()
        )


def seen_keys(
    engine: Engine,
    subscriber_ids: Sequence[int],
    paper_ids: Sequence[int],
    *,
    except_edition: str | None = None,
) -> dict[int, frozenset[str]]:
    """For each subscriber, the keys of these papers they were already sent (bar one edition's)."""
    out: dict[int, set[str]] = defaultdict(set)
    if not subscriber_ids or not paper_ids:
        return {}
    wanted = set(paper_ids)
    with engine.connect() as conn:
        rows = conn.execute(
            select(col(SentPaper.subscriber_id), col(SentPaper.paper_id), col(Paper.key))
            .join(Paper, col(Paper.id) == SentPaper.paper_id)
            .where(
                col(SentPaper.subscriber_id).in_(list(subscriber_ids)),
                # A range, not the list: with two IN lists SQLite probes the (subscriber,
                # paper) key once per pair; with a range it scans each subscriber's few rows.
                # The exact set is applied below.
                col(SentPaper.paper_id).between(min(wanted), max(wanted)),
                col(SentPaper.edition) != (except_edition or ""),
            )
        ).all()
    for sid, pid, key in rows:
        if pid in wanted:
            out[sid].add(key)
    return {sid: frozenset(keys) for sid, keys in out.items()}


# Plain records of the rows composing reads, made once per chunk or edition: reading a mapped
# attribute costs several times a plain one, and composing reads dozens a digest.
class PaperRecord(NamedTuple):
    """The fields of a paper that composing reads."""

    id: int | None
    key: str
    title: str
    abstract: str
    authors: tuple[str, ...]
    url: str | None
    pdf_url: str | None
    upvotes: int | None


class DueDelivery(NamedTuple):
    """A taken delivery, as composing needs it."""

    id: int
    subscriber_id: int
    edition: str
    message_id: str | None
    created_at: datetime


class ReaderRecord(NamedTuple):
    """The fields of a subscriber that composing reads."""

    id: int
    email: str
    status: str
    keywords: list[str]
    exclude: list[str]
    max_papers: int
    token_version: int


def due_deliveries(engine: Engine, ids: Sequence[int]) -> list[DueDelivery]:
    """The taken deliveries ``ids``, in order of id."""
    query = (
        select(
            col(Delivery.id),
            col(Delivery.subscriber_id),
            col(Delivery.edition),
            col(Delivery.message_id),
            col(Delivery.created_at),
        )
        .where(col(Delivery.id).in_(ids))
        .order_by(col(Delivery.id))
    )
    with engine.connect() as conn:
        return list(map(DueDelivery._make, conn.execute(query)))


def _readers(engine: Engine, subscriber_ids: Sequence[int]) -> dict[int, ReaderRecord]:
    query = select(
        col(Subscriber.id),
        col(Subscriber.email),
        col(Subscriber.status),
        col(Subscriber.keywords),
        col(Subscriber.exclude),
        col(Subscriber.max_papers),
        col(Subscriber.token_version),
    ).where(col(Subscriber.id).in_(subscriber_ids))
    with engine.connect() as conn:
        return {r.id: r for r in map(ReaderRecord._make, conn.execute(query))}


class EditionCache:
    """Papers and the ranking index of each edition met in a run, built once each."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine, self.settings = engine, settings
        self._cache: dict[str, tuple[Edition, dict[str, PaperRecord], Index]] = {}

    def get(self, edition_id: str) -> tuple[Edition, dict[str, PaperRecord], Index]:
        """(the edition, its papers by key, their ranking index); ValueError for a bad id."""
        if edition_id not in self._cache:
            ed = editions.parse(edition_id, self.settings.zone)
            papers = [
                PaperRecord(
                    id=p.id,
                    key=p.key,
                    title=p.title,
                    abstract=p.abstract,
                    authors=tuple(p.authors),
                    url=p.url,
                    pdf_url=p.pdf_url,
                    upvotes=p.upvotes,
                )
                for p in edition_papers(self.engine, self.settings, ed)
            ]
            self._cache[edition_id] = (
                ed,
                {p.key: p for p in papers},
                Index.build([doc_of(p) for p in papers]),
            )
        return self._cache[edition_id]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Composing:
    """What composing a chunk works with; the same here and in a composing process."""

    engine: Engine
    settings: Settings
    renderer: Renderer
    cache: EditionCache


def compose_chunk(
    work: Composing, deliveries: Sequence[DueDelivery], counts: Counts, *, now: datetime
) -> Iterator[Job]:
    """The messages of a chunk of taken deliveries, in order; a delivery with nothing to send
    (an inactive reader, no matching papers, a bad edition, a failed render) is closed and
    counted instead."""
    engine = work.engine
    subs = _readers(engine, [d.subscriber_id for d in deliveries])
    by_edition: dict[str, list[DueDelivery]] = defaultdict(list)
    for d in deliveries:
        by_edition[d.edition].append(d)
    for edition_id, group in by_edition.items():
        try:
            ed, papers, index = work.cache.get(edition_id)
        except ValueError as e:
            for d in group:
                finish(engine, d.id, status="failed", error=str(e), report=counts)
            continue
        paper_ids = [p.id or 0 for p in papers.values()]
        seen = seen_keys(engine, [d.subscriber_id for d in group], paper_ids)
        live: list[DueDelivery] = []
        for d in group:
            sub = subs.get(d.subscriber_id)
            if sub is None or sub.status != "active":
                finish(engine, d.id, status="skipped", error="subscriber not active", report=counts)
            else:
                live.append(d)
        profiles = [
            profile_of(subs[d.subscriber_id], seen=seen.get(d.subscriber_id, frozenset()))
            for d in live
        ]
        for d, (_profile, ranked) in zip(live, index.rank(profiles), strict=True):
            sub = subs[d.subscriber_id]
            try:
                job = compose_one(work, sub, d, ed, ranked, papers, now=now)
            except Exception as e:  # one bad row must not stop the run
                log.exception("event=compose-error delivery=%s to=%s", d.id, sub.email)
                finish(
                    engine,
                    d.id,
                    status="failed",
                    error=f"compose: {type(e).__name__}: {e}",
                    report=counts,
                )
                continue
            if job is None:
                finish(engine, d.id, status="skipped", error="no matching papers", report=counts)
            else:
                yield job


def compose_one(
    work: Composing,
    sub: ReaderFields,
    delivery: DueDelivery,
    ed: Edition,
    ranked: Sequence[Ranked],
    papers: Mapping[str, PaperFields],
    *,
    now: datetime,
) -> Job | None:
    """One reader's message, or None when nothing matched and empty days are skipped."""
    settings = work.settings
    if not ranked and settings.delivery.empty == "skip":
        return None
    links = links_for(settings, sub, ed.id)
    ctx = context_for(
        settings, subscriber=sub, edition=ed, ranked=ranked, papers=papers, links=links
    )
    rendered = work.renderer.render_digest(ctx)
    msg_id = delivery.message_id or message_id(settings, delivery)
    data = to_mime(settings, rendered, to_addr=sub.email, links=links, msg_id=msg_id, date=now)
    return Job(
        delivery_id=delivery.id,
        subscriber_id=sub.id or 0,
        edition=ed.id,
        to_addr=sub.email,
        message_id=msg_id,
        paper_ids=tuple(papers[r.key].id or 0 for r in ranked),
        paper_keys=tuple(r.key for r in ranked),
        data=data,
    )


def preview(
    engine: Engine,
    settings: Settings,
    *,
    renderer: Renderer,
    subscriber: Subscriber,
    edition: Edition,
) -> tuple[str, str, list[Ranked]]:
    """The subject and exact HTML this reader would get for ``edition``, without sending or
    recording anything."""
    _, papers, index = EditionCache(engine, settings).get(edition.id)
    # What this edition already carried stays in it: a preview of a sent edition shows it.
    seen = seen_keys(
        engine,
        [subscriber.id or 0],
        [p.id or 0 for p in papers.values()],
        except_edition=edition.id,
    )
    [(_profile, ranked)] = list(
        index.rank([profile_of(subscriber, seen=seen.get(subscriber.id or 0, frozenset()))])
    )
    links = links_for(settings, subscriber, edition.id)
    ctx = context_for(
        settings, subscriber=subscriber, edition=edition, ranked=ranked, papers=papers, links=links
    )
    rendered = renderer.render_digest(ctx)
    return rendered.subject, rendered.html, list(ranked)
