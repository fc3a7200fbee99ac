"""Planning: which edition each reader is due, and when; one queued delivery per (reader, edition).

:func:`due` is the due rule, the one source of it: the scheduler's :func:`plan_due` queues by it
and ``digest status`` explains by it. :func:`plan` is the manual send's rule: every active
reader's current edition now, whatever their hour.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from datetime import time as dt_time
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import col

from digest import edition as editions
from digest.config import Settings
from digest.db import insert_ignore
from digest.models import Delivery, Subscriber

log = logging.getLogger("digest.delivery")

# Rows per bulk insert of queued deliveries.
PLAN_BATCH = 5000


class ScheduleFields(Protocol):
    """What the due rule reads of a reader: a ``Subscriber`` row, or a row of its columns."""

    @property
    def frequency(self) -> str: ...
    @property
    def weekday(self) -> int: ...
    @property
    def send_hour(self) -> int: ...
    @property
    def timezone(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class Due:
    """A reader's current edition and its send time; ``due`` once it has come for them."""

    edition: str
    at: datetime  # the reader's local send time of this edition (aware)
    due: bool
    # True when the send time has passed but the reader subscribed after it: they wait for
    # their next edition rather than get mail at once.
    joined_after: bool
    next_at: datetime  # the send time of the edition after this one

    @property
    def waiting(self) -> bool:
        """The send time has not come yet."""
        return not self.due and not self.joined_after


def reader_zone(name: str, fallback: ZoneInfo) -> ZoneInfo:
    """The reader's time zone, or ``fallback`` for a name zoneinfo does not know."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return fallback


def due(reader: ScheduleFields, *, now: datetime, settings: Settings, zone: ZoneInfo) -> Due:
    """The due rule: daily readers are due from their send hour on each local day, weekly
    readers from their send hour on their weekday and for the rest of that ISO week; a reader
    who subscribed after the hour waits for the next one. ``zone`` is the reader's."""
    local = now.astimezone(zone)
    if reader.frequency == "weekly":
        day = local.date() - timedelta(days=local.weekday() - reader.weekday)
        edition = editions.weekly(local.date(), settings.zone).id
        step = timedelta(days=7)
    else:
        day = local.date()
        edition = day.isoformat()
        step = timedelta(days=1)
    at = datetime.combine(day, dt_time(reader.send_hour), tzinfo=zone)
    come = at <= now
    joined_after = come and reader.created_at > at
    return Due(
        edition=edition,
        at=at,
        due=come and not joined_after,
        joined_after=joined_after,
        next_at=datetime.combine(day + step, dt_time(reader.send_hour), tzinfo=zone),
    )


def _queued(subscriber_id: int, edition: str, now: datetime) -> dict[str, Any]:
    return {
        "subscriber_id": subscriber_id,
        "edition": edition,
        "status": "queued",
        "attempts": 0,
        "paper_keys": [],
        "created_at": now,
    }


def _insert(engine: Engine, values: list[dict[str, Any]]) -> int:
    planned = 0
    for start in range(0, len(values), PLAN_BATCH):
        planned += insert_ignore(
            engine,
            Delivery,
            values[start : start + PLAN_BATCH],
            conflict=("subscriber_id", "edition"),
        )
    return planned


def plan(
    engine: Engine,
    settings: Settings,
    *,
    now: datetime,
    subscriber_ids: Sequence[int] | None = None,
) -> int:
    """Queue a delivery of the current edition for every active subscriber who has none yet
    (a manual send: send hours do not count)."""
    query = select(col(Subscriber.id), col(Subscriber.frequency)).where(
        col(Subscriber.status) == "active"
    )
    if subscriber_ids is not None:
        query = query.where(col(Subscriber.id).in_(list(subscriber_ids)))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    daily_id = editions.current(now, settings.zone).id
    weekly_id = editions.current(now, settings.zone, frequency="weekly").id
    return _insert(
        engine,
        [
            _queued(sid, weekly_id if freq == "weekly" else daily_id, now)
            for sid, freq in rows
            if sid is not None
        ],
    )


def plan_due(engine: Engine, settings: Settings, *, now: datetime) -> int:
    """Queue the digest of every active reader whose send time has come (see :func:`due`) and
    who has none for that edition.

    Comparing with the delivery table, not with the last tick, is what makes a restart catch
    up: a reader whose hour passed while the server was down is planned on the first tick
    after it comes back.
    """
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                col(Subscriber.id),
                col(Subscriber.frequency),
                col(Subscriber.weekday),
                col(Subscriber.send_hour),
                col(Subscriber.timezone),
                col(Subscriber.created_at),
            ).where(col(Subscriber.status) == "active")
        ).all()
    zones: dict[str, ZoneInfo] = {}
    values = []
    for row in rows:
        zone = zones.get(row.timezone)
        if zone is None:
            zone = zones[row.timezone] = reader_zone(row.timezone, settings.zone)
        when = due(row, now=now, settings=settings, zone=zone)
        if when.due:
            values.append(_queued(int(row.id), when.edition, now))
    planned = _insert(engine, values)
    if planned:
        log.info("event=planned deliveries=%d", planned)
    return planned


def unplanned(engine: Engine, settings: Settings, *, now: datetime) -> int:
    """How many active readers have no delivery of their current edition yet: what a manual
    send (:func:`plan`) would queue now."""
    daily_id = editions.current(now, settings.zone).id
    weekly_id = editions.current(now, settings.zone, frequency="weekly").id
    with engine.connect() as conn:
        active = conn.execute(
            select(col(Subscriber.id), col(Subscriber.frequency)).where(
                col(Subscriber.status) == "active"
            )
        ).all()
        planned = set(
            conn.execute(
                select(col(Delivery.subscriber_id), col(Delivery.edition)).where(
                    col(Delivery.edition).in_([daily_id, weekly_id])
                )
            ).all()
        )
    return sum(
        (sid, weekly_id if freq == "weekly" else daily_id) not in planned for sid, freq in active
    )
