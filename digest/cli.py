"""The ``digest`` command: a thin shell over the library; library errors become clean messages."""

from __future__ import annotations

import calendar
import copy
import dataclasses
import functools
import json
import logging
import signal
import sys
import threading
import webbrowser
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time
from email import message_from_bytes, policy
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

# Only what every command needs is imported here: `digest --help` and the light commands start
# without the ranker (numpy, scipy), the feed readers, the templates or the SMTP servers, which
# the commands that use them import.
from digest import __version__, delivery, subscriptions
from digest import edition as editions
from digest.config import Settings, ensure_secret, load_settings
from digest.db import make_engine
from digest.errors import DigestError
from digest.keywords import MAX_KEYWORD_CHARS, MAX_KEYWORDS
from digest.migrations import BASELINE, HEAD
from digest.models import Paper, Source, Subscriber, utcnow
from digest.runs import counts_line

if TYPE_CHECKING:
    from digest.ingest import IngestReport
    from digest.render import Renderer

F = TypeVar("F", bound=Callable[..., Any])


class _Weekday(click.ParamType):  # type: ignore[type-arg]
    """A day of the week, as the mail commands take it: a name, its first three letters, 0-6
    (ParamType is generic only in newer click, hence the ignore above)."""

    name = "day"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return subscriptions.weekday_number(str(value))
        except DigestError as e:
            self.fail(str(e), param, ctx)


WEEKDAY = _Weekday()


def _renderer(settings: Settings) -> Renderer:
    """The digest renderer (Jinja and the inlined templates, loaded here)."""
    from digest.render import Renderer

    return Renderer.create(snippet_chars=settings.digest.snippet_chars)


@dataclasses.dataclass
class App:
    """What a command works with: the settings, and an engine made on first use."""

    settings: Settings
    _engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        """The database engine: a new database is created, any other must be at this code's schema."""
        if self._engine is None:
            self._engine = make_engine(self.settings.database.url)
        return self._engine

    def close(self) -> None:
        """Close the engine's pooled connections, if the command made one."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def with_app(func: F) -> F:
    """Give a command ``--config PATH`` and an ``app`` built from it; DigestError → clean exit."""

    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Configuration file (default: ./config.toml, else the built-in defaults).",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, config_path: Path | None, **kwargs: Any) -> Any:
        try:
            path = config_path or click.get_current_context().find_root().params.get("config_path")
            app = App(ensure_secret(load_settings(path)))
        except DigestError as e:
            raise click.ClickException(str(e)) from e
        # A command's engine ends with the command: its connections are closed here rather than
        # left to the garbage collector (one process may run many commands: a test, a caller).
        try:
            return func(app, *args, **kwargs)
        except DigestError as e:
            raise click.ClickException(str(e)) from e
        finally:
            app.close()

    return cast(F, wrapper)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Configuration file for every command (default: ./config.toml, else the built-in defaults).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every event to stderr.")
@click.version_option(__version__, prog_name="digest")
def main(config_path: Path | None, verbose: bool) -> None:
    """digest: personalised research-paper digests by email.

    Ingest the day's paper lists and feeds, rank them for every subscriber by their keywords,
    and send each one an HTML digest. Start with `digest demo`.
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


# ---------------------------------------------------------------------------------------------
# ingest


# Exit codes of the commands that ingest or send, so that cron and systemd notice, beside click's
# own 2 for a wrong command line; README "Exit codes" lists them.
EXIT_FAILED = 1  # nothing was done: an error, or every source failed
EXIT_INCOMPLETE = 3  # some sources or deliveries failed or bounced; the rest went through
EXIT_STOPPED = 4  # the relay could not be used (or the lease was lost): the run stopped


def ingest_exit_code(report: IngestReport) -> int:
    """0 when every source was read (or had not changed), else which of the failures it was."""
    if not report.errors:
        return 0
    if len(report.errors) == len(report.sources):
        return EXIT_FAILED
    return EXIT_INCOMPLETE


def _print_ingest(report: IngestReport, *, dry_run: bool = False) -> None:
    would = "would be " if dry_run else ""
    for r in report.sources:
        if r.status == "error":
            click.secho(f"  ✗ {r.name}: {r.error}", fg="red", err=True)
        elif r.status == "not-modified":
            click.echo(f"  = {r.name}: not modified since the last fetch")
        else:
            click.echo(
                f"  ✓ {r.name} ({r.kind}): {r.found} papers — {r.new} {would}new, "
                f"{r.updated} {would}updated, {r.unchanged} unchanged, {r.skipped} skipped"
            )
        if r.cut:
            click.secho(
                f"    cut at [ingest] max_entries: {r.cut:,} more entries left out", fg="yellow"
            )
    click.echo(
        f"Ingest: {report.total('new')} {would}new, {report.total('updated')} {would}updated, "
        f"{report.total('unchanged')} unchanged, {report.total('skipped')} skipped, "
        f"{len(report.errors)} source error(s)."
    )


