"""MIME building, proved with the stdlib parser, and SMTP sending to a real aiosmtpd server."""

from __future__ import annotations

import binascii
import dataclasses
import email
import email.policy
import random
import smtplib
import socket
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import reference
from aiosmtpd.controller import Controller

from digest.config import SmtpSettings
from digest.errors import SendError
from digest.mailer import (
    SmtpTransport,
    build_message,
    encode_body,
    envelope_address,
    new_message_id,
)

DATE = datetime(2026, 11, 22, 7, 30, tzinfo=timezone(timedelta(hours=1)))
LONG_LINE = "word " * 400 + "x" * 3000  # one 5,000-char line with a 3,000-char word in it


def _kwargs(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "from_addr": "digest@example.org",
        "from_name": "Paper Digest",
        "to_addr": "reader@example.com",
        "subject": "Your digest for 22 Nov 2026: Attention Is All You Need (+9 more)",
        "text": "Hello reader,\n\n1. A paper\n   https://arxiv.org/abs/2611.00001\n",
        "html": (
            '<!DOCTYPE html>\n<html><body><p style="color:#1f2328">Hello = reader</p>'
            "</body></html>\n"
        ),
        "message_id": "<digest.2026-11-22.42@example.org>",
        "date": DATE,
        "list_id": "digest.example.org",
        "unsubscribe_url": "https://digest.example.org/unsubscribe/tok.sig",
        "unsubscribe_mailto": "unsubscribe@example.org",
    }
    base.update(changes)
    return base


def _parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _body(part: EmailMessage) -> str:
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")  # CRLF is the canonical line end on the wire


def _words(value: str) -> list[str]:
    return value.split()


def _check_wire(data: bytes) -> None:
    """CRLF line ends only, every line within RFC 5322's 998 octets, 7-bit clean."""
    assert data.isascii()
    assert b"\r\n" in data
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    for line in data.split(b"\r\n"):
        assert len(line) <= 998


def _check_message(data: bytes, kw: dict[str, Any]) -> EmailMessage:
    """Structure, every header and both bodies as the stdlib parser sees them."""
    _check_wire(data)
    msg = _parse(data)
    assert not msg.defects
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    for part, source in zip(parts, (kw["text"], kw["html"]), strict=True):
        assert not part.defects
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] in ("7bit", "quoted-printable", "base64")
        assert _body(part) == source.replace("\r\n", "\n")
    # the bytes with LF line ends, as a local delivery agent stores them, give the exact text
    lf = _parse(data.replace(b"\r\n", b"\n"))
    assert [p.get_content() for p in lf.iter_parts()] == [kw["text"], kw["html"]]

    (sender,) = msg["From"].addresses
    assert sender.addr_spec == kw["from_addr"]
    # whitespace compared loosely: see test_fast_build_equals_reference
    assert _words(sender.display_name) == " ".join(kw["from_name"].split())[:78].split()
    assert msg["To"] == kw["to_addr"]
    assert msg["Subject"] == " ".join(kw["subject"].split())
    assert msg["Date"].datetime == kw["date"]
    assert msg["Message-ID"] == kw["message_id"]
    assert msg["MIME-Version"] == "1.0"
    assert msg["List-Id"] == f"<{kw['list_id']}>"
    assert msg["List-Unsubscribe"] == (
        f"<{kw['unsubscribe_url']}>, <mailto:{kw['unsubscribe_mailto']}>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Precedence"] == "bulk"
    assert "Bcc" not in msg and "Cc" not in msg
    return msg


def test_ascii_message_round_trips() -> None:
    kw = _kwargs()
    data = build_message(**kw)
    _check_message(data, kw)
    assert data.startswith(b"From: Paper Digest <digest@example.org>\r\n")


def test_non_ascii_message_round_trips() -> None:
    kw = _kwargs(
        from_name="论文 Digest 📚 — Zoë",
        subject="你的论文摘要 22 Nov 2026: 大型语言模型的推理 🚀 (+3 more)",
        text="你好，读者！\n\n1. 大型语言模型的推理 🚀\n   Zoë Ünïcödé\n" * 20,
        html="<p>你好 <mark>推理</mark> 🧬 café</p>\n" * 50,
    )
    data = build_message(**kw)
    msg = _check_message(data, kw)
    raw_headers = data.split(b"\r\n\r\n", 1)[0]
    assert b"=?utf-8?" in raw_headers  # RFC 2047 encoded words for Subject and From
    for line in raw_headers.split(b"\r\n"):
        assert len(line) <= 78  # folded; every encoded word within RFC 2047's 75 chars
    # mostly-CJK parts go out as base64 (shorter than quoted-printable)
    assert [p["Content-Transfer-Encoding"] for p in msg.iter_parts()] == ["base64", "base64"]


