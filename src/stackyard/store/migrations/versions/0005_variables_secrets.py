"""variables, secrets and every encrypted secret version.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
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
        "variables",
        sa.Column("id", sa.Integer(), primary_key=True),
        _stack_id(),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(63), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("stack_id", "kind", "stage", "name"),
    )
    op.create_table(
        "secrets",
        sa.Column("id", sa.Integer(), primary_key=True),
        _stack_id(),
        sa.Column("stage", sa.String(63), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("stack_id", "stage", "name"),
    )
    op.create_table(
        "secret_versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        _stack_id(),
        sa.Column("stage", sa.String(63), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("stack_id", "name", "version"),
    )


def downgrade() -> None:
    op.drop_table("secret_versions")
    op.drop_table("secrets")
    op.drop_table("variables")
