"""Sending, end to end: ingest → rank → render → SMTP into a real aiosmtpd server, parsed back."""

from __future__ import annotations

import dataclasses
import gc
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import pytest
from conftest import FeedServer, RecordingHandler, Route
from sqlalchemy import event
from sqlmodel import Session, select

from digest import delivery, subscriptions
from digest.config import Settings
from digest.db import make_engine
from digest.delivery import record
from digest.delivery.compose import Composing
from digest.delivery.composers import ProcessComposer, Work
from digest.delivery.record import Job
from digest.delivery.transports import Envelope, Mailroom, Transport
from digest.errors import DigestError
from digest.ingest import SourceSpec, ingest
from digest.models import Delivery, SentPaper
from digest.render import Renderer


def relay(settings: Settings, controller: Any) -> Settings:
    smtp = dataclasses.replace(
        settings.smtp, host="127.0.0.1", port=controller.port, security="none"
    )
    return dataclasses.replace(settings, smtp=smtp)


def parsed(handler: RecordingHandler) -> list[EmailMessage]:
    return [
        cast(EmailMessage, message_from_bytes(e.original_content, policy=policy.default))
        for e in handler.envelopes
    ]


def subscribe(settings: Settings, email: str, keywords: str, **kw: Any) -> None:
    subscriptions.add(
        make_engine(settings.database.url), email, subscriptions.make_interests(keywords, **kw)
    )


@pytest.fixture
def seeded(settings: Settings, shared: Path) -> Settings:
    ingest(
        make_engine(settings.database.url),
        settings,
        [SourceSpec(name="a", location=str(shared / "seeds/daily-papers-a.txt"))],
    )
    return settings


def test_digest_arrives_well_formed(seeded: Settings, smtp_server: Any) -> None:
    controller, handler = smtp_server
    settings = relay(seeded, controller)
    subscribe(settings, "ada@example.org", "quantization, llm inference", max_papers=5)
    subscribe(settings, "grace@example.org", "dataset distillation")
    engine = make_engine(settings.database.url)

    report = delivery.send(engine, settings, renderer=Renderer.create())
    assert (report.sent, report.failed, report.bounced) == (2, 0, 0), report.errors
    mails = {str(m["To"]): m for m in parsed(handler)}
    assert set(mails) == {"ada@example.org", "grace@example.org"}
    assert {tuple(e.rcpt_tos) for e in handler.envelopes} == {
        ("ada@example.org",),
        ("grace@example.org",),
    }

    msg = mails["ada@example.org"]
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    for header in (
        "Message-ID",
        "Date",
        "List-Id",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "From",
        "Subject",
    ):
        assert msg[header], header
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsub = str(msg["List-Unsubscribe"])
    assert "<https://digest.example.org/unsubscribe/" in unsub and "<mailto:" in unsub
    assert "digest.localhost" in str(msg["List-Id"])
    assert re.match(r"^<[^<>@\s]+@[^<>@\s]+>$", str(msg["Message-ID"]))

    html = parts[1].get_content()
    text = parts[0].get_content()
    # At most the reader's 5 papers; the top one is named in the subject and in both parts.
    links = re.findall(
        r'<a [^>]*href="https://arxiv.org/abs/|<a [^>]*href="[^"]*"[^>]*style="[^"]*"', html
    )
    assert links, "title links carry inline styles"
    assert "quantization" in html.lower() and "<mark" in html
    assert "Unsubscribe" in html or "unsubscribe" in html
    # Styles are inlined on the content, not only in a <style> block Gmail may drop.
    body_only = re.sub(r"<style.*?</style>", "", html, flags=re.S)
    assert body_only.count('style="') >= 10
    delivery_rows = _deliveries(settings)
    ada = next(d for d in delivery_rows if d.paper_keys and len(d.paper_keys) <= 5)
    assert 1 <= len(ada.paper_keys) <= 5
    assert "Why" in text or "matched" in text


def _deliveries(settings: Settings) -> list[Delivery]:
    with Session(make_engine(settings.database.url)) as session:
        return list(session.exec(select(Delivery)).all())


def test_send_twice_sends_nothing_twice(seeded: Settings, smtp_server: Any) -> None:
    controller, handler = smtp_server
    settings = relay(seeded, controller)
    subscribe(settings, "ada@example.org", "quantization")
    subscribe(settings, "nobody@example.org", "underwater basket weaving")
    subscribe(settings, "gone@example.org", "quantization")
    engine = make_engine(settings.database.url)
    subscriptions.unsubscribe(engine, "gone@example.org")

    first = delivery.send(engine, settings, renderer=Renderer.create())
    assert (first.sent, first.skipped) == (1, 1)
    second = delivery.send(engine, settings, renderer=Renderer.create())
    assert (second.planned, second.sent) == (0, 0)
    assert [str(m["To"]) for m in parsed(handler)] == ["ada@example.org"]
    statuses = sorted(d.status for d in _deliveries(settings))
    assert statuses == ["sent", "skipped"]


