"""9. Hot chat rows: sending to ONE chat against sending to many, by CPU and lock waits.

Every accepted message used to update its chat's row (migration 0004's `message_count`
trigger), so 32 clients sending to one chat all updated one row, where 32 over 100 chats
rarely meet; migration 0017 keeps the count in shards off the row. The
worker is stopped (the accept path alone); wrk with 32 connections posts to one chat of the
main profile, then to its 100 chats, dmrelay and the floor (whose INSERT fires the same
trigger) taking turns, round after round, after one warm-up each. For each run: req/s, CPU
per request of the API (or floor) and of PostgreSQL's backends, the backends waiting on a
lock (pg_stat_activity sampled every 50 ms), and the `chats` table's dead tuples, HOT
updates and autovacuums before and after (pg_stat_user_tables, read once the backends have
reported: STATS_DELAY).
"""

import asyncio
import statistics
from typing import Any

from bench.cpu import POSTGRES, CpuWindow, LockSampler, table_stats
from bench.fixtures import Fixtures
from bench.loadgen import wrk
from bench.scenarios.accept import CONNECTIONS, WARMUP_SECONDS, Target, write_paths
from bench.stack import Stack

# A busy backend reports its counts to the statistics system at most once a second, and
# what it holds back then only after 10 s idle: a reading waits that long after a load.
STATS_DELAY = 11.0
TABLE_COUNTERS = ("n_dead_tup", "n_tup_upd", "n_tup_hot_upd", "autovacuum_count")


async def _run(
    stack: Stack, target: Target, paths: str, token: str, seconds: float,
    before: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """One run; `before` is the `chats` statistics read after the previous one."""
    async with (
        CpuWindow({target.role: stack.pids(target.role)}, stack.db) as window,
        LockSampler(stack.db) as locks,
    ):
        result = await wrk(target.url, "post_messages.lua", [paths, token], seconds, CONNECTIONS)
    await asyncio.sleep(STATS_DELAY)
    after = await table_stats(stack.db, "chats")
    return {
        "rate": result.rate,
        "requests": result.requests,
        "latency_ms": result.latency_ms,
        "errors": result.failed,
        "cpu_ms_per_request": window.seconds[target.role] * 1000 / (result.requests or 1),
        "postgres_cpu_ms_per_request": window.seconds[POSTGRES] * 1000 / (result.requests or 1),
        "locks": locks.summary(),
        "chats_before": before,
        "chats_after": after,
        "chats_delta": {k: (after.get(k) or 0) - (before.get(k) or 0) for k in TABLE_COUNTERS},
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    median = sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]
    requests = sum(r["requests"] for r in runs) or 1

    def per_request(key: str) -> float:
        return sum(r[key] * r["requests"] for r in runs) / requests

    samples = sum(r["locks"]["samples"] for r in runs) or 1
    return {
        "rate": median["rate"],
        "rates": [r["rate"] for r in runs],
        "p99_ms": median["latency_ms"]["p99"],
        "errors": sum(r["errors"] for r in runs),
        "cpu_ms_per_request": per_request("cpu_ms_per_request"),
        "postgres_cpu_ms_per_request": per_request("postgres_cpu_ms_per_request"),
        "mean_lock_waits": sum(r["locks"]["mean_lock_waits"] * r["locks"]["samples"] for r in runs)
        / samples,
        "lock_wait_share": statistics.fmean([r["locks"]["lock_wait_share"] for r in runs]),
        "max_lock_waits": max(r["locks"]["max_lock_waits"] for r in runs),
        # Chat-row churn per request: updates, the share of them HOT, dead tuples left.
        "chat_updates_per_request": sum(r["chats_delta"]["n_tup_upd"] for r in runs) / requests,
        "hot_update_share": _share(
            sum(r["chats_delta"]["n_tup_hot_upd"] for r in runs),
            sum(r["chats_delta"]["n_tup_upd"] for r in runs),
        ),
        "max_dead_tuples": max(r["chats_after"].get("n_dead_tup") or 0 for r in runs),
        # Net: HOT pruning removes dead tuples as it goes (and says so to the statistics).
        "dead_tuples_added": sum(r["chats_delta"]["n_dead_tup"] for r in runs),
        "autovacuums": sum(r["chats_delta"]["autovacuum_count"] for r in runs),
        "runs": runs,
    }


def _total_cpu(summary: dict[str, Any]) -> float:
    return float(summary["cpu_ms_per_request"] + summary["postgres_cpu_ms_per_request"])


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


async def run(stack: Stack, fixtures: Fixtures, seconds: float, rounds: int) -> dict[str, Any]:
    stack.stop_workers()
    await stack.reset_messages()
    await stack.start_floor()
    one = str(write_paths(fixtures.main.chats[:1], stack.log_dir / "one-chat-path.txt"))
    many = str(write_paths(fixtures.main.chats, stack.log_dir / "chat-paths.txt"))
    dmrelay = Target("dmrelay", stack.api_url, "api")
    floor = Target("floor", stack.floor_url, "floor")
    plan = [
        ("dmrelay_one", dmrelay, one),
        ("dmrelay_many", dmrelay, many),
        ("floor_one", floor, one),
        ("floor_many", floor, many),
    ]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in plan}
    try:
        # Warmed up once each; then each run's statistics start where the last one's ended.
        for target in (dmrelay, floor):
            await wrk(target.url, "post_messages.lua", [many, fixtures.token], WARMUP_SECONDS,
                      CONNECTIONS)  # fmt: skip
        await asyncio.sleep(STATS_DELAY)
        stats = await table_stats(stack.db, "chats")
        for _ in range(rounds):
            for name, target, paths in plan:
                done = await _run(stack, target, paths, fixtures.token, seconds, stats)
                runs[name].append(done)
                stats = done["chats_after"]
    finally:
        stack.stop("floor")
    result: dict[str, Any] = {name: _summary(r) for name, r in runs.items()}
    result.update(
        connections=CONNECTIONS,
        seconds=seconds,
        rounds=rounds,
        chats_many=len(fixtures.main.chats),
        # One chat against many: 1.0 means the hot row costs nothing.
        ratio=result["dmrelay_one"]["rate"] / result["dmrelay_many"]["rate"],
        floor_ratio=result["floor_one"]["rate"] / result["floor_many"]["rate"],
        # The API's and PostgreSQL's CPU together: a hot row's waits and retries cost both.
        cpu_ratio=_total_cpu(result["dmrelay_one"]) / _total_cpu(result["dmrelay_many"]),
    )
    return result
