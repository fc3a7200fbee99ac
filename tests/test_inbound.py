"""Email commands end to end: a real SMTP client (smtplib) talks to the inbound server on a free
loopback port, and its replies arrive at a real aiosmtpd server configured as the relay."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from digest import subscriptions
from digest.config import Settings, load_settings
from digest.db import make_engine
from digest.errors import ConfigError
from digest.inbound import (
    MAX_BODY_LINES,
    MAX_COMMANDS,
    Command,
    InboundServer,
    ReplyLimiter,
    create_server,
    read_commands,
    wanted_changes,
)
from digest.models import Subscriber
from digest.sink import free_port
from digest.web import create_app

with warnings.catch_warnings():
    # Starlette 1.x asks for the httpx2 fork; the TestClient works the same with httpx.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

BASE = "https://digest.example.org"
NOW = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
COMMANDS = "digest@localhost"
SUBSCRIBE = "subscribe@localhost"
UNSUBSCRIBE = "unsubscribe@localhost"
ADA = "ada@example.org"


class Clock:
    """A settable clock for the server (the confirmation interval and the reply limit)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def mail_settings(settings: Settings, smtp_server: Any) -> Settings:
    """The test settings: [smtp] is the recording aiosmtpd server, [inbound] on a free port."""
    controller, _ = smtp_server
    smtp = dataclasses.replace(
        settings.smtp, host="127.0.0.1", port=controller.port, security="none"
    )
    inbound = dataclasses.replace(settings.inbound, port=free_port())
    return dataclasses.replace(settings, smtp=smtp, inbound=inbound)


@pytest.fixture
def engine(mail_settings: Settings) -> Engine:
    return make_engine(mail_settings.database.url)


@pytest.fixture
def server(mail_settings: Settings, engine: Engine, clock: Clock) -> Iterator[InboundServer]:
    with create_server(mail_settings, engine, clock=clock) as running:
        yield running


@pytest.fixture
def inbox(smtp_server: Any) -> list[Any]:
    """The envelopes the relay has received: the replies."""
    return cast(list[Any], smtp_server[1].envelopes)


@pytest.fixture
def web_client(mail_settings: Settings, engine: Engine, clock: Clock) -> TestClient:
    """The web app, to follow the links in replies (no lifespan: nothing else runs)."""
    return TestClient(create_app(mail_settings, engine, clock=clock), base_url=BASE)


def compose(
    *,
    sender: str | None = ADA,
    to: str = COMMANDS,
    subject: str = "",
    body: str = "",
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """A mail as a mail client writes it."""
    msg = EmailMessage()
    if sender is not None:
        msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="example.org")
    for name, value in headers:
        msg[name] = value
    msg.set_content(body)
    return msg.as_bytes(policy=policy.SMTP)


def send(
    server: InboundServer,
    data: bytes,
    *,
    mail_from: str = ADA,
    to: Sequence[str] = (COMMANDS,),
) -> dict[str, tuple[int, bytes]]:
    """Hand one mail to the inbound server over SMTP and wait until it has been handled."""
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        refused = client.sendmail(mail_from, list(to), data)
    assert server.wait_idle(), "the inbound server did not finish the mail"
    return refused


def command(
    server: InboundServer, body: str = "", *, subject: str = "", sender: str = ADA, **kw: Any
) -> None:
    send(server, compose(sender=sender, subject=subject, body=body, **kw), mail_from=sender)


def replies(inbox: list[Any], to: str | None = None) -> list[EmailMessage]:
    return [
        message_from_bytes(e.original_content, policy=policy.default)
        for e in inbox
        if to is None or e.rcpt_tos == [to]
    ]


def text_of(msg: EmailMessage) -> str:
    body = msg.get_body(preferencelist=("plain",))
    assert body is not None
    return cast(str, body.get_content())


def html_of(msg: EmailMessage) -> str:
    body = msg.get_body(preferencelist=("html",))
    assert body is not None
    return cast(str, body.get_content())


def link_in(msg: EmailMessage, kind: str) -> str:
    found = re.search(rf"{re.escape(BASE)}/{kind}/\S+", text_of(msg))
    assert found, text_of(msg)
    return found.group(0)


def row(engine: Engine, email: str = ADA) -> Subscriber | None:
    with Session(engine) as session:
        return session.exec(select(Subscriber).where(Subscriber.email == email)).first()


def count_rows(engine: Engine) -> int:
    with Session(engine) as session:
        return len(session.exec(select(Subscriber)).all())


