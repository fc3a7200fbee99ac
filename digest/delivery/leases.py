"""Leases: a sender takes due deliveries for a while, renews them while it lives, gives back
what it does not send.

A delivery is due when it is queued, when its retry time has come, or when the sender that held
it died (its lease ran out). Taking one sets it ``sending`` under the taker's name until
``lease_until``; PostgreSQL's ``FOR UPDATE SKIP LOCKED`` keeps racing workers apart, and the
conditional UPDATE does on SQLite. A :class:`Lease` renews what it holds from the current time,
and knows, without asking the database, until when its hold is sure: a sender checks
:meth:`Lease.held` before each message, so a message whose lease may have passed to another
worker is never sent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.engine import Engine
from sqlmodel import col

from digest.config import Settings
from digest.models import Delivery, utcnow

log = logging.getLogger("digest.delivery")

Clock = Callable[[], datetime]


def is_due(now: datetime, settings: Settings, *, owner: str = "") -> ColumnElement[bool]:
    """The condition of a due delivery (never one that ``owner`` itself holds)."""
    return or_(
        col(Delivery.status) == "queued",
        and_(
            col(Delivery.status) == "failed",
            col(Delivery.next_attempt_at).is_not(None),
            col(Delivery.next_attempt_at) <= now,
            col(Delivery.attempts) < settings.delivery.max_attempts,
        ),
        # A sender that died holding a lease: its work is due again (but never our own rows,
        # whose lease we renew while we live).
        and_(
            col(Delivery.status) == "sending",
            col(Delivery.lease_until) < now,
            col(Delivery.lease_owner) != owner,
        ),
    )


def count_due(engine: Engine, settings: Settings, *, now: datetime, owner: str = "") -> int:
    """How many deliveries are due now."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(Delivery).where(is_due(now, settings, owner=owner))
            ).scalar_one()
        )


def new_owner() -> str:
    """A lease owner's name: the host, the process and the thread that sends."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def claim_ids(
    engine: Engine, settings: Settings, *, owner: str, now: datetime, limit: int | None = None
) -> list[int]:
    """Take up to ``limit`` (default ``[delivery] chunk_size``) due deliveries under a lease held
    by ``owner``:
    the ids taken, in order (another worker may take some of those tried first)."""
    with engine.begin() as conn:
        query = (
            select(col(Delivery.id))
            .where(is_due(now, settings, owner=owner))
            .order_by(col(Delivery.id))
            .limit(limit or settings.delivery.chunk_size)
        )
        if engine.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        tried = [i for i in conn.execute(query).scalars() if i is not None]
        if not tried:
            return []
        conn.execute(
            update(Delivery)
            .where(col(Delivery.id).in_(tried), is_due(now, settings, owner=owner))
            .values(
                status="sending",
                lease_owner=owner,
                lease_until=now + timedelta(seconds=settings.delivery.lease_seconds),
            )
        )
    with engine.connect() as conn:
        held = conn.execute(
            select(col(Delivery.id)).where(*_held(tried, owner)).order_by(col(Delivery.id))
        )
        return [i for i in held.scalars() if i is not None]


def _held(ids: Sequence[int], owner: str) -> tuple[Any, ...]:
    """The conditions that select, of ``ids``, the deliveries ``owner`` holds."""
    return (
        col(Delivery.id).in_(ids),
        col(Delivery.lease_owner) == owner,
        col(Delivery.status) == "sending",
    )


def release(engine: Engine, delivery_id: int, *, owner: str) -> None:
    """Give a taken delivery back to the queue untouched (no attempt counted)."""
    with engine.begin() as conn:
        conn.execute(
            update(Delivery)
            .where(*_held([delivery_id], owner))
            .values(status="queued", lease_owner=None, lease_until=None)
        )


def release_held(engine: Engine, *, owner: str) -> int:
    """Give everything ``owner`` still holds back to the queue: how many."""
    with engine.begin() as conn:
        return int(
            conn.execute(
                update(Delivery)
                .where(col(Delivery.lease_owner) == owner, col(Delivery.status) == "sending")
                .values(status="queued", lease_owner=None, lease_until=None)
            ).rowcount
        )


def renew(engine: Engine, settings: Settings, *, owner: str, now: datetime) -> None:
    """Extend every lease ``owner`` holds to ``now`` plus ``[delivery] lease_seconds``."""
    with engine.begin() as conn:
        conn.execute(
            update(Delivery)
            .where(col(Delivery.lease_owner) == owner, col(Delivery.status) == "sending")
            .values(lease_until=now + timedelta(seconds=settings.delivery.lease_seconds))
        )


class Lease:
    """What one send holds: it takes chunks, renews them from the clock, and knows until when
    its hold is sure.

    The hold is sure until ``lease_seconds`` after the earliest time any row was last given its
    lease, less a margin for the clocks of other workers: the first claim, then each renewal
    (which covers every row held). A renewal that fails leaves that time where it was, so a
    database that stops answering ends the hold rather than extends it.
    """

    def __init__(self, engine: Engine, settings: Settings, *, clock: Clock = utcnow) -> None:
        self.engine, self.settings, self.clock = engine, settings, clock
        self.owner = new_owner()
        seconds = settings.delivery.lease_seconds
        self._span = max(seconds - max(min(seconds / 10, 30.0), 0.1), seconds / 2)
        self._since: float | None = None  # monotonic time the current hold began
        self._lock = threading.Lock()

    def claim(self) -> tuple[list[int], datetime]:
        """Take the next chunk of due deliveries: their ids, and the time they were taken."""
        started, now = time.monotonic(), self.clock()
        ids = claim_ids(self.engine, self.settings, owner=self.owner, now=now)
        if ids:
            with self._lock:
                if self._since is None:
                    self._since = started
        return ids, now

    def held(self) -> bool:
        """Whether every delivery taken is still surely ours (checked before each message)."""
        since = self._since
        return since is not None and time.monotonic() - since < self._span

    def renew(self) -> None:
        """Extend the hold on everything taken, from the current time."""
        started = time.monotonic()
        try:
            renew(self.engine, self.settings, owner=self.owner, now=self.clock())
        except Exception:  # the hold ends when it ends; the next renewal may succeed
            log.exception("event=lease-renew-error owner=%s", self.owner)
            return
        with self._lock:
            if self._since is not None:
                self._since = started

    def release(self, delivery_id: int) -> None:
        """Give one taken delivery back to the queue."""
        release(self.engine, delivery_id, owner=self.owner)

    def release_all(self) -> int:
        """Give back everything still taken (at the end of a send: none of it was sent)."""
        return release_held(self.engine, owner=self.owner)

    @contextlib.contextmanager
    def kept(self) -> Iterator[Lease]:
        """Renew the lease in a background thread (a third of lease_seconds apart) while the
        block runs, so a slow relay never lets another worker take what waits to be sent."""
        done = threading.Event()
        every = max(self.settings.delivery.lease_seconds / 3, 0.2)

        def beat() -> None:
            while not done.wait(every):
                self.renew()

        thread = threading.Thread(target=beat, name="digest-lease", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            done.set()
            thread.join()
