"""The log of ingest and send runs that `digest status` reads."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from digest.models import Run, utcnow


def record_run(
    engine: Engine,
    kind: str,
    *,
    started: datetime,
    counts: dict[str, int],
    errors: list[str],
) -> None:
    """Keep one run's outcome for `digest status`."""
    with Session(engine) as session:
        session.add(
            Run(
                kind=kind,
                started_at=started,
                finished_at=utcnow(),
                counts=counts,
                errors=[e[:500] for e in errors[:50]],
            )
        )
        session.commit()


def last_run(engine: Engine, kind: str) -> Run | None:
    """The most recent run of a kind."""
    with Session(engine) as session:
        return session.exec(
            select(Run).where(Run.kind == kind).order_by(col(Run.started_at).desc()).limit(1)
        ).first()