def active(engine: Engine, email: str = ADA, keywords: str = "llm inference") -> Subscriber:
    return subscriptions.add(engine, email, subscriptions.make_interests(keywords))


# ---------------------------------------------------------------------------------------------
# subscribing


def test_subscribe_by_mail_then_confirm_by_the_link(
    server: InboundServer, engine: Engine, inbox: list[Any], web_client: TestClient
) -> None:
    original = compose(
        subject="subscribe llm inference, quantization",
        body="exclude survey\nweekly friday\n\nThanks,\nAda\n-- \nAda Lovelace\n",
    )
    send(server, original)

    sub = row(engine)
    assert sub is not None and sub.status == "pending"
    assert sub.keywords == ["llm inference", "quantization"] and sub.exclude == ["survey"]
    assert (sub.frequency, sub.weekday) == ("weekly", 4)

    [reply] = replies(inbox)
    assert inbox[0].rcpt_tos == [ADA]
    assert reply["From"].addresses[0].addr_spec == COMMANDS
    assert reply["To"] == ADA
    assert reply["Auto-Submitted"] == "auto-replied"
    asked = message_from_bytes(original, policy=policy.default)["Message-ID"]
    assert reply["In-Reply-To"] == asked and asked in reply["References"]
    assert "Confirm your subscription" in reply["Subject"]
    # The reply says only what to click; the page behind the link shows what was asked for.
    assert "llm inference" not in text_of(reply) and "survey" not in text_of(reply)
    assert "List-Unsubscribe" not in reply  # a reply, not list mail

    link = urlsplit(link_in(reply, "confirm")).path
    page = web_client.get(link)
    assert page.status_code == 200 and "llm inference, quantization" in page.text
    assert "every Friday" in page.text
    assert row(engine).status == "pending"  # type: ignore[union-attr]
    assert web_client.post(link).status_code == 200
    confirmed = row(engine)
    assert confirmed is not None and confirmed.status == "active"


def test_mail_to_the_subscribe_address_takes_the_keywords_from_the_subject(
    server: InboundServer, engine: Engine, inbox: list[Any], clock: Clock
) -> None:
    send(server, compose(to=SUBSCRIBE, subject="diffusion, protein folding"), to=[SUBSCRIBE])
    sub = row(engine)
    assert sub is not None and sub.status == "pending"
    assert sub.keywords == ["diffusion", "protein folding"] and sub.frequency == "daily"
    [reply] = replies(inbox)
    assert reply["From"].addresses[0].addr_spec == SUBSCRIBE

    # Still pending: a later mail may change the interests, and must confirm again.
    clock.advance(301)
    command(server, "keywords graph neural networks\ndaily")
    sub = row(engine)
    assert sub is not None and sub.status == "pending" and sub.keywords == ["graph neural networks"]
    assert len(replies(inbox)) == 2 and "confirm/" in text_of(replies(inbox)[1])


def test_a_subscription_needs_keywords_and_an_empty_one_changes_nothing(
    server: InboundServer, engine: Engine, inbox: list[Any]
) -> None:
    send(server, compose(to=SUBSCRIBE, subject=""), to=[SUBSCRIBE])
    command(server, "subscribe")
    command(server, "keywords llm\nweekly someday")
    assert count_rows(engine) == 0
    texts = [text_of(r) for r in replies(inbox)]
    assert len(texts) == 3
    assert all("nothing was done" in t.lower() for t in texts), texts
    assert "weekly: that is not a day of the week" in texts[2] and "someday" not in texts[2]


LONG_LIST = ", ".join(f"{i:02d} " + "w" * 42 for i in range(45))


@pytest.mark.parametrize(
    ("subject", "body", "needle"),
    [
        ("subscribe " + ", ".join(f"k{i}" for i in range(51)), "", "at most 50 keywords"),
        # Spread over lines, the keywords still count as one list.
        (
            "subscribe " + ", ".join(f"a{i}" for i in range(30)),
            "keywords " + ", ".join(f"b{i}" for i in range(30)),
            "at most 50 keywords",
        ),
        ("subscribe llm, " + "x" * 101, "", "at most 100 characters"),
        ("subscribe llm", "exclude " + ", ".join(f"e{i}" for i in range(51)), "50 excluded"),
        # 45 keywords of 45 characters: within both of those limits, but a line longer than
        # a keyword list may be, refused by that limit rather than cut into a list that passes.
        ("subscribe " + LONG_LIST, "", "under 2000"),
        ("", "subscribe " + LONG_LIST, "under 2000"),
    ],
)
def test_input_over_a_limit_is_refused_and_the_reply_names_it(
    server: InboundServer, engine: Engine, inbox: list[Any], subject: str, body: str, needle: str
) -> None:
    command(server, body, subject=subject)
    assert count_rows(engine) == 0
    [reply] = replies(inbox)
    text = " ".join(text_of(reply).split())  # the plain text is wrapped
    assert "nothing was done" in text.lower() and needle in text, text


