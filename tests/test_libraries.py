"""What dmrelay relies on in its libraries, checked against the versions installed: every
runtime dependency within its pinned range, and the parts of arq and redis-py that
app/core/worker.py and app/core/queue.py build on. A release that changes them fails here,
not in production."""

import asyncio
import inspect
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from arq.worker import Worker
from packaging.requirements import Requirement
from redis.asyncio import BlockingConnectionPool, ConnectionPool

from app.worker import create_worker

PYPROJECT = Path(__file__).parent.parent / "pyproject.toml"
RUNTIME = [
    Requirement(line)
    for line in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    if Requirement(line).marker is None or Requirement(line).marker.evaluate()
]


@pytest.mark.parametrize("requirement", RUNTIME, ids=lambda requirement: requirement.name)
def test_each_runtime_dependency_is_installed_within_its_range(requirement: Requirement):
    assert requirement.specifier, f"{requirement.name} has no version range"
    assert requirement.specifier.contains(version(requirement.name), prereleases=True)


def test_arqs_worker_has_what_resilient_worker_overrides_and_reads():
    for method in ("main", "heart_beat", "start_jobs", "handle_sig_wait_for_completion"):
        assert inspect.iscoroutinefunction(getattr(Worker, method)) or callable(
            getattr(Worker, method)
        ), method
    assert list(inspect.signature(Worker.start_jobs).parameters) == ["self", "job_ids"]
    assert list(inspect.signature(Worker.heart_beat).parameters) == ["self"]
    parameters = inspect.signature(Worker.__init__).parameters
    for name in ("redis_pool", "job_completion_wait", "handle_signals", "max_jobs", "poll_delay"):
        assert name in parameters, name
    # The hook arq calls once it has cancelled the main task, and the bookkeeping a job slot
    # given back touches.
    source = inspect.getsource(Worker._wait_for_tasks_to_complete)
    assert "self.main_task.cancel()" in source and "self.on_stop(signum)" in source
    assert "self.job_counter = self.job_counter - 1" in inspect.getsource(
        Worker._release_sem_dec_counter_on_complete
    )
    assert "self.sem.release()" in inspect.getsource(Worker._release_sem_dec_counter_on_complete)
    # The mark of a job running in any worker, which start_jobs looks for first.
    assert "in_progress_key_prefix + job_id" in inspect.getsource(Worker.start_jobs)


async def test_the_worker_has_the_attributes_it_relies_on(settings):
    worker = create_worker(cron_jobs=None, handle_signals=False)
    try:
        assert worker.on_stop is not None
        assert worker.tasks == {} and worker.job_counter == 0
        assert isinstance(worker.sem, asyncio.BoundedSemaphore)
        assert worker.allow_pick_jobs is True
    finally:
        await worker.pool.aclose()


class _Counting:
    """A pool mixin that counts the connection checks under way at once."""

    under_way = 0
    most = 0

    async def ensure_connection(self, connection):  # noqa: ANN001
        _Counting.under_way += 1
        _Counting.most = max(_Counting.most, _Counting.under_way)
        try:
            await asyncio.sleep(0.01)
            await super().ensure_connection(connection)  # type: ignore[misc]
        finally:
            _Counting.under_way -= 1


@pytest.mark.parametrize(
    ("pool_class", "concurrent"), [(BlockingConnectionPool, True), (ConnectionPool, False)]
)
async def test_redis_pys_blocking_pool_checks_connections_outside_its_lock(
    settings, pool_class, concurrent
):
    """Why app/core/queue.py uses BlockingConnectionPool: its connection checks run
    concurrently, where ConnectionPool's queue behind its lock (redis-py 5)."""
    counting = type("Counting", (_Counting, pool_class), {})
    pool = counting.from_url(settings.redis_url, max_connections=100)
    _Counting.under_way = _Counting.most = 0
    try:
        connections = await asyncio.gather(*(pool.get_connection() for _ in range(10)))
        for connection in connections:
            await pool.release(connection)
    finally:
        await pool.aclose()
    assert (_Counting.most > 1) is concurrent
