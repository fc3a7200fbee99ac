"""The whole reader journey in headless Chromium, against the real app served by uvicorn.

Subscribe in the form -> the confirmation mail reaches a real aiosmtpd server -> follow its
link -> press its Confirm button -> confirmed -> edit preferences while the live list follows the keywords -> a digest is
sent -> the RFC 8058 one-click POST to its List-Unsubscribe URL -> no further digest.

Chromium is Debian's (/usr/bin/chromium, installed by .ci/run), driven by Playwright's Python
API; Playwright's own browser download is never used. The test skips when Chromium or Playwright
is missing, unless DIGEST_REQUIRE_BROWSER=1. Every run saves screenshots of the main pages at
375 px and 1280 px wide under test-artifacts/screenshots/.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from digest import delivery, ingest
from digest.config import Settings
from digest.db import make_engine
from digest.models import Delivery, Subscriber
from digest.render import Renderer
from digest.sink import free_port
from digest.web import create_app

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
SEED = ROOT.parent / "shared" / "seeds" / "daily-papers-a.txt"
CHROMIUM = Path("/usr/bin/chromium")
# No internet here: without the background-networking flags Chromium keeps dialling out.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDTHS = (375, 1280)
NOW = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
READER = "ada@example.org"


def _unavailable(reason: str) -> None:
    if os.environ.get("DIGEST_REQUIRE_BROWSER") == "1":
        pytest.fail(f"DIGEST_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's headless Chromium under Playwright."""
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclasses.dataclass
class LiveSite:
    """The app served by uvicorn on loopback, and what it was built from."""

    url: str
    settings: Settings
    engine: Engine
    inbox: list[Any]


