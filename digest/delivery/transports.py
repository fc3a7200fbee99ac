"""Transports: where a composed message goes, one connection at a time.

A :class:`Transport` sends one message (an envelope and its bytes) at a time and is closed when
its sender is done: the SMTP relay's client (:class:`SmtpTransport`, one reused connection), or
the list a test reads (:class:`RecordingTransport`). A :class:`Mailroom` opens them, one per
sending thread, and owns what they need while a send runs: the configured relay, the embedded
SMTP sink (started and stopped with the mailroom), or the recorded list. :func:`mailroom_for`
is the one place that chooses from the settings, like httpx's transports behind its client.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, NamedTuple, Protocol

from digest.config import Settings, SmtpSettings
from digest.errors import SendError
from digest.mailer import DkimSigner

if TYPE_CHECKING:
    from digest.sink import Sink

CRLF = b"\r\n"
# Authentication failed (535) or required (530): the relay's configuration is at fault.
AUTH_FAILED = frozenset((530, 535))


@functools.cache
def ehlo_name() -> str:
    """The name this host greets a relay with: its fully qualified name, else its host name
    (smtplib's own default is an IP literal for a host name without a dot)."""
    fqdn = socket.getfqdn()
    return fqdn if "." in fqdn else socket.gethostname() or "localhost"


class Envelope(NamedTuple):
    """Who a message is from and to, as SMTP's MAIL FROM and RCPT TO say it."""

    mail_from: str
    rcpt_to: str


class Transport(Protocol):
    """Sends messages one at a time over one connection; not thread-safe."""

    def send(
        self, envelope: Envelope, data: bytes, *, before_data: Callable[[], object] | None = None
    ) -> None:
        """Hand one message over, or raise SendError (``permanent`` for a refusal that retrying
        will not change). ``before_data`` is called once the envelope is accepted, just before
        the message's bytes go."""

    def close(self) -> None:
        """Let the connection go (safe to call twice)."""


def _text(reply: bytes | str) -> str:
    return (reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply)[:300]


class SmtpTransport:
    """One reusable SMTP connection; not thread-safe (use one per worker thread).

    The connection opens at the first :meth:`send` and stays open until :meth:`close`.
    """

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self.host = settings.host
        self.port = settings.port
        self._smtp: smtplib.SMTP | None = None
        self.connections_opened = 0

    def __enter__(self) -> SmtpTransport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _where(self) -> str:
        return f"{self.host}:{self.port}"

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        if not self.host:
            raise SendError(
                "no SMTP host configured (start the sink or set [smtp] host)", relay=True
            )
        context = ssl.create_default_context()
        smtp: smtplib.SMTP | None = None
        try:
            name = s.ehlo_name or ehlo_name()
            if s.security == "ssl":
                smtp = smtplib.SMTP_SSL(
                    self.host, self.port, local_hostname=name, timeout=s.timeout, context=context
                )
            else:
                smtp = smtplib.SMTP(self.host, self.port, local_hostname=name, timeout=s.timeout)
            smtp.ehlo()
            if s.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise SendError(
                        f"SMTP {self._where()} offers no STARTTLS and [smtp] security is "
                        '"starttls": refusing to send mail in clear. For a relay on this '
                        'machine (localhost), set [smtp] security = "none".',
                        relay=True,
                    )
                smtp.starttls(context=context)
                smtp.ehlo()
            if s.username:
                smtp.login(s.username, s.password)
        except SendError:
            _close_quietly(smtp)
            raise
        except smtplib.SMTPResponseException as e:
            _close_quietly(smtp)
            if e.smtp_code in AUTH_FAILED:
                raise self._login_refused(e.smtp_code, e.smtp_error) from e
            raise SendError(
                f"SMTP {self._where()} refused the session: {e.smtp_code} {_text(e.smtp_error)}",
                code=e.smtp_code,
                relay=True,
            ) from e
        except (smtplib.SMTPException, OSError) as e:
            _close_quietly(smtp)
            raise SendError(f"cannot connect to SMTP {self._where()}: {e}", relay=True) from e
        self.connections_opened += 1
        return smtp

    def _login_refused(self, code: int, reply: bytes | str) -> SendError:
        """The relay refused our login, or wants one we did not give: its configuration's
        fault, never a reader's."""
        s = self.settings
        if s.username:
            what = (
                f"refused the login of [smtp] username {s.username!r}: {code} {_text(reply)}; "
                "check [smtp] username and the DIGEST_SMTP_PASSWORD environment variable"
            )
        else:
            what = (
                f"requires a login: {code} {_text(reply)}; set [smtp] username and the "
                "DIGEST_SMTP_PASSWORD environment variable"
            )
        return SendError(f"SMTP {self._where()} {what}", code=code, relay=True)

    def _drop(self) -> None:
        _close_quietly(self._smtp)
        self._smtp = None

    def send(
        self,
        envelope: Envelope,
        data: bytes,
        *,
        before_data: Callable[[], object] | None = None,
    ) -> None:
        """Send one message on the open connection (opening it if needed).

        ``before_data`` is called once the envelope is accepted, just before the message
        goes out (the outbox waits there for the previous message's record).

        Raises SendError: ``permanent=True`` with the code for a 5xx answer to RCPT or to the
        message data; ``permanent=False`` for 4xx answers, a refused sender, timeouts and
        connection problems. A connection the server dropped between messages is reopened
        once (only before the data went out, so no message is sent twice by this retry).
        """
        from_addr, to_addr = envelope
        for attempt in (1, 2):
            reused = self._smtp is not None
            if self._smtp is None:
                self._smtp = self._connect()
            smtp = self._smtp
            try:
                self._envelope(smtp, from_addr, to_addr, len(data))
            except smtplib.SMTPServerDisconnected as e:
                self._drop()
                if reused and attempt == 1:
                    continue
                raise SendError(f"SMTP {self._where()} closed the connection: {e}") from e
            except OSError as e:
                self._drop()
                raise SendError(f"SMTP {self._where()} failed: {e}") from e
            if before_data is not None:
                before_data()
            try:
                code, reply = _data(smtp, data)
            except smtplib.SMTPDataError as e:  # the DATA command itself was refused
                self._reset()
                raise self._refused("DATA", to_addr, e.smtp_code, e.smtp_error) from e
            except (smtplib.SMTPException, OSError) as e:
                self._drop()
                raise SendError(f"SMTP {self._where()} failed while sending data: {e}") from e
            if code != 250:
                self._reset()
                raise self._refused("the message", to_addr, code, reply)
            return

    def _refused(self, what: str, to_addr: str, code: int, reply: bytes | str) -> SendError:
        """A refusal of this recipient or its data: permanent only for a 5xx."""
        return SendError(
            f"SMTP {self._where()} refused {what} for {to_addr}: {code} {_text(reply)}",
            permanent=500 <= code < 600,
            code=code,
        )

    def _envelope(self, smtp: smtplib.SMTP, from_addr: str, to_addr: str, size: int) -> None:
        """MAIL FROM and RCPT TO; raises SendError for a refusal (after RSET)."""
        option = f" SIZE={size}" if smtp.does_esmtp and smtp.has_extn("size") else ""
        code, reply = _command(smtp, "mail", f"FROM:{envelope_address(from_addr)}{option}")
        if code == 421:  # closing the channel (idle timeout, messages-per-connection limit)
            raise smtplib.SMTPServerDisconnected(f"{code} {_text(reply)}")
        if code in AUTH_FAILED:
            self._reset()
            raise self._login_refused(code, reply)
        if code != 250:
            self._reset()
            # The sender, not this recipient, is refused: retryable, and an operator's problem.
            raise SendError(
                f"SMTP {self._where()} refused sender {from_addr}: {code} {_text(reply)}",
                code=code,
            )
        code, reply = _command(smtp, "rcpt", f"TO:{envelope_address(to_addr)}")
        if code == 421:
            raise smtplib.SMTPServerDisconnected(f"{code} {_text(reply)}")
        if code not in (250, 251):
            self._reset()
            raise self._refused("recipient", to_addr, code, reply)

    def _reset(self) -> None:
        """RSET after a failed transaction so the connection stays usable; drop it if not."""
        if self._smtp is None:
            return
        try:
            code, _ = self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            code = -1
        if code != 250:
            self._drop()

    def close(self) -> None:
        """QUIT politely and close the connection (safe to call twice)."""
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            _close_quietly(smtp)


# An address of dot-atoms in ASCII, local@domain (RFC 5321's common form): smtplib.quoteaddr
# parses it back to itself, and gives "<address>".
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATOM}(?:\.{_ATOM})*"
_PLAIN_ADDRESS = re.compile(rf"{_DOT_ATOM}@{_DOT_ATOM}")