def test_an_unsubscribed_reader_can_come_back_by_mail(
    server: InboundServer, engine: Engine, inbox: list[Any], web_client: TestClient
) -> None:
    active(engine, keywords="quantization")
    subscriptions.unsubscribe(engine, ADA)
    command(server, "subscribe")  # no keywords: their old ones
    sub = row(engine)
    assert sub is not None and sub.status == "pending" and sub.keywords == ["quantization"]
    assert web_client.post(urlsplit(link_in(replies(inbox)[0], "confirm")).path).status_code == 200
    assert row(engine).status == "active"  # type: ignore[union-attr]


def test_an_active_subscription_is_not_changed_by_mail(
    server: InboundServer,
    engine: Engine,
    inbox: list[Any],
    web_client: TestClient,
    clock: Clock,
) -> None:
    before = active(engine)
    command(server, "keywords spam, more spam\nexclude\nweekly")
    after = row(engine)
    assert after is not None and after.status == "active"
    assert (after.keywords, after.exclude, after.frequency) == (
        before.keywords,
        before.exclude,
        before.frequency,
    )
    [reply] = replies(inbox)
    text = text_of(reply)
    assert "was not changed" in text and "forged" in text
    assert "spam" not in text and "spam" not in html_of(reply)  # never what the mail typed
    assert "llm inference" in text  # the reader's own settings
    assert web_client.get(urlsplit(link_in(reply, "preferences")).path).status_code == 200

    # The link mail shares the confirmation interval: a forged flood gets one mail through.
    for _ in range(3):
        command(server, "daily")
    assert len(replies(inbox)) == 1
    clock.advance(301)
    command(server, "subscribe")
    assert "already gets" in text_of(replies(inbox)[1])


def test_the_confirmation_interval_is_shared_with_the_web_form(
    server: InboundServer, engine: Engine, inbox: list[Any], clock: Clock
) -> None:
    interests = subscriptions.make_interests("llm")
    web = subscriptions.Origin(channel="web", key="192.0.2.1", per_hour=5, total_per_hour=100)
    assert subscriptions.request(
        engine, ADA, interests, now=clock(), interval_seconds=300, origin=web
    )
    command(server, "subscribe quantization")
    assert inbox == []
    clock.advance(301)
    command(server, "subscribe quantization")
    assert len(inbox) == 1


def test_a_subscribe_flood_gets_one_confirmation_per_interval(
    server: InboundServer, engine: Engine, inbox: list[Any], clock: Clock
) -> None:
    """One mail per address per interval (under the sender domain's cap, the next test's)."""
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        for i, sender in enumerate(["ada@example.org", "ADA@Example.org", "ada@EXAMPLE.org"] * 2):
            to = SUBSCRIBE if i % 2 else COMMANDS
            data = compose(sender=sender, to=to, subject="subscribe llm")
            client.sendmail(sender, [to], data)
    assert server.wait_idle()
    assert count_rows(engine) == 1
    assert len(replies(inbox, ADA)) == 1 and len(inbox) == 1
    clock.advance(299)
    command(server, "subscribe llm")
    assert len(inbox) == 1
    clock.advance(2)
    command(server, "subscribe llm")
    assert len(inbox) == 2
    assert [e.rcpt_tos for e in inbox] == [[ADA], [ADA]]


def capped_server(
    settings: Settings, engine: Engine, clock: Clock, *, per_domain: int, total: int = 100
) -> InboundServer:
    capped = dataclasses.replace(
        settings,
        inbound=dataclasses.replace(settings.inbound, subscribe_per_domain_per_hour=per_domain),
        web=dataclasses.replace(settings.web, subscribe_per_hour=total),
    )
    return create_server(capped, engine, clock=clock)


