"""webhook deliveries: the git host's delivery id of the push that started a run.

Revision ID: 0015
Revises: 0014

GitHub and GitLab send a push again when asked to redeliver it (or when they time out
waiting for the answer): the same delivery id. A run remembers the id of the delivery
that started it, unique per stack, so a delivery received again answers with that run
instead of building the same push twice. NULL for runs a webhook did not start.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("pipeline_runs", sa.Column("delivery", sa.String(255), nullable=True))
    op.create_index(
        "ix_pipeline_runs_delivery", "pipeline_runs", ["stack_id", "delivery"], unique=True
    )


def downgrade() -> None:
    op.drop_index("ix_pipeline_runs_delivery", table_name="pipeline_runs")
    op.drop_column("pipeline_runs", "delivery")
