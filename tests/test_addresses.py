"""Every address of the isemail test suite through the real subscribe path.

isemail (Dominic Sayers, ../shared/fixtures/email_addresses/) gives each address a category;
isemail_meta.xml defines them. Its own threshold (``ISEMAIL_THRESHOLD = 16`` in is_email) draws
the line this file uses: an address whose category is below 16 -- ISEMAIL_VALID_CATEGORY (1),
ISEMAIL_DNSWARN (7, valid but no DNS record; we never look up DNS) and ISEMAIL_RFC5321 (15,
"valid for SMTP but has unusual elements") -- can be written as an SMTP envelope address and
should be accepted. ISEMAIL_CFWS (comments, folding white space: "cannot be used unmodified for
the envelope"), ISEMAIL_DEPREC, ISEMAIL_RFC5322 (only the broad message syntax; too long, bad
domain literals) and ISEMAIL_ERR should be refused.

The project validates with email-validator, which is deliberately stricter in some places and
forgiving in others. Each address where the project's answer differs from isemail's is listed
below with the reason, and the tests assert the project's actual answer for it: the two dicts
are the documentation of those choices, and a test fails when an entry goes stale.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from digest.config import Settings
from digest.db import make_engine
from digest.errors import SubscriberError
from digest.models import Subscriber
from digest.subscriptions import normalise_email
from digest.web import create_app

with warnings.catch_warnings():
    # Starlette 1.x asks for the httpx2 fork; the TestClient works the same with httpx.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

BASE = "https://digest.example.org"
NOW = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
ISEMAIL_THRESHOLD = 16  # is_email's own line between "valid" and "not valid"

DOTLESS = (
    "A domain without a period. email-validator refuses it as a syntax error: no mailbox is "
    "published at a bare top-level domain (ICANN forbids MX/A records there, SAC053), so in a "
    "subscribe form it is a typo."
)
NUMERIC_TLD = (
    "A numeric top-level domain: email-validator refuses it (no TLD is numeric; "
    "test@255.255.255.255 is an IP address written without the brackets)."
)
QUOTED = (
    "A quoted local part: email-validator refuses it unless allow_quoted_local=True. Few mail "
    "systems handle one, and typed into a form it is almost always a mistake."
)
EMPTY_QUOTED = "An empty quoted local part: email-validator sees nothing before the @-sign."
LITERAL = (
    "An IP address literal as the domain: email-validator refuses it unless "
    "allow_domain_literal=True. A digest goes to a domain's MX; relays refuse bulk mail to bare "
    "IPs and SPF/DKIM/DMARC are per domain, so such an address could never be reached."
)
LONG_LOCAL = (
    "A 65-octet local part, one over RFC 5321's 64. email-validator checks that limit only with "
    "strict=True: RFC 5321 4.5.3.1 makes the limits advisory and longer local parts are seen in "
    "the wild. The address is accepted and mailed (the 254-octet total is still enforced)."
)
TRIMMED = (
    "White space (CR/LF included) around the address: the form trims it, as a browser's own "
    '<input type="email"> does (HTML value sanitisation strips newlines and leading/trailing '
    "white space), so the bare address is stored and mailed; no CR/LF reaches a header or an "
    "SMTP command."
)

# The project refuses these though isemail calls them valid (category below the threshold).
REFUSED_THOUGH_ISEMAIL_ACCEPTS: dict[str, str] = {
    "test@io": DOTLESS,
    "test@org": DOTLESS,
    "test@iana.123": NUMERIC_TLD,
    "test@255.255.255.255": NUMERIC_TLD,
    '"test"@iana.org': QUOTED,
    '"\\a"@iana.org': QUOTED,
    '"\\""@iana.org': QUOTED,
    '"\\\\"@iana.org': QUOTED,
    '"test\\ test"@iana.org': QUOTED,
    '""@iana.org': EMPTY_QUOTED,
    "test@[255.255.255.255]": LITERAL,
    "test@[IPv6:1111:2222:3333:4444:5555:6666:7777:8888]": LITERAL,
    "test@[IPv6:1111:2222:3333:4444:5555::8888]": LITERAL,
    "test@[IPv6:::3333:4444:5555:6666:7777:8888]": LITERAL,
    "test@[IPv6:::]": LITERAL,
    "test@[IPv6:1111:2222:3333:4444:5555:6666:255.255.255.255]": LITERAL,
    "test@[IPv6:1111:2222:3333:4444::255.255.255.255]": LITERAL,
}

# The project accepts these though isemail calls them invalid (or not usable as typed).
ACCEPTED_THOUGH_ISEMAIL_REFUSES: dict[str, str] = {
    "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghiklmn@iana.org": LONG_LOCAL,
    "\r\n test@iana.org": TRIMMED,
    "\r\n \r\n test@iana.org": TRIMMED,
    "test@iana.org\n": TRIMMED,
    "test@iana.org\r": TRIMMED,
    "\rtest@iana.org": TRIMMED,
    "\ntest@iana.org": TRIMMED,
    "\r\ntest@iana.org": TRIMMED,
    "\r\n \r\ntest@iana.org": TRIMMED,
    " \r\ntest@iana.org": TRIMMED,
    " \r\n test@iana.org": TRIMMED,
    " \r\n \r\ntest@iana.org": TRIMMED,
    " \r\n\r\ntest@iana.org": TRIMMED,
    " \r\n\r\n test@iana.org": TRIMMED,
    "test@iana.org\r\n ": TRIMMED,
    "test@iana.org\r\n \r\n ": TRIMMED,
    "test@iana.org\r\n": TRIMMED,
    "test@iana.org\r\n \r\n": TRIMMED,
    "test@iana.org \r\n": TRIMMED,
    "test@iana.org \r\n ": TRIMMED,
    "test@iana.org \r\n \r\n": TRIMMED,
    "test@iana.org \r\n\r\n": TRIMMED,
    "test@iana.org \r\n\r\n ": TRIMMED,
    " test@iana.org": TRIMMED,
    "test@iana.org ": TRIMMED,
}


@dataclasses.dataclass(frozen=True)
class Case:
    """One isemail test: the address (control characters decoded) and isemail's verdict."""

    id: str
    address: str
    category: str
    diagnosis: str
    valid: bool

    @property
    def expected(self) -> bool:
        """Whether the project accepts it: isemail's verdict unless a disagreement is listed."""
        if self.address in REFUSED_THOUGH_ISEMAIL_ACCEPTS:
            return False
        if self.address in ACCEPTED_THOUGH_ISEMAIL_REFUSES:
            return True
        return self.valid

    def __str__(self) -> str:
        return f"#{self.id} {self.address!r} ({self.diagnosis})"