def test_claims_lease_each_delivery_to_one_owner(seeded: Settings) -> None:
    # each claim leases what no other owner holds
    engine = make_engine(seeded.database.url)
    for i in range(7):
        subscribe(seeded, f"r{i}@example.org", "quantization")
    now = datetime.now(UTC)
    assert delivery.plan(engine, seeded, now=now) == 7
    first = delivery.claim_ids(engine, seeded, owner="a", now=now, limit=3)
    second = delivery.claim_ids(engine, seeded, owner="b", now=now, limit=3)
    third = delivery.claim_ids(engine, seeded, owner="c", now=now)
    assert delivery.claim_ids(engine, seeded, owner="d", now=now) == []
    every = sorted(d.id or 0 for d in _deliveries(seeded))
    assert first + second + third == every
    assert (len(first), len(second), len(third)) == (3, 3, 1)
    owners = {d.id: (d.status, d.lease_owner) for d in _deliveries(seeded)}
    assert {owners[i] for i in first} == {("sending", "a")}
    assert {owners[i] for i in second} == {("sending", "b")}
    assert [owners[i] for i in third] == [("sending", "c")]


def test_a_paper_reaches_a_reader_once(seeded: Settings, smtp_server: Any) -> None:
    controller, handler = smtp_server
    settings = relay(seeded, controller)
    subscribe(
        settings,
        "ada@example.org",
        "quantization, inference, training, language models",
        max_papers=3,
    )
    engine = make_engine(settings.database.url)
    today = datetime.now(UTC)
    delivery.send(engine, settings, renderer=Renderer.create(), now=today)
    delivery.send(engine, settings, renderer=Renderer.create(), now=today + timedelta(days=1))
    delivery.send(engine, settings, renderer=Renderer.create(), now=today + timedelta(days=2))
    with Session(engine) as session:
        sent = session.exec(select(SentPaper)).all()
        keys = [k for d in session.exec(select(Delivery)).all() for k in d.paper_keys]
    assert len(keys) == len(set(keys)) == len(sent)
    assert len(parsed(handler)) == 3 and len(keys) == 9


def test_a_connection_sends_at_most_record_window_messages_ahead_of_their_records(
    seeded: Settings, smtp_server: Any
) -> None:
    # Records are held at the database (a trigger on sentpaper waits on a gate): each
    # connection must stop after RECORD_WINDOW accepted messages, the crash window, and go
    # on once they are written.
    controller, handler = smtp_server
    settings = relay(seeded, controller)
    settings = dataclasses.replace(settings, smtp=dataclasses.replace(settings.smtp, connections=2))
    readers = 2 * delivery.RECORD_WINDOW + 10
    for i in range(readers):
        subscribe(settings, f"r{i:02d}@example.org", "language models, training")
    engine = make_engine(settings.database.url)
    gate = threading.Event()

    @event.listens_for(engine, "connect")
    def _hold_records(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.create_function("hold", 0, lambda: gate.wait(30) and 0)
        dbapi_connection.execute(
            "CREATE TEMP TRIGGER hold_records BEFORE INSERT ON sentpaper BEGIN SELECT hold(); END"
        )

    engine.dispose()  # every connection from here on has the trigger
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(delivery.send, engine, settings, renderer=Renderer.create())
        try:
            expected = 2 * delivery.RECORD_WINDOW
            deadline = time.monotonic() + 30
            while len(handler.envelopes) < expected and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.5)  # time for any further message to arrive, were one sent
            held = len(handler.envelopes)
            statuses = {d.status for d in _deliveries(settings)}
        finally:
            gate.set()
        report = running.result(timeout=60)
    assert held == expected
    assert "sent" not in statuses
    assert report.sent == readers and len(handler.envelopes) == readers
    assert {d.status for d in _deliveries(settings)} == {"sent"}