def test_very_long_lines_and_awkward_bodies() -> None:
    text = (
        LONG_LINE
        + "\ntrailing spaces   \n\ttab start\nFrom the start of a line\n.\n..dots"
        + "\n=3D not an escape\nno final newline"
    )
    html = "<p>" + "é" * 3000 + "</p>" + "<td style='x'>" * 500
    kw = _kwargs(text=text, html=html, subject="long " * 10 + "y" * 190)
    data = build_message(**kw)
    _check_message(data, kw)
    assert b"\r\nFrom " not in data  # escaped so mbox software leaves it alone
    huge = _parse(build_message(**_kwargs(subject="z" * 5000)))["Subject"]
    assert huge == "z" * 250  # bounded; the renderer keeps subjects far shorter anyway


def test_crlf_injection_cannot_add_headers() -> None:
    kw = _kwargs(
        subject="Hi\r\nBcc: evil@example.net",
        from_name="Mallory\r\nBcc: evil@example.net\nX-Evil: 1",
        extra_headers={"X-Digest-Edition": "2026-11-22\r\nBcc: evil@example.net"},
    )
    data = build_message(**kw)
    msg = _parse(data)
    assert not msg.defects
    assert "Bcc" not in msg and "X-Evil" not in msg
    assert msg["Subject"] == "Hi Bcc: evil@example.net"
    assert msg["From"].addresses[0].display_name == "Mallory Bcc: evil@example.net X-Evil: 1"
    assert msg["X-Digest-Edition"] == "2026-11-22 Bcc: evil@example.net"
    header_names = [line.split(b":", 1)[0] for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")]
    assert b"Bcc" not in header_names
    for other in ("Hi\u2028Bcc: x", "Hi\x85Bcc: x", "Hi\x00\x0bBcc: x", "Hi\u202eBcc: x"):
        assert "Bcc" not in _parse(build_message(**_kwargs(subject=other)))


def test_bad_addresses_and_headers_are_refused() -> None:
    with pytest.raises(SendError) as info:
        build_message(**_kwargs(to_addr="victim@example.com\r\nBcc: evil@example.net"))
    assert info.value.permanent
    for bad in ("no-at-sign", "two@@example.com", "a b@example.com", "<x@example.com>"):
        with pytest.raises(SendError):
            build_message(**_kwargs(to_addr=bad))
    with pytest.raises(ValueError):
        build_message(**_kwargs(extra_headers={"Content-Type": "text/plain"}))
    with pytest.raises(ValueError):
        build_message(**_kwargs(extra_headers={"Bad Name": "x"}))
    with pytest.raises(ValueError):
        build_message(**_kwargs(unsubscribe_url="javascript:alert(1)"))
    with pytest.raises(ValueError):
        build_message(**_kwargs(unsubscribe_url="https://x.example/<a>"))
    with pytest.raises(ValueError):
        build_message(**_kwargs(message_id="<no-domain>"))


def test_long_non_ascii_subject_keeps_its_spaces() -> None:
    kw = _kwargs(subject="Résumé: " + "模型推理 " * 30, from_name="Ünïcödé " * 12)
    _check_message(build_message(**kw), kw)  # EmailMessage drops two of these spaces


def test_encoded_word_lookalikes_stay_literal() -> None:
    kw = _kwargs(subject="Literal =?utf-8?q?not_encoded?= text", from_name="A =?x?q?y?= B")
    msg = _check_message(build_message(**kw), kw)
    assert msg["Subject"] == "Literal =?utf-8?q?not_encoded?= text"  # EmailMessage loses this


def test_idn_recipient_domain_is_punycoded() -> None:
    msg = _parse(build_message(**_kwargs(to_addr="leser@bücher.example")))
    assert msg["To"] == "leser@xn--bcher-kva.example"


def test_extra_headers_and_naive_dates() -> None:
    kw = _kwargs(date=datetime(2026, 11, 22, 7, 30), extra_headers={"X-Edition": "2026-W47"})
    msg = _parse(build_message(**kw))
    assert msg["X-Edition"] == "2026-W47"
    assert msg["Date"].datetime == datetime(2026, 11, 22, 7, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"from_name": "论文 Digest 📚", "subject": "摘要: 推理 🚀", "text": "你好\n" * 10},
        {"text": LONG_LINE, "html": "<p>" + LONG_LINE + "</p>"},
        {"subject": "Hi\r\nBcc: evil@example.net", "from_name": 'Quote " and \\ back'},
        {"extra_headers": {"X-Digest": "é and more"}},
        {"subject": "Your digest for 22 Nov 2026: " + "A Rather Long Title About Models " * 4},
        {"subject": "Résumé: " + "模型推理 " * 5, "from_name": "Ünïcödé " * 12},
    ],
)
def test_fast_build_equals_reference(changes: dict[str, Any]) -> None:
    kw = _kwargs(**changes)
    fast, slow = _parse(build_message(**kw)), _parse(reference.build_message(**kw))
    names = {k.lower() for k in fast} - {"content-type"}
    assert names == {k.lower() for k in slow} - {"content-type"}
    for name in names - {"from"}:
        assert str(fast[name]) == str(slow[name]), name
    # The stdlib's phrase parser keeps the whitespace between encoded words (RFC 2047 says
    # to drop it), and EmailMessage splits words mid-word: compare the words.
    assert fast["From"].addresses[0].addr_spec == slow["From"].addresses[0].addr_spec
    assert (
        _words(fast["From"].addresses[0].display_name)
        == " ".join(kw["from_name"].split())[:78].split()
    )
    assert fast.get_content_type() == slow.get_content_type() == "multipart/alternative"
    for f, s in zip(fast.iter_parts(), slow.iter_parts(), strict=True):
        assert f.get_content_type() == s.get_content_type()
        # set_content() always ends a body with a newline; build_message keeps it as given
        assert _body(f).rstrip("\n") == _body(s).rstrip("\n")


