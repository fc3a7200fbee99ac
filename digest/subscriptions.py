"""Subscriptions: who gets digests, what they asked for, and the rules for changing either.

The ways in call these functions alike: the web pages (:mod:`digest.web`), the email commands
(:mod:`digest.inbound`) and the operator's shell (:mod:`digest.cli`). They parse their input and
present the answers; the rules are here, so a new way in calls this module and adds none.

- **Limits.** Papers per digest: 1 to ``MAX_PAPERS`` (``[digest] max_papers`` too). Keywords and
  excluded keywords: at most ``MAX_KEYWORDS`` each, a keyword at most ``MAX_KEYWORD_CHARS``
  characters, a typed list at most ``MAX_KEYWORD_LIST_CHARS`` (:mod:`digest.keywords`). Input
  over a limit is refused with a :class:`SubscriberError` that names the limit, and whose
  ``field`` names the choice; nothing is cut short.
- **Double opt-in.** Whoever only claims an address (the web form; a mail, whose From can be
  forged) can :func:`request` a subscription: a new, pending, unsubscribed or bounced address
  becomes pending with the interests asked for, and only the signed link mailed to it
  (:func:`confirm`) makes it active. A request never changes an active subscription: its reader
  is mailed their preferences link instead. Either mail goes to an address at most once per
  interval, whichever channel asked (:func:`claim_mail_slot`). A mail is never more than a
  link: nothing a request typed is echoed into it.
- **Hourly caps.** Every request counts against its :class:`Origin` (a web client's address,
  an IPv6 one by its /64; a mail's sender domain) and against every request in all, over the
  last hour, in the database (:func:`claim_request`): over either cap it is refused with
  :class:`~digest.errors.TooManyRequests` and changes nothing. A request counts whether or not
  it earned a mail, so a refusal says nothing about the address asked for.
- **Signed links.** Given the row a signed link named, :func:`confirm`,
  :func:`save_preferences` and :func:`resubscribe` act only while the row's token version is
  still the link's, in the same statement that makes the change: a revoked link changes
  nothing, even when it was revoked between the page and the POST. An unsubscribe link is the
  exception (:func:`link_holds`): every digest already sent carries one, and unsubscribing
  never harms the reader, so it keeps working after a revocation.
- **Unsubscribing** by address needs no link: the operator may (``digest unsubscribe``), and so
  may a mail to the unsubscribe address, the ``mailto:`` that RFC 2369 puts in every digest's
  ``List-Unsubscribe`` header (mail providers send it on a reader's click). Such a mail can be
  forged, so its caller tells the reader it ended (:func:`unsubscribe_address` says what it
  ended), with a come-back link (:func:`resubscribe`).
- **Unconfirmed requests expire**: :func:`purge_pending` deletes the pending subscribers
  whose last request is older than a few days and who never were readers.
- **The operator** vouches for an address: :func:`add` makes a subscriber active at once.

So the web may request, confirm, save preferences, unsubscribe and resubscribe (each change but
the request through a signed link); a mail may request and unsubscribe by address; the CLI may
add, unsubscribe by address, and read (:func:`get`, :func:`listing`).

Light to import (no ranking, web or SMTP stacks): the inbound mail server and the CLI load it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import ColumnElement, and_, case, delete, exists, func, insert, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from digest.db import exclusive_transaction
from digest.errors import SubscriberError, TooManyRequests
from digest.keywords import (
    MAX_KEYWORD_CHARS,
    MAX_KEYWORD_LIST_CHARS,
    MAX_KEYWORDS,
    split_keywords,
)
from digest.models import Delivery, SentPaper, Subscriber, SubscribeRequest, utcnow

STATUSES = ("pending", "active", "unsubscribed", "bounced")
FREQUENCIES = ("daily", "weekly")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MAX_PAPERS = 50  # papers per digest
CAP_WINDOW = timedelta(hours=1)  # the caps on subscribe requests count this far back
REQUESTS_KEPT = timedelta(days=1)  # older request rows are pruned (digest status shows a day)
PURGE_BATCH = 500  # pending subscribers deleted per purge run at most
# Any number will do, as long as it stays the same: every process counting requests takes it.
_REQUEST_LOCK = 0x6469676573740002

KeywordField = Literal["keywords", "exclude"]
# How each keyword field is named in a message: (the list, one of it).
_KEYWORD_WORDS: dict[str, tuple[str, str]] = {
    "keywords": ("keywords", "a keyword"),
    "exclude": ("excluded keywords", "an excluded keyword"),
}


def normalise_email(address: str) -> str:
    """A valid address, normalised (IDNA domain, lowercased), or SubscriberError saying why."""
    address = address.strip()
    if len(address) > 320:
        raise SubscriberError("that email address is too long", field="email")
    try:
        checked = validate_email(address, check_deliverability=False)
    except EmailNotValidError as e:
        raise SubscriberError(
            f"{address!r} is not a valid email address: {e}", field="email"
        ) from e
    # Mail systems treat the local part case-insensitively in practice; one row per person.
    # Keep the ASCII form (IDNA domain) where there is one: smtplib writes RCPT TO in ASCII, so
    # a Unicode domain could never be mailed, and both spellings are then one row.
    return (checked.ascii_email or checked.normalized).lower()


# ---------------------------------------------------------------------------------------------
# interests and their limits


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


def keyword_list(raw: str | Sequence[str], *, field: KeywordField = "keywords") -> tuple[str, ...]:
    """The keywords in typed text (or a list), trimmed and deduped; SubscriberError naming the
    limit when the text, the number of keywords or one keyword is too long."""
    plural, one = _KEYWORD_WORDS[field]
    if isinstance(raw, str):
        if len(raw) > MAX_KEYWORD_LIST_CHARS:
            raise SubscriberError(
                f"keep the {plural} under {MAX_KEYWORD_LIST_CHARS} characters", field=field
            )
        found = split_keywords(raw)
    else:
        found = split_keywords(", ".join(raw))
    if len(found) > MAX_KEYWORDS:
        raise SubscriberError(f"at most {MAX_KEYWORDS} {plural}, not {len(found)}", field=field)
    longest = max(map(len, found), default=0)
    if longest > MAX_KEYWORD_CHARS:
        raise SubscriberError(
            f"{one} can be at most {MAX_KEYWORD_CHARS} characters (one has {longest})",
            field=field,
        )
    return found


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
    """Validate a reader's choices; SubscriberError names the first bad one (and its field)."""
    kws = keyword_list(keywords, field="keywords")
    exc = keyword_list(exclude, field="exclude")
    if not kws:
        raise SubscriberError(
            "give at least one keyword, e.g. llm inference, quantization", field="keywords"
        )
    if frequency not in FREQUENCIES:
        raise SubscriberError("frequency must be daily or weekly", field="frequency")
    if not 0 <= weekday <= 6:
        raise SubscriberError("weekday must be 0 (Monday) to 6 (Sunday)", field="weekday")
    if not 0 <= send_hour <= 23:
        raise SubscriberError("send hour must be 0-23", field="send_hour")
    if not 1 <= max_papers <= MAX_PAPERS:
        raise SubscriberError(
            f"papers per digest must be from 1 to {MAX_PAPERS}, not {max_papers}",
            field="max_papers",
        )
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SubscriberError(f"unknown time zone {timezone[:64]!r}", field="timezone") from None
    return Interests(
        keywords=kws,
        exclude=exc,
        frequency=frequency,
        weekday=weekday,
        send_hour=send_hour,
        timezone=timezone,
        max_papers=max_papers,
    )


