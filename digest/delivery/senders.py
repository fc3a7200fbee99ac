"""Sending: due deliveries -> composer -> senders -> transports -> recorder.

:func:`deliver` is everything after "these deliveries are due": a :class:`~.leases.Lease`
takes them in chunks and keeps them, a :class:`~.composers.Composer` composes them, one sender
thread per ``[smtp] connections`` sends each message on its own
:class:`~.transports.Transport`, and a :class:`~.record.Recorder` writes what was accepted.
:func:`send` is the manual send: plan the current edition for everyone, then deliver.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from digest.config import Settings
from digest.delivery.bounces import return_path
from digest.delivery.compose import Composing, EditionCache
from digest.delivery.composers import (
    COMPOSE_GC_THRESHOLD,
    Composer,
    ComposerFactory,
    Work,
    choose_composer,
)
from digest.delivery.leases import Clock, Lease
from digest.delivery.planning import plan
from digest.delivery.record import (
    RECORD_WINDOW,
    Job,
    Recorder,
    SendReport,
    record_failure,
    record_send_run,
)
from digest.delivery.transports import Envelope, Mailroom, Transport, mailroom_for
from digest.errors import SendError
from digest.models import utcnow
from digest.render import Renderer

log = logging.getLogger("digest.delivery")

# A sender that fails this many times in a row without an SMTP reply code (timeouts, drops in
# the middle of a message) stops the run: the relay is failing, and every further try would
# only burn an attempt of another reader's delivery. A relay that cannot be used at all
# (unreachable, no TLS, a refused login) stops it at the first try.
CONNECTION_FAILURES_TO_ABORT = 3

# The interpreter's switch interval in a process that exists to send (seconds): each SMTP reply
# wakes a sender, which otherwise waits up to the default 5 ms for the lock.
SEND_SWITCH_INTERVAL = 0.0002


def tune_for_sending() -> None:
    """Tune this process for a big send: for the entry points of processes that exist to send
    (``digest send``, ``run``, ``worker``), never for one that does other work too."""
    sys.setswitchinterval(min(sys.getswitchinterval(), SEND_SWITCH_INTERVAL))
    gc.set_threshold(*COMPOSE_GC_THRESHOLD)


def running_from(start: datetime | None) -> Clock:
    """A clock that reads ``start`` now and runs on from there (the real clock when None)."""
    if start is None:
        return utcnow
    origin = time.monotonic()
    return lambda: start + timedelta(seconds=time.monotonic() - origin)


class _RateLimit:
    """Spaces messages ``1/rate`` seconds apart across all sender threads (0: no limit)."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1.0 / per_second if per_second > 0 else 0.0
        self.next = time.monotonic()
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            at = max(self.next, now)
            self.next = at + self.interval
        if at > now:
            time.sleep(at - now)


