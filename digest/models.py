"""The database tables (SQLModel). Times are stored in UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, UniqueConstraint, text
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """The current time in UTC, aware."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as UTC and gives them back aware (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database: use aware UTC times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _when(*, index: bool = False, default_now: bool = False) -> Any:
    if default_now:
        return Field(default_factory=utcnow, sa_type=UTCDateTime, index=index)
    return Field(default=None, sa_type=UTCDateTime, index=index)


class Paper(SQLModel, table=True):
    """A paper, once, whatever sources repeat it."""

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=300, unique=True, index=True)
    # The title-derived key, kept for every paper so that a list without ids (plain text)
    # and a source with ids (arXiv, Hugging Face) name the same paper once.
    title_key: str = Field(max_length=300, index=True)
    title: str
    abstract: str = ""
    authors: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    url: str | None = None
    pdf_url: str | None = None
    code_url: str | None = None
    sources: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    published_at: datetime | None = _when()
    first_seen_at: datetime = _when(index=True, default_now=True)
    updated_at: datetime = _when(default_now=True)
    upvotes: int | None = None
    comments: int | None = None


class Source(SQLModel, table=True):
    """What digest knows of one source's fetches, so a broken feed is visible."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=300, unique=True, index=True)
    location: str
    kind: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    last_fetch_at: datetime | None = _when()
    last_ok_at: datetime | None = _when()
    last_count: int = 0
    last_new: int = 0
    last_error: str | None = None
    # entries left out by [ingest] max_entries in the last read; last, with a database default,
    # as the revision that added it made it (tests compare the two)
    last_cut: int = Field(default=0, sa_column_kwargs={"server_default": text("0")})


class Subscriber(SQLModel, table=True):
    """A reader: an address, interests and a schedule."""

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True, index=True)
    status: str = Field(
        default="active", max_length=20, index=True
    )  # pending|active|unsubscribed|bounced
    keywords: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    exclude: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    frequency: str = Field(default="daily", max_length=10)  # daily|weekly
    weekday: int = 0  # 0 = Monday, for weekly readers
    send_hour: int = 7
    timezone: str = "UTC"
    max_papers: int = 10
    token_version: int = 1
    bounce_count: int = 0
    created_at: datetime = _when(default_now=True)
    updated_at: datetime = _when(default_now=True)
    confirmed_at: datetime | None = _when()
    unsubscribed_at: datetime | None = _when()
    last_confirmation_at: datetime | None = _when()


class Delivery(SQLModel, table=True):
    """One digest for one subscriber and one edition; the outbox row."""

    __table_args__ = (
        UniqueConstraint("subscriber_id", "edition", name="uq_delivery_subscriber_edition"),
        Index("ix_delivery_status_next", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    subscriber_id: int = Field(foreign_key="subscriber.id", index=True)
    edition: str = Field(max_length=20, index=True)  # "2026-11-22" or "2026-W47"
    status: str = Field(
        default="queued", max_length=20
    )  # queued|sending|sent|failed|bounced|skipped
    attempts: int = 0
    next_attempt_at: datetime | None = _when()
    lease_until: datetime | None = _when()
    lease_owner: str | None = None
    message_id: str | None = None
    paper_keys: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    last_error: str | None = None
    created_at: datetime = _when(default_now=True)
    sent_at: datetime | None = _when()


class SentPaper(SQLModel, table=True):
    """A paper that reached a reader: it never reaches them again."""

    subscriber_id: int = Field(foreign_key="subscriber.id", primary_key=True)
    paper_id: int = Field(foreign_key="paper.id", primary_key=True)
    edition: str = Field(max_length=20)
    sent_at: datetime = _when(default_now=True)


class Run(SQLModel, table=True):
    """One ingest or send run, for `digest status`."""

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=20, index=True)  # ingest | send
    started_at: datetime = _when(default_now=True)
    finished_at: datetime | None = _when()
    counts: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    errors: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class SubscribeRequest(SQLModel, table=True):
    """A subscribe request that may earn a mail, counted against the hourly caps on requests
    from its origin (a web client's address, a mail's sender domain) and in all."""

    __table_args__ = (Index("ix_subscriberequest_origin", "channel", "origin", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _when(index=True, default_now=True)
    channel: str = Field(max_length=10)  # web | mail
    origin: str = Field(max_length=100)
