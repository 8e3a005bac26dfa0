from functools import lru_cache

from sqlalchemy import Select, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys.auth import Scope
from app.core import crypto, ids
from app.core.errors import APIError, NotFound
from app.core.settings import Settings
from app.meta.graph import Account
from app.profiles.models import Profile, ProfileGroup

DEFAULT_GROUP = "default"


def visible(statement: Select, scope: Scope) -> Select:
    """Confine a query that involves profiles to what the caller's key may see."""
    if scope.profile_group_id is None:
        return statement
    return statement.where(Profile.profile_group_id == scope.profile_group_id)


async def list_profiles(session: AsyncSession, scope: Scope) -> list[Profile]:
    return list((await session.scalars(visible(select(Profile), scope).order_by(Profile.id))).all())


async def get_profile(session: AsyncSession, scope: Scope, public_id: str) -> Profile:
    serial = ids.decode(ids.Kind.PROFILE, public_id)
    profile = (
        await session.scalar(visible(select(Profile).where(Profile.id == serial), scope))
        if serial is not None
        else None
    )
    if profile is None:
        raise NotFound("Profile")
    return profile


async def ensure_group(session: AsyncSession, name: str) -> ProfileGroup:
    await session.execute(
        insert(ProfileGroup).values(name=name).on_conflict_do_nothing(index_elements=["name"])
    )
    return (await session.scalars(select(ProfileGroup).where(ProfileGroup.name == name))).one()


class ProfileInAnotherGroup(APIError):
    """The account is connected already, in another profile group; moving it was not asked."""

    def __init__(self, platform_id: str, group_name: str, requested: str) -> None:
        super().__init__(
            409,
            f"Instagram account {platform_id} is already connected in profile group "
            f"'{group_name}'; moving it to '{requested}' must be asked for explicitly",
        )
        self.group_name = group_name


async def add_profile(
    session: AsyncSession,
    settings: Settings,
    *,
    platform_id: str,
    access_token: str,
    connection: str,
    group: ProfileGroup,
    username: str | None = None,
    name: str | None = None,
    page_id: str | None = None,
    move: bool = False,
) -> Profile:
    """Connect an account, or reconnect it with a fresh token (it becomes active again).

    An account connected in another group stays there (ProfileInAnotherGroup) unless `move`:
    a group confines what keys see, so a silent move would hand the account's chats to
    other keys."""
    values = {
        "profile_group_id": group.id,
        "platform": "instagram",
        "platform_id": platform_id,
        "username": username,
        "name": name,
        "connection": connection,
        "page_id": page_id,
        "access_token_encrypted": crypto.encrypt(settings.secret_key, access_token),
        "status": "active",
    }
    statement = (
        insert(Profile)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["platform", "platform_id"],
            set_={k: v for k, v in values.items() if k not in {"platform", "platform_id"}},
            # In the statement itself, so a concurrent add cannot slip a move past the check.
            where=None if move else Profile.profile_group_id == group.id,
        )
        .returning(Profile)
    )
    profile = (await session.scalars(statement)).one_or_none()
    if profile is None:
        current = await session.scalar(
            select(ProfileGroup.name)
            .join(Profile, Profile.profile_group_id == ProfileGroup.id)
            .where(Profile.platform == "instagram", Profile.platform_id == platform_id)
        )
        raise ProfileInAnotherGroup(platform_id, current or "?", group.name)
    return profile


def graph_account(profile: Profile, settings: Settings) -> Account:
    """What the Graph API needs to act as this profile, its token decrypted."""
    return Account(
        connection=profile.connection,
        platform_id=profile.platform_id,
        page_id=profile.page_id,
        access_token=access_token(profile.access_token_encrypted, settings),
    )


def access_token(ciphertext: str, settings: Settings) -> str:
    """A profile's access token, from its stored ciphertext."""
    return _decrypted(settings.secret_key, ciphertext)


# Decrypting (an HMAC check, then AES) on every send cost the worker more than a Redis
# round trip; a reconnected profile has a new ciphertext, so it never meets a stale entry.
@lru_cache(maxsize=4096)
def _decrypted(secret_key: str, ciphertext: str) -> str:
    return crypto.decrypt(secret_key, ciphertext)