def test_subscribe_mails_are_capped_per_sender_domain(
    mail_settings: Settings, engine: Engine, inbox: list[Any], clock: Clock
) -> None:
    """A flood of forged senders at one domain: a few confirmations, then no reply at all."""
    with capped_server(mail_settings, engine, clock, per_domain=3) as server:
        for i in range(6):
            command(server, subject="subscribe FREE PRIZE", sender=f"v{i}@flood.example")
        command(server, subject="subscribe llm", sender="ada@Other.example")
        assert sorted(e.rcpt_tos[0] for e in inbox) == [
            "ada@other.example",
            "v0@flood.example",
            "v1@flood.example",
            "v2@flood.example",
        ]
        assert count_rows(engine) == 4
        clock.advance(3601)
        command(server, subject="subscribe llm", sender="v5@flood.example")
    assert len(inbox) == 5 and count_rows(engine) == 5


def test_the_cap_on_all_requests_is_shared_with_the_web_form(
    mail_settings: Settings, engine: Engine, inbox: list[Any], clock: Clock
) -> None:
    web = subscriptions.Origin(channel="web", key="192.0.2.1", per_hour=5, total_per_hour=2)
    subscriptions.request(
        engine,
        "web@example.org",
        subscriptions.make_interests("llm"),
        now=clock(),
        interval_seconds=300,
        origin=web,
    )
    with capped_server(mail_settings, engine, clock, per_domain=10, total=2) as server:
        command(server, subject="subscribe llm", sender="one@example.org")
        command(server, subject="subscribe llm", sender="two@example.net")
    assert [e.rcpt_tos for e in inbox] == [["one@example.org"]]
    assert row(engine, "two@example.net") is None


# ---------------------------------------------------------------------------------------------
# unsubscribe, help, escaping


def test_any_mail_to_the_unsubscribe_address_unsubscribes(
    server: InboundServer, engine: Engine, inbox: list[Any], web_client: TestClient
) -> None:
    active(engine)
    send(server, compose(to=UNSUBSCRIBE, subject="unsubscribe"), to=[UNSUBSCRIBE])
    assert row(engine).status == "unsubscribed"  # type: ignore[union-attr]
    [reply] = replies(inbox)
    assert "unsubscribed" in reply["Subject"] and "forged" in text_of(reply)
    assert reply["From"].addresses[0].addr_spec == UNSUBSCRIBE
    # One click brings a reader back (the sender of the mail may have been someone else).
    assert web_client.post(urlsplit(link_in(reply, "resubscribe")).path).status_code == 200
    assert row(engine).status == "active"  # type: ignore[union-attr]


def test_unsubscribing_by_mail_acts_by_address_whatever_the_links(
    server: InboundServer, engine: Engine, inbox: list[Any]
) -> None:
    """RFC 2369's mailto carries no token: a mail unsubscribes even after the links were
    revoked."""
    reader = active(engine)
    with Session(engine) as session:
        fresh = session.get(Subscriber, reader.id)
        assert fresh is not None
        fresh.token_version += 1
        session.add(fresh)
        session.commit()
    send(server, compose(to=UNSUBSCRIBE, subject="stop"), to=[UNSUBSCRIBE])
    assert row(engine).status == "unsubscribed"  # type: ignore[union-attr]
    assert "You are unsubscribed" in text_of(replies(inbox)[0])


