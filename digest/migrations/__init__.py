"""The database schema's history: Alembic revisions, shipped inside the package.

Importing this module is cheap (no Alembic): every command compares the database's revision with
``HEAD`` before it starts. ``digest db upgrade`` (digest.schema) runs the revisions.

Every change to digest/models.py's tables is a new revision, with a test that upgrades the
databases under tests/data/migrations/ and keeps their rows. To write one, from the repository
(pyproject.toml's ``[tool.alembic]`` points Alembic at this folder)::

    alembic -x url=sqlite:///scratch.db upgrade head       # a scratch database at HEAD
    # change digest/models.py, then:
    alembic -x url=sqlite:///scratch.db revision --autogenerate -m "what changes"

then read the revision versions/ gained and complete it: autogenerate misses renames and data
changes, and on SQLite a changed length (a PostgreSQL URL finds it; the tests compare the models
with both). Set ``HEAD`` below to its id. tests/test_migrations.py fails while the models and the
revisions disagree, or while ``HEAD`` is not the newest revision. Revisions never change once
released, and have no downgrade (a backup is the way back).
"""

from __future__ import annotations

from collections.abc import Mapping

HEAD = "84b822241d29"
"""The revision this code's models are at."""

BASELINE = "2c1a5e0f9b7d"
"""The first revision: the schema digest 0.1.0 made with ``create_all``, without a version table."""


def _columns(names: str) -> frozenset[str]:
    return frozenset(names.split())


RELEASE_0_1_0: Mapping[str, frozenset[str]] = {
    "paper": _columns(
        "id key title_key title abstract authors url pdf_url code_url sources published_at "
        "first_seen_at updated_at upvotes comments"
    ),
    "source": _columns(
        "id name location kind etag last_modified last_fetch_at last_ok_at last_count "
        "last_new last_error"
    ),
    "subscriber": _columns(
        "id email status keywords exclude frequency weekday send_hour timezone max_papers "
        "token_version bounce_count created_at updated_at confirmed_at unsubscribed_at "
        "last_confirmation_at"
    ),
    "delivery": _columns(
        "id subscriber_id edition status attempts next_attempt_at lease_until lease_owner "
        "message_id paper_keys last_error created_at sent_at"
    ),
    "sentpaper": _columns("subscriber_id paper_id edition sent_at"),
    "run": _columns("id kind started_at finished_at counts errors"),
}
"""The tables, and their columns, of a database made by digest 0.1.0 (which `digest db upgrade`
recognises and stamps at ``BASELINE``)."""
