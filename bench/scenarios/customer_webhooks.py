"""7. Customer webhooks: event → endpoint latency, deliveries per second, and isolation from a
hanging endpoint, against a fast local receiver (bench/webhook_receiver.py, its own process).

Events are inserted into `customer_events` directly (one autocommit INSERT each, as the
change that records one commits), so what is measured is the outbox alone: the trigger, the
NOTIFY, the worker's Dispatcher, the signed POST. Latency = the receiver's arrival clock −
the bench's clock just before the INSERT (same machine).

- Throughput: `endpoints` endpoints of one profile, each subscribed; `events` events inserted
  with the worker stopped, then one worker started: deliveries / (last arrival − first).
  The floor (bench/webhook_floor.py) does the least any outbox must, per endpoint in order:
  read the event, POST it, record it.
- Latency: `groups` profile groups, one profile and one endpoint each; `rate` events/s spread
  over the profiles for `seconds`, once one event per endpoint has arrived (the worker is
  up, its connections open); p50/p99.
- Hanging: the same, with one more group whose endpoint answers only after 30 s; the other
  endpoints' p50/p99.
"""

import asyncio
import json
import subprocess
import sys
import time

import asyncpg
import httpx

from bench.cpu import CpuWindow
from bench.loadgen import paced, percentiles
from bench.stack import DATABASE_URL, Stack, free_port

SECRET_KEY = "bench-secret-key"
DRAIN_SECONDS = 30
# A message event's data as dmrelay sends it: about 700 bytes.
DATA = json.dumps({
    "message": {
        "id": "Kq3V0b1xYz", "chat_id": "eAU0UUW6R1", "external_id": "aWdfZAG" + "x" * 60,
        "direction": "inbound", "body": "Hello! Is the blue one still available in size M?",
        "status": "received", "tag": None, "error_message": None, "error_details": None,
        "platform_data": None, "external_posted_at": "2026-12-07T14:00:00+00:00",
        "external_read_at": None, "external_edited_at": None, "external_deleted_at": None,
        "reply_to_external_id": None, "reactions": [], "attachments": [],
        "is_unsupported": False, "tapped_action": None, "story_reply": None, "referral": None,
        "created_at": "2026-12-07T14:00:00.123456+00:00",
    }
})  # fmt: skip


async def run(
    stack: Stack, endpoints: int, events: int, groups: int, rate: float, seconds: float,
    timeout: float,
) -> dict:  # fmt: skip
    port = free_port()
    receiver = f"http://127.0.0.1:{port}"
    stack.start(
        "receiver", "uvicorn", "bench.webhook_receiver:app", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1", "--log-level", "warning",
    )  # fmt: skip
    await stack.wait_http(f"{receiver}/healthz", "receiver")
    try:
        async with httpx.AsyncClient(base_url=receiver, timeout=30) as records:
            throughput = await _throughput(stack, records, receiver, endpoints, events, timeout)
            floor = await _floor(stack, records, receiver, endpoints, events)
            steady = await _latency(stack, records, receiver, groups, rate, seconds, hang=False)
            hanging = await _latency(stack, records, receiver, groups, rate, seconds, hang=True)
    finally:
        stack.stop("receiver")
    return {
        "throughput": throughput,
        "floor": floor,
        "ratio": throughput["rate"] / floor["rate"] if floor["rate"] else None,
        "latency": steady,
        "hanging": hanging,
    }


async def _reset(stack: Stack, records: httpx.AsyncClient) -> None:
    await stack.db.execute("TRUNCATE customer_events, customer_webhooks CASCADE")
    (await records.delete("/_records")).raise_for_status()


async def _profile(stack: Stack, name: str) -> int:
    from app.core import crypto

    group = await stack.db.fetchval(
        "INSERT INTO profile_groups (name) VALUES ($1) ON CONFLICT (name) DO UPDATE "
        "SET name = EXCLUDED.name RETURNING id",
        f"webhooks-{name}",
    )
    return await stack.db.fetchval(
        "INSERT INTO profiles (profile_group_id, platform_id, connection, "
        "access_token_encrypted) VALUES ($1, $2, 'instagram_login', $3) "
        "ON CONFLICT (platform, platform_id) DO UPDATE SET profile_group_id = $1 RETURNING id",
        group,
        f"bench-webhooks-{name}",
        # A token the worker can decrypt: it checks the newest at start (app/core/preflight.py).
        crypto.encrypt(SECRET_KEY, "unused"),
    )


async def _endpoint(stack: Stack, profile_id: int, url: str) -> None:
    from app.core import crypto

    await stack.db.execute(
        "INSERT INTO customer_webhooks (profile_group_id, url, events, secret_encrypted) "
        "SELECT profile_group_id, $2, ARRAY['message.received'], $3 FROM profiles "
        "WHERE id = $1",
        profile_id,
        url,
        crypto.encrypt(SECRET_KEY, "whsec_bench"),
    )