def interests_of(row: Subscriber) -> Interests:
    """A subscriber's interests as stored."""
    return Interests(
        keywords=tuple(row.keywords),
        exclude=tuple(row.exclude),
        frequency=row.frequency,
        weekday=row.weekday,
        send_hour=row.send_hour,
        timezone=row.timezone,
        max_papers=row.max_papers,
    )


def _columns(interests: Interests) -> dict[str, Any]:
    """The subscriber columns that hold ``interests``: the other half of :func:`interests_of`."""
    return {
        "keywords": list(interests.keywords),
        "exclude": list(interests.exclude),
        "frequency": interests.frequency,
        "weekday": interests.weekday,
        "send_hour": interests.send_hour,
        "timezone": interests.timezone,
        "max_papers": interests.max_papers,
    }


def _apply(row: Subscriber, interests: Interests, *, now: datetime) -> None:
    for name, value in _columns(interests).items():
        setattr(row, name, value)
    row.updated_at = now


def _as_linked(row: Subscriber) -> ColumnElement[bool]:
    """The subscriber a signed link named, while the link's token version is still current."""
    return and_(
        col(Subscriber.id) == row.id,
        col(Subscriber.token_version) == row.token_version,
    )


# ---------------------------------------------------------------------------------------------
# requesting (double opt-in) and confirming


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outgoing:
    """A mail a subscription request earned: which kind, to whom, and the slot it claimed."""

    kind: Literal["confirm", "already"]
    subscriber_id: int
    claimed_at: datetime
    previous: datetime | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Origin:
    """Where a subscribe request came from, and the hourly caps it is held to."""

    channel: Literal["web", "mail"]
    key: str  # client_origin (web) or domain_origin (mail)
    per_hour: int  # requests from this origin in any hour
    total_per_hour: int  # requests from every origin and channel together in any hour


