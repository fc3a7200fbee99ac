"""The engine factory: the only module that knows SQLite from PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Table, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlmodel import SQLModel, create_engine

from digest import models  # noqa: F401  (registers the tables)


def make_engine(url: str, *, create: bool = True) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout. Creates the tables by default."""
    if url.startswith("sqlite"):
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
    if create:
        SQLModel.metadata.create_all(engine)
    return engine


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
