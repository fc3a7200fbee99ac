"""The embedded development SMTP server: every message it accepts lands in a Maildir."""

from __future__ import annotations

import asyncio
import mailbox
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_binary_file, policy
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

MAX_MESSAGE_BYTES = 10 * 1024 * 1024


class MaildirHandler:
    """An aiosmtpd handler that stores each accepted message once per recipient.

    ``Maildir.add`` fsyncs each message; on the event loop that would stall every other
    connection, so the files are written by one thread beside it, and each message is still
    answered 250 only once it is on disk. One thread, because Maildir names its files with a
    counter that is not thread-safe. :meth:`close` stops that thread.
    """

    def __init__(self, maildir: Path) -> None:
        self.maildir = mailbox.Maildir(maildir, create=True)
        self._writer: ThreadPoolExecutor | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        if isinstance(data, str):  # pragma: no cover - aiosmtpd gives bytes with decode_data off
            data = data.encode("utf-8", "surrogateescape")
        if self._writer is None:  # made here, on the loop's thread: a stopped sink can restart
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digest-sink")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._store, data, list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"

    def _store(self, data: bytes, recipients: list[str]) -> None:
        for rcpt in recipients:
            # What a real delivery agent adds: which mailbox this copy was for.
            stamped = f"Delivered-To: {_header_safe(rcpt)}\r\n".encode("ascii", "replace") + data
            self.maildir.add(stamped)

    def close(self) -> None:
        """Finish the writes under way and stop the writer thread."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.shutdown(wait=True)


def _header_safe(value: str) -> str:
    return "".join(ch for ch in value if ch.isprintable())


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class Sink:
    """A running embedded SMTP server; use as a context manager, or start() and stop()."""

    def __init__(self, maildir: Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.maildir = Path(maildir)
        self.host = host
        self.port = port or free_port(host)
        self._handler = MaildirHandler(self.maildir)
        self._controller = Controller(
            self._handler,
            hostname=host,
            port=self.port,
            data_size_limit=MAX_MESSAGE_BYTES,
            server_hostname="digest-sink",
        )

    def start(self) -> Sink:
        """Start serving in a background thread."""
        self._controller.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._controller.stop()
        self._handler.close()

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@dataclass(frozen=True, kw_only=True)
class StoredMail:
    """One message in the Maildir, as `digest mailbox` lists it."""

    path: Path
    date: datetime | None
    to: str
    subject: str
    size: int


def list_mail(maildir: Path) -> Iterator[StoredMail]:
    """The messages in a Maildir (new/ and cur/), oldest first."""
    found: list[StoredMail] = []
    for sub in ("new", "cur"):
        folder = Path(maildir) / sub
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if not path.is_file():
                continue
            with path.open("rb") as fh:
                msg = message_from_binary_file(fh, policy=policy.default)
            try:
                date = parsedate_to_datetime(str(msg["Date"])) if msg["Date"] else None
            except (TypeError, ValueError):
                date = None
            found.append(
                StoredMail(
                    path=path,
                    date=date,
                    to=str(msg["Delivered-To"] or msg["To"] or ""),
                    subject=str(msg["Subject"] or ""),
                    size=path.stat().st_size,
                )
            )
    epoch = datetime.min.replace(tzinfo=UTC)
    found.sort(
        key=lambda m: (m.date.astimezone(UTC) if m.date and m.date.tzinfo else epoch, m.path.name)
    )
    return iter(found)