def client_origin(host: str | None) -> str:
    """The origin a web client's requests count under: its IP address, an IPv6 one by its /64
    (the share one machine gets, and can pick any address in), "unknown" without one."""
    if not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def domain_origin(address: str) -> str:
    """The origin a mail's requests count under: the domain of its (normalised) sender."""
    return address.rpartition("@")[2].lower()[:100] or "unknown"


def _retry_after(oldest: datetime | None, now: datetime) -> int:
    if oldest is None:
        return int(CAP_WINDOW.total_seconds())
    return max(1, math.ceil((oldest + CAP_WINDOW - now).total_seconds()))


def claim_request(engine: Engine, origin: Origin, *, now: datetime) -> None:
    """Count a subscribe request against its origin's cap and the cap on every request, over
    the last hour; TooManyRequests (nothing counted) when either is full.

    The count and the new row are one transaction under a lock (PostgreSQL: an advisory lock;
    SQLite: the write lock), so racing requests, in any number of processes on one database,
    never count past a cap.
    """
    table = SubscribeRequest
    mine = and_(col(table.channel) == origin.channel, col(table.origin) == origin.key)
    counts = sa_select(
        func.count(),
        func.min(col(table.at)),
        func.count(case((mine, 1))),
        func.min(case((mine, col(table.at)))),
    ).where(col(table.at) > now - CAP_WINDOW)
    with exclusive_transaction(engine, _REQUEST_LOCK) as conn:
        total, oldest, from_origin, oldest_mine = conn.execute(counts).one()
        if from_origin >= origin.per_hour:
            raise TooManyRequests(
                f"{from_origin} subscribe requests from {origin.key} ({origin.channel}) in the "
                f"last hour: the cap is {origin.per_hour}",
                scope="origin",
                retry_after=_retry_after(oldest_mine, now),
            )
        if total >= origin.total_per_hour:
            raise TooManyRequests(
                f"{total} subscribe requests in the last hour: the cap is {origin.total_per_hour}",
                scope="total",
                retry_after=_retry_after(oldest, now),
            )
        conn.execute(insert(table).values(at=now, channel=origin.channel, origin=origin.key[:100]))