def envelope_address(address: str) -> str:
    """``smtplib.quoteaddr(address)``: ``<address>`` for a plain one without parsing it (which
    email.utils does slowly, twice a message), else what quoteaddr makes of it."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


def _command(smtp: smtplib.SMTP, name: str, argument: str) -> tuple[int, bytes]:
    """One command and its reply, as ``smtp.mail`` and ``smtp.rcpt`` send them."""
    smtp.putcmd(name, argument)
    return smtp.getreply()


_DOT_LINE = re.compile(rb"\n\.")


def _data(smtp: smtplib.SMTP, data: bytes) -> tuple[int, bytes]:
    """``smtp.data(data)`` for bytes, with the same bytes on the wire.

    smtplib dot-stuffs with a multiline regex on the sender thread, holding the GIL;
    ``bytes.replace`` does the same several times faster (``^`` in multiline mode is the start
    of the data or the position after any ``\\n``).
    """
    smtp.putcmd("data")
    code, reply = smtp.getreply()
    if code != 354:
        raise smtplib.SMTPDataError(code, reply)
    # most digests have no line starting "." to stuff, and the regex tells that sooner than
    # a replace that copies the message
    stuffed = data.replace(b"\n.", b"\n..") if _DOT_LINE.search(data) else data
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if not stuffed.endswith(CRLF):
        stuffed += CRLF
    smtp.send(stuffed + b"." + CRLF)
    code, reply = smtp.getreply()
    return code, reply


def _close_quietly(smtp: smtplib.SMTP | None) -> None:
    if smtp is None:
        return
    with contextlib.suppress(OSError):
        smtp.close()


class RecordingTransport:
    """Keeps each message in its mailroom's list instead of sending it (for tests)."""

    def __init__(self, mailroom: RecordingMailroom) -> None:
        self.mailroom = mailroom

    def send(
        self, envelope: Envelope, data: bytes, *, before_data: Callable[[], object] | None = None
    ) -> None:
        """Record the message, or raise what the mailroom's ``refuse`` says for it."""
        problem = self.mailroom.refuse(envelope) if self.mailroom.refuse else None
        if problem is not None:
            raise problem
        if before_data is not None:
            before_data()
        with self.mailroom.lock:
            self.mailroom.messages.append((envelope, data))

    def close(self) -> None:
        """Nothing to let go."""


