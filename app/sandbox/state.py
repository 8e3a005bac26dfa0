"""The sandbox's per-app state: what was sent, the faults in force, profiles, expired media, and
the webhook client."""

import asyncio
import logging
import random
from typing import Annotated, NotRequired, TypedDict

import httpx
from fastapi import Depends, Request

from app.core.settings import Settings
from app.sandbox import webhooks
from app.sandbox.comments import CommentRecord
from app.sandbox.conversations import Conversations
from app.sandbox.events import Body, JSONObject
from app.sandbox.faults import Faults
from app.sandbox.oauth import OAuth
from app.sandbox.profiles import Profiles
from app.sandbox.ratelimit import RateLimiter

log = logging.getLogger(__name__)


class SentRecord(TypedDict):
    """What `GET /_sandbox/sent` lists for each message the Send API accepted."""

    message_id: str
    recipient_id: str
    account_id: str
    message: JSONObject
    received_at: str
    timed_out: bool
    # When the answer left: a client whose timeout is shorter than the wait gave up.
    answered_at: str | None
    # As the send gave them, when it did.
    messaging_type: NotRequired[str | None]
    tag: NotRequired[str | None]
    reply_to: NotRequired[object]
    comment_id: NotRequired[str]  # a private reply's comment


class UploadRecord(TypedDict):
    """What `GET /_sandbox/uploads` lists for each file the Attachment Upload API took."""

    attachment_id: str
    account_id: str
    type: str
    url: str | None  # None for a file uploaded as `filedata`
    size: int | None
    is_reusable: bool
    received_at: str


class Sandbox:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.sent: list[SentRecord] = []
        # Sender actions the Send API took (cleared with `sent`), and each message's thread
        # (mid -> account id, participant IGSID), which reactions must name.
        self.actions: list[dict[str, object]] = []
        self.threads: dict[str, tuple[str, str]] = {}
        # Ice breakers per account, as set (app/sandbox/messenger_profile.py).
        self.ice_breakers: dict[str, list[dict[str, object]]] = {}
        # Comments emitted, by id (app/sandbox/comments.py).
        self.comments: dict[str, CommentRecord] = {}
        self.uploads: list[UploadRecord] = []
        # Reusable attachment id -> the account that uploaded it (only it may send it).
        self.attachment_owners: dict[str, str] = {}
        # Files a test put on the sandbox's CDN (/_sandbox/media/{name}): (type, bytes).
        self.files: dict[str, tuple[str, bytes]] = {}
        self.profiles = Profiles()
        self.oauth = OAuth()
        self.conversations = Conversations()
        # Whether each Graph call with a token carried appsecret_proof, in order.
        self.proofs: list[bool] = []
        self.expired_media: set[str] = set()
        self.set_faults(Faults())
        self._last_timestamp = 0
        self._client: httpx.AsyncClient | None = None
        self._deliveries: set[asyncio.Task[None]] = set()

    def set_faults(self, faults: Faults) -> None:
        """Replace the faults; their counters (rate windows, timeouts left) start afresh."""
        self.faults = faults
        self.limiter = RateLimiter(faults.rate_limit)
        self._timeouts_left = faults.timeout.times if faults.timeout else None

    def times_out(self, recipient_id: str) -> bool:
        """Whether the timeout fault takes this send (and uses up one of its `times`)."""
        timeout = self.faults.timeout
        if (
            timeout is None
            or (timeout.recipients and recipient_id not in timeout.recipients)
            or self._timeouts_left == 0
            or random.random() >= timeout.rate
        ):
            return False
        if self._timeouts_left is not None:
            self._timeouts_left -= 1
        return True

    def timestamp(self) -> int:
        """Now in ms, strictly increasing, so events emitted together keep their order."""
        self._last_timestamp = max(webhooks.now_ms(), self._last_timestamp + 1)
        return self._last_timestamp

    @property
    def client(self) -> httpx.AsyncClient:
        # Created on first use: ASGITransport-based tests never run the lifespan.
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10)
        return self._client

    async def post_webhook(self, payload: Body) -> httpx.Response:
        url = self.settings.sandbox_webhook_url
        if url is None:  # its callers check first (webhook_ready, echo)
            raise RuntimeError("SANDBOX_WEBHOOK_URL is not set: the sandbox has nowhere to post")
        return await webhooks.post_event(self.client, url, self.settings.meta_app_secret, payload)

    async def echo(self, payload: Body) -> None:
        """Deliver a send's echo as the echo fault says: now, later, twice or never."""
        mode, delay_ms = self.faults.echo.mode, self.faults.echo.delay_ms
        if not self.settings.sandbox_webhook_url or mode == "none":
            return
        if mode == "before":
            await self._deliver_echo(payload)
            return
        delay = delay_ms / 1000 if mode == "late" else 0.0
        task = asyncio.create_task(self._deliver_echo(payload, 2 if mode == "twice" else 1, delay))
        self._deliveries.add(task)  # keep a reference until done, or the task may be collected
        task.add_done_callback(self._deliveries.discard)

    async def _deliver_echo(self, payload: Body, copies: int = 1, delay: float = 0.0) -> None:
        await asyncio.sleep(delay)
        for _ in range(copies):
            try:
                response = await self.post_webhook(payload)
            except httpx.HTTPError as exc:
                log.warning("sandbox echo webhook failed: %r", exc)
                continue
            if response.is_error:
                log.warning("sandbox echo webhook answered HTTP %s", response.status_code)

    async def aclose(self) -> None:
        await asyncio.gather(*self._deliveries, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None


async def get_sandbox(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


SandboxDep = Annotated[Sandbox, Depends(get_sandbox)]
