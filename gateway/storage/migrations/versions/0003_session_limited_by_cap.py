"""Sessions remember whether the owner's personal cap lowered the program: ``limited_by_cap``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

Matches ``SessionRecord.limited_by_cap``; plain SQLAlchemy types as in 0001. Rows written before
this revision get false (the server default): back then a personal cap refused a program instead
of lowering it, so no stored session was limited.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "sessions",
        sa.Column("limited_by_cap", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("sessions", "limited_by_cap")
