"""people: people and their roles, scoped tokens, protected stages, the audit log.

Revision ID: 0008
Revises: 0007

Runs get who pushed them and gates who approved them. The existing admin token is not
in the database yet: the platform registers it at its next start as the bootstrap admin
token of a person named ``admin`` (``access.people.ensure_bootstrap``), so existing
remotes, webhooks and scripts keep working until that token is revoked.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "people",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(40), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False, server_default=""),
        sa.Column("last_seen_at", UTC_TIME, nullable=True),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column(
            "person_id",
            sa.Integer(),
            sa.ForeignKey("people.id", ondelete="SET NULL"),
            nullable=True,
            index=True,
        ),
        sa.Column("owner", sa.String(40), nullable=False),
        sa.Column("label", sa.String(255), nullable=False, server_default=""),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column(
            "stack_id",
            sa.Integer(),
            sa.ForeignKey("stacks.id", ondelete="CASCADE"),
            nullable=True,
            index=True,
        ),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False, server_default=""),
        sa.Column("expires_at", UTC_TIME, nullable=True),
        sa.Column("revoked_at", UTC_TIME, nullable=True),
        sa.Column("revoked_by", sa.String(64), nullable=False, server_default=""),
        sa.Column("last_used_at", UTC_TIME, nullable=True),
    )
    op.create_table(
        "stage_protections",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "stack_id",
            sa.Integer(),
            sa.ForeignKey("stacks.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("stage", sa.String(63), nullable=False),
        sa.Column("approvers", sa.JSON(), nullable=False),
        sa.Column("deployers", sa.JSON(), nullable=False),
        sa.Column("four_eyes", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False, server_default=""),
        sa.UniqueConstraint("stack_id", "stage"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("at", UTC_TIME, nullable=False, index=True),
        sa.Column("actor", sa.String(128), nullable=False, server_default=""),
        sa.Column("token_id", sa.String(16), nullable=False, server_default=""),
        sa.Column("source", sa.String(64), nullable=False, server_default=""),
        sa.Column("via", sa.String(16), nullable=False, server_default=""),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("stack", sa.String(63), nullable=False, server_default="", index=True),
        sa.Column("target", sa.Text(), nullable=False, server_default=""),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("detail", sa.Text(), nullable=False, server_default=""),
    )
    if op.get_bind().dialect.name == "sqlite":
        # Append-only: an UPDATE is refused by the database itself. (Retention deletes
        # the oldest rows; nothing else deletes.)
        op.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log "
            "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
        )
    with op.batch_alter_table("pipeline_runs") as batch:
        batch.add_column(sa.Column("pushed_by", sa.String(64), nullable=False, server_default=""))
    with op.batch_alter_table("pipeline_steps") as batch:
        batch.add_column(sa.Column("approved_by", sa.String(64), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("pipeline_steps") as batch:
        batch.drop_column("approved_by")
    with op.batch_alter_table("pipeline_runs") as batch:
        batch.drop_column("pushed_by")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only")
    op.drop_table("audit_log")
    op.drop_table("stage_protections")
    op.drop_table("tokens")
    op.drop_table("people")
