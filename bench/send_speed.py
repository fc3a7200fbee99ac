"""Sending to a loopback SMTP sink: digest's transport against plain smtplib, one run.

    .venv/bin/python bench/send_speed.py [--messages 2000] [--connections 2] [--runs 5]

The sink is a real aiosmtpd server in a separate process (so that it does not take the GIL
from the sender), with a handler that only counts what it accepts: the figure is the SMTP path,
not the disk. The messages are real digests, rendered and built once before timing; every
repetition sends the same bytes, to a reader each.

  digest     N sender threads, each with one SmtpTransport (reused connection), fed from a
             bounded queue: the outbox's sender loop without the database
  baseline   N threads, each with one plain smtplib.SMTP connection, sendmail() in a loop
  maildir    digest's path again, into a second sink process with the Maildir handler that
             `digest send` uses by default (disk included)

Each repetition opens its connections inside the timing, for both. Prints the median of --runs
(alternating the order), the ratio digest / baseline and the peak RSS of the sending process.

The sink also runs on its own, for other benchmarks (bench/run_scale.py):

    .venv/bin/python bench/send_speed.py --serve [--maildir DIR] [--port P]

prints ``ready PORT``, then answers each line read on stdin with ``MESSAGES BYTES`` received
so far, and exits at end of input.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import queue
import resource
import shlex
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FROM = "digest@example.org"


class CountingHandler:
    """An aiosmtpd handler that accepts every message and counts it."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages += 1
        self.bytes += len(envelope.original_content or b"")
        return "250 OK"


def serve(maildir: str | None, port: int) -> None:
    """Run a sink until stdin closes, answering each stdin line with the counts so far."""
    from aiosmtpd.controller import Controller

    from digest.sink import MAX_MESSAGE_BYTES, MaildirHandler, free_port

    counter = CountingHandler()
    handler: Any = counter
    if maildir:
        inner = MaildirHandler(Path(maildir))

        class Counted:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                await counter.handle_DATA(server, session, envelope)
                return await inner.handle_DATA(server, session, envelope)

        handler = Counted()
    port = port or free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        data_size_limit=MAX_MESSAGE_BYTES,
        server_hostname="bench-sink",
        loop=asyncio.new_event_loop(),
    )
    controller.start()
    print(f"ready {port}", flush=True)
    try:
        for _ in sys.stdin:
            print(f"{counter.messages} {counter.bytes}", flush=True)
    finally:
        controller.stop()


