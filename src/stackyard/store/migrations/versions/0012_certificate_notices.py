"""certificate notices: the certificate state last reported per host name of a stage.

Revision ID: 0012
Revises: 0011

The certificate watch (deploy/certwatch.py) sends a ``certificate`` notification when a
name's state turns failed, expiring or expired, and records it here, so that it is sent
once per change and not again after a restart. Existing routes start with nothing
reported.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stage_routes") as table:
        table.add_column(
            sa.Column("certificate_notices", sa.JSON(), nullable=False, server_default="{}")
        )


def downgrade() -> None:
    with op.batch_alter_table("stage_routes") as table:
        table.drop_column("certificate_notices")
