"""record counters: build, run, release and deployment numbers from one row each.

Revision ID: 0007
Revises: 0006

The counters start where the records are: the highest number of each stack (and stage).
An INSERT ... SELECT in SQLAlchemy's terms, so the same migration runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

PER_STACK = ("builds", "pipeline_runs")
PER_STAGE = ("releases", "deployments")


def upgrade() -> None:
    op.create_table(
        "record_counters",
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column(
            "stack_id",
            sa.Integer(),
            sa.ForeignKey("stacks.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("stage", sa.String(63), primary_key=True),
        sa.Column("last_number", sa.Integer(), nullable=False),
    )
    counters = sa.table(
        "record_counters",
        sa.column("kind"),
        sa.column("stack_id"),
        sa.column("stage"),
        sa.column("last_number"),
    )
    for name in (*PER_STACK, *PER_STAGE):
        records = sa.table(name, sa.column("stack_id"), sa.column("number"), sa.column("stage"))
        per_stage = name in PER_STAGE
        stage = records.c.stage if per_stage else sa.literal("")
        highest = sa.select(
            sa.literal(name), records.c.stack_id, stage, sa.func.max(records.c.number)
        ).group_by(records.c.stack_id, *([records.c.stage] if per_stage else []))
        op.execute(
            counters.insert().from_select(["kind", "stack_id", "stage", "last_number"], highest)
        )


def downgrade() -> None:
    op.drop_table("record_counters")
