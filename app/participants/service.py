"""The participant's Instagram profile (User Profile API), kept on their chat.

Fetched when a chat is created, refreshed once stale. Meta shares a profile only after the
person has messaged the account (code 230 before that): after that answer dmrelay asks
again only once a newer inbound message has arrived, so there is no retry storm.

Their picture (`profile_pic`, a CDN link that expires within days) is copied to the media
store when fetched, and copied again once the copy is PARTICIPANT_AVATAR_MAX_AGE_SECONDS old;
the copy it replaces is deleted. A copy that fails keeps the previous one (or, with none
yet, Meta's link), and is tried again no sooner than PARTICIPANT_RETRY_SECONDS later.
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.chats.models import Chat
from app.core.db import session_scope
from app.core.errors import APIError
from app.core.jobs import Job, JobName, enqueue_after_commit
from app.core.settings import Settings
from app.media import service as media
from app.meta.errors import GraphError
from app.meta.graph import GraphClient, GraphUnreachable
from app.participants import repository
from app.profiles.models import Profile
from app.profiles.service import graph_account

log = logging.getLogger(__name__)

CONSENT_REQUIRED_CODE = 230
CONSENT_REQUIRED = "consent_required"
# Profile fields kept in the chat's metadata (name, username and picture have columns).
METADATA_FIELDS = (
    "follower_count",
    "is_verified_user",
    "is_user_follow_business",
    "is_business_follow_user",
)


# While a job fetches a participant, no other job fetches them: the job claims them with a
# Redis key, which it deletes when done, or which expires (the job died) after this long.
CLAIM_SECONDS = 60
# Profile requests of one job in flight at once.
FETCHES_AT_ONCE = 20


def _claim_key(chat_id: int) -> str:
    return f"dmrelay:participant:{chat_id}"


def is_stale(chat: Chat, settings: Settings, now: datetime) -> bool:
    synced_at, error = chat.participant_synced_at, chat.participant_sync_error
    if synced_at is None:
        return True
    if error == CONSENT_REQUIRED:
        # Messaging the account is what grants consent.
        return chat.last_inbound_at is not None and chat.last_inbound_at > synced_at
    limit = settings.participant_retry_seconds if error else settings.participant_refresh_seconds
    if now - synced_at > timedelta(seconds=limit):
        return True
    # A picture to copy (again) is fetched with the profile, but no sooner after the last
    # fetch than a failed one is retried.
    retry = timedelta(seconds=settings.participant_retry_seconds)
    return avatar_due(chat, settings, now) and now - synced_at > retry


def avatar_due(chat: Chat, settings: Settings, now: datetime) -> bool:
    """Whether the participant's picture is to be copied: never copied, or the copy too old."""
    copied_at = chat.participant_avatar_synced_at
    max_age = timedelta(seconds=settings.participant_avatar_max_age_seconds)
    return copied_at is None or now - copied_at > max_age


def refresh_if_stale(session: AsyncSession, chats: list[Chat], settings: Settings) -> None:
    """Once the session commits, have the participants of those chats whose profile is
    stale fetched again, by one job for them all."""
    now = datetime.now(UTC)
    stale = [chat.id for chat in chats if is_stale(chat, settings, now)]
    if stale:
        enqueue_after_commit(session, Job(JobName.REFRESH_PARTICIPANTS, (stale,)))


async def fetch(
    graph: GraphClient, settings: Settings, profile: Profile, user_id: str
) -> dict[str, Any]:
    """The participant's profile from Meta; raises GraphError or GraphUnreachable."""
    return await graph.get_user_profile(graph_account(profile, settings), user_id)


