"""inbound: stored webhook deliveries and events, customer events, message content

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="received", nullable=False),
        sa.Column("problems", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.CheckConstraint(
            "status IN ('received', 'processed', 'unparseable')",
            name=op.f("ck_webhook_deliveries_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(
        "ix_webhook_deliveries_received",
        "webhook_deliveries",
        ["id"],
        postgresql_where="status = 'received'",
    )
    op.create_table(
        "inbound_events",
        sa.Column("delivery_id", sa.BigInteger(), nullable=True),
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("participant_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("mid", sa.Text(), nullable=True),
        sa.Column("dedupe_key", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'waiting', 'applied', 'ignored', 'failed')",
            name=op.f("ck_inbound_events_status"),
        ),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_deliveries.id"],
            name=op.f("fk_inbound_events_delivery_id_webhook_deliveries"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_events")),
    )
    op.create_index(
        "uq_inbound_events_account_dedupe",
        "inbound_events",
        ["account_id", "dedupe_key"],
        unique=True,
    )
    op.create_index(
        "ix_inbound_events_open",
        "inbound_events",
        ["account_id", "participant_id", "occurred_at"],
        postgresql_where="status IN ('pending', 'waiting')",
    )
    op.create_table(
        "customer_events",
        sa.Column("profile_id", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_customer_events_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_events")),
    )
    op.create_index("ix_customer_events_profile", "customer_events", ["profile_id", "id"])

    jsonb = postgresql.JSONB(astext_type=sa.Text())
    for column in ("attachments", "reactions", "tapped_action", "story_reply", "referral"):
        op.add_column("messages", sa.Column(column, jsonb, nullable=True))
    op.add_column(
        "messages",
        sa.Column("is_unsupported", sa.Boolean(), server_default="false", nullable=False),
    )
    op.add_column(
        "chats", sa.Column("participant_synced_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("chats", sa.Column("participant_sync_error", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("chats", "participant_sync_error")
    op.drop_column("chats", "participant_synced_at")
    for column in (
        "is_unsupported",
        "referral",
        "story_reply",
        "tapped_action",
        "reactions",
        "attachments",
    ):
        op.drop_column("messages", column)
    op.drop_index("ix_customer_events_profile", table_name="customer_events")
    op.drop_table("customer_events")
    op.drop_index("ix_inbound_events_open", table_name="inbound_events")
    op.drop_index("uq_inbound_events_account_dedupe", table_name="inbound_events")
    op.drop_table("inbound_events")
    op.drop_index("ix_webhook_deliveries_received", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
