"""Webhook deliveries drained in batches: the trace context travels with the delivery

- webhook_deliveries.traceparent: the W3C `traceparent` of the POST that stored it, set only
  while tracing is on (app/core/tracing.py). A worker no longer gets a job per webhook
  delivery (which carried it) but drains the stored deliveries in batches
  (app/inbound/pipeline.py), so the batch that applies one links to its POST through this.

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("webhook_deliveries", sa.Column("traceparent", sa.Text()))


def downgrade() -> None:
    op.drop_column("webhook_deliveries", "traceparent")
