"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21 19:34:14.119518
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("api_key_id", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("request_hash", sa.Text(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("api_key_id", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(
        op.f("ix_idempotency_keys_created_at"), "idempotency_keys", ["created_at"], unique=False
    )
    op.create_table(
        "profile_groups",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profile_groups")),
        sa.UniqueConstraint("name", name=op.f("uq_profile_groups_name")),
    )
    op.create_table(
        "api_keys",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.Text(), nullable=False),
        sa.Column("profile_group_id", sa.BigInteger(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["profile_group_id"],
            ["profile_groups.id"],
            name=op.f("fk_api_keys_profile_group_id_profile_groups"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_keys_token_hash")),
    )
    op.create_table(
        "profiles",
        sa.Column("profile_group_id", sa.BigInteger(), nullable=False),
        sa.Column("platform", sa.Text(), server_default="instagram", nullable=False),
        sa.Column("platform_id", sa.Text(), nullable=False),
        sa.Column("username", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("connection", sa.Text(), nullable=False),
        sa.Column("page_id", sa.Text(), nullable=True),
        sa.Column("access_token_encrypted", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="active", nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "connection = 'instagram_login' OR page_id IS NOT NULL",
            name=op.f("ck_profiles_page_id_for_facebook"),
        ),
        sa.CheckConstraint(
            "connection IN ('instagram_login', 'facebook_login')",
            name=op.f("ck_profiles_connection"),
        ),
        sa.CheckConstraint(
            "status IN ('active', 'expired', 'inactive')", name=op.f("ck_profiles_status")
        ),
        sa.ForeignKeyConstraint(
            ["profile_group_id"],
            ["profile_groups.id"],
            name=op.f("fk_profiles_profile_group_id_profile_groups"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_profiles")),
        sa.UniqueConstraint(
            "platform", "platform_id", name=op.f("uq_profiles_platform_platform_id")
        ),
    )
    op.create_index(
        op.f("ix_profiles_profile_group_id"), "profiles", ["profile_group_id"], unique=False
    )
    op.create_table(
        "chats",
        sa.Column("profile_id", sa.BigInteger(), nullable=False),
        sa.Column("participant_external_id", sa.Text(), nullable=False),
        sa.Column("external_conversation_id", sa.Text(), nullable=True),
        sa.Column("participant_name", sa.Text(), nullable=True),
        sa.Column("participant_username", sa.Text(), nullable=True),
        sa.Column("participant_avatar_url", sa.Text(), nullable=True),
        sa.Column("last_inbound_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_outbound_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_message_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("archived", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_chats_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chats")),
        sa.UniqueConstraint(
            "profile_id",
            "participant_external_id",
            name=op.f("uq_chats_profile_id_participant_external_id"),
        ),
    )
    op.create_index(
        "ix_chats_external_conversation_id", "chats", ["external_conversation_id"], unique=False
    )
    op.create_index(
        "ix_chats_profile_last_message",
        "chats",
        ["profile_id", "last_message_at", "id"],
        unique=False,
        postgresql_ops={"last_message_at": "DESC NULLS LAST", "id": "DESC"},
    )
    op.create_table(
        "messages",
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("profile_id", sa.BigInteger(), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("tag", sa.Text(), nullable=True),
        sa.Column("attachment", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("reply_to_external_id", sa.Text(), nullable=True),
        sa.Column("external_id", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_details", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("platform_data", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("external_posted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("external_read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("external_edited_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("external_deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "sort_at",
            sa.DateTime(timezone=True),
            sa.Computed("COALESCE(external_posted_at, created_at)", persisted=True),
            nullable=False,
        ),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "direction IN ('inbound', 'outbound')", name=op.f("ck_messages_direction")
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'published', 'failed_waiting_for_retry', 'failed', 'received')",
            name=op.f("ck_messages_status"),
        ),
        sa.ForeignKeyConstraint(
            ["chat_id"], ["chats.id"], name=op.f("fk_messages_chat_id_chats"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_messages_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
    )
    op.create_index(
        "ix_messages_chat_sort",
        "messages",
        ["chat_id", "sort_at", "id"],
        unique=False,
        postgresql_ops={"sort_at": "DESC", "id": "DESC"},
    )
    op.create_index("ix_messages_external_id", "messages", ["external_id"], unique=False)
    op.create_index(
        "ix_messages_undelivered",
        "messages",
        ["chat_id", "id"],
        unique=False,
        postgresql_where="status IN ('pending', 'failed_waiting_for_retry')",
    )
    op.create_index(
        "uq_messages_profile_external_id", "messages", ["profile_id", "external_id"], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_messages_profile_external_id", table_name="messages")
    op.drop_index(
        "ix_messages_undelivered",
        table_name="messages",
        postgresql_where="status IN ('pending', 'failed_waiting_for_retry')",
    )
    op.drop_index("ix_messages_external_id", table_name="messages")
    op.drop_index(
        "ix_messages_chat_sort",
        table_name="messages",
        postgresql_ops={"sort_at": "DESC", "id": "DESC"},
    )
    op.drop_table("messages")
    op.drop_index(
        "ix_chats_profile_last_message",
        table_name="chats",
        postgresql_ops={"last_message_at": "DESC NULLS LAST", "id": "DESC"},
    )
    op.drop_index("ix_chats_external_conversation_id", table_name="chats")
    op.drop_table("chats")
    op.drop_index(op.f("ix_profiles_profile_group_id"), table_name="profiles")
    op.drop_table("profiles")
    op.drop_table("api_keys")
    op.drop_table("profile_groups")
    op.drop_index(op.f("ix_idempotency_keys_created_at"), table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
