"""Composers: the messages a send sends, one at a time, from the chunks its lease takes.

A :class:`Composer` takes chunks of due deliveries, composes them (:func:`compose_chunk`) and
hands the senders one message at a time through :meth:`Composer.next`. Two do it:

- :class:`InlineComposer` composes in a thread of the sending process, a bounded queue ahead of
  the senders;
- :class:`ProcessComposer` composes in a second process, one chunk ahead, on another core: for
  big runs on a machine with two or more cores (:func:`choose_composer`).

A composer never sends: what it composed while the send is stopping is given back to the
queue. A composer that fails keeps its failure in :attr:`failure`, and the send raises it once
the senders are done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import multiprocessing
import os
import queue
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any, Protocol

from digest.config import Settings
from digest.db import make_engine
from digest.delivery.compose import Composing, EditionCache, compose_chunk, due_deliveries
from digest.delivery.leases import Lease, count_due
from digest.delivery.record import Job, SendReport
from digest.errors import DigestError
from digest.render import Renderer, RendererSource

log = logging.getLogger("digest.delivery")

# The cyclic garbage collector's thresholds in a process that composes: composing allocates
# many short-lived objects and almost no cycles, while the caches keep a large heap alive, so
# at the default threshold most of the collector's work is walking that heap for nothing.
COMPOSE_GC_THRESHOLD = (100_000, 50, 1000)

# Composed messages waiting for a sender, per sending connection (InlineComposer).
QUEUE_PER_SENDER = 16


@dataclasses.dataclass(frozen=True, kw_only=True)
class Work:
    """What a composer draws on: the send's lease (to take chunks and give deliveries back),
    its report (for what was closed unsent) and whether it is stopping."""

    lease: Lease
    report: SendReport
    stopping: Callable[[], bool]
    senders: int

    def give_back(self, job: Job) -> None:
        """Return a composed message's delivery to the queue, unsent."""
        self.lease.release(job.delivery_id)
        self.report.count("released")


class Composer(Protocol):
    """Hands composed messages to the senders."""

    failure: BaseException | None

    def start(self) -> None:
        """Begin composing."""

    def next(self) -> Job | None:
        """The next message to send (thread-safe), or None once nothing more comes."""

    def close(self, *, abandon: bool) -> None:
        """Stop composing; ``abandon``: at once, the send failed or was interrupted."""


ComposerFactory = Callable[[Composing, Work], Composer]


class InlineComposer:
    """Composes in a thread of the sending process, a bounded queue ahead of the senders."""

    def __init__(self, composing: Composing, work: Work) -> None:
        self.composing, self.work = composing, work
        self.failure: BaseException | None = None
        self._queue: queue.Queue[Job | None] = queue.Queue(
            maxsize=max(work.senders, 1) * QUEUE_PER_SENDER
        )
        self._thread = threading.Thread(target=self._run, name="digest-compose", daemon=True)

    def start(self) -> None:
        """Start the composing thread."""
        self._thread.start()

    def _run(self) -> None:
        work = self.work
        try:
            while not work.stopping():
                ids, now = work.lease.claim()
                if not ids:
                    break
                deliveries = due_deliveries(self.composing.engine, ids)
                for job in compose_chunk(self.composing, deliveries, work.report, now=now):
                    if work.stopping():
                        work.give_back(job)
                    else:
                        self._queue.put(job)
        except Exception as e:  # raised by the send once its senders are done
            log.exception("event=compose-error")
            self.failure = e
        finally:
            self._queue.put(None)

    def next(self) -> Job | None:
        """The next composed message; None (to every sender) once the thread is done."""
        job = self._queue.get()
        if job is None:
            self._queue.put(None)  # the end, for the other senders too
        return job

    def close(self, *, abandon: bool) -> None:
        """Wait for the thread; what it still queued is given back (the senders stopped)."""
        while self._thread.is_alive():
            try:
                job = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if job is not None:
                self.work.give_back(job)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self.work.give_back(job)