class SigningTransport:
    """Signs each message with DKIM before handing it to the transport beneath."""

    def __init__(self, transport: Transport, signer: DkimSigner) -> None:
        self.transport, self.signer = transport, signer

    def send(
        self, envelope: Envelope, data: bytes, *, before_data: Callable[[], object] | None = None
    ) -> None:
        """Sign, then send."""
        self.transport.send(envelope, self.signer.sign(data), before_data=before_data)

    def close(self) -> None:
        """Close the transport beneath."""
        self.transport.close()


class Mailroom:
    """Opens transports to where mail goes, and keeps that place running while a send lasts.

    Use it as a context manager (or :meth:`start` and :meth:`stop`) around a send; each
    sending thread opens its own transport. With a ``signer``, every message that leaves
    through the mailroom is DKIM-signed: the digests, the confirmations and the replies.
    """

    description = "nowhere"
    signer: DkimSigner | None = None

    def _connect(self) -> Transport:
        """A new, unsigned transport."""
        raise NotImplementedError

    def open(self) -> Transport:
        """A new transport: one connection, for one sending thread."""
        transport = self._connect()
        return SigningTransport(transport, self.signer) if self.signer else transport

    def start(self) -> Mailroom:
        """Make the destination ready (the embedded sink starts here)."""
        return self

    def stop(self) -> None:
        """Release what :meth:`start` took."""

    def send(self, envelope: Envelope, data: bytes) -> None:
        """Send one message on a transport of its own (the web app's and the replies' mail)."""
        transport = self.open()
        try:
            transport.send(envelope, data)
        finally:
            transport.close()

    def __enter__(self) -> Mailroom:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RelayMailroom(Mailroom):
    """The configured SMTP relay (``[smtp] host``)."""

    def __init__(self, settings: SmtpSettings, *, signer: DkimSigner | None = None) -> None:
        self.settings, self.signer = settings, signer
        self.description = f"{settings.host}:{settings.port}"

    def _connect(self) -> Transport:
        """A connection to the relay (opened at its first message)."""
        return SmtpTransport(self.settings)


