"""Participants' avatars mirrored to dmrelay's media store

- chats.participant_avatar_key: the stored copy's key (its URL is participant_avatar_url);
- chats.participant_avatar_synced_at: when the copy was made (or Meta gave no picture).

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("chats", sa.Column("participant_avatar_key", sa.Text()))
    op.add_column("chats", sa.Column("participant_avatar_synced_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("chats", "participant_avatar_synced_at")
    op.drop_column("chats", "participant_avatar_key")