def test_importing_the_inbound_server_does_not_import_the_web_stack() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import digest.inbound, sys; print('starlette' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "False"


def test_the_unsubscribe_command_comes_before_the_others(
    server: InboundServer, engine: Engine, inbox: list[Any]
) -> None:
    active(engine, "grace@example.org", "quantization")
    command(server, "keywords spam\nunsubscribe", sender="grace@example.org")
    sub = row(engine, "grace@example.org")
    assert sub is not None and sub.status == "unsubscribed" and sub.keywords == ["quantization"]
    assert "ignored" in text_of(replies(inbox)[0])

    # An address with no subscription: told so, and nothing is created.
    command(server, subject="unsubscribe", sender="nobody@example.org")
    assert row(engine, "nobody@example.org") is None
    assert "nothing to unsubscribe" in text_of(replies(inbox, "nobody@example.org")[0])


def test_help_lists_the_commands_and_creates_nothing(
    server: InboundServer, engine: Engine, inbox: list[Any]
) -> None:
    command(server, subject="help")
    [reply] = replies(inbox)
    text = text_of(reply)
    for word in ("subscribe", "keywords", "exclude", "weekly", "daily", "unsubscribe", "help"):
        assert word in text
    assert SUBSCRIBE in text and UNSUBSCRIBE in text and COMMANDS in text
    assert count_rows(engine) == 0


def test_a_mail_without_commands_is_answered_with_help_quoting_nothing(
    server: InboundServer, engine: Engine, inbox: list[Any]
) -> None:
    """Its From may be forged: the reply must not carry the mail's words to that address."""
    command(server, "Hi! <script>alert(1)</script> FREE PRIZE http://win.example/now\n\nAda")
    [reply] = replies(inbox)
    for part in (html_of(reply), text_of(reply)):
        assert "alert(1)" not in part and "FREE PRIZE" not in part and "win.example" not in part
    assert "no command" in text_of(reply) and count_rows(engine) == 0


def test_markup_in_keywords_comes_back_escaped(
    server: InboundServer, engine: Engine, inbox: list[Any], web_client: TestClient
) -> None:
    keywords = '<img src=x onerror="alert(1)">, <b>bold</b> & "quoted"'
    command(server, subject=f"subscribe {keywords}")
    sub = row(engine)
    assert sub is not None and sub.keywords[0] == '<img src=x onerror="alert(1)">'
    [reply] = replies(inbox)
    for part in (html_of(reply), text_of(reply), reply["Subject"]):
        assert "img" not in part and "bold" not in part  # nothing of theirs
    page = web_client.get(urlsplit(link_in(reply, "confirm")).path).text
    assert "<img src=x" not in page and "<b>bold" not in page
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &#34;quoted&#34;" in page


# ---------------------------------------------------------------------------------------------
# the SMTP boundary: never a relay, bounded size


def test_other_recipients_are_refused_with_550(
    server: InboundServer, engine: Engine, inbox: list[Any]
) -> None:
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        client.ehlo()
        for rcpt in ("victim@example.com", "digest@example.com", "postmaster@localhost"):
            assert client.mail(ADA)[0] == 250
            code, _ = client.rcpt(rcpt)
            assert code == 550, rcpt
            client.rset()
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail(ADA, ["victim@example.com"], compose(subject="help"))
        # With one of ours beside it, only ours is taken.
        refused = client.sendmail(ADA, [COMMANDS, "victim@example.com"], compose(subject="help"))
        assert list(refused) == ["victim@example.com"] and refused["victim@example.com"][0] == 550
    assert server.wait_idle()
    assert [e.rcpt_tos for e in inbox] == [[ADA]]


def test_oversized_messages_are_refused_with_552(
    server: InboundServer, engine: Engine, inbox: list[Any]
) -> None:
    big = compose(subject="subscribe llm", body="subscribe llm\n" + ("x" * 70 + "\n") * 1000)
    assert len(big) > 65536
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:  # declared with SIZE
        send(server, big)
    assert refused.value.smtp_code == 552
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:  # not declared
        client.ehlo()
        assert client.mail(ADA)[0] == 250
        assert client.rcpt(COMMANDS)[0] == 250
        code, _ = client.data(big)
        assert code == 552
    assert server.wait_idle()
    assert count_rows(engine) == 0 and inbox == []


# ---------------------------------------------------------------------------------------------
# malformed mail


def _nested(depth: int) -> bytes:
    head = (
        b"From: ada@example.org\r\nTo: digest@localhost\r\nSubject: help\r\nMIME-Version: 1.0\r\n"
    )
    parts = [head]
    for i in range(depth):
        parts.append(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i))
    parts.append(b"Content-Type: text/plain\r\n\r\nhelp\r\n")
    return b"".join(parts)


def _raw(headers: str, body: bytes) -> bytes:
    return headers.replace("\n", "\r\n").encode("ascii") + b"\r\n" + body


