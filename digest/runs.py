"""The log of ingest and send runs that `digest status` reads."""

from __future__ import annotations

from collections import Counter
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


# The counts each kind of run records, in the order they are told.
_ORDER = {
    "send": ("planned", "queued", "sending", "sent", "skipped", "failed", "bounced"),
    "ingest": ("sources", "found", "new", "updated", "unchanged", "skipped", "errors"),
}


def counts_line(counts: dict[str, int], *, kind: str = "send") -> str:
    """``3 sent, 1 skipped`` (a send) or ``2 sources, 40 found, 12 new`` (an ingest), in a
    fixed order, leaving out the zeros."""
    c = Counter(counts)
    order = _ORDER.get(kind, _ORDER["send"])
    return ", ".join(f"{c[k]} {k}" for k in order if c.get(k)) or "nothing"
