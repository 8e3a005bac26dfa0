"""Row counters for unfiltered pages: a chat's messages and a profile's chats

Listing pages report `total`; counting a chat with 100,000 messages on every page made page
latency grow with the chat. Triggers keep the counts in the same transaction as the rows.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COUNTERS = [
    # (counted table, its foreign key, counting table, counter column)
    ("messages", "chat_id", "chats", "message_count"),
    ("chats", "profile_id", "profiles", "chat_count"),
]


def upgrade() -> None:
    for table, key, owner, counter in COUNTERS:
        op.add_column(
            owner, sa.Column(counter, sa.BigInteger(), nullable=False, server_default="0")
        )
        op.execute(
            f"UPDATE {owner} SET {counter} = "
            f"(SELECT count(*) FROM {table} WHERE {table}.{key} = {owner}.id)"
        )
        op.execute(f"""
            CREATE FUNCTION count_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP = 'INSERT' THEN
                    UPDATE {owner} SET {counter} = {counter} + 1 WHERE id = NEW.{key};
                ELSE
                    UPDATE {owner} SET {counter} = {counter} - 1 WHERE id = OLD.{key};
                END IF;
                RETURN NULL;
            END $$
        """)
        op.execute(
            f"CREATE TRIGGER count_{table} AFTER INSERT OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION count_{table}()"
        )


def downgrade() -> None:
    for table, _, owner, counter in COUNTERS:
        op.execute(f"DROP TRIGGER count_{table} ON {table}")
        op.execute(f"DROP FUNCTION count_{table}()")
        op.drop_column(owner, counter)