@contextmanager
def _bar(length: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr when it is a terminal (and long enough to matter)."""
    show = sys.stderr.isatty() and length > 1
    if not show:
        yield lambda n: None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar.update


def _run_ingest(app: App, locations: tuple[str, ...], *, dry_run: bool = False) -> IngestReport:
    from digest.ingest import ingest, specs_from

    specs = specs_from(app.settings, locations)
    if not specs:
        raise click.ClickException(
            "no sources: give a file or URL, or add [[sources]] to the config"
        )
    with _bar(len(specs), "Ingesting") as advance:
        return ingest(
            app.engine, app.settings, specs, dry_run=dry_run, progress=lambda r: advance(1)
        )


@main.command("ingest")
@click.argument("sources", nargs=-1)
@click.option(
    "--dry-run", is_flag=True, help="Fetch and parse, but change nothing in the database."
)
@with_app
def ingest_cmd(app: App, sources: tuple[str, ...], dry_run: bool) -> None:
    """Fetch sources and add their papers to the database.

    Each SOURCE is a file path or an http(s) URL; with none, the configured [[sources]] are
    read. The kind (Hugging Face Daily Papers JSON, arXiv RSS or API Atom, any RSS/Atom
    feed, a plain-text paper list) is detected from the content. A paper seen again keeps
    its first-seen time and gets its upvotes refreshed. With --dry-run, says per source how
    many papers would be new or updated. Exits 0 when every source was read, 3 when some
    failed, 1 when all failed.
    """
    report = _run_ingest(app, sources, dry_run=dry_run)
    _print_ingest(report, dry_run=dry_run)
    if dry_run:
        click.echo("(dry run: nothing was written)")
    sys.exit(ingest_exit_code(report))


@main.command("sources")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_app
def sources_cmd(app: App, as_json: bool) -> None:
    """Show every source's last fetch, paper count and last error."""
    with Session(app.engine) as session:
        rows = list(session.exec(select(Source).order_by(Source.name)).all())
    known = {r.name for r in rows}
    configured = [s for s in app.settings.sources if s.name not in known]
    if as_json:
        out = [
            {
                "name": r.name,
                "location": r.location,
                "kind": r.kind,
                "last_fetch": _iso(r.last_fetch_at),
                "last_ok": _iso(r.last_ok_at),
                "last_count": r.last_count,
                "last_new": r.last_new,
                "last_cut": r.last_cut,
                "last_error": r.last_error,
            }
            for r in rows
        ] + [{"name": s.name, "location": s.location, "last_fetch": None} for s in configured]
        click.echo(json.dumps(out, indent=2))
        return
    if not rows and not configured:
        click.echo("No sources yet: run `digest ingest SOURCE` or add [[sources]] to the config.")
        return
    for r in rows:
        when = r.last_fetch_at.strftime("%Y-%m-%d %H:%M UTC") if r.last_fetch_at else "never"
        state = click.style(f"error: {r.last_error}", fg="red") if r.last_error else "ok"
        cut = f"; cut at [ingest] max_entries, {r.last_cut:,} more entries left out"
        click.echo(
            f"{r.name}\n  {r.location}\n  kind {r.kind or '?'} · last fetch {when} · "
            f"{r.last_count} papers ({r.last_new} new{cut if r.last_cut else ''}) · {state}"
        )
    for s in configured:
        click.echo(f"{s.name}\n  {s.location}\n  never fetched")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _date_start(value: date | datetime | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        value = value.date()
    return datetime.combine(value, time(0), tzinfo=UTC)


@main.command("papers")
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Only papers first seen on or after this date (UTC).",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many papers.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON list (key, title, authors, url, …)."
)
@with_app
def papers_cmd(app: App, since: datetime | None, limit: int | None, as_json: bool) -> None:
    """List the papers in the database, newest first."""
    with Session(app.engine) as session:
        query = select(Paper).order_by(col(Paper.first_seen_at).desc(), col(Paper.id).desc())
        start = _date_start(since)
        if start:
            query = query.where(Paper.first_seen_at >= start)
        if limit:
            query = query.limit(limit)
        rows = list(session.exec(query).all())
    if as_json:
        click.echo(json.dumps([_paper_json(p) for p in rows], indent=2, ensure_ascii=False))
        return
    for p in rows:
        votes = f" ▲{p.upvotes}" if p.upvotes is not None else ""
        click.echo(f"{p.key}{votes}  {p.title}")
    click.echo(f"{len(rows)} paper(s).", err=True)


def _paper_json(p: Paper) -> dict[str, Any]:
    return {
        "key": p.key,
        "title": p.title,
        "authors": p.authors,
        "url": p.url,
        "pdf_url": p.pdf_url,
        "code_url": p.code_url,
        "abstract": p.abstract,
        "upvotes": p.upvotes,
        "comments": p.comments,
        "sources": p.sources,
        "published_at": _iso(p.published_at),
        "first_seen_at": _iso(p.first_seen_at),
    }


# ---------------------------------------------------------------------------------------------
# subscribers


@main.command("subscribe")
@click.argument("email")
@click.option(
    "--keywords",
    "-k",
    required=True,
    help='Comma-separated interests, e.g. "llm inference, quantization" '
    f"(at most {MAX_KEYWORDS}, each at most {MAX_KEYWORD_CHARS} characters).",
)
@click.option(
    "--exclude", "-x", default="", help="Comma-separated keywords whose papers are never sent."
)
@click.option(
    "--max-papers",
    type=int,
    default=None,
    help=f"Papers per digest, 1 to {subscriptions.MAX_PAPERS} (default from the config).",
)
@click.option("--weekly", is_flag=True, help="One digest a week instead of every day.")
@click.option(
    "--weekday",
    type=WEEKDAY,
    default="monday",
    help="For --weekly: the day, as a name (friday, fri) or 0 = Monday … 6 = Sunday.",
)
@click.option(
    "--hour", "send_hour", type=click.IntRange(0, 23), default=7, help="Local hour to send at."
)
@click.option("--timezone", default="UTC", help="The reader's time zone, e.g. Europe/Berlin.")
@with_app
def subscribe_cmd(
    app: App,
    email: str,
    keywords: str,
    exclude: str,
    max_papers: int | None,
    weekly: bool,
    weekday: int,
    send_hour: int,
    timezone: str,
) -> None:
    """Add an active subscriber (no confirmation mail: you vouch for the address)."""
    interests = subscriptions.make_interests(
        keywords,
        exclude=exclude,
        frequency="weekly" if weekly else "daily",
        weekday=weekday,
        send_hour=send_hour,
        timezone=timezone,
        max_papers=app.settings.digest.max_papers if max_papers is None else max_papers,
    )
    row = subscriptions.add(app.engine, email, interests)
    click.echo(
        f"Subscribed {row.email}: {', '.join(row.keywords)}"
        + (f" (excluding {', '.join(row.exclude)})" if row.exclude else "")
        + f", {row.max_papers} papers, {row.frequency}."
    )


@main.command("unsubscribe")
@click.argument("email")
@with_app
def unsubscribe_cmd(app: App, email: str) -> None:
    """Stop sending to a subscriber (the row is kept, marked unsubscribed)."""
    address = subscriptions.normalise_email(email)
    subscriptions.unsubscribe(app.engine, address, now=utcnow())
    click.echo(f"Unsubscribed {address}.")


@main.command("subscribers")
@click.option(
    "--status",
    type=click.Choice(subscriptions.STATUSES),
    help="Only subscribers with this status.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_app
def subscribers_cmd(app: App, status: str | None, as_json: bool) -> None:
    """List subscribers with their status and interests."""
    rows = subscriptions.listing(app.engine, status=status)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "email": r.email,
                        "status": r.status,
                        "keywords": r.keywords,
                        "exclude": r.exclude,
                        "frequency": r.frequency,
                        "max_papers": r.max_papers,
                        "created_at": _iso(r.created_at),
                    }
                    for r in rows
                ],
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    for r in rows:
        excl = f" −[{', '.join(r.exclude)}]" if r.exclude else ""
        click.echo(f"{r.email:<40} {r.status:<12} {r.frequency:<6} {', '.join(r.keywords)}{excl}")
    click.echo(f"{len(rows)} subscriber(s).", err=True)


