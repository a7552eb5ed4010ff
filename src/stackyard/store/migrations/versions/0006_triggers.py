"""triggers: webhook secret and polling state on stacks.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stacks") as batch:
        batch.add_column(sa.Column("webhook_secret", sa.String(64), nullable=True))
        batch.add_column(
            sa.Column("poll_seconds", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("poll_last_seen", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stacks") as batch:
        batch.drop_column("poll_last_seen")
        batch.drop_column("poll_seconds")
        batch.drop_column("webhook_secret")
