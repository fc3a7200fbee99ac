"""Ingest: fetch each source (conditional GET, bounded), parse it, and upsert its papers.

One bad source never stops the others: its error is recorded on its ``Source`` row and in the
report, and the run goes on.
"""

from __future__ import annotations

import dataclasses
import stat
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from digest.config import IngestSettings, Settings
from digest.errors import SourceError
from digest.fetch import Fetched, fetch_url
from digest.models import Paper, Source, utcnow
from digest.papers import PaperIn, canonical_key
from digest.resources import bundled_path
from digest.runs import record_run
from digest.sources import ParsedSource, parse_source


@dataclasses.dataclass(frozen=True, kw_only=True)
class SourceSpec:
    """A source to read: the name it is recorded under and where it lives."""

    name: str
    location: str

    @property
    def is_url(self) -> bool:
        """True for http(s) locations."""
        return self.location.lower().startswith(("http://", "https://"))


@dataclasses.dataclass(kw_only=True)
class SourceResult:
    """The outcome for one source in one run."""

    name: str
    kind: str | None = None
    status: str = "ok"  # ok | not-modified | error
    found: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    cut: int = 0  # entries past [ingest] max_entries, left unread
    error: str | None = None


@dataclasses.dataclass(kw_only=True)
class IngestReport:
    """Every source's outcome, and the totals."""

    sources: list[SourceResult] = dataclasses.field(default_factory=list)

    def total(self, field: str) -> int:
        """The sum of one count over all sources."""
        return sum(int(getattr(s, field)) for s in self.sources)

    @property
    def errors(self) -> list[SourceResult]:
        """The sources that failed."""
        return [s for s in self.sources if s.status == "error"]


def specs_from(settings: Settings, locations: Sequence[str] = ()) -> list[SourceSpec]:
    """The sources to read: the given locations, or the configured ones."""
    if locations:
        return [SourceSpec(name=loc, location=loc) for loc in locations]
    return [SourceSpec(name=s.name, location=s.location) for s in settings.sources]


def fetch(
    spec: SourceSpec,
    *,
    settings: IngestSettings,
    etag: str | None = None,
    last_modified: str | None = None,
    base_dir: Path = Path("."),
    client: httpx.Client | None = None,
) -> Fetched:
    """Read one source's bytes: a bounded conditional GET for URLs, a bounded read for files."""
    if spec.is_url:
        return fetch_url(
            spec.location, settings=settings, etag=etag, last_modified=last_modified, client=client
        )
    if spec.location.startswith("bundled:"):
        try:
            path = bundled_path(spec.location.removeprefix("bundled:"))
        except FileNotFoundError as e:
            raise SourceError(str(e)) from e
    else:
        scheme = urlsplit(spec.location).scheme
        if len(scheme) > 1 and scheme != "file":  # one letter: a Windows drive
            raise SourceError(
                f"unsupported location scheme {scheme!r}: use a file path or http(s) URL"
            )
        path = Path(spec.location.removeprefix("file://")).expanduser()
        if not path.is_absolute():
            path = base_dir / path
    try:
        # A FIFO or a device could block or never end: only regular files are sources.
        if not stat.S_ISREG(path.stat().st_mode):
            raise SourceError(f"{path} is not a regular file")
        with path.open("rb") as fh:
            data = fh.read(settings.max_bytes + 1)
    except OSError as e:
        raise SourceError(f"cannot read {path}: {e.strerror or e}") from e
    if len(data) > settings.max_bytes:
        raise SourceError(f"{path} is larger than the {settings.max_bytes:,}-byte limit")
    return Fetched(data=data)


def _load(
    spec: SourceSpec, state: Source | None, settings: Settings
) -> tuple[Fetched, ParsedSource | None]:
    fetched = fetch(
        spec,
        settings=settings.ingest,
        etag=state.etag if state and state.location == spec.location else None,
        last_modified=state.last_modified if state and state.location == spec.location else None,
        base_dir=Path(settings.base_dir),
    )
    if fetched.data is None:
        return fetched, None
    return fetched, parse_source(
        fetched.data,
        location=spec.location,
        content_type=fetched.content_type,
        max_entries=settings.ingest.max_entries,
    )


