"""The participant's Instagram profile (User Profile API), kept on their chat.

Fetched when a chat is created, refreshed once stale. Meta shares a profile only after the
person has messaged the account (code 230 before that): after that answer dmrelay asks
again only once a newer inbound message has arrived, so there is no retry storm.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import cast, func, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from app.chats.models import Chat
from app.core import queue
from app.core.db import after_commit
from app.core.errors import APIError
from app.core.settings import Settings
from app.meta.errors import GraphError
from app.meta.graph import GraphClient, GraphUnreachable
from app.profiles.models import Profile
from app.profiles.service import graph_account

CONSENT_REQUIRED_CODE = 230
CONSENT_REQUIRED = "consent_required"
# Profile fields kept in the chat's metadata (name, username and picture have columns).
METADATA_FIELDS = (
    "follower_count",
    "is_verified_user",
    "is_user_follow_business",
    "is_business_follow_user",
)


def job_id(chat_id: int) -> str:
    return f"participant:{chat_id}"


def is_stale(chat: Chat, settings: Settings, now: datetime) -> bool:
    synced_at, error = chat.participant_synced_at, chat.participant_sync_error
    if synced_at is None:
        return True
    if error == CONSENT_REQUIRED:
        # Messaging the account is what grants consent.
        return chat.last_inbound_at is not None and chat.last_inbound_at > synced_at
    limit = settings.participant_retry_seconds if error else settings.participant_refresh_seconds
    return now - synced_at > timedelta(seconds=limit)


def refresh_if_stale(session: AsyncSession, chats: list[Chat], settings: Settings) -> None:
    """Once the session commits, have the participants of those chats whose profile is
    stale fetched again: one round trip to Redis for them all (a job each)."""
    now = datetime.now(UTC)
    jobs = [((chat.id,), [job_id(chat.id)]) for chat in chats if is_stale(chat, settings, now)]
    if jobs:
        after_commit(
            session, lambda pool: queue.enqueue_each_first_free(pool, "refresh_participant", jobs)
        )


async def fetch(graph: GraphClient, settings: Settings, profile: Profile, user_id: str) -> dict:
    """The participant's profile from Meta; raises GraphError or GraphUnreachable."""
    return await graph.get_user_profile(graph_account(profile, settings), user_id)


def store(chat: Chat, fetched: dict[str, Any], now: datetime) -> None:
    for column, value in _stored(fetched, now).items():
        setattr(chat, column, value)
    chat.metadata_ = {**(chat.metadata_ or {}), **_metadata(fetched)}


def _stored(fetched: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The chat's participant columns from a fetched profile, metadata aside."""
    return {
        "participant_name": fetched.get("name"),
        "participant_username": fetched.get("username"),
        "participant_avatar_url": fetched.get("profile_pic"),
        "participant_synced_at": now,
        "participant_sync_error": None,
    }


def _metadata(fetched: dict[str, Any]) -> dict[str, Any]:
    return {field: fetched.get(field) for field in METADATA_FIELDS}


def failure_of(error: Exception) -> str:
    if isinstance(error, GraphError):
        return CONSENT_REQUIRED if error.code == CONSENT_REQUIRED_CODE else error.message
    return f"Meta could not be reached: {type(error).__name__}"


@asynccontextmanager
async def _autocommit(sessionmaker: Any) -> AsyncIterator[AsyncSession]:
    """A session for one statement, which needs no transaction around it (nor its BEGIN and
    COMMIT round trips)."""
    async with sessionmaker() as session:
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        yield session


async def refresh(sessionmaker: Any, graph: GraphClient, settings: Settings, chat_id: int) -> None:
    """The worker job: fetch outside any transaction, then store the outcome."""
    async with _autocommit(sessionmaker) as session:
        row = (
            await session.execute(
                select(Chat, Profile)
                .join(Profile, Profile.id == Chat.profile_id)
                .where(Chat.id == chat_id)
            )
        ).first()
    if row is None or not is_stale(row.Chat, settings, datetime.now(UTC)):
        return
    try:
        fetched = await fetch(graph, settings, row.Profile, row.Chat.participant_external_id)
        failure = None
    except (GraphError, GraphUnreachable) as error:
        fetched, failure = None, failure_of(error)
    now = datetime.now(UTC)
    if fetched is None:
        changes = {"participant_synced_at": now, "participant_sync_error": failure}
    else:
        # Merged by the UPDATE itself: no locked read of the row first.
        merged = func.coalesce(Chat.metadata_, cast({}, JSONB)).op("||")(
            cast(_metadata(fetched), JSONB)
        )
        changes = {**_stored(fetched, now), "metadata_": merged}
    async with _autocommit(sessionmaker) as session:
        await session.execute(
            update(Chat)
            .where(Chat.id == chat_id)
            .values(**changes)
            .execution_options(synchronize_session=False)
        )


async def status(
    session: AsyncSession, graph: GraphClient, settings: Settings, profile: Profile, user_id: str
) -> dict[str, Any]:
    """The participant's status for the API, from the chat when fresh, else from Meta."""
    chat = await session.scalar(
        select(Chat).where(Chat.profile_id == profile.id, Chat.participant_external_id == user_id)
    )
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
        store(chat, fetched, now)
    return _status_of(fetched, now)


def _status_of(fields: dict[str, Any], fetched_at: datetime) -> dict[str, Any]:
    return {
        **{field: fields.get(field) for field in METADATA_FIELDS},
        "fetched_at": fetched_at,
    }