# ---------------------------------------------------------------------------------------------
# ranking, sending, preview


@main.command("rank")
@click.argument("keywords")
@click.option("--exclude", "-x", default="", help="Comma-separated keywords to exclude.")
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=10, show_default=True, help="Papers to show."
)
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="Only papers first seen on or after this date.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON list (key, title, score, matches, …)."
)
@with_app
def rank_cmd(
    app: App, keywords: str, exclude: str, limit: int, since: datetime | None, as_json: bool
) -> None:
    """Rank the papers in the database for KEYWORDS (comma-separated) — try them before subscribing."""
    kws = subscriptions.keyword_list(keywords)
    if not kws:
        raise click.ClickException(
            'give at least one keyword, e.g. digest rank "llm inference, quantization"'
        )
    with Session(app.engine) as session:
        query = select(Paper)
        start = _date_start(since)
        if start:
            query = query.where(Paper.first_seen_at >= start)
        papers = {p.key: p for p in session.exec(query).all()}
    from digest.ranking import Doc, Index, Profile

    index = Index.build(
        [
            Doc(key=p.key, title=p.title, abstract=p.abstract, upvotes=p.upvotes)
            for p in papers.values()
        ]
    )
    [(_, ranked)] = list(
        index.rank(
            [
                Profile(
                    id=0,
                    keywords=kws,
                    exclude=subscriptions.keyword_list(exclude, field="exclude"),
                    limit=limit,
                )
            ]
        )
    )
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "key": r.key,
                        "title": papers[r.key].title,
                        "url": papers[r.key].url,
                        "score": round(r.score, 4),
                        "matches": [dataclasses.asdict(m) for m in r.matches],
                        "reason": r.reason(),
                    }
                    for r in ranked
                ],
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    if not ranked:
        click.echo(f"No paper among {len(papers)} matches {', '.join(kws)}.")
        return
    for i, r in enumerate(ranked, 1):
        click.echo(f"{i:>2}. [{r.score:.2f}] {papers[r.key].title}\n    {r.reason()}")


