"""The SMTP relay's transport, against a real aiosmtpd server: reuse, refusals, failures."""

from __future__ import annotations

import dataclasses
import random
import smtplib
import socket
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from test_mailer import LONG_LINE, _check_message, _kwargs

from digest.config import SmtpSettings
from digest.delivery.transports import Envelope, SmtpTransport, envelope_address
from digest.errors import SendError
from digest.mailer import build_message, new_message_id


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Recorder:
    """Stores every accepted envelope with the peer (one peer address per TCP connection)."""

    def __init__(self) -> None:
        self.messages: list[tuple[tuple[str, int], str, list[str], bytes]] = []
        self.rcpt_replies: dict[str, str] = {}
        self.data_reply: str | None = None
        self.sessions: list[Any] = []
        self.lock = threading.Lock()

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook names
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.data_reply:
            return self.data_reply
        with self.lock:
            self.sessions.append(server)
            self.messages.append(
                (session.peer, envelope.mail_from, list(envelope.rcpt_tos), envelope.content)
            )
        return "250 Message accepted"

    @property
    def connections(self) -> int:
        return len({peer for peer, *_ in self.messages})


@dataclasses.dataclass
class Server:
    controller: Controller
    handler: Recorder
    port: int


@pytest.fixture
def server() -> Iterator[Server]:
    handler = Recorder()
    port = _free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield Server(controller, handler, port)
    controller.stop()


def _settings(**changes: Any) -> SmtpSettings:
    # aiosmtpd here speaks plain SMTP on loopback
    base = SmtpSettings(host="127.0.0.1", port=25, security="none", timeout=5.0)
    return dataclasses.replace(base, **changes)


def _transport(server: Server, **changes: Any) -> SmtpTransport:
    return SmtpTransport(_settings(port=server.port, **changes))


def test_lines_starting_with_a_dot_arrive_intact(server: Server) -> None:
    """Dot-stuffing (RFC 5321 4.5.2): every line starting "." goes with one more, which the
    server takes off again; a message with none goes as it is."""
    head = b"From: a@example.org\r\nTo: r@example.com\r\nSubject: dots\r\n\r\n"
    bodies = [
        b"no dots at a line start. Here. Or.here\r\n",
        b".\r\n",  # a line that is only a dot would end the data
        b"..two\r\n.one\r\nmiddle . dot\r\n.\r\n",
        b"ends without a line end\r\n.",
    ]
    with _transport(server) as transport:
        for body in bodies:
            transport.send(Envelope("b@example.org", "r@example.com"), head + body)
    received = [content for *_, content in server.handler.messages]
    assert received == [head + body for body in bodies[:3]] + [head + bodies[3] + b"\r\n"]


def test_fifty_messages_share_one_connection(server: Server) -> None:
    sent = []
    with _transport(server) as transport:
        for n in range(50):
            kw = _kwargs(
                to_addr=f"reader{n}@example.com",
                subject=f"Digest {n}: 推理 🚀",
                text=f"Message {n}\n" + LONG_LINE,
                html=f"<p>Message {n} é</p>\n",
                message_id=new_message_id("example.org"),
            )
            data = build_message(**kw)
            transport.send(Envelope("bounce@example.org", kw["to_addr"]), data)
            sent.append((kw, data))
        assert transport.connections_opened == 1
    assert len(server.handler.messages) == 50
    assert server.handler.connections == 1
    for (kw, data), (_, mail_from, rcpts, content) in zip(
        sent, server.handler.messages, strict=True
    ):
        assert mail_from == "bounce@example.org"
        assert rcpts == [kw["to_addr"]]
        assert content == data  # intact, byte for byte (dot-stuffing undone by the server)
        _check_message(content, kw)


def test_envelope_addresses_are_what_smtplib_makes_of_them(shared: Path) -> None:
    # envelope_address skips parsing plain addresses; for every address it gives what
    # smtplib.quoteaddr (which smtp.mail and smtp.rcpt use) gives
    rng = random.Random(5)
    atext = "abcXYZ0189!#$%&'*+/=?^_`{|}~-"

    def dot_atom() -> str:
        return ".".join(
            "".join(rng.choice(atext) for _ in range(rng.randint(1, 5)))
            for _ in range(rng.randint(1, 3))
        )

    tests = ET.parse(shared / "fixtures/email_addresses/isemail_tests.xml").getroot()
    isemail = [t.findtext("address") or "" for t in tests.iter("test")]
    odd = ['"odd person"@example.com', "Ada <ada@example.org>", "a@b@c", "é@example.org", ""]
    addresses = [f"{dot_atom()}@{dot_atom()}" for _ in range(3000)] + isemail + odd
    assert len(isemail) > 150
    for address in addresses:
        assert envelope_address(address) == smtplib.quoteaddr(address), address


