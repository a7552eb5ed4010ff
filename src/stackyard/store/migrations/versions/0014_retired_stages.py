"""retired stages: a stage stackyard.yml no longer lists, stopped by `stackyard stages remove`.

Revision ID: 0014
Revises: 0013

A stage left out of stackyard.yml keeps running what it runs (a mistake there must not
take a serving stage down); `stackyard stages remove` stops it, and this row keeps it
stopped: the controller does not adopt it again at start, and it is no longer one of the
stack's stages. Its releases and deployments stay, as history. A later release to a
stage of that name (stackyard.yml lists it again) removes the row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retired_stages",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "stack_id", sa.Integer(), sa.ForeignKey("stacks.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("stage", sa.String(63), nullable=False),
        sa.Column("retired_by", sa.String(255), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("stack_id", "stage"),
    )


def downgrade() -> None:
    op.drop_table("retired_stages")
