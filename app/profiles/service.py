from functools import lru_cache
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys import service as api_keys
from app.api_keys.auth import Scope
from app.core import crypto, ids
from app.core.db import after_commit
from app.core.errors import APIError, NotFound
from app.core.jobs import Job, JobName, enqueue_after_commit
from app.core.settings import Settings
from app.events import service as events
from app.events.models import CustomerEventType
from app.meta.graph import Account
from app.profiles import erasure, repository
from app.profiles.models import Connection, Profile, ProfileGroup, ProfileStatus

DEFAULT_GROUP = "default"
PLATFORM = "instagram"


async def list_profiles(session: AsyncSession, scope: Scope) -> list[Profile]:
    return await repository.list_visible(session, scope)


async def get_profile(session: AsyncSession, scope: Scope, public_id: str) -> Profile:
    serial = ids.decode(ids.Kind.PROFILE, public_id)
    profile = await repository.get_visible(session, scope, serial) if serial is not None else None
    if profile is None:
        raise NotFound("Profile")
    return profile


async def ensure_group(session: AsyncSession, name: str) -> ProfileGroup:
    return await repository.ensure_group(session, name)


class ProfileInAnotherGroup(APIError):
    """The account is connected already, in another profile group; moving it was not asked."""

    def __init__(self, platform_id: str, group_name: str, requested: str) -> None:
        super().__init__(
            409,
            f"Instagram account {platform_id} is already connected in profile group "
            f"'{group_name}'; moving it to '{requested}' must be asked for explicitly",
        )
        self.group_name = group_name


class ProfileBeingErased(APIError):
    """The account's profile is being erased: it can be connected again once that is done."""

    def __init__(self, platform_id: str) -> None:
        super().__init__(
            409,
            f"Instagram account {platform_id} is being erased; connect it again once that is "
            "done (in a minute or so)",
        )


async def add_profile(
    session: AsyncSession,
    settings: Settings,
    *,
    platform_id: str,
    access_token: str,
    connection: Connection,
    group: ProfileGroup,
    username: str | None = None,
    name: str | None = None,
    page_id: str | None = None,
    move: bool = False,
    extra: dict[str, Any] | None = None,
) -> Profile:
    """Connect an account, or reconnect it with a fresh token (it becomes active again).

    An account connected in another group stays there (ProfileInAnotherGroup) unless `move`:
    a group confines what keys see, so a silent move would hand the account's chats to
    other keys."""
    values = {
        "profile_group_id": group.id,
        "platform": PLATFORM,
        "platform_id": platform_id,
        "username": username,
        "name": name,
        "connection": connection,
        "page_id": page_id,
        "access_token_encrypted": crypto.encrypt(settings.secret_key, access_token),
        "status": ProfileStatus.ACTIVE,
        **(extra or {}),
    }
    profile = await repository.upsert(session, values, group.id, move)
    if profile is None:
        if await repository.being_erased(session, PLATFORM, platform_id):
            raise ProfileBeingErased(platform_id)
        current = await repository.group_name_of(session, PLATFORM, platform_id)
        raise ProfileInAnotherGroup(platform_id, current or "?", group.name)
    return profile


def graph_account(profile: Profile, settings: Settings) -> Account:
    """What the Graph API needs to act as this profile, its token decrypted."""
    return Account(
        connection=profile.connection,
        platform_id=profile.platform_id,
        page_id=profile.page_id,
        access_token=access_token(profile.access_token_encrypted, settings),
        appsecret_proof=profile.appsecret_proof,
    )


def access_token(ciphertext: str, settings: Settings) -> str:
    """A profile's access token, from its stored ciphertext."""
    return _decrypted(settings.secret_key, ciphertext)


# Decrypting (an HMAC check, then AES) on every send cost the worker more than a Redis
# round trip; a reconnected profile has a new ciphertext, so it never meets a stale entry.
@lru_cache(maxsize=4096)
def _decrypted(secret_key: str, ciphertext: str) -> str:
    return crypto.decrypt(secret_key, ciphertext)


def _group_serial(public_id: str) -> int:
    serial = ids.decode(ids.Kind.PROFILE_GROUP, public_id)
    if serial is None:
        raise NotFound("Profile group")
    return serial


async def list_groups(session: AsyncSession, scope: Scope) -> list[tuple[ProfileGroup, int]]:
    return await repository.list_groups(session, scope)


async def get_group(
    session: AsyncSession, scope: Scope, public_id: str
) -> tuple[ProfileGroup, int]:
    """The group and its number of profiles; NotFound if the key may not see it."""
    found = await repository.get_group(session, scope, _group_serial(public_id))
    if found is None:
        raise NotFound("Profile group")
    return found


async def create_group(session: AsyncSession, scope: Scope, name: str) -> ProfileGroup:
    scope.require_account_wide("create profile groups")
    group = await repository.create_group(session, name)
    if group is None:
        raise APIError(409, f"A profile group named '{name}' exists already", [])
    return group


async def delete_group(session: AsyncSession, scope: Scope, public_id: str) -> None:
    """Delete an empty group and its keys (told to every API process once committed)."""
    group, count = await get_group(session, scope, public_id)
    scope.require_account_wide("delete profile groups")
    if count:
        raise APIError(
            409,
            f"Profile group '{group.name}' still has profiles: erase them first "
            "(DELETE /api/profiles/{id}?erase=true)",
        )
    if not await repository.delete_group(session, group.id):
        # Its profiles are hidden, but their erasure (a job) has not finished.
        raise APIError(
            409,
            f"Profile group '{group.name}' still has profiles being erased: try again in a minute",
        )
    after_commit(session, api_keys.signal_revocation)


def unsubscribe_job(profile_id: int) -> Job:
    """The job that asks Meta to stop sending a disconnected profile's webhooks."""
    return Job(JobName.UNSUBSCRIBE_ACCOUNT, (profile_id,), f"unsubscribe:{profile_id}")


async def delete_profile(session: AsyncSession, scope: Scope, public_id: str, erase: bool) -> None:
    """Disconnect the profile (its history stays), or with `erase` remove it and everything
    dmrelay keeps of it: at once invisible, deleted by a job. Either way Meta is asked, once
    this commits, to stop sending its webhooks: by a job, so that Meta's answer neither
    delays nor fails the request. Disconnecting one that is disconnected already changes
    nothing."""
    profile = await get_profile(session, scope, public_id)
    if erase:
        # erase_profile unsubscribes first: it needs the token, which goes with the row.
        await erasure.start_erasing(session, profile)
    elif profile.status != ProfileStatus.INACTIVE:
        await erasure.disconnect(session, profile)
        events.record_profile(
            session, CustomerEventType.PROFILE_DISCONNECTED, profile, origin="user"
        )
        enqueue_after_commit(session, unsubscribe_job(profile.id))