def test_envelope_addresses_reach_the_server_as_written(server: Server) -> None:
    with _transport(server) as transport:
        for to_addr in ("o'brien+digest@example.com", '"odd person"@example.com'):
            data = build_message(**_kwargs(to_addr="reader@example.com"))
            transport.send(Envelope("bounce+x=y@example.org", to_addr), data)
    assert [(m[1], m[2]) for m in server.handler.messages] == [
        ("bounce+x=y@example.org", ["o'brien+digest@example.com"]),
        ("bounce+x=y@example.org", ['"odd person"@example.com']),
    ]


def test_recipient_refused_550_is_permanent_and_connection_survives(server: Server) -> None:
    server.handler.rcpt_replies["gone@example.com"] = "550 5.1.1 No such user"
    with _transport(server) as transport:
        with pytest.raises(SendError) as info:
            transport.send(
                Envelope("b@example.org", "gone@example.com"), build_message(**_kwargs())
            )
        assert info.value.permanent is True
        assert info.value.code == 550
        transport.send(Envelope("b@example.org", "ok@example.com"), build_message(**_kwargs()))
        assert transport.connections_opened == 1
    assert [m[2] for m in server.handler.messages] == [["ok@example.com"]]


def test_recipient_deferred_451_is_temporary(server: Server) -> None:
    server.handler.rcpt_replies["busy@example.com"] = "451 4.3.0 Try again later"
    with _transport(server) as transport, pytest.raises(SendError) as info:
        transport.send(Envelope("b@example.org", "busy@example.com"), build_message(**_kwargs()))
    assert info.value.permanent is False
    assert info.value.code == 451


def test_data_refused_554_is_permanent(server: Server) -> None:
    server.handler.data_reply = "554 5.7.1 Message rejected as spam"
    with _transport(server) as transport:
        with pytest.raises(SendError) as info:
            transport.send(Envelope("b@example.org", "r@example.com"), build_message(**_kwargs()))
        assert info.value.permanent is True
        assert info.value.code == 554
        server.handler.data_reply = None
        transport.send(Envelope("b@example.org", "r@example.com"), build_message(**_kwargs()))
        assert transport.connections_opened == 1


def test_dropped_connection_is_reopened_once(server: Server) -> None:
    with _transport(server) as transport:
        transport.send(Envelope("b@example.org", "one@example.com"), build_message(**_kwargs()))
        # the server closes the idle connection, as relays do after a timeout
        smtp_session = server.handler.sessions[-1]
        closed = threading.Event()

        def close() -> None:
            smtp_session.transport.close()
            closed.set()

        server.controller.loop.call_soon_threadsafe(close)
        assert closed.wait(5)
        transport.send(Envelope("b@example.org", "two@example.com"), build_message(**_kwargs()))
        assert transport.connections_opened == 2
    assert [m[2] for m in server.handler.messages] == [["one@example.com"], ["two@example.com"]]
    assert server.handler.connections == 2


def test_server_down_is_temporary() -> None:
    transport = SmtpTransport(_settings(port=_free_port(), timeout=2.0))
    with transport, pytest.raises(SendError) as info:
        transport.send(Envelope("b@example.org", "r@example.com"), build_message(**_kwargs()))
    assert info.value.permanent is False
    assert info.value.code is None


def test_server_that_never_greets_times_out_as_temporary() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts the TCP connection, never says a word
        settings = _settings(port=listener.getsockname()[1], timeout=0.5)
        with SmtpTransport(settings) as transport, pytest.raises(SendError) as info:
            transport.send(Envelope("b@example.org", "r@example.com"), build_message(**_kwargs()))
    assert info.value.permanent is False


@pytest.mark.parametrize("login", [{}, {"username": "user", "password": "secret"}])
def test_starttls_or_nothing(server: Server, login: dict[str, str]) -> None:
    # aiosmtpd here offers no STARTTLS: with security = "starttls" nothing goes in the clear,
    # neither the password nor the mail, and the relay is at fault, not the message
    transport = _transport(server, security="starttls", **login)
    with transport, pytest.raises(SendError, match="offers no STARTTLS") as info:
        transport.send(Envelope("b@example.org", "r@example.com"), build_message(**_kwargs()))
    assert info.value.relay and not info.value.permanent
    assert server.handler.messages == []


def test_no_host_is_a_clear_error() -> None:
    with SmtpTransport(_settings(host="")) as transport, pytest.raises(SendError, match="host"):
        transport.send(Envelope("b@example.org", "r@example.com"), b"x")
