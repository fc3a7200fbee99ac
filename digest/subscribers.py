"""Subscribers: validated addresses, interests and schedules."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from digest.errors import SubscriberError
from digest.keywords import parse_keywords
from digest.models import Subscriber, utcnow

STATUSES = ("pending", "active", "unsubscribed", "bounced")
FREQUENCIES = ("daily", "weekly")
MAX_KEYWORDS = 50


def normalise_email(address: str) -> str:
    """A valid address, normalised (IDNA domain, lowercased), or SubscriberError saying why."""
    address = address.strip()
    if len(address) > 320:
        raise SubscriberError("that email address is too long")
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError as e:
        raise SubscriberError(f"{address!r} is not a valid email address: {e}") from e
    # Mail systems treat the local part case-insensitively in practice; one row per person.
    # Keep the ASCII form (IDNA domain) where there is one: smtplib writes RCPT TO in ASCII, so
    # a Unicode domain could never be mailed, and both spellings are then one row.
    return (checked.ascii_email or checked.normalized).lower()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Interests:
    """What a reader asked for, validated."""

    keywords: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    frequency: str = "daily"
    weekday: int = 0
    send_hour: int = 7
    timezone: str = "UTC"
    max_papers: int = 10


def make_interests(
    keywords: str | Sequence[str],
    *,
    exclude: str | Sequence[str] = (),
    frequency: str = "daily",
    weekday: int = 0,
    send_hour: int = 7,
    timezone: str = "UTC",
    max_papers: int = 10,
) -> Interests:
    """Validate a reader's choices; SubscriberError names the first bad one."""
    kws = parse_keywords(keywords if isinstance(keywords, str) else ", ".join(keywords))
    exc = parse_keywords(exclude if isinstance(exclude, str) else ", ".join(exclude))
    if not kws:
        raise SubscriberError(
            'give at least one keyword, e.g. --keywords "llm inference, quantization"'
        )
    if frequency not in FREQUENCIES:
        raise SubscriberError(f"frequency must be daily or weekly, not {frequency!r}")
    if not 0 <= weekday <= 6:
        raise SubscriberError("weekday must be 0 (Monday) to 6 (Sunday)")
    if not 0 <= send_hour <= 23:
        raise SubscriberError("send hour must be 0-23")
    if not 1 <= max_papers <= 50:
        raise SubscriberError("papers per digest must be 1-50")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SubscriberError(f"unknown time zone {timezone!r}") from None
    return Interests(
        keywords=kws[:MAX_KEYWORDS],
        exclude=exc[:MAX_KEYWORDS],
        frequency=frequency,
        weekday=weekday,
        send_hour=send_hour,
        timezone=timezone,
        max_papers=max_papers,
    )


def add(engine: Engine, email: str, interests: Interests, *, status: str = "active") -> Subscriber:
    """Add a subscriber; a known address is refused with SubscriberError."""
    address = normalise_email(email)
    now = utcnow()
    row = Subscriber(
        email=address,
        status=status,
        keywords=list(interests.keywords),
        exclude=list(interests.exclude),
        frequency=interests.frequency,
        weekday=interests.weekday,
        send_hour=interests.send_hour,
        timezone=interests.timezone,
        max_papers=interests.max_papers,
        created_at=now,
        updated_at=now,
        confirmed_at=now if status == "active" else None,
    )
    with Session(engine) as session:
        existing = session.exec(select(Subscriber).where(Subscriber.email == address)).first()
        if existing is not None:
            raise SubscriberError(f"{address} is already subscribed (status: {existing.status})")
        session.add(row)
        try:
            session.commit()
        except IntegrityError as e:
            raise SubscriberError(f"{address} is already subscribed") from e
        session.refresh(row)
        return row


def get(engine: Engine, email: str) -> Subscriber:
    """The subscriber with this address, or SubscriberError."""
    address = normalise_email(email)
    with Session(engine) as session:
        row = session.exec(select(Subscriber).where(Subscriber.email == address)).first()
    if row is None:
        raise SubscriberError(f"no subscriber {address}")
    return row


def unsubscribe(engine: Engine, email: str) -> Subscriber:
    """Mark a subscriber unsubscribed; SubscriberError if unknown."""
    address = normalise_email(email)
    with Session(engine) as session:
        row = session.exec(select(Subscriber).where(Subscriber.email == address)).first()
        if row is None:
            raise SubscriberError(f"no subscriber {address}")
        if row.status != "unsubscribed":
            now = utcnow()
            row.status, row.unsubscribed_at, row.updated_at = "unsubscribed", now, now
            session.add(row)
            session.commit()
            session.refresh(row)
        return row


def listing(engine: Engine, *, status: str | None = None) -> list[Subscriber]:
    """Subscribers by address, optionally of one status."""
    with Session(engine) as session:
        query = select(Subscriber).order_by(Subscriber.email)
        if status:
            query = query.where(Subscriber.status == status)
        return list(session.exec(query).all())