def decode(text: str) -> str:
    """isemail stores control character n as U+2400+n (XML cannot hold most of them)."""
    return "".join(chr(ord(c) - 0x2400) if 0x2400 <= ord(c) <= 0x241F else c for c in text)


def load_cases(folder: Path) -> list[Case]:
    meta = ET.parse(folder / "isemail_meta.xml").getroot()
    values = {
        item.get("id"): int(item.findtext("value") or "255")
        for item in meta.iterfind("Categories/item")
    }
    # Sanity: the threshold splits the categories where the module docstring says it does.
    assert {c for c, v in values.items() if v < ISEMAIL_THRESHOLD} == {
        "ISEMAIL_VALID_CATEGORY",
        "ISEMAIL_DNSWARN",
        "ISEMAIL_RFC5321",
    }
    cases = []
    for test in ET.parse(folder / "isemail_tests.xml").getroot().iter("test"):
        category = test.findtext("category") or ""
        cases.append(
            Case(
                id=test.get("id") or "?",
                address=decode(test.findtext("address") or ""),
                category=category,
                diagnosis=test.findtext("diagnosis") or "",
                valid=values[category] < ISEMAIL_THRESHOLD,
            )
        )
    return cases


@pytest.fixture
def cases(shared: Path) -> list[Case]:
    folder = shared / "fixtures" / "email_addresses"
    if not (folder / "isemail_tests.xml").is_file():
        pytest.skip("../shared/fixtures/email_addresses/isemail_tests.xml is absent")
    return load_cases(folder)


def project_accepts(address: str) -> tuple[bool, str]:
    try:
        return True, normalise_email(address)
    except SubscriberError as e:
        return False, str(e)


def test_the_suite_and_the_disagreement_lists_are_in_step(cases: list[Case]) -> None:
    assert len(cases) == 164
    addresses = {c.address for c in cases}
    listed = REFUSED_THOUGH_ISEMAIL_ACCEPTS.keys() | ACCEPTED_THOUGH_ISEMAIL_REFUSES.keys()
    assert listed <= addresses, f"not in the suite: {sorted(listed - addresses)}"
    by_address = {c.address: c for c in cases}
    # A listed disagreement must be one: refused-though-valid entries are valid to isemail ...
    assert all(by_address[a].valid for a in REFUSED_THOUGH_ISEMAIL_ACCEPTS)
    assert not any(by_address[a].valid for a in ACCEPTED_THOUGH_ISEMAIL_REFUSES)
    # ... and both verdicts are there to test.
    assert sum(c.valid for c in cases) > 30 and sum(not c.valid for c in cases) > 100


