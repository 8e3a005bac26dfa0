"""Accounts: what connecting with Instagram Login, keeping tokens alive and backfilling need

- profiles.avatar_url: the account's picture, from Meta on connect and refresh;
- profiles.token_issued_at: when the stored token was issued or last refreshed (Meta refreshes
  only long-lived tokens at least 24 h old);
- profiles.appsecret_proof: send appsecret_proof with an Instagram Login token (always sent
  with a Page token);
- chat_syncs: backfill runs; at most one open (pending or running) per profile.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TRIGGERS = "('connect', 'scheduled', 'backfill')"
NOW = sa.text("now()")
STATUSES = "('pending', 'running', 'completed', 'failed')"


def upgrade() -> None:
    op.add_column("profiles", sa.Column("avatar_url", sa.Text()))
    op.add_column("profiles", sa.Column("token_issued_at", sa.DateTime(timezone=True)))
    op.add_column(
        "profiles",
        sa.Column("appsecret_proof", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_table(
        "chat_syncs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("profile_id", sa.BigInteger(), nullable=False),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("backfill_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("chats_seen", sa.Integer(), server_default="0", nullable=False),
        sa.Column("messages_imported", sa.Integer(), server_default="0", nullable=False),
        sa.Column("oldest_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_chat_syncs_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_syncs")),
        sa.CheckConstraint(f"trigger IN {TRIGGERS}", name=op.f("ck_chat_syncs_trigger")),
        sa.CheckConstraint(f"status IN {STATUSES}", name=op.f("ck_chat_syncs_status")),
    )
    op.create_index("ix_chat_syncs_profile", "chat_syncs", ["profile_id", "id"])
    # One open sync per profile, in the database itself: two requests cannot both start one.
    op.create_index(
        "uq_chat_syncs_open",
        "chat_syncs",
        ["profile_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('pending', 'running')"),
    )


def downgrade() -> None:
    op.drop_table("chat_syncs")
    op.drop_column("profiles", "appsecret_proof")
    op.drop_column("profiles", "token_issued_at")
    op.drop_column("profiles", "avatar_url")