def test_encode_body_chooses_the_shorter_encoding() -> None:
    assert encode_body("plain ascii = text\n") == (b"7bit", b"plain ascii = text\r\n\r\n")
    assert encode_body("café au lait " * 20)[0] == b"quoted-printable"  # mostly ASCII
    assert encode_body("推理" * 100)[0] == b"base64"
    assert encode_body("") == (b"7bit", b"\r\n")


@pytest.mark.parametrize(
    "text",
    [
        "x" * 999,  # over RFC 5322's 998 octets
        "short\n" + "x" * 998 + "y\nshort",
        "line\nFrom the start of a line, mbox software writes >From\n",
        "From the first line\n",
        "a NUL \0 byte\n",
    ],
)
def test_ascii_that_cannot_go_as_it_is_is_quoted_printable(text: str) -> None:
    cte, body = encode_body(text)
    assert cte == b"quoted-printable"
    kw = _kwargs(text=text, html=text)
    _check_message(build_message(**kw), kw)
    assert b"\r\nFrom " not in body and not body.startswith(b"From ")


def test_ascii_with_lines_up_to_998_octets_goes_as_it_is() -> None:
    text = "x" * 998 + "\n" + ("y" * 997 + "\n") * 3 + "From" + "\n From \n"
    assert encode_body(text) == (b"7bit", text.replace("\n", "\r\n").encode() + b"\r\n")
    kw = _kwargs(text=text, html=text)
    _check_message(build_message(**kw), kw)


@pytest.mark.parametrize(
    "line",
    [
        "From " + "x" * 66 + "é",  # the line is 79 characters with =46: it needs a soft break
        "x" * 74 + " ",  # b2a_qp makes 77 characters of it when a line end follows
        "y" * 75 + "\t",
        "=" * 30 + " end \t",
        "é " + "x" * 68 + "From here on",  # b2a_qp's soft break falls just before "From "
        "é " + "x" * 68 + "From a From " + "y" * 60 + "From b",
    ],
)
def test_quoted_printable_lines_stay_within_76_characters(line: str) -> None:
    # The same line first among others, encoded together, then alone (from the line cache).
    for text in (f"café\n{line}\n{line}é\nFrom é\n", f"{line}\nzz é"):
        cte, body = encode_body(text)
        assert cte == b"quoted-printable"
        encoded = body.split(b"\r\n")
        assert all(len(x) <= 76 and not x.endswith((b" ", b"\t")) for x in encoded), encoded
        assert not any(x.startswith(b"From ") for x in encoded)
        assert binascii.a2b_qp(body.replace(b"\r\n", b"\n")).decode() == text + "\n"


def test_boundary_is_random_and_absent_from_bodies() -> None:
    first, second = build_message(**_kwargs()), build_message(**_kwargs())
    b1 = _parse(first).get_boundary()
    assert b1 and b1 != _parse(second).get_boundary()
    assert first.count(b1.encode()) == 4  # the parameter, two delimiters and the close


