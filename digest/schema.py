"""Schema migrations on top of Alembic: what `digest db upgrade`, `current` and `history` do.

Only `digest db` and the error path of ``db.ensure_schema`` import this module (Alembic's import
is not free, and every command starts by checking the schema).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Engine

from digest import migrations
from digest.db import create_schema, digest_tables, read_revision, schema_transaction
from digest.errors import SchemaError
from digest.migrations import BASELINE, HEAD, RELEASE_0_1_0

MIGRATIONS = Path(migrations.__file__).parent
"""The Alembic folder (env.py, versions/), found through the package: it ships in the wheel."""

State = Literal["new", "release-0.1.0", "current", "behind", "ahead"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Status:
    """Where a database's schema stands against this code's."""

    revision: str | None
    """The database's revision; None without a version table."""
    state: State
    """new: no tables of digest's yet; release-0.1.0: made by 0.1.0 (no version table);
    current: at HEAD; behind: at an older revision; ahead: at a revision this code lacks."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Upgrade:
    """What ``upgrade`` did."""

    before: Status
    after: str
    applied: tuple[str, ...]
    """The revisions run, oldest first (none for a new database, made at HEAD at once)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Revision:
    """One revision of the schema."""

    id: str
    down: str | None
    message: str


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for the packaged migrations, running on ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def history() -> list[Revision]:
    """Every revision, newest first."""
    scripts = ScriptDirectory.from_config(alembic_config())
    return [
        Revision(
            id=script.revision,
            down=script.down_revision if isinstance(script.down_revision, str) else None,
            message=(script.doc or "").strip(),
        )
        for script in scripts.walk_revisions()
    ]


def status(engine: Engine) -> Status:
    """The database's revision and how it compares with this code's."""
    with engine.connect() as conn:
        return _status(conn)


def _status(conn: Connection) -> Status:
    revision = read_revision(conn)
    if revision is None:
        return Status(revision=None, state="release-0.1.0" if digest_tables(conn) else "new")
    if revision == HEAD:
        return Status(revision=revision, state="current")
    known = {r.id for r in history()}
    return Status(revision=revision, state="behind" if revision in known else "ahead")


def mismatch(revision: str | None) -> SchemaError:
    """The error for a database whose revision is not HEAD: what to do about it, in one line."""
    if revision is None:
        return SchemaError(
            "this database was made by digest 0.1.0 and has no schema version: "
            "run `digest db upgrade` to bring it up to date (its rows are kept)"
        )
    if revision in {r.id for r in history()}:
        return SchemaError(
            f"this database's schema (revision {revision}) is older than this digest's "
            f"({HEAD}): run `digest db upgrade` to bring it up to date"
        )
    return SchemaError(
        f"this database's schema is at revision {revision}, which this digest does not know: "
        "this digest is older than the database; run the newer digest that upgraded it"
    )


def upgrade(engine: Engine) -> Upgrade:
    """Bring the database to HEAD, rows kept, in one transaction under the schema lock.

    A new database is created at HEAD; one made by digest 0.1.0 (its tables checked against
    that release's) is stamped at BASELINE first; then Alembic runs the revisions after the
    database's own. A database at a revision this code lacks is refused.
    """
    with schema_transaction(engine) as conn:
        before = _status(conn)
        if before.state == "new":
            create_schema(conn)
            return Upgrade(before=before, after=HEAD, applied=())
        if before.state == "ahead":
            raise mismatch(before.revision)
        if before.state == "release-0.1.0":
            _check_release_0_1_0(conn)
            command.stamp(alembic_config(conn), BASELINE)
        start = before.revision or BASELINE
        scripts = ScriptDirectory.from_config(alembic_config())
        applied = tuple(s.revision for s in scripts.iterate_revisions(HEAD, start))[::-1]
        applied = tuple(r for r in applied if r != start)
        if applied:
            command.upgrade(alembic_config(conn), HEAD)
        after = read_revision(conn)
    if after != HEAD:  # pragma: no cover - Alembic stops with its own error first
        raise SchemaError(f"the upgrade ended at revision {after}, not {HEAD}")
    return Upgrade(before=before, after=HEAD, applied=applied)


def _check_release_0_1_0(conn: Connection) -> None:
    """Refuse a database without a version table whose tables are not those 0.1.0 made."""
    inspector = inspect(conn)
    present = set(inspector.get_table_names())
    problems = []
    for table, columns in sorted(RELEASE_0_1_0.items()):
        if table not in present:
            problems.append(f"no table {table}")
            continue
        have = {c["name"] for c in inspector.get_columns(table)}
        if missing := sorted(columns - have):
            problems.append(f"{table} lacks {', '.join(missing)}")
        if extra := sorted(have - columns):
            problems.append(f"{table} has unknown {', '.join(extra)}")
    if problems:
        raise SchemaError(
            "this database has no schema version and its tables are not those digest 0.1.0 "
            f"made ({'; '.join(problems)}): digest cannot tell how to upgrade it"
        )
