"""Tracing: the trace context a send was accepted in

- messages.traceparent: the W3C `traceparent` of the API request that accepted the message,
  set only while tracing is on (app/core/tracing.py), so that the worker's send and Meta's
  echo join that request's trace. Sends are batched per chat, so the context travels with
  each message, not with the job.
- The composite type `send_head` gains it at its end and `send_head` selects it (as
  migration 0011 did for its columns); `publish_sends` returns `send_head` rows, so it
  follows unchanged.

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

UNDELIVERED = "('pending', 'failed_waiting_for_retry')"


def _send_head(extra: str) -> str:
    """Migration 0011's head query, selecting `extra` columns at its end."""
    return f"""
        CREATE OR REPLACE FUNCTION send_head(chat bigint) RETURNS SETOF send_head
        LANGUAGE sql STABLE AS $$
            SELECT m.id, m.chat_id, m.profile_id, m.body, m.tag, m.attachment,
                m.reply_to_external_id, m.attempts, m.claimed_until, m.next_attempt_at,
                c.participant_external_id, p.connection, p.platform_id, p.page_id,
                p.access_token_encrypted, m.interactive, m.external_comment_id{extra}
            FROM messages m
            JOIN chats c ON c.id = m.chat_id
            JOIN profiles p ON p.id = m.profile_id
            WHERE m.chat_id = chat AND m.direction = 'outbound' AND m.status IN {UNDELIVERED}
            ORDER BY m.id
            LIMIT 1
        $$
    """


def upgrade() -> None:
    op.add_column("messages", sa.Column("traceparent", sa.Text()))
    op.execute("ALTER TYPE send_head ADD ATTRIBUTE traceparent text")
    op.execute(_send_head(", m.traceparent"))


def downgrade() -> None:
    op.execute("ALTER TYPE send_head DROP ATTRIBUTE traceparent")
    op.execute(_send_head(""))
    op.drop_column("messages", "traceparent")
