"""1. Accept rate of POST /api/chats/{id}/messages, against the floor (bench/floor.py).

The worker is stopped, so only the accept path runs (jobs pile up in Redis). dmrelay and
the floor take turns, round after round, so that the machine's drift hits both alike; the
median round is reported.
"""

import asyncio
import shutil
import statistics
import sys
from collections import Counter
from pathlib import Path

from bench.fixtures import Fixtures
from bench.loadgen import WrkResult, wrk
from bench.stack import Stack

CONNECTIONS = 32
WARMUP_SECONDS = 2


def write_paths(fixtures: Fixtures, path: Path) -> Path:
    path.write_text("".join(f"{chat.path}\n" for chat in fixtures.main.chats))
    return path


async def load(url: str, paths: Path, token: str, seconds: float) -> WrkResult:
    await wrk(url, "post_messages.lua", [str(paths), token], WARMUP_SECONDS, CONNECTIONS)
    return await wrk(url, "post_messages.lua", [str(paths), token], seconds, CONNECTIONS)


def _summary(runs: list[WrkResult]) -> dict:
    median = sorted(runs, key=lambda r: r.rate)[len(runs) // 2]
    return {
        "rate": median.rate,
        "rates": [r.rate for r in runs],
        "latency_ms": median.latency_ms,
        "errors": sum(r.failed for r in runs),
    }


async def run(stack: Stack, fixtures: Fixtures, seconds: float, rounds: int) -> dict:
    stack.stop("worker")
    await stack.reset_messages()
    await stack.start_floor()
    paths = write_paths(fixtures, stack.log_dir / "chat-paths.txt")
    dmrelay, floor = [], []
    try:
        for _ in range(rounds):
            floor.append(await load(stack.floor_url, paths, fixtures.token, seconds))
            dmrelay.append(await load(stack.api_url, paths, fixtures.token, seconds))
    finally:
        stack.stop("floor")
    stored = await stack.db.fetchval("SELECT count(*) FROM messages")
    result = {
        "dmrelay": _summary(dmrelay),
        "floor": _summary(floor),
        "rows_stored": stored,
        "connections": CONNECTIONS,
        "seconds": seconds,
        "rounds": rounds,
    }
    result["ratio"] = result["dmrelay"]["rate"] / result["floor"]["rate"]
    result["ratio_rounds"] = statistics.median(
        d.rate / f.rate for d, f in zip(dmrelay, floor, strict=True)
    )
    return result


async def profile(stack: Stack, fixtures: Fixtures, seconds: float) -> dict:
    """Sample the API process with py-spy under the accept load; the top frames by own time."""
    # On PATH, or beside this interpreter: where `pip install py-spy` in a venv puts it.
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=Path(sys.executable).parent)
    if py_spy is None:
        raise SystemExit("--profile-accept needs py-spy: `pip install py-spy`")
    stack.stop("worker")
    paths = write_paths(fixtures, stack.log_dir / "chat-paths.txt")
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
