"""Bounces after the relay accepted a digest: each digest leaves with its own signed envelope
sender (VERP), and the reports mail systems send back to it, real ones (tests/data/bounces),
reach the running inbound server and change the delivery they name, and nothing else."""

from __future__ import annotations

import dataclasses
import smtplib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from digest import delivery, subscriptions
from digest.config import Settings
from digest.db import make_engine
from digest.delivery import bounces
from digest.delivery.bounces import delivery_of, return_path
from digest.inbound import InboundServer, create_server
from digest.ingest import SourceSpec, ingest
from digest.models import Delivery, Subscriber
from digest.render import Renderer
from digest.sink import free_port

REPORTS = Path(__file__).parent / "data" / "bounces"
READERS = ("ada@example.org", "grace@example.org", "alan@example.org")

# fixture, and what it must do: "bounce" (permanent), "delay" (noted), "complaint", "none"
KINDS = {
    "postfix-3.7-failed-5.1.1.eml": ("bounce", "5.1.1"),
    "postfix-3.7-delayed-4.4.1.eml": ("delay", "4.4.1"),
    "arf_abuse.eml": ("complaint", "abuse"),
    "autoreply.eml": ("none", ""),
    "mailman-dsn_10.eml": ("bounce", "5.0.0"),
    "mailman-dsn_11.eml": ("bounce", "5.1.1"),
    "mailman-dsn_03.eml": ("bounce", "553"),
    "mailman-dsn_05.eml": ("delay", "4.4.1"),
    "mailman-dsn_08.eml": ("delay", "4.0.0"),
    "mailman-postfix_01.eml": ("bounce", "5.1.1"),
    "mailman-exim_01.eml": ("bounce", ""),
    "mailman-qmail_01.eml": ("bounce", ""),
    "mailman-groupwise_01.eml": ("bounce", ""),
    "mailman-microsoft_01.eml": ("bounce", ""),
    "mailman-simple_01.eml": ("bounce", ""),
}


@pytest.fixture
def world(settings: Settings, shared: Path, smtp_server: Any) -> Settings:
    """Three readers who were sent today's digest through the recording relay."""
    controller, _ = smtp_server
    settings = dataclasses.replace(
        settings,
        smtp=dataclasses.replace(
            settings.smtp, host="127.0.0.1", port=controller.port, security="none"
        ),
        delivery=dataclasses.replace(settings.delivery, bounce_address="bounces@example.org"),
        inbound=dataclasses.replace(settings.inbound, port=free_port()),
    )
    engine = make_engine(settings.database.url)
    ingest(
        engine, settings, [SourceSpec(name="a", location=str(shared / "seeds/daily-papers-a.txt"))]
    )
    for email in READERS:
        subscriptions.add(engine, email, subscriptions.make_interests("language models"))
    assert delivery.send(engine, settings, renderer=Renderer.create()).sent == len(READERS)
    return settings


@pytest.fixture
def inbound(world: Settings) -> Iterator[InboundServer]:
    with create_server(world, make_engine(world.database.url)) as server:
        yield server


def _deliveries(settings: Settings) -> dict[str, Delivery]:
    with Session(make_engine(settings.database.url)) as session:
        emails = {s.id: s.email for s in session.exec(select(Subscriber)).all()}
        return {emails[d.subscriber_id]: d for d in session.exec(select(Delivery)).all()}


def _reader(settings: Settings, email: str) -> Subscriber:
    with Session(make_engine(settings.database.url)) as session:
        return session.exec(select(Subscriber).where(Subscriber.email == email)).one()


def _report(server: InboundServer, to: str, data: bytes) -> None:
    """Hand a report to the running inbound server, as the MTA would, and wait for it."""
    with smtplib.SMTP(server.host, server.port) as smtp:
        smtp.sendmail("", [to], _crlf(data))
    assert server.wait_idle()


