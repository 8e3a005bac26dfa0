"""Backfill: a profile's conversations and their recent messages, imported through the
Conversations API (meta doc §7) by a job, one sync per profile at a time.

Meta allows 2 calls per second per account there, pages conversations by cursor (`next` only
while there is more), and details only the 20 most recent messages of a conversation: older
ones cannot be read, so a backfill reconciles recent activity, not all history. Importing is
idempotent: messages are unique on Meta's id, so a second run adds nothing.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.api_keys.auth import Scope
from app.chat_syncs import repository
from app.chat_syncs.models import ChatSync, ChatSyncTrigger
from app.core import ids
from app.core.db import session_scope
from app.core.errors import APIError, NotFound
from app.core.jobs import Job, JobName, enqueue, enqueue_after_commit
from app.core.pagination import PageParams
from app.core.settings import Settings
from app.inbound.content import attachment_of
from app.media import service as media
from app.messages.models import Direction, MessageStatus
from app.meta.errors import GraphError
from app.meta.graph import Account, GraphClient, GraphUnreachable
from app.profiles.models import Profile, ProfileStatus
from app.profiles.service import get_profile, graph_account

log = logging.getLogger(__name__)

DETAILED = 20  # messages whose details Meta returns, per conversation
PAGE_SIZE = 25
TRIES = 3
# A running sync commits every conversation, a few seconds apart at most.
STALE_SECONDS = 120
T = TypeVar("T")


async def backfill(
    session: AsyncSession, scope: Scope, profile_public_id: str, since: datetime
) -> ChatSync:
    profile = await get_profile(session, scope, profile_public_id)
    if profile.status != ProfileStatus.ACTIVE:
        raise APIError(422, f"The profile is {profile.status}: connect it again first")
    sync = await _start(session, profile, ChatSyncTrigger.BACKFILL, since)
    if sync is None:
        running = await repository.open_for(session, profile.id)
        running_id = ids.encode(ids.Kind.CHAT_SYNC, running.id) if running else "?"
        raise APIError(
            409, f"A chat sync is already running for this profile ({running_id}): wait for it"
        )
    return sync


async def start_after_connect(session: AsyncSession, profile: Profile) -> None:
    """Import what Meta has once an account is connected (unless a sync is open)."""
    await _start(session, profile, ChatSyncTrigger.CONNECT, None)


def _job(sync_id: int) -> Job:
    return Job(JobName.SYNC_CHATS, (sync_id,), f"chat_sync:{sync_id}")


async def sweep(sessions: async_sessionmaker[AsyncSession], redis: ArqRedis) -> None:
    """Queue again the open syncs that made no progress for STALE_SECONDS (a job lost with
    Redis, a worker killed): an open sync would otherwise refuse every later one. A job still
    queued or running keeps its id, so this never runs a sync twice at once."""
    async with sessions() as session:
        quiet_since = datetime.now(UTC) - timedelta(seconds=STALE_SECONDS)
        for sync_id in await repository.stale(session, quiet_since):
            await enqueue(redis, _job(sync_id))


async def _start(
    session: AsyncSession, profile: Profile, trigger: ChatSyncTrigger, since: datetime | None
) -> ChatSync | None:
    sync = await repository.start(session, profile.id, trigger, since)
    if sync is not None:
        enqueue_after_commit(session, _job(sync.id))
    return sync


async def list_syncs(
    session: AsyncSession,
    scope: Scope,
    profile_public_id: str,
    page: PageParams,
    trigger: str | None,
    status: str | None,
) -> tuple[list[ChatSync], int]:
    profile = await get_profile(session, scope, profile_public_id)
    return await repository.page(session, profile.id, page, trigger, status)


async def get_sync(
    session: AsyncSession, scope: Scope, profile_public_id: str, public_id: str
) -> ChatSync:
    profile = await get_profile(session, scope, profile_public_id)
    serial = ids.decode(ids.Kind.CHAT_SYNC, public_id)
    sync = await repository.get(session, profile.id, serial) if serial is not None else None
    if sync is None:
        raise NotFound("Chat sync")
    return sync


class Pace:
    """At most `rate` calls per second (Meta's limit for the Conversations API), with a
    margin: calls leave evenly spaced but reach Meta with some jitter."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.1 / rate
        self._next = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        if self._next > now:
            await asyncio.sleep(self._next - now)
        self._next = max(now, self._next) + self._interval

    async def call(self, call: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Make a Graph call in its turn; a throttle or other transient answer is tried
        again (a few times, a second apart) before the sync gives up."""
        for attempt in range(TRIES):
            await self.wait()
            try:
                return await call(*args)
            except GraphError as error:
                if not error.retryable or attempt == TRIES - 1:
                    raise
            await asyncio.sleep(1.0)
        raise AssertionError("unreachable")


async def run(
    sessions: async_sessionmaker[AsyncSession],
    graph: GraphClient,
    settings: Settings,
    redis: ArqRedis,
    sync_id: int,
) -> None:
    async with sessions() as session, session.begin():
        sync = await repository.claim(session, sync_id)
        profile = await session.get(Profile, sync.profile_id) if sync else None
        if sync is None or profile is None:
            return
        account, since = graph_account(profile, settings), sync.backfill_from
    try:
        await _import(sessions, graph, settings, redis, sync_id, account, profile.id, since)
    except (GraphError, GraphUnreachable) as error:
        said = error.message if isinstance(error, GraphError) else error.detail
        log.warning("chat sync %s failed: %s", sync_id, said)
        async with sessions() as session, session.begin():
            await repository.finish(session, sync_id, f"Meta's Conversations API failed: {said}")
        return
    async with sessions() as session, session.begin():
        await repository.finish(session, sync_id, None)


async def _import(
    sessions: async_sessionmaker[AsyncSession],
    graph: GraphClient,
    settings: Settings,
    redis: ArqRedis,
    sync_id: int,
    account: Account,
    profile_id: int,
    since: datetime | None,
) -> None:
    pace = Pace(settings.backfill_calls_per_second)
    seen = imported = 0
    oldest: datetime | None = None
    after: str | None = None
    while True:
        conversations, after = await pace.call(graph.list_conversations, account, after, PAGE_SIZE)
        for conversation in conversations:
            updated = _time(conversation.get("updated_time"))
            if since is not None and updated is not None and updated < since:
                return  # newest first: every later one is older still
            participant = _participant(conversation, account.platform_id)
            if participant is None:
                continue
            mids = await pace.call(graph.conversation_message_ids, account, str(conversation["id"]))
            rows = []
            for mid in mids[:DETAILED]:
                row = _row(
                    await pace.call(graph.message_details, account, mid),
                    account.platform_id,
                    settings,
                )
                if row is not None and (since is None or row["external_posted_at"] >= since):
                    rows.append(row)
            # Committed by session_scope, which then queues the new messages' media copies.
            async with asynccontextmanager(session_scope)(sessions, redis) as session:
                stored = await repository.import_conversation(
                    session, profile_id, participant, str(conversation["id"]), rows
                )
                for message in stored:
                    media.mirror_after_commit(session, message, settings)
                imported += len(stored)
                seen += 1
                if updated is not None:
                    oldest = updated if oldest is None else min(oldest, updated)
                await repository.progress(
                    session,
                    sync_id,
                    chats_seen=seen,
                    messages_imported=imported,
                    oldest_updated_at=oldest,
                )
        if after is None:
            return


def _participant(conversation: dict[str, Any], own_id: str) -> dict[str, str | None] | None:
    listed = conversation.get("participants")
    people = listed.get("data") if isinstance(listed, dict) else None
    for person in people or []:
        if isinstance(person, dict) and person.get("id") and str(person["id"]) != own_id:
            return {"id": str(person["id"]), "username": person.get("username")}
    return None


def _row(detail: dict[str, Any], own_id: str, settings: Settings) -> dict[str, Any] | None:
    """A message's columns from Meta's details (None if it lacks what a message needs)."""
    posted_at = _time(detail.get("created_time"))
    sender = detail.get("from")
    if posted_at is None or not isinstance(sender, dict) or not detail.get("id"):
        return None
    outbound = str(sender.get("id")) == own_id
    text = detail.get("message")
    row: dict[str, Any] = {
        "direction": Direction.OUTBOUND if outbound else Direction.INBOUND,
        "status": MessageStatus.PUBLISHED if outbound else MessageStatus.RECEIVED,
        "body": text if isinstance(text, str) and text else None,
        "external_id": str(detail["id"]),
        "external_posted_at": posted_at,
    }
    listed = detail.get("attachments")
    items = listed.get("data") if isinstance(listed, dict) else None
    if isinstance(items, list) and items:
        # As a webhook's attachments are stored (and then copied to the media store).
        row["attachments"] = [attachment_of(_as_webhook(item), settings) for item in items]
    return row


def _as_webhook(item: Any) -> dict[str, Any]:
    """A Conversations API attachment (Meta's Message reference: `image_data`, `video_data`,
    or a `file_url` typed by its `mime_type`) in a webhook's shape, `{type, payload: {url}}`,
    so that inbound's one reading of attachments (`attachment_of`) stores it."""
    item = item if isinstance(item, dict) else {}
    mime_type = str(item.get("mime_type") or "")
    image, video = item.get("image_data"), item.get("video_data")
    if isinstance(image, dict):
        kind = "sticker" if image.get("render_as_sticker") else "image"
        url = image.get("url")
    elif isinstance(video, dict):
        kind, url = "video", video.get("url")
    else:
        major = mime_type.split("/")[0]
        kind = major if major in ("image", "video", "audio") else "file"
        url = item.get("file_url")
    payload: dict[str, Any] = {"url": url} if isinstance(url, str) and url else {}
    if isinstance(item.get("name"), str):
        payload["title"] = item["name"]
    return {"type": kind, "payload": payload}


def _time(value: object) -> datetime | None:
    """Meta's times here: ISO 8601 with a +0000 offset."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
