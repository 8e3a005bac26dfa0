"""10. Scale out: the accept rate with N API processes and sends/s with M workers, against one
PostgreSQL and one Redis, as N and M grow; and where they stop growing.

Each API process (each of uvicorn's `--workers N` children) and each worker runs under a CPU
quota of its own (`--cpu-per-process`, bench/cgroups.py) where the machine lets the bench set
one, so that each behaves like a process with a small core to itself; PostgreSQL, Redis, the
sandbox and the load generator are not capped. Without the quota, on a small machine, a
second process can only take CPU from the first (and from PostgreSQL): nothing grows.

Part 1, dmrelay's own cost (the sandbox answers at once): the configurations (1/1, 2/2, 3/3
…) take turns, round after round: the API restarted with `--workers N`, wrk on the accept
path as in measure 1 (the worker stopped), then M `dmrelay worker` processes deliver messages
over the spread profiles as in measure 3. Part 2, Meta's own time to answer (the sandbox
waits `latency_ms` before each answer): M workers deliver over more chats, one chat sending
one message at a time; there a worker's concurrency (its Graph connections), not its CPU,
sets its pace. Each figure comes with the CPU per message of the API or the workers and of
PostgreSQL's backends, the cores each used, and the whole machine's busy cores: the figures
that say which of them is the limit.
"""

import atexit
import statistics
from dataclasses import dataclass
from typing import Any

from bench import fixtures as bench_fixtures
from bench.cgroups import CpuQuota, QuotaUnavailable
from bench.fixtures import Chat, Fixtures
from bench.scenarios import accept, delivery
from bench.stack import Stack


@dataclass(frozen=True)
class Options:
    # (API processes, workers), the first the baseline.
    configs: list[tuple[int, int]]
    rounds: int
    # wrk's time on the accept path; messages delivered, and the time they may take.
    seconds: float
    messages: int
    timeout: float
    # Cores per dmrelay process (0: no quota).
    cpu_per_process: float
    # Part 2: the sandbox's delay per answer, the worker counts, chats per spread profile and
    # messages delivered (0 ms: part 2 is skipped).
    latency_ms: int
    latency_workers: list[int]
    latency_chats_per_profile: int
    latency_messages: int


async def _one(
    stack: Stack, fixtures: Fixtures, chats: list[Chat], options: Options
) -> dict[str, Any]:
    stack.stop_workers()
    stack.stop("api")
    await stack.start_api()
    await stack.reset_messages()
    paths = accept.write_paths(fixtures.main.chats, stack.log_dir / "chat-paths.txt")
    target = accept.Target("dmrelay", stack.api_url, "api")
    load = await accept.measured_load(stack, target, paths, fixtures.token, options.seconds)
    _uncap_api(stack)
    sends = await delivery.deliver_all(stack, fixtures, chats, options.messages, options.timeout)
    requests = load["requests"] or 1
    return {
        "accept_rate": load["rate"],
        "accept_p99_ms": load["latency_ms"]["p99"],
        "accept_errors": load["errors"],
        "api_cpu_ms_per_request": load["cpu_seconds"] * 1000 / requests,
        "postgres_cpu_ms_per_request": load["postgres_cpu_seconds"] * 1000 / requests,
        # Cores used over the load: each API process's (its tree / N), PostgreSQL's backends'
        # and the whole machine's.
        "api_cores_each": load["cpu_seconds"] / load["wall_seconds"] / stack.api_processes,
        "postgres_cores_accept": load["postgres_cpu_seconds"] / load["wall_seconds"],
        "machine_cores_accept": load["machine_busy_cores"],
        "wal_bytes_per_request": load["wal_bytes"] / requests,
        **_sends(stack, sends),
    }


def _uncap_api(stack: Stack) -> None:
    """The API uncapped while it accepts the messages a delivery run sends: only the
    workers are measured then, and a capped API would take long to fill their queue."""
    if stack.quota is not None:
        stack.quota.uncap("api")


