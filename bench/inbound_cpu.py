"""The worker's CPU per inbound event, from a fixed backlog (docs/performance.md, "CPU per
operation of the worker"): `python -m bench.inbound_cpu [--rounds N] [--app-dir DIR]`.

The bench stack with 50 profiles; per round, a worker started on an empty queue, its idle
CPU read for 2 s, then frozen (SIGSTOP); POSTS signed webhook POSTs of ENTRIES new messages
each acknowledged by the API; the worker's utime + stime read, the worker resumed
(SIGCONT), read again once every event is stored. Raw: CPU / events; net: less the idle
rate over the run's wall time. The first round creates the chats and is reported apart.
"""

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench import fixtures
from bench.cpu import tree_seconds
from bench.scenarios.webhook import ENTRIES, INBOUND, grant_consent, signed_post
from bench.stack import ROOT, Stack

POSTS = 2_000
IDLE_SECONDS = 2.0


async def post_all(stack: Stack, bodies: list[tuple[str, str]]) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as client:
        todo = iter(bodies)

        async def poster() -> None:
            for body, signature in todo:
                answer = await client.post(
                    "/webhooks/instagram",
                    content=body,
                    headers={"content-type": "application/json", "x-hub-signature-256": signature},
                )
                answer.raise_for_status()

        await asyncio.gather(*(poster() for _ in range(16)))


async def one_round(stack: Stack, accounts: list[str], number: int) -> dict[str, float]:
    stack.stop_workers()
    await stack.db.execute("TRUNCATE messages CASCADE")
    await stack.queue.flushdb()
    now = int(time.time() * 1000)
    bodies = []
    for i in range(POSTS):
        events = [
            (now + n, f"aWdfZAG1faXRlbTpjcHU{number:03d}{n:09d}", f"hello {n}")
            for n in range(i * ENTRIES, (i + 1) * ENTRIES)
        ]
        bodies.append(signed_post(accounts, events))
    stack.start_worker()
    await stack.wait_workers()
    [pid] = stack.pids("worker")
    await asyncio.sleep(1.0)
    idle_start = tree_seconds([pid])
    await asyncio.sleep(IDLE_SECONDS)
    idle_rate = (tree_seconds([pid]) - idle_start) / IDLE_SECONDS
    os.kill(pid, signal.SIGSTOP)
    try:
        await post_all(stack, bodies)
        before = tree_seconds([pid])
        started = time.monotonic()
    finally:
        os.kill(pid, signal.SIGCONT)
    spy = None
    if os.environ.get("PYSPY_OUT"):  # a profile of the drain, for a look (py-spy on PATH)
        out = f"{os.environ['PYSPY_OUT']}-{number}.txt"
        spy = subprocess.Popen(
            ["py-spy", "record", "--pid", str(pid), "--format", "raw", "-r", "200", "-o", out],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    events = POSTS * ENTRIES
    while (await stack.db.fetchval(INBOUND)) < events:
        if time.monotonic() - started > 300:
            raise RuntimeError("not every event was stored within 300 s")
        await asyncio.sleep(0.05)
    wall = time.monotonic() - started
    spent = tree_seconds([pid]) - before
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait()
    stack.stop_workers()
    return {
        "raw_us": spent / events * 1e6,
        "net_us": (spent - idle_rate * wall) / events * 1e6,
        "idle_ms_per_s": idle_rate * 1000,
        "wall_s": wall,
        "events_per_s": events / wall,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    # The source trees of the API and the worker, taking turns round by round.
    parser.add_argument("--app-dirs", type=Path, nargs="+", default=[ROOT])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    stack = Stack(log_dir=Path("/tmp/inbound/logs"))
    try:
        await stack.open()
        fx = await fixtures.create(stack, 50, 2)
        await grant_consent(stack)
        accounts = [profile.platform_id for profile in fx.spread]
        rounds: dict[str, list[dict[str, float]]] = {str(d): [] for d in args.app_dirs}
        for number in range(args.rounds * len(args.app_dirs) + 1):
            app_dir = args.app_dirs[number % len(args.app_dirs)]
            if app_dir != stack.app_dir:  # the API too: it enqueues the worker's jobs
                stack.app_dir = app_dir
                stack.stop("api")
                await stack.start_api()
            result = await one_round(stack, accounts, number)
            first = "first (chats made) " if number == 0 else ""
            print(f"{first}{app_dir} {json.dumps(result)}", flush=True)
            if number:
                rounds[str(app_dir)].append(result)
        summary = {
            app_dir: {key: statistics.median(r[key] for r in runs) for key in ("raw_us", "net_us")}
            for app_dir, runs in rounds.items()
        }
        print("median", json.dumps(summary), flush=True)
        if args.out:
            args.out.write_text(json.dumps({"rounds": rounds, "median": summary}))
    finally:
        await stack.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
