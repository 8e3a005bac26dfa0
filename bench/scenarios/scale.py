"""6. Page latency as the data grows: 10 k stored messages, then 1 M, same queries.

One profile of its own gets the bulk-loaded chats; messages are spread as a busy account's
would be: one "hot" chat holds 10 % of them, the rest spread evenly over the other chats,
half inbound and half outbound, one second apart. Both stages are loaded with
INSERT ... SELECT generate_series, then VACUUM ANALYZE and CHECKPOINT (what autovacuum and
the checkpointer would have done by then).
"""

import sys
import time

import httpx

from app.core import ids
from bench.fixtures import Fixtures
from bench.loadgen import serial_latency
from bench.stack import Stack

HOT_SHARE = 10  # every 10th message goes to the hot chat
# Messages inserted per statement.
CHUNK = 500_000
FIRST_PARTICIPANT = 8_000_000_000_000_000
ADD_CHATS = """
INSERT INTO chats (profile_id, participant_external_id, last_inbound_at, last_message_at)
SELECT $1, ($2::bigint + g)::text, now() - g * interval '1 minute', now() - g * interval '1 minute'
FROM generate_series($3::int, $4::int - 1) AS g
"""
ADD_MESSAGES = """
INSERT INTO messages
    (chat_id, profile_id, direction, status, body, external_id, external_posted_at)
SELECT CASE WHEN g % $3::int = 0 THEN ($2::bigint[])[1]
            ELSE ($2::bigint[])[2 + g % (cardinality($2::bigint[]) - 1)] END,
       $1,
       CASE WHEN g % 2 = 0 THEN 'inbound' ELSE 'outbound' END,
       CASE WHEN g % 2 = 0 THEN 'received' ELSE 'published' END,
       'scale message ' || g,
       'scale-' || g,
       timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second'
FROM generate_series($4::bigint, $5::bigint - 1) AS g
"""


async def grow(stack: Stack, profile_serial: int, chats: int, messages: int) -> list[int]:
    """Top the profile up to `chats` chats and `messages` messages; its chat serials, hot first."""
    have_chats = await stack.db.fetchval(
        "SELECT count(*) FROM chats WHERE profile_id = $1", profile_serial
    )
    await stack.db.execute(ADD_CHATS, profile_serial, FIRST_PARTICIPANT, have_chats, chats)
    serials = [
        row["id"]
        for row in await stack.db.fetch(
            "SELECT id FROM chats WHERE profile_id = $1 ORDER BY id", profile_serial
        )
    ]
    have_messages = await stack.db.fetchval(
        "SELECT count(*) FROM messages WHERE profile_id = $1", profile_serial
    )
    # Set-based, a chunk per statement: the counters' statement triggers (migration 0004)
    # count each chunk in one UPDATE per chat, and a chunk's transition table stays small.
    for first in range(have_messages, messages, CHUNK):
        last = min(first + CHUNK, messages)
        await stack.db.execute(ADD_MESSAGES, profile_serial, serials, HOT_SHARE, first, last)
        if messages >= 10 * CHUNK:
            progress(f"scale: {last:,}/{messages:,} messages loaded")
    await check_counters(stack, profile_serial, serials[0], chats, messages)
    await stack.db.execute("VACUUM ANALYZE chats, messages")
    # Or the checkpointer would be writing the load out while the pages are timed.
    await stack.db.execute("CHECKPOINT")
    return serials


def progress(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


COUNTERS = """
SELECT (SELECT chat_count FROM profiles WHERE id = $1) AS chat_count,
       (SELECT coalesce(sum(n), 0) FROM chat_message_counts
        WHERE chat_id IN (SELECT id FROM chats WHERE profile_id = $1)) AS counted,
       (SELECT coalesce(sum(n), 0) FROM chat_message_counts WHERE chat_id = $2) AS hot_counted,
       (SELECT count(*) FROM messages WHERE chat_id = $2) AS hot_messages
"""


async def check_counters(
    stack: Stack, profile_serial: int, hot: int, chats: int, messages: int
) -> None:
    """The triggers' counters agree with the rows loaded (the pages' totals read them)."""
    row = await stack.db.fetchrow(COUNTERS, profile_serial, hot)
    if (row["chat_count"], row["counted"], row["hot_counted"]) != (
        chats,
        messages,
        row["hot_messages"],
    ):
        raise RuntimeError(f"scale: counters disagree with the rows loaded: {dict(row)}")


def typical_chat(serials: list[int]) -> int:
    return serials[len(serials) // 2]


async def measure(stack: Stack, fixtures: Fixtures, serials: list[int], requests: int) -> dict:
    hot = ids.encode(ids.Kind.CHAT, serials[0])
    typical = ids.encode(ids.Kind.CHAT, typical_chat(serials))
    paths = {
        "chats_list": f"/api/profiles/{fixtures.scale.public_id}/chats?per_page=20",
        "hot_chat_messages": f"/api/chats/{hot}/messages?per_page=20",
        "typical_chat_messages": f"/api/chats/{typical}/messages?per_page=20",
    }
    headers = {"Authorization": f"Bearer {fixtures.token}"}
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers, timeout=30) as api:
        return {name: await serial_latency(api, path, requests) for name, path in paths.items()}


async def run(
    stack: Stack, fixtures: Fixtures, stages: list[tuple[int, int]], requests: int
) -> dict:
    """stages: (chats, messages) from small to large; the ratios compare last to first."""
    stack.stop_workers()
    await stack.reset_messages()
    profile_serial = ids.decode(ids.Kind.PROFILE, fixtures.scale.public_id)
    results = []
    for chats, messages in stages:
        serials = await grow(stack, profile_serial, chats, messages)
        results.append(
            {
                "chats": chats,
                "messages": messages,
                "hot_chat_messages": messages // HOT_SHARE,
                # Under a page (20), its page would cost less for want of rows, not of data.
                "typical_chat_messages": await stack.db.fetchval(
                    "SELECT count(*) FROM messages WHERE chat_id = $1", typical_chat(serials)
                ),
                "latency_ms": await measure(stack, fixtures, serials, requests),
            }
        )
    small, large = results[0]["latency_ms"], results[-1]["latency_ms"]
    return {
        "requests": requests,
        "stages": results,
        "ratio_p50": {name: large[name]["p50"] / small[name]["p50"] for name in small},
        "ratio_p95": {name: large[name]["p95"] / small[name]["p95"] for name in small},
    }
