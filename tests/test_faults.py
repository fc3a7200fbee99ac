"""SMTP faults, each against a real aiosmtpd server: the right state, the right retry, no harm to others."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from conftest import RecordingHandler
from sqlmodel import Session, select

from digest import delivery, subscriptions
from digest.config import Settings
from digest.db import make_engine
from digest.ingest import SourceSpec, ingest
from digest.models import Delivery, Subscriber
from digest.render import Renderer
from digest.sink import free_port

VICTIM = "victim@example.org"
OTHERS = [f"reader{i}@example.org" for i in range(5)]


class Faulty(RecordingHandler):
    """Answers the victim's mail with one fault; everyone else is served normally."""

    def __init__(self, fault: str) -> None:
        super().__init__()
        self.fault = fault
        self.enabled = True

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:  # noqa: N802
        if self.enabled and address == VICTIM:
            if self.fault == "451":
                return "451 4.3.0 Try again later"
            if self.fault == "421":
                return "421 4.3.2 Service shutting down"
            if self.fault == "550":
                return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.enabled and VICTIM in envelope.rcpt_tos:
            if self.fault == "drop":
                server.transport.close()
                return "451 dropped"
            if self.fault == "hang":
                await asyncio.sleep(5)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def world(settings: Settings, shared: Path) -> Settings:
    engine = make_engine(settings.database.url)
    ingest(
        engine, settings, [SourceSpec(name="a", location=str(shared / "seeds/daily-papers-a.txt"))]
    )
    for email in [VICTIM, *OTHERS]:
        subscriptions.add(engine, email, subscriptions.make_interests("quantization"))
    return settings


def serve(handler: Faulty) -> Controller:
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    return controller


def relay(settings: Settings, controller: Controller, **smtp: Any) -> Settings:
    smtp_settings = dataclasses.replace(
        settings.smtp, host="127.0.0.1", port=controller.port, security="none", **smtp
    )
    return dataclasses.replace(
        settings,
        smtp=smtp_settings,
        delivery=dataclasses.replace(settings.delivery, retry_base_seconds=60, max_attempts=3),
    )


def state(settings: Settings) -> dict[str, Delivery]:
    engine = make_engine(settings.database.url)
    with Session(engine) as session:
        emails = {s.id: s.email for s in session.exec(select(Subscriber)).all()}
        return {emails[d.subscriber_id]: d for d in session.exec(select(Delivery)).all()}


def _waits(at: datetime | None, start: datetime, seconds: float, *, slack: float) -> bool:
    """Whether a retry time is ``seconds`` after a failure that happened within ``slack``
    seconds of ``start``."""
    due = start + timedelta(seconds=seconds)
    return at is not None and due <= at <= due + timedelta(seconds=slack)


@pytest.mark.parametrize(
    ("fault", "timeout"),
    [("451", 30.0), ("421", 30.0), ("drop", 30.0), ("hang", 1.0)],
)
def test_transient_faults_are_retried_with_backoff(
    world: Settings, fault: str, timeout: float
) -> None:
    handler = Faulty(fault)
    controller = serve(handler)
    try:
        settings = relay(world, controller, timeout=timeout, connections=1)
        engine = make_engine(settings.database.url)
        now = datetime.now(UTC)
        report = delivery.send(engine, settings, renderer=Renderer.create(), now=now)
        assert (report.sent, report.failed, report.bounced) == (len(OTHERS), 1, 0), report.errors
        rows = state(settings)
        victim = rows[VICTIM]
        assert victim.status == "failed" and victim.attempts == 1
        # the wait counts from the failure (the clock runs on from `now` during the send)
        assert _waits(victim.next_attempt_at, now, 60, slack=timeout + 10)
        assert all(rows[e].status == "sent" for e in OTHERS)
        assert sorted(r for e in handler.envelopes for r in e.rcpt_tos) == sorted(OTHERS)

        # Not yet due: nothing happens. Due but still failing: the wait doubles.
        assert (
            delivery.deliver(
                engine,
                settings,
                renderer=Renderer.create(),
                now=now + timedelta(seconds=30),
            ).failed
            == 0
        )
        assert victim.next_attempt_at is not None
        later = victim.next_attempt_at + timedelta(seconds=1)
        assert delivery.deliver(engine, settings, renderer=Renderer.create(), now=later).failed == 1
        victim = state(settings)[VICTIM]
        assert victim.attempts == 2 and _waits(
            victim.next_attempt_at, later, 120, slack=timeout + 10
        )

        # The fault clears: the retry goes through, once.
        handler.enabled = False
        final = later + timedelta(seconds=150)
        assert delivery.deliver(engine, settings, renderer=Renderer.create(), now=final).sent == 1
        victim = state(settings)[VICTIM]
        assert victim.status == "sent" and victim.attempts == 3
        delivered = [r for e in handler.envelopes for r in e.rcpt_tos]
        assert delivered.count(VICTIM) == 1 and len(delivered) == len(OTHERS) + 1
        ids = {
            e.original_content.split(b"Message-ID: ", 1)[1].split(b"\r\n", 1)[0]
            for e in handler.envelopes
            if VICTIM in e.rcpt_tos
        }
        assert ids == {victim.message_id.encode()}  # type: ignore[union-attr]
    finally:
        controller.stop()


