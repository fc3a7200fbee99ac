"""Leases against a slow relay: a send that outlives its lease keeps it, or stops sending."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
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
from digest.models import Delivery
from digest.render import Renderer
from digest.sink import free_port


class SlowRelay(RecordingHandler):
    """A relay that takes ``seconds`` to accept each message."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        await asyncio.sleep(self.seconds)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def slow_relay() -> Iterator[tuple[Controller, SlowRelay]]:
    handler = SlowRelay(1.0)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, handler
    controller.stop()


def _world(settings: Settings, shared: Path, controller: Controller, readers: int) -> Settings:
    """``readers`` readers of today's seed papers, one SMTP connection to ``controller``."""
    settings = dataclasses.replace(
        settings,
        smtp=dataclasses.replace(
            settings.smtp, host="127.0.0.1", port=controller.port, security="none", connections=1
        ),
        delivery=dataclasses.replace(settings.delivery, lease_seconds=3.0),
    )
    engine = make_engine(settings.database.url)
    ingest(
        engine, settings, [SourceSpec(name="a", location=str(shared / "seeds/daily-papers-a.txt"))]
    )
    for i in range(readers):
        subscriptions.add(
            engine,
            f"reader{i}@example.org",
            subscriptions.make_interests("language models, training"),
        )
    return settings


def _received(handler: RecordingHandler) -> list[str]:
    return sorted(r for e in handler.envelopes for r in e.rcpt_tos)


def test_a_send_longer_than_its_lease_is_not_sent_again_by_a_worker(
    settings: Settings, shared: Path, slow_relay: tuple[Controller, SlowRelay]
) -> None:
    """`digest send` takes 1 s a message with a 3 s lease; a worker polling beside it all along
    finds nothing to take, because the lease is renewed from the current time."""
    controller, handler = slow_relay
    settings = _world(settings, shared, controller, readers=6)
    engine = make_engine(settings.database.url)
    started = datetime.now(UTC)
    with ThreadPoolExecutor(2) as pool:
        sending = pool.submit(delivery.send, engine, settings, renderer=Renderer.create())

        def worker() -> int:
            sent = 0
            while not sending.done():
                sent += delivery.deliver(engine, settings, renderer=Renderer.create()).sent
                time.sleep(0.3)
            return sent

        by_worker = pool.submit(worker)
        report = sending.result(timeout=60)
        assert by_worker.result(timeout=60) == 0
    assert report.sent == 6
    assert _received(handler) == sorted(f"reader{i}@example.org" for i in range(6))
    with Session(engine) as session:
        times = sorted(d.sent_at for d in session.exec(select(Delivery)).all() if d.sent_at)
    # the clock ran during the send: the records carry when each message went
    assert len(set(times)) == 6 and (times[-1] - times[0]).total_seconds() >= 3
    assert times[0] >= started


def test_a_sender_that_cannot_renew_its_lease_stops_sending(
    settings: Settings, shared: Path, slow_relay: tuple[Controller, SlowRelay]
) -> None:
    """With every renewal refused by the database, the sender stops before its lease may have
    passed to another worker, and gives back what it did not send."""
    controller, handler = slow_relay
    handler.seconds = 0.5
    settings = _world(settings, shared, controller, readers=10)
    path = settings.database.url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "CREATE TRIGGER no_renewal BEFORE UPDATE OF lease_until ON delivery "
            "WHEN OLD.status = 'sending' AND NEW.status = 'sending' "
            "BEGIN SELECT RAISE(ABORT, 'renewal refused'); END"
        )
    engine = make_engine(settings.database.url)
    report = delivery.send(engine, settings, renderer=Renderer.create())
    assert report.stopped is not None and "lease" in report.stopped
    # the hold is sure for lease_seconds less a margin (2.7 s): a handful of messages
    assert 1 <= report.sent <= 6 and report.released == 10 - report.sent
    with Session(engine) as session:
        statuses = sorted(d.status for d in session.exec(select(Delivery)).all())
    assert statuses == ["queued"] * (10 - report.sent) + ["sent"] * report.sent
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("DROP TRIGGER no_renewal")
    handler.seconds = 0.0
    again = delivery.deliver(engine, settings, renderer=Renderer.create())
    assert report.sent + again.sent == 10
    assert _received(handler) == sorted(f"reader{i}@example.org" for i in range(10))
