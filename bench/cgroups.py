"""A CPU quota per dmrelay process (cgroup v1's cpu controller), for measure 10 (scale out).

On a small machine every process shares the same few cores with PostgreSQL, Redis, the
sandbox and the load generator, so a second API process or worker can only take CPU from
the others: nothing grows. Capping each dmrelay process at a fraction of a core (a CFS
quota: `cores` × the period of CPU time per period) makes each behave like a process with a
small core of its own, while PostgreSQL, Redis, the sandbox and the load stay uncapped; then
N processes have N small cores, and throughput can grow with N until what they share
(PostgreSQL, the machine's real cores) is the limit.

The bench's groups live under a directory of their own, `dmrelay-bench-<pid>`, one group per
process, removed at the end. Where the controller is missing or not writable (no root, cgroup
v2 only, a read-only container), `CpuQuota.open` says why and measure 10 runs uncapped.
"""

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.cpu import tree_seconds

CPU_CONTROLLER = Path("/sys/fs/cgroup/cpu")
# The CFS period; the quota is `cores` of it. 100 ms is the kernel's default.
PERIOD_US = 100_000
# A group weighs as much as one task of nice 0 (cpu.shares' default), however many it holds.
TASK_SHARES = 1024


class QuotaUnavailable(Exception):
    """The cpu controller cannot be used here; the message says why."""


def children(pid: int) -> list[int]:
    """The direct children of a process now alive."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            text = Path(f"/proc/{entry}/stat").read_text()
            if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry))
    return found


@dataclass
class CpuQuota:
    """Groups under `base`, each capped at a number of cores, holding the processes put in
    them (with their threads; their children inherit the group)."""

    cores: float
    controller: Path = CPU_CONTROLLER
    base: Path = field(init=False)
    groups: dict[str, Path] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.base = self.controller / f"dmrelay-bench-{os.getpid()}"

    def open(self) -> "CpuQuota":
        """Make the bench's directory and check a quota can be set; QuotaUnavailable if not."""
        if self.cores <= 0:
            raise QuotaUnavailable("no quota asked for (--cpu-per-process 0)")
        if not (self.controller / "cgroup.procs").exists():
            raise QuotaUnavailable(f"no cgroup v1 cpu controller at {self.controller}")
        try:
            self.base.mkdir(exist_ok=True)
            (self.base / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
        except OSError as error:
            with contextlib.suppress(OSError):
                self.base.rmdir()
            raise QuotaUnavailable(f"{self.controller} is not writable here ({error})") from error
        return self

    def place(self, name: str, pid: int, cores: float | None = None) -> None:
        """Put a process (all its threads) in group `name`, made on first use, uncapped until
        `cap` (start-up is not measured, and under a small quota on a busy machine it takes
        long)."""
        group = self.groups.get(name) or self.base / name
        group.mkdir(exist_ok=True)
        self.groups[name] = group
        (group / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
        self._set(group, cores)
        (group / "cgroup.procs").write_text(f"{pid}\n")
        self._reweigh()

    def _reweigh(self) -> None:
        """Weigh the bench's directory as one task per process group it holds: as one
        entity among the machine's other tasks it would otherwise get a single task's share
        of a busy machine's CPU for all its processes together, and a second process would
        only halve the first's."""
        held = 0
        for group in self.groups.values():
            with contextlib.suppress(OSError):
                held += bool((group / "cgroup.procs").read_text().strip())
        (self.base / "cpu.shares").write_text(f"{TASK_SHARES * max(1, held)}\n")

    def cap(self, name: str, cores: float | None = None) -> None:
        """Cap group `name` at `cores` (default: the quota's)."""
        self._set(self.groups[name], self.cores if cores is None else cores)
        self._reweigh()  # the processes of the last configuration have gone meanwhile

    def _set(self, group: Path, cores: float | None) -> None:
        quota = -1 if cores is None else round(cores * PERIOD_US)
        (group / "cpu.cfs_quota_us").write_text(f"{quota}\n")

    def uncap(self, name: str) -> None:
        """Lift the cap of group `name` and of its children's (`name.1` …), for a phase that
        is not measured (the messages a delivery run starts with, accepted through the API)."""
        for group_name, group in self.groups.items():
            if group_name == name or group_name.startswith(f"{name}."):
                self._set(group, None)

    def group_of(self, pid: int) -> str | None:
        """The name of the bench's group a process is in, or None."""
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            return None
        prefix = f"/{self.base.name}/"
        for line in lines:
            _, controllers, path = line.split(":", 2)
            if "cpu" in controllers.split(",") and path.startswith(prefix):
                return path[len(prefix) :]
        return None

    async def place_children(
        self, name: str, pid: int, count: int, timeout: float = 30.0
    ) -> dict[str, int]:  # fmt: skip
        """uvicorn --workers N: its supervisor's N children (the processes that serve), each
        moved to a group of its own, `name.1` … `name.N` (uncapped), once they are all
        running; their pids by group."""
        deadline = time.monotonic() + timeout
        while True:
            served = [child for child in children(pid) if _is_spawned(child)]
            if len(served) >= count or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        if len(served) < count:
            raise RuntimeError(f"{name}: {len(served)} of {count} processes after {timeout:.0f}s")
        groups = {f"{name}.{index}": child for index, child in enumerate(sorted(served), 1)}
        for group, child in groups.items():
            self.place(group, child)
        return groups

    def throttled(self) -> dict[str, tuple[int, int]]:
        """Each group's (periods, periods throttled) so far, from its cpu.stat."""
        stats = {}
        for name, group in self.groups.items():
            with contextlib.suppress(OSError):
                values = dict(
                    line.split() for line in (group / "cpu.stat").read_text().splitlines()
                )
                stats[name] = (int(values["nr_periods"]), int(values["nr_throttled"]))
        return stats

    def close(self) -> None:
        """Move any process still in the bench's groups back to the controller's root, and
        remove the groups."""
        for group in [*self.groups.values(), self.base]:
            with contextlib.suppress(OSError):
                for pid in (group / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        (self.controller / "cgroup.procs").write_text(f"{pid}\n")
            with contextlib.suppress(OSError):
                group.rmdir()
        self.groups.clear()


def _is_spawned(pid: int) -> bool:
    """A child started by multiprocessing's spawn (uvicorn's serving processes), not some
    other helper (its resource tracker, say)."""
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


async def wait_quiet(pids: list[int], timeout: float = 30.0, interval: float = 0.5) -> None:
    """Until each process spends under a tenth of a core over `interval` (or `timeout`
    passes): started up, under a quota that makes start-up several times slower."""
    deadline = time.monotonic() + timeout
    before = {pid: tree_seconds([pid]) for pid in pids}
    while time.monotonic() < deadline:
        await asyncio.sleep(interval)
        now = {pid: tree_seconds([pid]) for pid in pids}
        if all(now[pid] - before[pid] < 0.1 * interval for pid in pids):
            return
        before = now