def send_exit_code(report: delivery.SendReport) -> int:
    """0 when everything due went out (or nothing was due), else why not."""
    if report.stopped:
        return EXIT_STOPPED
    if report.failed or report.bounced:
        return EXIT_INCOMPLETE
    return 0


def _run_send(app: App, *, dry_run: bool) -> delivery.SendReport | None:
    renderer = _renderer(app.settings)
    now = utcnow()
    if dry_run:
        new = delivery.unplanned(app.engine, app.settings, now=now)
        due = delivery.count_due(app.engine, app.settings, now=now)
        daily = editions.current(now, app.settings.zone)
        click.echo(
            f"Would plan {new} new deliver{'y' if new == 1 else 'ies'} (edition {daily.id}, "
            f"or the week's for weekly readers) and send them with the {due} already due; "
            "readers with nothing new that matches are skipped then."
        )
        return None
    delivery.tune_for_sending()
    mailroom = delivery.mailroom_for(app.settings)
    with mailroom:
        with Session(app.engine) as session:
            pending = len(
                session.exec(select(Subscriber.id).where(Subscriber.status == "active")).all()
            )
        with _bar(pending, "Sending") as advance:
            report = delivery.send(
                app.engine,
                app.settings,
                renderer=renderer,
                now=now,
                mailroom=mailroom,
                progress=advance,
            )
    click.echo(
        f"Send: {report.sent} sent, {report.skipped} skipped (nothing matched or not active), "
        f"{report.failed} failed (will retry), {report.bounced} bounced — via "
        f"{mailroom.description}."
    )
    if report.stopped:
        click.secho(
            f"Stopped: {report.stopped}. {report.released} digest(s) went back to the queue "
            "untouched; the next run sends them.",
            fg="red",
            err=True,
        )
    for err in report.errors[:10]:
        click.secho(f"  ✗ {err}", fg="red", err=True)
    return report


@main.command("send")
@click.option("--dry-run", is_flag=True, help="Say what would be sent; send and record nothing.")
@with_app
def send_cmd(app: App, dry_run: bool) -> None:
    """Send the current edition now to every active subscriber who has not had it.

    A manual send ignores send hours. Each (subscriber, edition) gets one digest: running it
    twice sends nothing twice. With no [smtp] host, mail goes to the embedded SMTP sink.
    Exits 0 when everything due went out, 3 when some deliveries failed or bounced, 4 when
    the relay could not be used and the run stopped.
    """
    report = _run_send(app, dry_run=dry_run)
    if report is not None:
        sys.exit(send_exit_code(report))