def request(
    engine: Engine,
    email: str,
    interests: Interests,
    *,
    now: datetime,
    interval_seconds: int,
    origin: Origin,
) -> Outgoing | None:
    """Record a subscription request; the mail to send, or None when the address had one
    less than ``interval_seconds`` ago. TooManyRequests, before anything is recorded, when
    the request is over an hourly cap (:func:`claim_request`).

    A new address becomes a pending subscriber; a pending, unsubscribed or bounced one gets the
    new interests and becomes pending again (it must confirm); an active one is left alone (its
    mail is "already subscribed", with the preferences link).
    """
    email = normalise_email(email)
    claim_request(engine, origin, now=now)
    with Session(engine) as session:
        row = session.exec(select(Subscriber).where(Subscriber.email == email)).first()
        if row is None:
            row = Subscriber(email=email, status="pending", created_at=now)
            _apply(row, interests, now=now)
            session.add(row)
            try:
                session.commit()
            except IntegrityError:  # the same address, submitted twice at once
                session.rollback()
                row = session.exec(select(Subscriber).where(Subscriber.email == email)).one()
        elif row.status != "active":
            _apply(row, interests, now=now)
            row.status = "pending"
            session.add(row)
            session.commit()
        session.refresh(row)
        kind: Literal["confirm", "already"] = "already" if row.status == "active" else "confirm"
        subscriber_id, previous = row.id or 0, row.last_confirmation_at
    if not claim_mail_slot(engine, subscriber_id, now=now, interval_seconds=interval_seconds):
        return None
    return Outgoing(kind=kind, subscriber_id=subscriber_id, claimed_at=now, previous=previous)


def claim_mail_slot(
    engine: Engine, subscriber_id: int, *, now: datetime, interval_seconds: int
) -> bool:
    """Take the address's one mail per interval: true for exactly one of racing requests."""
    cutoff = now - timedelta(seconds=interval_seconds)
    stmt = (
        update(Subscriber)
        .where(
            col(Subscriber.id) == subscriber_id,
            or_(
                col(Subscriber.last_confirmation_at).is_(None),
                col(Subscriber.last_confirmation_at) <= cutoff,
            ),
        )
        .values(last_confirmation_at=now)
    )
    with engine.begin() as conn:
        return conn.execute(stmt).rowcount == 1


def release_mail_slot(engine: Engine, outgoing: Outgoing) -> None:
    """Give the slot back after a failed send, unless another request took it since."""
    stmt = (
        update(Subscriber)
        .where(
            col(Subscriber.id) == outgoing.subscriber_id,
            col(Subscriber.last_confirmation_at) == outgoing.claimed_at,
        )
        .values(last_confirmation_at=outgoing.previous)
    )
    with engine.begin() as conn:
        conn.execute(stmt)


def confirm(engine: Engine, row: Subscriber, *, now: datetime) -> str:
    """Activate the pending subscriber a confirmation link named; the resulting status
    ("active", or why not: "pending" when the link was revoked, "unsubscribed", "gone")."""
    with engine.begin() as conn:
        conn.execute(
            update(Subscriber)
            .where(_as_linked(row), col(Subscriber.status) == "pending")
            .values(status="active", confirmed_at=now, updated_at=now, bounce_count=0)
        )
    fresh = by_id(engine, row.id or 0)
    return fresh.status if fresh is not None else "gone"


# ---------------------------------------------------------------------------------------------
# changing and ending a subscription


def save_preferences(
    engine: Engine, row: Subscriber, interests: Interests, *, now: datetime
) -> None:
    """Store new interests for the subscriber a preferences link named; SubscriberError when
    the link has been revoked (or the subscriber is gone) since."""
    with engine.begin() as conn:
        saved = conn.execute(
            update(Subscriber).where(_as_linked(row)).values(**_columns(interests), updated_at=now)
        ).rowcount
    if saved != 1:
        raise SubscriberError("this link has been revoked")


def link_holds(purpose: str, row: Subscriber, version: int) -> bool:
    """Whether a signed link for ``purpose`` made at token ``version`` still acts on ``row``:
    while the version is the row's; an unsubscribe link at any version the row has had, since
    every digest already sent carries one and unsubscribing never harms the reader."""
    if purpose == "unsubscribe":
        return version <= row.token_version
    return version == row.token_version


