"""Interactive content and actions: what an outbound message was sent with
(`messages.interactive`: quick replies, buttons, card, elements), carried to the sender by
`send_head`.

The composite type `send_head` gains the column at its end and the function selects it;
`publish_sends` returns `send_head` rows (`h.*`), so it follows unchanged.

Revision ID: 0011
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0011"
down_revision = "0009"
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


def upgrade() -> None:
    op.add_column("messages", sa.Column("interactive", JSONB()))
    op.execute("ALTER TYPE send_head ADD ATTRIBUTE interactive jsonb")
    op.execute(_send_head(", m.interactive"))


def downgrade() -> None:
    op.execute("ALTER TYPE send_head DROP ATTRIBUTE interactive")
    op.execute(_send_head(""))
    op.drop_column("messages", "interactive")
