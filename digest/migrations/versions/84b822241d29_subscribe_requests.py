"""subscribe requests: the hourly caps on confirmation mail

One row per subscribe request that may earn a mail (the web form, a mail), with when it came and
from where (a web client's address, a mail's sender domain): the caps count them over the last
hour in the database, so that they hold across every process on one database. A new table: no
existing row is touched.

Revision ID: 84b822241d29
Revises: bcac60afd2fe
Create Date: 2026-12-05 03:18:37
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "84b822241d29"
down_revision: str | None = "bcac60afd2fe"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add the subscriberequest table."""
    op.create_table(
        "subscriberequest",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("origin", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("subscriberequest", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_subscriberequest_at"), ["at"], unique=False)
        batch_op.create_index(
            "ix_subscriberequest_origin", ["channel", "origin", "at"], unique=False
        )


def downgrade() -> None:
    """Not supported: restore a backup taken before `digest db upgrade`."""
    raise NotImplementedError("digest's revisions have no downgrade")