def test_the_recorder_writes_as_soon_as_every_connection_waits_on_it(
    seeded: Settings, smtp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a gathering time far longer than the test, records are written only when the
    # batch holds every record the connections can have outstanding (then none can send on),
    # and at the end: batches of 2 x RECORD_WINDOW, then the rest.
    monkeypatch.setattr(record, "RECORD_GATHER", 300.0)
    controller, handler = smtp_server
    settings = relay(seeded, controller)
    settings = dataclasses.replace(settings, smtp=dataclasses.replace(settings.smtp, connections=2))
    full = 2 * delivery.RECORD_WINDOW
    readers = 2 * full + delivery.RECORD_WINDOW
    for i in range(readers):
        subscribe(settings, f"r{i:02d}@example.org", "language models, training")
    engine = make_engine(settings.database.url)
    batches: list[int] = []
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(
            delivery.send, engine, settings, renderer=Renderer.create(), progress=batches.append
        )
        report = running.result(timeout=120)  # were it waiting out the 300 s, this fails
    assert report.sent == readers and len(handler.envelopes) == readers
    assert batches == [full, full, delivery.RECORD_WINDOW]
    assert {d.status for d in _deliveries(settings)} == {"sent"}


def test_permanent_refusal_bounces_and_others_still_get_mail(
    seeded: Settings, smtp_server: Any
) -> None:
    controller, handler = smtp_server

    class Refusing(RecordingHandler):
        async def handle_RCPT(
            self, server: Any, session: Any, envelope: Any, address: str, options: Any
        ) -> str:  # noqa: N802
            if address.startswith("refused@"):
                return "550 5.1.1 No such user"
            envelope.rcpt_tos.append(address)
            return "250 OK"

    refusing = Refusing()
    controller.handler = refusing
    settings = relay(seeded, controller)
    subscribe(settings, "refused@example.org", "quantization")
    subscribe(settings, "ada@example.org", "quantization")
    report = delivery.send(make_engine(settings.database.url), settings, renderer=Renderer.create())
    assert (report.sent, report.bounced) == (1, 1)
    assert [str(m["To"]) for m in parsed(refusing)] == ["ada@example.org"]
    bounced = [d for d in _deliveries(settings) if d.status == "bounced"]
    assert bounced and "550" in (bounced[0].last_error or "")


HOSTILE_RSS = (
    b'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>t</title>'
    b"<item><title>&lt;script&gt;alert(1)&lt;/script&gt; Quantization attack</title>"
    b"<link>https://example.org/p/1</link><description>A quantization paper &lt;img src=x onerror=alert(2)&gt;"
    b" about \xff\xfe broken bytes.</description><guid>p1</guid></item>"
    b"<item><title>Header\r\nBcc: victim@example.org\r\nquantization injection</title>"
    b"<link>https://example.org/p/2</link><description>quantization again</description><guid>p2</guid></item>"
    b"<item><title>Huge quantization abstract</title><link>javascript:alert(3)</link><description>"
    + b"quantization " * 80_000
    + b"</description><guid>p3</guid></item></channel></rss>"
)


def test_hostile_feed_content_is_escaped_and_bounded(
    settings: Settings, smtp_server: Any, feed_server: FeedServer
) -> None:
    controller, handler = smtp_server
    feed_server.routes["/evil"] = Route(body=HOSTILE_RSS, content_type="application/rss+xml")
    settings = relay(settings, controller)
    engine = make_engine(settings.database.url)
    report = ingest(engine, settings, [SourceSpec(name="evil", location=feed_server.url("/evil"))])
    assert report.sources[0].new == 3, report.sources[0]
    subscribe(settings, "ada@example.org", "quantization")
    assert delivery.send(engine, settings, renderer=Renderer.create()).sent == 1
    [envelope] = handler.envelopes
    raw: bytes = envelope.original_content
    assert len(raw) < 300_000, "a 1 MB abstract must not make a 1 MB mail"
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"Bcc:" not in head and b"victim@" not in head
    [msg] = parsed(handler)
    assert msg["Bcc"] is None
    html = msg.get_body(preferencelist=("html",)).get_content()  # type: ignore[union-attr]
    assert "<script" not in html.lower()
    assert "<img src=x" not in html
    assert "javascript:" not in html
    text = msg.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "Quantization attack" in text


_TOKEN = re.compile(r"/(digest|unsubscribe|preferences)/[\w.-]+")


def test_a_composing_process_sends_what_one_process_sends(
    settings: Settings,
    tmp_path: Path,
    shared: Path,
    smtp_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Above [delivery] compose_process_from a second process composes: same mail, same records."""
    controller, handler = smtp_server
    settings = dataclasses.replace(  # several chunks: composed one ahead of sending
        settings, delivery=dataclasses.replace(settings.delivery, chunk_size=4)
    )
    keywords = [
        "quantization",
        "dataset distillation",
        "llm inference, serving",
        "speech recognition",
        "underwater basket weaving",  # nothing matches: skipped
        "mixture of experts",
        "diffusion models",
        "reinforcement learning",
        "agents",
        "vision language models",
    ]
    runs: dict[
        int, tuple[delivery.SendReport, dict[str, tuple[str, str]], list[tuple[int, int]]]
    ] = {}
    for from_ in (0, 1):
        base = dataclasses.replace(
            settings,
            database=dataclasses.replace(
                settings.database, url=f"sqlite:///{tmp_path}/run{from_}.db"
            ),
            delivery=dataclasses.replace(settings.delivery, compose_process_from=from_),
        )
        engine = make_engine(base.database.url)
        ingest(
            engine, base, [SourceSpec(name="a", location=str(shared / "seeds/daily-papers-a.txt"))]
        )
        for i, kw in enumerate(keywords):
            subscribe(base, f"reader{i}@example.org", kw)
        subscribe(base, "gone@example.org", "quantization")
        subscriptions.unsubscribe(engine, "gone@example.org")
        handler.envelopes.clear()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="digest.delivery"):
            report = delivery.send(engine, relay(base, controller), renderer=Renderer.create())
        assert ("event=compose-process" in caplog.text) == (from_ == 1)
        mails = {  # the signed links carry the time they were made: left out
            str(m["To"]): tuple(_TOKEN.sub(r"/\1/TOKEN", p.get_content()) for p in m.iter_parts())
            for m in parsed(handler)
        }
        assert len(mails) == len(handler.envelopes)  # one message per reader
        with Session(engine) as session:
            sent = sorted(
                (row.subscriber_id, row.paper_id) for row in session.exec(select(SentPaper)).all()
            )
        runs[from_] = (report, mails, sent)  # type: ignore[assignment]
    (one, one_mails, one_sent), (two, two_mails, two_sent) = runs[0], runs[1]
    assert (two.sent, two.skipped, two.failed) == (one.sent, one.skipped, one.failed) == (9, 1, 0)
    assert two_mails == one_mails
    assert two_sent == one_sent and len(two_sent) > 9


def _ten_readers_composed_elsewhere(
    settings: Settings, tmp_path: Path, shared: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Settings, Any]:
    """Settings and engine for ten readers, sent in chunks of four by a composing process."""
    settings = dataclasses.replace(
        settings, delivery=dataclasses.replace(settings.delivery, chunk_size=4)
    )
    base = dataclasses.replace(
        settings,
        database=dataclasses.replace(settings.database, url=f"sqlite:///{tmp_path}/run.db"),
        delivery=dataclasses.replace(settings.delivery, compose_process_from=1),
    )
    engine = make_engine(base.database.url)
    ingest(engine, base, [SourceSpec(name="a", location=str(shared / "seeds/daily-papers-a.txt"))])
    for i in range(10):
        subscribe(base, f"reader{i}@example.org", "diffusion models, agents, quantization")
    return base, engine


class _KilledAfter:
    """The real composing process, killed (SIGKILL) once the senders have taken ``n`` of its
    messages: a fault injected through the composer interface."""

    def __init__(self, composing: Composing, work: Work, *, n: int) -> None:
        self.inner = ProcessComposer(composing, work)
        self.n, self.taken = n, 0
        self.lock = threading.Lock()

    @property
    def failure(self) -> BaseException | None:
        return self.inner.failure

    def start(self) -> None:
        self.inner.start()

    def next(self) -> Job | None:
        with self.lock:
            if self.taken == self.n:
                self.inner.child.process.kill()
                self.inner.child.process.wait()
            job = self.inner.next()
            self.taken += job is not None
            return job

    def close(self, *, abandon: bool) -> None:
        self.inner.close(abandon=abandon)


def test_a_composing_process_that_dies_loses_nothing_and_sends_nothing_twice(
    settings: Settings,
    tmp_path: Path,
    shared: Path,
    smtp_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run stops with a clear error; what the process held goes back to the queue, and
    the next run sends it, once."""
    controller, handler = smtp_server
    base, engine = _ten_readers_composed_elsewhere(settings, tmp_path, shared, monkeypatch)
    at = datetime.now(UTC)  # the papers were first seen just now: today's edition
    delivery.plan(engine, base, now=at)
    with pytest.raises(DigestError, match=r"composing process ended unexpectedly \(exit code -9\)"):
        delivery.deliver(
            engine,
            relay(base, controller),
            renderer=Renderer.create(),
            now=at,
            composer=lambda composing, work: _KilledAfter(composing, work, n=4),
        )
    first = [str(m["To"]) for m in parsed(handler)]
    # the first chunk, and whatever of the second was in the pipe when the process died
    assert 4 <= len(first) < 10 and len(set(first)) == len(first)
    with Session(engine) as session:
        statuses = sorted(d.status for d in session.exec(select(Delivery)).all())
    assert statuses == ["queued"] * (10 - len(first)) + ["sent"] * len(first)
    with ThreadPoolExecutor(1) as other:  # another sender: the lease owner is a thread
        report = other.submit(
            delivery.send, engine, relay(base, controller), renderer=Renderer.create(), now=at
        ).result()
    assert report.sent == 10 - len(first)
    everyone = [str(m["To"]) for m in parsed(handler)]
    assert sorted(everyone) == sorted(f"reader{i}@example.org" for i in range(10))
    # what the failed run kept is freed without an error (which pytest reports as the test's)
    gc.collect()


@pytest.mark.parametrize("composing_process", [False, True])
def test_a_chunk_that_fails_to_compose_sends_what_was_composed_and_keeps_the_rest(
    settings: Settings,
    tmp_path: Path,
    shared: Path,
    smtp_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    composing_process: bool,
) -> None:
    """A chunk whose rows cannot be read (a reader's keywords are not JSON) stops the run with
    the cause; the chunk before it is sent, the failed chunk's deliveries go back to the
    queue."""
    controller, handler = smtp_server
    base, engine = _ten_readers_composed_elsewhere(settings, tmp_path, shared, monkeypatch)
    base = dataclasses.replace(
        base,
        delivery=dataclasses.replace(base.delivery, compose_process_from=int(composing_process)),
    )
    with engine.begin() as conn:  # the sixth reader: in the second chunk of four
        conn.exec_driver_sql(
            "UPDATE subscriber SET keywords = '{not json' WHERE email = 'reader5@example.org'"
        )
    at = datetime.now(UTC)  # the papers were first seen just now: today's edition
    with pytest.raises(DigestError if composing_process else ValueError, match=r"(?i)json|expect"):
        delivery.send(engine, relay(base, controller), renderer=Renderer.create(), now=at)
    assert sorted(str(m["To"]) for m in parsed(handler)) == [
        f"reader{i}@example.org" for i in range(4)
    ]
    with Session(engine) as session:
        statuses = {d.subscriber_id: d.status for d in session.exec(select(Delivery)).all()}
    assert sorted(statuses.values()).count("sent") == 4
    assert {statuses[i] for i in (5, 6, 7, 8)} == {"queued"}  # the failed chunk, given back


class _StopAfterFirst(Mailroom):
    """The relay, and the send told to stop once the relay accepted its first message."""

    def __init__(self, inner: Mailroom, stop: threading.Event) -> None:
        self.inner, self.stop = inner, stop

    def open(self) -> Transport:
        inner, stop = self.inner.open(), self.stop

        class Stopping:
            def send(self, envelope: Envelope, data: bytes, **kw: Any) -> None:
                inner.send(envelope, data, **kw)
                stop.set()

            def close(self) -> None:
                inner.close()

        return Stopping()


@pytest.mark.parametrize("composing_process", [False, True])
def test_a_stopped_send_gives_back_what_it_did_not_send(
    settings: Settings,
    tmp_path: Path,
    shared: Path,
    smtp_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    composing_process: bool,
) -> None:
    """A send told to stop (the scheduler's shutdown) ends soon, and leaves every digest it did
    not send due again, not leased: the next send sends each of those once."""
    controller, handler = smtp_server
    base, engine = _ten_readers_composed_elsewhere(settings, tmp_path, shared, monkeypatch)
    base = relay(
        dataclasses.replace(
            base,
            delivery=dataclasses.replace(
                base.delivery, compose_process_from=int(composing_process)
            ),
        ),
        controller,
    )
    at = datetime.now(UTC)
    delivery.plan(engine, base, now=at)
    stop = threading.Event()
    report = delivery.deliver(
        engine,
        base,
        renderer=Renderer.create(),
        mailroom=_StopAfterFirst(delivery.mailroom_for(base), stop),
        now=at,
        stop=stop,
    )
    with Session(engine) as session:
        statuses = [d.status for d in session.exec(select(Delivery)).all()]
    assert stop.is_set() and 1 <= report.sent == statuses.count("sent") == len(parsed(handler))
    assert statuses.count("sent") + statuses.count("queued") == 10  # none left leased
    if composing_process:  # each sender holds one message at most when it stops
        assert report.sent <= base.smtp.connections
    again = delivery.deliver(engine, base, renderer=Renderer.create(), now=at)
    assert report.sent + again.sent == 10
    everyone = [str(m["To"]) for m in parsed(handler)]
    assert sorted(everyone) == sorted(f"reader{i}@example.org" for i in range(10))
