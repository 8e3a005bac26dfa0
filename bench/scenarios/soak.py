"""Soak (`--soak-minutes N`, off by default): chat-row bloat under sustained mixed load.

For N minutes, an open-loop client sends SEND_RATE messages a second over two chats of each
spread profile and posts WEBHOOK_RATE signed Meta webhooks a second (EVENTS_PER_POST
messaging events each, from SENDERS customers per account), while the worker(s) deliver and
ingest. Every SAMPLE_SECONDS the `chats` table's live and dead tuples and autovacuum count
are read (pg_stat_user_tables: busy backends report theirs up to 10 s late); the figure is
the most dead tuples seen, against the live rows. The CPU of the API, the worker(s) and
PostgreSQL's backends per message (sent or received) is reported over the whole soak.
"""

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import httpx

from bench.cpu import CpuWindow, table_stats
from bench.fixtures import Chat, Fixtures
from bench.scenarios.hot_chat import STATS_DELAY
from bench.scenarios.webhook import grant_consent, signed_post
from bench.stack import Stack

SEND_RATE = 50.0
WEBHOOK_RATE = 20.0
EVENTS_PER_POST = 5
SAMPLE_SECONDS = 30.0


async def _open_loop(
    rate: float, seconds: float, call: Callable[[int], Coroutine[Any, Any, None]]
) -> None:
    """call(i) at t0 + i/rate for `seconds`, whatever the answers' speed (open loop); only
    the calls still in flight are kept."""
    loop = asyncio.get_running_loop()
    start, in_flight = loop.time(), set[asyncio.Task[None]]()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(call(i))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)


def _webhook_body(accounts: list[str], run_id: str, post: int) -> tuple[str, str]:
    now = int(time.time() * 1000)
    events = [
        (now + j, f"soak-{run_id}-{post}-{j}", f"soak {post} {j}") for j in range(EVENTS_PER_POST)
    ]
    return signed_post(accounts, events)


async def run(
    stack: Stack, fixtures: Fixtures, chats: list[Chat], minutes: float
) -> dict[str, Any]:
    stack.stop_workers()
    await stack.reset_messages()
    await grant_consent(stack)
    seconds = minutes * 60
    accounts = [profile.platform_id for profile in fixtures.spread]
    run_id = str(time.time_ns())
    counts = {"sent": 0, "send_failures": 0, "posts": 0, "post_failures": 0}
    samples: list[dict[str, Any]] = []
    stack.start_worker()
    try:
        await stack.wait_workers()
        async with (
            aiohttp.ClientSession(
                stack.api_url,
                headers={"Authorization": f"Bearer {fixtures.token}"},
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=30),
            ) as api,
            httpx.AsyncClient(base_url=stack.sandbox_url) as sandbox,
        ):

            async def send(i: int) -> None:
                chat = chats[i % len(chats)]
                try:
                    async with api.post(chat.path, json={"body": f"soak {i}"}) as response:
                        response.raise_for_status()
                    counts["sent"] += 1
                except (aiohttp.ClientError, TimeoutError):
                    counts["send_failures"] += 1

            async def post(i: int) -> None:
                body, signature = _webhook_body(accounts, run_id, i)
                headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signature}
                try:
                    async with api.post(
                        "/webhooks/instagram", data=body, headers=headers
                    ) as response:
                        response.raise_for_status()
                    counts["posts"] += 1
                except (aiohttp.ClientError, TimeoutError):
                    counts["post_failures"] += 1

            async def sample() -> None:
                started = time.monotonic()
                while True:
                    stats = await table_stats(stack.db, "chats")
                    samples.append({"at_seconds": round(time.monotonic() - started), **stats})
                    # The sandbox keeps every send it received: cleared, or it grows all hour.
                    await sandbox.delete("/_sandbox/sent")
                    await asyncio.sleep(SAMPLE_SECONDS)

            groups = {"api": stack.pids("api"), "worker": stack.pids("worker")}
            async with CpuWindow(groups, stack.db) as window:
                sampler = asyncio.create_task(sample())
                await asyncio.gather(
                    _open_loop(SEND_RATE, seconds, send), _open_loop(WEBHOOK_RATE, seconds, post)
                )
                sampler.cancel()
            # The last reading once the backends have reported all they did.
            await asyncio.sleep(STATS_DELAY)
            samples.append(
                {"at_seconds": round(window.wall), **await table_stats(stack.db, "chats")}
            )
    finally:
        stack.stop_workers()
    stored = await stack.db.fetchrow(
        "SELECT count(*) FILTER (WHERE direction = 'inbound') AS inbound, "
        "count(*) FILTER (WHERE status = 'published') AS published FROM messages"
    )
    messages = stored["inbound"] + stored["published"]
    first, last = samples[0], samples[-1]
    return {
        "minutes": minutes,
        "send_rate": SEND_RATE,
        "webhook_rate": WEBHOOK_RATE,
        "events_per_post": EVENTS_PER_POST,
        **counts,
        "inbound_stored": stored["inbound"],
        "published": stored["published"],
        "samples": samples,
        "live_rows": last.get("n_live_tup"),
        "max_dead_tuples": max(s.get("n_dead_tup") or 0 for s in samples),
        "autovacuums": (last.get("autovacuum_count") or 0) - (first.get("autovacuum_count") or 0),
        "chat_updates": (last.get("n_tup_upd") or 0) - (first.get("n_tup_upd") or 0),
        "hot_updates": (last.get("n_tup_hot_upd") or 0) - (first.get("n_tup_hot_upd") or 0),
        "cpu": window.summary(messages),
    }