GARBAGE = b"\r\n".join(bytes((i * 37 + j) % 256 for j in range(60)) for i in range(40))
MALFORMED = {
    "no From": (_raw("To: digest@localhost\nSubject: help\n", b"help\r\n"), "no sender address"),
    "two From": (
        _raw("From: ada@example.org\nFrom: eve@example.org\nSubject: help\n", b"help\r\n"),
        "no sender address",
    ),
    "From not an address": (
        _raw("From: not an address\nSubject: subscribe llm\n", b"\r\n"),
        "no sender address",
    ),
    "garbage bytes": (GARBAGE, "no sender address"),
    "nested MIME bomb": (_nested(700), "could not be read"),
    "HTML only": (
        _raw(
            "From: ada@example.org\nSubject: hello\nMIME-Version: 1.0\n"
            'Content-Type: text/html; charset="utf-8"\n',
            b"<html><body><p>subscribe llm inference</p><blockquote>unsubscribe</blockquote>"
            b"</body></html>\r\n",
        ),
        "Confirm your subscription",
    ),
    "base64 body": (
        _raw(
            "From: ada@example.org\nSubject: hello\nMIME-Version: 1.0\n"
            'Content-Type: text/plain; charset="utf-8"\nContent-Transfer-Encoding: base64\n',
            b"c3Vic2NyaWJlIGxsbSBpbmZlcmVuY2UK\r\n",  # "subscribe llm inference\n"
        ),
        "Confirm your subscription",
    ),
    "Latin-1 body": (
        _raw(
            "From: ada@example.org\nSubject: hello\nMIME-Version: 1.0\n"
            'Content-Type: text/plain; charset="iso-8859-1"\n'
            "Content-Transfer-Encoding: 8bit\n",
            "subscribe Schrödinger équations\r\n".encode("latin-1"),
        ),
        "Confirm your subscription",
    ),
    "unknown charset": (
        _raw(
            "From: ada@example.org\nSubject: hello\nMIME-Version: 1.0\n"
            'Content-Type: text/plain; charset="x-no-such-charset"\n',
            b"help\r\n",
        ),
        "Email commands",
    ),
    "broken base64": (
        _raw(
            "From: ada@example.org\nSubject: hello\nMIME-Version: 1.0\n"
            "Content-Type: text/plain\nContent-Transfer-Encoding: base64\n",
            b"!!!! this is not base64 ####\r\n",
        ),
        "no command",
    ),
    "undeclared 8-bit": (
        _raw("From: ada@example.org\nSubject: help\n", b"help \xff\xfe\xc3\x28\r\n"),
        "Email commands",
    ),
    "attachment only": (
        _raw(
            "From: ada@example.org\nSubject: hello\nMIME-Version: 1.0\n"
            'Content-Type: multipart/mixed; boundary="x"\n',
            b"--x\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; "
            b'filename="a.txt"\r\n\r\nsubscribe llm\r\n--x--\r\n',
        ),
        "no command",
    ),
    "non-ASCII sender": (
        _raw("From: =?utf-8?b?w7w=?=@example.org\nSubject: help\n", b"help\r\n"),
        None,
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_mail_never_stops_the_server(
    case: str,
    server: InboundServer,
    engine: Engine,
    inbox: list[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    data, answer = MALFORMED[case]
    caplog.set_level(logging.INFO, logger="digest.inbound")
    send(server, data)
    answered = replies(inbox)
    if answer is None:
        assert answered == []
    else:
        assert len(answered) == 1, case
        assert answer in text_of(answered[0]), text_of(answered[0])
        assert inbox[0].rcpt_tos == [ADA]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    if answer == "Confirm your subscription":
        assert row(engine) is not None and row(engine).status == "pending"  # type: ignore[union-attr]

    # The server still answers.
    command(server, subject="help", sender="grace@example.org")
    assert len(replies(inbox, "grace@example.org")) == 1


def test_the_latin_1_keywords_arrive_intact(server: InboundServer, engine: Engine) -> None:
    send(server, MALFORMED["Latin-1 body"][0])
    assert row(engine).keywords == ["Schrödinger équations"]  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------
# loop protection and reply limits


AUTOMATIC: dict[str, dict[str, Any]] = {
    "auto-replied": dict(headers=[("Auto-Submitted", "auto-replied")]),
    "precedence bulk": dict(headers=[("Precedence", "bulk")]),
    "mailing list": dict(headers=[("List-Id", "<papers.lists.example.org>")]),
    "X-Loop": dict(headers=[("X-Loop", COMMANDS)]),
    "no-reply sender": dict(sender="no-reply@example.org"),
    "our own address": dict(sender=COMMANDS),
}


@pytest.mark.parametrize("case", list(AUTOMATIC))
def test_automatic_mail_gets_no_reply_and_changes_nothing(
    case: str, server: InboundServer, engine: Engine, inbox: list[Any]
) -> None:
    options = AUTOMATIC[case]
    sender = options.get("sender", ADA)
    send(
        server,
        compose(sender=sender, subject="subscribe llm", headers=options.get("headers", ())),
        mail_from=sender,
    )
    assert inbox == [] and count_rows(engine) == 0


def test_bounces_get_no_reply(server: InboundServer, engine: Engine, inbox: list[Any]) -> None:
    active(engine)
    dsn = _raw(
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\nTo: digest@localhost\n"
        "Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\n',
        b"--r\r\nContent-Type: text/plain\r\n\r\nunsubscribe\r\nsubscribe llm\r\n"
        b"--r\r\nContent-Type: message/delivery-status\r\n\r\nStatus: 5.1.1\r\n--r--\r\n",
    )
    send(server, dsn, mail_from="")
    send(
        server, compose(subject="unsubscribe", sender="MAILER-DAEMON@mx.example.org"), mail_from=""
    )
    assert inbox == [] and row(engine).status == "active"  # type: ignore[union-attr]


def forged_unsubscribe(server: InboundServer, sender: str = ADA) -> None:
    """What a forger sends: the victim's From, marked automatic, to the unsubscribe address."""
    send(
        server,
        compose(
            sender=sender,
            to=UNSUBSCRIBE,
            subject="unsubscribe",
            headers=[("Auto-Submitted", "auto-generated")],
        ),
        mail_from="forger@elsewhere.example",
        to=[UNSUBSCRIBE],
    )


def test_a_forged_automatic_unsubscribe_always_tells_the_reader(
    server: InboundServer, engine: Engine, inbox: list[Any], web_client: TestClient
) -> None:
    """An automatic unsubscribe (a provider acting on List-Unsubscribe) still unsubscribes, and
    could be forged: the active reader it ends gets a notice with a link that brings them back."""
    active(engine, keywords="quantization, llm inference")
    forged_unsubscribe(server)
    assert row(engine).status == "unsubscribed"  # type: ignore[union-attr]
    [notice] = replies(inbox)
    assert inbox[0].rcpt_tos == [ADA] and notice["Auto-Submitted"] == "auto-replied"
    assert "You are unsubscribed" in notice["Subject"] and "sent automatically" in text_of(notice)
    # A flood of them while unsubscribed earns nothing more: nothing is left to end.
    for _ in range(5):
        forged_unsubscribe(server)
    assert len(inbox) == 1

    back = urlsplit(link_in(notice, "resubscribe")).path
    page = web_client.get(back)  # opening the link changes nothing: it shows a button
    assert page.status_code == 200 and "Subscribe again" in page.text
    assert "quantization, llm inference" in page.text
    assert row(engine).status == "unsubscribed"  # type: ignore[union-attr]
    done = web_client.post(back)
    assert done.status_code == 200 and "You are subscribed" in done.text
    again = row(engine)
    assert again is not None and again.status == "active"
    assert again.keywords == ["quantization", "llm inference"]


def test_an_automatic_unsubscribe_of_a_non_reader_stays_silent(
    server: InboundServer, engine: Engine, inbox: list[Any]
) -> None:
    """Only an active reader is told: a pending address gets nothing but its confirmation."""
    subscriptions.add(engine, ADA, subscriptions.make_interests("llm"), status="pending")
    forged_unsubscribe(server)
    forged_unsubscribe(server, "nobody@example.org")
    assert row(engine).status == "unsubscribed"  # type: ignore[union-attr]
    assert inbox == []


def test_replies_to_one_address_are_limited(
    server: InboundServer, inbox: list[Any], mail_settings: Settings
) -> None:
    limit = mail_settings.inbound.replies_per_hour
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        for _ in range(limit + 3):
            client.sendmail(ADA, [COMMANDS], compose(subject="help"))
        client.sendmail("grace@example.org", [COMMANDS], compose(sender="grace@example.org"))
    assert server.wait_idle()
    assert len(replies(inbox, ADA)) == limit
    assert len(replies(inbox, "grace@example.org")) == 1


def test_reply_limiter_windows() -> None:
    limiter = ReplyLimiter(2, per_minute=3)
    assert limiter.allow("a", 0) and limiter.allow("a", 1) and not limiter.allow("a", 2)
    assert limiter.allow("b", 3) and not limiter.allow("c", 4)  # three in the minute
    assert limiter.allow("c", 61)
    assert not limiter.allow("a", 3599) and limiter.allow("a", 3601)


# ---------------------------------------------------------------------------------------------
# reading commands


def test_commands_come_from_the_subject_and_the_top_of_the_body() -> None:
    body = (
        "subscribe llm inference\n"
        "> unsubscribe\n"
        "\n"
        "Exclude: survey\n"
        "WEEKLY on Tuesdays\n"
        "Thanks!\n"
        "daily\n"
    )
    found = read_commands("Re: help", body)
    assert found.found == (
        Command("help"),
        Command("subscribe", "llm inference"),
        Command("exclude", "survey"),
        Command("weekly", "on Tuesdays"),
    )
    wanted = wanted_changes(found, role="commands")
    assert (wanted.keywords, wanted.exclude, wanted.frequency, wanted.weekday) == (
        "llm inference",
        "survey",
        "weekly",
        1,
    )
    assert wanted_changes(read_commands("weekly", ""), role="commands").weekday is None
    for end in ("-- ", "On Mon, 1 Dec 2026, Ada <ada@example.org> wrote:", "_______________"):
        assert read_commands("", f"help\n{end}\nunsubscribe\n").found == (Command("help"),)


def test_reading_is_bounded() -> None:
    many = "\n".join(f"keywords k{i}" for i in range(MAX_COMMANDS + 5))
    found = read_commands("", many)
    assert len(found.found) == MAX_COMMANDS and found.dropped == 5
    chatter = "\n".join(f"line {i}" for i in range(MAX_BODY_LINES)) + "\nhelp\n"
    late = read_commands("", chatter)
    assert late.found == () and len(late.unknown) == 3


def test_subject_keywords_only_on_the_subscribe_address() -> None:
    assert read_commands("llm, quantization", "", role="subscribe").found == (
        Command("subscribe", "llm, quantization"),
    )
    assert read_commands("llm, quantization", "").found == ()
    assert read_commands("Re: Confirm your subscription", "", role="subscribe").found == ()


# ---------------------------------------------------------------------------------------------
# configuration and the commands that run it


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[inbound]\naddress = 'not an address'\n", "[inbound] address"),
        ("[inbound]\nsubscribe_address = 'digest@localhost'\n", "must differ"),
        ("[inbound]\nport = 70000\n", "[inbound] port"),
        ("[inbound]\nmax_message_bytes = 10\n", "max_message_bytes"),
        ("[inbound]\nreplies_per_hour = 0\n", "replies_per_hour"),
    ],
)
def test_bad_inbound_settings_are_named(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_settings(path, env={})


def _config(tmp_path: Path, *, inbound_port: int, enabled: bool = False) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""[database]
url = "sqlite:///{tmp_path}/subscribers.db"
[sink]
maildir = "{tmp_path}/mail"
[inbound]
enabled = {"true" if enabled else "false"}
port = {inbound_port}
""",
        encoding="utf-8",
    )
    return path


def _wait_for_port(port: int, proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited early: {proc.communicate()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def _mail_in(maildir: Path, timeout: float = 10.0) -> list[EmailMessage]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted((maildir / "new").glob("*")) if (maildir / "new").is_dir() else []
        if found:
            return [message_from_bytes(p.read_bytes(), policy=policy.default) for p in found]
        time.sleep(0.1)
    return []


@pytest.mark.parametrize("how", ["inbound", "serve"])
def test_the_commands_run_the_server_and_replies_reach_the_sink(tmp_path: Path, how: str) -> None:
    """`digest inbound` runs it alone; `digest serve` beside the web app when enabled."""
    port = free_port()
    config = _config(tmp_path, inbound_port=port, enabled=how == "serve")
    digest = Path(sys.executable).parent / "digest"
    args = [str(digest), "--config", str(config), how]
    if how == "serve":
        args += ["--port", str(free_port()), "--no-scheduler"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env["DIGEST_SECRET_KEY"] = "k" * 40
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for_port(port, proc)
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail(ADA, [COMMANDS], compose(subject="help"))
        [reply] = _mail_in(tmp_path / "mail")
        assert reply["To"] == ADA and "Email commands" in text_of(reply)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"Email commands: SMTP on 127.0.0.1:{port}" in out, out


@pytest.mark.parametrize("schedule", ["--no-scheduler", "--scheduler"])
def test_serve_stops_on_a_sigterm_during_start_up(tmp_path: Path, schedule: str) -> None:
    """A SIGTERM that comes before uvicorn has taken the signal over still stops everything."""
    config = _config(tmp_path, inbound_port=free_port(), enabled=True)
    digest = Path(sys.executable).parent / "digest"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    env["DIGEST_SECRET_KEY"] = "k" * 40
    proc = subprocess.Popen(
        [str(digest), "--config", str(config), "serve", "--port", str(free_port()), schedule],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # printed once our handler is in place
        assert first.startswith("Serving on"), first
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
