"""Interactive content and actions: what an outbound message was sent with
(`messages.interactive`: quick replies, buttons, card, elements) and the comment a private
reply answers (`messages.external_comment_id`), both carried to the sender by `send_head`;
comments from the `comments` webhook field (table `comments`); archived chats kept out of
lists by an index and counted by a trigger (`profiles.archived_chat_count`, beside migration
0004's `chat_count`).

The composite type `send_head` gains the columns at its end and the function selects them;
`publish_sends` returns `send_head` rows (`h.*`), so it follows unchanged.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

UNDELIVERED = "('pending', 'failed_waiting_for_retry')"


def _send_head(extra: str) -> str:
    """Migration 0005's head query (renamed by 0008), selecting `extra` columns at its end."""
    return f"""
        CREATE OR REPLACE FUNCTION send_head(chat bigint) RETURNS SETOF send_head
        LANGUAGE sql STABLE AS $$
            SELECT m.id, m.chat_id, m.profile_id, m.body, m.tag, m.attachment,
                m.reply_to_external_id, m.attempts, m.claimed_until, m.next_attempt_at,
                c.participant_external_id, p.connection, p.platform_id, p.page_id,
                p.access_token_encrypted{extra}
            FROM messages m
            JOIN chats c ON c.id = m.chat_id
            JOIN profiles p ON p.id = m.profile_id
            WHERE m.chat_id = chat AND m.direction = 'outbound' AND m.status IN {UNDELIVERED}
            ORDER BY m.id
            LIMIT 1
        $$
    """


# Row-level, but only for rows that are or were archived (the WHEN clauses): a bulk insert of
# new chats runs no trigger at all.
COUNT_ARCHIVED = """
    CREATE FUNCTION count_archived_chats() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'DELETE' AND NEW.archived THEN
            UPDATE profiles SET archived_chat_count = archived_chat_count + 1
            WHERE id = NEW.profile_id;
        END IF;
        IF TG_OP <> 'INSERT' AND OLD.archived THEN
            UPDATE profiles SET archived_chat_count = archived_chat_count - 1
            WHERE id = OLD.profile_id;
        END IF;
        RETURN NULL;
    END $$
"""
ARCHIVED_TRIGGERS = {
    "count_archived_chats_insert": "INSERT ON chats FOR EACH ROW WHEN (NEW.archived)",
    "count_archived_chats_update": (
        "UPDATE OF archived ON chats FOR EACH ROW WHEN (OLD.archived IS DISTINCT FROM NEW.archived)"
    ),
    "count_archived_chats_delete": "DELETE ON chats FOR EACH ROW WHEN (OLD.archived)",
}


def _chat_list_index(*columns: str) -> None:
    op.drop_index("ix_chats_profile_last_message", table_name="chats")
    op.create_index(
        "ix_chats_profile_last_message",
        "chats",
        ["profile_id", *columns, sa.text("last_message_at DESC NULLS LAST"), sa.text("id DESC")],
    )


def upgrade() -> None:
    op.add_column("messages", sa.Column("interactive", JSONB()))
    op.add_column("messages", sa.Column("external_comment_id", sa.Text()))
    op.execute("ALTER TYPE send_head ADD ATTRIBUTE interactive jsonb")
    op.execute("ALTER TYPE send_head ADD ATTRIBUTE external_comment_id text")
    op.execute(_send_head(", m.interactive, m.external_comment_id"))

    op.add_column(
        "profiles",
        sa.Column("archived_chat_count", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.execute(
        "UPDATE profiles SET archived_chat_count = "
        "(SELECT count(*) FROM chats WHERE chats.profile_id = profiles.id AND chats.archived)"
    )
    op.execute(COUNT_ARCHIVED)
    for name, when in ARCHIVED_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} AFTER {when} EXECUTE FUNCTION count_archived_chats()")
    _chat_list_index("archived")

    op.create_table(
        "comments",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("profile_id", sa.BigInteger(), nullable=False),
        sa.Column("external_id", sa.Text(), nullable=False),
        sa.Column("post_external_id", sa.Text()),
        sa.Column("parent_external_id", sa.Text()),
        sa.Column("media_product_type", sa.Text()),
        sa.Column("author_external_id", sa.Text()),
        sa.Column("author_username", sa.Text()),
        sa.Column("body", sa.Text()),
        sa.Column("commented_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("private_reply_message_id", sa.BigInteger()),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comments")),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_comments_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["private_reply_message_id"],
            ["messages.id"],
            name=op.f("fk_comments_private_reply_message_id_messages"),
            ondelete="SET NULL",
        ),
    )
    op.create_index(
        "uq_comments_profile_external_id", "comments", ["profile_id", "external_id"], unique=True
    )


def downgrade() -> None:
    _chat_list_index()
    for name in ARCHIVED_TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON chats")
    op.execute("DROP FUNCTION count_archived_chats()")
    op.drop_column("profiles", "archived_chat_count")
    op.drop_table("comments")
    op.execute("ALTER TYPE send_head DROP ATTRIBUTE external_comment_id")
    op.execute("ALTER TYPE send_head DROP ATTRIBUTE interactive")
    op.execute(_send_head(""))
    op.drop_column("messages", "external_comment_id")
    op.drop_column("messages", "interactive")
