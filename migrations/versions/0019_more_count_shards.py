"""More message-count shards: 256, not 16

Migration 0017 spread a chat's message count over `pg_backend_pid() % 16` shards. A pool of
20 backends over 16 shards always has backends sharing one, and each send holds its shard's
row until its commit is on disk, so 32 clients sending to one chat still queued behind each
other (0.83 backends waiting on a lock on average, in measure 9). Over 256 shards two of 20
backends meet on one about 0.7 times, not 3 (the expected pairs, 190 / shards). A chat's count
is still the sum of its shard rows, read by primary key; a chat has at most as many as the
backends that ever wrote to it, and at most 256. Rows of shards ≥ 16 stay valid after a
downgrade: the count is their sum, whichever shard a row is.

Revision ID: 0019
Revises: 0018
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def _count_functions(shards: int) -> None:
    # As 0017 made them, with `shards` shards.
    for operation, sign, chats in (
        ("insert", "+", "changed_rows"),
        ("delete", "-", "changed_rows JOIN chats ON chats.id = changed_rows.chat_id"),
    ):
        op.execute(f"""
            CREATE OR REPLACE FUNCTION count_messages_{operation}() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO chat_message_counts AS counts (chat_id, shard, n)
                SELECT chat_id, pg_backend_pid() % {shards}, {sign}count(*)
                FROM {chats} GROUP BY chat_id
                ON CONFLICT (chat_id, shard) DO UPDATE SET n = counts.n + excluded.n;
                RETURN NULL;
            END $$
        """)


def upgrade() -> None:
    _count_functions(256)


def downgrade() -> None:
    _count_functions(16)