class _PipeCounts:
    """The composing process's counts, sent to the sending process's report."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def count(self, status: str, error: str | None = None) -> None:
        self.conn.send(("count", status, error))


# The composing process's program: it imports what composing needs and nothing else (not the
# command line, the web app or the feed readers, as multiprocessing's spawn would).
COMPOSE_PROGRAM = (
    "import sys; from digest.delivery.composers import compose_main; compose_main(int(sys.argv[1]))"
)


def compose_main(fd: int) -> None:
    """The composing process's entry point: chunks of delivery ids in, messages (and counts)
    out, through the socket ``fd``."""
    conn = Connection(fd)
    try:
        settings, source, log_level = conn.recv()
    except (EOFError, KeyboardInterrupt):
        return
    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr
    )
    gc.set_threshold(*COMPOSE_GC_THRESHOLD)  # this process exists to compose
    engine = make_engine(settings.database.url, check_schema=False)
    composing = Composing(
        engine=engine,
        settings=settings,
        renderer=Renderer.from_source(source),
        cache=EditionCache(engine, settings),
    )
    counts = _PipeCounts(conn)
    try:
        while (task := conn.recv()) is not None:
            ids, now = task
            try:
                for job in compose_chunk(composing, due_deliveries(engine, ids), counts, now=now):
                    conn.send(("job", job, None))
            except Exception as e:  # the chunk stays leased; the sending process reports it
                log.exception("event=compose-process-error")
                conn.send(("error", f"{type(e).__name__}: {e}", None))
            else:
                conn.send(("done", None, None))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass  # the sending process has gone: nothing left to do
    finally:
        engine.dispose()


# The composing process's send buffer, in bytes: room for many digests, so that it composes
# in long runs rather than a few messages at a time between the senders' reads.
COMPOSE_PIPE_BUFFER = 4 << 20


class _Child:
    """The composing process and the sending process's end of its pipe."""

    def __init__(self, settings: Settings, source: RendererSource) -> None:
        # a new interpreter, never a fork: the sending process has threads
        self.conn, child = multiprocessing.Pipe()
        with socket.socket(fileno=os.dup(child.fileno())) as end:  # the composer's end
            # what the system allows of it: Linux caps it at net.core.wmem_max
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, COMPOSE_PIPE_BUFFER)
        self.process = subprocess.Popen(
            [sys.executable, "-c", COMPOSE_PROGRAM, str(child.fileno())],
            pass_fds=(child.fileno(),),
            stdin=subprocess.DEVNULL,
        )
        child.close()
        self.conn.send((settings, source, logging.getLogger().getEffectiveLevel()))
        self._leased = "the digests it held go back to the queue for the next run"
        log.info("event=compose-process pid=%s", self.process.pid)

    def submit(self, ids: Sequence[int], now: datetime) -> None:
        try:
            self.conn.send((list(ids), now))
        except OSError as e:  # BrokenPipeError: it has gone
            # The cause goes without its traceback: multiprocessing's frames in it hold a view
            # of the message's buffer, which Python 3.13's garbage collector cannot free
            # without an error (CPython gh-111331) once the run keeps the failure.
            raise self._ended() from e.with_traceback(None)

    def message(self) -> tuple[str, Any, str | None]:
        """The next message: ("job", job, None), ("count", status, error), or ("done", None,
        None) at the end of a chunk; DigestError when the chunk failed or the process ended."""
        try:
            message: tuple[str, Any, str | None] = self.conn.recv()
        except (EOFError, OSError) as e:
            raise self._ended() from e
        if message[0] == "error":
            raise DigestError(f"composing a chunk failed: {message[1]}; {self._leased}")
        return message

    def _ended(self) -> DigestError:
        try:
            code: int | None = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        return DigestError(
            f"the composing process ended unexpectedly (exit code {code}); {self._leased}"
        )

    def close(self, *, abandon: bool) -> None:
        """Let the process end once it has composed what it was given; ``abandon``: now."""
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send(None)
        try:
            self.process.wait(timeout=0 if abandon else 30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.conn.close()


class ProcessComposer:
    """Composes in a second process, one chunk ahead of the senders.

    The sending process takes chunks, sends and records; composing (most of the CPU of a send)
    runs beside it on another core. Each sender reads the next message from the pipe itself,
    one at a time, and the one that reads the end of a chunk takes and submits another, so one
    chunk is composed while the one before it is sent; the pipe's buffer bounds what is in
    flight.
    """

    def __init__(self, composing: Composing, work: Work) -> None:
        source = composing.renderer.source
        if source is None:
            raise ValueError("a composing process needs a renderer made from templates")
        self.composing, self.work = composing, work
        self.failure: BaseException | None = None
        self.child = _Child(composing.settings, source)
        self._lock = threading.Lock()
        self._pending = 0  # chunks submitted whose end is not read yet

    def start(self) -> None:
        """Submit the first two chunks (the second is composed while the first is sent)."""
        with self._lock:
            for _ in range(2):
                self._submit()

    def _submit(self) -> None:
        if self.failure is not None or self.work.stopping():
            return
        try:
            ids, now = self.work.lease.claim()
            if ids:
                self.child.submit(ids, now)
                self._pending += 1
        except Exception as e:  # the send raises it once the senders are done
            self.failure = e

    def next(self) -> Job | None:
        """The next message to send, or None once every chunk is read (or one failed). A
        message read while the send is stopping is given back, not returned."""
        with self._lock:
            while self._pending and self.failure is None:
                try:
                    kind, value, error = self.child.message()
                except DigestError as e:
                    self.failure = e
                    break
                if kind == "job":
                    if self.work.stopping():
                        self.work.give_back(value)
                        continue
                    return value  # type: ignore[no-any-return]
                if kind == "count":
                    self.work.report.count(value, error)
                    continue
                self._pending -= 1  # "done"
                self._submit()
            return None

    def close(self, *, abandon: bool) -> None:
        """End the composing process (at once when the send failed or was interrupted)."""
        self.child.close(abandon=abandon or self.failure is not None)


def _cores() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def choose_composer(composing: Composing, work: Work) -> Composer:
    """A composing process for a run of at least ``[delivery] compose_process_from`` due
    digests on a machine with a second core; else a composing thread."""
    least = composing.settings.delivery.compose_process_from
    # POSIX only: the process is handed its end of a socket pair as an inherited descriptor
    if (
        least > 0
        and composing.renderer.source is not None
        and os.name == "posix"
        and _cores() >= 2
        and count_due(
            composing.engine,
            composing.settings,
            now=work.lease.clock(),
            owner=work.lease.owner,
        )
        >= least
    ):
        return ProcessComposer(composing, work)
    return InlineComposer(composing, work)
