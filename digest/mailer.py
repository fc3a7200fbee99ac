"""MIME building and SMTP sending.

:func:`build_message` assembles a multipart/alternative message straight into bytes: the
bodies go as they are (7bit) when they are ASCII with short lines, else are encoded with
binascii (quoted-printable line by line, cached, or base64 when that is shorter), the headers
with the email library's encoders (``email.utils.formataddr``, ``email.base64mime`` encoded
words), rather than through ``EmailMessage``, which would be the slowest step of a send.
tests/test_mailer.py checks it against an ``EmailMessage`` build (tests/reference.py) and
proves the output with the stdlib parser. Sending is :mod:`digest.delivery.transports`' work.
"""

from __future__ import annotations

import binascii
import contextlib
import functools
import random
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from email import base64mime
from email.utils import format_datetime, formataddr
from pathlib import Path

import dkim

from digest.config import DkimSettings
from digest.errors import ConfigError, SendError

CRLF = b"\r\n"
NAME_MAX = 78
SUBJECT_MAX = 250
URL_MAX = 900

# Headers the builder writes itself; extra_headers may not repeat or override them.
_OWN_HEADERS = frozenset(
    h.lower()
    for h in (
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "List-Id",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "Precedence",
        "Content-Type",
        "Content-Transfer-Encoding",
        "Bcc",
        "Cc",
        "Sender",
        "Return-Path",
    )
)
# Values _headers() checks and formats itself (From is encoded there); the rest (Subject and
# extra headers) are unstructured text for _encoded().
_STRUCTURED = frozenset(
    (
        "From",
        "To",
        "Date",
        "Message-ID",
        "MIME-Version",
        "List-Id",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
        "Precedence",
    )
)
# Everything str.splitlines() or a mail parser could take for a line break, other controls,
# and bidi overrides and isolates (a sender name that reads backwards).
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]+")
_SPACES = re.compile(r"[ \t]+")
_FIELD_NAME = re.compile(r"[!-9;-~]+")
_ADDR = re.compile(r"[^\s<>()\[\]\\,;:@\"]+@[A-Za-z0-9.-]+")
_MSG_ID = re.compile(r"<[!-;=?-~]+@[!-;=?-~]+>")
_LIST_ID = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")
MAX_FOLDED = 78
LINE_MAX = 998  # octets in a line of a message, CRLF excluded (RFC 5322 2.1.1)
_ASCII = bytes(range(128))
_WORD_BYTES = 45  # 60 base64 chars + "=?utf-8?b?" + "?=" = 72 <= 75 (RFC 2047)


def clean_header(value: str) -> str:
    """A header value on one line: CR, LF and other controls become a space, runs collapse."""
    if value.isprintable() and "  " not in value:  # the common case, without the regexes
        return value.strip()
    return _SPACES.sub(" ", _CONTROL.sub(" ", value)).strip()


def _address(value: str, what: str) -> str:
    """A bare ASCII addr-spec (IDN domains punycoded), or SendError(permanent=True)."""
    addr = clean_header(value)
    local, at, domain = addr.rpartition("@")
    if at and not domain.isascii():
        with contextlib.suppress(UnicodeError):
            domain = domain.encode("idna").decode("ascii")
        addr = f"{local}@{domain}"
    if not _ADDR.fullmatch(addr) or not addr.isascii() or len(addr) > 254:
        raise SendError(f"cannot mail {what} address {value[:80]!r}", permanent=True)
    return addr


def _encoded(value: str, name: str) -> str:
    """An unstructured header value, folded, RFC 2047-encoded unless it is plain ASCII.

    What ``email.header.Header(...).encode()`` gives, made with the library's per-word encoder
    rather than Header's Python loop over each character, which would cost more than the rest
    of the message. The value must be clean (see clean_header).
    """
    if value.isascii() and "=?" not in value:
        return _fold_words(value.split(" "), len(name) + 2)
    return _fold_words(_encoded_words(value, len(name) + 2), len(name) + 2)


