"""Editions: the day (or ISO week, for weekly readers) a digest belongs to."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")


@dataclass(frozen=True, kw_only=True)
class Edition:
    """One edition: its id ("2026-11-22" or "2026-W47"), a label, and its end in UTC."""

    id: str
    label: str
    day: date  # the last day the edition covers
    end: datetime  # exclusive, UTC: papers first seen before this belong to it
    weekly: bool = False

    def window_start(self, lookback_days: int) -> datetime:
        """The earliest first-seen time of the edition's papers."""
        days = max(lookback_days, 7) if self.weekly else lookback_days
        return self.end - timedelta(days=days)


def daily(day: date, zone: ZoneInfo) -> Edition:
    """The daily edition of ``day`` in ``zone``."""
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
    return Edition(id=day.isoformat(), label=f"{day:%A} {day.day} {day:%B %Y}", day=day, end=end)


def weekly(day: date, zone: ZoneInfo) -> Edition:
    """The weekly edition of the ISO week holding ``day``, covering the week up to its end."""
    year, week, _ = day.isocalendar()
    sunday = date.fromisocalendar(year, week, 7)
    end = datetime.combine(sunday + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
    return Edition(
        id=f"{year}-W{week:02d}", label=f"week {week} of {year}", day=sunday, end=end, weekly=True
    )


def current(now: datetime, zone: ZoneInfo, *, frequency: str = "daily") -> Edition:
    """The edition that ``now`` falls in for a reader of ``frequency``."""
    today = now.astimezone(zone).date()
    return weekly(today, zone) if frequency == "weekly" else daily(today, zone)


def parse(edition_id: str, zone: ZoneInfo) -> Edition:
    """An edition from its id; ValueError for anything else."""
    if _DAY.match(edition_id):
        return daily(date.fromisoformat(edition_id), zone)
    m = _WEEK.match(edition_id)
    if m:
        return weekly(date.fromisocalendar(int(m[1]), int(m[2]), 1), zone)
    raise ValueError(f"not an edition: {edition_id!r} (expected YYYY-MM-DD or YYYY-Www)")
