"""The access epoch, and pairing codes without a shared attempts counter.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

``access_epoch`` (``gateway.storage.access.AccessEpoch``): one row, bumped by every write that
changes who may see or control something, polled by every hub to reload its access snapshot.

``pairing_codes.attempts`` counted wrong guesses against every live code, which let anyone burn
a victim's code; wrong guesses now lock out the guesser in the API instead, so it goes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "access_epoch",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(table, [{"id": 1, "epoch": 1}])
    with op.batch_alter_table("pairing_codes") as batch:
        batch.drop_column("attempts")


def downgrade() -> None:
    with op.batch_alter_table("pairing_codes") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    op.drop_table("access_epoch")
