"""What `digest status` tells: the last runs, the outbox, and why a reader got (or did not get) mail."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from digest import subscriptions
from digest.config import Settings
from digest.delivery.planning import Due, due, reader_zone
from digest.models import Delivery, Run, Source, Subscriber
from digest.runs import last_run
from digest.scheduler import ingest_trigger


@dataclasses.dataclass(frozen=True, kw_only=True)
class Overview:
    """The state of the whole service."""

    last_ingest: Run | None
    last_send: Run | None
    sources: list[Source]
    subscribers: dict[str, int]
    editions: list[tuple[str, dict[str, int]]]  # newest first
    retries_waiting: int
    next_retry: datetime | None
    next_ingest: datetime | None
    next_tick: datetime
    requests: subscriptions.RequestCounts  # subscribe requests in the last hour (the caps)


def overview(engine: Engine, settings: Settings, *, now: datetime) -> Overview:
    """Gather the overview in a few queries."""
    with Session(engine) as session:
        sources = list(session.exec(select(Source).order_by(Source.name)).all())
        subs = dict(
            session.exec(
                select(Subscriber.status, func.count()).group_by(col(Subscriber.status))
            ).all()
        )
        recent = list(
            session.exec(
                select(Delivery.edition)
                .group_by(col(Delivery.edition))
                .order_by(col(Delivery.edition).desc())
                .limit(5)
            ).all()
        )
        per_edition: list[tuple[str, dict[str, int]]] = []
        for edition in recent:
            counts = dict(
                session.exec(
                    select(Delivery.status, func.count())
                    .where(Delivery.edition == edition)
                    .group_by(col(Delivery.status))
                ).all()
            )
            per_edition.append((edition, counts))
        waiting = session.exec(
            select(func.count(), func.min(Delivery.next_attempt_at)).where(
                Delivery.status == "failed",
                col(Delivery.next_attempt_at).is_not(None),
                Delivery.attempts < settings.delivery.max_attempts,
            )
        ).one()
    return Overview(
        last_ingest=last_run(engine, "ingest"),
        last_send=last_run(engine, "send"),
        sources=sources,
        subscribers=subs,
        editions=per_edition,
        retries_waiting=int(waiting[0] or 0),
        next_retry=waiting[1],
        next_ingest=ingest_trigger(settings).get_next_fire_time(None, now),
        next_tick=now + timedelta(seconds=settings.scheduler.tick_seconds),
        requests=subscriptions.request_counts(engine, now=now),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReaderStatus:
    """One reader's situation in plain words, and their recent deliveries."""

    subscriber: Subscriber
    verdict: str
    deliveries: list[Delivery]


def reader_status(
    engine: Engine, settings: Settings, subscriber: Subscriber, *, now: datetime
) -> ReaderStatus:
    """Why this reader got, or did not get, their current edition (by planning's own rule)."""
    with Session(engine) as session:
        deliveries = list(
            session.exec(
                select(Delivery)
                .where(Delivery.subscriber_id == subscriber.id)
                .order_by(col(Delivery.created_at).desc(), col(Delivery.id).desc())
                .limit(10)
            ).all()
        )
    zone = reader_zone(subscriber.timezone, settings.zone)
    when = due(subscriber, now=now, settings=settings, zone=zone)
    this = next((d for d in deliveries if d.edition == when.edition), None)
    return ReaderStatus(
        subscriber=subscriber, verdict=_verdict(subscriber, this, when), deliveries=deliveries
    )


def _verdict(sub: Subscriber, this: Delivery | None, when: Due) -> str:
    current = when.edition
    if sub.status == "unsubscribed":
        return "unsubscribed: no digest is sent"
    if sub.status == "pending":
        return "pending: the address has not been confirmed yet, so no digest is sent"
    if sub.status == "bounced":
        return f"bounced: the address was refused {sub.bounce_count} time(s); no digest is sent"
    if this is None:
        if when.waiting:
            return f"not due yet: edition {current} is due at {when.at:%Y-%m-%d %H:%M %Z}"
        if when.joined_after:
            return (
                f"subscribed after edition {current}'s send time "
                f"({when.at:%Y-%m-%d %H:%M %Z}): the first digest comes at "
                f"{when.next_at:%Y-%m-%d %H:%M %Z}"
            )
        return f"due: edition {current} will be planned on the next delivery tick"
    if this.status == "sent":
        n = len(this.paper_keys)
        return f"sent: edition {current} went out at {this.sent_at:%Y-%m-%d %H:%M UTC} with {n} paper(s)"
    if this.status == "skipped":
        return f"no digest for edition {current}: {this.last_error or 'skipped'}"
    if this.status == "bounced":
        return f"bounced: edition {current} was refused: {this.last_error}"
    if this.status == "failed":
        if this.next_attempt_at is not None:
            return (
                f"failed (attempt {this.attempts}): {this.last_error}; "
                f"next try at {this.next_attempt_at:%Y-%m-%d %H:%M UTC}"
            )
        return f"failed for good after {this.attempts} attempts: {this.last_error}"
    return f"{this.status}: edition {current} is in the outbox"


def caps_lines(counts: subscriptions.RequestCounts, settings: Settings) -> list[str]:
    """What `digest status` says of the caps on subscribe requests: the last hour against each."""
    web, inbound = settings.web, settings.inbound
    channels = ", ".join(f"{channel} {n}" for channel, n in sorted(counts.by_channel.items()))
    lines = [
        f"Subscribe requests in the last hour: {counts.total} of {web.subscribe_per_hour}"
        + (f" ({channels})" if channels else "")
        + f"; caps: {web.subscribe_per_client_per_hour} per web client, "
        f"{inbound.subscribe_per_domain_per_hour} per mail domain"
        + (" — every new request is refused" if counts.total >= web.subscribe_per_hour else "")
    ]
    caps = {
        "web": web.subscribe_per_client_per_hour,
        "mail": inbound.subscribe_per_domain_per_hour,
    }
    busiest = []
    for channel, origin, n in counts.busiest:
        full = n >= caps.get(channel, n + 1)
        busiest.append(f"{origin} ({channel}) {n}" + (" — at its cap" if full else ""))
    if busiest:
        lines.append("  busiest: " + "; ".join(busiest))
    return lines
