"""10. Scale out: the accept rate with N API processes, and sends/s with M workers, against 1/1.

Against one PostgreSQL and one Redis, configurations take turns, round after round: the API
restarted with `--workers N` (uvicorn's processes), then wrk on the accept path as in measure 1
(the worker stopped), then M `dmrelay worker` processes deliver messages over the spread
profiles as in measure 3. Each figure comes with its CPU per message, API or workers, and
PostgreSQL's backends: where the CPU goes once the processes no longer share the cores evenly.
"""

from typing import Any

from bench.fixtures import Chat, Fixtures
from bench.scenarios import accept, delivery
from bench.stack import Stack


async def _one(
    stack: Stack, fixtures: Fixtures, chats: list[Chat], seconds: float, messages: int,
    timeout: float,
) -> dict[str, Any]:  # fmt: skip
    stack.stop_workers()
    stack.stop("api")
    await stack.start_api()
    await stack.reset_messages()
    paths = accept.write_paths(fixtures.main.chats, stack.log_dir / "chat-paths.txt")
    target = accept.Target("dmrelay", stack.api_url, "api")
    load = await accept.measured_load(stack, target, paths, fixtures.token, seconds)
    sends = await delivery.deliver_all(stack, fixtures, chats, messages, timeout)
    return {
        "accept_rate": load["rate"],
        "accept_p99_ms": load["latency_ms"]["p99"],
        "accept_errors": load["errors"],
        "api_cpu_ms_per_request": load["cpu_seconds"] * 1000 / (load["requests"] or 1),
        "postgres_cpu_ms_per_request": load["postgres_cpu_seconds"]
        * 1000
        / (load["requests"] or 1),
        "send_rate": sends["rate"],
        "published": sends["published"],
        "messages": sends["messages"],
        "worker_cpu_ms_per_send": sends["cpu"]["ms_per_item"]["worker"],
        "postgres_cpu_ms_per_send": sends["cpu"]["ms_per_item"]["postgres"],
    }


async def run(
    stack: Stack, fixtures: Fixtures, chats: list[Chat], configs: list[tuple[int, int]],
    rounds: int, seconds: float, messages: int, timeout: float,
) -> dict[str, Any]:  # fmt: skip
    """configs: (API processes, workers), the first the baseline."""
    saved = stack.api_processes, stack.workers
    runs: dict[tuple[int, int], list[dict[str, Any]]] = {config: [] for config in configs}
    try:
        for _ in range(rounds):
            for config in configs:
                stack.api_processes, stack.workers = config
                runs[config].append(await _one(stack, fixtures, chats, seconds, messages, timeout))
    finally:
        stack.api_processes, stack.workers = saved
        stack.stop_workers()
        stack.stop("api")
        await stack.start_api()
    results = []
    for (api_processes, workers), done in runs.items():
        by_accept = sorted(done, key=lambda r: r["accept_rate"])[len(done) // 2]
        by_sends = sorted(done, key=lambda r: r["send_rate"] or 0)[len(done) // 2]
        results.append(
            {
                "api_processes": api_processes,
                "workers": workers,
                "accept_rate": by_accept["accept_rate"],
                "accept_rates": [r["accept_rate"] for r in done],
                "accept_p99_ms": by_accept["accept_p99_ms"],
                "send_rate": by_sends["send_rate"],
                "send_rates": [r["send_rate"] for r in done],
                "api_cpu_ms_per_request": _mean(done, "api_cpu_ms_per_request"),
                "postgres_cpu_ms_per_request": _mean(done, "postgres_cpu_ms_per_request"),
                "worker_cpu_ms_per_send": _mean(done, "worker_cpu_ms_per_send"),
                "postgres_cpu_ms_per_send": _mean(done, "postgres_cpu_ms_per_send"),
                "runs": done,
            }
        )
    base = results[0]
    for result in results:
        result["accept_vs_base"] = result["accept_rate"] / base["accept_rate"]
        result["sends_vs_base"] = (
            (result["send_rate"] or 0) / base["send_rate"] if base["send_rate"] else None
        )
    return {"rounds": rounds, "seconds": seconds, "messages": messages, "configs": results}


def _mean(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r[key] is not None]
    return sum(values) / len(values) if values else None