def _encoded_words(value: str, first_line_used: int) -> list[str]:
    """``value`` as base64 encoded words, each at most 75 chars, split after a space if one is
    near: the space then sits inside a word, so decoders that drop the whitespace between
    encoded words (RFC 2047) and those that keep it (the stdlib's phrase parser) both read
    the words apart."""
    words: list[str] = []
    budget = min(_WORD_BYTES, max(4, (MAX_FOLDED - first_line_used - 12) * 3 // 4))
    chunk: list[str] = []
    size = 0
    for char in value:
        n = 1 if char < "\x80" else len(char.encode("utf-8"))
        while chunk and size + n > budget:
            space = "".join(chunk).rfind(" ") + 1
            cut = space if space > len(chunk) // 3 else len(chunk)
            words.append(base64mime.header_encode("".join(chunk[:cut]), "utf-8"))
            chunk = chunk[cut:]
            size = len("".join(chunk).encode("utf-8"))
            budget = _WORD_BYTES
        chunk.append(char)
        size += n
    if chunk:
        words.append(base64mime.header_encode("".join(chunk), "utf-8"))
    return words


def _fold_words(words: list[str], used: int) -> str:
    """Join ``words`` with spaces, folding (CRLF + space) where a line would pass 78 chars.

    ``used`` is what the line already holds (``Name: ``). A word longer than a line stays
    whole: values are bounded far below the hard 998-octet limit.
    """
    lines: list[str] = []
    line = ""
    for word in words:
        joined = f"{line} {word}" if line else word
        if line and used + len(joined) > MAX_FOLDED:
            lines.append(line)
            line, used = word, 1  # a continuation line starts with the folding space
        else:
            line = joined
    lines.append(line)
    return "\r\n ".join(lines)


def _mailbox(name: str, addr: str) -> str:
    name = clean_header(name)[:NAME_MAX]
    if not name:
        return addr
    if name.isascii() and "=?" not in name:
        return formataddr((name, addr))  # quotes and escapes specials
    words = _encoded_words(name, len("From: "))
    return _fold_words([*words, f"<{addr}>"], len("From: "))


def _url(value: str, what: str, schemes: tuple[str, ...]) -> str:
    url = value.strip()
    if (
        not url.lower().startswith(schemes)
        or len(url) > URL_MAX
        or not url.isascii()
        or any(c in url for c in "<>\"' \t\r\n")
    ):
        raise ValueError(
            f"the {what} must be an ASCII {'/'.join(schemes)} URL without <>, quotes or spaces"
        )
    return url


def _message_id(value: str) -> str:
    mid = value.strip()
    if not mid.startswith("<"):
        mid = f"<{mid}>"
    if not _MSG_ID.fullmatch(mid):
        raise ValueError(f"not a Message-ID: {value[:80]!r}")
    return mid


def _list_id(value: str) -> str:
    label = value.strip().removeprefix("<").removesuffix(">")
    if not _LIST_ID.fullmatch(label) or "." not in label:
        raise ValueError(f"not a List-Id label like digest.example.org: {value[:80]!r}")
    return f"<{label}>"


@functools.lru_cache(maxsize=64)
def _date(value: datetime) -> str:
    return format_datetime(value if value.tzinfo is not None else value.replace(tzinfo=UTC))


def new_message_id(domain: str) -> str:
    """A fresh ``<random@domain>`` Message-ID."""
    return f"<{secrets.token_hex(12)}@{clean_header(domain) or 'localhost'}>"


def _normalise_body(text: str) -> bytes:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.encode("utf-8")


class _QpLines:
    """Quoted-printable encoding, one cached line at a time.

    Many lines of a rendered digest repeat from message to message (the template, a paper
    that many readers get), and b2a_qp's cost grows with every byte, so each line's encoding
    is kept, up to ``max_bytes`` in all; then the cache starts over. The lines not seen before
    are encoded together, in one b2a_qp call. Entries are pure functions of their keys:
    sharing them between threads is safe (the byte count is approximate).
    """

    def __init__(self, max_bytes: int) -> None:
        self.lines: dict[bytes, bytes] = {}
        self.size = 0
        self.max_bytes = max_bytes

    def encode(self, data: bytes) -> bytes:
        """``data`` (LF line ends) encoded, with CRLF line ends."""
        if self.size > self.max_bytes:
            self.lines, self.size = {}, 0
        lines = self.lines
        parts = data.split(b"\n")
        try:
            # Every line seen before (the common case once a run is under way): one C loop.
            return CRLF.join(map(lines.__getitem__, parts))
        except KeyError:
            pass
        new = [line for line in dict.fromkeys(parts) if line not in lines]
        # b2a_qp encodes each line on its own (the line length restarts after each line end),
        # so encoding the new lines together gives each line's own encoding, but for a line
        # ending in white space, which it can make one character too long unless the data ends
        # there: those are encoded alone. Only a soft break ends an encoded line with "=".
        alone = [line for line in new if line.endswith((b" ", b"\t"))]
        if alone:
            new = [line for line in new if not line.endswith((b" ", b"\t"))]
        pieces = _qp(new).split(b"\n") if new else []
        if len(pieces) != len(new):
            pieces = _soft_joined(pieces)
        pieces += [_qp([line]) for line in alone]
        for line, piece in zip(new + alone, pieces, strict=True):
            if line.startswith(b"From "):
                piece = b"=46" + piece[3:]
            if b"\nFrom " in piece and b"\0" not in line:  # a soft break fell before "From "
                piece = _qp_every_from(line)
            lines[line] = piece.replace(b"\n", CRLF)
            self.size += len(line) + len(piece) + 100
        return CRLF.join(map(lines.__getitem__, parts))


def _qp(lines: list[bytes]) -> bytes:
    """Lines quoted-printable encoded, LF line ends; the F of a line starting ``From `` is
    encoded as a NUL (to be made ``=46`` by the caller: some mbox software mangles it to
    ``>From ``), which takes the same three characters, so the soft breaks are right."""
    data = b"\n".join(lines)
    if data.startswith(b"From ") or b"\nFrom " in data:
        data = b"\n".join(b"\0" + line[1:] if line.startswith(b"From ") else line for line in lines)
    return binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)


def _qp_every_from(line: bytes) -> bytes:
    """One line (with no NUL) quoted-printable encoded with the F of every ``From `` as
    ``=46``, so that no line of it starts ``From `` wherever b2a_qp's soft breaks (at 76
    characters) fall. Each F is encoded as a NUL first, which takes the same three characters
    (see _qp)."""
    data = line.replace(b"From ", b"\0rom ")
    return binascii.b2a_qp(data, quotetabs=False, istext=True, header=False).replace(b"=00", b"=46")


def _soft_joined(pieces: list[bytes]) -> list[bytes]:
    """Encoded lines (split at every LF) put back together across their soft line breaks."""
    joined: list[bytes] = []
    start = 0
    for i, piece in enumerate(pieces):
        if not piece.endswith(b"="):
            joined.append(b"\n".join(pieces[start : i + 1]))
            start = i + 1
    return joined


# A line starting "From ": a regex search finds it (or that there is none) quicker than
# ``in`` on a whole digest.
_FROM_LINE = re.compile(rb"\nFrom ")


def _plain_lines(data: bytes) -> bool:
    """Whether ASCII ``data`` (LF line ends) can go as it is, 7bit: no NUL, no line that mbox
    software would mangle (``From ``), none longer than RFC 5322's 998 octets."""
    if b"\0" in data or data.startswith(b"From ") or _FROM_LINE.search(data):
        return False
    # A line is too long if and only if some 999 bytes in a row hold no line end: jump from
    # line start to line start, up to 999 bytes at a time.
    start, last = 0, len(data) - LINE_MAX
    while start < last:
        end = data.rfind(b"\n", start, start + LINE_MAX + 1)
        if end < 0:
            return False
        start = end + 1
    return True


_QP = _QpLines(max_bytes=16 << 20)
# Boundaries need to be unique, not secret (a body can never contain one: see above). A PRNG
# seeded once avoids a getrandom() call per message, which releases the GIL and, in a busy
# outbox, waits up to a switch interval to get it back from the sender threads.
_BOUNDARY_RANDOM = random.Random(secrets.randbits(128))


def encode_body(text: str) -> tuple[bytes, bytes]:
    """(transfer encoding name, encoded lines ending in CRLF) for a UTF-8 text part.

    7bit (the text as it is) when it is ASCII with no line over 998 octets, no NUL and no line
    starting ``From ``; else quoted-printable, or base64 when that is shorter (mostly
    non-Latin text). Line ends are normalised to LF, then written as CRLF, the canonical form
    of text in MIME, so the parsed-back body equals the input with ``\\n`` line ends.
    """
    data = _normalise_body(text)
    # The CRLF before the next boundary belongs to the boundary, not to the body.
    if data.isascii():
        if _plain_lines(data):
            return b"7bit", data.replace(b"\n", CRLF) + CRLF
    # Quoted-printable spends 3 chars on a non-ASCII byte, base64 4 on every 3 bytes.
    elif 6 * len(data.translate(None, _ASCII)) > len(data):
        raw = binascii.b2a_base64(data, newline=False)
        return b"base64", CRLF.join([raw[i : i + 76] for i in range(0, len(raw), 76)]) + CRLF
    return b"quoted-printable", _QP.encode(data) + CRLF


def _part(content_type: bytes, text: str) -> tuple[bytes, bytes]:
    cte, body = encode_body(text)
    head = (
        b"Content-Type: " + content_type + b'; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n"
    )
    return head, body


def _headers(
    *,
    from_addr: str,
    from_name: str,
    to_addr: str,
    subject: str,
    message_id: str,
    date: datetime,
    list_id: str,
    unsubscribe_url: str,
    unsubscribe_mailto: str,
    extra_headers: Mapping[str, str] | None,
    bulk: bool = True,
) -> list[tuple[str, str]]:
    """The checked, cleaned header values (tests/reference.py builds with them too)."""
    mailto = clean_header(unsubscribe_mailto)
    if not mailto.lower().startswith("mailto:"):
        mailto = "mailto:" + _address(mailto, "unsubscribe mailto")
    headers = [
        ("From", _mailbox(from_name, _address(from_addr, "sender"))),
        ("To", _address(to_addr, "recipient")),
        ("Subject", clean_header(subject)[:SUBJECT_MAX]),
        ("Date", _date(date)),
        ("Message-ID", _message_id(message_id)),
        ("MIME-Version", "1.0"),
        ("List-Id", _list_id(list_id)),
        (
            "List-Unsubscribe",
            f"<{_url(unsubscribe_url, 'unsubscribe URL', ('https://', 'http://'))}>,\r\n"
            f" <{_url(mailto, 'unsubscribe mailto', ('mailto:',))}>",
        ),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ]
    if bulk:  # a digest; mail a reader asked for (a confirmation) is not bulk
        headers.append(("Precedence", "bulk"))
    for name, value in (extra_headers or {}).items():
        if not _FIELD_NAME.fullmatch(name) or name.lower() in _OWN_HEADERS:
            raise ValueError(f"extra header {name!r} is not allowed")
        headers.append((name, clean_header(value)))
    return headers


def build_message(
    *,
    from_addr: str,
    from_name: str,
    to_addr: str,
    subject: str,
    text: str,
    html: str,
    message_id: str,
    date: datetime,
    list_id: str,
    unsubscribe_url: str,
    unsubscribe_mailto: str,
    extra_headers: Mapping[str, str] | None = None,
    bulk: bool = True,
) -> bytes:
    """A multipart/alternative message (text, then HTML) as CRLF bytes ready for SMTP DATA.

    Header values lose any CR/LF and are encoded by the email library; extra header values
    are unstructured text; ``bulk`` adds ``Precedence: bulk`` (digests, not transactional
    mail). A bad recipient or sender address raises ``SendError(permanent=
    True)``; a malformed Message-ID, List-Id, URL or extra header name raises ValueError.
    """
    headers = [
        (name, _encoded(value, name) if name not in _STRUCTURED else value)
        for name, value in _headers(
            from_addr=from_addr,
            from_name=from_name,
            to_addr=to_addr,
            subject=subject,
            message_id=message_id,
            date=date,
            list_id=list_id,
            unsubscribe_url=unsubscribe_url,
            unsubscribe_mailto=unsubscribe_mailto,
            extra_headers=extra_headers,
            bulk=bulk,
        )
    ]
    text_head, text_body = _part(b"text/plain", text)
    html_head, html_body = _part(b"text/html", html)
    # "=_" never occurs in quoted-printable or base64 output; a 7bit body could hold it.
    while True:
        boundary = b"=_digest_" + b"%032x" % _BOUNDARY_RANDOM.getrandbits(128)
        if boundary not in text_body and boundary not in html_body:
            break
    lines = [f"{name}: {value}".encode("ascii") + CRLF for name, value in headers]
    delimiter = b"--" + boundary
    lines += [
        b'Content-Type: multipart/alternative;\r\n boundary="' + boundary + b'"\r\n',
        CRLF,
        delimiter + CRLF,
        text_head,
        text_body,
        delimiter + CRLF,
        html_head,
        html_body,
        delimiter + b"--" + CRLF,
    ]
    return b"".join(lines)


# What the DKIM signature covers: the headers a receiver shows or acts on, the unsubscribe
# headers among them (Gmail and Yahoo want List-Unsubscribe signed).
DKIM_HEADERS = (
    b"From",
    b"To",
    b"Subject",
    b"Date",
    b"Message-ID",
    b"MIME-Version",
    b"Content-Type",
    b"List-Id",
    b"List-Unsubscribe",
    b"List-Unsubscribe-Post",
)
# Signed once more than they occur (RFC 6376 8.15), present or not: one added in transit, which
# a reader's client might show instead, breaks the signature.
DKIM_OVERSIGNED = (b"From", b"Subject", b"Reply-To", b"List-Unsubscribe", b"List-Unsubscribe-Post")
_FIELD_NAMES = re.compile(rb"^([!-9;-~]+):", re.M)


def dkim_headers(data: bytes) -> list[bytes]:
    """The h= list for a message: DKIM_HEADERS, and each over-signed name once more than the
    message has it."""
    present = [n.lower() for n in _FIELD_NAMES.findall(data.split(b"\r\n\r\n", 1)[0])]
    extra = [n for n in DKIM_OVERSIGNED for _ in range(present.count(n.lower()) + 1)]
    return [*(n for n in DKIM_HEADERS if n not in DKIM_OVERSIGNED), *extra]


class DkimSigner:
    """Signs built messages with DKIM (dkimpy); make it with :meth:`from_settings`."""

    def __init__(self, *, key: bytes, selector: str, domain: str) -> None:
        self.key = key
        self.selector = selector.encode("ascii")
        self.domain = domain.encode("ascii")

    @classmethod
    def from_settings(cls, settings: DkimSettings, *, base_dir: str = ".") -> DkimSigner | None:
        """A signer for the configured key, or None when DKIM is off."""
        if not settings.key_file:
            return None
        path = Path(settings.key_file).expanduser()
        if not path.is_absolute():
            path = Path(base_dir) / path
        try:
            key = path.read_bytes()
        except OSError as e:
            raise ConfigError(f"[dkim] key_file: cannot read {path}: {e.strerror or e}") from e
        return cls(key=key, selector=settings.selector, domain=settings.domain)

    def sign(self, data: bytes) -> bytes:
        """The message with a DKIM-Signature header in front."""
        try:
            signature: bytes = dkim.sign(
                data,
                self.selector,
                self.domain,
                self.key,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=dkim_headers(data),
            )
        except dkim.DKIMException as e:
            raise SendError(f"DKIM signing failed: {e}", permanent=False) from e
        return signature + data