@main.command("preview")
@click.argument("email")
@click.option(
    "--date",
    "day",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="The edition's date (default: today).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the HTML here (default: previews/<address>-<edition>.html).",
)
@click.option("--open", "open_it", is_flag=True, help="Open the file in a web browser.")
@with_app
def preview_cmd(
    app: App, email: str, day: datetime | None, out: Path | None, open_it: bool
) -> None:
    """Write the exact HTML a subscriber would get, without sending or recording anything."""
    sub = subscriptions.get(app.engine, email)
    zone = app.settings.zone
    when = day.date() if day else utcnow().astimezone(zone).date()
    ed = editions.weekly(when, zone) if sub.frequency == "weekly" else editions.daily(when, zone)
    subject, html, ranked = delivery.preview(
        app.engine,
        app.settings,
        renderer=_renderer(app.settings),
        subscriber=sub,
        edition=ed,
    )
    path = (
        out
        or app.settings.path(app.settings.digest.previews_dir)
        / f"{_safe_name(sub.email)}-{ed.id}.html"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    click.echo(f"Subject: {subject}\n{len(ranked)} paper(s) · wrote {path}")
    if open_it:
        webbrowser.open(path.resolve().as_uri())


def _safe_name(email: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in email)[:80]


@main.command("mailbox")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Show the newest N messages.",
)
@with_app
def mailbox_cmd(app: App, limit: int) -> None:
    """List the messages the embedded SMTP sink holds (its Maildir)."""
    maildir = app.settings.path(app.settings.sink.maildir)
    from digest.sink import list_mail

    mails = list(list_mail(maildir))
    if not mails:
        click.echo(f"The Maildir {maildir} is empty.")
        return
    for m in mails[-limit:]:
        when = m.date.strftime("%Y-%m-%d %H:%M") if m.date else "?"
        click.echo(f"{when}  {m.to:<32}  {m.subject}\n{'':18}{m.path}")
    click.echo(f"{len(mails)} message(s) in {maildir}.", err=True)


# ---------------------------------------------------------------------------------------------
# whole cycles


@main.command("run")
@click.option("--dry-run", is_flag=True, help="Ingest without writing, and say what would be sent.")
@with_app
def run_cmd(app: App, dry_run: bool) -> None:
    """One full cycle now: ingest the configured sources, rank, render and send.

    Exits 0 when every source was read and everything due went out; 3 when some sources or
    deliveries failed (the send goes ahead when a source failed: the papers already stored
    are still due); 1 when every source failed; 4 when the relay could not be used and the
    run stopped.
    """
    report = _run_ingest(app, (), dry_run=dry_run)
    _print_ingest(report, dry_run=dry_run)
    sent = _run_send(app, dry_run=dry_run)
    codes = {ingest_exit_code(report), send_exit_code(sent) if sent is not None else 0}
    sys.exit(next((c for c in (EXIT_STOPPED, EXIT_FAILED, EXIT_INCOMPLETE) if c in codes), 0))


DEMO_READERS = (
    ("ada@example.org", "llm inference, quantization, serving", ""),
    ("grace@example.org", "dataset distillation, data selection", ""),
    ("alan@example.org", "mixture of experts, MoE", "survey"),
    ("katherine@example.org", "test-time adaptation, domain adaptation, segmentation", ""),
)


