import pytest
import pytest_asyncio

from app.core.settings import Settings
from app.sandbox.app import create_app
from tests.sandbox.support import PLAIN, SECRET, Receiver, sandbox_client, serving


@pytest_asyncio.fixture
async def client():
    async with sandbox_client(create_app(PLAIN)) as c:
        yield c


@pytest_asyncio.fixture(scope="module")
async def receiver():
    receiver = Receiver()
    async with serving(receiver.app, receiver.socket):
        yield receiver


@pytest.fixture
def hooked(receiver):
    """A sandbox app posting its webhooks to the receiver."""
    receiver.requests.clear()
    receiver.arrivals.clear()
    receiver.status, receiver.delay, receiver.gate = 200, 0.0, None
    return create_app(Settings(meta_app_secret=SECRET, sandbox_webhook_url=receiver.url))
