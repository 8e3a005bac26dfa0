"""3. Delivery throughput of one worker process (or --workers N) and its CPU per send, and
4. use of Meta's per-profile rate cap.

With the worker stopped, the messages are accepted through the API, so they are stored and
their jobs enqueued exactly as dmrelay does it; then one worker starts. The rate is taken
from the first `external_posted_at` (stamped by the worker as each send returns), so the
worker's start-up is left out, to the last one, or, for a run cut short by its time limit,
to when it was cut.
"""

import asyncio
import time
from typing import Any

import httpx

from bench.cpu import CpuWindow
from bench.fixtures import Chat, Fixtures
from bench.stack import Stack

# Instagram API with Instagram Login: 100 Send API calls per second per professional account.
INSTAGRAM_SEND_CAP = 100
# Meta's throttling codes (app/meta/errors.py THROTTLE_CODES has them among others).
THROTTLE_CODES = ["4", "17", "32", "613"]
POST_CONCURRENCY = 32
OUTCOME = """
SELECT count(*) FILTER (WHERE status = 'published') AS published,
       count(*) FILTER (WHERE status IN ('pending', 'failed_waiting_for_retry')) AS undelivered,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE error_details->>'platform_error_code' = ANY($1)) AS throttled,
       coalesce(sum(greatest(attempts - 1, 0)), 0) AS extra_attempts,
       extract(epoch FROM max(external_posted_at) - min(external_posted_at)) AS span,
       extract(epoch FROM now() - min(external_posted_at)) AS since_first
FROM messages WHERE direction = 'outbound'
"""


async def accept(stack: Stack, fixtures: Fixtures, chats: list[Chat], count: int) -> int:
    """POST `count` messages round-robin over `chats` (the worker must be stopped); how many
    POSTs were sent twice.

    A POST whose connection breaks (seen twice in all runs: httpx.ReadError, nothing in the
    API's log) is sent once more, so that a full run is not lost to it; if the first had got
    through, one message more is delivered."""
    headers = {"Authorization": f"Bearer {fixtures.token}"}
    gate = asyncio.Semaphore(POST_CONCURRENCY)
    resent = 0
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers, timeout=30) as api:

        async def post(i: int) -> None:
            nonlocal resent
            chat, body = chats[i % len(chats)], {"body": f"bench delivery {i}"}
            async with gate:
                try:
                    response = await api.post(chat.path, json=body)
                except httpx.TransportError:
                    resent += 1
                    response = await api.post(chat.path, json=body)
                response.raise_for_status()

        await asyncio.gather(*(post(i) for i in range(count)))
    return resent


async def deliver_all(
    stack: Stack,
    fixtures: Fixtures,
    chats: list[Chat],
    count: int,
    timeout: float,
    rate_cap: int | None = None,
    latency_ms: int = 0,
) -> dict:
    """Accept `count` messages over `chats`, then run one worker until none is undelivered
    or `timeout` seconds have passed. With rate_cap, the sandbox is asked to throttle each
    account above it (see enable_sandbox_rate_limit); with latency_ms, to wait that long
    before each answer, as Meta's own time to answer."""
    stack.stop_workers()
    await stack.reset_messages()
    enforced = rate_cap is not None and await enable_sandbox_rate_limit(stack, rate_cap)
    if latency_ms:
        async with httpx.AsyncClient(base_url=stack.sandbox_url) as sandbox:
            response = await sandbox.post("/_sandbox/faults", json={"latency_ms": latency_ms})
            response.raise_for_status()
    resent = await accept(stack, fixtures, chats, count)
    outcome, cost = await work_until_delivered(stack, timeout, 0.25)
    # A run cut short counts until it was cut: a worker that stalls is not let off.
    span = float(outcome["span" if outcome["undelivered"] == 0 else "since_first"] or 0)
    published = outcome["published"]
    return {
        "messages": count,
        "posts_resent": resent,
        "chats": len(chats),
        "profiles": len({chat.profile for chat in chats}),
        "published": published,
        "failed": outcome["failed"],
        "undelivered": outcome["undelivered"],
        # A throttled send is retried and its error cleared once published; with no other
        # fault injected, every extra attempt is a refused call.
        "throttle_errors": outcome["throttled"] + outcome["extra_attempts"],
        "seconds": span,
        "rate": (published - 1) / span if span > 0 else None,
        "timeout": timeout,
        "cap_enforced_by_sandbox": enforced,
        "workers": stack.workers,
        "latency_ms": latency_ms,
        "cpu": cost,
    }


# --- 4. rate-limit use ---------------------------------------------------------------------


async def work_until_delivered(
    stack: Stack, timeout: float, poll: float
) -> tuple[Any, dict[str, Any]]:
    """Run the worker(s) until no message is undelivered or `timeout` passes: the last
    outcome, and the CPU per message published once they had started up (their CPU from
    their first poll of the queue / the messages published since)."""
    stack.start_worker()
    deadline = time.monotonic() + timeout
    try:
        await stack.wait_workers()
        window = CpuWindow({"worker": stack.pids("worker")}, stack.db)
        await window.begin()
        before = await stack.db.fetchrow(OUTCOME, THROTTLE_CODES)
        while True:
            outcome = await stack.db.fetchrow(OUTCOME, THROTTLE_CODES)
            if outcome["undelivered"] == 0 or time.monotonic() > deadline:
                await window.end()
                return outcome, window.summary(outcome["published"] - before["published"])
            await asyncio.sleep(poll)
    finally:
        stack.stop_workers()


async def enable_sandbox_rate_limit(stack: Stack, per_second: int) -> bool:
    """Have the sandbox throttle each account above `per_second` sends, as Meta does
    (app/sandbox/faults.py RateLimit: sliding one-second windows, code 4 once over).

    Returns False for a sandbox without that knob (its Faults model forbids unknown fields,
    so it refuses the request): the scenario then runs without a cap, and says so.
    """
    async with httpx.AsyncClient(base_url=stack.sandbox_url) as sandbox:
        response = await sandbox.post(
            "/_sandbox/faults", json={"rate_limit": {"per_second": per_second}}
        )
    if not response.is_success:
        return False
    return (response.json().get("rate_limit") or {}).get("per_second") == per_second


async def run_rate_limit(stack: Stack, fixtures: Fixtures, seconds: float) -> dict:
    """One profile offered twice its cap's worth for `seconds`: the share of the cap used."""
    result = await deliver_all(
        stack,
        fixtures,
        fixtures.main.chats,
        int(2 * INSTAGRAM_SEND_CAP * seconds),
        timeout=seconds + 3,  # the worker's start-up, which the rate leaves out
        rate_cap=INSTAGRAM_SEND_CAP,
    )
    return {
        **result,
        "cap": INSTAGRAM_SEND_CAP,
        "share_of_cap": (result["rate"] or 0.0) / INSTAGRAM_SEND_CAP,
    }
