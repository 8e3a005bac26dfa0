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
        # Statement-level, over the transition table: a bulk insert updates each owner row
        # once, not once per inserted row.
        for operation, rows, sign in (("INSERT", "NEW", "+"), ("DELETE", "OLD", "-")):
            function = f"count_{table}_{operation.lower()}"
            op.execute(f"""
                CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    UPDATE {owner} SET {counter} = {counter} {sign} changed.n
                    FROM (SELECT {key}, count(*) AS n FROM changed_rows GROUP BY {key}) changed
                    WHERE {owner}.id = changed.{key};
                    RETURN NULL;
                END $$
            """)
            op.execute(
                f"CREATE TRIGGER {function} AFTER {operation} ON {table} "
                f"REFERENCING {rows} TABLE AS changed_rows "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
            )


def downgrade() -> None:
    for table, _, owner, counter in COUNTERS:
        for operation in ("insert", "delete"):
            op.execute(f"DROP TRIGGER count_{table}_{operation} ON {table}")
            op.execute(f"DROP FUNCTION count_{table}_{operation}()")
        op.drop_column(owner, counter)