@main.command("demo")
@with_app
def demo_cmd(app: App) -> None:
    """Run the whole job on the embedded defaults and the bundled sample list (no network).

    Subscribes a few demo readers with different interests, ingests the sample paper list,
    sends the edition into the embedded SMTP sink, and writes each reader's digest — the
    HTML part of the message the sink received — to an HTML file.
    """
    report = _run_ingest(app, ("bundled:sample-papers.txt",))
    _print_ingest(report)
    for email, keywords, exclude in DEMO_READERS:
        try:
            subscriptions.add(
                app.engine,
                email,
                subscriptions.make_interests(keywords, exclude=exclude, max_papers=5),
            )
            click.echo(f"Subscribed demo reader {email}: {keywords}")
        except DigestError:
            pass  # already there from an earlier demo
    if app.settings.smtp.host:
        click.echo(
            f"Note: [smtp] host is set ({app.settings.smtp.host}); the demo uses the embedded sink instead."
        )
    app.settings = dataclasses.replace(
        app.settings, smtp=dataclasses.replace(app.settings.smtp, host="")
    )
    _run_send(app, dry_run=False)

    maildir = app.settings.path(app.settings.sink.maildir)
    out_dir = app.settings.path(app.settings.digest.previews_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    latest: dict[str, Path] = {}
    from digest.sink import list_mail

    for m in list_mail(maildir):
        latest[m.to.lower()] = m.path
    click.echo("\nEach reader's digest, as received by the embedded SMTP server:")
    for email, _, _ in DEMO_READERS:
        path = latest.get(email)
        if path is None:
            click.echo(f"  {email}: no digest (nothing matched)")
            continue
        msg = message_from_bytes(path.read_bytes(), policy=policy.default)
        body = msg.get_body(preferencelist=("html",))
        html = body.get_content() if body is not None else ""
        target = out_dir / f"demo-{_safe_name(email)}.html"
        target.write_text(html, encoding="utf-8")
        click.echo(f"  {email}: {msg['Subject']}\n      {target.resolve()}")
    click.echo(f"\nThe raw messages are in {maildir.resolve()} (list them with `digest mailbox`).")


# ---------------------------------------------------------------------------------------------
# the web app


@main.command("serve")
@click.option("--host", default=None, help="Address to listen on (default: [web] host, 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Port (default: [web] port, 8000)."
)
@click.option(
    "--scheduler/--no-scheduler",
    "schedule",
    default=True,
    show_default=True,
    help="Also run the schedule: ingest on its cron, deliver at each reader's hour.",
)
@with_app
def serve_cmd(app: App, host: str | None, port: int | None, schedule: bool) -> None:
    """Run the web app and the schedule.

    The web app: subscribe, confirm, preferences, unsubscribe, view in browser, archive. Links
    in mail point at [site] base_url: behind a reverse proxy, set it to the public URL. With no
    [smtp] host, mail goes to the embedded SMTP sink's Maildir.

    The schedule: ingest on [scheduler] ingest_cron, and a delivery tick every [scheduler]
    tick_seconds that sends each reader their digest at their own hour ([scheduler] send =
    false leaves the sending to `digest worker` processes).

    With [inbound] enabled = true, also the inbound SMTP server for email commands (see
    `digest inbound`).
    """
    # Imported here: the other commands need neither the web stack nor its start-up time.
    from urllib.parse import urlsplit

    import uvicorn
    import uvicorn.config

    from digest.scheduler import build_scheduler
    from digest.web import create_app

    settings = app.settings
    host = host or settings.web.host
    port = port or settings.web.port
    # A base_url with a path (https://example.org/digest) is served under that prefix.
    root_path = urlsplit(settings.site.base_url).path.rstrip("/")
    # uvicorn's own logging, with the links' tokens taken out of the access log's paths
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config.setdefault("filters", {})["tokens"] = {
        "()": "digest.web.AccessLogFilter",
        "root_path": root_path,
    }
    log_config["loggers"]["uvicorn.access"]["filters"] = ["tokens"]
    # one place for all of the process's mail: the web app's, the replies' and the digests'
    mailroom = delivery.mailroom_for(settings)
    stop = threading.Event()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, app.engine, mailroom=mailroom),
            host=host,
            port=port,
            root_path=root_path,
            proxy_headers=settings.web.proxy_headers,
            forwarded_allow_ips=settings.web.forwarded_allow_ips,
            server_header=False,
            log_config=log_config,
            log_level="info",
        )
    )

    def on_sigterm(*_: object) -> None:
        stop.set()
        server.should_exit = True  # a SIGTERM before uvicorn takes the signal over still counts

    # uvicorn takes SIGTERM over while it runs, then raises it again once it has shut down:
    # with the default handler that would end the process before the `finally` below stops
    # the scheduler and the inbound server (and the mail it has accepted but not answered).
    # Installed first, so that a SIGTERM at any point of the start-up stops the whole.
    signal.signal(signal.SIGTERM, on_sigterm)
    click.echo(f"Serving on http://{host}:{port}/ (public address {settings.site.base_url})")
    click.echo(f"Mail goes via {mailroom.description}.")
    scheduler = None
    inbound = None
    mailroom.start()
    try:
        if settings.inbound.enabled:
            from digest.inbound import create_server

            inbound = create_server(settings, app.engine, mailroom=mailroom).start()
            _echo_inbound(inbound.host, inbound.port, inbound.addresses)
        if schedule:
            scheduler = build_scheduler(
                settings,
                app.engine,
                renderer=_renderer(settings),
                mailroom=mailroom,
                stop=stop,
            )
            scheduler.start()
            click.echo(
                f"Scheduler: ingest at {settings.scheduler.ingest_cron!r} "
                f"({settings.digest.timezone}), delivery tick every "
                f"{settings.scheduler.tick_seconds} s"
                + ("." if settings.scheduler.send else " (planning only: workers send).")
            )
        if not stop.is_set():
            server.run()
    finally:
        stop.set()
        if inbound is not None:
            inbound.stop()
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        mailroom.stop()


def _echo_inbound(host: str, port: int, addresses: tuple[str, ...]) -> None:
    click.echo(f"Email commands: SMTP on {host}:{port} for {', '.join(addresses)}.")


