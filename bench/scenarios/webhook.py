"""5. Meta webhook: how fast POST /webhooks/instagram answers, and how many events it ingests.

wrk posts precomputed bodies, each signed with META_APP_SECRET as Meta signs them, made of
ENTRIES entries of one messaging event (a unique mid each), and each sent once. The load is
paced at OFFERED_POSTS a second, a quarter above the 3,000 events/s goal (#22; a load at the
goal or under it could only show the goal unmet): the ack is timed
while the worker applies events at full tilt on the same cores, as in production, rather
than against a saturating client (whose latency is set by its number of connections, and
which would starve the worker). "Ingested" counts the inbound rows that appear in
`messages` while the worker runs; after the load the count is watched until every event the
completed POSTs carried is stored, or it has stopped growing for STABLE_SECONDS, or `settle`
seconds have passed (then the figure is a lower bound, and says so).
"""

import asyncio
import hashlib
import hmac
import json
import random
import time
from pathlib import Path

import httpx

from bench.cpu import CpuWindow
from bench.fixtures import Fixtures
from bench.loadgen import wrk
from bench.stack import APP_SECRET, Stack

ENTRIES = 10
OFFERED_POSTS = 375  # a second: 3,750 events/s
CONNECTIONS = 32
# Each connection pauses this long between its requests, which paces the load at about
# OFFERED_POSTS a second (a little under: an answer's own time adds to the pause).
PAUSE_MS = round(CONNECTIONS * 1000 / OFFERED_POSTS)
# Each account hears from this many customers: chats get created, then revisited.
SENDERS_PER_ACCOUNT = 200
FIRST_SENDER = 9_100_000_000_000_000
# Long enough that a worker starved of CPU for a moment is not taken for done.
STABLE_SECONDS = 10.0
INBOUND = "SELECT count(*) FROM messages WHERE direction = 'inbound'"


def signed_post(accounts: list[str], events: list[tuple[int, str, str]]) -> tuple[str, str]:
    """One webhook POST as Meta sends it: its body, an entry per (timestamp, mid, text) from
    a random customer to a random account, and its signature header."""
    entries = []
    for timestamp, mid, text in events:
        account = random.choice(accounts)
        event = {
            "sender": {"id": str(FIRST_SENDER + random.randrange(SENDERS_PER_ACCOUNT))},
            "recipient": {"id": account},
            "timestamp": timestamp,
            "message": {"mid": mid, "text": text},
        }
        entries.append({"id": account, "time": timestamp, "messaging": [event]})
    body = json.dumps({"object": "instagram", "entry": entries}, ensure_ascii=True)
    digest = hmac.new(APP_SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
    return body, f"sha256={digest}"


def write_bodies(fixtures: Fixtures, count: int, path: Path) -> Path:
    accounts = [profile.platform_id for profile in fixtures.spread]
    now = int(time.time() * 1000)
    lines = []
    for i in range(count):
        numbers = range(i * ENTRIES, (i + 1) * ENTRIES)
        events = [(now + n, f"aWdfZAG1faXRlbTpiZW5jaD{n:012d}", f"hello {n}") for n in numbers]
        body, signature = signed_post(accounts, events)
        lines.append(f"{signature} {body}\n")
    path.write_text("".join(lines))
    return path


async def grant_consent(stack: Stack) -> None:
    """These customers have written to the accounts, so Meta shares their profiles. The
    bodies go straight to dmrelay, not through the sandbox's own emitter, so the sandbox
    is told, or it would answer every profile request with code 230 (no consent)."""
    senders = {str(FIRST_SENDER + n): {} for n in range(SENDERS_PER_ACCOUNT)}
    async with httpx.AsyncClient(base_url=stack.sandbox_url) as sandbox:
        (await sandbox.post("/_sandbox/profiles", json=senders)).raise_for_status()


async def run(stack: Stack, fixtures: Fixtures, seconds: float, settle: float) -> dict:
    stack.stop_workers()
    await stack.reset_messages()
    # Enough that none is sent twice, as Meta sends an acknowledged delivery once.
    bodies = round(OFFERED_POSTS * seconds * 1.2)
    path = write_bodies(fixtures, bodies, stack.log_dir / "webhook-bodies.txt")
    await grant_consent(stack)
    stack.start_worker()
    try:
        await stack.wait_workers()
        # The API's CPU per event acknowledged; the worker's per event stored, load and
        # settling both (the API is idle by then).
        window = CpuWindow({"api": stack.pids("api"), "worker": stack.pids("worker")}, stack.db)
        await window.begin()
        load = await wrk(
            stack.api_url, "webhook.lua", [str(path), str(PAUSE_MS)], seconds, CONNECTIONS
        )
        offered = min(load.requests, bodies) * ENTRIES
        stored, late, settled = await _settle(stack, offered, settle)
        await window.end()
    finally:
        stack.stop_workers()
    return {
        "connections": CONNECTIONS,
        "pause_ms": PAUSE_MS,
        "seconds": seconds,
        "entries": ENTRIES,
        "posts": load.requests,
        "post_rate": load.rate,
        "unique_posts": min(load.requests, bodies),
        "events_offered": offered,
        "events_stored": stored,
        "stored_after_load_seconds": late,
        "settled": settled,
        "events_per_second": stored / (load.seconds + late),
        "ack_ms": load.latency_ms,
        "cpu": window.summary(stored),
        # Every POST carries ENTRIES events, duplicates (a body sent twice) included.
        "api_cpu_ms_per_event": window.seconds["api"] * 1000 / (load.requests * ENTRIES or 1),
        "workers": stack.workers,
        "errors": load.errors,
    }


async def _settle(stack: Stack, offered: int, limit: float) -> tuple[int, float, bool]:
    """The inbound row count once it reaches `offered` or stops growing, for how long it grew
    after the load, and whether it did either within `limit` seconds."""
    ended = time.monotonic()
    count, last_growth = await stack.db.fetchval(INBOUND), ended
    while True:
        now = time.monotonic()
        if count >= offered or now - last_growth >= STABLE_SECONDS:
            return count, last_growth - ended, True
        if now - ended >= limit:
            return count, last_growth - ended, False
        await asyncio.sleep(0.25)
        latest = await stack.db.fetchval(INBOUND)
        if latest != count:
            count, last_growth = latest, time.monotonic()
