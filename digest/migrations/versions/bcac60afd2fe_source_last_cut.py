"""source.last_cut: the entries a source had past [ingest] max_entries in its last read

Revision ID: bcac60afd2fe
Revises: 2c1a5e0f9b7d
Create Date: 2026-12-05 03:43:49
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "bcac60afd2fe"
down_revision: str | None = "2c1a5e0f9b7d"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add source.last_cut, 0 for the sources already read."""
    with op.batch_alter_table("source", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("last_cut", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    """Not supported: restore a backup taken before `digest db upgrade`."""
    raise NotImplementedError("digest's revisions have no downgrade")
