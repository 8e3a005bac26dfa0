"""The benchmark's CPU and lock-wait readings (bench/cpu.py): a process tree's CPU counts its
children's, and PostgreSQL's backends and their lock waits are seen, on the test database."""

import asyncio
import os
import subprocess
import sys
import time

import asyncpg
from sqlalchemy import make_url

from bench import cpu
from tests.conftest import wait_for

BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"


def test_a_process_trees_cpu_counts_its_childrens() -> None:
    child = subprocess.Popen([sys.executable, "-c", BURN + "time.sleep(30)"])
    try:

        def burnt() -> bool:
            stat = cpu._stat(child.pid)
            return stat is not None and stat[1] >= 0.3

        deadline = time.monotonic() + 30
        while not burnt():
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        parent, child_seconds = cpu._stat(child.pid) or (0, 0.0)
        own = cpu._stat(os.getpid())
        assert parent == os.getpid() and own is not None
        # Read last: CPU only grows, so the tree holds at least both parts.
        assert cpu.tree_seconds([os.getpid()]) >= own[1] + child_seconds
        assert cpu.tree_seconds([child.pid]) < cpu.tree_seconds([os.getpid()])
    finally:
        child.kill()
        child.wait()
    assert cpu._stat(child.pid) is None


async def test_backends_and_a_lock_wait_on_a_hot_row_are_seen(settings, database) -> None:
    url = make_url(settings.database_url).set(drivername="postgresql")
    plain = url.render_as_string(hide_password=False)
    observer, holder, waiter = [await asyncpg.connect(plain) for _ in range(3)]
    try:
        await observer.execute(
            "CREATE TABLE bench_cpu_probe (id int PRIMARY KEY, n int); "
            "INSERT INTO bench_cpu_probe VALUES (1, 0)"
        )
        pids = {await c.fetchval("SELECT pg_backend_pid()") for c in (holder, waiter)}
        held = holder.transaction()
        await held.start()
        await holder.execute("UPDATE bench_cpu_probe SET n = n + 1 WHERE id = 1")
        blocked = asyncio.create_task(
            waiter.execute("UPDATE bench_cpu_probe SET n = n + 1 WHERE id = 1")
        )
        async with cpu.LockSampler(observer, interval=0.01) as sampler:

            async def seen() -> bool:
                return any(lock >= 1 for _, lock, _ in sampler.samples)

            await wait_for(seen)
        await held.rollback()
        await blocked
        summary = sampler.summary()
        assert summary["max_lock_waits"] >= 1 and summary["mean_lock_waits"] > 0
        backends = await cpu.backend_seconds(observer)
        assert pids <= set(backends)
        assert await observer.fetchval("SELECT pg_backend_pid()") not in backends
    finally:
        await observer.execute("DROP TABLE IF EXISTS bench_cpu_probe")
        for connection in (observer, holder, waiter):
            await connection.close()