@main.command("inbound")
@click.option(
    "--host", default=None, help="Address to listen on (default: [inbound] host, 127.0.0.1)."
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port (default: [inbound] port, 2525; 0 picks a free one).",
)
@with_app
def inbound_cmd(app: App, host: str | None, port: int | None) -> None:
    """Run the inbound SMTP server for email commands, alone.

    It takes mail for [inbound] address (commands in the subject or body: subscribe KEYWORDS,
    keywords, exclude, weekly [DAY], daily, unsubscribe, help), subscribe_address and
    unsubscribe_address only: any other recipient gets 550, it never relays. Subscribing is
    confirmed by a link; replies go out through [smtp] (or the embedded sink). `digest serve`
    runs it too when [inbound] enabled = true. SIGTERM or Ctrl-C stops it.
    """
    from digest.inbound import create_server

    settings = app.settings
    inbound = dataclasses.replace(
        settings.inbound,
        host=host or settings.inbound.host,
        port=settings.inbound.port if port is None else port,
    )
    settings = dataclasses.replace(settings, inbound=inbound)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = create_server(settings, app.engine).start()
    try:
        _echo_inbound(server.host, server.port, server.addresses)
        click.echo(f"Replies go via {server.processor.mailroom.description}.")
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
    click.echo("Stopped.")


# ---------------------------------------------------------------------------------------------
# the database's schema


@main.group("db")
def db_group() -> None:
    """The database's schema: upgrade it after installing a new digest, show its revision.

    Every other command refuses a database whose schema is older or newer than this digest's,
    and says to run `digest db upgrade`.
    """


@db_group.command("upgrade")
@with_app
def db_upgrade_cmd(app: App) -> None:
    """Bring the database to this digest's schema, keeping every row.

    Creates a new database; recognises one made by digest 0.1.0 (which had no schema
    version); runs the revisions it lacks, in one transaction. There is no downgrade: take a
    backup first. Safe to run twice.
    """
    from digest import schema  # Alembic: only the db commands pay for its import

    engine = make_engine(app.settings.database.url, check_schema=False)
    try:
        done = schema.upgrade(engine)
    finally:
        engine.dispose()
    before = done.before
    through = (
        f" through {len(done.applied)} revision(s): {', '.join(done.applied)}"
        if done.applied
        else ""
    )
    if before.state == "new":
        click.echo(f"Created a new database at revision {done.after} (head).")
    elif before.state == "release-0.1.0":
        then = f", then upgraded it to {done.after} (head){through}" if done.applied else " (head)"
        click.echo(
            "Recognised a database made by digest 0.1.0 (no schema version): stamped it at "
            f"revision {BASELINE}{then}. Every row is kept."
        )
    elif done.applied:
        click.echo(
            f"Upgraded the database from revision {before.revision} to {done.after} (head)"
            f"{through}. Every row is kept."
        )
    else:
        click.echo(f"The database is at revision {done.after} (head): nothing to do.")


@db_group.command("current")
@with_app
def db_current_cmd(app: App) -> None:
    """Show the database's schema revision and whether it is up to date."""
    from digest import schema

    engine = make_engine(app.settings.database.url, check_schema=False)
    try:
        st = schema.status(engine)
    finally:
        engine.dispose()
    click.echo(
        {
            "new": f"No tables yet: the first command (or `digest db upgrade`) creates them at {HEAD}.",
            "release-0.1.0": "No schema version: made by digest 0.1.0. Run `digest db upgrade`.",
            "current": f"{st.revision} (head): up to date.",
            "behind": f"{st.revision}: older than this digest's {HEAD}. Run `digest db upgrade`.",
            "ahead": f"{st.revision}: unknown to this digest (at {HEAD}): the database is newer.",
        }[st.state]
    )


@db_group.command("history")
@with_app
def db_history_cmd(app: App) -> None:
    """List the schema's revisions, newest first, marking the database's."""
    from digest import schema

    engine = make_engine(app.settings.database.url, check_schema=False)
    try:
        st = schema.status(engine)
    finally:
        engine.dispose()
    if st.state == "ahead":
        click.echo(f"{st.revision}  (the database's: unknown to this digest)")
    for r in schema.history():
        marks = [m for m, on in (("head", r.id == HEAD), ("current", r.id == st.revision)) if on]
        if st.state == "release-0.1.0" and r.id == BASELINE:
            marks.append("the database: digest 0.1.0, no version")
        click.echo(f"{r.id}  {r.message}" + (f"  ({', '.join(marks)})" if marks else ""))


# ---------------------------------------------------------------------------------------------
# operations


