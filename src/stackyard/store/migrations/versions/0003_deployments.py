"""stage routes and deployments.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _stack_id() -> sa.Column[int]:
    return sa.Column(
        "stack_id",
        sa.Integer(),
        sa.ForeignKey("stacks.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    )


def upgrade() -> None:
    op.create_table(
        "stage_routes",
        sa.Column("id", sa.Integer(), primary_key=True),
        _stack_id(),
        sa.Column("stage", sa.String(63), nullable=False),
        sa.Column("port", sa.Integer(), nullable=True, unique=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.UniqueConstraint("stack_id", "stage"),
    )
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), primary_key=True),
        _stack_id(),
        sa.Column("stage", sa.String(63), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("release_number", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("trigger", sa.String(64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("tasks_started", sa.Integer(), nullable=False),
        sa.Column("tasks_healthy", sa.Integer(), nullable=False),
        sa.Column("tasks_routed", sa.Integer(), nullable=False),
        sa.Column("tasks_stopped", sa.Integer(), nullable=False),
        sa.Column("desired", sa.Integer(), nullable=False),
        sa.Column("log_path", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("stack_id", "stage", "number"),
    )


def downgrade() -> None:
    op.drop_table("deployments")
    op.drop_table("stage_routes")
