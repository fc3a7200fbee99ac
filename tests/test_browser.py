"""The whole reader journey in headless Chromium, against the real app served by uvicorn.

Subscribe in the form -> the confirmation mail reaches a real aiosmtpd server -> follow its
link -> press its Confirm button -> confirmed -> edit preferences while the live list follows the keywords -> a digest is
sent -> the RFC 8058 one-click POST to its List-Unsubscribe URL -> no further digest.

Chromium is Debian's (/usr/bin/chromium, installed by .ci/run), driven by Playwright's Python
API; Playwright's own browser download is never used. The test skips when Chromium or Playwright
is missing, unless DIGEST_REQUIRE_BROWSER=1. Every run saves screenshots of the main pages at
375 px and 1280 px wide, light and dark, under test-artifacts/screenshots/.

Each of those pages is also checked by axe-core (the npm package, pinned in tests/a11y/ and
installed there by `npm ci --prefix tests/a11y`, as .ci/run does) in each of the four looks:
no serious or critical violation may remain. Its counts by impact, every page and look, go to
test-artifacts/axe.json. Without axe-core the checks skip, or fail under
DIGEST_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

import dataclasses
import json
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
from digest.tokens import make_token
from digest.web import create_app

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
AXE_REPORT = ROOT / "test-artifacts" / "axe.json"
AXE_JS = Path(
    os.environ.get("DIGEST_AXE_JS", ROOT / "tests" / "a11y" / "node_modules/axe-core/axe.min.js")
)
# What a page must never have; moderate and minor findings are reported, not failed on.
AXE_FAILS = ("serious", "critical")
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
SCHEMES = ("light", "dark")
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


class Looks:
    """Screenshots of pages at each width in light and dark, each checked by axe-core."""

    def __init__(self, axe_source: str | None) -> None:
        self.axe_source = axe_source
        self.report: dict[str, dict[str, Any]] = {}

    def __call__(self, page: Any, name: str) -> None:
        """Screenshot and audit the current page in each look; nothing may stick out sideways."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for scheme in SCHEMES:
            page.emulate_media(color_scheme=scheme)
            for width in WIDTHS:
                look = f"{width}" if scheme == "light" else f"{width}-dark"
                page.set_viewport_size({"width": width, "height": 900})
                page.screenshot(path=str(SCREENSHOTS / f"{name}-{look}.png"), full_page=True)
                # A phone would scroll the whole page horizontally.
                overflow = page.evaluate(
                    "document.documentElement.scrollWidth - document.documentElement.clientWidth"
                )
                assert overflow <= 0, f"{name} is {overflow} px too wide at {width} px"
                if self.axe_source is not None:
                    self.report.setdefault(name, {})[look] = self.audit(page)
        page.emulate_media(color_scheme="light")
        page.set_viewport_size({"width": WIDTHS[-1], "height": 900})

    def audit(self, page: Any) -> list[dict[str, Any]]:
        """axe-core's violations on the page as it is now (WCAG 2.x A and AA, best practice)."""
        # Evaluated, not added as a <script>: the pages' CSP allows no inline script, and a
        # check must not loosen it.
        if not page.evaluate("typeof window.axe === 'object'"):
            page.evaluate(self.axe_source)
        violations: list[dict[str, Any]] = page.evaluate(
            """() => axe.run(document, {resultTypes: ["violations"]}).then(r => r.violations.map(
                v => ({id: v.id, impact: v.impact, help: v.help,
                       nodes: v.nodes.map(n => ({target: n.target.join(" "),
                                                 summary: n.failureSummary}))})))"""
        )
        return violations

    def finish(self) -> None:
        """Write the report; fail on any serious or critical finding, or skip without axe."""
        if self.axe_source is None:
            _unavailable(f"axe-core is not installed at {AXE_JS} (npm ci --prefix tests/a11y)")
        AXE_REPORT.parent.mkdir(parents=True, exist_ok=True)
        counts = {
            name: {look: dict(sorted(_impacts(found).items())) for look, found in looks.items()}
            for name, looks in self.report.items()
        }
        AXE_REPORT.write_text(json.dumps({"counts": counts, "found": self.report}, indent=1))
        bad = [
            f"{name} ({look}): {v['impact']} {v['id']} ({v['help']}) at "
            + "; ".join(n["target"] for n in v["nodes"][:3])
            for name, looks in self.report.items()
            for look, found in looks.items()
            for v in found
            if v["impact"] in AXE_FAILS
        ]
        assert not bad, "axe-core:\n" + "\n".join(bad)


