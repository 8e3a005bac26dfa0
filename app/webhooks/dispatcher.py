"""Sending customer events to their endpoints: the outbox's consumer, in every worker.

An event's dispatches (one per endpoint that hears it) are written with the event, in the
transaction of the change it reports (the trigger of migration 0010), which also notifies
channel `customer_webhooks` at commit. A worker's `Dispatcher` listens there and wakes the
endpoint; it also polls (WEBHOOK_POLL_SECONDS) for endpoints with events due that nobody is
sending: a retry come due, a notification missed, a worker gone.

Per endpoint, one task at a time (and, across workers, one lease) sends its events oldest
first, each until it succeeds or its retry schedule runs out, so events arrive in order. A
success is recorded while the endpoint's next event is sent, together with the successes of
other endpoints (one statement, one commit); the endpoint's events are read again only once
its successes are recorded, so none is sent twice by this worker, and a worker gone before
recording one leaves the event pending: sent again, never lost.
Endpoints never wait for each other: each has its own task and HTTP connections, so a slow
or dead one holds up only itself. Nothing here touches Meta's webhook or sends.
"""

import asyncio
import logging
import secrets
import time
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from functools import lru_cache, partial
from typing import Any

import aiohttp
import asyncpg
import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from app.core import crypto, ids
from app.core.addresses import Resolver, pinned, resolve
from app.core.batching import Batcher
from app.core.db import connect_options
from app.core.settings import Settings
from app.events.models import MESSAGE_EVENTS
from app.events.service import message_data
from app.webhooks import repository, signing, targets
from app.webhooks.repository import AttemptResult, Delivered, Head

log = logging.getLogger(__name__)

# Events read per query; an endpoint's state (disabled, deleted) is read again with each.
BATCH = 50
# What of an endpoint's answer is read, and what of it is kept in the delivery log.
MAX_ANSWER_BYTES = 64 * 1024
EXCERPT_CHARACTERS = 500
# Endpoints with their HTTP session kept (their connection reused).
MAX_SESSIONS = 1000
# How long an endpoint's task, out of events, keeps its lease waiting for the next.
LINGER_SECONDS = 0.5
# After a failure of the dispatcher itself (PostgreSQL down), before the poller retries.
LISTEN_RETRY_SECONDS = 1.0


