"""The subscription rules on a real SQLite file: limits, double opt-in, links, unsubscribing."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from digest import subscriptions
from digest.config import Settings
from digest.db import make_engine
from digest.errors import SubscriberError
from digest.keywords import MAX_KEYWORD_CHARS, MAX_KEYWORD_LIST_CHARS, MAX_KEYWORDS
from digest.models import Subscriber
from digest.subscriptions import MAX_PAPERS, Interests, make_interests

NOW = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
ADA = "ada@example.org"


@pytest.fixture
def engine(settings: Settings) -> Engine:
    return make_engine(settings.database.url)


def fresh(engine: Engine, subscriber_id: int | None) -> Subscriber:
    with Session(engine) as session:
        row = session.get(Subscriber, subscriber_id)
    assert row is not None
    return row


def revoke(engine: Engine, subscriber_id: int | None) -> None:
    """What an operator does to revoke every link a reader holds."""
    with Session(engine) as session:
        row = session.get(Subscriber, subscriber_id)
        assert row is not None
        row.token_version += 1
        session.add(row)
        session.commit()


def test_the_module_is_light_to_import() -> None:
    code = (
        "import digest.subscriptions, sys; "
        "print(sorted(m for m in ('numpy', 'scipy', 'starlette', 'aiosmtpd', 'digest.ranking')"
        " if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# limits: refused with the limit named, never cut


def test_the_limits_are_reached_exactly_and_nothing_is_cut() -> None:
    keywords = [f"{i:03d} " + "k" * (MAX_KEYWORD_CHARS - 4) for i in range(MAX_KEYWORDS)]
    interests = make_interests(keywords, exclude=keywords, max_papers=MAX_PAPERS)
    assert interests.keywords == tuple(keywords) == interests.exclude
    assert all(len(k) == MAX_KEYWORD_CHARS for k in interests.keywords)
    typed = ", ".join(keywords[:19])
    assert len(typed) <= MAX_KEYWORD_LIST_CHARS
    assert make_interests(typed).keywords == tuple(keywords[:19])
    # Repeats (in any case) are one keyword: they count once.
    assert make_interests(", ".join(["LLM", "llm"] * 40)).keywords == ("LLM",)


@pytest.mark.parametrize(
    ("choices", "field", "needle"),
    [
        (dict(keywords=", ".join(f"k{i}" for i in range(51))), "keywords", "at most 50 keywords"),
        (dict(keywords=[f"k{i}" for i in range(51)]), "keywords", "at most 50 keywords"),
        (dict(keywords="a" * 101), "keywords", "at most 100 characters"),
        (dict(keywords="llm, " + "a" * 300), "keywords", "at most 100 characters"),
        (dict(keywords="x, " * 700), "keywords", "under 2000 characters"),
        (
            dict(keywords="llm", exclude=", ".join(f"x{i}" for i in range(51))),
            "exclude",
            "at most 50 excluded keywords",
        ),
        (dict(keywords="llm", exclude="b" * 101), "exclude", "at most 100 characters"),
        (dict(keywords=" , ;"), "keywords", "at least one keyword"),
        (dict(keywords="llm", max_papers=0), "max_papers", "from 1 to 50"),
        (dict(keywords="llm", max_papers=51), "max_papers", "from 1 to 50"),
        (dict(keywords="llm", frequency="hourly"), "frequency", "daily or weekly"),
        (dict(keywords="llm", weekday=7), "weekday", "0 (Monday) to 6"),
        (dict(keywords="llm", send_hour=24), "send_hour", "0-23"),
        (dict(keywords="llm", timezone="Mars/Olympus"), "timezone", "time zone"),
    ],
)
def test_each_limit_is_named_with_its_field(
    choices: dict[str, object], field: str, needle: str
) -> None:
    with pytest.raises(SubscriberError) as refused:
        make_interests(**choices)  # type: ignore[arg-type]
    assert needle in str(refused.value)
    assert refused.value.field == field


def test_a_stored_list_is_not_held_to_the_typed_text_limit() -> None:
    """The text limit bounds what is typed; a reader's stored keywords (a list) pass again."""
    long_words = tuple(f"{i:02d} " + "w" * 60 for i in range(40))
    assert len(", ".join(long_words)) > MAX_KEYWORD_LIST_CHARS
    assert subscriptions.keyword_list(long_words) == long_words
    with pytest.raises(SubscriberError, match="under 2000 characters"):
        subscriptions.keyword_list(", ".join(long_words))


# ---------------------------------------------------------------------------------------------
# double opt-in


