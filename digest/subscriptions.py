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
  interval, whichever channel asked (:func:`claim_mail_slot`).
- **Signed links.** Given the row a signed link named, :func:`confirm`,
  :func:`save_preferences` and :func:`unsubscribe` act only while the row's token version is
  still the link's, in the same statement that makes the change: a revoked link changes
  nothing, even when it was revoked between the page and the POST.
- **Unsubscribing** by address needs no link: the operator may (``digest unsubscribe``), and so
  may a mail to the unsubscribe address, the ``mailto:`` that RFC 2369 puts in every digest's
  ``List-Unsubscribe`` header (mail providers send it on a reader's click).
- **The operator** vouches for an address: :func:`add` makes a subscriber active at once.

So the web may request, confirm, save preferences and unsubscribe (each change but the request
through a signed link); a mail may request and unsubscribe by address; the CLI may add,
unsubscribe by address, and read (:func:`get`, :func:`listing`).

Light to import (no ranking, web or SMTP stacks): the inbound mail server and the CLI load it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import ColumnElement, and_, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from digest.errors import SubscriberError
from digest.keywords import (
    MAX_KEYWORD_CHARS,
    MAX_KEYWORD_LIST_CHARS,
    MAX_KEYWORDS,
    split_keywords,
)
from digest.models import Subscriber, utcnow

STATUSES = ("pending", "active", "unsubscribed", "bounced")
FREQUENCIES = ("daily", "weekly")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MAX_PAPERS = 50  # papers per digest

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


def request(
    engine: Engine,
    email: str,
    interests: Interests,
    *,
    now: datetime,
    interval_seconds: int,
) -> Outgoing | None:
    """Record a subscription request; the mail to send, or None when the address had one
    less than ``interval_seconds`` ago.

    A new address becomes a pending subscriber; a pending, unsubscribed or bounced one gets the
    new interests and becomes pending again (it must confirm); an active one is left alone (its
    mail is "already subscribed", with the preferences link).
    """
    email = normalise_email(email)
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


def unsubscribe(engine: Engine, who: str | Subscriber, *, now: datetime | None = None) -> bool:
    """End a subscription; true when this call ended it, false when it had already ended.

    ``who`` is an address (the operator, or a mail to the unsubscribe address: RFC 2369's
    ``mailto:`` acts by address), or the row a signed link named, which acts only while its
    token version is current. SubscriberError for an unknown address or a revoked link.
    """
    now = now or utcnow()
    if isinstance(who, str):
        address = normalise_email(who)
        match: ColumnElement[bool] = col(Subscriber.email) == address
        unknown = f"no subscriber {address}"
    else:
        match, unknown = _as_linked(who), "this link has been revoked"
    with engine.begin() as conn:
        ended = conn.execute(
            update(Subscriber)
            .where(match, col(Subscriber.status) != "unsubscribed")
            .values(status="unsubscribed", unsubscribed_at=now, updated_at=now)
        ).rowcount
        if ended:
            return True
        if conn.execute(sa_select(col(Subscriber.id)).where(match)).first() is None:
            raise SubscriberError(unknown)
    return False


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
