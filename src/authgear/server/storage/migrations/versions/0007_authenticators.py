"""authenticators (TOTP, recovery codes, passkeys), trusted devices, sign-in flows bound to a
browser with a revision, acr and reauthentication on codes

Revision ID: 0007
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "authenticators",
        sa.Column("id", sa.String(length=36), primary_key=True),
        sa.Column(
            "user_id",
            sa.String(length=36),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.Column("secret", sa.Text(), nullable=True),
        sa.Column("counter", sa.BigInteger(), nullable=True),
        sa.Column("credential_id", sa.String(length=1400), nullable=True, unique=True),
        sa.Column("public_key", sa.Text(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("last_used_at", sa.BigInteger(), nullable=True),
    )
    op.create_index(
        "ix_authenticators_user_id_kind", "authenticators", ["user_id", "kind"], unique=False
    )
    op.create_table(
        "mfa_device_tokens",
        sa.Column("token_hash", sa.String(length=64), primary_key=True),
        sa.Column(
            "user_id",
            sa.String(length=36),
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_mfa_device_tokens_user_id", "mfa_device_tokens", ["user_id"])
    op.create_index("ix_mfa_device_tokens_expires_at", "mfa_device_tokens", ["expires_at"])
    with op.batch_alter_table("users") as batch_op:
        batch_op.add_column(
            sa.Column("authenticator_count", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("auth_codes") as batch_op:
        batch_op.add_column(sa.Column("acr", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("reauth_grant_id", sa.String(length=36), nullable=True))
    with op.batch_alter_table("auth_flows") as batch_op:
        batch_op.add_column(sa.Column("binding", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("rev", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("auth_flows") as batch_op:
        batch_op.drop_column("rev")
        batch_op.drop_column("binding")
    with op.batch_alter_table("auth_codes") as batch_op:
        batch_op.drop_column("reauth_grant_id")
        batch_op.drop_column("acr")
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_column("authenticator_count")
    op.drop_index("ix_mfa_device_tokens_expires_at", table_name="mfa_device_tokens")
    op.drop_index("ix_mfa_device_tokens_user_id", table_name="mfa_device_tokens")
    op.drop_table("mfa_device_tokens")
    op.drop_index("ix_authenticators_user_id_kind", table_name="authenticators")
    op.drop_table("authenticators")
