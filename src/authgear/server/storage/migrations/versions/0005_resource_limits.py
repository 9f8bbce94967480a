"""resource limits: login flows remember who started them; indexes for the batched purge

Revision ID: 0005
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None

# (index, table, columns) created by this revision.
INDEXES = (
    ("ix_auth_flows_ip_key_expires_at", "auth_flows", ["ip_key", "expires_at"]),
    ("ix_auth_flows_expires_at", "auth_flows", ["expires_at"]),
    ("ix_auth_codes_expires_at", "auth_codes", ["expires_at"]),
    ("ix_offline_grants_expires_at", "offline_grants", ["expires_at"]),
    ("ix_idp_sessions_expires_at", "idp_sessions", ["expires_at"]),
    ("ix_login_failures_first_at", "login_failures", ["first_at"]),
    ("ix_audit_log_at", "audit_log", ["at"]),
)


def upgrade() -> None:
    with op.batch_alter_table("auth_flows") as batch_op:
        batch_op.add_column(sa.Column("ip_key", sa.String(length=64), nullable=True))
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    with op.batch_alter_table("auth_flows") as batch_op:
        batch_op.drop_column("ip_key")