class Dispatcher:
    def __init__(
        self,
        engine: AsyncEngine,
        db: asyncpg.Pool,
        settings: Settings,
        resolver: Resolver = resolve,
    ) -> None:
        self.engine = engine
        # The hot path's statements (repository's raw ones) run on this driver pool.
        self.db = db
        self.settings = settings
        # Tests replace it, to prove refusals without connecting anywhere.
        self.resolver = resolver
        self.owner = secrets.randbits(62)
        attempt = settings.webhook_connect_timeout_seconds + settings.webhook_timeout_seconds
        # Longer than an attempt; renewed before each.
        self.lease = timedelta(seconds=2 * attempt + 10)
        self.running: dict[int, asyncio.Task[None]] = {}
        self.again: set[int] = set()
        # Endpoints whose task, out of events, waits a moment for more (lease kept).
        self.idle: dict[int, asyncio.Event] = {}
        self.timers: dict[int, asyncio.TimerHandle] = {}
        self.sessions: dict[tuple[int, str], aiohttp.ClientSession] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.background: list[asyncio.Task[None]] = []
        self.stopping = False
        self.listening = asyncio.Event()
        # Successes of all endpoints, recorded together: while one statement runs, those
        # that come meanwhile wait for the next (a group commit).
        self._delivered = Batcher(self._record_delivered, one_at_a_time=True)

    # -- Life -------------------------------------------------------------------------------

    async def start(self) -> None:
        self.background = [
            asyncio.create_task(self._listen(), name="webhooks-listen"),
            asyncio.create_task(self._poll(), name="webhooks-poll"),
        ]

    async def stop(self, wait_seconds: float = 30.0) -> None:
        """Take no more work, let attempts under way finish (up to `wait_seconds`)."""
        self.stopping = True
        for idle in self.idle.values():
            idle.set()
        for timer in self.timers.values():
            timer.cancel()
        for task in self.background:
            task.cancel()
        running = list(self.running.values())
        if running:
            _, late = await asyncio.wait(running, timeout=wait_seconds)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await asyncio.gather(*self.background, return_exceptions=True)
        for session in self.sessions.values():
            await session.close()
        self.sessions.clear()

    def wake(self, webhook_id: int) -> None:
        """Send the endpoint's due events, now (again after the current run, if one is on)."""
        if self.stopping:
            return
        if webhook_id in self.running:
            self.again.add(webhook_id)
            idle = self.idle.get(webhook_id)
            if idle is not None:
                idle.set()
            return
        self.running[webhook_id] = asyncio.create_task(self._run(webhook_id))

    def _wake_later(self, webhook_id: int, seconds: float) -> None:
        timer = self.timers.pop(webhook_id, None)
        if timer is not None:
            timer.cancel()
        self.timers[webhook_id] = asyncio.get_running_loop().call_later(
            max(seconds, 0.0), self._timer_fired, webhook_id
        )

    def _timer_fired(self, webhook_id: int) -> None:
        self.timers.pop(webhook_id, None)
        self.wake(webhook_id)

    async def _listen(self) -> None:
        """Wake endpoints as PostgreSQL notifies them, reconnecting when the link is lost."""
        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not self.stopping:
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(url, **connect_options(self.settings))
                lost = asyncio.Event()
                connection.add_termination_listener(partial(_set, lost))
                await connection.add_listener(repository.CHANNEL, self._notified)
                self.listening.set()
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("customer webhooks: not listening (%s); retrying", error)
            finally:
                self.listening.clear()
                if connection is not None:
                    with suppress(Exception):
                        await asyncio.shield(connection.close(timeout=1))
            await asyncio.sleep(LISTEN_RETRY_SECONDS)

    def _notified(self, connection: Any, pid: int, channel: str, payload: object) -> None:
        if isinstance(payload, str) and payload.isdigit():
            self.wake(int(payload))

    async def _poll(self) -> None:
        while not self.stopping:
            try:
                for webhook_id in await repository.due_webhooks(self.engine, 1000):
                    self.wake(webhook_id)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("customer webhooks: cannot look for due events (%s)", error)
            await asyncio.sleep(self.settings.webhook_poll_seconds)

    # -- One endpoint -----------------------------------------------------------------------

    async def _run(self, webhook_id: int) -> None:
        try:
            while True:
                self.again.discard(webhook_id)
                try:
                    await self._drain(webhook_id)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # The poller tries again (PostgreSQL down, the endpoint deleted meanwhile).
                    log.exception("customer webhook %d: sending stopped", webhook_id)
                    return
                if webhook_id not in self.again or self.stopping:
                    return
        finally:
            self.running.pop(webhook_id, None)

    async def _drain(self, webhook_id: int) -> None:
        """Send the endpoint's due events in order, under its lease, until one must wait."""
        if not await repository.take_lease(self.db, webhook_id, self.owner, self.lease):
            return  # another worker is sending them
        renewed = time.monotonic()
        # Successes sent and not yet recorded (each True once recorded, False if the
        # endpoint was deleted meanwhile).
        recording: list[asyncio.Task[bool]] = []
        try:
            while not self.stopping:
                # Read again only once recorded: an event being recorded is still pending.
                if not await _recorded(recording):
                    return
                batch = await repository.heads(self.db, webhook_id, BATCH)
                if not batch:
                    if await self._more_soon(webhook_id):
                        continue
                    return
                for head in batch:
                    if not head.enabled or self.stopping:
                        return
                    if head.wait_seconds > 0:
                        self._wake_later(webhook_id, head.wait_seconds)
                        return
                    if time.monotonic() - renewed > self.lease.total_seconds() / 4:
                        if not await repository.take_lease(
                            self.db, webhook_id, self.owner, self.lease
                        ):
                            return
                        renewed = time.monotonic()
                    if not await self._send(head, recording):
                        break  # read the head again: a retry due now, or later, or disabled
        finally:
            # Recorded before the lease goes: another worker would send them again.
            with suppress(Exception):
                await _recorded(recording)
            with suppress(Exception):
                await repository.release_lease(self.db, webhook_id, self.owner)

    async def _more_soon(self, webhook_id: int) -> bool:
        """Whether the endpoint is woken within LINGER_SECONDS: a busy endpoint's next event
        then goes without taking and releasing its lease again."""
        if webhook_id in self.again:
            self.again.discard(webhook_id)
            return True
        idle = self.idle[webhook_id] = asyncio.Event()
        try:
            async with asyncio.timeout(LINGER_SECONDS):
                await idle.wait()
        except TimeoutError:
            return False
        finally:
            self.idle.pop(webhook_id, None)
        self.again.discard(webhook_id)
        return not self.stopping

    async def _send(self, head: Head, recording: list[asyncio.Task[bool]]) -> bool:
        """One attempt at the head event; whether it moved on (delivered or given up). A
        success is recorded in the background (added to `recording`); a failure, after the
        endpoint's successes before it, at once."""
        event_id, payload = await self._envelope(head)
        secret = crypto.decrypt(self.settings.secret_key, head.secret_encrypted)
        dispatch_id = ids.encode(ids.Kind.DISPATCH, head.dispatch_id)
        result = await self._post(
            head, payload, signing.headers(secret, payload, head.event_type, dispatch_id)
        )
        if result.success:
            recording.append(
                asyncio.create_task(self._delivered.submit(Delivered(head, event_id, result)))
            )
            return True
        if not await _recorded(recording):
            return False  # the endpoint was deleted meanwhile: its heads are gone
        schedule = self.settings.webhook_retry_schedule_seconds
        retry_after = (
            None if head.attempts >= len(schedule) else timedelta(seconds=schedule[head.attempts])
        )
        try:
            disabled = await repository.record_failure(
                self.db,
                head,
                event_id,
                result,
                retry_after,
                self.settings.webhook_disable_after_failures,
            )
        except asyncpg.ForeignKeyViolationError:
            return False  # the endpoint was deleted meanwhile: its heads are gone
        if disabled is not None:
            log.warning("customer webhook %d: %s", head.webhook_id, disabled)
        if retry_after is None:
            log.warning(
                "customer webhook %d: event %s given up after %d attempts",
                head.webhook_id,
                event_id,
                head.attempts + 1,
            )
            return True
        if retry_after > timedelta():
            self._wake_later(head.webhook_id, retry_after.total_seconds())
        return False

    async def _record_delivered(self, delivered: list[Delivered]) -> list[bool]:
        """Record successes of any endpoints together; for each, False if its endpoint was
        deleted meanwhile (then the others are recorded one by one)."""
        try:
            await repository.record_delivered(self.db, delivered)
            return [True] * len(delivered)
        except asyncpg.ForeignKeyViolationError:
            if len(delivered) == 1:
                return [False]
        return [(await self._record_delivered([one]))[0] for one in delivered]

    async def _envelope(self, head: Head) -> tuple[str, bytes]:
        """The event's public id and the body that carries it."""
        if head.event_id is None:
            test = head.test_data or {}
            created_at = datetime.fromisoformat(test["created_at"])
            return test["id"], signing.body(test["id"], head.event_type, created_at, test["data"])
        data = head.event_data or {}
        if head.event_type in MESSAGE_EVENTS and "message" not in data and head.message_id:
            # Recorded by SQL (publish_send): the message, rendered once and kept.
            message = await repository.message_row(self.engine, head.message_id)
            if message is not None:
                data = message_data(message)
                await repository.freeze(self.engine, head.event_id, data)
        event_id = ids.encode(ids.Kind.CUSTOMER_EVENT, head.event_id)
        created_at = head.event_created_at or datetime.now(UTC)
        return event_id, signing.body(event_id, head.event_type, created_at, data)

    async def _post(self, head: Head, payload: bytes, headers: dict[str, str]) -> AttemptResult:
        settings = self.settings
        attempted_at = datetime.now(UTC)
        started = time.perf_counter()
        status: int | None = None
        excerpt: str | None = None
        error: str | None = None
        try:
            # Checked at every attempt, on the addresses the host has now, one of which the
            # request goes to.
            target = targets.parse(head.url, settings)
            addresses = await targets.addresses(target, settings, self.resolver)
            session = self._session(head.webhook_id, head.url)
            async with asyncio.timeout(
                settings.webhook_connect_timeout_seconds + settings.webhook_timeout_seconds
            ):
                status, excerpt = await self._post_to(session, target, addresses, payload, headers)
        except targets.Refused as refusal:
            error = f"Not sent: {refusal}"
        except aiohttp.ConnectionTimeoutError:
            error = f"No connection within {settings.webhook_connect_timeout_seconds:g} s"
        except TimeoutError:  # aiohttp's read timeout too
            error = f"No answer within {settings.webhook_timeout_seconds:g} s"
        except aiohttp.ClientConnectorError as failure:
            error = f"Cannot connect: {failure.os_error or failure}"
        except aiohttp.ClientError as failure:
            error = f"{type(failure).__name__}: {failure}".rstrip(": ")
        return AttemptResult(
            attempted_at=attempted_at,
            success=status is not None and 200 <= status < 300,
            response_status=status,
            response_excerpt=excerpt,
            error=error,
            duration_ms=round((time.perf_counter() - started) * 1000),
        )

    async def _post_to(
        self,
        session: aiohttp.ClientSession,
        target: httpx.URL,
        addresses: list[str],
        payload: bytes,
        headers: dict[str, str],
    ) -> tuple[int, str]:
        """POST to the first checked address that takes the connection: its status and the
        start of its answer. Redirects are not followed."""
        for index, address in enumerate(addresses):
            url, host, sni_hostname = _pinned(target, address)
            try:
                async with session.post(
                    url,
                    data=payload,
                    headers={**headers, **host},
                    server_hostname=sni_hostname,
                    allow_redirects=False,
                ) as response:
                    answer = bytearray()
                    while len(answer) < MAX_ANSWER_BYTES:
                        chunk = await response.content.read(MAX_ANSWER_BYTES - len(answer))
                        if not chunk:
                            break
                        answer += chunk
                    text = answer.decode("utf-8", "replace").replace("\x00", "")
                    return response.status, text[:EXCERPT_CHARACTERS]
            except aiohttp.ClientConnectorError:
                if index == len(addresses) - 1:
                    raise
        raise AssertionError("no address")  # targets.addresses answers at least one

    def _session(self, webhook_id: int, url: str) -> aiohttp.ClientSession:
        """The endpoint's session: its connection is kept for its next events (one session
        per endpoint and URL, so a connection made for one host never carries another's)."""
        key = (webhook_id, url)
        session = self.sessions.get(key)
        if session is None:
            if len(self.sessions) >= MAX_SESSIONS:
                oldest = next(iter(self.sessions))
                closing = asyncio.create_task(self.sessions.pop(oldest).close())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
            settings = self.settings
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1),
                timeout=aiohttp.ClientTimeout(
                    sock_connect=settings.webhook_connect_timeout_seconds,
                    sock_read=settings.webhook_timeout_seconds,
                ),
                auto_decompress=False,
            )
            self.sessions[key] = session
        return session


@lru_cache(maxsize=4096)
def _pinned(target: httpx.URL, address: str) -> tuple[URL, dict[str, str], str | None]:
    """aiohttp's URL, Host header and TLS name for sending to `address` (cached: the same for
    each of an endpoint's events)."""
    url, host, extensions = pinned(target, address)
    return URL(str(url), encoded=True), host, extensions.get("sni_hostname")


async def _recorded(recording: list[asyncio.Task[bool]]) -> bool:
    """Wait for the successes being recorded; False if their endpoint was deleted meanwhile.
    Raises the first failure to record one (its event stays pending: sent again later)."""
    if not recording:
        return True
    results = await asyncio.gather(*recording, return_exceptions=True)
    recording.clear()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return all(results)


def _set(event: asyncio.Event, *_: object) -> None:
    event.set()
