"""Ingest through a real HTTP server on loopback and from files, into a real SQLite file."""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import FeedServer, Route
from sqlmodel import Session, select

from digest.config import Settings
from digest.db import make_engine
from digest.ingest import SourceSpec, ingest
from digest.models import Paper, Source

HF_JSON = "fixtures/hf_daily_papers/daily_papers_2026-07-31_personal-news-feed.json"


def spec(location: str, name: str | None = None) -> SourceSpec:
    return SourceSpec(name=name or location, location=location)


def papers(settings: Settings) -> list[Paper]:
    with Session(make_engine(settings.database.url)) as session:
        return list(session.exec(select(Paper)).all())


def test_seeds_counts_and_second_run_adds_nothing(settings: Settings, shared: Path) -> None:
    engine = make_engine(settings.database.url)
    seeds = [spec(str(shared / f"seeds/daily-papers-{x}.txt")) for x in "abc"]
    first = ingest(engine, settings, seeds)
    assert [s.found for s in first.sources] == [75, 88, 81]
    assert not first.errors
    unique = first.total("new")
    # The three lists share some papers: they are stored once.
    assert 81 < unique < 75 + 88 + 81
    assert len(papers(settings)) == unique

    second = ingest(engine, settings, seeds)
    assert second.total("new") == 0
    assert second.total("updated") == 0
    assert second.total("unchanged") == 75 + 88 + 81
    assert len(papers(settings)) == unique


def test_conditional_get_with_etag(
    settings: Settings, shared: Path, feed_server: FeedServer
) -> None:
    body = (shared / HF_JSON).read_bytes()
    feed_server.routes["/api/daily_papers"] = Route(
        body=body, content_type="application/json", etag='"v1"'
    )
    engine = make_engine(settings.database.url)
    source = spec(feed_server.url("/api/daily_papers"), name="hf")

    first = ingest(engine, settings, [source])
    assert first.sources[0].status == "ok" and first.sources[0].kind == "hf-daily"
    assert first.sources[0].new == 30
    assert feed_server.requests[0].get("if-none-match") is None
    assert feed_server.requests[0]["user-agent"].startswith("digest/")

    second = ingest(engine, settings, [source])
    assert feed_server.requests[1]["if-none-match"] == '"v1"'
    assert second.sources[0].status == "not-modified"
    assert second.total("new") == 0 and len(papers(settings)) == 30

    # A new version of the feed: upvotes change, first-seen times stay.
    data = json.loads(body)
    data[0]["paper"]["upvotes"] = 9999
    seen_before = {p.key: p.first_seen_at for p in papers(settings)}
    feed_server.routes["/api/daily_papers"] = Route(
        body=json.dumps(data).encode(), content_type="application/json", etag='"v2"'
    )
    later = datetime.now(UTC) + timedelta(hours=3)
    third = ingest(engine, settings, [source], now=later)
    assert third.sources[0].status == "ok"
    assert third.sources[0].updated == 1 and third.sources[0].new == 0
    rows = {p.key: p for p in papers(settings)}
    changed = f"arxiv:{data[0]['paper']['id']}"
    assert rows[changed].upvotes == 9999
    assert all(rows[k].first_seen_at == seen_before[k] for k in rows)


def test_conditional_get_with_last_modified(
    settings: Settings, shared: Path, feed_server: FeedServer
) -> None:
    stamp = "Mon, 27 Apr 2026 04:00:00 GMT"
    body = (shared / "fixtures/arxiv_rss/rss2_cs.LG_2026-04-27_trimmed3_distill.xml").read_bytes()
    feed_server.routes["/rss/cs.LG"] = Route(body=body, last_modified=stamp)
    engine = make_engine(settings.database.url)
    source = spec(feed_server.url("/rss/cs.LG"))
    assert ingest(engine, settings, [source]).sources[0].new == 3
    again = ingest(engine, settings, [source])
    assert feed_server.requests[1]["if-modified-since"] == stamp
    assert again.sources[0].status == "not-modified"