def _impacts(found: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in found:
        out[v["impact"]] = out.get(v["impact"], 0) + len(v["nodes"])
    return out


@pytest.fixture
def looks(browser: Any) -> Looks:
    """The screenshot-and-audit helper; axe-core's source when it is installed."""
    return Looks(AXE_JS.read_text(encoding="utf-8") if AXE_JS.is_file() else None)


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


def seed_papers(site: LiveSite) -> None:
    """A day of papers: the shared seed list, or the sample that ships with the package (the
    seed's first papers) when ../shared is not beside the project."""
    location = str(SEED) if SEED.is_file() else "bundled:sample-papers.txt"
    report = ingest.ingest(
        site.engine,
        site.settings,
        ingest.specs_from(site.settings, [location]),
        now=NOW - timedelta(hours=1),
    )
    assert not report.errors and report.total("new") > 10


def open_page(browser: Any, site: LiveSite, *, width: int) -> tuple[Any, list[str]]:
    """A page in a fresh context, and the list its problems are written to: script errors,
    CSP violations, failing requests, and any request that leaves the site."""
    context = browser.new_context(
        viewport={"width": width, "height": 900}, timezone_id="Europe/Berlin", locale="en-GB"
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
    return page, problems


def test_subscribe_confirm_tune_receive_and_unsubscribe_in_a_browser(
    browser: Any, site: LiveSite, looks: Looks
) -> None:
    from playwright.sync_api import expect

    seed_papers(site)
    page, problems = open_page(browser, site, width=1280)
    context = page.context

    # The home page: the form, today's top papers, the time zone taken from the browser.
    page.goto(site.url + "/")
    expect(page.get_by_role("heading", name="Subscribe", exact=True)).to_be_visible()
    expect(page.locator("#timezone")).to_have_value("Europe/Berlin")
    assert len(titles(page)) == 8
    looks(page, "home")

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
    looks(page, "home-error")
    assert site.inbox == []

    page.fill("#email", READER)
    page.get_by_role("button", name="Subscribe").click()
    expect(page.get_by_role("heading", name="Check your inbox", exact=True)).to_be_visible()
    looks(page, "check-inbox")

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
    looks(page, "confirm")
    context.clear_cookies()
    page.get_by_role("button", name="Confirm subscription").click()
    expect(page.get_by_role("heading", name="You are subscribed", exact=True)).to_be_visible()
    expect(page.locator("main")).to_contain_text("every day around 07:00 (Europe/Berlin)")
    assert reader(site.engine).status == "active"
    looks(page, "confirmed")

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
    looks(page, "preferences")
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
    # The mail's HTML keeps what mail programs need (bgcolor, presentation tables) but nothing
    # merely invalid: a <meta> needs its content, and <body> has no width.
    expect(page.locator("meta[name]:not([content])")).to_have_count(0)
    expect(page.locator("body[width]")).to_have_count(0)
    expect(page.locator("body[bgcolor]")).to_have_count(1)
    looks(page, "digest-in-browser")

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
    looks(page, "unsubscribe")

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
    looks(page, "unsubscribed")

    # The preferences link still opens, marked unsubscribed; so does a mail unsubscribe's
    # come-back page.
    page.goto(link(digest_mail, site.url, "preferences"))
    expect(page.locator(".badge")).to_have_text("unsubscribed")
    looks(page, "preferences-unsubscribed")
    back = make_token(
        site.settings.secret_key,
        "resubscribe",
        subscriber_id=gone.id or 0,
        version=gone.token_version,
    )
    page.goto(f"{site.url}/resubscribe/{back}")
    expect(page.get_by_role("button", name="Subscribe again")).to_be_visible()
    looks(page, "resubscribe")

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
    expect(page.locator(".paper-card").first).to_be_visible()
    looks(page, "archive")
    page.get_by_role("navigation", name="Site").get_by_role("link", name="Feed").click()
    expect(page.get_by_role("heading", name="Follow the archive in a feed reader")).to_be_visible()
    expect(page.get_by_label("Feed address")).to_have_value(site.url + "/archive.atom")
    looks(page, "feed")
    page.goto(site.url + "/confirm/not-a-token")
    expect(page.get_by_role("heading", name="This link is not valid", exact=True)).to_be_visible()
    looks(page, "bad-link")

    context.close()
    assert not problems, "\n".join(problems)
    looks.finish()


# What the focused element's ring looks like, and what it is drawn on: the ring of the
# Daily/Weekly choice goes round the whole control.
FOCUS_RING = """() => {
  const el = document.activeElement;
  const ring = el.closest(".segmented") || el;
  const style = getComputedStyle(ring);
  let bg = "rgb(255, 255, 255)";
  for (let n = ring.parentElement; n; n = n.parentElement) {
    const b = getComputedStyle(n).backgroundColor;
    if (b !== "transparent" && b !== "rgba(0, 0, 0, 0)") { bg = b; break; }
  }
  return {
    what: el.id || (el.textContent || "").trim().replace(/\\s+/g, " "),
    style: style.outlineStyle, width: parseFloat(style.outlineWidth),
    offset: parseFloat(style.outlineOffset), color: style.outlineColor, bg: bg,
  };
}"""


def contrast(a: str, b: str) -> float:
    """WCAG's contrast ratio of two CSS rgb()/rgba() colours (opaque ones)."""

    def luminance(color: str) -> float:
        r, g, b = (int(float(x)) / 255 for x in re.findall(r"[\d.]+", color)[:3])
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


class Keyboard:
    """Tab through a page as a keyboard-only reader does, checking each stop's focus ring."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.stops: list[str] = []
        self.faint: list[str] = []

    def focused(self) -> str:
        """The focused element's id or text, after checking that its ring can be seen."""
        ring = self.page.evaluate(FOCUS_RING)
        # WCAG 1.4.11: a focus indicator stands out 3:1 from what is next to it. The ring is
        # drawn outside the element, so next to it is what the element sits on.
        ratio = contrast(ring["color"], ring["bg"])
        if ring["style"] == "none" or ring["width"] < 2 or ring["offset"] < 0 or ratio < 3:
            self.faint.append(f"{ring['what']}: {ring} ({ratio:.2f}:1)")
        return str(ring["what"])

    def tab(self, key: str = "Tab") -> str:
        """Press Tab (or another key) and say what has the focus now."""
        self.page.keyboard.press(key)
        self.stops.append(self.focused())
        return self.stops[-1]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_form_by_keyboard_alone(browser: Any, site: LiveSite, scheme: str) -> None:
    """Tab through the subscribe form, fill it, send it with an error and fix it, with no
    mouse; every stop's focus ring stands out, in light and dark."""
    from playwright.sync_api import expect

    seed_papers(site)
    page, problems = open_page(browser, site, width=1280)
    page.emulate_media(color_scheme=scheme)
    page.goto(site.url + "/")
    keys = Keyboard(page)

    # The first stop skips the header: it lands on the form's first field.
    assert keys.tab() == "Skip to the content"
    page.keyboard.press("Enter")
    assert keys.tab() == "email"

    page.goto(site.url + "/")
    keys.stops.clear()
    while keys.tab() != "email":
        assert len(keys.stops) < 10, keys.stops
    page.keyboard.type("not an address")
    assert keys.tab() == "keywords"
    page.keyboard.type("llm inference, quantization")
    expect(page.locator("[data-live-count]")).to_contain_text("match")
    assert keys.tab() == "exclude"
    assert keys.tab() == "frequency-daily"
    # Arrows move the choice; the weekday shows for weekly digests and takes the next Tab.
    assert keys.tab("ArrowRight") == "frequency-weekly"
    expect(page.locator("#frequency-weekly")).to_be_checked()
    assert keys.tab() == "weekday"
    assert keys.tab("Shift+Tab") == "frequency-weekly"
    assert keys.tab("ArrowLeft") == "frequency-daily"
    expect(page.locator("#weekday")).to_be_hidden()
    page.locator(".form-card").screenshot(path=str(SCREENSHOTS / f"keyboard-choice-{scheme}.png"))
    for name in ("send_hour", "timezone", "max_papers", "Subscribe"):
        assert keys.tab() == name
    assert keys.stops[:5] == ["Skip to the content", "◆ digest", "Subscribe", "Archive", "Feed"]
    expect(page.locator("#keywords")).to_have_accessible_description(
        re.compile("^Topics you want, separated by commas")
    )
    page.screenshot(path=str(SCREENSHOTS / f"keyboard-{scheme}.png"))
    page.keyboard.press("Enter")

    # Back with an error: the focus is on the summary of what to fix, not left on <body>;
    # its link puts the focus in the field, whose description now says what is wrong.
    summary = page.locator("#error-summary")
    expect(summary).to_be_focused()
    expect(summary).to_contain_text("Email address: That is not a valid email address")
    assert keys.focused() == "error-summary"
    assert keys.tab().startswith("Email address: That is not a valid email address")
    page.screenshot(path=str(SCREENSHOTS / f"keyboard-error-{scheme}.png"))
    page.keyboard.press("Enter")
    expect(page.locator("#email")).to_be_focused()
    expect(page.locator("#email")).to_have_accessible_description(
        re.compile("not a valid email address")
    )
    expect(page.locator("#keywords")).to_have_value("llm inference, quantization")
    page.keyboard.press("ControlOrMeta+A")
    page.keyboard.type(READER)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Check your inbox", exact=True)).to_be_visible()
    wait_for(lambda: len(site.inbox) == 1, what="the confirmation mail")

    page.context.close()
    assert not keys.faint, "focus rings that cannot be seen:\n" + "\n".join(keys.faint)
    assert not problems, "\n".join(problems)


def test_on_a_phone_what_the_keywords_pick_shows_under_them(browser: Any, site: LiveSite) -> None:
    """At 375 px the list of today's picks is far below the form: a short live summary right
    under the keywords field shows what they pick while they are typed."""
    from playwright.sync_api import expect

    seed_papers(site)
    page, problems = open_page(browser, site, width=375)
    page.set_viewport_size({"width": 375, "height": 740})
    page.goto(site.url + "/")
    count = page.locator("[data-live-count]")
    expect(count).to_have_attribute("aria-live", "polite")
    expect(page.locator("[data-live-top]")).to_be_hidden()

    page.locator("#keywords").click()
    page.keyboard.type("llm inference, quantization")
    expect(count).to_contain_text("match; the top 3:")
    wanted = httpx.get(
        site.url + "/api/rank",
        params={"keywords": "llm inference, quantization", "limit": "10"},
    ).json()
    top = [p["title"] for p in wanted["papers"][:3]]
    expect(page.locator("[data-live-top] li")).to_have_text(top)
    expect(count).to_contain_text(f"{len(wanted['papers'])} of today’s {wanted['total']} new")
    # All of it is on the screen with the field being typed in.
    for shown in (page.locator("#keywords"), count, page.locator("[data-live-top]")):
        expect(shown).to_be_in_viewport(ratio=1)
    page.screenshot(path=str(SCREENSHOTS / "home-typing-375.png"))
    page.get_by_role("link", name="See the whole list").click()
    expect(page.locator("#papers-heading")).to_be_in_viewport()
    expect(page.locator("[data-live-list] .paper-title").first).to_have_text(top[0])

    # Beside the panel on a wide screen, the summary is only read out: no second list.
    page.set_viewport_size({"width": 1280, "height": 900})
    expect(page.locator("[data-live-top]")).to_be_hidden()
    expect(page.get_by_role("link", name="See the whole list")).to_be_hidden()
    expect(count).to_contain_text("match")

    # Keywords cleared: the home page's list and an empty summary again.
    page.fill("#keywords", "")
    expect(page.locator("[data-live-heading]")).to_have_text("Today’s top papers")
    expect(count).to_have_text("")
    page.context.close()
    assert not problems, "\n".join(problems)
