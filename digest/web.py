"""The web app: subscribe (double opt-in), confirm, preferences, one-click unsubscribe, come back
after a mail unsubscribed you, view a sent digest in the browser, and the public archive with its
Atom feed.

:func:`create_app` builds a Starlette app from settings and an engine; nothing is global, so
each test builds its own. Pages are server-rendered Jinja (autoescaped) and work without
JavaScript; ``/static/site.js`` only adds the browser's time zone and the live ranking.

Every link a reader gets in mail carries a signed token (:mod:`digest.tokens`) naming one
purpose and one subscriber at one token version: a tampered, expired, wrong-purpose or revoked
token gets a 4xx page and changes nothing (an unsubscribe link outlives a revocation:
:func:`digest.subscriptions.link_holds`). A GET never changes anything, since mail scanners
open every link: a link that acts (confirm, come back, unsubscribe) shows a page whose button
POSTs, and the signed token is that POST's authority, as for the RFC 8058 one-click
unsubscribe; the other forms carry a signed double-submit CSRF token. Tokens never reach the
access log (:class:`AccessLogFilter`). Request bodies are bounded, and every response carries a
Content-Security-Policy that allows scripts from this site only.

The subscription rules (double opt-in, limits, what a link may change) live in
:mod:`digest.subscriptions`; this module reads the forms and links and shows the answers.
Subscribing answers with the same page whatever the address's state (no enumeration) and mails
in a background task after the response, so its timing says nothing either; at most one mail
per address goes out per ``[web] confirm_interval_seconds`` (:func:`digest.subscriptions.request`),
and a client over its hourly cap (or every client, over the cap on all requests) gets 429 with
the form as it was typed. The live ranking (``/api/rank``) is rate-limited per client too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import logging
import math
import re
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, available_timezones

import jinja2
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from digest import edition as editions
from digest import subscriptions
from digest.config import Settings
from digest.delivery.compose import context_for, doc_of, edition_papers, profile_of
from digest.delivery.transports import Envelope, Mailroom, mailroom_for
from digest.errors import DigestError, SendError, SubscriberError, TooManyRequests
from digest.keywords import MAX_KEYWORD_LIST_CHARS, parse_keywords
from digest.links import confirm_url, links_for
from digest.mailer import build_message, new_message_id
from digest.models import Delivery, Paper, Subscriber, utcnow
from digest.ranking import Index, Profile, Ranked
from digest.render import ConfirmContext, Renderer, one_line, safe_url, short_authors
from digest.resources import templates_dir
from digest.subscriptions import MAX_PAPERS, WEEKDAYS, Interests, Origin, Outgoing
from digest.tokens import MAX_AGE, Purpose, TokenError, read_token

log = logging.getLogger("digest.web")

MAX_EMAIL_CHARS = 254  # RFC 5321: a forward path holds at most 254 characters of address
MAX_TIMEZONE_CHARS = 64
MAX_FORM_FIELDS = 40
TOP_PAPERS = 8
RANK_LIMIT_DEFAULT = 10
RANK_CACHE_SECONDS = 300.0
RANK_RESULTS_CACHED = 256  # keyword lists whose ranking each edition index keeps
RATE_CLIENTS = 10_000  # clients the in-memory rate limit remembers
ARCHIVE_DAYS = 14
ARCHIVE_PER_DAY = 5
ARCHIVE_SUMMARY_CHARS = 200  # an archive card's TL;DR or start of the abstract
CSRF_MAX_AGE = 2 * 24 * 3600
CSRF_FIELD = "csrf"
ONE_CLICK = ("List-Unsubscribe", "One-Click")

_EDITION_ID = re.compile(r"\d{4}-\d{2}-\d{2}|\d{4}-W\d{2}")
_COOKIE_VALUE = re.compile(r"[A-Za-z0-9_-]{32,64}")
_TIMEZONE_LIST_SKIP = ("Etc/", "SystemV/", "US/", "posix", "right/")

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# A sent digest is the email's HTML: inline styles and remote images, never scripts or forms.
DIGEST_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; form-action 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = (
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    # Tokens live in URLs: never send them on to the sites a page links to.
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("permissions-policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()"),
)


# ---------------------------------------------------------------------------------------------
# middleware


class SecurityHeadersMiddleware:
    """Adds the security headers (and the default CSP) to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("content-security-policy", PAGE_CSP)
                for name, value in SECURITY_HEADERS:
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _BodyTooLarge(Exception):
    """Raised inside the app when a request body grows past the limit."""


class BodyLimitMiddleware:
    """Answers 413 to a request whose body is (or grows) larger than ``max_bytes``."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, too_large: Callable[[], Response]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.too_large = too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await PlainTextResponse("Bad Content-Length", status_code=400)(
                        scope, receive, send
                    )
                    return
                if declared > self.max_bytes:
                    await self.too_large()(scope, receive, send)
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self.too_large()(scope, receive, send)


# ---------------------------------------------------------------------------------------------
# the access log and the rate limit of the live ranking


# The paths that carry a token: everything after the route's name is the token (and whatever
# else a client appended); a digest's edition after its token is no secret.
_TOKEN_ROUTE = re.compile(r"/(confirm|preferences|unsubscribe|resubscribe)/[^?#]*")
_DIGEST_ROUTE = re.compile(r"/digest/[^/?#]*")
# A token's own shape (payload.timestamp.signature in URL-safe base64), wherever it appears.
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{20,}")
REDACTED = "<token>"


def redact_path(path: str, root_path: str = "") -> str:
    """A request path (and query) fit for a log: each link's token replaced by ``<token>``."""
    prefix = ""
    if root_path and (path == root_path or path.startswith((root_path + "/", root_path + "?"))):
        prefix, path = root_path, path[len(root_path) :]
    route = _TOKEN_ROUTE.match(path)
    if route is not None:
        path = f"/{route.group(1)}/{REDACTED}" + path[route.end() :]
    else:
        digest = _DIGEST_ROUTE.match(path)
        if digest is not None:
            path = f"/digest/{REDACTED}" + path[digest.end() :]
    return _TOKEN_SHAPE.sub(REDACTED, prefix + path)


class AccessLogFilter(logging.Filter):
    """Takes the tokens out of uvicorn's access log (``uvicorn.access``): a token is the key to
    a reader's subscription, and logs are read, kept and shipped far more widely than mail.

    uvicorn logs each request as ``(client, method, path, http version, status)`` arguments;
    the path is rewritten by :func:`redact_path` before any handler formats it.
    """

    def __init__(self, root_path: str = "") -> None:
        super().__init__()
        self.root_path = root_path.rstrip("/")

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's path; every record goes on."""
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_path(args[2], self.root_path), *args[3:])
        elif isinstance(record.msg, str) and not args:
            record.msg = redact_path(record.msg, self.root_path)
        return True


