"""device authorization grant (RFC 8628): device codes and the shared counters

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_codes",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("device_code_hash", sa.String(length=64), nullable=False),
        sa.Column("user_code_hash", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=200), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("poll_interval", sa.Integer(), nullable=False),
        sa.Column("last_poll_at", sa.BigInteger(), nullable=True),
        sa.Column("last_poll_too_fast", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failures_base", sa.BigInteger(), nullable=False),
        sa.Column("request_ip", sa.String(length=64), nullable=True),
        sa.Column("request_user_agent", sa.String(length=512), nullable=True),
        sa.Column("user_id", sa.String(length=36), nullable=True),
        sa.Column("idp_session_id", sa.String(length=36), nullable=True),
        sa.Column("auth_time", sa.BigInteger(), nullable=True),
        sa.Column("amr", sa.JSON(), nullable=False),
        sa.Column("decided_at", sa.BigInteger(), nullable=True),
        sa.Column("issued_grant_id", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_code_hash"),
        sa.UniqueConstraint("user_code_hash"),
    )
    op.create_index("ix_device_codes_expires_at", "device_codes", ["expires_at"], unique=False)
    op.create_index("ix_device_codes_user_id", "device_codes", ["user_id"], unique=False)
    op.create_table(
        "counters",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("counters")
    op.drop_index("ix_device_codes_user_id", table_name="device_codes")
    op.drop_index("ix_device_codes_expires_at", table_name="device_codes")
    op.drop_table("device_codes")
