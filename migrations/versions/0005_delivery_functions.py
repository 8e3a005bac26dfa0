"""Delivery functions: a chat's next message to send, and publishing one in a round trip

The worker used to read a chat's head, then publish it with two statements (message, then
chat), each a round trip. `publish_deliveries` does both for many messages at once, each
chat before its message (the order inbound processing locks them in, so the two never
deadlock), and answers with each chat's next head.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UNDELIVERED = "('pending', 'failed_waiting_for_retry')"


def upgrade() -> None:
    op.execute("""
        CREATE TYPE delivery_head AS (
            id bigint, chat_id bigint, profile_id bigint, body text, tag text,
            attachment jsonb, reply_to_external_id text, attempts integer,
            claimed_until timestamptz, next_attempt_at timestamptz,
            participant_external_id text, connection text, platform_id text, page_id text,
            access_token_encrypted text
        )
    """)
    # The chat's oldest undelivered outbound message, with what sending it needs.
    op.execute(f"""
        CREATE FUNCTION delivery_head(chat bigint) RETURNS SETOF delivery_head
        LANGUAGE sql STABLE AS $$
            SELECT m.id, m.chat_id, m.profile_id, m.body, m.tag, m.attachment,
                m.reply_to_external_id, m.attempts, m.claimed_until, m.next_attempt_at,
                c.participant_external_id, p.connection, p.platform_id, p.page_id,
                p.access_token_encrypted
            FROM messages m
            JOIN chats c ON c.id = m.chat_id
            JOIN profiles p ON p.id = m.profile_id
            WHERE m.chat_id = chat AND m.direction = 'outbound' AND m.status IN {UNDELIVERED}
            ORDER BY m.id
            LIMIT 1
        $$
    """)
    # Arrays, one element per message: a worker publishes what its chats sent meanwhile
    # in one round trip and one commit.
    op.execute("""
        CREATE FUNCTION publish_deliveries(
            message_ids bigint[], chat_ids bigint[], profile_ids bigint[], mids text[],
            posted_ats timestamptz[]
        ) RETURNS SETOF delivery_head
        LANGUAGE plpgsql AS $$
        BEGIN
            FOR i IN 1 .. coalesce(array_length(message_ids, 1), 0) LOOP
                UPDATE chats
                SET last_outbound_at = greatest(last_outbound_at, posted_ats[i]),
                    last_message_at = greatest(last_message_at, posted_ats[i])
                WHERE id = chat_ids[i];
                -- An echo that arrived first and matched no in-flight message was stored
                -- on its own; it is this message, so that copy goes (mids are unique per
                -- profile).
                IF EXISTS (
                    SELECT 1 FROM messages m
                    WHERE m.profile_id = profile_ids[i] AND m.external_id = mids[i]
                        AND m.id <> message_ids[i] AND m.direction = 'outbound'
                ) THEN
                    DELETE FROM messages m
                    WHERE m.profile_id = profile_ids[i] AND m.external_id = mids[i]
                        AND m.id <> message_ids[i] AND m.direction = 'outbound';
                END IF;
                UPDATE messages m
                SET status = 'published', external_id = mids[i],
                    external_posted_at = coalesce(m.external_posted_at, posted_ats[i]),
                    claimed_until = NULL, next_attempt_at = NULL,
                    error_message = NULL, error_details = NULL
                WHERE m.id = message_ids[i];
            END LOOP;
            RETURN QUERY SELECT h.* FROM unnest(chat_ids) AS c(id), LATERAL delivery_head(c.id) h;
        END
        $$
    """)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION publish_deliveries(bigint[], bigint[], bigint[], text[], timestamptz[])"
    )
    op.execute("DROP FUNCTION delivery_head(bigint)")
    op.execute("DROP TYPE delivery_head")
