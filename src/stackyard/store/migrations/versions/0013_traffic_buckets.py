"""traffic buckets: a stage's requests per minute and release, kept for the retention.

Revision ID: 0013
Revises: 0012

The traffic counter (deploy/trafficstore.py) folds the router's access logs into minute
buckets (counts per status class, latency in log-scale bins) and remembers how far it has
read each log file, in the same transaction. Existing platforms start empty: the first
count reads the logs the router still keeps.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "traffic_buckets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "stack_id", sa.Integer(), sa.ForeignKey("stacks.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("stage", sa.String(63), nullable=False),
        sa.Column("minute", sa.Integer(), nullable=False),
        sa.Column("release", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("status_2xx", sa.Integer(), nullable=False),
        sa.Column("status_3xx", sa.Integer(), nullable=False),
        sa.Column("status_4xx", sa.Integer(), nullable=False),
        sa.Column("status_5xx", sa.Integer(), nullable=False),
        sa.Column("latency", sa.JSON(), nullable=False),
        sa.UniqueConstraint("stack_id", "stage", "minute", "release"),
    )
    op.create_index("ix_traffic_buckets_minute", "traffic_buckets", ["minute"])
    op.create_table(
        "access_log_positions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("device", sa.BigInteger(), nullable=False),
        sa.Column("inode", sa.BigInteger(), nullable=False),
        sa.Column("head", sa.String(64), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("device", "inode"),
    )


def downgrade() -> None:
    op.drop_table("access_log_positions")
    op.drop_index("ix_traffic_buckets_minute", table_name="traffic_buckets")
    op.drop_table("traffic_buckets")
