"""Load generators: wrk for saturating POST loads, an httpx client for paced or serial ones."""

import asyncio
import json
import shutil
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

WRK_SCRIPTS = Path(__file__).resolve().parent / "wrk"
MARKER = "BENCH_JSON "


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit(
            "wrk is not installed; install it with `apt-get install -y wrk` "
            "(Debian/Ubuntu) or `brew install wrk` (macOS), then run again"
        )


@dataclass
class WrkResult:
    requests: int
    seconds: float
    errors: dict[str, int]
    latency_ms: dict[str, float]
    # The latency histogram's percentiles (p50 … p99.99, and the max), keyed "50" … "max".
    percentiles_ms: dict[str, float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


async def wrk(
    url: str, script: str, args: list[str], seconds: float, connections: int
) -> WrkResult:
    """One wrk run (one thread: a single client core is plenty at these rates)."""
    process = await asyncio.create_subprocess_exec(
        "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
        "-s", str(WRK_SCRIPTS / script), url, "--", *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    lines = [line for line in out.decode().splitlines() if line.startswith(MARKER)]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{out.decode()}\n{err.decode()}")
    summary = json.loads(lines[-1][len(MARKER) :])
    return WrkResult(
        requests=summary["requests"],
        seconds=summary["duration_us"] / 1e6,
        errors=summary["errors"],
        latency_ms={k: v / 1000 for k, v in summary["latency_us"].items()},
        percentiles_ms={
            **{k: v / 1000 for k, v in summary["percentiles_us"].items()},
            "max": summary["latency_us"]["max"] / 1000,
        },
    )


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p95/p99 (nearest-rank on the sorted samples) and the max."""
    ordered = sorted(samples)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]

    return {
        "p50": rank(50),
        "p95": rank(95),
        "p99": rank(99),
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


async def paced(count: int, rate: float, send: Callable[[int], Awaitable[None]]) -> None:
    """Open-loop load: call send(i) at t0 + i/rate whatever the answers' speed, so a slow
    answer does not lower the offered rate (no coordinated omission)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for i in range(count):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(i)))
    await asyncio.gather(*tasks)


async def serial_latency(client: httpx.AsyncClient, path: str, count: int) -> dict[str, float]:
    """Milliseconds per GET, one request at a time, after a short warm-up."""
    for _ in range(10):
        (await client.get(path)).raise_for_status()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        response = await client.get(path)
        samples.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return percentiles(samples)