def test_normalise_email_matches_isemail_or_the_listed_disagreements(cases: list[Case]) -> None:
    wrong = []
    for case in cases:
        accepted, detail = project_accepts(case.address)
        if accepted != case.expected:
            verdict = "accepted" if accepted else "refused"
            wrong.append(f"{case}: {verdict} ({detail})")
        elif accepted:
            assert detail == detail.strip() and not re.search(r"[\x00-\x1f\x7f]", detail), case
    assert not wrong, "\n".join(["the project's answer differs from the lists:", *wrong])


@pytest.fixture
def web_settings(settings: Settings, smtp_server: Any) -> Settings:
    """The relay is the recording server; the caps on subscribe requests are out of the way
    (every case is sent from one client; the caps have their own tests)."""
    controller, _ = smtp_server
    smtp = dataclasses.replace(
        settings.smtp, host="127.0.0.1", port=controller.port, security="none"
    )
    web = dataclasses.replace(
        settings.web, subscribe_per_client_per_hour=100_000, subscribe_per_hour=100_000
    )
    return dataclasses.replace(settings, smtp=smtp, web=web)


@pytest.fixture
def engine(web_settings: Settings) -> Engine:
    return make_engine(web_settings.database.url)


@pytest.fixture
def client(web_settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(web_settings, engine, clock=lambda: NOW), base_url=BASE) as c:
        yield c


FORM = {
    "keywords": "llm inference",
    "exclude": "",
    "frequency": "daily",
    "weekday": "0",
    "send_hour": "7",
    "timezone": "UTC",
    "max_papers": "10",
}


def subscriber_emails(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return list(session.exec(select(Subscriber.email)).all())


def email_error(page: str) -> str | None:
    """The error shown next to the email field, or None."""
    found = re.search(r'<p class="field-error" id="email-error">([^<]*)</p>', page)
    return found.group(1) if found else None


def test_the_subscribe_form_refuses_and_accepts_each_address(
    client: TestClient, engine: Engine, smtp_server: Any, cases: list[Case]
) -> None:
    inbox: list[Any] = smtp_server[1].envelopes
    page = client.get("/")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf, page.text
    wrong = []
    for case in cases:
        inbox.clear()
        answer = client.post(
            "/subscribe", data={"csrf": csrf.group(1), "email": case.address, **FORM}
        )
        stored = subscriber_emails(engine)
        if case.expected:
            # Accepted: one pending subscriber and one confirmation mail, to the bare address.
            want = normalise_email(case.address)
            got = [e.rcpt_tos for e in inbox]
            if answer.status_code != 200 or "Check your inbox" not in answer.text:
                wrong.append(f"{case}: refused ({answer.status_code}, {email_error(answer.text)})")
            elif stored != [want]:
                wrong.append(f"{case}: stored {stored}, expected [{want!r}]")
            elif got != [[want]]:
                wrong.append(f"{case}: the confirmation mail went to {got}, not [[{want!r}]]")
            else:
                message = message_from_bytes(inbox[0].original_content, policy=policy.default)
                if message["To"] != want or "/confirm/" not in str(
                    message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
                ):
                    wrong.append(f"{case}: the confirmation mail is wrong: To {message['To']!r}")
        else:
            # Refused: 422, the message beside the email field, nothing stored, nothing sent.
            error = email_error(answer.text)
            if answer.status_code != 422 or not error:
                wrong.append(f"{case}: accepted ({answer.status_code}, stored {stored})")
            elif 'aria-describedby="email-error"' not in answer.text:
                wrong.append(f"{case}: the email field does not point at its error message")
            elif stored or inbox:
                wrong.append(f"{case}: refused, yet stored {stored} / mailed {len(inbox)}")
        with engine.begin() as conn:
            conn.execute(delete(Subscriber))
    assert not wrong, "\n".join(["the form's answer differs from the lists:", *wrong])


def test_a_refusal_keeps_what_was_typed_escaped(client: TestClient) -> None:
    """The refused address stays in the field (escaped), with the reason beside it."""
    page = client.get("/")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    typed = '"<script>"@iana.org'
    answer = client.post("/subscribe", data={"csrf": csrf.group(1), "email": typed, **FORM})
    assert answer.status_code == 422 and "<script>" not in answer.text
    assert 'value="&#34;&lt;script&gt;&#34;@iana.org"' in answer.text
    error = email_error(answer.text)
    assert error and error.startswith("That is not a valid email address")


def test_an_idn_domain_is_kept_in_its_ascii_form() -> None:
    """Both spellings of an IDN domain are one subscriber, and SMTP can carry it (isemail #100).

    smtplib writes RCPT TO in ASCII: an address stored with a Unicode domain was accepted by
    the form but its confirmation mail could never be sent.
    """
    ascii_form = "test@xn--hxajbheg2az3al.xn--jxalpdlp"
    assert normalise_email("Test@XN--hxajbheg2az3al.xn--jxalpdlp") == ascii_form
    assert normalise_email("test@παράδειγμα.δοκιμή") == ascii_form