def _sends(stack: Stack, sends: dict[str, Any]) -> dict[str, Any]:
    cpu = sends["cpu"]
    wall = cpu["wall_seconds"] or 1
    return {
        "send_rate": sends["rate"],
        "published": sends["published"],
        "messages": sends["messages"],
        "worker_cpu_ms_per_send": cpu["ms_per_item"]["worker"],
        "postgres_cpu_ms_per_send": cpu["ms_per_item"]["postgres"],
        "worker_cores_each": cpu["cpu_seconds"]["worker"] / wall / stack.workers,
        "postgres_cores_send": cpu["cpu_seconds"]["postgres"] / wall,
        "machine_cores_send": cpu["machine_busy_cores"],
        "wal_bytes_per_send": cpu["wal_bytes"] / (cpu["items"] or 1),
    }


async def run(
    stack: Stack, fixtures: Fixtures, chats: list[Chat], options: Options
) -> dict[str, Any]:
    saved = stack.api_processes, stack.workers
    quota: CpuQuota | None = None
    quota_note = None
    try:
        quota = CpuQuota(options.cpu_per_process).open()
    except QuotaUnavailable as why:
        quota_note = str(why)
    else:
        atexit.register(quota.close)  # also on an exit that skips the finally below
    stack.quota = quota
    cpu_runs: dict[tuple[int, int], list[dict[str, Any]]] = {c: [] for c in options.configs}
    latency_runs: dict[int, list[dict[str, Any]]] = {m: [] for m in options.latency_workers}
    try:
        for _ in range(options.rounds):
            for config in options.configs:
                stack.api_processes, stack.workers = config
                cpu_runs[config].append(await _one(stack, fixtures, chats, options))
        if options.latency_ms and options.latency_workers:
            # The most API processes measured, to accept the messages quickly: only the
            # workers are measured here.
            stack.api_processes = max(n for n, _ in options.configs)
            stack.stop("api")
            await stack.start_api()
            _uncap_api(stack)
            many = await bench_fixtures.spread_chats(
                stack, fixtures, options.latency_chats_per_profile
            )
            for _ in range(options.rounds):
                for workers in options.latency_workers:
                    stack.workers = workers
                    sends = await delivery.deliver_all(
                        stack, fixtures, many, options.latency_messages, options.timeout,
                        latency_ms=options.latency_ms,
                    )  # fmt: skip
                    latency_runs[workers].append(_sends(stack, sends))
    finally:
        stack.api_processes, stack.workers = saved
        stack.stop_workers()
        stack.stop("api")
        stack.quota = None
        if quota is not None:
            quota.close()
            atexit.unregister(quota.close)
        await stack.reset_messages()  # the sandbox's latency off
        await stack.start_api()
    configs = [
        {"api_processes": n, "workers": m, **_summary(done)} for (n, m), done in cpu_runs.items()
    ]
    _ratios(configs, "accept_rate", "accept")
    _ratios(configs, "send_rate", "sends")
    at_latency = [{"workers": m, **_summary(done)} for m, done in latency_runs.items() if done]
    _ratios(at_latency, "send_rate", "sends")
    return {
        "rounds": options.rounds,
        "seconds": options.seconds,
        "messages": options.messages,
        "cpu_per_process": options.cpu_per_process if quota is not None else None,
        "quota_note": quota_note,
        "configs": configs,
        "latency_ms": options.latency_ms,
        "latency_chats": options.latency_chats_per_profile * len(fixtures.spread),
        "latency_messages": options.latency_messages,
        "at_latency": at_latency,
    }


def _summary(done: list[dict[str, Any]]) -> dict[str, Any]:
    """The median round's rates; the mean of the rounds' CPU figures; every round kept."""
    summary: dict[str, Any] = {}
    for key in done[0]:
        values = [r[key] for r in done if r[key] is not None]
        if key.endswith("_rate"):
            summary[key] = statistics.median(values) if values else None
            summary[f"{key}s"] = [r[key] for r in done]
        elif key in ("published", "messages", "accept_errors"):
            summary[key] = sum(values)
        else:
            summary[key] = sum(values) / len(values) if values else None
    summary["runs"] = done
    return summary


def _ratios(results: list[dict[str, Any]], key: str, name: str) -> None:
    """Each result's rate against the first's (the baseline) and against the one before."""
    for index, result in enumerate(results):
        base, before = results[0][key], results[max(index - 1, 0)][key]
        rate = result[key] or 0
        result[f"{name}_vs_base"] = rate / base if base else None
        result[f"{name}_vs_previous"] = rate / before if before else None