def unsubscribe(engine: Engine, who: str | Subscriber, *, now: datetime | None = None) -> bool:
    """End a subscription; true when this call ended it, false when it had already ended.

    ``who`` is an address (the operator, or a mail to the unsubscribe address: RFC 2369's
    ``mailto:`` acts by address), or the row a signed unsubscribe link named, at whatever
    token version (:func:`link_holds`). SubscriberError for an unknown address or subscriber.
    """
    if isinstance(who, str):
        return unsubscribe_address(engine, who, now=now) is not None
    now = now or utcnow()
    match = col(Subscriber.id) == who.id
    with engine.begin() as conn:
        ended = conn.execute(
            update(Subscriber)
            .where(match, col(Subscriber.status) != "unsubscribed")
            .values(status="unsubscribed", unsubscribed_at=now, updated_at=now)
        ).rowcount
        if ended:
            return True
        if conn.execute(sa_select(col(Subscriber.id)).where(match)).first() is None:
            raise SubscriberError("this link's subscriber is gone")
    return False


def unsubscribe_address(engine: Engine, address: str, *, now: datetime | None = None) -> str | None:
    """End the subscription of an address; the status it had when this call ended it
    ("active", "pending", "bounced"), None when it had already ended. SubscriberError for an
    invalid or unknown address.

    A mail to the unsubscribe address acts through this: its sender may be forged, so the
    caller tells an active reader what happened (:func:`resubscribe` brings them back).
    """
    address = normalise_email(address)
    now = now or utcnow()
    match = col(Subscriber.email) == address
    # The update names the status read, so that the status returned is the one it ended; when
    # another process changed it in between, read it again.
    while True:
        with engine.begin() as conn:
            status = conn.execute(sa_select(col(Subscriber.status)).where(match)).scalar()
            if status is None:
                raise SubscriberError(f"no subscriber {address}")
            if status == "unsubscribed":
                return None
            ended = conn.execute(
                update(Subscriber)
                .where(match, col(Subscriber.status) == status)
                .values(status="unsubscribed", unsubscribed_at=now, updated_at=now)
            ).rowcount
        if ended:
            return str(status)


def resubscribe(engine: Engine, row: Subscriber, *, now: datetime) -> str:
    """Bring back the unsubscribed reader a come-back link named (the notice a mail that
    unsubscribed them earns); the resulting status ("active", or why not: "unsubscribed" when
    the link was revoked, "pending", "bounced", "gone")."""
    with engine.begin() as conn:
        conn.execute(
            update(Subscriber)
            .where(_as_linked(row), col(Subscriber.status) == "unsubscribed")
            .values(status="active", unsubscribed_at=None, updated_at=now)
        )
    fresh = by_id(engine, row.id or 0)
    return fresh.status if fresh is not None else "gone"


# ---------------------------------------------------------------------------------------------
# housekeeping


def purge_pending(engine: Engine, *, now: datetime, days: int, limit: int = PURGE_BATCH) -> int:
    """Delete up to ``limit`` unconfirmed subscriptions whose last request is more than
    ``days`` old; the number deleted.

    Only a pending subscriber that never was a reader goes (never confirmed, nothing ever
    sent): an address someone typed and nobody confirmed. Active, unsubscribed and bounced
    readers stay, and so does a former reader whose request to come back was not confirmed.
    """
    cutoff = now - timedelta(days=days)
    stale = and_(
        col(Subscriber.status) == "pending",
        col(Subscriber.confirmed_at).is_(None),
        col(Subscriber.updated_at) < cutoff,
        ~exists().where(col(Delivery.subscriber_id) == col(Subscriber.id)),
        ~exists().where(col(SentPaper.subscriber_id) == col(Subscriber.id)),
    )
    with engine.begin() as conn:
        ids = list(
            conn.execute(
                sa_select(col(Subscriber.id)).where(stale).order_by(col(Subscriber.id)).limit(limit)
            ).scalars()
        )
        if not ids:
            return 0
        # the conditions again: a request may have come for one of them since the select
        return int(
            conn.execute(delete(Subscriber).where(col(Subscriber.id).in_(ids), stale)).rowcount
        )