async def _arrivals(records: httpx.AsyncClient) -> list[tuple[str, str, float]]:
    return (await records.get("/_records")).json()


async def _wait_for(records: httpx.AsyncClient, count: int, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    while True:
        arrived = await _arrivals(records)
        if len(arrived) >= count or time.monotonic() > deadline:
            return arrived
        await asyncio.sleep(0.25)


async def _throughput(
    stack: Stack, records: httpx.AsyncClient, receiver: str, endpoints: int, events: int,
    timeout: float,
) -> dict:  # fmt: skip
    await _reset(stack, records)
    profile = await _profile(stack, "throughput")
    for index in range(endpoints):
        await _endpoint(stack, profile, f"{receiver}/e{index}")
    await stack.db.execute(
        "INSERT INTO customer_events (profile_id, type, data) "
        "SELECT $1, 'message.received', $2::jsonb FROM generate_series(1, $3)",
        profile,
        DATA,
        events,
    )
    stack.start_worker()
    try:
        await stack.wait_workers()
        async with CpuWindow({"worker": stack.pids("worker")}, stack.db) as window:
            early = len(await _arrivals(records))
            arrived = await _wait_for(records, endpoints * events, timeout)
    finally:
        stack.stop_workers()
    times = sorted(at for _, _, at in arrived)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return {
        "endpoints": endpoints,
        "events": events,
        "deliveries": len(arrived),
        "expected": endpoints * events,
        "seconds": span,
        "rate": len(arrived) / span if span else 0.0,
        # The worker's CPU per delivery once started (its first poll of the queue on).
        "cpu": window.summary(len(arrived) - early),
    }


async def _floor(
    stack: Stack, records: httpx.AsyncClient, receiver: str, endpoints: int, events: int
) -> dict:
    """The floor, on the same events (still in the table) and receiver."""
    (await records.delete("/_records")).raise_for_status()

    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bench.webhook_floor", DATABASE_URL, receiver, str(endpoints),
         str(events)],
        env=stack.env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    result = json.loads(done.stdout)
    return {
        **result,
        "rate": result["deliveries"] / result["seconds"],
        # Its own process's CPU over the deliveries (it has no children).
        "cpu_ms_per_delivery": result["cpu_seconds"] * 1000 / (result["deliveries"] or 1),
    }


async def _latency(
    stack: Stack, records: httpx.AsyncClient, receiver: str, groups: int, rate: float,
    seconds: float, hang: bool,
) -> dict:  # fmt: skip
    from app.core import ids

    await _reset(stack, records)
    profiles = [await _profile(stack, f"group{n}") for n in range(groups)]
    for index, profile in enumerate(profiles):
        await _endpoint(stack, profile, f"{receiver}/g{index}")
    if hang:
        hanging = await _profile(stack, "hanging")
        await _endpoint(stack, hanging, f"{receiver}/hang")
        profiles.append(hanging)
    stack.start_worker()
    pool = await asyncpg.create_pool(DATABASE_URL, min_size=8, max_size=8)
    started_at: dict[str, float] = {}
    try:
        # The worker's start-up is not measured: one event per endpoint (not the hanging
        # one), delivered, before the clock starts. A fixed wait (3 s) was too short on a
        # busy machine, and the first seconds' backlog made the p99.
        measured = profiles[:groups]
        for profile in measured:
            await pool.execute(
                "INSERT INTO customer_events (profile_id, type, data) "
                "VALUES ($1, 'message.received', $2::jsonb)",
                profile,
                DATA,
            )
        await _wait_for(records, len(measured), DRAIN_SECONDS)
        (await records.delete("/_records")).raise_for_status()

        async def insert(i: int) -> None:
            profile = profiles[i % len(profiles)]
            before = time.time()
            event_id = await pool.fetchval(
                "INSERT INTO customer_events (profile_id, type, data) "
                "VALUES ($1, 'message.received', $2::jsonb) RETURNING id",
                profile,
                DATA,
            )
            if not (hang and profile == profiles[-1]):
                started_at[ids.encode(ids.Kind.CUSTOMER_EVENT, event_id)] = before

        count = int(rate * seconds)
        await paced(count, rate, insert)
        arrived = await _wait_for(records, len(started_at), DRAIN_SECONDS)
    finally:
        await pool.close()
        stack.stop_workers()
    latencies = [
        (at - started_at[event_id]) * 1000 for _, event_id, at in arrived if event_id in started_at
    ]
    return {
        "offered_rate": rate,
        "seconds": seconds,
        "endpoints": groups,
        "hanging_endpoint": hang,
        "events": len(started_at),
        "delivered": len(latencies),
        "latency_ms": percentiles(latencies) if latencies else None,
    }
