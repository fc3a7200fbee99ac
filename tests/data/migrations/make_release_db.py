"""Make the database a digest release leaves behind, for tests/test_migrations.py.

Run it with the release's own code (see README.md beside this file):

    python tests/data/migrations/make_release_db.py digest-0.1.0.db digest-0.1.0-postgresql.sql

It writes a SQLite file made by that release's ``make_engine`` and holding rows in every table
(JSON lists and dicts, non-ASCII text, datetimes with and without microseconds, every status),
and the DDL the release's ``create_all`` sends to PostgreSQL (the test loads it, then copies the
SQLite file's rows in). The values are fixed, so two runs make the same rows.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_mock_engine
from sqlmodel import Session, SQLModel

from digest.db import make_engine
from digest.models import Delivery, Paper, Run, SentPaper, Source, Subscriber

T0 = datetime(2026, 11, 20, 5, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def rows() -> list[SQLModel]:
    papers = [
        Paper(
            id=1,
            key="arxiv:2411.01234",
            title_key="efficient llm inference with 4-bit quantization",
            title="Efficient LLM Inference with 4-bit Quantization",
            abstract='We quantize "everything".\nA second line, with ü and 数据.',
            authors=["Ada Lovelace", "Zoë Ünal", "李雷"],
            url="https://arxiv.org/abs/2411.01234",
            pdf_url="https://arxiv.org/pdf/2411.01234",
            code_url="https://github.com/example/q4",
            sources=["hf-daily", "arxiv-cs-lg"],
            published_at=at(-30),
            first_seen_at=at(0),
            updated_at=at(2.5),
            upvotes=42,
            comments=3,
        ),
        Paper(
            id=2,
            key="doi:10.1000/xyz-123",
            title_key="mixture of experts at scale",
            title="Mixture of Experts at Scale",
            abstract="",
            authors=[],
            url="https://doi.org/10.1000/xyz-123",
            sources=["lab-feed"],
            first_seen_at=datetime(2026, 11, 20, 6, 1, 2, 345678, tzinfo=UTC),
            updated_at=datetime(2026, 11, 20, 6, 1, 2, 345678, tzinfo=UTC),
        ),
        Paper(
            id=3,
            key="title:9f86d081884c7d65",
            title_key="dataset distillation a survey",
            title="Dataset Distillation: A Survey <b>not html</b>",
            abstract="Plain-text list entry.",
            authors=["Grace Hopper"],
            sources=["plain-list"],
            first_seen_at=at(24),
            updated_at=at(24),
            upvotes=0,
            comments=0,
        ),
        Paper(
            id=4,
            key="arxiv:2411.09999",
            title_key="test time adaptation for segmentation",
            title="Test-Time Adaptation for Segmentation",
            abstract="TTA.",
            authors=["Katherine Johnson", "Alan Turing"],
            url="https://arxiv.org/abs/2411.09999",
            sources=["arxiv-cs-lg"],
            published_at=at(20),
            first_seen_at=at(24.25),
            updated_at=at(24.25),
        ),
    ]
    sources = [
        Source(
            id=1,
            name="hf-daily",
            location="https://huggingface.co/api/daily_papers",
            kind="hf-daily",
            etag='W/"abc123"',
            last_modified="Fri, 20 Nov 2026 05:00:00 GMT",
            last_fetch_at=at(0),
            last_ok_at=at(0),
            last_count=75,
            last_new=12,
        ),
        Source(
            id=2,
            name="broken-feed",
            location="https://example.org/feed.xml",
            kind=None,
            last_fetch_at=at(0.5),
            last_error="HTTP 503 from https://example.org/feed.xml",
        ),
    ]
    subscribers = [
        Subscriber(
            id=1,
            email="ada@example.org",
            status="active",
            keywords=["llm inference", "quantization"],
            exclude=["survey"],
            frequency="daily",
            send_hour=7,
            timezone="Europe/Berlin",
            max_papers=10,
            created_at=at(-48),
            updated_at=at(-47),
            confirmed_at=at(-47),
        ),
        Subscriber(
            id=2,
            email="grace@example.org",
            status="pending",
            keywords=["dataset distillation"],
            frequency="weekly",
            weekday=4,
            send_hour=18,
            timezone="America/New_York",
            max_papers=5,
            created_at=at(-2),
            updated_at=at(-2),
            last_confirmation_at=at(-2),
        ),
        Subscriber(
            id=3,
            email="alan@example.org",
            status="unsubscribed",
            keywords=["mixture of experts", "MoE"],
            token_version=2,
            created_at=at(-100),
            updated_at=at(-10),
            confirmed_at=at(-99),
            unsubscribed_at=at(-10),
        ),
        Subscriber(
            id=4,
            email="katherine@example.org",
            status="bounced",
            keywords=["test-time adaptation", "segmentation", "Überwachung"],
            bounce_count=3,
            created_at=at(-200),
            updated_at=at(-5),
            confirmed_at=at(-199),
        ),
    ]
    deliveries = [
        Delivery(
            id=1,
            subscriber_id=1,
            edition="2026-11-20",
            status="sent",
            attempts=1,
            message_id="<20261120.1.abc@digest.example.org>",
            paper_keys=["arxiv:2411.01234", "doi:10.1000/xyz-123"],
            created_at=at(6),
            sent_at=at(6.01),
        ),
        Delivery(
            id=2,
            subscriber_id=4,
            edition="2026-11-20",
            status="bounced",
            attempts=1,
            message_id="<20261120.4.def@digest.example.org>",
            paper_keys=["arxiv:2411.09999"],
            last_error="550 5.1.1 no such user",
            created_at=at(6),
        ),
        Delivery(
            id=3,
            subscriber_id=1,
            edition="2026-11-21",
            status="failed",
            attempts=2,
            next_attempt_at=at(31),
            message_id="<20261121.1.ghi@digest.example.org>",
            paper_keys=["title:9f86d081884c7d65"],
            last_error="421 try again later",
            created_at=at(30),
        ),
        Delivery(
            id=4,
            subscriber_id=3,
            edition="2026-11-21",
            status="skipped",
            paper_keys=[],
            created_at=at(30),
        ),
        Delivery(
            id=5,
            subscriber_id=1,
            edition="2026-W47",
            status="sending",
            attempts=1,
            lease_until=at(30.1),
            lease_owner="host-a:1234",
            paper_keys=["arxiv:2411.09999"],
            created_at=at(30),
        ),
        Delivery(id=6, subscriber_id=2, edition="2026-W47", status="queued", created_at=at(30)),
    ]
    sent = [
        SentPaper(subscriber_id=1, paper_id=1, edition="2026-11-20", sent_at=at(6.01)),
        SentPaper(subscriber_id=1, paper_id=2, edition="2026-11-20", sent_at=at(6.01)),
    ]
    runs = [
        Run(
            id=1,
            kind="ingest",
            started_at=at(0),
            finished_at=at(0.02),
            counts={"new": 3, "updated": 1, "unchanged": 0, "skipped": 0},
            errors=["broken-feed: HTTP 503 from https://example.org/feed.xml"],
        ),
        Run(
            id=2,
            kind="send",
            started_at=at(6),
            finished_at=at(6.02),
            counts={"sent": 1, "bounced": 1},
            errors=[],
        ),
        Run(id=3, kind="send", started_at=at(30), counts={}, errors=[]),
    ]
    return [*papers, *sources, *subscribers, *deliveries, *sent, *runs]


def main(sqlite_path: Path, ddl_path: Path) -> None:
    """Write the SQLite file and the PostgreSQL DDL."""
    if sqlite_path.exists():
        sys.exit(f"{sqlite_path} exists: remove it first")
    engine = make_engine(f"sqlite:///{sqlite_path}")
    with Session(engine) as session:
        for row in rows():
            session.add(row)
            session.flush()  # in the order given: the foreign keys are checked
        session.commit()
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.exec_driver_sql("PRAGMA journal_mode=DELETE")  # one self-contained file
    engine.dispose()

    statements: list[str] = []
    mock = create_mock_engine(
        "postgresql+psycopg://",
        lambda sql, *_a, **_k: statements.append(str(sql.compile(dialect=mock.dialect)).strip()),
    )
    SQLModel.metadata.create_all(mock, checkfirst=False)
    text = "".join(f"{s};\n\n" for s in statements)
    ddl_path.write_text(
        "\n".join(line.rstrip() for line in text.splitlines()) + "\n", encoding="utf-8"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
