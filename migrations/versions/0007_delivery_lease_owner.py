"""Delivery: an owner for each chat's lease, and publishing checked against the attempt

A worker whose lease ran out (a stalled process, a slow call) must not renew, release or
act on a lease another worker has taken since, so each lease carries a random token of
the worker that took it. `publish_deliveries` now takes each message's attempt number and
publishes a message only while it is undelivered and still on that attempt.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UNDELIVERED = "('pending', 'failed_waiting_for_retry')"
OLD_SIGNATURE = "bigint[], bigint[], bigint[], text[], timestamptz[]"


def _publish_deliveries(with_attempts: bool) -> str:
    attempts_argument = ", attempt_numbers integer[]" if with_attempts else ""
    attempt_check = (
        f"AND m.status IN {UNDELIVERED} AND m.attempts = attempt_numbers[i]"
        if with_attempts
        else ""
    )
    return f"""
        CREATE FUNCTION publish_deliveries(
            message_ids bigint[], chat_ids bigint[], profile_ids bigint[], mids text[],
            posted_ats timestamptz[]{attempts_argument}
        ) RETURNS SETOF delivery_head
        LANGUAGE plpgsql AS $$
        BEGIN
            FOR i IN 1 .. coalesce(array_length(message_ids, 1), 0) LOOP
                UPDATE chats
                SET last_outbound_at = greatest(last_outbound_at, posted_ats[i]),
                    last_message_at = greatest(last_message_at, posted_ats[i])
                WHERE id = chat_ids[i];
                -- Only the attempt that holds the message publishes it: one a later attempt
                -- took over, or an echo published meanwhile, is left as it is.
                PERFORM 1 FROM messages m WHERE m.id = message_ids[i] {attempt_check}
                FOR UPDATE;
                CONTINUE WHEN NOT FOUND;
                -- An echo that arrived first and matched no in-flight message was stored
                -- on its own; it is this message, so that copy goes (mids are unique per
                -- profile).
                DELETE FROM messages m
                WHERE m.profile_id = profile_ids[i] AND m.external_id = mids[i]
                    AND m.id <> message_ids[i] AND m.direction = 'outbound';
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
    """


def upgrade() -> None:
    op.add_column("chats", sa.Column("delivery_lease_owner", sa.BigInteger()))
    op.execute(f"DROP FUNCTION publish_deliveries({OLD_SIGNATURE})")
    op.execute(_publish_deliveries(with_attempts=True))


def downgrade() -> None:
    op.execute(f"DROP FUNCTION publish_deliveries({OLD_SIGNATURE}, integer[])")
    op.execute(_publish_deliveries(with_attempts=False))
    op.drop_column("chats", "delivery_lease_owner")