class SinkProcess:
    """A sink in a child process (see ``serve``); a context manager."""

    def __init__(self, *, maildir: Path | None = None) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve"]
        if maildir is not None:
            cmd += ["--maildir", str(maildir)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "ready":
            self.proc.kill()
            raise RuntimeError("the sink process did not start")
        self.port = int(line[1])

    def counts(self) -> tuple[int, int]:
        """(messages, bytes) the sink has accepted so far."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        messages, size = self.proc.stdout.readline().split()
        return int(messages), int(size)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the sink process so far (Linux /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        import os

        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        """Stop the sink process."""
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> SinkProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclasses.dataclass(frozen=True)
class Mail:
    to: str
    data: bytes


def build_mails(n: int) -> list[Mail]:
    """``n`` real digests (rendered, built), from bench/render_mime.py's synthetic edition."""
    from render_mime import contexts, mime_kwargs

    from digest.mailer import build_message
    from digest.render import Renderer

    renderer = Renderer.create()
    ctxs = contexts(min(n, 500), 10, pool=80)
    kwargs = mime_kwargs([renderer.render_digest(c) for c in ctxs])
    mails = []
    for i in range(n):
        kw = dict(kwargs[i % len(kwargs)], to_addr=f"reader{i}@example.com")
        mails.append(Mail(to=kw["to_addr"], data=build_message(**kw)))
    return mails


def send_baseline(port: int, mails: Sequence[Mail], connections: int) -> None:
    """Plain smtplib: ``connections`` threads, one reused SMTP connection each."""

    def worker(share: Sequence[Mail]) -> None:
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            for mail in share:
                smtp.sendmail(FROM, [mail.to], mail.data)

    threads = [
        threading.Thread(target=worker, args=(mails[i::connections],)) for i in range(connections)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def send_digest(port: int, mails: Sequence[Mail], connections: int) -> None:
    """digest's path: sender threads with one SmtpTransport each, fed from a bounded queue."""
    from digest.config import SmtpSettings
    from digest.delivery.transports import Envelope, SmtpTransport

    settings = SmtpSettings(host="127.0.0.1", port=port, security="none", connections=connections)
    jobs: queue.Queue[Mail | None] = queue.Queue(maxsize=connections * 16)
    errors: list[Exception] = []

    def sender() -> None:
        with SmtpTransport(settings) as transport:
            while (mail := jobs.get()) is not None:
                try:
                    transport.send(Envelope(FROM, mail.to), mail.data)
                except Exception as e:  # counted, and the check below fails the run
                    errors.append(e)

    threads = [threading.Thread(target=sender) for _ in range(connections)]
    for t in threads:
        t.start()
    for mail in mails:
        jobs.put(mail)
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} send errors, the first: {errors[0]}")


def timed(
    sink: SinkProcess, fn: Callable[[int, Sequence[Mail], int], None], mails: Sequence[Mail], n: int
) -> tuple[float, float, float]:
    """(messages/s, sink and sender CPU seconds per message) of one pass; checks all arrived."""
    before, _ = sink.counts()
    cpu = sink.cpu_seconds()
    own = time.process_time()
    start = time.perf_counter()
    fn(sink.port, mails, n)
    elapsed = time.perf_counter() - start
    own = time.process_time() - own
    after, _ = sink.counts()
    if after - before != len(mails):
        raise RuntimeError(f"the sink got {after - before} messages of {len(mails)}")
    return len(mails) / elapsed, (sink.cpu_seconds() - cpu) / len(mails), own / len(mails)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: Sequence[str] | None = None) -> None:
    """Print the send rates, the ratio and the peak memory."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--maildir-messages", type=int, default=1000)
    parser.add_argument("--serve", action="store_true", help="only run a sink (see above)")
    parser.add_argument("--maildir", help="with --serve: store messages in this Maildir")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.maildir, args.port)
        return
    print("$ " + shlex.join([".venv/bin/python", "bench/send_speed.py", *sys.argv[1:]]))
    mails = build_mails(args.messages)
    size_kb = statistics.mean(len(m.data) for m in mails) / 1024
    n = args.connections
    print(
        f"{len(mails)} pre-built digests of {size_kb:.1f} KiB on average, {n} connection(s), "
        f"sink in a separate process; median of {args.runs} runs"
    )
    rates: dict[str, list[float]] = {"digest": [], "baseline": []}
    sink_cpu: dict[str, list[float]] = {"digest": [], "baseline": []}
    own_cpu: dict[str, list[float]] = {"digest": [], "baseline": []}
    paths = {"digest": send_digest, "baseline": send_baseline}
    with SinkProcess() as sink:
        timed(sink, send_baseline, mails[:200], n)  # warm up both sides
        timed(sink, send_digest, mails[:200], n)
        for run in range(args.runs):
            order = ("digest", "baseline") if run % 2 == 0 else ("baseline", "digest")
            for name in order:
                rate, cpu, own = timed(sink, paths[name], mails, n)
                rates[name].append(rate)
                sink_cpu[name].append(cpu)
                own_cpu[name].append(own)
    digest_rate = statistics.median(rates["digest"])
    base_rate = statistics.median(rates["baseline"])
    with tempfile.TemporaryDirectory() as tmp, SinkProcess(maildir=Path(tmp) / "mail") as sink:
        subset = mails[: args.maildir_messages]
        maildir_rates = [timed(sink, send_digest, subset, n)[0] for _ in range(args.runs)]
    maildir_rate = statistics.median(maildir_rates)

    def spread(xs: list[float]) -> str:
        return f"(runs {min(xs):,.0f}-{max(xs):,.0f})"

    for name, label, value in (
        ("digest", f"digest   SmtpTransport x{n}, queue-fed", digest_rate),
        ("baseline", f"baseline smtplib.SMTP x{n}, reused    ", base_rate),
    ):
        print(
            f"{label}    {value:7,.0f} messages/s {spread(rates[name])}; CPU per message: "
            f"sink {statistics.median(sink_cpu[name]) * 1e6:,.0f} us, "
            f"sender {statistics.median(own_cpu[name]) * 1e6:,.0f} us"
        )
    print(f"ratio    digest / baseline             {digest_rate / base_rate:7.1%}")
    print(
        f"maildir  SmtpTransport x{n} into the Maildir sink {maildir_rate:7,.0f} messages/s "
        f"{spread(maildir_rates)} ({len(subset)} messages a run)"
    )
    print(f"peak RSS of the sending process        {peak_rss_mb():7.0f} MB")


if __name__ == "__main__":
    main()
