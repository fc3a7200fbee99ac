"""The schedule `digest serve` keeps: ingest on a cron, a delivery tick every minute, and an
hourly purge of unconfirmed subscriptions and old subscribe-request counts.

The jobs live in APScheduler's memory store; nothing about what is due is kept there. Each tick
recomputes it from the subscriber and delivery tables (:func:`digest.delivery.plan_due`), and on
start an ingest whose last run is older than the cron's previous fire time runs at once — so a
restart catches up on whatever was missed while the server was down.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.engine import Engine

from digest import delivery, subscriptions
from digest.config import Settings
from digest.delivery import Mailroom
from digest.ingest import ingest, specs_from
from digest.models import utcnow
from digest.render import Renderer
from digest.runs import last_run

log = logging.getLogger("digest.scheduler")

PURGE_SECONDS = 3600


def ingest_trigger(settings: Settings) -> CronTrigger:
    """The ingest cron, in the edition time zone."""
    return CronTrigger.from_crontab(settings.scheduler.ingest_cron, timezone=settings.zone)


def previous_fire(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The last time at or before ``now`` that ``trigger`` fired (looking back 8 days)."""
    t = trigger.get_next_fire_time(None, now - timedelta(days=8))
    previous = None
    for _ in range(20_000):  # a cron firing every minute: 8 days is 11,520 steps
        if t is None or t > now:
            break
        previous = t
        t = trigger.get_next_fire_time(t, t + timedelta(seconds=1))
    return previous


def run_ingest(engine: Engine, settings: Settings) -> None:
    """The ingest job: the configured sources (the run is recorded by ``ingest``)."""
    report = ingest(engine, settings, specs_from(settings))
    log.info(
        "event=ingest sources=%d new=%d updated=%d errors=%d",
        len(report.sources),
        report.total("new"),
        report.total("updated"),
        len(report.errors),
    )


def tick(
    engine: Engine,
    settings: Settings,
    *,
    renderer: Renderer,
    mailroom: Mailroom | None = None,
    now: datetime | None = None,
    stop: threading.Event | None = None,
) -> delivery.SendReport:
    """Plan every reader now due, then (unless workers send) send what is due."""
    started = now or utcnow()
    report = delivery.SendReport()
    report.planned = delivery.plan_due(engine, settings, now=started)
    if settings.scheduler.send:
        delivery.deliver(
            engine,
            settings,
            renderer=renderer,
            mailroom=mailroom,
            now=now,
            stop=stop,
            report=report,
        )
    delivery.record_send_run(engine, report, started=started)
    return report


def purge(engine: Engine, settings: Settings, *, now: datetime | None = None) -> tuple[int, int]:
    """The purge job: unconfirmed subscriptions past ``[web] pending_days`` (a bounded batch;
    the next run takes the rest) and the subscribe-request rows no cap counts any more; the
    numbers deleted."""
    now = now or utcnow()
    pending = subscriptions.purge_pending(engine, now=now, days=settings.web.pending_days)
    requests = subscriptions.prune_requests(engine, now=now)
    log.info("event=purge pending=%d requests=%d", pending, requests)
    return pending, requests


def build_scheduler(
    settings: Settings,
    engine: Engine,
    *,
    renderer: Renderer,
    mailroom: Mailroom | None = None,
    stop: threading.Event | None = None,
) -> BackgroundScheduler:
    """A scheduler (not started) with the ingest cron, the delivery tick and the purge; the
    tick's mail goes through ``mailroom``, which must run while the scheduler does (default:
    the settings' own, started for each send)."""
    scheduler = BackgroundScheduler(
        timezone=settings.zone,
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
    )
    trigger = ingest_trigger(settings)
    scheduler.add_job(run_ingest, trigger, args=(engine, settings), id="ingest", name="ingest")
    now = utcnow()
    previous = previous_fire(trigger, now)
    last = last_run(engine, "ingest")
    if previous is not None and (last is None or last.started_at < previous):
        # Missed while down: ingest once now (the cron goes on as usual after).
        scheduler.add_job(run_ingest, args=(engine, settings), id="ingest-catch-up")
    scheduler.add_job(
        tick,
        IntervalTrigger(seconds=settings.scheduler.tick_seconds, timezone=settings.zone),
        kwargs={
            "engine": engine,
            "settings": settings,
            "renderer": renderer,
            "mailroom": mailroom,
            "stop": stop,
        },
        id="deliver",
        name="delivery tick",
        next_run_time=now + timedelta(seconds=5),
    )
    scheduler.add_job(
        purge,
        IntervalTrigger(seconds=PURGE_SECONDS, timezone=settings.zone),
        args=(engine, settings),
        id="purge",
        name="purge",
        next_run_time=now + timedelta(seconds=30),
    )
    return scheduler
