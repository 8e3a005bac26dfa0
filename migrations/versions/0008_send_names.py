"""Sends: outbound names ("delivery" is a webhook's), and one way to mark a message published

Renames (metadata only): chats.delivery_lease_until and delivery_lease_owner become
send_lease_until and send_lease_owner; the type and function delivery_head become send_head;
publish_deliveries becomes publish_sends.

`publish_send` is the one statement that marks an outbound message published: the send's
answer (publish_sends) and its echo (app/inbound/service.py:apply_echo) both call it, so a
message published by its echo loses its retry error as one published by the answer does.
PL/pgSQL, so that its plan is cached as the inlined statement's was.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UNDELIVERED = "('pending', 'failed_waiting_for_retry')"
ARRAYS = "bigint[], bigint[], bigint[], text[], timestamptz[], integer[]"

PUBLISH_SEND = f"""
    CREATE FUNCTION publish_send(message_id bigint, mid text, posted_at timestamptz)
    RETURNS void
    LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE messages m
        SET status = 'published', external_id = mid,
            external_posted_at = coalesce(m.external_posted_at, posted_at),
            claimed_until = NULL, next_attempt_at = NULL,
            error_message = NULL, error_details = NULL, updated_at = now()
        WHERE m.id = message_id AND m.status IN {UNDELIVERED};
    END
    $$
"""


def _publish_many(name: str, head: str, publish: str) -> str:
    """Migration 0007's publish_deliveries, under `name`, answering with `head`'s rows and
    marking each message published by `publish`."""
    return f"""
        CREATE FUNCTION {name}(
            message_ids bigint[], chat_ids bigint[], profile_ids bigint[], mids text[],
            posted_ats timestamptz[], attempt_numbers integer[]
        ) RETURNS SETOF {head}
        LANGUAGE plpgsql AS $$
        BEGIN
            FOR i IN 1 .. coalesce(array_length(message_ids, 1), 0) LOOP
                UPDATE chats
                SET last_outbound_at = greatest(last_outbound_at, posted_ats[i]),
                    last_message_at = greatest(last_message_at, posted_ats[i])
                WHERE id = chat_ids[i];
                -- Only the attempt that holds the message publishes it: one a later attempt
                -- took over, or an echo published meanwhile, is left as it is.
                PERFORM 1 FROM messages m
                WHERE m.id = message_ids[i] AND m.status IN {UNDELIVERED}
                    AND m.attempts = attempt_numbers[i]
                FOR UPDATE;
                CONTINUE WHEN NOT FOUND;
                -- An echo that arrived first and matched no in-flight message was stored
                -- on its own; it is this message, so that copy goes (mids are unique per
                -- profile).
                DELETE FROM messages m
                WHERE m.profile_id = profile_ids[i] AND m.external_id = mids[i]
                    AND m.id <> message_ids[i] AND m.direction = 'outbound';
                {publish}
            END LOOP;
            RETURN QUERY SELECT h.* FROM unnest(chat_ids) AS c(id), LATERAL {head}(c.id) h;
        END
        $$
    """


PUBLISH_SENDS = _publish_many(
    "publish_sends", "send_head", "PERFORM publish_send(message_ids[i], mids[i], posted_ats[i]);"
)
# Migration 0007's, restored by the downgrade.
PUBLISH_DELIVERIES = _publish_many(
    "publish_deliveries",
    "delivery_head",
    """UPDATE messages m
                SET status = 'published', external_id = mids[i],
                    external_posted_at = coalesce(m.external_posted_at, posted_ats[i]),
                    claimed_until = NULL, next_attempt_at = NULL,
                    error_message = NULL, error_details = NULL
                WHERE m.id = message_ids[i];""",
)


def upgrade() -> None:
    op.alter_column("chats", "delivery_lease_until", new_column_name="send_lease_until")
    op.alter_column("chats", "delivery_lease_owner", new_column_name="send_lease_owner")
    op.execute(f"DROP FUNCTION publish_deliveries({ARRAYS})")
    op.execute("ALTER TYPE delivery_head RENAME TO send_head")
    op.execute("ALTER FUNCTION delivery_head(bigint) RENAME TO send_head")
    op.execute(PUBLISH_SEND)
    op.execute(PUBLISH_SENDS)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION publish_sends({ARRAYS})")
    op.execute("DROP FUNCTION publish_send(bigint, text, timestamptz)")
    op.execute("ALTER FUNCTION send_head(bigint) RENAME TO delivery_head")
    op.execute("ALTER TYPE send_head RENAME TO delivery_head")
    op.execute(PUBLISH_DELIVERIES)
    op.alter_column("chats", "send_lease_owner", new_column_name="delivery_lease_owner")
    op.alter_column("chats", "send_lease_until", new_column_name="delivery_lease_until")
