"""stage domains: a route's further host names and TLS mode, and the names added by hand.

Revision ID: 0011
Revises: 0010

``aliases`` and ``tls`` are what the router was last told to serve (beside ``host``);
``added_domains`` are the names `stackyard domains add` gave the stage, kept across
deployments. Existing routes keep plain HTTP.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stage_routes") as table:
        table.add_column(sa.Column("aliases", sa.JSON(), nullable=False, server_default="[]"))
        table.add_column(sa.Column("tls", sa.String(16), nullable=False, server_default="off"))
        table.add_column(sa.Column("added_domains", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("stage_routes") as table:
        table.drop_column("added_domains")
        table.drop_column("tls")
        table.drop_column("aliases")
