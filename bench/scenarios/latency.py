"""2. Latency from POST to the sandbox (Meta) receiving the send, at a fixed offered rate.

An open-loop client posts `rate` messages/s with unique bodies, noting the wall-clock time
just before each POST; the sandbox records `received_at` for each send. Both clocks are
this machine's, so the difference is the end-to-end latency a customer would see. The
client is aiohttp: httpx's pool costs more CPU the more requests are in flight, so on a slow
machine an httpx client fell behind its own schedule and measured itself (seconds).
"""

import asyncio
import random
import time
from contextlib import asynccontextmanager
from datetime import datetime

import aiohttp
import httpx

from bench.fixtures import Chat, Fixtures
from bench.loadgen import paced, percentiles
from bench.stack import Stack

DRAIN_SECONDS = 30


async def run(
    stack: Stack, fixtures: Fixtures, chats: list[Chat], rate: float, seconds: float
) -> dict:
    """`rate` messages/s spread over `chats`: Meta's cap is per profile, so a realistic
    100 msg/s comes from many profiles, not one."""
    await stack.reset_messages()
    count = int(rate * seconds)
    posted_at: dict[str, float] = {}
    accept_ms: list[float] = []
    failures: list[str] = []
    headers = {"Authorization": f"Bearer {fixtures.token}"}
    # Open loop: as many connections as answers are outstanding, and no give-up before 30 s.
    async with (
        aiohttp.ClientSession(
            stack.api_url,
            headers=headers,
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=30),
        ) as api,
        httpx.AsyncClient(base_url=stack.sandbox_url) as sandbox,
        _running_worker(stack),
    ):
        await _wait_for_worker(api, sandbox, fixtures)
        await sandbox.delete("/_sandbox/sent")
        run_id = f"{time.time_ns()}"

        async def send(i: int) -> None:
            body = f"latency {run_id} {i}"
            chat = random.choice(chats)
            posted_at[body] = time.time()
            try:
                async with api.post(chat.path, json={"body": body}) as response:
                    response.raise_for_status()
            except (aiohttp.ClientError, TimeoutError) as error:
                failures.append(repr(error))
                return
            accept_ms.append((time.time() - posted_at[body]) * 1000)

        await paced(count, rate, send)
        received = await _drain(sandbox, count)

    latencies = [
        (datetime.fromisoformat(r["received_at"]).timestamp() - posted_at[r["message"]["text"]])
        * 1000
        for r in received
        if r["message"].get("text") in posted_at
    ]
    return {
        "offered_rate": rate,
        "seconds": seconds,
        "sent": count,
        "chats": len(chats),
        "profiles": len({chat.profile for chat in chats}),
        "delivered": len(latencies),
        "post_to_meta_ms": percentiles(latencies) if latencies else None,
        "accept_ms": percentiles(accept_ms) if accept_ms else None,
        "failed_posts": len(failures),
        "first_failure": failures[0] if failures else None,
    }


@asynccontextmanager
async def _running_worker(stack: Stack):
    stack.start_worker()
    try:
        yield
    finally:
        stack.stop_workers()


async def _wait_for_worker(
    api: aiohttp.ClientSession, sandbox: httpx.AsyncClient, fixtures: Fixtures
) -> None:
    """One message through end to end, so the worker's start-up is not measured."""
    async with api.post(fixtures.main.chats[0].path, json={"body": "warm-up"}) as response:
        response.raise_for_status()
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline:
        if (await sandbox.get("/_sandbox/sent")).json()["data"]:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the worker delivered nothing within 30 s; see worker.log")


async def _drain(sandbox: httpx.AsyncClient, count: int) -> list[dict]:
    """The sandbox's records once every send has arrived (or the drain time is up)."""
    deadline = time.monotonic() + DRAIN_SECONDS
    while True:
        sent = (await sandbox.get("/_sandbox/sent")).json()["data"]
        if len(sent) >= count or time.monotonic() > deadline:
            return sent
        await asyncio.sleep(0.2)
