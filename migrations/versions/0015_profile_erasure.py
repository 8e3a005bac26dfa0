"""Erasing a profile in the background

- profiles.erasing_since: set when `DELETE /api/profiles/{id}?erase=true` is asked; the profile
  is then invisible, and job `erase_profile` deletes its data in bounded batches, resumed by
  cron `sweep_profile_erasures` after a crash, until it deletes the row itself.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("profiles", sa.Column("erasing_since", sa.DateTime(timezone=True)))
    op.create_index(
        "ix_profiles_erasing",
        "profiles",
        ["id"],
        postgresql_where=sa.text("erasing_since IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_profiles_erasing", table_name="profiles")
    op.drop_column("profiles", "erasing_since")