def ingest(
    engine: Engine,
    settings: Settings,
    specs: Sequence[SourceSpec],
    *,
    now: datetime | None = None,
    progress: Callable[[SourceResult], None] | None = None,
    dry_run: bool = False,
) -> IngestReport:
    """Fetch and parse every source concurrently, then upsert their papers one source at a time.

    With ``dry_run``, nothing is written, and the counts say what a real run would do.
    """
    now = now or utcnow()
    report = IngestReport()
    with Session(engine) as session:
        states = {s.name: s for s in session.exec(select(Source)).all()}
    # A dry run compares every source with the database in one session that is never flushed.
    dry = Session(engine, autoflush=False) if dry_run else None
    pending = _Pending()
    try:
        with ThreadPoolExecutor(max_workers=settings.ingest.concurrency) as pool:
            futures = [
                (spec, pool.submit(_load, spec, states.get(spec.name), settings)) for spec in specs
            ]
            for spec, future in futures:
                result = SourceResult(name=spec.name)
                fetched: Fetched | None = None
                try:
                    fetched, parsed = future.result()
                except SourceError as e:
                    result.status, result.error = "error", str(e)
                except Exception as e:  # a parser bug must not stop the other sources
                    result.status, result.error = "error", f"unexpected {type(e).__name__}: {e}"
                else:
                    if parsed is None:
                        result.status = "not-modified"
                    else:
                        result.kind, result.found = parsed.kind, len(parsed.papers)
                        result.skipped, result.cut = parsed.skipped, parsed.cut
                        if dry is not None:
                            _upsert(
                                dry,
                                parsed.papers,
                                source=spec.name,
                                now=now,
                                result=result,
                                pending=pending,
                            )
                        else:
                            with Session(engine) as session:
                                _upsert(
                                    session, parsed.papers, source=spec.name, now=now, result=result
                                )
                if dry is None:
                    _record(engine, spec, result, fetched, now=now)
                report.sources.append(result)
                if progress:
                    progress(result)
    finally:
        if dry is not None:
            dry.rollback()
            dry.close()
    if not dry_run and specs:
        counts = {
            k: report.total(k) for k in ("found", "new", "updated", "unchanged", "skipped", "cut")
        }
        counts["sources"], counts["errors"] = len(report.sources), len(report.errors)
        errors = [f"{s.name}: {s.error}" for s in report.errors]
        record_run(engine, "ingest", started=now, counts=counts, errors=errors)
    return report


def _record(
    engine: Engine,
    spec: SourceSpec,
    result: SourceResult,
    fetched: Fetched | None,
    *,
    now: datetime,
) -> None:
    with Session(engine) as session:
        state = session.exec(select(Source).where(Source.name == spec.name)).first()
        if state is None:
            state = Source(name=spec.name, location=spec.location)
        if state.location != spec.location:
            state.location, state.etag, state.last_modified = spec.location, None, None
        state.last_fetch_at = now
        if result.status == "error":
            state.last_error = (result.error or "")[:2000]
        else:
            state.last_error = None
            state.last_ok_at = now
            if fetched is not None:
                state.etag, state.last_modified = fetched.etag, fetched.last_modified
            if result.status == "ok":
                state.kind = result.kind
                state.last_count, state.last_new = result.found, result.new
                state.last_cut = result.cut
            else:
                state.last_new = 0
        session.add(state)
        session.commit()


_BATCH = 400


@dataclasses.dataclass
class _Pending:
    """A dry run's would-be new papers, so that a later source counts them as known."""

    by_key: dict[str, Paper] = dataclasses.field(default_factory=dict)
    by_title: dict[str, Paper] = dataclasses.field(default_factory=dict)


def _upsert(
    session: Session,
    papers: Sequence[PaperIn],
    *,
    source: str,
    now: datetime,
    result: SourceResult,
    pending: _Pending | None = None,
) -> None:
    """Insert new papers and refresh known ones; a known paper keeps its first-seen time.

    With ``pending`` (a dry run) nothing is written: known rows are changed only in a session
    that is never flushed or committed, and new ones are kept aside in ``pending``.
    """
    for start in range(0, len(papers), _BATCH):
        batch = papers[start : start + _BATCH]
        title_keys = {p.key: canonical_key(title=p.title) for p in batch}
        rows = session.exec(
            select(Paper).where(
                col(Paper.key).in_([p.key for p in batch])
                | col(Paper.title_key).in_(list(title_keys.values()))
            )
        ).all()
        by_key = {r.key: r for r in rows}
        by_title = {r.title_key: r for r in rows}
        if pending is not None:
            by_key = {**pending.by_key, **by_key}
            by_title = {**pending.by_title, **by_title}
        for p in batch:
            row = by_key.get(p.key) or by_title.get(title_keys[p.key])
            if row is None:
                row = Paper(
                    key=p.key,
                    title_key=title_keys[p.key],
                    title=p.title,
                    abstract=p.abstract,
                    authors=list(p.authors),
                    url=p.url,
                    pdf_url=p.pdf_url,
                    code_url=p.code_url,
                    sources=[source],
                    published_at=p.published_at,
                    first_seen_at=now,
                    updated_at=now,
                    upvotes=p.upvotes,
                    comments=p.comments,
                )
                if pending is None:
                    session.add(row)
                else:
                    pending.by_key[p.key], pending.by_title[row.title_key] = row, row
                by_key[p.key] = row
                by_title[row.title_key] = row
                result.new += 1
            elif _merge(row, p, source=source):
                row.updated_at = now
                if pending is None:
                    session.add(row)
                by_key[p.key] = row
                result.updated += 1
            else:
                result.unchanged += 1
        if pending is None:
            session.commit()


def _merge(row: Paper, p: PaperIn, *, source: str) -> bool:
    """Fold what a source says of a known paper into its row; True if anything changed."""
    changed = False
    # An id-bearing key (arXiv, DOI) is better than a title key: upgrade to it.
    if row.key.startswith("title:") and not p.key.startswith("title:"):
        row.key, changed = p.key, True
    for field in ("abstract", "url", "pdf_url", "code_url", "published_at"):
        if getattr(row, field) in (None, "") and getattr(p, field) not in (None, ""):
            setattr(row, field, getattr(p, field))
            changed = True
    if not row.authors and p.authors:
        row.authors, changed = list(p.authors), True
    for field in ("upvotes", "comments"):
        value = getattr(p, field)
        if value is not None and value != getattr(row, field):
            setattr(row, field, value)
            changed = True
    if source not in row.sources:
        row.sources = [*row.sources, source][-20:]
        changed = True
    return changed
