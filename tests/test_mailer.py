"""MIME building, proved with the stdlib parser, and SMTP sending to a real aiosmtpd server."""

from __future__ import annotations

import binascii
import email
import email.policy
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from typing import Any

import pytest
import reference

from digest.errors import SendError
from digest.mailer import (
    build_message,
    encode_body,
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