def test_a_request_makes_a_pending_subscriber_that_only_its_link_activates(
    engine: Engine,
) -> None:
    wanted = make_interests("llm inference", exclude="survey", max_papers=7)
    outgoing = subscriptions.request(
        engine, " Ada@Example.ORG", wanted, now=NOW, interval_seconds=300
    )
    assert outgoing is not None and outgoing.kind == "confirm"
    row = fresh(engine, outgoing.subscriber_id)
    assert (row.email, row.status) == (ADA, "pending")
    assert subscriptions.interests_of(row) == wanted

    # Within the interval a second request records the new interests but earns no mail.
    later = make_interests("quantization")
    assert subscriptions.request(engine, ADA, later, now=NOW, interval_seconds=300) is None
    assert fresh(engine, row.id).keywords == ["quantization"]

    # A revoked link confirms nothing; the current one does.
    stale = fresh(engine, row.id)
    revoke(engine, row.id)
    assert subscriptions.confirm(engine, stale, now=NOW) == "pending"
    assert subscriptions.confirm(engine, fresh(engine, row.id), now=NOW) == "active"

    # An active subscription is never changed by a request: its reader is told instead.
    again = subscriptions.request(
        engine, ADA, make_interests("spam"), now=NOW + timedelta(hours=1), interval_seconds=300
    )
    assert again is not None and again.kind == "already"
    assert fresh(engine, row.id).keywords == ["quantization"]


def test_a_released_slot_can_be_claimed_again(engine: Engine) -> None:
    outgoing = subscriptions.request(
        engine, ADA, make_interests("llm"), now=NOW, interval_seconds=300
    )
    assert outgoing is not None
    assert not subscriptions.claim_mail_slot(
        engine, outgoing.subscriber_id, now=NOW, interval_seconds=300
    )
    subscriptions.release_mail_slot(engine, outgoing)  # the send failed
    assert fresh(engine, outgoing.subscriber_id).last_confirmation_at is None
    assert subscriptions.claim_mail_slot(
        engine, outgoing.subscriber_id, now=NOW, interval_seconds=300
    )


# ---------------------------------------------------------------------------------------------
# links and unsubscribing: one rule


def test_a_revoked_link_changes_nothing(engine: Engine) -> None:
    row = subscriptions.add(engine, ADA, make_interests("llm"), now=NOW)
    stale = fresh(engine, row.id)
    revoke(engine, row.id)
    with pytest.raises(SubscriberError, match="revoked"):
        subscriptions.unsubscribe(engine, stale, now=NOW)
    with pytest.raises(SubscriberError, match="revoked"):
        subscriptions.save_preferences(engine, stale, make_interests("spam"), now=NOW)
    after = fresh(engine, row.id)
    assert (after.status, after.keywords) == ("active", ["llm"])

    current = fresh(engine, row.id)
    subscriptions.save_preferences(engine, current, make_interests("diffusion"), now=NOW)
    assert fresh(engine, row.id).keywords == ["diffusion"]
    assert subscriptions.unsubscribe(engine, current, now=NOW) is True
    assert subscriptions.unsubscribe(engine, current, now=NOW) is False  # safe to repeat
    ended = fresh(engine, row.id)
    assert (ended.status, ended.unsubscribed_at) == ("unsubscribed", NOW)


def test_unsubscribing_by_address_needs_no_link(engine: Engine) -> None:
    row = subscriptions.add(engine, ADA, make_interests("llm"), now=NOW)
    revoke(engine, row.id)  # whatever links are out there
    assert subscriptions.unsubscribe(engine, "ADA@example.org ", now=NOW) is True
    assert fresh(engine, row.id).status == "unsubscribed"
    assert subscriptions.unsubscribe(engine, ADA, now=NOW) is False
    with pytest.raises(SubscriberError, match="no subscriber nobody@example.org"):
        subscriptions.unsubscribe(engine, "nobody@example.org", now=NOW)
    with pytest.raises(SubscriberError, match="not a valid email address"):
        subscriptions.unsubscribe(engine, "not an address", now=NOW)


# ---------------------------------------------------------------------------------------------
# the operator's side


def test_add_get_find_and_listing(engine: Engine) -> None:
    wanted = Interests(keywords=("llm",), frequency="weekly", weekday=4, timezone="Asia/Tokyo")
    row = subscriptions.add(engine, "Grace@Example.org", wanted, now=NOW)
    assert (row.email, row.status, row.confirmed_at) == ("grace@example.org", "active", NOW)
    assert subscriptions.interests_of(row) == wanted
    pending = subscriptions.add(engine, ADA, make_interests("x"), status="pending", now=NOW)
    assert pending.confirmed_at is None
    with pytest.raises(SubscriberError, match="already subscribed"):
        subscriptions.add(engine, "GRACE@example.org", wanted)
    assert subscriptions.get(engine, "grace@EXAMPLE.org").id == row.id
    assert subscriptions.find(engine, "nobody@example.org") is None
    with pytest.raises(SubscriberError, match="no subscriber"):
        subscriptions.get(engine, "nobody@example.org")
    assert [r.email for r in subscriptions.listing(engine)] == [ADA, "grace@example.org"]
    assert [r.email for r in subscriptions.listing(engine, status="pending")] == [ADA]
    assert subscriptions.by_id(engine, row.id or 0) is not None