def _stored(fetched: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The chat's participant columns from a fetched profile; `metadata` is merged into the
    chat's own."""
    return {
        "participant_name": fetched.get("name"),
        "participant_username": fetched.get("username"),
        "participant_synced_at": now,
        "participant_sync_error": None,
        "metadata": {field: fetched.get(field) for field in METADATA_FIELDS},
    }


def failure_of(error: Exception) -> str:
    if isinstance(error, GraphError):
        return CONSENT_REQUIRED if error.code == CONSENT_REQUIRED_CODE else error.message
    return f"Meta could not be reached: {type(error).__name__}"


@asynccontextmanager
async def _autocommit(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session for one statement, which needs no transaction around it (nor its BEGIN and
    COMMIT round trips)."""
    async with sessionmaker() as session:
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        yield session


async def refresh(
    sessionmaker: async_sessionmaker[AsyncSession],
    graph: GraphClient,
    settings: Settings,
    redis: Redis,
    mirror: media.Mirror,
    chat_ids: list[int],
) -> None:
    """The worker job: fetch the stale ones among these chats' participants (and copy their
    pictures when due) outside any transaction (those another job is fetching left to it),
    then store the outcomes."""
    async with _autocommit(sessionmaker) as session:
        rows = await repository.chats_with_profiles(session, chat_ids)
    now = datetime.now(UTC)
    claimed = await _claim(redis, [row for row in rows if is_stale(row[0], settings, now)])
    if not claimed:
        return
    try:
        await _fetch_and_store(sessionmaker, graph, settings, mirror, claimed)
    finally:
        await redis.delete(*(_claim_key(chat.id) for chat, _ in claimed))


async def _claim(redis: Redis, rows: Sequence[Row[Chat, Profile]]) -> list[Row[Chat, Profile]]:
    """Those of these (chat, profile) rows no other job is fetching, now claimed by this one."""
    async with redis.pipeline(transaction=False) as pipe:
        for chat, _ in rows:
            pipe.set(_claim_key(chat.id), 1, nx=True, ex=CLAIM_SECONDS)
        won = await pipe.execute()
    return [row for row, claimed in zip(rows, won, strict=True) if claimed]


async def _fetch_and_store(
    sessionmaker: async_sessionmaker[AsyncSession],
    graph: GraphClient,
    settings: Settings,
    mirror: media.Mirror,
    rows: list[Row[Chat, Profile]],
) -> None:
    at_once = asyncio.Semaphore(FETCHES_AT_ONCE)
    now = datetime.now(UTC)
    avatars: list[tuple[int, Avatar]] = []

    async def outcome(chat: Chat, profile: Profile) -> tuple[int, dict[str, Any] | str]:
        async with at_once:
            try:
                fetched = await fetch(graph, settings, profile, chat.participant_external_id)
            except (GraphError, GraphUnreachable) as error:
                return chat.id, failure_of(error)
            if avatar_due(chat, settings, now):
                avatars.append((chat.id, await _copy_avatar(mirror, chat, fetched)))
            return chat.id, fetched

    outcomes = await asyncio.gather(*(outcome(chat, profile) for chat, profile in rows))
    now = datetime.now(UTC)
    # Pictures first: a profile seen fetched has its picture in place.
    if avatars:
        await _store_avatars(sessionmaker, mirror, avatars, now)
    await _store_outcomes(sessionmaker, outcomes, now)


@dataclass(frozen=True)
class Avatar:
    """A participant's picture after a fetch: a new copy (its URL and key), no picture at all
    (neither), or a failed copy (Meta's URL, no key)."""

    url: str | None
    key: str | None
    failed: bool = False


async def _copy_avatar(mirror: media.Mirror, chat: Chat, fetched: dict[str, Any]) -> Avatar:
    source = fetched.get("profile_pic")
    if not source:
        return Avatar(None, None)
    try:
        key, url = await mirror.copy(str(source), f"avatars/{chat.id}", kind="image/")
    except Exception as error:  # a download or the store failing fails the copy, not the fetch
        log.warning("copying the picture of chat %s's participant failed: %s", chat.id, error)
        return Avatar(str(source), None, failed=True)
    return Avatar(url, key)


async def _store_avatars(
    sessionmaker: async_sessionmaker[AsyncSession],
    mirror: media.Mirror,
    avatars: list[tuple[int, Avatar]],
    now: datetime,
) -> None:
    """Point the chats at their new pictures, in one transaction that locks them (in id
    order) and records the copies no chat keeps for deletion: those replaced, and new ones
    whose chat is gone meanwhile. A failed copy changes a chat only if it has none."""
    async for session in session_scope(sessionmaker, mirror.redis):
        current = await repository.lock_avatar_keys(session, [chat_id for chat_id, _ in avatars])
        rows: list[tuple[int, dict[str, Any]]] = []
        unkept: list[str] = []
        for chat_id, avatar in sorted(avatars, key=lambda row: row[0]):
            if chat_id not in current:
                unkept += [avatar.key] if avatar.key else []
                continue
            old_key = current[chat_id]
            if avatar.failed and old_key is not None:
                continue
            unkept += [old_key] if old_key and old_key != avatar.key else []
            copied_at = None if avatar.failed else now
            rows.append(
                (
                    chat_id,
                    {
                        "participant_avatar_url": avatar.url,
                        "participant_avatar_key": avatar.key,
                        "participant_avatar_synced_at": copied_at,
                    },
                )
            )
        if rows:
            await repository.store(session, rows)
        await media.delete_after_commit(session, unkept)


async def _store_outcomes(
    sessionmaker: async_sessionmaker[AsyncSession],
    outcomes: list[tuple[int, dict[str, Any] | str]],
    now: datetime,
) -> None:
    """Fetched profiles and failures, by one statement each. Each statement (one transaction)
    locks its chats in id order, as every transaction that locks several chats does: it never
    deadlocks with them, and while it waits for a chat, it holds none after it."""
    outcomes = sorted(outcomes, key=lambda outcome: outcome[0])
    fetched = [
        (chat_id, _stored(answer, now)) for chat_id, answer in outcomes if isinstance(answer, dict)
    ]
    failed = [
        (chat_id, {"participant_synced_at": now, "participant_sync_error": answer})
        for chat_id, answer in outcomes
        if isinstance(answer, str)
    ]
    async with _autocommit(sessionmaker) as session:
        for rows in filter(None, (fetched, failed)):
            await repository.store(session, rows)


async def status(
    session: AsyncSession, graph: GraphClient, settings: Settings, profile: Profile, user_id: str
) -> dict[str, Any]:
    """The participant's status for the API, from the chat when fresh, else from Meta."""
    chat = await repository.chat_with(session, profile.id, user_id)
    now = datetime.now(UTC)
    fresh = timedelta(seconds=settings.participant_status_cache_seconds)
    if (
        chat is not None
        and chat.participant_sync_error is None
        and chat.participant_synced_at is not None
        and now - chat.participant_synced_at <= fresh
    ):
        return _status_of(chat.metadata_ or {}, chat.participant_synced_at)
    try:
        fetched = await fetch(graph, settings, profile, user_id)
    except GraphError as error:
        if error.code == CONSENT_REQUIRED_CODE:
            raise APIError(
                422,
                "Instagram shares a participant's profile only after they have messaged the "
                "account (Meta: user consent is required)",
            ) from error
        raise APIError(502, f"Meta refused the profile request: {error.message}") from error
    except GraphUnreachable as error:
        raise APIError(502, "dmrelay could not reach Meta's Graph API") from error
    if chat is not None:
        await repository.store(session, [(chat.id, _stored(fetched, now))])
    return _status_of(fetched, now)


def _status_of(fields: dict[str, Any], fetched_at: datetime) -> dict[str, Any]:
    return {
        **{field: fields.get(field) for field in METADATA_FIELDS},
        "fetched_at": fetched_at,
    }