@main.command("worker")
@click.option("--once", is_flag=True, help="Send what is due now, then exit.")
@click.option(
    "--poll",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds to wait when nothing is due.",
)
@with_app
def worker_cmd(app: App, once: bool, poll: float) -> None:
    """Send due digests from the outbox; run any number of these, on any machines.

    Workers claim deliveries under a lease (`SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL),
    so none is sent twice; the scheduler in `digest serve` plans them (set [scheduler]
    send = false there when workers do the sending). SIGTERM or Ctrl-C finishes the
    messages in hand and exits. A relay that cannot be used is tried again after --poll
    seconds. With --once, the exit code is digest send's.
    """
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    renderer = _renderer(app.settings)
    delivery.tune_for_sending()
    total = delivery.SendReport()
    with delivery.mailroom_for(app.settings) as mailroom:
        while not stop.is_set():
            report = delivery.deliver(
                app.engine, app.settings, renderer=renderer, mailroom=mailroom, stop=stop
            )
            for key in ("sent", "skipped", "failed", "bounced"):
                setattr(total, key, getattr(total, key) + getattr(report, key))
            if report.stopped:
                total.stopped = report.stopped
                click.secho(f"Stopped: {report.stopped}.", fg="red", err=True)
            if once:
                break
            if report.stopped or not any(report.as_counts().values()):
                stop.wait(poll)  # a relay that is down is tried again after the pause
    click.echo(f"Worker: {counts_line(total.as_counts())}.")
    if once:
        sys.exit(send_exit_code(total))


@main.command("status")
@click.argument("email", required=False)
@with_app
def status_cmd(app: App, email: str | None) -> None:
    """Show the last ingest and send runs, the outbox, and the next runs.

    With EMAIL: why that reader got, or did not get, their digest (not due, no matches,
    bounced, unsubscribed, …) and their recent deliveries.
    """
    from digest import status as status_mod

    now = utcnow()
    if email:
        sub = subscriptions.get(app.engine, email)
        st = status_mod.reader_status(app.engine, app.settings, sub, now=now)
        schedule = (
            f"weekly on {calendar.day_name[sub.weekday]}" if sub.frequency == "weekly" else "daily"
        )
        click.echo(
            f"{sub.email}: {sub.status}, {schedule} at {sub.send_hour:02d}:00 {sub.timezone}, "
            f"{sub.max_papers} papers, keywords: {', '.join(sub.keywords)}"
        )
        click.echo(f"  {st.verdict}")
        for d in st.deliveries:
            error = f" — {d.last_error}" if d.last_error else ""
            click.echo(
                f"  {d.edition:<11} {d.status:<8} attempts {d.attempts} papers {len(d.paper_keys)}{error}"
            )
        return
    o = status_mod.overview(app.engine, app.settings, now=now)
    for label, run in (("Last ingest", o.last_ingest), ("Last send", o.last_send)):
        if run is None:
            click.echo(f"{label}: never")
            continue
        click.echo(
            f"{label}: {run.started_at:%Y-%m-%d %H:%M UTC} — "
            f"{counts_line(run.counts, kind=run.kind)}"
            + (f", {len(run.errors)} error(s)" if run.errors else "")
        )
        for err in run.errors[:5]:
            click.secho(f"  ✗ {err}", fg="red")
    if o.sources:
        click.echo("Sources:")
        for s in o.sources:
            when = f"{s.last_fetch_at:%Y-%m-%d %H:%M}" if s.last_fetch_at else "never"
            state = (
                f"error: {s.last_error}" if s.last_error else f"{s.last_new} new of {s.last_count}"
            )
            click.echo(f"  {s.name}: {when} · {state}")
    click.echo(
        "Subscribers: "
        + (", ".join(f"{n} {k}" for k, n in sorted(o.subscribers.items())) or "none")
    )
    for line in status_mod.caps_lines(o.requests, app.settings):
        click.echo(line)
    click.echo("Deliveries:")
    for edition, counts in o.editions:
        click.echo(f"  {edition}: {counts_line(counts)}")
    if not o.editions:
        click.echo("  none yet")
    if o.retries_waiting:
        click.echo(
            f"  {o.retries_waiting} waiting to be retried, the next at {o.next_retry:%H:%M UTC}"
        )
    nxt = f"{o.next_ingest:%Y-%m-%d %H:%M %Z}" if o.next_ingest else "never"
    click.echo(
        f"Next runs (under `digest serve`): ingest at {nxt} ({app.settings.scheduler.ingest_cron!r}); "
        f"delivery tick every {app.settings.scheduler.tick_seconds} s."
    )
