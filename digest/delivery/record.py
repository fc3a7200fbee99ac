"""Recording: what happened to each delivery, written as soon as it is known, and the run's counts.

A sent message is recorded by one :class:`Recorder` thread, several records per transaction,
while its connection goes on with at most ``RECORD_WINDOW`` messages unrecorded: at a crash, no
more than that many messages per connection are sent but not recorded, and the next run sends
them again. Failures, bounces and skips are written at once.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from digest.config import Settings
from digest.db import insert_ignore_rows, update_rows
from digest.errors import SendError
from digest.models import Delivery, SentPaper, Subscriber
from digest.runs import record_run

log = logging.getLogger("digest.delivery")

# Messages a connection may send ahead of their records (see the module docstring).
RECORD_WINDOW = 8
# How long the recorder gathers records after a first one before it writes them together
# (group commit): a transaction per message costs more CPU than the message's SMTP exchange.
RECORD_GATHER = 0.03


class Job(NamedTuple):
    """A composed digest, ready to send."""

    delivery_id: int
    subscriber_id: int
    edition: str
    to_addr: str
    message_id: str
    paper_ids: tuple[int, ...]
    paper_keys: tuple[str, ...]
    data: bytes


@dataclasses.dataclass(kw_only=True)
class SendReport:
    """What one send run did."""

    planned: int = 0
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    bounced: int = 0
    released: int = 0  # taken, then given back unsent (the run stopped)
    errors: list[str] = dataclasses.field(default_factory=list)
    stopped: str | None = None  # why the run stopped before the queue was empty
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


class Counts(Protocol):
    """Where finished deliveries are counted: a SendReport, or the composing process's pipe."""

    def count(self, status: str, error: str | None = None) -> None: ...


def finish(
    engine: Engine,
    delivery_id: int,
    *,
    status: str,
    report: Counts,
    error: str | None = None,
) -> None:
    """Close a delivery without sending it: ``skipped`` (nothing to send) or ``failed``."""
    with engine.begin() as conn:
        conn.execute(
            update(Delivery)
            .where(col(Delivery.id) == delivery_id)
            .values(status=status, last_error=error, lease_owner=None, lease_until=None)
        )
    log.info("event=%s delivery=%s reason=%r", status, delivery_id, error)
    report.count(status, None if status == "skipped" else error)


# What recording a sent message sets besides its own values (SQL written here, never input).
_SENT = {
    "status": "'sent'",
    "attempts": "attempts + 1",
    "last_error": "NULL",
    "lease_owner": "NULL",
    "lease_until": "NULL",
    "next_attempt_at": "NULL",
}


def record_sent(engine: Engine, sent: Sequence[tuple[Job, datetime]], report: SendReport) -> None:
    """Record messages the server accepted (each with its time), in one transaction."""
    with engine.begin() as conn:
        # through the driver: SQLAlchemy's executemany builds each row's parameters anew
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


def record_failure(
    engine: Engine,
    settings: Settings,
    job: Job,
    error: SendError,
    report: SendReport,
    *,
    now: datetime,
) -> None:
    """A refused or failed message: bounced (permanent), else failed and retried later with
    exponential backoff until ``[delivery] max_attempts``."""
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


def record_send_run(engine: Engine, report: SendReport, *, started: datetime) -> None:
    """Log a send run for `digest status`, unless it did nothing."""
    counts = report.as_counts()
    if any(counts.values()):
        record_run(engine, "send", started=started, counts=counts, errors=report.errors)


class Recorder:
    """One thread that records sent messages, the records of several in one transaction.

    Senders hand over each accepted message and go on with the next ones while the record is
    written: the database leaves the SMTP path. The recorder gathers the records that arrive
    within ``RECORD_GATHER`` of the first, or until every sender waits on it (``batch``), and
    writes them in one transaction.
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
        self._queue: queue.SimpleQueue[tuple[Job, datetime, threading.Event] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name="digest-record", daemon=True)
        self._thread.start()

    def add(self, job: Job, at: datetime) -> threading.Event:
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
                record_sent(self.engine, [(job, at) for job, at, _ in batch], self.report)
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
