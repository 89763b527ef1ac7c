"""Journal marks: per hub, the last session-journal entry the database has applied.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

``gateway.storage.journal_applier.JournalMark``. A batch of journaled session records and the
move of this mark commit in one transaction, so a record is applied exactly once even across
crashes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "journal_marks",
        sa.Column("hub_id", sa.String(length=64), nullable=False),
        sa.Column("applied_rid", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("hub_id"),
    )


def downgrade() -> None:
    op.drop_table("journal_marks")
