"""The benchmark's CPU quotas (bench/cgroups.py): a process, or each of a supervisor's spawned
children, lands in a capped group of the bench's own, and the groups go at the end; where the
cpu controller cannot be written, the quota says why and nothing is capped."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.cgroups import PERIOD_US, TASK_SHARES, CpuQuota, QuotaUnavailable

# A supervisor like uvicorn --workers 2: two children started with multiprocessing's spawn.
SUPERVISOR = (
    "import multiprocessing, time\n"
    "ctx = multiprocessing.get_context('spawn')\n"
    "children = [ctx.Process(target=time.sleep, args=(60,)) for _ in range(2)]\n"
    "[child.start() for child in children]\n"
    "time.sleep(60)\n"
)


@pytest.fixture
def quota() -> Iterator[CpuQuota]:
    try:
        opened = CpuQuota(0.25).open()
    except QuotaUnavailable as why:
        pytest.skip(str(why))
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


def test_a_process_is_capped_in_a_group_of_its_own_and_the_groups_go_at_close(
    quota: CpuQuota, sleeper: subprocess.Popen[bytes]
) -> None:
    assert quota.base.name == f"dmrelay-bench-{os.getpid()}"
    quota.place("worker", sleeper.pid)
    group = quota.base / "worker"
    assert quota.group_of(sleeper.pid) == "worker"
    # Uncapped while it starts up.
    assert int((group / "cpu.cfs_quota_us").read_text()) == -1
    assert int((group / "cpu.cfs_period_us").read_text()) == PERIOD_US
    quota.cap("worker")
    assert int((group / "cpu.cfs_quota_us").read_text()) == PERIOD_US // 4
    # The bench's groups, one entity to the scheduler, weigh one task per process held.
    assert int((quota.base / "cpu.shares").read_text()) == TASK_SHARES
    quota.cap("worker", cores=1.5)
    assert int((group / "cpu.cfs_quota_us").read_text()) == PERIOD_US * 3 // 2
    assert set(quota.throttled()) == {"worker"}
    quota.uncap("worker")
    assert int((group / "cpu.cfs_quota_us").read_text()) == -1
    # Still running: moved back out, so that its group can go.
    quota.close()
    assert sleeper.poll() is None
    assert quota.group_of(sleeper.pid) is None
    assert not quota.base.exists()


async def test_a_supervisors_spawned_children_each_get_a_group(quota: CpuQuota) -> None:
    supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISOR], start_new_session=True)
    try:
        quota.place("api", supervisor.pid)
        served = await quota.place_children("api", supervisor.pid, 2)
        assert set(served) == {"api.1", "api.2"}
        assert {group: quota.group_of(pid) for group, pid in served.items()} == {
            "api.1": "api.1",
            "api.2": "api.2",
        }
        assert quota.group_of(supervisor.pid) == "api"
        assert int((quota.base / "cpu.shares").read_text()) == 3 * TASK_SHARES
    finally:
        os.killpg(supervisor.pid, signal.SIGKILL)
        supervisor.wait()


def test_without_a_writable_controller_nothing_is_capped(tmp_path: Path) -> None:
    with pytest.raises(QuotaUnavailable, match="no cgroup v1 cpu controller"):
        CpuQuota(0.3, controller=tmp_path).open()
    with pytest.raises(QuotaUnavailable, match="no quota asked for"):
        CpuQuota(0).open()
    assert not list(tmp_path.iterdir())