@pytest.fixture
def site(settings: Settings, smtp_server: Any) -> Iterator[LiveSite]:
    """The real app under uvicorn in a thread; its mail goes to the aiosmtpd server."""
    controller, handler = smtp_server
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    live = dataclasses.replace(
        settings,
        smtp=dataclasses.replace(
            settings.smtp, host="127.0.0.1", port=controller.port, security="none"
        ),
        site=dataclasses.replace(settings.site, base_url=url),
    )
    engine = make_engine(live.database.url)
    config = uvicorn.Config(
        create_app(live, engine, clock=lambda: NOW),
        host="127.0.0.1",
        port=port,
        lifespan="on",
        ws="none",
        log_level="warning",
        access_log=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait_for(lambda: server.started, what="uvicorn to start")
    try:
        yield LiveSite(url=url, settings=live, engine=engine, inbox=handler.envelopes)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.dispose()


def wait_for(predicate: Callable[[], object], *, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def shoot(page: Any, name: str) -> None:
    """Save full-page screenshots of the current page at each width."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
        # Nothing may stick out sideways: a phone would scroll the whole page horizontally.
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name} is {overflow} px too wide at {width} px"
    page.set_viewport_size({"width": WIDTHS[-1], "height": 900})


def parsed(envelope: Any) -> EmailMessage:
    return cast(EmailMessage, message_from_bytes(envelope.original_content, policy=policy.default))


def plain_text(msg: EmailMessage) -> str:
    body = msg.get_body(preferencelist=("plain",))
    assert body is not None
    return cast(str, body.get_content())


def link(msg: EmailMessage, base: str, kind: str) -> str:
    found = re.search(rf"{re.escape(base)}/{kind}/\S+", plain_text(msg))
    assert found, plain_text(msg)
    return found.group(0)


def reader(engine: Engine) -> Subscriber:
    with Session(engine) as session:
        row = session.exec(select(Subscriber).where(Subscriber.email == READER)).one()
        session.expunge(row)
        return row


def titles(page: Any) -> list[str]:
    return [t.strip() for t in page.locator("[data-live-list] .paper-title").all_inner_texts()]


def test_subscribe_confirm_tune_receive_and_unsubscribe_in_a_browser(
    browser: Any, site: LiveSite
) -> None:
    from playwright.sync_api import expect

    # A day of papers: the shared seed list, or the sample that ships with the package (the
    # seed's first papers) when ../shared is not beside the project.
    location = str(SEED) if SEED.is_file() else "bundled:sample-papers.txt"
    report = ingest.ingest(
        site.engine,
        site.settings,
        ingest.specs_from(site.settings, [location]),
        now=NOW - timedelta(hours=1),
    )
    assert not report.errors and report.total("new") > 10

    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, timezone_id="Europe/Berlin", locale="en-GB"
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"script error: {e}"))
    # CSP violations and script failures show up as console errors. A 4xx page (the form's
    # 422, a bad link's 400) is logged too: those are expected, but a failing stylesheet,
    # script or API call is not.
    page.on(
        "console",
        lambda m: (
            problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on(
        "response",
        lambda r: (
            problems.append(f"{r.status} for {r.request.resource_type} {r.url}")
            if r.status >= 400 and r.request.resource_type != "document"
            else None
        ),
    )
    page.on(
        "request",
        lambda r: (
            None if r.url.startswith(site.url) else problems.append(f"left the site: {r.url}")
        ),
    )

    # The home page: the form, today's top papers, the time zone taken from the browser.
    page.goto(site.url + "/")
    expect(page.get_by_role("heading", name="Subscribe", exact=True)).to_be_visible()
    expect(page.locator("#timezone")).to_have_value("Europe/Berlin")
    assert len(titles(page)) == 8
    shoot(page, "home")

    # Weekly shows the weekday; back to daily hides it again.
    weekday = page.locator("[data-weekly-only]")
    expect(weekday).to_be_hidden()
    page.get_by_role("radio", name="Weekly").check()
    expect(weekday).to_be_visible()
    page.select_option("#weekday", label="Thursday")
    page.get_by_role("radio", name="Daily").check()
    expect(weekday).to_be_hidden()

    page.fill("#email", "not an address")
    page.fill("#keywords", "llm inference, quantization")
    # The panel beside the form follows the keywords as they are typed.
    expect(page.locator("[data-live-heading]")).to_have_text("What you would get today")
    expect(page.locator("[data-live-status]")).to_contain_text("match")
    page.fill("#exclude", "survey")
    page.select_option("#send_hour", "7")
    page.fill("#max_papers", "5")
    page.get_by_role("button", name="Subscribe").click()

    # A bad address: the message sits beside the field, everything typed is kept.
    expect(page.locator("#email-error")).to_contain_text("not a valid email address")
    expect(page.locator("#email")).to_have_attribute("aria-describedby", "email-error")
    expect(page.locator("#keywords")).to_have_value("llm inference, quantization")
    expect(page.locator("#timezone")).to_have_value("Europe/Berlin")
    shoot(page, "home-error")
    assert site.inbox == []

    page.fill("#email", READER)
    page.get_by_role("button", name="Subscribe").click()
    expect(page.get_by_role("heading", name="Check your inbox", exact=True)).to_be_visible()
    shoot(page, "check-inbox")

    # The confirmation mail, as the reader's mail program would see it.
    wait_for(lambda: len(site.inbox) == 1, what="the confirmation mail")
    assert site.inbox[0].rcpt_tos == [READER]
    confirmation = parsed(site.inbox[0])
    assert confirmation["To"] == READER and "Confirm" in confirmation["Subject"]
    pending = reader(site.engine)
    assert pending.status == "pending"
    assert (pending.keywords, pending.exclude) == (["llm inference", "quantization"], ["survey"])
    assert (pending.frequency, pending.send_hour, pending.timezone, pending.max_papers) == (
        "daily",
        7,
        "Europe/Berlin",
        5,
    )

    # The link shows what is confirmed and a button: opening it (as a mail scanner does)
    # changes nothing; the button's POST confirms, with no cookie or form token needed.
    for _ in range(2):
        page.goto(link(confirmation, site.url, "confirm"))
        expect(
            page.get_by_role("heading", name="Confirm your subscription", exact=True)
        ).to_be_visible()
    expect(page.locator("main")).to_contain_text("llm inference, quantization")
    assert reader(site.engine).status == "pending"
    shoot(page, "confirm")
    context.clear_cookies()
    page.get_by_role("button", name="Confirm subscription").click()
    expect(page.get_by_role("heading", name="You are subscribed", exact=True)).to_be_visible()
    expect(page.locator("main")).to_contain_text("every day around 07:00 (Europe/Berlin)")
    assert reader(site.engine).status == "active"
    shoot(page, "confirmed")

    # Preferences: the link on the confirmed page; the live list follows the edited keywords.
    page.get_by_role("link", name="Tune your preferences").click()
    expect(page.get_by_role("heading", name="Your preferences", exact=True)).to_be_visible()
    expect(page.locator("#keywords")).to_have_value("llm inference, quantization")
    before = titles(page)
    page.fill("#keywords", "reinforcement learning, offline rl")
    page.fill("#exclude", "")
    wanted = httpx.get(
        site.url + "/api/rank",
        params={"keywords": "reinforcement learning, offline rl", "limit": "5"},
    ).json()
    expected = [p["title"] for p in wanted["papers"]]
    assert expected and expected != before
    expect(page.locator("[data-live-list] .paper-title")).to_have_text(expected)
    expect(page.locator("[data-live-list] .paper-reason").first).to_contain_text("matched")
    expect(page.locator("[data-live-status]")).to_contain_text(f"{len(expected)} of")
    page.get_by_role("button", name="Save preferences").click()
    expect(page.get_by_role("status")).to_contain_text("Saved.")
    expect(page.locator("[data-live-list] .paper-title")).to_have_text(expected)
    shoot(page, "preferences")
    tuned = reader(site.engine)
    assert (tuned.keywords, tuned.exclude) == (["reinforcement learning", "offline rl"], [])

    # A digest goes out to the same SMTP server, picked with the new keywords.
    sent = delivery.send(site.engine, site.settings, renderer=Renderer.create(), now=NOW)
    assert sent.sent == 1, sent.errors
    assert len(site.inbox) == 2 and site.inbox[1].rcpt_tos == [READER]
    digest_mail = parsed(site.inbox[1])
    assert expected[0] in plain_text(digest_mail)

    page.goto(link(digest_mail, site.url, "digest"))
    expect(page.locator("body")).to_contain_text(expected[0])
    shoot(page, "digest-in-browser")

    header = digest_mail["List-Unsubscribe"]
    assert digest_mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    found = re.search(r"<(https?://[^>]+)>", header)
    assert found, header
    unsubscribe_url = found.group(1)
    assert urlsplit(unsubscribe_url).netloc == urlsplit(site.url).netloc

    # A mail scanner (or a curious reader) opening the link changes nothing: it shows a button.
    for _ in range(2):
        page.goto(unsubscribe_url)
        expect(page.get_by_role("button", name="Unsubscribe")).to_be_visible()
    expect(page.locator("main")).to_contain_text(READER)
    assert reader(site.engine).status == "active"
    shoot(page, "unsubscribe")

    # The mail provider's RFC 8058 one-click POST: no cookie, no CSRF token, no redirect.
    with httpx.Client(follow_redirects=False) as provider:
        answer = provider.post(
            unsubscribe_url,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert answer.status_code == 200 and "location" not in answer.headers
    gone = reader(site.engine)
    assert gone.status == "unsubscribed" and gone.unsubscribed_at is not None

    page.goto(unsubscribe_url)
    expect(page.get_by_role("heading", name="You are unsubscribed", exact=True)).to_be_visible()
    shoot(page, "unsubscribed")

    # The next day's run sends this reader nothing.
    later = delivery.send(
        site.engine, site.settings, renderer=Renderer.create(), now=NOW + timedelta(days=1)
    )
    assert later.sent == 0 and later.planned == 0
    assert [e.rcpt_tos for e in site.inbox] == [[READER], [READER]]
    with Session(site.engine) as session:
        assert len(session.exec(select(Delivery)).all()) == 1

    page.goto(site.url + "/archive")
    expect(page.get_by_role("heading", name="Archive", exact=True)).to_be_visible()
    shoot(page, "archive")
    page.goto(site.url + "/confirm/not-a-token")
    expect(page.get_by_role("heading", name="This link is not valid", exact=True)).to_be_visible()
    shoot(page, "bad-link")

    context.close()
    assert not problems, "\n".join(problems)
