"""Media fetches reach only public addresses on allowed ports, checked on every hop, and
connect to the very address that was checked. Every test here proves a refusal without
connecting anywhere: the resolver is injected, and the client's transport only records the
requests it is handed (and answers them itself)."""

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from app.core import ids
from app.media.download import DownloadError, download
from app.media.service import Mirror
from app.media.storage import LocalStore
from app.sandbox.media import PNG
from tests.conftest import wait_for
from tests.inbound import emit, event

PUBLIC = "93.184.216.34"


class Resolver:
    """Answers each host's lookups in turn (the last answer repeats), counting them."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        answers = self.answers[host]
        return answers[min(len(self.calls) - 1, len(answers) - 1)]


class Recorder:
    """A client whose transport records each request and answers it without a network."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.answer = answer or (lambda request: httpx.Response(200, content=PNG))
        self.client = httpx.AsyncClient(transport=httpx.MockTransport(self._handle))

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


@pytest.fixture
def strict(settings):
    return settings.model_copy(update={"media_allow_private_hosts": False})


@pytest.mark.parametrize(
    "addresses",
    [
        ["169.254.169.254"],
        ["10.0.0.1"],
        ["::1"],
        ["127.0.0.1"],
        ["fd00::1"],
        ["::ffff:10.0.0.1"],
        [PUBLIC, "10.0.0.1"],  # one private address among public ones is enough
        ["2606:2800:220:1:248:1893:25c8:1946", "169.254.169.254"],
    ],
)
async def test_a_host_resolving_to_a_private_address_is_refused(strict, addresses):
    resolver, recorder = Resolver({"cdn.example": [addresses]}), Recorder()
    with pytest.raises(DownloadError, match="non-public address"):
        await download(recorder.client, "https://cdn.example/a.png", strict, resolver)
    assert resolver.calls == [("cdn.example", 443)]
    assert recorder.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/a.png",
        "http://10.0.0.7/a.png",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/a.png",
        "file:///etc/passwd",
        "gopher://cdn.example/a.png",
    ],
)
async def test_private_literals_and_other_schemes_are_refused(strict, url):
    resolver, recorder = Resolver({}), Recorder()
    with pytest.raises(DownloadError):
        await download(recorder.client, url, strict, resolver)
    assert resolver.calls == [] and recorder.requests == []


async def test_the_checked_address_is_the_one_connected_to(strict):
    """A rebinding resolver (public, then private) is asked once; the request goes to the
    public address it gave, with the host's name kept for Host and TLS."""
    resolver = Resolver({"cdn.example": [[PUBLIC], ["127.0.0.1"]]})
    recorder = Recorder()
    data, content_type = await download(
        recorder.client, "https://cdn.example/a.png?x=1", strict, resolver
    )
    assert data == PNG
    assert len(resolver.calls) == 1
    [request] = recorder.requests
    assert (request.url.host, request.url.port, request.url.path) == (PUBLIC, None, "/a.png")
    assert request.headers["host"] == "cdn.example"
    assert request.extensions["sni_hostname"] == "cdn.example"


async def test_only_allowed_ports(strict):
    resolver = Resolver({"cdn.example": [[PUBLIC]]})
    recorder = Recorder()
    with pytest.raises(DownloadError, match="port 8443 is not allowed"):
        await download(recorder.client, "https://cdn.example:8443/a.png", strict, resolver)
    assert resolver.calls == [] and recorder.requests == []

    allowed = strict.model_copy(update={"media_allowed_ports": frozenset({443, 8443})})
    await download(recorder.client, "https://cdn.example:8443/a.png", allowed, resolver)
    [request] = recorder.requests
    assert (request.url.host, request.url.port) == (PUBLIC, 8443)
    assert request.headers["host"] == "cdn.example:8443"


@pytest.mark.parametrize(
    "location",
    [
        "http://internal.example/a.png",
        "http://169.254.169.254/latest/meta-data",
        "https://cdn.example:2375/a.png",
    ],
)
async def test_a_redirect_to_a_private_address_or_port_is_refused(strict, location):
    resolver = Resolver({"cdn.example": [[PUBLIC]], "internal.example": [["10.0.0.1"]]})
    recorder = Recorder(lambda request: httpx.Response(302, headers={"Location": location}))
    with pytest.raises(DownloadError):
        await download(recorder.client, "https://cdn.example/a.png", strict, resolver)
    assert [r.url.host for r in recorder.requests] == [PUBLIC]


async def test_story_mention_checks_are_refused_too(account, clean, strict):
    """The check that a story mention's link still resolves is a fetch like any other."""
    url = "https://story.example/story.mp4"
    [mid] = await emit(clean, event("attachment", type="story_mention", url=url))
    serial = ids.decode(ids.Kind.MESSAGE, (await account.client.messages.get(mid)).id)
    resolver, recorder = Resolver({"story.example": [["169.254.169.254"]]}), Recorder()
    store = LocalStore(Path(clean.settings.media_dir), "")
    mirror = Mirror(clean.sessionmaker, recorder.client, store, strict, clean.worker.pool, resolver)

    await mirror.check_story_mention(serial, 0, 1)

    assert recorder.requests == []

    async def refused():
        [attachment] = (await account.client.messages.get(mid)).attachments
        return attachment.status == "failed"

    await wait_for(refused)
