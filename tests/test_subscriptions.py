"""The subscription rules on a real SQLite file: limits, double opt-in, links, unsubscribing."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from digest import subscriptions
from digest.config import Settings
from digest.db import make_engine
from digest.errors import SubscriberError, TooManyRequests
from digest.keywords import MAX_KEYWORD_CHARS, MAX_KEYWORD_LIST_CHARS, MAX_KEYWORDS
from digest.models import Delivery, Subscriber, SubscribeRequest
from digest.subscriptions import MAX_PAPERS, Interests, Origin, make_interests

NOW = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
ADA = "ada@example.org"
# A web client's origin with caps no test of the other rules reaches.
WEB = Origin(channel="web", key="203.0.113.5", per_hour=1000, total_per_hour=1000)


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
        engine, " Ada@Example.ORG", wanted, now=NOW, interval_seconds=300, origin=WEB
    )
    assert outgoing is not None and outgoing.kind == "confirm"
    row = fresh(engine, outgoing.subscriber_id)
    assert (row.email, row.status) == (ADA, "pending")
    assert subscriptions.interests_of(row) == wanted

    # Within the interval a second request records the new interests but earns no mail.
    later = make_interests("quantization")
    assert (
        subscriptions.request(engine, ADA, later, now=NOW, interval_seconds=300, origin=WEB) is None
    )
    assert fresh(engine, row.id).keywords == ["quantization"]

    # A revoked link confirms nothing; the current one does.
    stale = fresh(engine, row.id)
    revoke(engine, row.id)
    assert subscriptions.confirm(engine, stale, now=NOW) == "pending"
    assert subscriptions.confirm(engine, fresh(engine, row.id), now=NOW) == "active"

    # An active subscription is never changed by a request: its reader is told instead.
    again = subscriptions.request(
        engine,
        ADA,
        make_interests("spam"),
        now=NOW + timedelta(hours=1),
        interval_seconds=300,
        origin=WEB,
    )
    assert again is not None and again.kind == "already"
    assert fresh(engine, row.id).keywords == ["quantization"]


def test_a_released_slot_can_be_claimed_again(engine: Engine) -> None:
    outgoing = subscriptions.request(
        engine, ADA, make_interests("llm"), now=NOW, interval_seconds=300, origin=WEB
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


def test_a_revoked_link_changes_nothing_but_an_unsubscribe_link_still_unsubscribes(
    engine: Engine,
) -> None:
    row = subscriptions.add(engine, ADA, make_interests("llm"), now=NOW)
    stale = fresh(engine, row.id)
    revoke(engine, row.id)
    with pytest.raises(SubscriberError, match="revoked"):
        subscriptions.save_preferences(engine, stale, make_interests("spam"), now=NOW)
    after = fresh(engine, row.id)
    assert (after.status, after.keywords) == ("active", ["llm"])
    # Which links still act after the revocation: an unsubscribe link at any older version.
    current = fresh(engine, row.id)
    for purpose in ("preferences", "view", "confirm", "resubscribe"):
        assert not subscriptions.link_holds(purpose, current, stale.token_version)
        assert subscriptions.link_holds(purpose, current, current.token_version)
    assert subscriptions.link_holds("unsubscribe", current, stale.token_version)
    assert not subscriptions.link_holds("unsubscribe", current, current.token_version + 1)

    subscriptions.save_preferences(engine, current, make_interests("diffusion"), now=NOW)
    assert fresh(engine, row.id).keywords == ["diffusion"]
    assert subscriptions.unsubscribe(engine, stale, now=NOW) is True
    assert subscriptions.unsubscribe(engine, current, now=NOW) is False  # safe to repeat
    ended = fresh(engine, row.id)
    assert (ended.status, ended.unsubscribed_at) == ("unsubscribed", NOW)


def test_a_come_back_link_brings_back_an_unsubscribed_reader_only(engine: Engine) -> None:
    row = subscriptions.add(engine, ADA, make_interests("llm", max_papers=7), now=NOW)
    assert subscriptions.unsubscribe_address(engine, ADA, now=NOW) == "active"
    assert subscriptions.unsubscribe_address(engine, ADA, now=NOW) is None
    stale = fresh(engine, row.id)
    revoke(engine, row.id)
    assert subscriptions.resubscribe(engine, stale, now=NOW) == "unsubscribed"
    back = fresh(engine, row.id)
    assert subscriptions.resubscribe(engine, back, now=NOW) == "active"
    again = fresh(engine, row.id)
    assert (again.status, again.unsubscribed_at, again.keywords, again.max_papers) == (
        "active",
        None,
        ["llm"],
        7,
    )
    # A pending address (never a reader) is not made active by one.
    pending = subscriptions.add(engine, "new@example.org", make_interests("x"), status="pending")
    assert subscriptions.resubscribe(engine, pending, now=NOW) == "pending"
    assert subscriptions.unsubscribe_address(engine, "new@example.org", now=NOW) == "pending"


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


# ---------------------------------------------------------------------------------------------
# the hourly caps on subscribe requests


def origin(key: str = "203.0.113.5", *, per_hour: int = 3, total: int = 100) -> Origin:
    return Origin(channel="web", key=key, per_hour=per_hour, total_per_hour=total)


def request_count(engine: Engine) -> int:
    with Session(engine) as session:
        return len(session.exec(select(SubscribeRequest)).all())


def test_an_origin_over_its_cap_is_refused_and_nothing_is_recorded(engine: Engine) -> None:
    for i in range(3):
        subscriptions.request(
            engine,
            f"a{i}@example.org",
            make_interests("llm"),
            now=NOW,
            interval_seconds=300,
            origin=origin(),
        )
    with pytest.raises(TooManyRequests) as refused:
        subscriptions.request(
            engine,
            "victim@example.org",
            make_interests("FREE PRIZE"),
            now=NOW + timedelta(minutes=10),
            interval_seconds=300,
            origin=origin(),
        )
    assert refused.value.scope == "origin"
    assert refused.value.retry_after == 50 * 60  # when the first request leaves the hour
    assert subscriptions.find(engine, "victim@example.org") is None
    assert request_count(engine) == 3
    # An invalid address is refused before it counts.
    with pytest.raises(SubscriberError):
        subscriptions.request(
            engine,
            "nope",
            make_interests("x"),
            now=NOW,
            interval_seconds=300,
            origin=origin("198.51.100.1"),
        )
    assert request_count(engine) == 3
    # Another origin has its own share; the first has room again once the hour has passed.
    assert subscriptions.request(
        engine,
        "b@example.org",
        make_interests("x"),
        now=NOW,
        interval_seconds=300,
        origin=origin("198.51.100.1"),
    )
    assert subscriptions.request(
        engine,
        "victim@example.org",
        make_interests("x"),
        now=NOW + timedelta(hours=1, seconds=1),
        interval_seconds=300,
        origin=origin(),
    )


def test_every_request_counts_whatever_the_address(engine: Engine) -> None:
    """A request within the address's interval earns no mail but still counts: the refusal
    then never depends on the address asked for."""
    for _ in range(3):
        subscriptions.request(
            engine, ADA, make_interests("llm"), now=NOW, interval_seconds=300, origin=origin()
        )
    with pytest.raises(TooManyRequests):
        subscriptions.request(
            engine,
            "new@example.org",
            make_interests("llm"),
            now=NOW,
            interval_seconds=300,
            origin=origin(),
        )


def test_the_cap_on_all_requests_counts_every_origin_and_channel(engine: Engine) -> None:
    mail = Origin(channel="mail", key="example.org", per_hour=10, total_per_hour=4)
    for i in range(2):
        subscriptions.request(
            engine,
            f"w{i}@example.org",
            make_interests("x"),
            now=NOW,
            interval_seconds=300,
            origin=origin(f"203.0.113.{i}", total=4),
        )
        subscriptions.request(
            engine,
            f"m{i}@example.org",
            make_interests("x"),
            now=NOW,
            interval_seconds=300,
            origin=mail,
        )
    with pytest.raises(TooManyRequests) as refused:
        subscriptions.request(
            engine,
            "late@example.org",
            make_interests("x"),
            now=NOW,
            interval_seconds=300,
            origin=origin("192.0.2.77", total=4),
        )
    assert refused.value.scope == "total"
    counts = subscriptions.request_counts(engine, now=NOW)
    assert (counts.total, counts.by_channel) == (4, {"mail": 2, "web": 2})
    assert counts.busiest[0] == ("mail", "example.org", 2)


def test_client_origins() -> None:
    assert subscriptions.client_origin("203.0.113.5") == "203.0.113.5"
    # An IPv6 client counts by its /64: one machine may use any address in it.
    assert subscriptions.client_origin("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert subscriptions.client_origin("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert subscriptions.client_origin("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert subscriptions.client_origin("::ffff:192.0.2.1") == "192.0.2.1"
    assert subscriptions.client_origin(None) == "unknown"
    assert subscriptions.domain_origin("ada@Mail.Example.org") == "mail.example.org"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'race.db'}"
    return str(request.getfixturevalue("pg_url"))


def test_racing_requests_from_several_processes_never_pass_a_cap(db_url: str) -> None:
    """Each thread has its own engine (its own connections), as each `digest serve` process on
    one database has: the count and the new row are one locked transaction."""
    make_engine(db_url).dispose()  # the schema, once
    engines = [make_engine(db_url) for _ in range(12)]
    barrier = threading.Barrier(len(engines))
    results: list[str] = []

    def attempt(i: int, engine: Engine) -> None:
        barrier.wait()
        try:
            subscriptions.request(
                engine,
                f"r{i}@example.org",
                make_interests("llm"),
                now=NOW,
                interval_seconds=300,
                origin=origin(per_hour=5),
            )
            results.append("ok")
        except TooManyRequests:
            results.append("refused")

    threads = [threading.Thread(target=attempt, args=(i, e)) for i, e in enumerate(engines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.dispose()
    assert sorted(results) == ["ok"] * 5 + ["refused"] * 7


# ---------------------------------------------------------------------------------------------
# purging unconfirmed subscriptions


def test_unconfirmed_subscriptions_are_purged_after_their_days_and_no_one_else(
    engine: Engine,
) -> None:
    old = NOW - timedelta(days=8)
    for i in range(3):  # typed by someone, never confirmed, last asked for 8 days ago
        subscriptions.request(
            engine,
            f"stale{i}@example.org",
            make_interests("x"),
            now=old,
            interval_seconds=300,
            origin=WEB,
        )
    subscriptions.request(  # asked 6 days ago: its link still works
        engine,
        "recent@example.org",
        make_interests("x"),
        now=NOW - timedelta(days=6),
        interval_seconds=300,
        origin=WEB,
    )
    for status in ("active", "unsubscribed", "bounced"):
        subscriptions.add(engine, f"{status}@example.org", make_interests("x"), now=old)
        with Session(engine) as session:
            row = session.exec(
                select(Subscriber).where(Subscriber.email == f"{status}@example.org")
            ).one()
            row.status = status
            session.add(row)
            session.commit()
    # A former reader asked to come back 8 days ago and never confirmed: kept, with its history.
    former = subscriptions.add(engine, "former@example.org", make_interests("x"), now=old)
    with Session(engine) as session:
        session.add(Delivery(subscriber_id=former.id or 0, edition="2026-11-01", status="sent"))
        session.commit()
    subscriptions.unsubscribe(engine, "former@example.org", now=old)
    subscriptions.request(
        engine,
        "former@example.org",
        make_interests("y"),
        now=old,
        interval_seconds=300,
        origin=WEB,
    )
    assert fresh(engine, former.id).status == "pending"

    assert subscriptions.purge_pending(engine, now=NOW, days=7, limit=2) == 2  # bounded
    assert subscriptions.purge_pending(engine, now=NOW, days=7) == 1
    assert subscriptions.purge_pending(engine, now=NOW, days=7) == 0
    left = {r.email: r.status for r in subscriptions.listing(engine)}
    assert left == {
        "recent@example.org": "pending",
        "active@example.org": "active",
        "unsubscribed@example.org": "unsubscribed",
        "bounced@example.org": "bounced",
        "former@example.org": "pending",
    }
    # The request rows older than a day go too; the last day's stay for `digest status`.
    subscriptions.claim_request(engine, WEB, now=NOW - timedelta(hours=2))
    assert subscriptions.prune_requests(engine, now=NOW) == 5
    assert request_count(engine) == 1
