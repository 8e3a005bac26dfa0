"""Customer webhooks: endpoints, their outbox and the delivery log; send outcomes recorded

- customer_webhooks: the endpoints (URL, event types, encrypted secret, enabled, the run of
  failures, a lease so that one worker at a time sends an endpoint's events, in order);
- customer_webhook_dispatches: the outbox, one row per endpoint and event, written by a
  statement trigger on customer_events in the transaction that records the event, which
  also NOTIFYs `customer_webhooks` with each endpoint's id (delivered at commit, never for a
  rollback);
- customer_webhook_attempts: every attempt (the API's /deliveries), kept after its event;
- customer_events.type gets a CHECK (app/events/models.py:CustomerEventType) and an index on
  created_at for retention;
- publish_send also records `message.sent` (its data rendered at dispatch), in the same
  statement as the state change, so that both paths that publish (the send's answer, the echo)
  record it, once.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UNDELIVERED = "('pending', 'failed_waiting_for_retry')"
EVENT_TYPES = (
    "('message.received', 'message.sent', 'message.delivered', 'message.read', "
    "'message.edited', 'message.deleted', 'message.failed_waiting_for_retry', 'message.failed', "
    "'reaction.received', 'referral.received', 'profile.connected', 'profile.disconnected')"
)

PUBLISH_SEND = f"""
    CREATE OR REPLACE FUNCTION publish_send(message_id bigint, mid text, posted_at timestamptz)
    RETURNS void
    LANGUAGE plpgsql AS $$
    BEGIN
        WITH published AS (
            UPDATE messages m
            SET status = 'published', external_id = mid,
                external_posted_at = coalesce(m.external_posted_at, posted_at),
                claimed_until = NULL, next_attempt_at = NULL,
                error_message = NULL, error_details = NULL, updated_at = now()
            WHERE m.id = message_id AND m.status IN {UNDELIVERED}
            RETURNING m.id, m.profile_id
        )
        INSERT INTO customer_events (profile_id, type, data, message_id, occurred_at)
        SELECT profile_id, 'message.sent', '{{}}'::jsonb, id, posted_at FROM published;
    END
    $$
"""
# Migration 0008's.
PUBLISH_SEND_0008 = f"""
    CREATE OR REPLACE FUNCTION publish_send(message_id bigint, mid text, posted_at timestamptz)
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

# Every endpoint that hears an event: of its profile's group (or of none: every group), and
# subscribed to its type. Disabled endpoints queue too: re-enabling one resumes them.
FAN_OUT = """
    CREATE FUNCTION dispatch_customer_events() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        endpoint bigint;
    BEGIN
        FOR endpoint IN
            WITH queued AS (
                INSERT INTO customer_webhook_dispatches (webhook_id, event_id, event_type)
                SELECT w.id, e.id, e.type
                FROM new_events e
                JOIN profiles p ON p.id = e.profile_id
                JOIN customer_webhooks w
                    ON (w.profile_group_id IS NULL OR w.profile_group_id = p.profile_group_id)
                    AND e.type = ANY (w.events)
                ORDER BY e.id, w.id
                RETURNING webhook_id
            )
            SELECT DISTINCT webhook_id FROM queued
        LOOP
            PERFORM pg_notify('customer_webhooks', endpoint::text);
        END LOOP;
        RETURN NULL;
    END
    $$
"""


def upgrade() -> None:
    op.create_check_constraint(
        op.f("ck_customer_events_type"), "customer_events", f"type IN {EVENT_TYPES}"
    )
    op.create_index("ix_customer_events_created_at", "customer_events", ["created_at"])
    op.create_table(
        "customer_webhooks",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("profile_group_id", sa.BigInteger(), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("secret_encrypted", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default="true", nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lease_owner", sa.BigInteger(), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["profile_group_id"],
            ["profile_groups.id"],
            name=op.f("fk_customer_webhooks_profile_group_id_profile_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_webhooks")),
    )
    op.create_index(
        op.f("ix_customer_webhooks_profile_group_id"), "customer_webhooks", ["profile_group_id"]
    )
    op.create_table(
        "customer_webhook_dispatches",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("webhook_id", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("test_data", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'failed')",
            name=op.f("ck_customer_webhook_dispatches_status"),
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["customer_events.id"],
            name=op.f("fk_customer_webhook_dispatches_event_id_customer_events"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["customer_webhooks.id"],
            name=op.f("fk_customer_webhook_dispatches_webhook_id_customer_webhooks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_webhook_dispatches")),
    )
    op.create_index(
        "ix_customer_webhook_dispatches_pending",
        "customer_webhook_dispatches",
        ["webhook_id", "id"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_customer_webhook_dispatches_due",
        "customer_webhook_dispatches",
        ["next_attempt_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_customer_webhook_dispatches_event", "customer_webhook_dispatches", ["event_id"]
    )
    op.create_table(
        "customer_webhook_attempts",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("webhook_id", sa.BigInteger(), nullable=False),
        sa.Column("dispatch_id", sa.BigInteger(), nullable=False),
        sa.Column("event_public_id", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("attempt_number", sa.Integer(), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("response_excerpt", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["customer_webhooks.id"],
            name=op.f("fk_customer_webhook_attempts_webhook_id_customer_webhooks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customer_webhook_attempts")),
    )
    op.create_index(
        "ix_customer_webhook_attempts_webhook", "customer_webhook_attempts", ["webhook_id", "id"]
    )
    op.execute(FAN_OUT)
    op.execute("""
        CREATE TRIGGER dispatch_customer_events
        AFTER INSERT ON customer_events
        REFERENCING NEW TABLE AS new_events
        FOR EACH STATEMENT EXECUTE FUNCTION dispatch_customer_events()
    """)
    op.execute(PUBLISH_SEND)


def downgrade() -> None:
    op.execute(PUBLISH_SEND_0008)
    op.execute("DROP TRIGGER dispatch_customer_events ON customer_events")
    op.execute("DROP FUNCTION dispatch_customer_events()")
    op.drop_table("customer_webhook_attempts")
    op.drop_table("customer_webhook_dispatches")
    op.drop_table("customer_webhooks")
    op.drop_index("ix_customer_events_created_at", table_name="customer_events")
    op.execute(
        "DELETE FROM customer_events WHERE type NOT IN ('message.received', 'message.sent', "
        "'message.read', 'message.edited', 'message.deleted', 'reaction.received', "
        "'referral.received')"
    )
    op.drop_constraint(op.f("ck_customer_events_type"), "customer_events", type_="check")