class SinkMailroom(Mailroom):
    """The embedded SMTP sink, which stores every message in a Maildir (no ``[smtp] host``).

    Between :meth:`start` and :meth:`stop` one sink runs for every transport; a message sent
    while none runs starts and stops a sink of its own, which is slower but never leaves a
    server behind.
    """

    def __init__(self, settings: Settings, *, signer: DkimSigner | None = None) -> None:
        self.settings, self.signer = settings, signer
        self.maildir = settings.path(settings.sink.maildir)
        self.description = f"the embedded SMTP sink (Maildir {self.maildir})"
        self._sink: Sink | None = None
        self._users = 0
        self._lock = threading.Lock()

    def _new_sink(self) -> Sink:
        from digest.sink import Sink  # aiosmtpd, only when a sink runs

        return Sink(self.maildir, host=self.settings.sink.host, port=self.settings.sink.port)

    def _local(self, sink: Sink) -> SmtpSettings:
        # the sink is on loopback and speaks neither TLS nor AUTH
        return dataclasses.replace(
            self.settings.smtp, host=sink.host, port=sink.port, security="none", username=""
        )

    def start(self) -> SinkMailroom:
        """Start the sink, or count one more user of the running one (the web app, the
        inbound server and the scheduler of `digest serve` share it)."""
        with self._lock:
            if self._sink is None:
                self._sink = self._new_sink().start()
            self._users += 1
        return self

    def stop(self) -> None:
        """Stop the sink once its last user has stopped."""
        with self._lock:
            self._users = max(self._users - 1, 0)
            sink = None
            if self._users == 0:
                sink, self._sink = self._sink, None
        if sink is not None:
            sink.stop()

    def _connect(self) -> Transport:
        """A connection to the running sink."""
        sink = self._sink
        if sink is None:
            raise SendError("the embedded SMTP sink is not running (start the mailroom first)")
        return SmtpTransport(self._local(sink))

    def send(self, envelope: Envelope, data: bytes) -> None:
        """Send one message into the sink, starting one for it if none runs."""
        if self._sink is not None:
            super().send(envelope, data)
            return
        with self._new_sink() as own:
            transport: Transport = SmtpTransport(self._local(own))
            if self.signer:
                transport = SigningTransport(transport, self.signer)
            try:
                transport.send(envelope, data)
            finally:
                transport.close()


class RecordingMailroom(Mailroom):
    """Keeps every message in :attr:`messages` (for tests); ``refuse`` may fail some."""

    description = "a recording list"

    def __init__(
        self,
        *,
        refuse: Callable[[Envelope], SendError | None] | None = None,
        signer: DkimSigner | None = None,
    ) -> None:
        self.messages: list[tuple[Envelope, bytes]] = []
        self.lock = threading.Lock()
        self.refuse, self.signer = refuse, signer

    def _connect(self) -> Transport:
        """A transport that appends to :attr:`messages`."""
        return RecordingTransport(self)


def mailroom_for(settings: Settings) -> Mailroom:
    """Where this configuration's mail goes: the ``[smtp]`` relay, else the embedded sink;
    signed with ``[dkim]``'s key when one is set."""
    signer = DkimSigner.from_settings(settings.dkim, base_dir=settings.base_dir)
    if settings.smtp.host:
        return RelayMailroom(settings.smtp, signer=signer)
    return SinkMailroom(settings, signer=signer)
