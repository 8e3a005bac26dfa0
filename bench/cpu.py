"""CPU time a path costs, read from /proc: steadier than its rate on a shared machine.

A process's CPU is its utime + stime (/proc/<pid>/stat), summed over the process and its
descendants (uvicorn's worker processes, say); PostgreSQL's is that of the backends serving
the bench's database (pg_stat_activity), so other databases on the machine are not counted,
nor are PostgreSQL's shared background processes (WAL writer, checkpointer). A window reads
them before and after a load; its figure is milliseconds of CPU per item processed.
"""

import asyncio
import contextlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

TICKS = os.sysconf("SC_CLK_TCK")
POSTGRES = "postgres"
BACKENDS = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
    "AND pid <> pg_backend_pid()"
)


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ")".
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS


def tree_seconds(roots: Iterable[int]) -> float:
    """CPU seconds of these processes and all their descendants now alive."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            stats[int(entry)] = stat
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    total, todo = 0.0, [pid for pid in roots if pid in stats]
    while todo:
        pid = todo.pop()
        total += stats[pid][1]
        todo.extend(children.get(pid, ()))
    return total


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every core, every process: user, nice,
    system, irq, softirq, steal; /proc/stat), to see how near its cores a load runs."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICKS


async def _wal_position(db: asyncpg.Connection) -> int:
    """Bytes of WAL the server has written since it was made."""
    return int(await db.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')"))


async def backend_seconds(db: asyncpg.Connection) -> dict[int, float]:
    """CPU seconds of each PostgreSQL backend of the bench's database (but this one)."""
    pids = [row["pid"] for row in await db.fetch(BACKENDS)]
    return {pid: stat[1] for pid in pids if (stat := _stat(pid)) is not None}


@dataclass
class CpuWindow:
    """CPU spent over a window by groups of processes (name → root pids, read at each end,
    so processes started within it count from zero) and, if `db` is given, by PostgreSQL's
    backends of the bench's database (one that exits within the window loses its share)."""

    groups: dict[str, list[int]]
    db: asyncpg.Connection | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0
    # The whole machine's busy CPU over the window (every process, ours or not).
    machine_seconds: float = 0.0
    # WAL PostgreSQL wrote over the window (the whole server's: other databases' too).
    wal_bytes: int | None = None
    _start: dict[str, float] = field(default_factory=dict)
    _backends: dict[int, float] = field(default_factory=dict)
    _started: float = 0.0
    _machine: float = 0.0
    _wal: int = 0

    async def __aenter__(self) -> "CpuWindow":
        await self.begin()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.end()

    async def begin(self) -> None:
        self._start = {name: tree_seconds(pids) for name, pids in self.groups.items()}
        if self.db is not None:
            self._backends = await backend_seconds(self.db)
            self._wal = await _wal_position(self.db)
        self._machine = machine_busy_seconds()
        self._started = time.monotonic()

    async def end(self) -> None:
        self.wall = time.monotonic() - self._started
        self.machine_seconds = machine_busy_seconds() - self._machine
        self.seconds = {
            name: tree_seconds(pids) - self._start[name] for name, pids in self.groups.items()
        }
        if self.db is not None:
            now = await backend_seconds(self.db)
            self.seconds[POSTGRES] = sum(s - self._backends.get(pid, 0.0) for pid, s in now.items())
            self.wal_bytes = await _wal_position(self.db) - self._wal

    def ms_per(self, count: int) -> dict[str, float | None]:
        """Milliseconds of CPU per item, for each group (None with nothing processed)."""
        return {name: s * 1000 / count if count else None for name, s in self.seconds.items()}

    def summary(self, count: int) -> dict[str, Any]:
        return {
            "cpu_seconds": self.seconds,
            "wall_seconds": self.wall,
            "machine_busy_cores": self.machine_seconds / self.wall if self.wall else None,
            "wal_bytes": self.wal_bytes,
            "items": count,
            "ms_per_item": self.ms_per(count),
        }


LOCK_SAMPLE = """
SELECT count(*) FILTER (WHERE state = 'active') AS active,
       count(*) FILTER (WHERE wait_event_type = 'Lock') AS lock,
       count(*) FILTER (WHERE wait_event_type = 'LWLock') AS lwlock
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
"""


@dataclass
class LockSampler:
    """Samples the bench database's backends every `interval` seconds while a load runs:
    how many are active, and how many wait on a heavyweight lock (a row or transaction id
    another holds: a hot row) or on a lightweight one (buffers, WAL)."""

    db: asyncpg.Connection
    interval: float = 0.05
    samples: list[tuple[int, int, int]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            row = await self.db.fetchrow(LOCK_SAMPLE)
            self.samples.append((row["active"], row["lock"], row["lwlock"]))
            await asyncio.sleep(self.interval)

    async def __aenter__(self) -> "LockSampler":
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def summary(self) -> dict[str, Any]:
        n = len(self.samples) or 1
        active = sum(s[0] for s in self.samples)
        return {
            "samples": len(self.samples),
            "mean_active": active / n,
            "mean_lock_waits": sum(s[1] for s in self.samples) / n,
            "mean_lwlock_waits": sum(s[2] for s in self.samples) / n,
            "max_lock_waits": max((s[1] for s in self.samples), default=0),
            # Of the backends seen working, the share waiting for a lock.
            "lock_wait_share": sum(s[1] for s in self.samples) / active if active else 0.0,
        }


TABLE_STATS = """
SELECT n_live_tup, n_dead_tup, n_tup_upd, n_tup_hot_upd, autovacuum_count, vacuum_count,
       extract(epoch FROM last_autovacuum) AS last_autovacuum
FROM pg_stat_user_tables WHERE relname = $1
"""


async def table_stats(db: asyncpg.Connection, table: str) -> dict[str, Any]:
    """A table's tuple counts and vacuums as the statistics system has them. Backends report
    their counts at most once a second (and idle ones within 10 s), so a figure read just
    after a load can lag it a little."""
    row = await db.fetchrow(TABLE_STATS, table)
    return dict(row) if row is not None else {}
