"""The API and the worker set the garbage collector for serving once they have started."""

import gc

import pytest

from app import worker
from app.core.gc_tuning import YOUNG_THRESHOLD
from app.core.queue import create_arq_pool
from app.main import create_app

PYTHON_DEFAULT = (700, 10, 10)


@pytest.fixture
def default_collector():
    saved = gc.get_threshold()
    gc.set_threshold(*PYTHON_DEFAULT)
    yield
    gc.set_threshold(*saved)


async def test_the_api_tunes_the_collector_once_started(settings, database, default_collector):
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD


async def test_the_worker_tunes_the_collector_once_started(settings, database, default_collector):
    ctx = {"redis": await create_arq_pool(settings)}
    await worker.startup(ctx)
    try:
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    finally:
        await worker.shutdown(ctx)
        await ctx["redis"].aclose()
