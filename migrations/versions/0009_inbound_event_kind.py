"""Inbound events: a CHECK constraint keeps `kind` to the kinds parsing gives
(app/inbound/models.py:EventKind), as `status` is kept to its values.

Every kind stored so far is one of these: the parser has never written another.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

KINDS = "('message', 'echo', 'delete', 'reaction', 'read', 'edit', 'postback', 'referral')"


def upgrade() -> None:
    op.create_check_constraint(op.f("ck_inbound_events_kind"), "inbound_events", f"kind IN {KINDS}")


def downgrade() -> None:
    op.drop_constraint(op.f("ck_inbound_events_kind"), "inbound_events", type_="check")
