"""1. Accept rate of POST /api/chats/{id}/messages, against the floor (bench/floor.py), with
its tail latency and its CPU per request; and the same API with request logging off.

The worker is stopped, so only the accept path runs (jobs pile up in Redis). The floor,
dmrelay, and a second dmrelay API whose request log is off (LOG_LEVEL=WARNING: the access
line is written at INFO) take turns, round after round, so that the machine's drift hits
them alike; the median round is reported, and the CPU per request over all rounds (the
process tree's utime + stime over each run / its requests; PostgreSQL's backends too).
"""

import asyncio
import shutil
import statistics
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cpu import POSTGRES, CpuWindow
from bench.fixtures import Chat, Fixtures
from bench.loadgen import wrk
from bench.stack import Stack, free_port

CONNECTIONS = 32
WARMUP_SECONDS = 2
# The API with its request log off: the log level above the access line's INFO.
QUIET_ENV = {"LOG_LEVEL": "WARNING"}


@dataclass(frozen=True)
class Target:
    """What a load run is aimed at: its URL and the process (role) whose CPU it costs."""

    name: str
    url: str
    role: str


def write_paths(chats: list[Chat], path: Path) -> Path:
    path.write_text("".join(f"{chat.path}\n" for chat in chats))
    return path


async def measured_load(
    stack: Stack, target: Target, paths: Path, token: str, seconds: float
) -> dict[str, Any]:
    """One warmed-up wrk run against `target`, with the CPU its process tree and PostgreSQL's
    backends spent on it."""
    await wrk(target.url, "post_messages.lua", [str(paths), token], WARMUP_SECONDS, CONNECTIONS)
    async with CpuWindow({target.role: stack.pids(target.role)}, stack.db) as window:
        result = await wrk(target.url, "post_messages.lua", [str(paths), token], seconds,
                           CONNECTIONS)  # fmt: skip
    return {
        "rate": result.rate,
        "requests": result.requests,
        "latency_ms": result.latency_ms,
        "percentiles_ms": result.percentiles_ms,
        "errors": result.failed,
        "cpu_seconds": window.seconds[target.role],
        "postgres_cpu_seconds": window.seconds[POSTGRES],
        "wall_seconds": window.wall,
        "machine_busy_cores": window.machine_seconds / window.wall if window.wall else None,
        "wal_bytes": window.wal_bytes,
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median round's rate and latency; CPU per request over all rounds."""
    median = sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]
    requests = sum(r["requests"] for r in runs) or 1
    return {
        "rate": median["rate"],
        "rates": [r["rate"] for r in runs],
        "latency_ms": median["latency_ms"],
        "percentiles_ms": median["percentiles_ms"],
        "p99s": [r["latency_ms"]["p99"] for r in runs],
        "errors": sum(r["errors"] for r in runs),
        "cpu_ms_per_request": sum(r["cpu_seconds"] for r in runs) * 1000 / requests,
        "postgres_cpu_ms_per_request": sum(r["postgres_cpu_seconds"] for r in runs)
        * 1000
        / requests,
    }


def paired_median(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str) -> float:
    """The median over rounds of a's figure / b's in the same round."""
    pick = (lambda r: r["latency_ms"]["p99"]) if key == "p99" else (lambda r: r[key])
    return statistics.median(pick(x) / pick(y) for x, y in zip(a, b, strict=True))


async def run(stack: Stack, fixtures: Fixtures, seconds: float, rounds: int) -> dict:
    stack.stop_workers()
    await stack.reset_messages()
    await stack.start_floor()
    # Both APIs start now, so that they differ in their log alone: the stack's own has
    # served the fixtures' set-up, whose leftovers its garbage collector walks.
    stack.stop("api")
    await stack.start_api()
    quiet_port = free_port()
    await stack.start_api("api-quiet", quiet_port, QUIET_ENV)
    paths = write_paths(fixtures.main.chats, stack.log_dir / "chat-paths.txt")
    targets = [
        Target("floor", stack.floor_url, "floor"),
        Target("dmrelay", stack.api_url, "api"),
        Target("dmrelay_quiet", f"http://127.0.0.1:{quiet_port}", "api-quiet"),
    ]
    runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    try:
        for _ in range(rounds):
            for target in targets:
                runs[target.name].append(
                    await measured_load(stack, target, paths, fixtures.token, seconds)
                )
    finally:
        stack.stop("floor", "api-quiet")
    stored = await stack.db.fetchval("SELECT count(*) FROM messages")
    result: dict[str, Any] = {name: summarize(r) for name, r in runs.items()}
    result.update(
        rows_stored=stored,
        connections=CONNECTIONS,
        seconds=seconds,
        rounds=rounds,
        api_processes=stack.api_processes,
        ratio=result["dmrelay"]["rate"] / result["floor"]["rate"],
        ratio_rounds=paired_median(runs["dmrelay"], runs["floor"], "rate"),
        p99_ratio=paired_median(runs["dmrelay"], runs["floor"], "p99"),
        # What the request log costs: 1 − the rate with it / the rate without it.
        logging_cost=1 - paired_median(runs["dmrelay"], runs["dmrelay_quiet"], "rate"),
        logging_cpu_share=1
        - result["dmrelay_quiet"]["cpu_ms_per_request"] / result["dmrelay"]["cpu_ms_per_request"],
    )
    return result


async def profile(stack: Stack, fixtures: Fixtures, seconds: float) -> dict:
    """Sample the API process with py-spy under the accept load; the top frames by own time."""
    # On PATH, or beside this interpreter: where `pip install py-spy` in a venv puts it.
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=Path(sys.executable).parent)
    if py_spy is None:
        raise SystemExit("--profile-accept needs py-spy: `pip install py-spy`")
    stack.stop_workers()
    paths = write_paths(fixtures.main.chats, stack.log_dir / "chat-paths.txt")
    raw = stack.log_dir / "accept-profile.txt"
    spy = await asyncio.create_subprocess_exec(
        py_spy, "record", "--format", "raw", "--rate", "250", "--nonblocking",
        "--duration", f"{seconds:g}", "--output", str(raw),
        "--pid", str(stack.processes["api"].pid),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    load = await wrk(
        stack.api_url, "post_messages.lua", [str(paths), fixtures.token], seconds + 1, CONNECTIONS
    )
    await spy.wait()
    own: Counter[str] = Counter()
    # Inclusive time of dmrelay's own functions: which of its steps the time goes to.
    inclusive: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack_text, _, count = line.rpartition(" ")
        frames = stack_text.split(";")
        own[frames[-1]] += int(count)
        for frame in set(frames):
            if "(app/" in frame and "app/cli.py" not in frame:
                inclusive[frame] += int(count)
    total = sum(own.values())
    return {
        "rate_while_sampled": load.rate,
        "samples": total,
        "raw_profile": str(raw),
        "top_own": [{"frame": frame, "share": n / total} for frame, n in own.most_common(10)],
        "top_app_inclusive": [
            {"frame": frame, "share": n / total} for frame, n in inclusive.most_common(10)
        ],
    }
