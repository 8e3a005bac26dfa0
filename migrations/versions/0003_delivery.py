"""Delivery: per-chat send lease and retry schedule

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("chats", sa.Column("delivery_lease_until", sa.DateTime(timezone=True)))
    op.add_column("messages", sa.Column("next_attempt_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("messages", "next_attempt_at")
    op.drop_column("chats", "delivery_lease_until")
