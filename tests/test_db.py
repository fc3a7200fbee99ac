"""The database helpers: bulk inserts that skip clashes, typed as the ORM reads them."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from digest.db import insert_ignore_rows, make_engine, update_rows
from digest.models import Delivery, Paper, SentPaper, Subscriber


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new database of each kind (PostgreSQL: the one .ci/run starts)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


def test_insert_ignore_rows_converts_like_the_orm_and_skips_clashes(url: str) -> None:
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


def test_update_rows_sets_values_like_the_orm_and_only_the_rows_named(url: str) -> None:
    engine = make_engine(url)
    at = datetime(2026, 11, 22, 9, 30, tzinfo=UTC).astimezone(tz=None)
    with Session(engine) as session:
        session.add(Subscriber(email="ada@example.org", keywords=["llm"]))
        session.commit()
        session.add_all(
            [
                Delivery(subscriber_id=1, edition=f"2026-11-{d}", attempts=2, last_error="x")
                for d in (20, 21, 22)
            ]
        )
        session.commit()
    with engine.begin() as conn:
        update_rows(
            conn,
            Delivery,
            ("sent_at", "message_id", "paper_keys"),
            [(at, "<a@x>", ("arxiv:1", "arxiv:2"), 1), (at, "<c@x>", (), 3)],
            key="id",
            also={"status": "'sent'", "attempts": "attempts + 1", "last_error": "NULL"},
        )
    with Session(engine) as session:
        rows = session.exec(select(Delivery).order_by(Delivery.id)).all()
        # the ORM, in the same database, finds the row by the time it was given
        found = session.exec(select(Delivery).where(Delivery.sent_at == at)).all()
    assert [(r.status, r.attempts, r.last_error, r.message_id, r.paper_keys) for r in rows] == [
        ("sent", 3, None, "<a@x>", ["arxiv:1", "arxiv:2"]),
        ("queued", 2, "x", None, []),
        ("sent", 3, None, "<c@x>", []),
    ]
    assert rows[0].sent_at == rows[2].sent_at == at and rows[1].sent_at is None
    assert [r.id for r in found] == [1, 3]
    engine.dispose()


def test_a_new_sqlite_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """It holds every reader's address: 0600, and so are SQLite's -wal and -shm beside it."""
    path = tmp_path / "new.db"
    previous = os.umask(0o022)  # the usual umask, which would make the file world-readable
    try:
        engine = make_engine(f"sqlite:///{path}")
        with Session(engine) as session:
            session.add(Subscriber(email="ada@example.org", keywords=["llm"]))
            session.commit()
            files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
            assert all(f.exists() for f in files)
            modes = {f.name: stat.S_IMODE(os.stat(f).st_mode) for f in files}
        engine.dispose()
    finally:
        os.umask(previous)
    assert modes == {"new.db": 0o600, "new.db-wal": 0o600, "new.db-shm": 0o600}
    # An existing file keeps the mode its operator gave it.
    path.chmod(0o640)
    make_engine(f"sqlite:///{path}").dispose()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
