"""The floor for customer-webhook deliveries: the least any outbox implementation must do to
send one event to one endpoint and know it was delivered. Per endpoint, one after another (the
order rule), for every endpoint at once: read the event (one asyncpg statement), POST it
(aiohttp, kept connection), record the outcome (one asyncpg UPDATE). No signing, no SSRF
check, no lease, no log row. Prints its deliveries, seconds and CPU seconds as JSON.

    python -m bench.webhook_floor DATABASE_URL RECEIVER_URL ENDPOINTS EVENTS
"""

import asyncio
import json
import sys
import time

import aiohttp
import asyncpg


async def main(database_url: str, receiver_url: str, endpoints: int, events: int) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=10, max_size=10)
    event_ids = [row[0] for row in await pool.fetch(
        "SELECT id FROM customer_events ORDER BY id LIMIT $1", events
    )]  # fmt: skip

    async def endpoint(index: int, session: aiohttp.ClientSession) -> None:
        for event_id in event_ids:
            data = await pool.fetchval(
                "SELECT data::text FROM customer_events WHERE id = $1", event_id
            )
            async with session.post(f"{receiver_url}/floor{index}", data=data) as response:
                await response.read()
            await pool.execute(
                "UPDATE customer_events SET occurred_at = now() WHERE id = $1", event_id
            )

    started, cpu = time.perf_counter(), time.process_time()
    sessions = [aiohttp.ClientSession() for _ in range(endpoints)]
    await asyncio.gather(*(endpoint(i, s) for i, s in enumerate(sessions)))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    for session in sessions:
        await session.close()
    await pool.close()
    print(
        json.dumps(
            {"deliveries": endpoints * len(event_ids), "seconds": seconds, "cpu_seconds": cpu}
        )
    )


if __name__ == "__main__":
    url, receiver, n_endpoints, n_events = sys.argv[1:5]
    asyncio.run(main(url, receiver, int(n_endpoints), int(n_events)))
