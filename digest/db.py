"""The engine factory: the only module that knows SQLite from PostgreSQL.

It also keeps the schema in step with the code: a new database is created at the newest
revision (digest.migrations.HEAD), one at that revision is used as it is, and any other is
refused with a SchemaError that says what to do (`digest db upgrade`, digest.schema).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, event, inspect
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, ProgrammingError
from sqlmodel import SQLModel, create_engine

from digest import models  # noqa: F401  (registers the tables)
from digest.errors import DigestError, SchemaError
from digest.migrations import HEAD, RELEASE_0_1_0

VERSION_TABLE = "alembic_version"
"""Alembic's table holding the database's revision."""

# The version table exactly as Alembic makes it (MigrationContext's default), so that a database
# created here and one created by running every revision are the same.
_VERSION = Table(
    VERSION_TABLE,
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
)

# Any number will do, as long as it stays the same: every digest process takes this one.
_SCHEMA_LOCK = 0x6469676573740001


def make_engine(url: str, *, check_schema: bool = True) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout, and a new SQLite file is made
    readable and writable by its owner only (``create_private``).

    By default the schema is made or checked first (``ensure_schema``); ``check_schema=False``
    only connects: for `digest db`, and for a process whose parent has checked it.
    """
    try:
        engine = _engine(url)
    except (ArgumentError, ImportError) as e:  # a URL SQLAlchemy cannot read, no such driver
        raise DigestError(
            f"[database] url {_shown(url)!r} is not a database URL digest can use: {e}; "
            "e.g. sqlite:///subscribers.db or postgresql+psycopg://user@host/digest"
        ) from e
    if check_schema:
        try:
            ensure_schema(engine)
        except OperationalError as e:
            engine.dispose()
            reason = str(e.orig or e).strip().splitlines()[0]
            raise DigestError(
                f"cannot use the database at {_shown(url)}: {reason} (check [database] url, "
                "or DIGEST_DATABASE_URL)"
            ) from e
        except BaseException:
            engine.dispose()
            raise
    return engine


def _shown(url: str) -> str:
    """The URL as an error message may show it: without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1][:200]


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        create_private(url)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cur = dbapi_connection.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    else:
        engine = create_engine(url, pool_pre_ping=True)
    return engine


def create_private(url: str) -> None:
    """Create the file of a new SQLite database with mode 0600 before SQLite opens it.

    It holds every reader's address and interests. SQLite creates the -wal and -shm files with
    the mode of the database file, so they are private too. An existing file is left as it is
    (its mode is the operator's choice); a URL that names no plain file (memory, a ``file:``
    URI) is left to SQLite.
    """
    parsed = make_url(url)
    database = parsed.database
    if (
        not database
        or database == ":memory:"
        or parsed.query.get("uri")
        or database.startswith("file:")
    ):
        return
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError:  # a missing folder, say: SQLite's own error says it better
        return
    os.close(fd)  # an empty file is an empty SQLite database


def ensure_schema(engine: Engine) -> None:
    """Create a new database at HEAD, accept one at HEAD, refuse any other with SchemaError.

    A database at HEAD costs one query. Processes racing to create the same new database are
    serialised by the schema lock, and the ones that wait find it made.
    """
    try:
        with engine.connect() as conn:
            revision = conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").all()
        if revision == [(HEAD,)]:
            return
    except (OperationalError, ProgrammingError):
        pass  # no version table, most likely: read_revision below says
    with schema_transaction(engine) as conn:
        state = read_revision(conn)
        if state is None and not digest_tables(conn):
            create_schema(conn)
            return
    if state != HEAD:
        from digest.schema import mismatch  # Alembic, only when the schema is not the code's

        raise mismatch(state)


def read_revision(conn: Connection) -> str | None:
    """The database's revision; None when it has no version table (new, or made by 0.1.0)."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    found = conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalars().all()
    if len(found) != 1:
        # Alembic's state after a downgrade to nothing, or branches digest never makes.
        raise SchemaError(
            f"the database's {VERSION_TABLE} table holds {len(found)} revisions "
            f"({', '.join(map(str, found)) or 'none'}) where digest expects one"
        )
    return str(found[0])


def digest_tables(conn: Connection) -> set[str]:
    """The tables of digest's, of any release, that the database holds."""
    known = set(SQLModel.metadata.tables) | set(RELEASE_0_1_0)
    return known & set(inspect(conn).get_table_names())


def create_schema(conn: Connection) -> None:
    """Create the models' tables and record HEAD, as running every revision would (tested)."""
    SQLModel.metadata.create_all(conn)
    _VERSION.create(conn)
    conn.execute(_VERSION.insert().values(version_num=HEAD))


