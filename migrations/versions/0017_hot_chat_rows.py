"""Hot chat rows: a chat's message count kept in shards, off the chat row; chats updated in place

Every accepted send updated its chat row (`chats.message_count`, kept by the trigger of
migration 0004), so concurrent sends to one chat queued on that row's lock, each holding it
until its commit was on disk: with 32 clients on one chat, PostgreSQL spent ten times the CPU
per send that it spent with the same clients over 100 chats, and served a third of the rate.
The count now lives in `chat_message_counts`, one row per chat and *shard*: a transaction adds
to the shard of its backend (`pg_backend_pid() % 16`), so concurrent sends to one chat mostly
touch different rows, and the chat row is not written by a send at all. A chat's count is the
sum of its shards, read by primary key (at most 16 rows): still exact, in the transaction that
inserts or deletes the messages.

The chat row is still updated by the worker (the send lease, a published send's times) and by
inbound batches. With a fifth of each page kept free (fillfactor 80), an update that changes
no indexed column (the lease) is a HOT update: the new version goes on the same page, no index
is touched, and the dead one is pruned by the next reader without VACUUM. Updates that move
`last_message_at` cannot be HOT (it orders the chat list, ix_chats_profile_last_message); for
their dead versions, VACUUM starts on `chats` after 2 % of its rows (plus 500), not 20 %, and
is not throttled (the table is small beside `messages`). The fillfactor applies to pages as
they fill from now on.

Revision ID: 0017
Revises: 0016
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

SHARDS = 16
CHATS = {
    "fillfactor": "80",
    "autovacuum_vacuum_scale_factor": "0.02",
    "autovacuum_vacuum_threshold": "500",
    "autovacuum_vacuum_cost_delay": "0",
}
# Narrow rows, each updated by every send of its shard: room on the page for their HOT
# versions.
COUNTS = {"fillfactor": "50", "autovacuum_vacuum_cost_delay": "0"}


def _options(settings: dict[str, str]) -> str:
    return ", ".join(f"{name} = {value}" for name, value in settings.items())


def upgrade() -> None:
    op.execute(f"""
        CREATE TABLE chat_message_counts (
            chat_id bigint NOT NULL REFERENCES chats (id) ON DELETE CASCADE,
            shard smallint NOT NULL,
            n bigint NOT NULL,
            CONSTRAINT pk_chat_message_counts PRIMARY KEY (chat_id, shard)
        ) WITH ({_options(COUNTS)})
    """)
    op.execute(
        "INSERT INTO chat_message_counts (chat_id, shard, n) "
        "SELECT id, 0, message_count FROM chats WHERE message_count <> 0"
    )
    # Statement-level, over the transition table, as in 0004: one upsert per chat a
    # statement inserted or deleted messages of. Messages deleted with their chat (a cascade)
    # are not counted: the chat's counts go with it, and a new shard row would refer to a
    # chat that is gone.
    for operation, sign, chats in (
        ("insert", "+", "changed_rows"),
        ("delete", "-", "changed_rows JOIN chats ON chats.id = changed_rows.chat_id"),
    ):
        op.execute(f"""
            CREATE OR REPLACE FUNCTION count_messages_{operation}() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO chat_message_counts AS counts (chat_id, shard, n)
                SELECT chat_id, pg_backend_pid() % {SHARDS}, {sign}count(*)
                FROM {chats} GROUP BY chat_id
                ON CONFLICT (chat_id, shard) DO UPDATE SET n = counts.n + excluded.n;
                RETURN NULL;
            END $$
        """)
    op.drop_column("chats", "message_count")
    op.execute(f"ALTER TABLE chats SET ({_options(CHATS)})")


def downgrade() -> None:
    op.execute(f"ALTER TABLE chats RESET ({', '.join(CHATS)})")
    op.execute("ALTER TABLE chats ADD COLUMN message_count bigint NOT NULL DEFAULT 0")
    op.execute(
        "UPDATE chats SET message_count = counts.n FROM "
        "(SELECT chat_id, sum(n) AS n FROM chat_message_counts GROUP BY chat_id) counts "
        "WHERE chats.id = counts.chat_id"
    )
    for operation, sign in (("insert", "+"), ("delete", "-")):
        op.execute(f"""
            CREATE OR REPLACE FUNCTION count_messages_{operation}() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE chats SET message_count = message_count {sign} changed.n
                FROM (SELECT chat_id, count(*) AS n FROM changed_rows GROUP BY chat_id) changed
                WHERE chats.id = changed.chat_id;
                RETURN NULL;
            END $$
        """)
    op.drop_table("chat_message_counts")
