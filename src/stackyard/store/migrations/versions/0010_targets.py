"""targets: targets, outside registries, a stack's registry, and where each release
came from (origin, forced).

Revision ID: 0010
Revises: 0009

Existing releases get their origin from the ``source`` text they were recorded with: a
copy of an older release is a rollback, the image of a release with a new config is a
variable change, everything else a promotion (no chosen image existed before).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "registries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("url", sa.String(255), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("password_sealed", sa.Text(), nullable=False),
        sa.Column("auth", sa.String(16), nullable=False, server_default=""),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False, server_default=""),
    )
    op.create_table(
        "targets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("engine", sa.String(16), nullable=False),
        sa.Column("endpoint", sa.String(255), nullable=False),
        sa.Column("registry", sa.String(63), nullable=True),
        sa.Column("region", sa.String(63), nullable=False, server_default=""),
        sa.Column("router", sa.String(255), nullable=False, server_default=""),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False, server_default=""),
    )
    with op.batch_alter_table("stacks") as batch:
        batch.add_column(sa.Column("registry", sa.String(63), nullable=True))
    with op.batch_alter_table("releases") as batch:
        batch.add_column(
            sa.Column("origin", sa.String(16), nullable=False, server_default="promotion")
        )
        batch.add_column(
            sa.Column("forced", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    releases = sa.table("releases", sa.column("source", sa.String), sa.column("origin", sa.String))
    op.execute(
        releases.update()
        .where(releases.c.source.like("%(copy of release %"))
        .values(origin="rollback")
    )
    op.execute(
        releases.update()
        .where(releases.c.source.like("%(image of release %"))
        .values(origin="variables")
    )


def downgrade() -> None:
    op.drop_table("targets")
    with op.batch_alter_table("stacks") as batch:
        batch.drop_column("registry")
    op.drop_table("registries")
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("forced")
        batch.drop_column("origin")
