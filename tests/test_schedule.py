"""Scheduled delivery: who is due when, catching up after a restart, and `digest status`."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from apscheduler.triggers.interval import IntervalTrigger
from click.testing import CliRunner
from conftest import FeedServer, Route
from sqlmodel import Session, select

from digest import delivery, subscriptions
from digest.cli import main
from digest.config import Settings, SourceSettings
from digest.db import make_engine
from digest.ingest import SourceSpec, ingest
from digest.models import Delivery, Run, Subscriber
from digest.render import Renderer
from digest.scheduler import build_scheduler, ingest_trigger, previous_fire, purge, tick


def relay(settings: Settings, controller: Any, **delivery: Any) -> Settings:
    smtp = dataclasses.replace(
        settings.smtp, host="127.0.0.1", port=controller.port, security="none"
    )
    return dataclasses.replace(
        settings, smtp=smtp, delivery=dataclasses.replace(settings.delivery, **delivery)
    )


def add(settings: Settings, email: str, keywords: str = "quantization", **kw: Any) -> None:
    subscriptions.add(
        make_engine(settings.database.url), email, subscriptions.make_interests(keywords, **kw)
    )


def editions_of(settings: Settings) -> dict[str, str]:
    with Session(make_engine(settings.database.url)) as session:
        rows = session.exec(select(Delivery)).all()
        subs = {s.id: s.email for s in subscriptions.listing(make_engine(settings.database.url))}
        return {subs[d.subscriber_id]: d.edition for d in rows}


def backdate(settings: Settings, days: int = 30) -> None:
    """Make every subscriber an old one (subscribed well before any due time in the test)."""
    engine = make_engine(settings.database.url)
    with Session(engine) as session:
        for sub in session.exec(select(Subscriber)).all():
            sub.created_at = datetime(2026, 10, 1, tzinfo=UTC) - timedelta(days=days)
            session.add(sub)
        session.commit()


def test_due_at_each_readers_local_hour(settings: Settings) -> None:
    engine = make_engine(settings.database.url)
    add(settings, "tokyo@example.org", timezone="Asia/Tokyo", send_hour=7)
    add(settings, "berlin@example.org", timezone="Europe/Berlin", send_hour=7)
    add(settings, "weekly@example.org", frequency="weekly", weekday=0, send_hour=9, timezone="UTC")
    backdate(settings)
    # Sunday 21:00 UTC: Berlin's Sunday hour has passed, the weekly reader's week began
    # Monday (their 09:00 passed) — both due; in Tokyo it is already Monday, 06:00: not yet.
    assert delivery.plan_due(engine, settings, now=datetime(2026, 11, 22, 21, 0, tzinfo=UTC)) == 2
    assert all_editions(settings) == {
        ("berlin@example.org", "2026-11-22"),
        ("weekly@example.org", "2026-W47"),
    }
    # 21:30 UTC = Monday 06:30 in Tokyo: not yet.
    assert delivery.plan_due(engine, settings, now=datetime(2026, 11, 22, 21, 30, tzinfo=UTC)) == 0
    # 22:05 UTC = 07:05 Monday in Tokyo: Tokyo's Monday edition, nobody else's.
    assert delivery.plan_due(engine, settings, now=datetime(2026, 11, 22, 22, 5, tzinfo=UTC)) == 1
    assert ("tokyo@example.org", "2026-11-23") in all_editions(settings)
    # Monday 06:00 UTC = 07:00 in Berlin; the weekly reader (Mondays 09:00 UTC) still waits.
    assert delivery.plan_due(engine, settings, now=datetime(2026, 11, 23, 6, 0, tzinfo=UTC)) == 1
    assert ("berlin@example.org", "2026-11-23") in all_editions(settings)
    assert delivery.plan_due(engine, settings, now=datetime(2026, 11, 23, 8, 59, tzinfo=UTC)) == 0
    assert delivery.plan_due(engine, settings, now=datetime(2026, 11, 23, 9, 0, tzinfo=UTC)) == 1
    assert ("weekly@example.org", "2026-W48") in all_editions(settings)
    # Planning again plans nothing twice.
    assert delivery.plan_due(engine, settings, now=datetime(2026, 11, 23, 9, 30, tzinfo=UTC)) == 0


def all_editions(settings: Settings) -> set[tuple[str, str]]:
    engine = make_engine(settings.database.url)
    subs = {s.id: s.email for s in subscriptions.listing(engine)}
    with Session(engine) as session:
        return {(subs[d.subscriber_id], d.edition) for d in session.exec(select(Delivery)).all()}


def test_a_new_reader_waits_for_their_next_hour(settings: Settings) -> None:
    engine = make_engine(settings.database.url)
    add(settings, "new@example.org", send_hour=7, timezone="UTC")
    with Session(engine) as session:
        sub = session.exec(select(Subscriber)).one()
        sub.created_at = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)  # after today's 07:00
        session.add(sub)
        session.commit()
    assert delivery.plan_due(engine, settings, now=datetime(2026, 11, 22, 12, 0, tzinfo=UTC)) == 0
    assert delivery.plan_due(engine, settings, now=datetime(2026, 11, 23, 7, 0, tzinfo=UTC)) == 1


def test_a_restart_catches_up_the_missed_hour(settings: Settings) -> None:
    engine = make_engine(settings.database.url)
    add(settings, "weekly@example.org", frequency="weekly", weekday=0, send_hour=9, timezone="UTC")
    add(settings, "daily@example.org", send_hour=7, timezone="UTC")
    backdate(settings)
    # The server was down all of Monday morning and comes back on Wednesday at noon.
    planned = delivery.plan_due(engine, settings, now=datetime(2026, 11, 25, 12, 0, tzinfo=UTC))
    assert planned == 2
    assert editions_of(settings) == {
        "weekly@example.org": "2026-W48",
        "daily@example.org": "2026-11-25",
    }


def test_tick_sends_due_digests_once(settings: Settings, shared: Path, smtp_server: Any) -> None:
    controller, handler = smtp_server
    settings = relay(settings, controller)
    engine = make_engine(settings.database.url)
    ingest(
        engine, settings, [SourceSpec(name="a", location=str(shared / "seeds/daily-papers-a.txt"))]
    )
    add(settings, "early@example.org", send_hour=0)
    add(settings, "late@example.org", send_hour=23)
    backdate(settings)
    now = datetime.now(UTC).replace(hour=12, minute=0)
    first = tick(engine, settings, renderer=Renderer.create(), now=now)
    assert (first.planned, first.sent) == (1, 1)
    again = tick(engine, settings, renderer=Renderer.create(), now=now + timedelta(minutes=1))
    assert (again.planned, again.sent) == (0, 0)
    assert [e.rcpt_tos for e in handler.envelopes] == [["early@example.org"]]
    with Session(engine) as session:
        kinds = [r.kind for r in session.exec(select(Run)).all()]
    assert kinds.count("send") == 1 and kinds.count("ingest") == 1


def test_nothing_matched_note_is_a_setting(
    settings: Settings, shared: Path, smtp_server: Any
) -> None:
    controller, handler = smtp_server
    engine = make_engine(settings.database.url)
    ingest(
        engine, settings, [SourceSpec(name="a", location=str(shared / "seeds/daily-papers-a.txt"))]
    )
    add(settings, "skip@example.org", "underwater basket weaving")
    report = delivery.send(engine, relay(settings, controller), renderer=Renderer.create())
    assert (report.sent, report.skipped) == (0, 1)

    add(settings, "note@example.org", "underwater basket weaving")
    report = delivery.send(
        engine, relay(settings, controller, empty="note"), renderer=Renderer.create()
    )
    assert report.sent == 1
    [envelope] = handler.envelopes
    msg = message_from_bytes(envelope.original_content, policy=policy.default)
    assert envelope.rcpt_tos == ["note@example.org"]
    text = msg.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "matched" in text.lower()


def test_scheduler_jobs_and_ingest_catch_up(settings: Settings) -> None:
    engine = make_engine(settings.database.url)
    scheduler = build_scheduler(
        settings, engine, renderer=Renderer.create(), mailroom=delivery.RecordingMailroom()
    )
    ids = {job.id for job in scheduler.get_jobs()}
    # No ingest has ever run, and the cron has fired in the past week: catch up at start.
    assert {"ingest", "deliver", "ingest-catch-up", "purge"} <= ids
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert previous_fire(ingest_trigger(settings), now) == datetime(2026, 11, 22, 5, 0, tzinfo=UTC)


def test_the_purge_job_deletes_unconfirmed_subscriptions_after_pending_days(
    settings: Settings,
) -> None:
    engine = make_engine(settings.database.url)
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    web = subscriptions.Origin(channel="web", key="192.0.2.1", per_hour=9, total_per_hour=9)
    for email, days in (("old@example.org", 8), ("young@example.org", 6)):
        subscriptions.request(
            engine,
            email,
            subscriptions.make_interests("llm"),
            now=now - timedelta(days=days),
            interval_seconds=300,
            origin=web,
        )
    subscriptions.add(engine, "reader@example.org", subscriptions.make_interests("llm"))
    assert settings.web.pending_days == 7
    assert purge(engine, settings, now=now) == (1, 2)
    assert [r.email for r in subscriptions.listing(engine)] == [
        "reader@example.org",
        "young@example.org",
    ]
    longer = dataclasses.replace(settings, web=dataclasses.replace(settings.web, pending_days=9))
    subscriptions.request(
        engine,
        "old@example.org",
        subscriptions.make_interests("llm"),
        now=now - timedelta(days=8),
        interval_seconds=300,
        origin=web,
    )
    assert purge(engine, longer, now=now) == (0, 1)


def test_status_explains_a_reader(
    settings: Settings, shared: Path, smtp_server: Any, tmp_path: Path
) -> None:
    controller, _ = smtp_server
    config = Path(settings.config_path)
    config.write_text(
        config.read_text()
        + f'\n[smtp]\nhost = "127.0.0.1"\nport = {controller.port}\nsecurity = "none"\n'
    )
    env = {"DIGEST_SECRET_KEY": "k" * 40}
    run = CliRunner().invoke
    assert (
        run(
            main,
            ["--config", str(config), "ingest", str(shared / "seeds/daily-papers-a.txt")],
            env=env,
        ).exit_code
        == 0
    )
    run(
        main, ["--config", str(config), "subscribe", "a@example.org", "-k", "quantization"], env=env
    )
    run(
        main,
        ["--config", str(config), "subscribe", "b@example.org", "-k", "underwater basket weaving"],
        env=env,
    )
    run(
        main,
        [
            "--config",
            str(config),
            "subscribe",
            "c@example.org",
            "-k",
            "quantization",
            "--hour",
            "23",
            "--timezone",
            "Pacific/Kiritimati",
        ],
        env=env,
    )
    run(main, ["--config", str(config), "unsubscribe", "c@example.org"], env=env)
    assert "1 sent" in run(main, ["--config", str(config), "send"], env=env).output

    out = run(main, ["--config", str(config), "status"], env=env).output
    assert "Last ingest:" in out and "75 new" in out
    assert "Last send:" in out and "1 sent" in out and "1 skipped" in out
    assert "Next runs" in out
    assert (
        "sent: edition"
        in run(main, ["--config", str(config), "status", "a@example.org"], env=env).output
    )
    assert (
        "no matching papers"
        in run(main, ["--config", str(config), "status", "b@example.org"], env=env).output
    )
    assert (
        "unsubscribed"
        in run(main, ["--config", str(config), "status", "c@example.org"], env=env).output
    )
    missing = run(main, ["--config", str(config), "status", "nobody@example.org"], env=env)
    assert missing.exit_code == 1 and "no subscriber" in missing.output


@pytest.mark.timeout(120)
def test_a_stuck_fetch_does_not_block_later_scheduled_ingests(
    settings: Settings, shared: Path, feed_server: FeedServer
) -> None:
    # A server that sends a byte every 0.2 s would hold a fetch for minutes. The deadline ends
    # it; the ingest job (one instance at a time, missed fires coalesced) then fires again.
    body = (shared / "fixtures/arxiv_rss/rss2_cs.LG_2026-04-27_trimmed3_distill.xml").read_bytes()
    feed_server.routes["/trickle"] = Route(body=body, trickle=0.2)
    stuck = dataclasses.replace(
        settings,
        ingest=dataclasses.replace(settings.ingest, timeout=3.0, deadline=1.0),
        sources=(
            SourceSettings(name="trickle", location=feed_server.url("/trickle")),
            SourceSettings(name="good", location=str(shared / "seeds/daily-papers-a.txt")),
        ),
    )
    engine = make_engine(settings.database.url)
    scheduler = build_scheduler(stuck, engine, renderer=Renderer.create())
    for other in ("deliver", "ingest-catch-up"):
        scheduler.remove_job(other)
    scheduler.reschedule_job("ingest", trigger=IntervalTrigger(seconds=1))
    scheduler.start()
    try:
        job = scheduler.get_job("ingest")
        assert job.max_instances == 1 and job.coalesce
        runs: list[Run] = []
        for _ in range(600):
            with Session(engine) as session:
                runs = list(session.exec(select(Run).where(Run.kind == "ingest")).all())
            if len(runs) >= 3:
                break
            threading.Event().wait(0.1)
    finally:
        scheduler.shutdown(wait=True)
    assert len(runs) >= 3
    assert all("took longer than the 1-second deadline" in r.errors[0] for r in runs)
    assert runs[0].counts["new"] == 75


@pytest.mark.parametrize("cron", ["61 5 * * *", "every day", ""])
def test_bad_cron_is_a_config_error(tmp_path: Path, cron: str) -> None:
    from digest.config import load_settings
    from digest.errors import ConfigError

    path = tmp_path / "c.toml"
    path.write_text(f'[scheduler]\ningest_cron = "{cron}"\n')
    with pytest.raises(ConfigError, match="ingest_cron"):
        load_settings(path, env={})