def test_one_bad_source_does_not_stop_the_others(
    settings: Settings, shared: Path, feed_server: FeedServer, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00\xff\xfe" * 100)
    feed_server.routes["/slow"] = Route(body=b"<rss/>", delay=2.0)
    engine = make_engine(settings.database.url)
    quick = dataclasses.replace(settings, ingest=dataclasses.replace(settings.ingest, timeout=0.5))
    report = ingest(
        engine,
        quick,
        [
            spec(feed_server.url("/missing"), name="missing"),
            spec(str(tmp_path / "nope.txt"), name="nofile"),
            spec(str(garbage), name="garbage"),
            spec(feed_server.url("/slow"), name="slow"),
            spec(str(shared / "seeds/daily-papers-a.txt"), name="good"),
        ],
    )
    by_name = {s.name: s for s in report.sources}
    assert by_name["good"].status == "ok" and by_name["good"].new == 75
    assert "404" in (by_name["missing"].error or "")
    assert "cannot read" in (by_name["nofile"].error or "")
    assert by_name["garbage"].status == "error"
    assert "timed out" in (by_name["slow"].error or "")
    with Session(engine) as session:
        states = {s.name: s for s in session.exec(select(Source)).all()}
    assert "404" in (states["missing"].last_error or "")
    assert states["good"].last_error is None and states["good"].last_count == 75


def test_size_cap(settings: Settings, feed_server: FeedServer) -> None:
    feed_server.routes["/big"] = Route(body=b"<rss>" + b" " * 5000 + b"</rss>")
    small = dataclasses.replace(
        settings, ingest=dataclasses.replace(settings.ingest, max_bytes=2048)
    )
    report = ingest(make_engine(settings.database.url), small, [spec(feed_server.url("/big"))])
    assert report.sources[0].status == "error"
    assert "limit" in (report.sources[0].error or "")


def test_plain_list_and_arxiv_feed_name_one_paper(
    settings: Settings, shared: Path, tmp_path: Path
) -> None:
    engine = make_engine(settings.database.url)
    atom = shared / "fixtures/arxiv_atom/api2026_id_list_1605.08386_arxiv.py.xml"
    ingest(engine, settings, [spec(str(atom))])
    [row] = papers(settings)
    listing = tmp_path / "list.txt"
    listing.write_text(
        f"Daily Papers\n\nMar 3\n\n{row.title}\n\n{row.abstract}\n", encoding="utf-8"
    )
    report = ingest(engine, settings, [spec(str(listing))])
    assert report.sources[0].new == 0
    [again] = papers(settings)
    assert again.key == row.key and len(again.sources) == 2


def test_dry_run_writes_nothing(settings: Settings, shared: Path) -> None:
    engine = make_engine(settings.database.url)
    report = ingest(
        engine, settings, [spec(str(shared / "seeds/daily-papers-b.txt"))], dry_run=True
    )
    assert report.sources[0].found == 88
    assert papers(settings) == []


def with_ingest(settings: Settings, **changes: object) -> Settings:
    return dataclasses.replace(settings, ingest=dataclasses.replace(settings.ingest, **changes))  # type: ignore[arg-type]


@pytest.mark.timeout(60)
def test_a_trickling_source_fails_at_the_deadline_and_the_others_go_on(
    settings: Settings, shared: Path, feed_server: FeedServer
) -> None:
    body = (shared / "fixtures/arxiv_rss/rss2_cs.LG_2026-04-27_trimmed3_distill.xml").read_bytes()
    feed_server.routes["/trickle"] = Route(body=body, trickle=0.2)  # minutes to send it all
    engine = make_engine(settings.database.url)
    report = ingest(
        engine,
        with_ingest(settings, timeout=3.0, deadline=1.0),
        [
            spec(feed_server.url("/trickle"), name="trickle"),
            spec(str(shared / "seeds/daily-papers-a.txt"), name="good"),
        ],
    )
    by_name = {s.name: s for s in report.sources}
    assert "took longer than the 1-second deadline" in (by_name["trickle"].error or "")
    assert by_name["good"].new == 75


@pytest.mark.timeout(60)
def test_a_fifo_is_not_read(settings: Settings, tmp_path: Path) -> None:
    # Opening a FIFO with no writer blocks for ever: only regular files are sources.
    fifo = tmp_path / "papers.txt"
    os.mkfifo(fifo)
    report = ingest(make_engine(settings.database.url), settings, [spec(str(fifo))])
    assert "not a regular file" in (report.sources[0].error or "")


def test_a_file_that_is_no_paper_list_stores_nothing(settings: Settings) -> None:
    engine = make_engine(settings.database.url)
    readme = Path(__file__).resolve().parent.parent / "README.md"
    report = ingest(engine, settings, [spec(str(readme), name="readme")])
    assert report.sources[0].status == "error"
    assert "not a paper list" in (report.sources[0].error or "")
    assert papers(settings) == []
    with Session(engine) as session:
        [state] = session.exec(select(Source)).all()
    assert "not a paper list" in (state.last_error or "")


def _big_feed(n: int) -> bytes:
    items = "".join(
        f"<item><title>Paper number {i} on things</title><link>https://example.org/p/{i}</link>"
        f"<description>Abstract of paper {i}.</description></item>"
        for i in range(n)
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>{items}</channel></rss>'
    ).encode()


def test_entries_past_max_entries_are_cut_and_said(
    settings: Settings, feed_server: FeedServer
) -> None:
    feed_server.routes["/big"] = Route(body=_big_feed(250))
    engine = make_engine(settings.database.url)
    report = ingest(engine, with_ingest(settings, max_entries=100), [spec(feed_server.url("/big"))])
    [result] = report.sources
    assert (result.status, result.found, result.new, result.cut) == ("ok", 100, 100, 150)
    assert len(papers(settings)) == 100
    with Session(engine) as session:
        [state] = session.exec(select(Source)).all()
    assert (state.last_count, state.last_cut) == (100, 150)


def test_dry_run_says_what_would_be_new_and_updated(settings: Settings, shared: Path) -> None:
    engine = make_engine(settings.database.url)
    seeds = [spec(str(shared / f"seeds/daily-papers-{x}.txt")) for x in "abc"]
    ingest(engine, settings, seeds[:1])
    before = {p.key: (p.sources, p.updated_at) for p in papers(settings)}

    dry = ingest(engine, settings, seeds, dry_run=True)
    assert {p.key: (p.sources, p.updated_at) for p in papers(settings)} == before
    # The dry run foretells the real run, source by source (b and c share papers with a and
    # with each other: the first to bring one counts it new, the others updated).
    real = ingest(engine, settings, seeds)
    counts = [(s.found, s.new, s.updated, s.unchanged) for s in real.sources]
    assert [(s.found, s.new, s.updated, s.unchanged) for s in dry.sources] == counts
    assert counts[0] == (75, 0, 0, 75)
    assert counts[1][1] > 0 and counts[1][2] > 0 and counts[2][2] > 0
