"""Alembic's environment for digest: runs the revisions in versions/ on one connection.

`digest db upgrade` (digest.schema) hands in its connection, already in a transaction that
holds the schema lock, as ``config.attributes["connection"]``. The ``alembic`` command, used to
write a revision (see digest/migrations/__init__.py), connects to ``-x url=...``, else to the
configured database.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString

from digest import models
from digest.config import load_settings
from digest.db import make_engine


def render_item(kind: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Write digest's column types as plain SQLAlchemy types, so a revision never changes
    meaning when the models' Python types do (UTCDateTime is a timezone-aware DateTime)."""
    if kind == "type" and isinstance(obj, models.UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if kind == "type" and isinstance(obj, AutoString):
        return f"sa.String(length={obj.length})" if obj.length else "sa.String()"
    return False


def run(connection: Connection) -> None:
    """Run the migrations Alembic was asked for on ``connection``."""
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        # SQLite alters a table by copying it: batch operations do that, and are plain ALTERs
        # on PostgreSQL.
        render_as_batch=True,
        render_item=render_item,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


given = context.config.attributes.get("connection")
if given is not None:
    run(given)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or load_settings().database.url
    engine = make_engine(url, check_schema=False)
    try:
        with engine.connect() as connection:
            run(connection)
            connection.commit()
    finally:
        engine.dispose()