def test_attempts_run_out(world: Settings) -> None:
    handler = Faulty("451")
    controller = serve(handler)
    try:
        settings = relay(world, controller)
        engine = make_engine(settings.database.url)
        now = datetime.now(UTC)
        delivery.send(engine, settings, renderer=Renderer.create(), now=now)
        for hours in (1, 2, 3, 4):
            delivery.deliver(
                engine,
                settings,
                renderer=Renderer.create(),
                now=now + timedelta(hours=hours),
            )
        victim = state(settings)[VICTIM]
        assert victim.status == "failed" and victim.attempts == 3 and victim.next_attempt_at is None
        assert "451" in (victim.last_error or "")
    finally:
        controller.stop()


def test_permanent_refusal_bounces_and_stops_the_reader(world: Settings) -> None:
    handler = Faulty("550")
    controller = serve(handler)
    try:
        settings = relay(world, controller)
        settings = dataclasses.replace(
            settings, delivery=dataclasses.replace(settings.delivery, bounce_limit=2)
        )
        engine = make_engine(settings.database.url)
        now = datetime.now(UTC)
        for day in range(3):
            delivery.send(
                engine, settings, renderer=Renderer.create(), now=now + timedelta(days=day)
            )
        with Session(engine) as session:
            victim = session.exec(select(Subscriber).where(Subscriber.email == VICTIM)).one()
            deliveries = session.exec(
                select(Delivery).where(Delivery.subscriber_id == victim.id)
            ).all()
        assert victim.status == "bounced" and victim.bounce_count == 2
        assert [d.status for d in deliveries] == ["bounced", "bounced"], "no third try once bounced"
        assert all(d.attempts == 1 and d.next_attempt_at is None for d in deliveries)
        delivered = [r for e in handler.envelopes for r in e.rcpt_tos]
        # (the others had every quantization paper on day one: later days have nothing new)
        assert VICTIM not in delivered and sorted(delivered) == sorted(OTHERS)
    finally:
        controller.stop()


def test_a_relay_that_is_down_stops_the_run_without_burning_attempts(world: Settings) -> None:
    port = free_port()  # nobody listens here
    settings = dataclasses.replace(
        world,
        smtp=dataclasses.replace(
            world.smtp, host="127.0.0.1", port=port, security="none", connections=1
        ),
    )
    engine = make_engine(settings.database.url)
    report = delivery.send(engine, settings, renderer=Renderer.create())
    assert (report.sent, report.failed) == (0, 0)
    assert report.stopped is not None and "cannot connect" in report.stopped
    assert report.released == report.planned
    rows = state(settings)
    assert all(d.status == "queued" and d.attempts == 0 for d in rows.values())
    assert not any(d.status == "sending" for d in rows.values())