def _crlf(data: bytes) -> bytes:
    """The file's lines with CRLF ends, as SMTP carries them."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def test_each_digest_leaves_with_its_own_signed_envelope_sender(
    world: Settings, smtp_server: Any
) -> None:
    _, handler = smtp_server
    rows = _deliveries(world)
    senders = {e.rcpt_tos[0]: e.mail_from for e in handler.envelopes}
    for email in READERS:
        sender = senders[email]
        assert sender == return_path(world, rows[email].id or 0)
        assert sender.startswith("bounces+") and sender.endswith("@example.org")
        assert delivery_of(world, sender) == rows[email].id
        assert delivery_of(world, sender.upper()) == rows[email].id  # MTAs may change case
    assert len(set(senders.values())) == len(READERS)
    # a changed signature, another id, another domain: no delivery
    sender = senders[READERS[0]]
    local, _, domain = sender.partition("@")
    for forged in (
        f"{local[:-1]}{'b' if local[-1] != 'b' else 'c'}@{domain}",
        local.replace("+", "+9", 1) + f"@{domain}",
        f"{local}@example.net",
    ):
        assert delivery_of(world, forged) is None


@pytest.mark.parametrize("name", sorted(KINDS))
def test_a_report_changes_the_delivery_it_names(
    world: Settings, inbound: InboundServer, smtp_server: Any, name: str
) -> None:
    _, handler = smtp_server
    kind, status = KINDS[name]
    victim = READERS[0]
    before = _deliveries(world)
    _report(inbound, return_path(world, before[victim].id or 0), (REPORTS / name).read_bytes())
    after = _deliveries(world)
    reader = _reader(world, victim)
    if kind == "bounce":
        assert after[victim].status == "bounced"
        assert status in (after[victim].last_error or "")
        assert reader.bounce_count == 1 and reader.status == "active"  # bounce_limit is 3
    elif kind == "delay":
        assert after[victim].status == "sent" and reader.bounce_count == 0
        assert "delayed" in (after[victim].last_error or "") and status in after[victim].last_error
    elif kind == "complaint":
        assert reader.status == "unsubscribed" and after[victim].status == "sent"
        assert "spam" in (after[victim].last_error or "")
    else:
        assert after[victim] == before[victim] and reader.status == "active"
    for other in READERS[1:]:  # only the named delivery changes
        assert after[other] == before[other]
    assert len(handler.envelopes) == len(READERS)  # a report is never answered


def test_a_forged_report_is_refused_and_changes_nothing(
    world: Settings, inbound: InboundServer
) -> None:
    before = _deliveries(world)
    real = return_path(world, before[READERS[0]].id or 0)
    local, _, domain = real.partition("@")
    forged = f"{local[:-2]}zz@{domain}"
    data = (REPORTS / "postfix-3.7-failed-5.1.1.eml").read_bytes()
    with (
        smtplib.SMTP(inbound.host, inbound.port) as smtp,
        pytest.raises(smtplib.SMTPRecipientsRefused),
    ):
        smtp.sendmail("", [forged], _crlf(data))
    assert inbound.wait_idle()
    assert _deliveries(world) == before


def test_repeated_bounces_count_once_and_the_limit_stops_the_reader(
    world: Settings, inbound: InboundServer
) -> None:
    settings = dataclasses.replace(
        world, delivery=dataclasses.replace(world.delivery, bounce_limit=1)
    )
    engine = make_engine(settings.database.url)
    victim = READERS[1]
    address = return_path(settings, _deliveries(settings)[victim].id or 0)
    data = (REPORTS / "postfix-3.7-failed-5.1.1.eml").read_bytes()
    # the server was made with bounce_limit 3: apply two of the reports with limit 1 here
    bounces.process(engine, settings, recipients=[address], data=data, now=_now())
    bounces.process(engine, settings, recipients=[address], data=data, now=_now())
    _report(inbound, address, data)
    reader = _reader(settings, victim)
    assert reader.bounce_count == 1 and reader.status == "bounced"
    # a bounced reader is planned no more
    assert delivery.plan(engine, settings, now=_now() + _days(1)) == len(READERS) - 1


def test_a_report_quoting_a_whole_digest_is_taken_a_command_mail_that_size_is_not(
    world: Settings, inbound: InboundServer
) -> None:
    victim = READERS[2]
    address = return_path(world, _deliveries(world)[victim].id or 0)
    # a report as a relay far down the line would make it: many Received headers in front
    padding = b"".join(
        b"Received: by relay%d.example.net; Fri, 4 Dec 2026\n" % i for i in range(2000)
    )
    big = padding + (REPORTS / "postfix-3.7-failed-5.1.1.eml").read_bytes()
    assert len(big) > world.inbound.max_message_bytes
    _report(inbound, address, big)
    assert _deliveries(world)[victim].status == "bounced"
    for sender in ("someone@example.net", ""):  # declared with SIZE: refused at MAIL, else DATA
        with (
            smtplib.SMTP(inbound.host, inbound.port) as smtp,
            pytest.raises(smtplib.SMTPResponseException) as info,
        ):
            smtp.sendmail(sender, [inbound.addresses[0]], _crlf(big))
        assert info.value.smtp_code == 552


def _now() -> datetime:
    return datetime.now(UTC)


def _days(n: int) -> timedelta:
    return timedelta(days=n)
