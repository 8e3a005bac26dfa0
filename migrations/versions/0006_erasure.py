"""Erasure: what a customer unsends can be found, and erased, wherever it is kept

- customer_events.message_id: the message an event describes, so that its copies of the
  message's content can be erased (the JSON holds only the public id, which has no index);
- inbound_events.payload and webhook_deliveries.body become nullable: they are dropped once
  applied (a delivery the worker cannot understand keeps its body, an event that failed its
  payload, for diagnosis), and failed events get an index to find them by mid;
- unparseable deliveries get an index, for the same reason;
- idempotency_keys: an index on the id of the resource a stored response describes;
- media_deletions: stored media still to delete, until it is gone.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# A message's content fields, as the API shows them erased (app/inbound/erasure.py).
ERASED_CONTENT = (
    '{"body": null, "attachments": [], "platform_data": null, "tapped_action": null, '
    '"story_reply": null, "referral": null, "reactions": []}'
)


def upgrade() -> None:
    op.alter_column("inbound_events", "payload", nullable=True)
    op.alter_column("webhook_deliveries", "body", nullable=True)
    op.add_column("customer_events", sa.Column("message_id", sa.BigInteger()))
    op.execute("""
        UPDATE customer_events e SET message_id = m.id
        FROM messages m
        WHERE e.data ? 'message' AND m.profile_id = e.profile_id
            AND e.data #>> '{message,external_id}' = m.external_id
    """)
    # Copies kept so far of messages already unsent, and raw payloads no longer needed.
    op.execute(f"""
        UPDATE customer_events e SET data = jsonb_set(e.data, '{{message}}',
            (e.data -> 'message') || '{ERASED_CONTENT}'::jsonb)
        FROM messages m
        WHERE e.message_id = m.id AND m.external_deleted_at IS NOT NULL
    """)
    op.execute("UPDATE inbound_events SET payload = NULL WHERE status IN ('applied', 'ignored')")
    op.execute("UPDATE webhook_deliveries SET body = NULL WHERE status = 'processed'")
    op.create_index(
        "ix_customer_events_message_id",
        "customer_events",
        ["message_id"],
        postgresql_where=sa.text("message_id IS NOT NULL"),
    )
    op.create_index(
        "ix_inbound_events_failed",
        "inbound_events",
        ["account_id", "mid"],
        postgresql_where=sa.text("status = 'failed'"),
    )
    op.create_index(
        "ix_webhook_deliveries_unparseable",
        "webhook_deliveries",
        ["id"],
        postgresql_where=sa.text("status = 'unparseable'"),
    )
    op.create_index(
        "ix_idempotency_keys_resource", "idempotency_keys", [sa.text("(response ->> 'id')")]
    )
    op.create_table(
        "media_deletions",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_media_deletions")),
    )


def downgrade() -> None:
    op.drop_table("media_deletions")
    op.drop_index("ix_idempotency_keys_resource", "idempotency_keys")
    op.drop_index("ix_webhook_deliveries_unparseable", "webhook_deliveries")
    op.execute("UPDATE webhook_deliveries SET body = '' WHERE body IS NULL")
    op.alter_column("webhook_deliveries", "body", nullable=False)
    op.drop_index("ix_inbound_events_failed", "inbound_events")
    op.execute("UPDATE inbound_events SET payload = '{}' WHERE payload IS NULL")
    op.alter_column("inbound_events", "payload", nullable=False)
    op.drop_index("ix_customer_events_message_id", "customer_events")
    op.drop_column("customer_events", "message_id")