@contextmanager
def schema_transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the schema lock, committed at the end.

    PostgreSQL: a transaction-level advisory lock. SQLite: the write lock (BEGIN IMMEDIATE; the
    busy timeout makes others wait), with foreign keys off as SQLite's own procedure for
    altering tables asks, and checked before the commit.
    """
    with engine.connect() as conn:
        if is_sqlite(engine):
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                yield conn
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                if broken:
                    raise SchemaError(
                        f"{len(broken)} row(s) have a foreign key that points nowhere (first: "
                        f"table {broken[0][0]}, row {broken[0][1]}): the schema was not changed"
                    )
                conn.commit()
            finally:
                conn.rollback()
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        else:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
            yield conn
            conn.commit()


@contextmanager
def exclusive_transaction(engine: Engine, lock: int) -> Iterator[Connection]:
    """A connection in a transaction that no other holder of ``lock`` runs beside, committed
    at the end (rolled back on an error).

    PostgreSQL: a transaction-level advisory lock on ``lock``. SQLite: the database's write lock
    (BEGIN IMMEDIATE; the busy timeout makes others wait), whatever ``lock`` is.
    """
    with engine.connect() as conn:
        try:
            if is_sqlite(engine):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({int(lock)})")
            yield conn
            conn.commit()
        finally:
            conn.rollback()


def is_sqlite(engine: Engine) -> bool:
    """True when the engine talks to SQLite."""
    return engine.dialect.name == "sqlite"


def table_of(model: type[SQLModel]) -> Table:
    """The Core table behind a SQLModel class."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table


def insert_ignore(
    engine_or_conn: Engine | Connection,
    model: type[SQLModel],
    rows: Sequence[Mapping[str, Any]],
    *,
    conflict: Sequence[str],
) -> int:
    """Bulk-insert rows, skipping those that clash on ``conflict``; the number inserted."""
    if not rows:
        return 0
    table = table_of(model)
    dialect = engine_or_conn.dialect.name
    if dialect == "sqlite":
        stmt: Any = sqlite_insert(table)
    elif dialect == "postgresql":
        stmt = pg_insert(table)
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(f"unsupported database {dialect}")
    # RETURNING gives back only the rows really inserted (rowcount is unreliable for
    # executemany on some drivers).
    key = table.primary_key.columns.values()[0]
    stmt = stmt.on_conflict_do_nothing(index_elements=list(conflict)).returning(key)
    if isinstance(engine_or_conn, Engine):
        with engine_or_conn.begin() as conn:
            return len(conn.execute(stmt, list(rows)).all())
    return len(engine_or_conn.execute(stmt, list(rows)).all())


def insert_ignore_rows(
    conn: Connection,
    model: type[SQLModel],
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    conflict: Sequence[str],
) -> None:
    """Bulk-insert plain tuples (hashable values in ``columns`` order), skipping those that clash on
    ``conflict``, straight through the driver's ``executemany``.

    The hot path of the outbox: each value is converted by its column's type (the
    ``bind_processor`` SQLAlchemy would use) once per distinct value in the call, where
    SQLAlchemy's own executemany builds and converts every row's parameters anew (a dozen
    rows per sent digest, the same time on each).
    """
    if not rows:
        return
    table, name, quote, mark = _statement_parts(conn, model)
    sql = (
        f"INSERT INTO {name} "
        f"({', '.join(map(quote, columns))}) VALUES ({', '.join([mark] * len(columns))}) "
        f"ON CONFLICT ({', '.join(map(quote, conflict))}) DO NOTHING"
    )
    conn.exec_driver_sql(sql, _converted(conn, table, columns, rows))


def update_rows(
    conn: Connection,
    model: type[SQLModel],
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    key: str,
    also: Mapping[str, str],
) -> None:
    """``UPDATE`` one row per tuple (hashable values for ``columns``, then the ``key`` column's
    value that picks the row), straight through the driver's ``executemany``, converting the
    values as insert_ignore_rows does. ``also`` sets more columns, the same for every row, to
    SQL expressions (written by the caller, never from input: "NULL", "attempts + 1")."""
    if not rows:
        return
    table, name, quote, mark = _statement_parts(conn, model)
    sets = [f"{quote(column)} = {mark}" for column in columns]
    sets += [f"{quote(column)} = {expression}" for column, expression in also.items()]
    sql = f"UPDATE {name} SET {', '.join(sets)} WHERE {quote(key)} = {mark}"
    conn.exec_driver_sql(sql, _converted(conn, table, (*columns, key), rows))


def _statement_parts(
    conn: Connection, model: type[SQLModel]
) -> tuple[Table, str, Callable[[str], str], str]:
    """The table, its quoted name, the identifier quoting and the driver's parameter mark."""
    preparer = conn.dialect.identifier_preparer
    mark = _MARKS.get(conn.dialect.paramstyle)
    if mark is None:  # pragma: no cover - SQLite's and PostgreSQL's drivers have one of these
        raise NotImplementedError(f"unsupported parameter style {conn.dialect.paramstyle}")
    table = table_of(model)
    return table, preparer.format_table(table), preparer.quote, mark


def _converted(
    conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> list[tuple[Any, ...]]:
    """``rows`` with each value converted by its column's type, once per distinct value."""
    dialect = conn.dialect
    converters: list[tuple[int, Any, dict[Any, Any]]] = []
    for i, name in enumerate(columns):
        # the dialect's form of the type, as SQLAlchemy's own statements use it: on SQLite a
        # datetime becomes SQLAlchemy's text, where the generic type's processor left it to the
        # driver's default adapter (per row; deprecated since Python 3.12; no fraction when
        # the microseconds are 0, unlike the text SQLAlchemy writes and compares against)
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            converters.append((i, process, {}))
    if not converters:
        return list(map(tuple, rows))
    converted = []
    for row in rows:
        values = list(row)
        for i, process, memo in converters:
            value = values[i]
            if value is not None:
                done = memo.get(value)
                if done is None:
                    done = memo[value] = process(value)
                values[i] = done
        converted.append(tuple(values))
    return converted


_MARKS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