class ClientRateLimiter:
    """At most ``per_minute`` requests from one client a minute (a bucket of that many that
    refills at that pace), in this process's memory.

    In memory is enough where nothing is stored or mailed (the live ranking is a read-only
    preview): what it protects is this process's CPU, so each process counting its own
    clients is the point, and a restart forgetting them costs nothing.
    """

    def __init__(self, per_minute: int, *, max_clients: int = RATE_CLIENTS) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, client: str, now: float) -> float | None:
        """Take one request for ``client`` at ``now`` (monotonic seconds); None when allowed,
        else the seconds until one is."""
        with self._lock:
            tokens, last = self._buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                return (1.0 - tokens) / self.rate
            self._buckets[client] = (tokens - 1.0, now)
            if len(self._buckets) > self.max_clients:
                self._forget(now)
            return None

    def _forget(self, now: float) -> None:
        # Drop the clients whose bucket has refilled (they are as if new); when a flood from
        # more clients than that keeps every bucket busy, start over rather than grow.
        full = [
            c
            for c, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * self.rate >= self.capacity
        ]
        for c in full:
            del self._buckets[c]
        if len(self._buckets) > self.max_clients:
            self._buckets.clear()


# ---------------------------------------------------------------------------------------------
# the web app's mail


def confirmation_message(
    settings: Settings, renderer: Renderer, subscriber: Subscriber, *, now: datetime
) -> bytes:
    """The confirm-your-subscription mail for a pending subscriber, as wire bytes."""
    days = (MAX_AGE["confirm"] or 0) // 86400
    rendered = renderer.render_confirm(
        ConfirmContext(
            site_name=settings.site.name,
            base_url=settings.site.base_url,
            recipient=subscriber.email,
            confirm_url=confirm_url(settings, subscriber),
            # Never what the request typed: anyone may type anything for any address, and the
            # mail would carry it to that address. The mail says only what to click.
            expires_note=f"The link works for {days} days." if days else None,
        )
    )
    return _message(settings, subscriber, rendered.subject, rendered.text, rendered.html, now=now)


def _message(
    settings: Settings,
    subscriber: Subscriber,
    subject: str,
    text_body: str,
    html: str,
    *,
    now: datetime,
) -> bytes:
    links = links_for(settings, subscriber, None)
    domain = settings.smtp.from_address.rpartition("@")[2] or "localhost"
    return build_message(
        from_addr=settings.smtp.from_address,
        from_name=settings.smtp.from_name,
        to_addr=subscriber.email,
        subject=subject,
        text=text_body,
        html=html,
        message_id=new_message_id(domain),
        date=now,
        list_id=settings.site.list_id,
        unsubscribe_url=links.unsubscribe,
        unsubscribe_mailto=settings.site.unsubscribe_mailto,
        bulk=False,  # asked for by the reader: transactional
    )


# ---------------------------------------------------------------------------------------------
# forms


@dataclasses.dataclass(frozen=True, kw_only=True)
class FormResult:
    """A submitted subscribe or preferences form: what was typed, the errors, the result."""

    values: dict[str, str]
    errors: dict[str, str]
    email: str | None = None
    interests: Interests | None = None


def _sentence(message: str) -> str:
    """A domain message as the form shows it beside a field: a capital, a full stop."""
    return message[:1].upper() + message[1:] + ("" if message.endswith((".", "?", "!")) else ".")


def _keyword_error(raw: str, *, field: subscriptions.KeywordField, required: bool) -> str | None:
    try:
        found = subscriptions.keyword_list(raw, field=field)
    except SubscriberError as e:
        return _sentence(str(e))
    if required and not found:
        return "Give at least one keyword, e.g. llm inference, quantization."
    return None


def _int_field(raw: str, low: int, high: int) -> int | None:
    raw = raw.strip()
    if not raw or len(raw) > 4 or not raw.isascii() or not raw.isdigit():
        return None
    value = int(raw)
    return value if low <= value <= high else None


def read_form(
    form: Mapping[str, str],
    *,
    zones: frozenset[str],
    with_email: bool,
) -> FormResult:
    """Validate a subscribe (``with_email``) or preferences form; errors are keyed by field."""
    values = {
        name: form.get(name, "")
        for name in (
            "email",
            "keywords",
            "exclude",
            "frequency",
            "weekday",
            "send_hour",
            "timezone",
            "max_papers",
        )
    }
    errors: dict[str, str] = {}
    email: str | None = None
    if with_email:
        raw = values["email"].strip()
        if not raw:
            errors["email"] = "Enter your email address."
        elif len(raw) > MAX_EMAIL_CHARS:
            errors["email"] = f"An email address has at most {MAX_EMAIL_CHARS} characters."
        else:
            try:
                email = subscriptions.normalise_email(raw)
            except SubscriberError as e:
                reason = str(e.__cause__) if e.__cause__ else str(e)
                errors["email"] = f"That is not a valid email address: {reason}"
            if email is not None and len(email) > MAX_EMAIL_CHARS:
                email, errors["email"] = None, "That email address is too long."
    for name, required in (("keywords", True), ("exclude", False)):
        problem = _keyword_error(
            values[name], field="keywords" if name == "keywords" else "exclude", required=required
        )
        if problem:
            errors[name] = problem
    frequency = values["frequency"]
    if frequency not in subscriptions.FREQUENCIES:
        errors["frequency"] = "Choose daily or weekly."
    weekday = _int_field(values["weekday"] or "0", 0, 6)
    if weekday is None:
        errors["weekday"] = "Choose a day of the week."
    send_hour = _int_field(values["send_hour"], 0, 23)
    if send_hour is None:
        errors["send_hour"] = "Choose an hour from 0 to 23."
    zone = values["timezone"].strip()
    if len(zone) > MAX_TIMEZONE_CHARS or zone not in zones:
        errors["timezone"] = "Choose a time zone from the list."
    max_papers = _int_field(values["max_papers"], 1, MAX_PAPERS)
    if max_papers is None:
        errors["max_papers"] = f"Choose from 1 to {MAX_PAPERS} papers."
    if errors:
        return FormResult(values=values, errors=errors)
    assert weekday is not None and send_hour is not None and max_papers is not None
    try:
        interests = subscriptions.make_interests(
            values["keywords"],
            exclude=values["exclude"],
            frequency=frequency,
            weekday=weekday,
            send_hour=send_hour,
            timezone=zone,
            max_papers=max_papers,
        )
    except SubscriberError as e:  # checked above already: a backstop, not a path
        return FormResult(values=values, errors={e.field or "form": _sentence(str(e))})
    return FormResult(values=values, errors={}, email=email, interests=interests)