def prune_requests(engine: Engine, *, now: datetime) -> int:
    """Delete the subscribe-request rows older than ``REQUESTS_KEPT``; the number deleted."""
    with engine.begin() as conn:
        return int(
            conn.execute(
                delete(SubscribeRequest).where(col(SubscribeRequest.at) < now - REQUESTS_KEPT)
            ).rowcount
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class RequestCounts:
    """The subscribe requests of the last hour, for `digest status`."""

    total: int
    by_channel: dict[str, int]
    busiest: list[tuple[str, str, int]]  # (channel, origin, requests), the most first


def request_counts(engine: Engine, *, now: datetime, top: int = 3) -> RequestCounts:
    """How many subscribe requests the last hour held, per channel and from the busiest
    origins."""
    table = SubscribeRequest
    recent = col(table.at) > now - CAP_WINDOW
    with engine.connect() as conn:
        per_channel = {
            str(channel): int(n)
            for channel, n in conn.execute(
                sa_select(col(table.channel), func.count())
                .where(recent)
                .group_by(col(table.channel))
            )
        }
        busiest = [
            (str(channel), str(origin), int(n))
            for channel, origin, n in conn.execute(
                sa_select(col(table.channel), col(table.origin), func.count().label("n"))
                .where(recent)
                .group_by(col(table.channel), col(table.origin))
                .order_by(func.count().desc(), col(table.origin))
                .limit(top)
            )
        ]
    return RequestCounts(total=sum(per_channel.values()), by_channel=per_channel, busiest=busiest)


def add(
    engine: Engine,
    email: str,
    interests: Interests,
    *,
    status: str = "active",
    now: datetime | None = None,
) -> Subscriber:
    """Add a subscriber the operator vouches for (active at once); a known address is refused
    with SubscriberError."""
    address = normalise_email(email)
    now = now or utcnow()
    row = Subscriber(
        email=address,
        status=status,
        created_at=now,
        confirmed_at=now if status == "active" else None,
    )
    _apply(row, interests, now=now)
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


# ---------------------------------------------------------------------------------------------
# reading


def find(engine: Engine, email: str) -> Subscriber | None:
    """The subscriber with this address, or None (an invalid address is SubscriberError)."""
    address = normalise_email(email)
    with Session(engine) as session:
        return session.exec(select(Subscriber).where(Subscriber.email == address)).first()


def get(engine: Engine, email: str) -> Subscriber:
    """The subscriber with this address, or SubscriberError."""
    row = find(engine, email)
    if row is None:
        raise SubscriberError(f"no subscriber {normalise_email(email)}")
    return row


def by_id(engine: Engine, subscriber_id: int) -> Subscriber | None:
    """The subscriber with this id, or None."""
    with Session(engine) as session:
        return session.get(Subscriber, subscriber_id)


def listing(engine: Engine, *, status: str | None = None) -> list[Subscriber]:
    """Subscribers by address, optionally of one status."""
    with Session(engine) as session:
        query = select(Subscriber).order_by(Subscriber.email)
        if status:
            query = query.where(Subscriber.status == status)
        return list(session.exec(query).all())


def weekday_number(text: str) -> int:
    """0 (Monday) to 6 (Sunday) from "4", "friday", "Fri" or "fridays"; SubscriberError
    otherwise."""
    word = text.strip().lower().removesuffix("s")
    if word.isdigit() and len(word) == 1 and int(word) <= 6:
        return int(word)
    for number, name in enumerate(WEEKDAYS):
        if word in (name.lower(), name[:3].lower()):
            return number
    raise SubscriberError(
        f"{text.strip()[:30]!r} is not a day of the week: give a name (friday, fri) or 0-6 "
        "(0 is Monday)",
        field="weekday",
    )
