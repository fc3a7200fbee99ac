"""The database helpers: bulk inserts that skip clashes, typed as the ORM reads them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from digest.db import insert_ignore_rows, make_engine
from digest.models import Paper, SentPaper, Subscriber


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_insert_ignore_rows_converts_like_the_orm_and_skips_clashes(
    database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'db.sqlite'}"
        if database == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    engine = make_engine(url)
    with Session(engine) as session:
        session.add(Subscriber(email="ada@example.org", keywords=["llm"]))
        session.add_all([Paper(key=f"arxiv:{i}", title_key=f"t{i}", title="T") for i in range(4)])
        session.commit()
    # an aware time in another zone is stored as UTC, as the ORM would store it
    at = datetime(2026, 11, 22, 9, 30, tzinfo=UTC).astimezone(tz=None)
    with Session(engine) as session:
        session.add(SentPaper(subscriber_id=1, paper_id=4, edition="2026-11-22", sent_at=at))
        session.commit()
    later = at + timedelta(days=1)
    with engine.begin() as conn:
        insert_ignore_rows(
            conn,
            SentPaper,
            ("subscriber_id", "paper_id", "edition", "sent_at"),
            [(1, 1, "2026-11-22", at), (1, 2, "2026-11-22", at)],
            conflict=("subscriber_id", "paper_id"),
        )
        insert_ignore_rows(  # paper 2 again: skipped, the first record stays
            conn,
            SentPaper,
            ("subscriber_id", "paper_id", "edition", "sent_at"),
            [(1, 2, "2026-11-23", later), (1, 3, "2026-11-23", later)],
            conflict=("subscriber_id", "paper_id"),
        )
    with Session(engine) as session:
        rows = session.exec(select(SentPaper).order_by(SentPaper.paper_id)).all()
    assert [(r.paper_id, r.edition) for r in rows] == [
        (1, "2026-11-22"),
        (2, "2026-11-22"),
        (3, "2026-11-23"),
        (4, "2026-11-22"),
    ]
    assert [r.sent_at for r in rows] == [at, at, later, at]
    assert all(r.sent_at.tzinfo is not None for r in rows)
    # stored as the ORM stores it (on SQLite, the same text: times compare as text there)
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT sent_at FROM sentpaper ORDER BY paper_id").all()
    assert stored[0] == stored[1] == stored[3]
    engine.dispose()