def _form_values(row: Subscriber) -> dict[str, str]:
    return {
        "email": row.email,
        "keywords": ", ".join(row.keywords),
        "exclude": ", ".join(row.exclude),
        "frequency": row.frequency,
        "weekday": str(row.weekday),
        "send_hour": str(row.send_hour),
        "timezone": row.timezone,
        "max_papers": str(row.max_papers),
    }


def timezone_names() -> tuple[frozenset[str], tuple[str, ...]]:
    """(the zones accepted, the zones the form lists): legacy aliases are accepted, not listed."""
    every = frozenset(available_timezones()) | {"UTC"}
    listed = sorted(z for z in every if "/" in z and not z.startswith(_TIMEZONE_LIST_SKIP))
    return every, ("UTC", *listed)


# ---------------------------------------------------------------------------------------------
# the database side of each page


class LinkError(DigestError):
    """A link whose token is bad, expired or revoked; ``status`` is the HTTP answer."""

    def __init__(self, message: str, *, status: int, title: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title


def subscriber_for(engine: Engine, secret: str, purpose: Purpose, token: str) -> Subscriber:
    """The subscriber a token names, or LinkError when it is bad, expired or revoked."""
    return read_link(engine, secret, purpose, token)[0]


def read_link(engine: Engine, secret: str, purpose: Purpose, token: str) -> tuple[Subscriber, bool]:
    """The subscriber a token names and whether the token is at their current token version
    (only an unsubscribe link may be older: subscriptions.link_holds); LinkError when it is
    bad, expired or revoked."""
    try:
        subscriber_id, version = read_token(secret, purpose, token)
    except TokenError as e:
        if isinstance(e.__cause__, SignatureExpired):
            raise LinkError(
                "Subscribe again from the home page to get a fresh one.",
                status=410,
                title="This link has expired",
            ) from e
        raise LinkError(
            "It may have been cut short or changed: copy the whole link from the mail.",
            status=400,
            title="This link is not valid",
        ) from e
    row = subscriptions.by_id(engine, subscriber_id)
    if row is None:
        raise LinkError(
            "It may have been cut short or changed: copy the whole link from the mail.",
            status=400,
            title="This link is not valid",
        )
    if not subscriptions.link_holds(purpose, row, version):
        raise LinkError(
            "It has been revoked. Use the links in your most recent digest.",
            status=410,
            title="This link is no longer valid",
        )
    return row, version == row.token_version


# ---------------------------------------------------------------------------------------------
# papers: the current edition, its ranking, the archive


@dataclasses.dataclass(frozen=True, kw_only=True)
class PaperView:
    """A paper as the pages and the ranking API show it."""

    key: str
    title: str
    url: str
    authors: str
    upvotes: int | None
    reason: str = ""


def _paper_url(paper: Paper) -> str:
    for candidate in (paper.url, paper.pdf_url):
        if candidate and urlsplit(candidate).scheme in ("http", "https"):
            return candidate
    return ""


def paper_view(paper: Paper, reason: str = "") -> PaperView:
    """What a page shows of a paper (only http(s) links survive)."""
    return PaperView(
        key=paper.key,
        title=" ".join(paper.title.split())[:300] or "Untitled",
        url=_paper_url(paper),
        authors=short_authors(paper.authors),
        upvotes=paper.upvotes if isinstance(paper.upvotes, int) and paper.upvotes >= 0 else None,
        reason=reason,
    )


def _popularity(paper: Paper) -> tuple[int, int, float]:
    seen = paper.first_seen_at.timestamp() if paper.first_seen_at else 0.0
    return (-(paper.upvotes or 0), -(paper.comments or 0), -seen)


@dataclasses.dataclass
class _EditionIndex:
    edition: editions.Edition
    papers: dict[str, Paper]
    built: float
    index: Index | None = None  # built at the first ranking: the home page needs none
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    # what recent keyword lists picked: the live list asks the same few again and again
    results: OrderedDict[tuple[tuple[str, ...], tuple[str, ...], int], list[PaperView]] = (
        dataclasses.field(default_factory=OrderedDict)
    )


class EditionRanker:
    """The current edition's papers and ranking index, rebuilt every few minutes.

    Rebuilding also drops the index's cache of compiled keywords, which the public ranking
    API would otherwise grow without bound. Each index keeps the picks of the last
    ``RANK_RESULTS_CACHED`` keyword lists, so a list asked for again costs no ranking.
    """

    def __init__(
        self, engine: Engine, settings: Settings, *, max_age: float = RANK_CACHE_SECONDS
    ) -> None:
        self.engine, self.settings, self.max_age = engine, settings, max_age
        self._current: _EditionIndex | None = None
        self._lock = threading.Lock()

    def get(self, now: datetime) -> _EditionIndex:
        """The index of the daily edition ``now`` falls in."""
        ed = editions.current(now, self.settings.zone)
        with self._lock:
            cur = self._current
            if (
                cur is None
                or cur.edition.id != ed.id
                or time.monotonic() - cur.built > self.max_age
            ):
                papers = edition_papers(self.engine, self.settings, ed)
                cur = _EditionIndex(
                    edition=ed,
                    papers={p.key: p for p in papers},
                    built=time.monotonic(),
                )
                self._current = cur
            return cur

    def top(
        self, now: datetime, limit: int = TOP_PAPERS
    ) -> tuple[editions.Edition, list[PaperView]]:
        """The edition's most upvoted papers, newest first among equals."""
        cur = self.get(now)
        best = sorted(cur.papers.values(), key=_popularity)[:limit]
        return cur.edition, [paper_view(p) for p in best]

    def rank(
        self, now: datetime, keywords: Sequence[str], exclude: Sequence[str], limit: int
    ) -> tuple[editions.Edition, int, list[PaperView]]:
        """(edition, papers in it, what these keywords would pick from it)."""
        cur = self.get(now)
        if not keywords:
            return cur.edition, len(cur.papers), []
        key = (tuple(keywords), tuple(exclude), limit)
        with cur.lock:  # the index fills its keyword caches as it ranks and explains
            views = cur.results.get(key)
            if views is not None:
                cur.results.move_to_end(key)
            else:
                if cur.index is None:
                    cur.index = Index.build([doc_of(p) for p in cur.papers.values()])
                profile = Profile(id=0, keywords=key[0], exclude=key[1], limit=limit)
                [(_, ranked)] = list(cur.index.rank([profile]))
                views = [paper_view(cur.papers[r.key], r.reason()) for r in ranked]
                cur.results[key] = views
                if len(cur.results) > RANK_RESULTS_CACHED:
                    cur.results.popitem(last=False)
        return cur.edition, len(cur.papers), list(views)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PaperCard(PaperView):
    """A paper as an archive card shows it: a short text and its links besides the title's."""

    summary: str  # the paper's TL;DR when it has one, else the start of its abstract
    tldr: bool
    links: tuple[tuple[str, str], ...]  # (label, http(s) URL): the PDF, the code


def paper_card(paper: Paper, *, tldr: str = "") -> PaperCard:
    """What an archive card shows of a paper; ``tldr``, the paper's one-line summary where it
    has one, stands in for the start of its abstract."""
    view = paper_view(paper)
    short = one_line(tldr, ARCHIVE_SUMMARY_CHARS)
    links = (("PDF", safe_url(paper.pdf_url or "")), ("Code", safe_url(paper.code_url or "")))
    return PaperCard(
        **dataclasses.asdict(view),
        summary=short or one_line(paper.abstract, ARCHIVE_SUMMARY_CHARS),
        tldr=bool(short),
        links=tuple((label, url) for label, url in links if url and url != view.url),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArchiveDay:
    """One day of the archive: the papers first seen that day, the most popular first."""

    day: date
    label: str
    count: int
    papers: tuple[PaperCard, ...]
    updated: datetime


def archive_days(
    engine: Engine, zone: ZoneInfo, *, before: date, days: int = ARCHIVE_DAYS
) -> tuple[list[ArchiveDay], date | None]:
    """The archive's days up to ``before`` (inclusive), newest first, and the next older page."""
    end = datetime.combine(before + timedelta(days=1), datetime.min.time(), tzinfo=zone).astimezone(
        UTC
    )
    start = end - timedelta(days=days)
    with Session(engine) as session:
        rows = list(
            session.exec(
                select(Paper).where(Paper.first_seen_at >= start, Paper.first_seen_at < end)
            ).all()
        )
        older = session.exec(
            select(Paper.first_seen_at)
            .where(Paper.first_seen_at < start)
            .order_by(col(Paper.first_seen_at).desc())
            .limit(1)
        ).first()
    by_day: dict[date, list[Paper]] = {}
    for p in rows:
        by_day.setdefault(p.first_seen_at.astimezone(zone).date(), []).append(p)
    out = []
    for day in sorted(by_day, reverse=True):
        papers = sorted(by_day[day], key=_popularity)
        ed = editions.daily(day, zone)
        out.append(
            ArchiveDay(
                day=day,
                label=ed.label,
                count=len(papers),
                papers=tuple(paper_card(p) for p in papers[:ARCHIVE_PER_DAY]),
                updated=max(p.first_seen_at for p in papers),
            )
        )
    return out, (older.astimezone(zone).date() if older is not None else None)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def atom_feed(
    settings: Settings,
    days: Sequence[ArchiveDay],
    content: Callable[[ArchiveDay], str],
    *,
    now: datetime,
) -> bytes:
    """The archive as an Atom feed, one entry per day; ElementTree keeps it well-formed."""
    ns = "http://www.w3.org/2005/Atom"
    base = settings.site.base_url.rstrip("/")
    feed = ET.Element("feed", {"xmlns": ns})
    ET.SubElement(feed, "title").text = f"{settings.site.name}: papers of the day"
    ET.SubElement(feed, "id").text = f"{base}/archive.atom"
    ET.SubElement(feed, "updated").text = _iso(max((d.updated for d in days), default=now))
    ET.SubElement(
        feed,
        "link",
        {"rel": "self", "href": f"{base}/archive.atom", "type": "application/atom+xml"},
    )
    ET.SubElement(
        feed, "link", {"rel": "alternate", "href": f"{base}/archive", "type": "text/html"}
    )
    ET.SubElement(ET.SubElement(feed, "author"), "name").text = settings.site.name
    ET.SubElement(feed, "generator").text = "digest"
    for d in days:
        entry = ET.SubElement(feed, "entry")
        ET.SubElement(
            entry, "title"
        ).text = f"{d.label}: {d.count} new paper{'s' if d.count != 1 else ''}"
        ET.SubElement(entry, "id").text = f"{base}/archive#{d.day.isoformat()}"
        ET.SubElement(entry, "updated").text = _iso(d.updated)
        ET.SubElement(
            entry,
            "link",
            {
                "rel": "alternate",
                "type": "text/html",
                "href": f"{base}/archive?before={d.day.isoformat()}#{d.day.isoformat()}",
            },
        )
        ET.SubElement(entry, "content", {"type": "html"}).text = content(d)
    body: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + body


# ---------------------------------------------------------------------------------------------
# the app


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir() / "web")),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html.j2", "xml.j2"), default_for_string=True, default=False
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )


def _static_version(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*")):
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


class WebApp:
    """The pages, bound to one configuration and database; :func:`create_app` wires it up."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        renderer: Renderer,
        clock: Callable[[], datetime],
        mailroom: Mailroom | None = None,
    ) -> None:
        if not settings.secret_key:
            raise ValueError("the web app needs a signing secret (see config.ensure_secret)")
        self.settings = settings
        self.engine = engine
        self.renderer = renderer
        self.clock = clock
        self.mailroom: Mailroom = mailroom or mailroom_for(settings)
        self.ranker = EditionRanker(engine, settings)
        self.env = _environment()
        self.static_dir = templates_dir() / "web" / "static"
        self.static_version = _static_version(self.static_dir)
        self.zones, self.zone_list = timezone_names()
        self.default_zone = (
            settings.digest.timezone if settings.digest.timezone in self.zones else "UTC"
        )
        self._csrf = URLSafeTimedSerializer(settings.secret_key, salt="digest.csrf")
        self.rank_limiter = ClientRateLimiter(settings.web.rank_per_client_per_minute)

    # rendering

    def page(
        self,
        request: Request,
        name: str,
        *,
        status: int = 200,
        private: bool = False,
        **values: Any,
    ) -> HTMLResponse:
        """A rendered page; forms get a CSRF token (and its cookie, when the browser has none)."""
        token, new_cookie = self._csrf_token(request)
        html = self.env.get_template(name).render(
            site_name=self.settings.site.name,
            root=request.scope.get("root_path", "").rstrip("/"),
            static_version=self.static_version,
            csrf_field=CSRF_FIELD,
            csrf=token,
            weekdays=WEEKDAYS,
            **values,
        )
        response = HTMLResponse(html, status_code=status)
        if private:
            response.headers["cache-control"] = "no-store"
            response.headers["x-robots-tag"] = "noindex, nofollow"
        if new_cookie is not None:
            response.set_cookie(
                self._csrf_cookie(request),
                new_cookie,
                max_age=CSRF_MAX_AGE,
                path=request.scope.get("root_path", "") or "/",
                secure=request.url.scheme == "https",
                httponly=True,
                samesite="lax",
            )
        return response

    def error_page(self, request: Request, status: int, title: str, message: str) -> HTMLResponse:
        """A clear error page with the right status."""
        return self.page(
            request, "error.html.j2", status=status, private=True, title=title, message=message
        )

    def too_large(self) -> Response:
        """The 413 answer of the body limit (no request object there: a bare page)."""
        html = self.env.get_template("error.html.j2").render(
            site_name=self.settings.site.name,
            root="",
            static_version=self.static_version,
            title="That was too much",
            message=f"The form was larger than {self.settings.web.max_body_bytes // 1024} KiB. "
            "Shorten your keywords and try again.",
        )
        return HTMLResponse(html, status_code=413)

    def form_page(
        self,
        request: Request,
        name: str,
        *,
        values: Mapping[str, str],
        errors: Mapping[str, str] | None = None,
        status: int = 200,
        private: bool = False,
        **extra: Any,
    ) -> HTMLResponse:
        """A page with the subscribe/preferences fields, refilled with ``values``."""
        zone_list = self.zone_list
        if (
            values.get("timezone")
            and values["timezone"] in self.zones
            and values["timezone"] not in zone_list
        ):
            zone_list = (values["timezone"], *zone_list)
        return self.page(
            request,
            name,
            status=status,
            private=private,
            values=values,
            errors=errors or {},
            zones=zone_list,
            max_papers_choice=MAX_PAPERS,
            max_keyword_list_chars=MAX_KEYWORD_LIST_CHARS,
            **extra,
        )

    # CSRF: a random cookie, and a signed copy of it in every form

    def _csrf_cookie(self, request: Request) -> str:
        return (
            "__Host-digest_csrf"
            if request.url.scheme == "https" and not request.scope.get("root_path")
            else "digest_csrf"
        )

    def _csrf_token(self, request: Request) -> tuple[str, str | None]:
        cookie = request.cookies.get(self._csrf_cookie(request), "")
        new = None
        if not _COOKIE_VALUE.fullmatch(cookie):
            cookie = new = secrets.token_urlsafe(32)
        return str(self._csrf.dumps(cookie)), new

    def csrf_ok(self, request: Request, form: Mapping[str, str]) -> bool:
        """True when the form's token is a fresh signature of this browser's CSRF cookie."""
        cookie = request.cookies.get(self._csrf_cookie(request), "")
        field = form.get(CSRF_FIELD, "")
        if not _COOKIE_VALUE.fullmatch(cookie) or not field or len(field) > 300:
            return False
        try:
            value = self._csrf.loads(field, max_age=CSRF_MAX_AGE)
        except BadSignature:
            return False
        return isinstance(value, str) and hmac.compare_digest(value, cookie)

    async def read_form(self, request: Request) -> dict[str, str]:
        """The text fields of a urlencoded or multipart form (the first of repeated names)."""
        async with request.form(max_files=0, max_fields=MAX_FORM_FIELDS) as form:
            out: dict[str, str] = {}
            for key, value in form.multi_items():
                if isinstance(value, str) and key not in out:
                    out[key] = value
            return out

    def _defaults(self) -> dict[str, str]:
        return {
            "email": "",
            "keywords": "",
            "exclude": "",
            "frequency": "daily",
            "weekday": "0",
            "send_hour": "7",
            "timezone": self.default_zone,
            "max_papers": str(self.settings.digest.max_papers),
        }

    # pages

    def index(self, request: Request) -> Response:
        """The subscribe form and today's top papers."""
        edition, top = self.ranker.top(self.clock())
        return self.form_page(
            request,
            "index.html.j2",
            values=self._defaults(),
            edition=edition,
            top=top,
            autodetect=True,
        )

    async def subscribe_post(self, request: Request) -> Response:
        """Validate the form, record a pending subscription, mail a confirmation link."""
        form = await self.read_form(request)
        if not self.csrf_ok(request, form):
            edition, top = await run_in_threadpool(self.ranker.top, self.clock())
            return self.form_page(
                request,
                "index.html.j2",
                status=403,
                values={k: form.get(k, v) for k, v in self._defaults().items()},
                errors={"form": "The form had expired. Please check it and send it again."},
                edition=edition,
                top=top,
                autodetect=False,
            )
        result = read_form(form, zones=self.zones, with_email=True)
        if result.errors or result.email is None or result.interests is None:
            edition, top = await run_in_threadpool(self.ranker.top, self.clock())
            return self.form_page(
                request,
                "index.html.j2",
                status=422,
                values=result.values,
                errors=result.errors,
                edition=edition,
                top=top,
                autodetect=False,
            )
        now = self.clock()
        try:
            outgoing = await run_in_threadpool(
                subscriptions.request,
                self.engine,
                result.email,
                result.interests,
                now=now,
                interval_seconds=self.settings.web.confirm_interval_seconds,
                origin=self.origin(request),
            )
        except TooManyRequests as e:
            log.warning("subscribe request refused: %s", e)
            return await self.too_many(request, e, values=result.values)
        response = self.page(
            request,
            "check_inbox.html.j2",
            email=result.email,
            interval_minutes=max(1, round(self.settings.web.confirm_interval_seconds / 60)),
        )
        if outgoing is not None:
            # After the response: its timing must not tell a new address from a known one.
            response.background = BackgroundTask(self.send_outgoing, outgoing)
        return response

    def origin(self, request: Request) -> Origin:
        """Where a subscribe request comes from: the client uvicorn names (behind a proxy, the
        one X-Forwarded-For names, from [web] forwarded_allow_ips), and its caps."""
        web = self.settings.web
        return Origin(
            channel="web",
            key=subscriptions.client_origin(request.client.host if request.client else None),
            per_hour=web.subscribe_per_client_per_hour,
            total_per_hour=web.subscribe_per_hour,
        )

    async def too_many(
        self, request: Request, e: TooManyRequests, *, values: Mapping[str, str]
    ) -> Response:
        """429: the form again, as it was typed, saying when to try again."""
        minutes = max(1, math.ceil(e.retry_after / 60))
        when = f"{minutes} minute{'' if minutes == 1 else 's'}"
        who = "from your network " if e.scope == "origin" else ""
        edition, top = await run_in_threadpool(self.ranker.top, self.clock())
        response = self.form_page(
            request,
            "index.html.j2",
            status=429,
            values=values,
            errors={
                "form": f"Too many subscription requests have come {who}in the last hour, so "
                f"this one was not sent. Please try again in about {when}."
            },
            edition=edition,
            top=top,
            autodetect=False,
        )
        response.headers["retry-after"] = str(e.retry_after)
        return response

    def send_outgoing(self, outgoing: Outgoing) -> None:
        """Build and send the mail a subscribe request earned; on failure give its slot back."""
        row = subscriptions.by_id(self.engine, outgoing.subscriber_id)
        if row is None:
            return
        now = self.clock()
        try:
            if outgoing.kind == "confirm":
                data = confirmation_message(self.settings, self.renderer, row, now=now)
            else:
                data = self.already_subscribed_message(row, now=now)
            self.mailroom.send(Envelope(self.settings.smtp.from_address, row.email), data)
        except (SendError, ValueError) as e:
            log.error("could not send the %s mail to %s: %s", outgoing.kind, row.email, e)
            subscriptions.release_mail_slot(self.engine, outgoing)
        else:
            log.info("sent the %s mail to %s", outgoing.kind, row.email)

    def already_subscribed_message(self, row: Subscriber, *, now: datetime) -> bytes:
        """The mail an active reader gets when someone subscribes their address again."""
        links = links_for(self.settings, row, None)
        values = {
            "site_name": self.settings.site.name,
            "base_url": self.settings.site.base_url,
            "recipient": row.email,
            "preferences_url": links.preferences,
            "unsubscribe_url": links.unsubscribe,
        }
        subject = f"You are already subscribed to {self.settings.site.name}"
        text_body = self.env.get_template("mail/already_subscribed.txt.j2").render(values)
        html = self.env.get_template("mail/already_subscribed.html.j2").render(values)
        return _message(self.settings, row, subject, text_body, html, now=now)

    def _link_error(self, request: Request, e: LinkError) -> HTMLResponse:
        return self.error_page(request, e.status, e.title, str(e))

    def _revoked(self, request: Request) -> HTMLResponse:
        """The answer to a link revoked between its page and the POST: nothing was changed."""
        return self.error_page(request, 410, "This link is no longer valid", "It was revoked.")

    def _subscribed(self, request: Request, row: Subscriber) -> HTMLResponse:
        """The page of an active subscription: when it comes, and the preferences link."""
        links = links_for(self.settings, row, None)
        return self.page(
            request,
            "confirmed.html.j2",
            private=True,
            subscriber=row,
            preferences_url=_path_of(links.preferences),
            schedule=_schedule(row),
        )

    def _ended(self, request: Request) -> HTMLResponse:
        return self.error_page(
            request,
            410,
            "This subscription has ended",
            "This address was unsubscribed after the link was sent. To get digests again, "
            "subscribe from the home page.",
        )

    async def confirm(self, request: Request) -> Response:
        """GET: a page with a button (changes nothing: mail scanners open links); POST:
        activate the pending subscription. The signed token is the POST's authority."""
        try:
            row = await run_in_threadpool(
                subscriber_for,
                self.engine,
                self.settings.secret_key,
                "confirm",
                request.path_params["token"],
            )
        except LinkError as e:
            return self._link_error(request, e)
        if request.method == "POST":
            status = await run_in_threadpool(
                subscriptions.confirm, self.engine, row, now=self.clock()
            )
            if status == "pending":  # revoked between the page and the POST
                return self._revoked(request)
            if status != "active":
                return self._ended(request)
            fresh = await run_in_threadpool(subscriptions.by_id, self.engine, row.id or 0) or row
            return self._subscribed(request, fresh)
        if row.status == "active":
            return self._subscribed(request, row)
        if row.status != "pending":
            return self._ended(request)
        return self.page(
            request,
            "confirm.html.j2",
            private=True,
            kind="confirm",
            subscriber=row,
            schedule=_schedule(row),
        )

    async def resubscribe(self, request: Request) -> Response:
        """The come-back link of the notice a mail unsubscribe earns. GET: a page with a button
        (changes nothing); POST: the reader is active again, as before."""
        try:
            row = await run_in_threadpool(
                subscriber_for,
                self.engine,
                self.settings.secret_key,
                "resubscribe",
                request.path_params["token"],
            )
        except LinkError as e:
            return self._link_error(request, e)
        if row.status == "unsubscribed" and request.method == "POST":
            status = await run_in_threadpool(
                subscriptions.resubscribe, self.engine, row, now=self.clock()
            )
            if status == "unsubscribed":  # revoked between the page and the POST
                return self._revoked(request)
            back = await run_in_threadpool(subscriptions.by_id, self.engine, row.id or 0)
            row = back or row
        if row.status == "active":
            return self._subscribed(request, row)
        if row.status != "unsubscribed":
            return self.error_page(
                request,
                410,
                "This link cannot bring the subscription back",
                "The subscription has changed since the link was sent. To get digests, "
                "subscribe from the home page.",
            )
        return self.page(
            request,
            "confirm.html.j2",
            private=True,
            kind="resubscribe",
            subscriber=row,
            schedule=_schedule(row),
        )

    async def preferences(self, request: Request) -> Response:
        """GET: the prefilled form; POST: save it (CSRF-protected)."""
        token = request.path_params["token"]
        form = await self.read_form(request) if request.method == "POST" else None
        try:
            row = await run_in_threadpool(
                subscriber_for, self.engine, self.settings.secret_key, "preferences", token
            )
        except LinkError as e:
            return self._link_error(request, e)
        values = _form_values(row)
        errors: dict[str, str] = {}
        status = 200
        saved = request.query_params.get("saved") == "1"
        if form is not None:
            if not self.csrf_ok(request, form):
                errors = {
                    "form": "The form had expired. Your changes were not saved: send it again."
                }
                values = {
                    **values,
                    **{k: v for k, v in form.items() if k in values and k != "email"},
                }
                status = 403
            else:
                result = read_form(form, zones=self.zones, with_email=False)
                if result.errors or result.interests is None:
                    values, errors, status = (
                        {**result.values, "email": row.email},
                        result.errors,
                        422,
                    )
                else:
                    try:
                        await run_in_threadpool(
                            subscriptions.save_preferences,
                            self.engine,
                            row,
                            result.interests,
                            now=self.clock(),
                        )
                    except SubscriberError:
                        return self._revoked(request)
                    return RedirectResponse(f"{request.url.path}?saved=1", status_code=303)
        keywords = parse_keywords(values["keywords"]) if "keywords" not in errors else ()
        exclude = parse_keywords(values["exclude"]) if "exclude" not in errors else ()
        limit = _int_field(values["max_papers"], 1, MAX_PAPERS) or RANK_LIMIT_DEFAULT
        edition, total, picks = await run_in_threadpool(
            self.ranker.rank, self.clock(), keywords, exclude, limit
        )
        return self.form_page(
            request,
            "preferences.html.j2",
            status=status,
            private=True,
            values=values,
            errors=errors,
            subscriber=row,
            saved=saved and form is None,
            edition=edition,
            total=total,
            picks=picks,
            autodetect=False,
            unsubscribe_url=_path_of(links_for(self.settings, row, None).unsubscribe),
        )

    async def unsubscribe(self, request: Request) -> Response:
        """GET: a page with a button (changes nothing); POST: unsubscribe (form or RFC 8058).

        A link from before a revocation still unsubscribes, but its pages show neither the
        address nor a link to the preferences: it may be in other hands now.
        """
        token = request.path_params["token"]
        one_click = False
        form: dict[str, str] = {}
        if request.method == "POST":
            body = await request.body()
            one_click = body.strip() == b"List-Unsubscribe=One-Click"
            if not one_click:
                form = await self.read_form(request)
                one_click = form.get(ONE_CLICK[0]) == ONE_CLICK[1]
        try:
            row, current = await run_in_threadpool(
                read_link, self.engine, self.settings.secret_key, "unsubscribe", token
            )
        except LinkError as e:
            return self._link_error(request, e)
        if request.method == "POST":
            if not one_click and not self.csrf_ok(request, form):
                return self.error_page(
                    request,
                    403,
                    "Please try again",
                    "The page had expired, so nothing was changed. Go back, reload the page and "
                    "press the button again.",
                )
            try:
                await run_in_threadpool(
                    subscriptions.unsubscribe, self.engine, row, now=self.clock()
                )
            except SubscriberError:  # the subscriber is gone
                return self._revoked(request)
            return self.page(
                request, "unsubscribed.html.j2", private=True, subscriber=row, current=current
            )
        if row.status == "unsubscribed":
            return self.page(
                request, "unsubscribed.html.j2", private=True, subscriber=row, current=current
            )
        preferences_url = (
            _path_of(links_for(self.settings, row, None).preferences) if current else None
        )
        return self.page(
            request,
            "unsubscribe.html.j2",
            private=True,
            subscriber=row,
            current=current,
            preferences_url=preferences_url,
        )

    def view_digest(self, request: Request) -> Response:
        """A sent digest, re-rendered from the papers its delivery recorded."""
        edition_id = request.path_params["edition"]
        try:
            row = subscriber_for(
                self.engine, self.settings.secret_key, "view", request.path_params["token"]
            )
        except LinkError as e:
            return self._link_error(request, e)
        not_found = (
            404,
            "No such digest",
            "There is no digest of this edition for you: it may not have been sent yet.",
        )
        if not _EDITION_ID.fullmatch(edition_id):
            return self.error_page(request, *not_found)
        try:
            ed = editions.parse(edition_id, self.settings.zone)
        except ValueError:
            return self.error_page(request, *not_found)
        with Session(self.engine) as session:
            delivery = session.exec(
                select(Delivery).where(
                    Delivery.subscriber_id == (row.id or 0),
                    Delivery.edition == ed.id,
                    Delivery.status == "sent",
                )
            ).first()
            keys = list(delivery.paper_keys) if delivery is not None else []
            found = (
                {
                    p.key: p
                    for p in session.exec(select(Paper).where(col(Paper.key).in_(keys))).all()
                }
                if keys
                else {}
            )
        if delivery is None:
            return self.error_page(request, *not_found)
        papers = {k: found[k] for k in keys if k in found}
        html = self.renderer.render_digest(
            context_for(
                self.settings,
                subscriber=row,
                edition=ed,
                ranked=_as_sent(row, papers),
                papers=papers,
                links=links_for(self.settings, row, ed.id),
            )
        ).html
        response = HTMLResponse(html)
        response.headers["content-security-policy"] = DIGEST_CSP
        response.headers["cache-control"] = "no-store"
        response.headers["x-robots-tag"] = "noindex, nofollow"
        return response

    def _archive_before(self, request: Request) -> date | None:
        today = self.clock().astimezone(self.settings.zone).date()
        raw = request.query_params.get("before")
        if raw is None:
            return today
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            return None
        try:
            return min(date.fromisoformat(raw), today)
        except ValueError:
            return None

    def archive(self, request: Request) -> Response:
        """The public list of past days with their most popular papers."""
        before = self._archive_before(request)
        if before is None:
            return self.error_page(request, 400, "Not a date", "Use ?before=YYYY-MM-DD.")
        days, older = archive_days(self.engine, self.settings.zone, before=before)
        next_before = None
        if older is not None:
            next_before = min(older, before - timedelta(days=ARCHIVE_DAYS))
        return self.page(request, "archive.html.j2", days=days, older=next_before)

    def feed(self, request: Request) -> Response:
        """What the archive's Atom feed is, and its address to copy into a feed reader."""
        return self.page(
            request,
            "feed.html.j2",
            feed_url=f"{self.settings.site.base_url.rstrip('/')}/archive.atom",
            days=ARCHIVE_DAYS,
            per_day=ARCHIVE_PER_DAY,
        )

    def archive_atom(self, request: Request) -> Response:
        """The archive as an Atom feed."""
        now = self.clock()
        days, _ = archive_days(
            self.engine, self.settings.zone, before=now.astimezone(self.settings.zone).date()
        )
        template = self.env.get_template("archive_entry.html.j2")
        body = atom_feed(self.settings, days, lambda d: template.render(day=d), now=now)
        return Response(body, media_type="application/atom+xml; charset=utf-8")

    def api_rank(self, request: Request) -> Response:
        """JSON: what these keywords would pick from the current edition; 429 past the
        client's share ([web] rank_per_client_per_minute)."""
        client = subscriptions.client_origin(request.client.host if request.client else None)
        wait = self.rank_limiter.take(client, time.monotonic())
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            return JSONResponse(
                {"error": f"too many requests: try again in {seconds} s"},
                status_code=429,
                headers={"retry-after": str(seconds), "cache-control": "no-store"},
            )
        raw_keywords = request.query_params.get("keywords", "")
        raw_exclude = request.query_params.get("exclude", "")
        fields: tuple[tuple[subscriptions.KeywordField, str], ...] = (
            ("keywords", raw_keywords),
            ("exclude", raw_exclude),
        )
        for name, raw in fields:
            problem = _keyword_error(raw, field=name, required=False)
            if problem:
                return JSONResponse({"error": f"{name}: {problem}"}, status_code=400)
        limit = _int_field(
            request.query_params.get("limit", str(RANK_LIMIT_DEFAULT)), 1, MAX_PAPERS
        )
        if limit is None:
            return JSONResponse({"error": f"limit: 1 to {MAX_PAPERS}"}, status_code=400)
        keywords = parse_keywords(raw_keywords)
        edition, total, picks = self.ranker.rank(
            self.clock(), keywords, parse_keywords(raw_exclude), limit
        )
        return JSONResponse(
            {
                "edition": edition.id,
                "label": edition.label,
                "total": total,
                "keywords": list(keywords),
                "papers": [dataclasses.asdict(p) for p in picks],
            },
            headers={"cache-control": "no-store"},
        )

    def healthz(self, request: Request) -> Response:
        """200 when the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as e:
            log.error("health check: database: %s", e)
            return JSONResponse({"status": "error", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok"}, headers={"cache-control": "no-store"})

    def robots(self, request: Request) -> Response:
        """Keep crawlers off the personal pages."""
        lines = [
            "User-agent: *",
            *(
                f"Disallow: {p}/"
                for p in (
                    "/confirm",
                    "/resubscribe",
                    "/preferences",
                    "/unsubscribe",
                    "/digest",
                    "/api",
                )
            ),
        ]
        return PlainTextResponse("\n".join(lines) + "\n")

    def favicon(self, request: Request) -> Response:
        """Browsers ask for /favicon.ico; the icon is an SVG among the static files."""
        root = request.scope.get("root_path", "").rstrip("/")
        return RedirectResponse(f"{root}/static/favicon.svg", status_code=301)

    def subscribe_get(self, request: Request) -> Response:
        """The form lives on the home page."""
        return RedirectResponse(
            f"{request.scope.get('root_path', '').rstrip('/')}/", status_code=303
        )

    async def http_error(self, request: Request, exc: Exception) -> Response:
        """Starlette's HTTP errors (404, 405, a malformed form) as pages."""
        assert isinstance(exc, HTTPException)
        titles = {404: "Page not found", 405: "Not allowed", 400: "Bad request"}
        messages = {
            404: "There is nothing at this address.",
            405: "This page does not take that kind of request.",
        }
        return self.error_page(
            request,
            exc.status_code,
            titles.get(exc.status_code, "Something went wrong"),
            messages.get(exc.status_code, "The request could not be handled."),
        )

    async def server_error(self, request: Request, exc: Exception) -> Response:
        """A plain 500 page: the details go to the log, never to the visitor."""
        return self.error_page(
            request, 500, "Something went wrong", "Please try again in a moment."
        )

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Run the embedded SMTP sink (when no relay is configured) for the app's lifetime."""
        await run_in_threadpool(self.mailroom.start)
        try:
            yield
        finally:
            await run_in_threadpool(self.mailroom.stop)


def _path_of(url: str) -> str:
    """The path of one of our absolute links, so pages work whatever host they are served as."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _schedule(row: Subscriber) -> str:
    when = f"{row.send_hour:02d}:00 ({row.timezone})"
    if row.frequency == "weekly":
        return f"every {WEEKDAYS[row.weekday % 7]} around {when}"
    return f"every day around {when}"


def _as_sent(row: Subscriber, papers: Mapping[str, Paper]) -> list[Ranked]:
    """The sent papers in their sent order, explained by the reader's keywords as they are now."""
    if not papers:
        return []
    index = Index.build([doc_of(p) for p in papers.values()])
    profile = dataclasses.replace(profile_of(row), limit=len(papers))
    [(_, ranked)] = list(index.rank([profile]))
    explained = {r.key: r for r in ranked}
    return [explained.get(key, Ranked(key=key, score=0.0, matches=())) for key in papers]


def create_app(
    settings: Settings,
    engine: Engine,
    *,
    renderer: Renderer | None = None,
    clock: Callable[[], datetime] = utcnow,
    mailroom: Mailroom | None = None,
) -> Starlette:
    """The web app for one configuration and database (``settings.secret_key`` must be set);
    its mail goes through ``mailroom``, else the settings' own (see mailroom_for)."""
    web = WebApp(
        settings,
        engine,
        renderer=renderer or Renderer.create(snippet_chars=settings.digest.snippet_chars),
        clock=clock,
        mailroom=mailroom,
    )
    routes = [
        Route("/", web.index, methods=["GET"]),
        Route("/subscribe", web.subscribe_post, methods=["POST"]),
        Route("/subscribe", web.subscribe_get, methods=["GET"]),
        Route("/confirm/{token}", web.confirm, methods=["GET", "POST"]),
        Route("/resubscribe/{token}", web.resubscribe, methods=["GET", "POST"]),
        Route("/preferences/{token}", web.preferences, methods=["GET", "POST"]),
        Route("/unsubscribe/{token}", web.unsubscribe, methods=["GET", "POST"]),
        Route("/digest/{token}/{edition}", web.view_digest, methods=["GET"]),
        Route("/archive", web.archive, methods=["GET"]),
        Route("/archive.atom", web.archive_atom, methods=["GET"]),
        Route("/feed", web.feed, methods=["GET"]),
        Route("/api/rank", web.api_rank, methods=["GET"]),
        Route("/healthz", web.healthz, methods=["GET"]),
        Route("/robots.txt", web.robots, methods=["GET"]),
        Route("/favicon.ico", web.favicon, methods=["GET"]),
        Mount("/static", StaticFiles(directory=web.static_dir), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeadersMiddleware),
            Middleware(
                BodyLimitMiddleware, max_bytes=settings.web.max_body_bytes, too_large=web.too_large
            ),
        ],
        exception_handlers={HTTPException: web.http_error, 500: web.server_error},
        lifespan=web.lifespan,
    )
    app.state.web = web
    return app