class _Run:
    """One delivery run's shared state: what the senders read and report to."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        lease: Lease,
        report: SendReport,
        progress: Callable[[int], None] | None,
        stop: threading.Event | None,
    ) -> None:
        self.engine, self.settings, self.lease, self.report = engine, settings, lease, report
        self.limit = _RateLimit(settings.delivery.rate_per_second)
        self.abort = threading.Event()  # the relay is down, or the lease was lost
        self.interrupted = threading.Event()  # the command itself was interrupted (Ctrl-C)
        self.stop = stop
        self.progress, self.progress_lock = progress, threading.Lock()
        self.recorder = Recorder(
            engine, report, progress, self.progress_lock, senders=settings.smtp.connections
        )

    def stopping(self) -> bool:
        return (
            self.abort.is_set()
            or self.interrupted.is_set()
            or bool(self.stop and self.stop.is_set())
        )

    def stop_run(self, reason: str) -> None:
        """Stop taking and sending: what is not sent yet goes back to the queue."""
        if not self.abort.is_set():
            log.error("event=abort reason=%r", reason)
            self.report.count_error(f"stopped: {reason}")
            self.report.stopped = reason
            self.abort.set()

    def done(self, n: int = 1) -> None:
        if self.progress:
            with self.progress_lock:
                self.progress(n)


def _sender(run: _Run, composer: Composer, transport: Transport) -> None:
    """Send composed messages on one transport until the composer has no more."""
    settings, lease = run.settings, run.lease
    failures = 0
    unrecorded: deque[threading.Event] = deque()

    def settle() -> None:
        # the records still being written of this connection's sent messages: fewer than
        # RECORD_WINDOW when the next one's data goes
        while unrecorded and (unrecorded[0].is_set() or len(unrecorded) >= RECORD_WINDOW):
            unrecorded.popleft().wait()

    try:
        while (job := composer.next()) is not None:
            if run.stopping():
                _give_back(run, job)
                continue
            if not lease.held():
                run.stop_run(
                    "the lease on the deliveries could not be renewed in time "
                    "([delivery] lease_seconds): another worker may take them"
                )
                _give_back(run, job)
                continue
            run.limit.wait()
            try:
                transport.send(
                    Envelope(return_path(settings, job.delivery_id), job.to_addr),
                    job.data,
                    before_data=settle,
                )
            except SendError as e:
                if e.relay:  # no message was handed over: every other would meet the same
                    run.stop_run(str(e))
                    _give_back(run, job)
                    continue
                record_failure(run.engine, settings, job, e, run.report, now=lease.clock())
                failures = failures + 1 if e.code is None and not e.permanent else 0
                if failures >= CONNECTION_FAILURES_TO_ABORT:
                    run.stop_run(str(e))
            except Exception as e:  # anything else is treated as temporary: retried later
                log.exception("event=send-error delivery=%s", job.delivery_id)
                error = SendError(f"{type(e).__name__}: {e}")
                record_failure(run.engine, settings, job, error, run.report, now=lease.clock())
            else:
                failures = 0
                unrecorded.append(run.recorder.add(job, lease.clock()))
                continue  # the recorder counts it, and reports progress, once recorded
            run.done()
    finally:
        transport.close()


def _give_back(run: _Run, job: Job) -> None:
    run.lease.release(job.delivery_id)
    run.report.count("released")


def deliver(
    engine: Engine,
    settings: Settings,
    *,
    renderer: Renderer,
    mailroom: Mailroom | None = None,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
    report: SendReport | None = None,
    composer: ComposerFactory = choose_composer,
) -> SendReport:
    """Take, compose and send due deliveries until none is left (or ``stop`` is set).

    Mail goes through ``mailroom`` (started by the caller), else through the settings' own,
    started for the call. ``now``: act as if it were that time at the start (the clock runs
    on from it); which edition a delivery belongs to was fixed when it was planned. Raises
    the composer's failure, once the senders are done.
    """
    if mailroom is None:
        with mailroom_for(settings) as own:
            return deliver(
                engine,
                settings,
                renderer=renderer,
                mailroom=own,
                now=now,
                progress=progress,
                stop=stop,
                report=report,
                composer=composer,
            )
    report = report or SendReport()
    lease = Lease(engine, settings, clock=running_from(now))
    run = _Run(engine, settings, lease=lease, report=report, progress=progress, stop=stop)
    composing = Composing(
        engine=engine, settings=settings, renderer=renderer, cache=EditionCache(engine, settings)
    )
    chosen = composer(
        composing,
        Work(lease=lease, report=report, stopping=run.stopping, senders=settings.smtp.connections),
    )
    senders = [
        threading.Thread(
            target=_sender,
            args=(run, chosen, mailroom.open()),
            name=f"digest-send-{i}",
            daemon=True,
        )
        for i in range(settings.smtp.connections)
    ]
    with lease.kept():
        try:
            chosen.start()
            for t in senders:
                t.start()
            for t in senders:
                t.join()
        except BaseException:
            run.interrupted.set()  # what is still to come is given back, not sent
            raise
        finally:
            for t in senders:
                if t.ident is not None:  # started
                    t.join()
            run.recorder.close()  # first: what was sent is recorded before the rest goes back
            chosen.close(abandon=run.interrupted.is_set() or run.abort.is_set())
            # Whatever is still taken was not sent (a stop, a failed chunk, a composing
            # process that died): back to the queue now rather than when the lease ends.
            report.released += lease.release_all()
    if chosen.failure is not None:
        raise chosen.failure
    return report


def send(
    engine: Engine,
    settings: Settings,
    *,
    renderer: Renderer,
    now: datetime | None = None,
    mailroom: Mailroom | None = None,
    progress: Callable[[int], None] | None = None,
) -> SendReport:
    """Plan the current edition (of ``now``, default the present) for every active reader, then
    send every due delivery; through ``mailroom``, else the settings' own."""
    started = now or utcnow()
    report = SendReport()
    report.planned = plan(engine, settings, now=started)
    deliver(
        engine,
        settings,
        renderer=renderer,
        mailroom=mailroom,
        now=now,
        progress=progress,
        report=report,
    )
    record_send_run(engine, report, started=started)
    return report