def test_new_message_id_is_valid() -> None:
    mid = new_message_id("example.org")
    assert mid.startswith("<") and mid.endswith("@example.org>")
    assert _parse(build_message(**_kwargs(message_id=mid)))["Message-ID"] == mid


# --- SMTP ---------------------------------------------------------------------------------


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
    base = SmtpSettings(host="127.0.0.1", port=25, security="starttls", timeout=5.0)
    return dataclasses.replace(base, **changes)


def _transport(server: Server, **changes: Any) -> SmtpTransport:
    return SmtpTransport(_settings(**changes), port_override=server.port)


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
            transport.send("b@example.org", "r@example.com", head + body)
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
            transport.send("bounce@example.org", kw["to_addr"], data)
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
            transport.send("bounce+x=y@example.org", to_addr, data)
    assert [(m[1], m[2]) for m in server.handler.messages] == [
        ("bounce+x=y@example.org", ["o'brien+digest@example.com"]),
        ("bounce+x=y@example.org", ['"odd person"@example.com']),
    ]


def test_recipient_refused_550_is_permanent_and_connection_survives(server: Server) -> None:
    server.handler.rcpt_replies["gone@example.com"] = "550 5.1.1 No such user"
    with _transport(server) as transport:
        with pytest.raises(SendError) as info:
            transport.send("b@example.org", "gone@example.com", build_message(**_kwargs()))
        assert info.value.permanent is True
        assert info.value.code == 550
        transport.send("b@example.org", "ok@example.com", build_message(**_kwargs()))
        assert transport.connections_opened == 1
    assert [m[2] for m in server.handler.messages] == [["ok@example.com"]]


def test_recipient_deferred_451_is_temporary(server: Server) -> None:
    server.handler.rcpt_replies["busy@example.com"] = "451 4.3.0 Try again later"
    with _transport(server) as transport, pytest.raises(SendError) as info:
        transport.send("b@example.org", "busy@example.com", build_message(**_kwargs()))
    assert info.value.permanent is False
    assert info.value.code == 451


def test_data_refused_554_is_permanent(server: Server) -> None:
    server.handler.data_reply = "554 5.7.1 Message rejected as spam"
    with _transport(server) as transport:
        with pytest.raises(SendError) as info:
            transport.send("b@example.org", "r@example.com", build_message(**_kwargs()))
        assert info.value.permanent is True
        assert info.value.code == 554
        server.handler.data_reply = None
        transport.send("b@example.org", "r@example.com", build_message(**_kwargs()))
        assert transport.connections_opened == 1


def test_dropped_connection_is_reopened_once(server: Server) -> None:
    with _transport(server) as transport:
        transport.send("b@example.org", "one@example.com", build_message(**_kwargs()))
        # the server closes the idle connection, as relays do after a timeout
        smtp_session = server.handler.sessions[-1]
        closed = threading.Event()

        def close() -> None:
            smtp_session.transport.close()
            closed.set()

        server.controller.loop.call_soon_threadsafe(close)
        assert closed.wait(5)
        transport.send("b@example.org", "two@example.com", build_message(**_kwargs()))
        assert transport.connections_opened == 2
    assert [m[2] for m in server.handler.messages] == [["one@example.com"], ["two@example.com"]]
    assert server.handler.connections == 2


def test_server_down_is_temporary() -> None:
    transport = SmtpTransport(_settings(port=_free_port(), timeout=2.0))
    with transport, pytest.raises(SendError) as info:
        transport.send("b@example.org", "r@example.com", build_message(**_kwargs()))
    assert info.value.permanent is False
    assert info.value.code is None


def test_server_that_never_greets_times_out_as_temporary() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts the TCP connection, never says a word
        settings = _settings(port=listener.getsockname()[1], timeout=0.5)
        with SmtpTransport(settings) as transport, pytest.raises(SendError) as info:
            transport.send("b@example.org", "r@example.com", build_message(**_kwargs()))
    assert info.value.permanent is False


def test_no_password_over_plaintext(server: Server) -> None:
    # aiosmtpd here offers no STARTTLS: the transport must not send AUTH in the clear
    transport = _transport(server, username="user", password="secret")
    with transport, pytest.raises(SendError, match="plaintext") as info:
        transport.send("b@example.org", "r@example.com", build_message(**_kwargs()))
    assert info.value.permanent is False
    assert server.handler.messages == []


def test_no_host_is_a_clear_error() -> None:
    with SmtpTransport(_settings(host="")) as transport, pytest.raises(SendError, match="host"):
        transport.send("b@example.org", "r@example.com", b"x")
