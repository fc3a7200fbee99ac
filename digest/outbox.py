"""The outbox: plan one delivery per (subscriber, edition), claim, compose, send, record.

A delivery moves queued → sending → sent | failed | bounced | skipped. Rows are claimed with a
lease, so a crashed sender's work is taken up again; each result is committed right after the
SMTP server has answered (sent messages by one recorder thread, several per transaction, while
the connection goes on with at most RECORD_WINDOW messages unrecorded), so a rerun resumes and
sends nothing twice bar the messages in flight at a crash: at most RECORD_WINDOW per
connection. Render and send stream: at most a bounded queue of messages is in memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import multiprocessing
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from datetime import time as dt_time
from multiprocessing.connection import Connection
from typing import Any, NamedTuple, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import ColumnElement, and_, func, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from digest import edition as editions
from digest.compose import context_for, doc_of, message_id, profile_of, to_mime
from digest.config import Settings
from digest.db import insert_ignore, insert_ignore_rows, make_engine, update_rows
from digest.edition import Edition
from digest.errors import DigestError, SendError
from digest.links import links_for
from digest.mailer import DkimSigner, SmtpTransport
from digest.models import Delivery, Paper, SentPaper, Subscriber, utcnow
from digest.ranking import Index, Ranked
from digest.render import Renderer, RendererSource
from digest.runs import record_run

log = logging.getLogger("digest.outbox")

CHUNK = 500


@dataclasses.dataclass(kw_only=True)
class SendReport:
    """What one send run did."""

    planned: int = 0
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    bounced: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)

    def count(self, status: str, error: str | None = None) -> None:
        """Count one finished delivery (thread-safe)."""
        with self.lock:
            setattr(self, status, getattr(self, status) + 1)
        if error:
            self.count_error(error)

    def count_error(self, error: str) -> None:
        """Keep an error message for the summary (the first 50)."""
        with self.lock:
            if len(self.errors) < 50:
                self.errors.append(error)

    def as_counts(self) -> dict[str, int]:
        """The counts, for the run log."""
        return {k: getattr(self, k) for k in ("planned", "sent", "skipped", "failed", "bounced")}


class _Counts(Protocol):
    def count(self, status: str, error: str | None = None) -> None: ...


def edition_for(settings: Settings, subscriber: Subscriber, now: datetime) -> Edition:
    """The edition a manual send gives this reader now."""
    return editions.current(now, settings.zone, frequency=subscriber.frequency)


def plan(
    engine: Engine,
    settings: Settings,
    *,
    now: datetime,
    subscriber_ids: Sequence[int] | None = None,
) -> int:
    """Queue a delivery of the current edition for every active subscriber who has none yet."""
    with Session(engine) as session:
        query = select(Subscriber.id, Subscriber.frequency).where(Subscriber.status == "active")
        if subscriber_ids is not None:
            query = query.where(col(Subscriber.id).in_(list(subscriber_ids)))
        rows = session.exec(query).all()
    daily_id = editions.current(now, settings.zone).id
    weekly_id = editions.current(now, settings.zone, frequency="weekly").id
    planned = 0
    for start in range(0, len(rows), 5000):
        values: list[dict[str, Any]] = [
            {
                "subscriber_id": sid,
                "edition": weekly_id if freq == "weekly" else daily_id,
                "status": "queued",
                "attempts": 0,
                "paper_keys": [],
                "created_at": now,
            }
            for sid, freq in rows[start : start + 5000]
        ]
        planned += insert_ignore(engine, Delivery, values, conflict=("subscriber_id", "edition"))
    return planned


def plan_due(engine: Engine, settings: Settings, *, now: datetime) -> int:
    """Queue the digest of every active reader whose local send time has come and who has none.

    Daily readers are due from their send hour on each local day; weekly readers from their
    send hour on their weekday, and for the rest of that ISO week. Comparing with the delivery
    table (not with the last tick) is what makes a restart catch up: a reader whose hour passed
    while the server was down is planned on the first tick after it comes back.
    """
    with engine.connect() as conn:
        rows = conn.execute(
            sa_select(
                col(Subscriber.id),
                col(Subscriber.frequency),
                col(Subscriber.weekday),
                col(Subscriber.send_hour),
                col(Subscriber.timezone),
                col(Subscriber.created_at),
            ).where(col(Subscriber.status) == "active")
        ).all()
    zones: dict[str, ZoneInfo] = {}
    values: list[dict[str, Any]] = []
    for sid, frequency, weekday, hour, tz, created in rows:
        if tz not in zones:
            try:
                zones[tz] = ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError):
                zones[tz] = settings.zone
        zone = zones[tz]
        local = now.astimezone(zone)
        if frequency == "weekly":
            day = local.date() - timedelta(days=local.weekday() - weekday)
            edition_id = editions.weekly(local.date(), settings.zone).id
        else:
            day = local.date()
            edition_id = day.isoformat()
        due_at = datetime.combine(day, dt_time(hour), tzinfo=zone)
        # Due once the hour has come (or passed while we were down) — but a reader who
        # subscribed after it waits for their next one rather than getting mail at once.
        if due_at <= now and created <= due_at:
            values.append(
                {
                    "subscriber_id": sid,
                    "edition": edition_id,
                    "status": "queued",
                    "attempts": 0,
                    "paper_keys": [],
                    "created_at": now,
                }
            )
    planned = 0
    for start in range(0, len(values), 5000):
        planned += insert_ignore(
            engine, Delivery, values[start : start + 5000], conflict=("subscriber_id", "edition")
        )
    if planned:
        log.info("event=planned deliveries=%d", planned)
    return planned


def _due(now: datetime, settings: Settings, *, owner: str = "") -> ColumnElement[bool]:
    return or_(
        col(Delivery.status) == "queued",
        and_(
            col(Delivery.status) == "failed",
            col(Delivery.next_attempt_at).is_not(None),
            col(Delivery.next_attempt_at) <= now,
            col(Delivery.attempts) < settings.delivery.max_attempts,
        ),
        # A sender that died holding a lease: its work is due again (but never our own rows:
        # those are in our queue, and their lease is renewed while we live).
        and_(
            col(Delivery.status) == "sending",
            col(Delivery.lease_until) < now,
            col(Delivery.lease_owner) != owner,
        ),
    )


def claim_ids(
    engine: Engine, settings: Settings, *, owner: str, now: datetime, limit: int | None = None
) -> list[int]:
    """Take up to ``limit`` (default CHUNK) due deliveries under a lease held by ``owner``: their
    ids, in order. The composer loads the rows it needs (:func:`_due_deliveries`).
    """
    ids = _lease(engine, settings, owner=owner, now=now, limit=limit)
    if not ids:
        return []
    with Session(engine) as session:
        found = select(Delivery.id).where(*_taken(ids, owner)).order_by(col(Delivery.id))
        return [i for i in session.exec(found).all() if i is not None]


def _lease(
    engine: Engine, settings: Settings, *, owner: str, now: datetime, limit: int | None
) -> list[int]:
    """Lease up to ``limit`` due deliveries to ``owner``: the ids tried, in order (another
    worker may have taken some of them first: see _taken)."""
    with Session(engine) as session:
        query = (
            select(Delivery.id)
            .where(_due(now, settings, owner=owner))
            .order_by(col(Delivery.id))
            .limit(limit or CHUNK)
        )
        if engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = [i for i in session.exec(query).all() if i is not None]
        if not ids:
            return []
        lease = now + timedelta(seconds=settings.delivery.lease_seconds)
        session.exec(
            update(Delivery)
            .where(col(Delivery.id).in_(ids), _due(now, settings, owner=owner))
            .values(status="sending", lease_owner=owner, lease_until=lease)
        )
        session.commit()
        return ids


def _taken(ids: Sequence[int], owner: str) -> tuple[Any, ...]:
    """The conditions that select, of ``ids``, the deliveries ``owner`` holds."""
    return (
        col(Delivery.id).in_(ids),
        Delivery.lease_owner == owner,
        Delivery.status == "sending",
    )


def edition_papers(engine: Engine, settings: Settings, edition: Edition) -> list[Paper]:
    """The papers an edition can carry: first seen in its window."""
    start = edition.window_start(settings.digest.lookback_days)
    with Session(engine) as session:
        return list(
            session.exec(
                select(Paper)
                .where(Paper.first_seen_at >= start, Paper.first_seen_at < edition.end)
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
            sa_select(col(SentPaper.subscriber_id), col(SentPaper.paper_id), col(Paper.key))
            .join(Paper, col(Paper.id) == SentPaper.paper_id)
            .where(
                col(SentPaper.subscriber_id).in_(list(subscriber_ids)),
                # A range, not the list: with two IN lists SQLite probes the (subscriber,
                # paper) key once per pair (500 x 1,000 a chunk, ~150 ms); with a range it
                # scans each subscriber's few rows (~8 ms). The exact set is applied below.
                col(SentPaper.paper_id).between(min(wanted), max(wanted)),
                col(SentPaper.edition) != (except_edition or ""),
            )
        ).all()
    for sid, pid, key in rows:
        if pid in wanted:
            out[sid].add(key)
    return {sid: frozenset(keys) for sid, keys in out.items()}


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Job:
    delivery_id: int
    subscriber_id: int
    edition: str
    to_addr: str
    message_id: str
    paper_ids: tuple[int, ...]
    paper_keys: tuple[str, ...]
    data: bytes


# Plain records of the rows composing reads, made once per chunk or edition: a mapped
# attribute read costs several times a plain one (~80 of them a digest), and loading the rows
# as ORM objects cost ~80 us a delivery (its subscriber included) against ~25 us for these
# columns.
class _PaperRecord(NamedTuple):
    id: int | None
    key: str
    title: str
    abstract: str
    authors: tuple[str, ...]
    url: str | None
    pdf_url: str | None
    upvotes: int | None


class _DueDelivery(NamedTuple):
    id: int
    subscriber_id: int
    edition: str
    message_id: str | None


class _Reader(NamedTuple):
    id: int
    email: str
    status: str
    keywords: list[str]
    exclude: list[str]
    max_papers: int
    token_version: int


def _due_deliveries(engine: Engine, ids: Sequence[int]) -> list[_DueDelivery]:
    """The claimed deliveries ``ids``, in order of id, as composing needs them."""
    query = (
        sa_select(
            col(Delivery.id),
            col(Delivery.subscriber_id),
            col(Delivery.edition),
            col(Delivery.message_id),
        )
        .where(col(Delivery.id).in_(ids))
        .order_by(col(Delivery.id))
    )
    with engine.connect() as conn:
        return list(map(_DueDelivery._make, conn.execute(query)))


def _readers(engine: Engine, subscriber_ids: Sequence[int]) -> dict[int, _Reader]:
    query = sa_select(
        col(Subscriber.id),
        col(Subscriber.email),
        col(Subscriber.status),
        col(Subscriber.keywords),
        col(Subscriber.exclude),
        col(Subscriber.max_papers),
        col(Subscriber.token_version),
    ).where(col(Subscriber.id).in_(subscriber_ids))
    with engine.connect() as conn:
        return {r.id: r for r in map(_Reader._make, conn.execute(query))}


class _EditionCache:
    """Papers and the ranking index of each edition met in a run, built once each."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine, self.settings = engine, settings
        self._cache: dict[str, tuple[Edition, dict[str, _PaperRecord], Index]] = {}

    def get(self, edition_id: str) -> tuple[Edition, dict[str, _PaperRecord], Index]:
        if edition_id not in self._cache:
            ed = editions.parse(edition_id, self.settings.zone)
            papers = [
                _PaperRecord(
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


def _compose_chunk(
    engine: Engine,
    settings: Settings,
    renderer: Renderer,
    cache: _EditionCache,
    deliveries: Sequence[_DueDelivery],
    report: _Counts,
    *,
    now: datetime,
) -> Iterator[_Job]:
    subs = _readers(engine, [d.subscriber_id for d in deliveries])
    by_edition: dict[str, list[_DueDelivery]] = defaultdict(list)
    for d in deliveries:
        by_edition[d.edition].append(d)
    for edition_id, group in by_edition.items():
        try:
            ed, papers, index = cache.get(edition_id)
        except ValueError as e:
            for d in group:
                _finish(engine, d.id, status="failed", error=str(e), report=report)
            continue
        paper_ids = [p.id or 0 for p in papers.values()]
        seen = seen_keys(engine, [d.subscriber_id for d in group], paper_ids)
        live: list[_DueDelivery] = []
        for d in group:
            sub = subs.get(d.subscriber_id)
            if sub is None or sub.status != "active":
                _finish(
                    engine,
                    d.id,
                    status="skipped",
                    error="subscriber not active",
                    report=report,
                )
            else:
                live.append(d)
        profiles = [
            profile_of(subs[d.subscriber_id], seen=seen.get(d.subscriber_id, frozenset()))
            for d in live
        ]
        for d, (_profile, ranked) in zip(live, index.rank(profiles), strict=True):
            sub = subs[d.subscriber_id]
            try:
                job = _compose_one(settings, renderer, sub, d, ed, ranked, papers, now=now)
            except Exception as e:  # one bad row must not stop the run
                log.exception("event=compose-error delivery=%s to=%s", d.id, sub.email)
                _finish(
                    engine,
                    d.id,
                    status="failed",
                    error=f"compose: {type(e).__name__}: {e}",
                    report=report,
                )
                continue
            if job is None:
                _finish(
                    engine,
                    d.id,
                    status="skipped",
                    error="no matching papers",
                    report=report,
                    final=True,
                )
            else:
                yield job


def _compose_one(
    settings: Settings,
    renderer: Renderer,
    sub: _Reader,
    delivery: _DueDelivery,
    ed: Edition,
    ranked: Sequence[Ranked],
    papers: dict[str, _PaperRecord],
    *,
    now: datetime,
) -> _Job | None:
    if not ranked and settings.delivery.empty == "skip":
        return None
    links = links_for(settings, sub, ed.id)
    ctx = context_for(
        settings, subscriber=sub, edition=ed, ranked=ranked, papers=papers, links=links
    )
    rendered = renderer.render_digest(ctx)
    msg_id = delivery.message_id or message_id(settings, delivery_id=delivery.id, edition_id=ed.id)
    data = to_mime(settings, rendered, to_addr=sub.email, links=links, msg_id=msg_id, date=now)
    return _Job(
        delivery_id=delivery.id,
        subscriber_id=sub.id,
        edition=ed.id,
        to_addr=sub.email,
        message_id=msg_id,
        paper_ids=tuple(papers[r.key].id or 0 for r in ranked),
        paper_keys=tuple(r.key for r in ranked),
        data=data,
    )


def _finish(
    engine: Engine,
    delivery_id: int,
    *,
    status: str,
    report: _Counts,
    error: str | None = None,
    final: bool = True,
) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(Delivery)
            .where(col(Delivery.id) == delivery_id)
            .values(status=status, last_error=error, lease_owner=None, lease_until=None)
        )
    log.info("event=%s delivery=%s reason=%r", status, delivery_id, error)
    report.count(status, None if status == "skipped" else error)


# What recording a sent message sets besides its own values (see _record_sent).
_SENT = {
    "status": "'sent'",
    "attempts": "attempts + 1",
    "last_error": "NULL",
    "lease_owner": "NULL",
    "lease_until": "NULL",
    "next_attempt_at": "NULL",
}


class _PipeCounts:
    """The composing process's counts, sent to the sending process's report."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def count(self, status: str, error: str | None = None) -> None:
        self.conn.send(("count", status, error))


# The composing process's program: it imports what composing needs and nothing else (not the
# command line, the web app or the feed readers, as multiprocessing's spawn would).
_COMPOSE_CHILD = (
    "import sys; from digest.outbox import _compose_main; _compose_main(int(sys.argv[1]))"
)


def _compose_main(fd: int) -> None:
    """The composing process: chunks of delivery ids in, their messages (and counts) out."""
    conn = Connection(fd)
    try:
        settings, source, log_level = conn.recv()
    except (EOFError, KeyboardInterrupt):
        return
    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    gc.set_threshold(*COMPOSE_GC_THRESHOLD)
    engine = make_engine(settings.database.url, check_schema=False)
    renderer = Renderer.from_source(source)
    cache = _EditionCache(engine, settings)
    counts = _PipeCounts(conn)
    try:
        while (task := conn.recv()) is not None:
            ids, now = task
            try:
                for job in _compose_chunk(
                    engine, settings, renderer, cache, _due_deliveries(engine, ids), counts, now=now
                ):
                    conn.send(("job", job, None))
            except Exception as e:  # the chunk stays leased; the sending process reports it
                log.exception("event=compose-process-error")
                conn.send(("error", f"{type(e).__name__}: {e}", None))
            else:
                conn.send(("done", None, None))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass  # the sending process has gone: nothing left to do
    finally:
        engine.dispose()


# The composing process's send buffer, in bytes (~120 digests). With the default (~200 kB,
# ~6 digests) it ran a few messages ahead of the senders and then waited for them, woken a
# few messages at a time on a core the sink and the senders also wake on; with room for
# more it composes in longer runs. Two 20,000-reader run_scale.py runs each way,
# alternating: the command's CPU 117% and 113% of the sink's, against 105% and 104%.
COMPOSE_PIPE_BUFFER = 4 << 20


class _ComposeProcess:
    """A second process that ranks, renders and builds the messages of claimed chunks.

    The sending process claims, sends and records; composing (most of the CPU of a send) runs
    beside it on another core, one chunk ahead. Messages come back one at a time through a
    pipe, whose buffer bounds what is in flight. Chunks are composed in the order submitted.
    """

    def __init__(self, settings: Settings, source: RendererSource) -> None:
        # a new interpreter, never a fork: this process has threads
        self.conn, child = multiprocessing.Pipe()
        with socket.socket(fileno=os.dup(child.fileno())) as end:  # the composer's end
            # what the system allows of it: Linux caps it at net.core.wmem_max
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, COMPOSE_PIPE_BUFFER)
        self.process = subprocess.Popen(
            [sys.executable, "-c", _COMPOSE_CHILD, str(child.fileno())],
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
        )
        child.close()
        self.conn.send((settings, source, logging.getLogger().getEffectiveLevel()))
        self._leased = (
            "the digests it held stay leased and go out with a later run once the lease "
            f"([delivery] lease_seconds = {settings.delivery.lease_seconds:g}) runs out"
        )
        log.info("event=compose-process pid=%s", self.process.pid)

    def submit(self, ids: Sequence[int], now: datetime) -> None:
        try:
            self.conn.send((list(ids), now))
        except OSError as e:  # BrokenPipeError: it has gone
            raise self._ended() from e

    def message(self) -> tuple[str, Any, str | None]:
        """The next message: ("job", job, None), ("count", status, error), ("error",
        description, None), or ("done", None, None) at the end of a chunk."""
        try:
            message: tuple[str, Any, str | None] = self.conn.recv()
        except (EOFError, OSError) as e:
            raise self._ended() from e
        if message[0] == "error":
            raise DigestError(f"composing a chunk failed: {message[1]}; {self._leased}")
        return message

    def _ended(self) -> DigestError:
        try:
            code: int | None = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        return DigestError(
            f"the composing process ended unexpectedly (exit code {code}); {self._leased}"
        )

    def close(self, *, abandon: bool = False) -> None:
        """Let the process end once it has composed what it was given; ``abandon``: end it
        now (the send failed or was interrupted: what it still held stays leased)."""
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send(None)
        try:
            self.process.wait(timeout=0 if abandon else 30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.conn.close()


class _ComposedFeed:
    """The senders' messages when a composing process makes them: each sender reads the next
    one from the pipe itself (one sender at a time), and the one that reads the end of a
    chunk claims and submits another, so that one chunk is composed while the one before it
    is sent. A thread that read the pipe and handed each message on to the senders through a
    queue cost ~0.05 ms of CPU a message in the queue alone, and woke two or three times a
    message.
    """

    def __init__(
        self,
        composer: _ComposeProcess,
        claim: Callable[[], tuple[list[int], datetime]],
        report: SendReport,
        *,
        stopping: Callable[[], bool],
        release: Callable[[_Job], None],
    ) -> None:
        self.composer, self.claim, self.report = composer, claim, report
        self.stopping, self.release = stopping, release
        self.lock = threading.Lock()
        self.pending = 0  # chunks submitted whose end is not read yet
        self.failure: BaseException | None = None

    def start(self) -> None:
        """Submit the first two chunks (the second is composed while the first is sent)."""
        with self.lock:
            for _ in range(2):
                self._submit()

    def _submit(self) -> None:
        if self.failure is not None or self.stopping():
            return
        try:
            ids, now = self.claim()
            if ids:
                self.composer.submit(ids, now)
                self.pending += 1
        except Exception as e:  # deliver raises it once the senders are done
            self.failure = e

    def next(self) -> _Job | None:
        """The next message to send, or None once every chunk is read (or has failed). A
        message read while the send is stopping is released, not returned."""
        with self.lock:
            while self.pending and self.failure is None:
                try:
                    kind, value, error = self.composer.message()
                except DigestError as e:
                    self.failure = e
                    break
                if kind == "job":
                    if self.stopping():
                        self.release(value)
                        continue
                    return value  # type: ignore[no-any-return]
                if kind == "count":
                    self.report.count(value, error)
                    continue
                self.pending -= 1  # "done"
                self._submit()
            return None


def _record_sent(engine: Engine, sent: Sequence[tuple[_Job, datetime]], report: SendReport) -> None:
    """Record messages the SMTP server accepted (each with its time), in one transaction."""
    with engine.begin() as conn:
        # through the driver: SQLAlchemy's executemany built and converted each row's
        # parameters anew (~20 us a message on the recorder thread)
        update_rows(
            conn,
            Delivery,
            ("sent_at", "message_id", "paper_keys"),
            [(at, job.message_id, job.paper_keys, job.delivery_id) for job, at in sent],
            key="id",
            also=_SENT,
        )
        insert_ignore_rows(
            conn,
            SentPaper,
            ("subscriber_id", "paper_id", "edition", "sent_at"),
            [
                (job.subscriber_id, pid, job.edition, at)
                for job, at in sent
                for pid in job.paper_ids
            ],
            conflict=("subscriber_id", "paper_id"),
        )
    for job, _ in sent:
        log.info(
            "event=sent delivery=%s edition=%s to=%s papers=%d message_id=%s",
            job.delivery_id,
            job.edition,
            job.to_addr,
            len(job.paper_keys),
            job.message_id,
        )
        report.count("sent")


# A sender goes on while the records of its last RECORD_WINDOW - 1 accepted messages are being
# written, and waits for the oldest before the next message's data: at a crash, no more than
# that many messages per connection are sent but not recorded (and sent again by the next run).
RECORD_WINDOW = 8
# The recorder gathers what arrives within RECORD_GATHER seconds of a first record, or until it
# holds every record the senders can have outstanding (RECORD_WINDOW each: then none can send
# more until these are written), and writes it in one transaction. Writing one record per
# transaction (a sender waiting for each before its next message) cost a 15,000-reader
# run_scale.py 0.45 ms more CPU a message (4.8 against 4.3 ms, twice each, alternating) and
# 8-11% of its messages/s. Gathering for 30 ms rather than 10 (~9 records a transaction
# rather than ~3 at 300 messages/s) took the recorder from 0.47-0.56 to 0.33-0.40 ms of CPU a
# message, at the same messages/s (three pairs, alternating).
RECORD_GATHER = 0.03

# The GIL switch interval while sending (seconds): see deliver.
SEND_SWITCH_INTERVAL = 0.0002

# The cyclic garbage collector's thresholds while composing. Composing allocates millions of
# short-lived objects and almost no cycles, while the caches (views, spans, the index) keep
# hundreds of thousands alive: at the default threshold (700) the collector ran 5,000 times in
# 15,000 digests and took 13% of the composing thread; at 100,000 it runs a few dozen times
# and takes 3% (measured with gc.callbacks), the memory staying the same.
COMPOSE_GC_THRESHOLD = (100_000, 50, 1000)


@contextlib.contextmanager
def _send_tuning() -> Iterator[None]:
    """The switch interval and collector thresholds of a send, restored after it."""
    switch, thresholds = sys.getswitchinterval(), gc.get_threshold()
    sys.setswitchinterval(min(switch, SEND_SWITCH_INTERVAL))
    gc.set_threshold(*COMPOSE_GC_THRESHOLD)
    try:
        yield
    finally:
        sys.setswitchinterval(switch)
        gc.set_threshold(*thresholds)


class _Recorder:
    """One thread that records sent messages, the records of several in one transaction.

    Senders hand over each accepted message and go on with the next ones while the record is
    written: the database leaves the SMTP path. The recorder gathers the records that arrive
    within ``RECORD_GATHER`` of the first, or until every sender waits on it (``batch``), and
    writes them in one transaction (group commit):
    a transaction per message cost ~1 ms of CPU a message in a 2-connection run, and its
    records rarely came together by chance, since each sender waited for its last one. The
    crash window is bounded: a sender has at most ``RECORD_WINDOW`` messages unrecorded (it
    waits on ``add``'s events), and those are sent again by the next run.
    """

    def __init__(
        self,
        engine: Engine,
        report: SendReport,
        progress: Callable[[int], None] | None,
        progress_lock: threading.Lock,
        *,
        senders: int,
    ) -> None:
        self.engine, self.report = engine, report
        # every record the senders can have outstanding: once all are here, none can send on
        self.batch = max(senders, 1) * RECORD_WINDOW
        self.progress, self.progress_lock = progress, progress_lock
        self._queue: queue.SimpleQueue[tuple[_Job, datetime, threading.Event] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name="digest-record", daemon=True)
        self._thread.start()

    def add(self, job: _Job, at: datetime) -> threading.Event:
        """Queue a sent message's record; the event is set once it is committed (or failed)."""
        done = threading.Event()
        self._queue.put((job, at, done))
        return done

    def close(self) -> None:
        """Write what is queued, then stop."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            until = time.monotonic() + RECORD_GATHER
            while len(batch) < self.batch:
                try:
                    item = self._queue.get(timeout=max(until - time.monotonic(), 0))
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            try:
                _record_sent(self.engine, [(job, at) for job, at, _ in batch], self.report)
            except Exception as e:  # the rows stay leased: a later run sends them again
                log.exception(
                    "event=record-error deliveries=%s", [j.delivery_id for j, _, _ in batch]
                )
                self.report.count_error(f"recording {len(batch)} sent message(s): {e}")
            finally:
                for _, _, done in batch:
                    done.set()
            if self.progress:
                with self.progress_lock:
                    self.progress(len(batch))


def _record_failure(
    engine: Engine,
    settings: Settings,
    job: _Job,
    error: SendError,
    report: SendReport,
    *,
    now: datetime,
) -> None:
    with Session(engine) as session:
        d = session.get(Delivery, job.delivery_id)
        if d is None:  # pragma: no cover - deleted under our feet
            return
        d.attempts += 1
        d.last_error = str(error)[:1000]
        d.lease_owner, d.lease_until = None, None
        d.message_id = job.message_id
        if error.permanent:
            d.status, d.next_attempt_at = "bounced", None
            sub = session.get(Subscriber, job.subscriber_id)
            if sub is not None:
                sub.bounce_count += 1
                if sub.bounce_count >= settings.delivery.bounce_limit and sub.status == "active":
                    sub.status = "bounced"
                sub.updated_at = now
                session.add(sub)
        else:
            d.status = "failed"
            if d.attempts < settings.delivery.max_attempts:
                delay = settings.delivery.retry_base_seconds * 2 ** (d.attempts - 1)
                d.next_attempt_at = now + timedelta(seconds=delay)
            else:
                d.next_attempt_at = None
        session.add(d)
        session.commit()
    log.warning(
        "event=%s delivery=%s edition=%s to=%s code=%s error=%r",
        "bounced" if error.permanent else "failed",
        job.delivery_id,
        job.edition,
        job.to_addr,
        error.code,
        str(error),
    )
    report.count("bounced" if error.permanent else "failed", f"{job.to_addr}: {error}")


class _RateLimit:
    """Spaces messages ``1/rate`` seconds apart across all sender threads (0: no limit)."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self.next = time.monotonic()
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            at = max(self.next, now)
            self.next = at + self.interval
        if at > now:
            time.sleep(at - now)


# A sender that fails this many times in a row without an SMTP reply code (connection refused,
# timeouts, drops) stops the run: the relay is down, and every further try would only burn an
# attempt of another reader's delivery.
CONNECTION_FAILURES_TO_ABORT = 3


def deliver(
    engine: Engine,
    settings: Settings,
    *,
    renderer: Renderer,
    clock: Callable[[], datetime] = utcnow,
    smtp_host: str | None = None,
    smtp_port: int | None = None,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
    report: SendReport | None = None,
) -> SendReport:
    """Claim, compose and send due deliveries until none is left (or ``stop`` is set)."""
    report = report or SendReport()
    owner = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
    cache = _EditionCache(engine, settings)
    signer = DkimSigner.from_settings(settings.dkim, base_dir=settings.base_dir)
    jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=settings.smtp.connections * 16)
    limit = _RateLimit(settings.delivery.rate_per_second)
    abort = threading.Event()
    done_lock = threading.Lock()

    recorder = _Recorder(engine, report, progress, done_lock, senders=settings.smtp.connections)

    def sender() -> None:
        failures = 0
        unrecorded: deque[threading.Event] = deque()

        def settle() -> None:
            # the records still being written of this connection's sent messages: fewer
            # than RECORD_WINDOW when the next one's data goes
            while unrecorded and (unrecorded[0].is_set() or len(unrecorded) >= RECORD_WINDOW):
                unrecorded.popleft().wait()

        with SmtpTransport(
            settings.smtp, host_override=smtp_host, port_override=smtp_port
        ) as transport:
            while (job := next_job()) is not None:
                if abort.is_set():
                    _release(engine, job.delivery_id, owner=owner)
                    continue
                limit.wait()
                data = signer.sign(job.data) if signer else job.data
                try:
                    transport.send(
                        settings.smtp.from_address,
                        job.to_addr,
                        data,
                        before_data=settle,
                    )
                except SendError as e:
                    _record_failure(engine, settings, job, e, report, now=clock())
                    failures = failures + 1 if e.code is None and not e.permanent else 0
                    if failures >= CONNECTION_FAILURES_TO_ABORT and not abort.is_set():
                        log.error("event=abort reason=%r", str(e))
                        report.count_error(f"stopped: {e}")
                        abort.set()
                except Exception as e:  # anything else is treated as temporary: retried later
                    log.exception("event=send-error delivery=%s", job.delivery_id)
                    error = SendError(f"{type(e).__name__}: {e}")
                    _record_failure(engine, settings, job, error, report, now=clock())
                else:
                    failures = 0
                    unrecorded.append(recorder.add(job, clock()))
                    continue  # the recorder counts it, and reports progress, once recorded
                if progress:
                    with done_lock:
                        progress(1)

    finished = threading.Event()

    def heartbeat() -> None:
        # Renew the lease on everything this sender holds, so a slow relay never lets another
        # worker take (and send again) messages still waiting in our queue.
        every = max(settings.delivery.lease_seconds / 3, 0.2)
        while not finished.wait(every):
            _renew(engine, settings, owner=owner, now=clock())

    threads = [
        threading.Thread(target=sender, name=f"digest-send-{i}", daemon=True)
        for i in range(settings.smtp.connections)
    ]
    threads.append(threading.Thread(target=heartbeat, name="digest-lease", daemon=True))
    interrupted = threading.Event()  # the command itself was interrupted (Ctrl-C)

    def stopping() -> bool:
        return abort.is_set() or interrupted.is_set() or bool(stop and stop.is_set())

    def feed(batch: Iterable[_Job]) -> None:
        for job in batch:
            if stopping():
                _release(engine, job.delivery_id, owner=owner)
            else:
                jobs.put(job)

    def claim_next() -> tuple[list[int], datetime]:
        now = clock()
        return claim_ids(engine, settings, owner=owner, now=now), now

    composer = None
    composed = None
    ended = False  # the senders were told that no more messages come
    next_job: Callable[[], _Job | None] = jobs.get
    # The senders spend their time waiting for the server's replies; each reply wakes one,
    # which then waits for the GIL while another thread composes or records, up to the switch
    # interval (5 ms by default) per reply and four replies a message. A shorter interval
    # during the send (restored after) lets them go on sooner: +15% messages/s at the same
    # CPU, measured with bench/run_scale.py.
    with _send_tuning():
        try:
            if _compose_elsewhere(engine, settings, renderer, now=clock(), owner=owner):
                assert renderer.source is not None
                composer = _ComposeProcess(settings, renderer.source)
                composed = _ComposedFeed(
                    composer,
                    claim_next,
                    report,
                    stopping=stopping,
                    release=lambda job: _release(engine, job.delivery_id, owner=owner),
                )
                composed.start()
                next_job = composed.next
            for t in threads:
                t.start()
            if composed is None:  # compose here, the senders fed through the queue
                while not stopping():
                    ids, now = claim_next()
                    if not ids:
                        break
                    deliveries = _due_deliveries(engine, ids)
                    feed(
                        _compose_chunk(
                            engine, settings, renderer, cache, deliveries, report, now=now
                        )
                    )
                ended = True
                for _ in range(settings.smtp.connections):
                    jobs.put(None)
            for t in threads[:-1]:
                t.join()
        except BaseException:
            interrupted.set()  # what is still to come is released, not sent
            raise
        finally:
            if composed is None and not ended:
                for _ in range(settings.smtp.connections):
                    jobs.put(None)
            for t in threads[:-1]:
                if t.ident is not None:  # started
                    t.join()
            if composer is not None:
                failed = composed is None or composed.failure is not None
                composer.close(abandon=failed or interrupted.is_set())
            recorder.close()
            finished.set()
            if threads[-1].ident is not None:
                threads[-1].join()
    if composed is not None and composed.failure is not None:
        raise composed.failure
    return report


def _compose_elsewhere(
    engine: Engine, settings: Settings, renderer: Renderer, *, now: datetime, owner: str
) -> bool:
    """Whether this run is big enough for a composing process (see _ComposeProcess), and the
    machine has a second core for it."""
    least = settings.delivery.compose_process_from
    # POSIX only: the process is handed its end of a socket pair as an inherited descriptor
    if least <= 0 or renderer.source is None or os.name != "posix" or _cores() < 2:
        return False
    with Session(engine) as session:
        due = session.exec(
            select(func.count()).select_from(Delivery).where(_due(now, settings, owner=owner))
        ).one()
    return due >= least


def _cores() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _renew(engine: Engine, settings: Settings, *, owner: str, now: datetime) -> None:
    with Session(engine) as session:
        session.exec(
            update(Delivery)
            .where(col(Delivery.lease_owner) == owner, col(Delivery.status) == "sending")
            .values(lease_until=now + timedelta(seconds=settings.delivery.lease_seconds))
        )
        session.commit()


def _release(engine: Engine, delivery_id: int, *, owner: str) -> None:
    """Give a claimed delivery back to the queue untouched (no attempt counted)."""
    with Session(engine) as session:
        session.exec(
            update(Delivery)
            .where(
                col(Delivery.id) == delivery_id,
                col(Delivery.status) == "sending",
                col(Delivery.lease_owner) == owner,
            )
            .values(status="queued", lease_owner=None, lease_until=None)
        )
        session.commit()


def send(
    engine: Engine,
    settings: Settings,
    *,
    renderer: Renderer,
    now: datetime | None = None,
    smtp_host: str | None = None,
    smtp_port: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> SendReport:
    """Plan the current edition for every active reader, then send every due delivery."""
    at = now or utcnow()
    report = SendReport()
    report.planned = plan(engine, settings, now=at)
    deliver(
        engine,
        settings,
        renderer=renderer,
        clock=lambda: at,
        smtp_host=smtp_host,
        smtp_port=smtp_port,
        progress=progress,
        report=report,
    )
    record_send_run(engine, report, started=at)
    return report


def record_send_run(engine: Engine, report: SendReport, *, started: datetime) -> None:
    """Log a send run for `digest status`, unless it did nothing."""
    counts = report.as_counts()
    if any(counts.values()):
        record_run(engine, "send", started=started, counts=counts, errors=report.errors)


def preview(
    engine: Engine,
    settings: Settings,
    *,
    renderer: Renderer,
    subscriber: Subscriber,
    edition: Edition,
) -> tuple[str, str, list[Ranked]]:
    """The subject and exact HTML this reader would get for ``edition``, without sending or recording."""
    _, papers, index = _EditionCache(engine, settings).get(edition.id)
    # What this edition already carried stays in it: a preview of a sent edition shows what was sent.
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
