"""Every query on profiles and profile groups."""

from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Select, Table, delete, func, select, true, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.api_keys.auth import Scope
from app.api_keys.models import ApiKey
from app.events import repository as events_repository
from app.events import service as events
from app.events.models import CustomerEventType
from app.profiles.models import Connection, Profile, ProfileGroup, ProfileStatus

S = TypeVar("S", bound=Select[*tuple[Any, ...]])


def visible(statement: S, scope: Scope) -> S:
    """Confine a query that involves profiles to what the caller's key may see: never a
    profile being erased."""
    statement = statement.where(Profile.erasing_since.is_(None))
    if scope.profile_group_id is None:
        return statement
    return statement.where(Profile.profile_group_id == scope.profile_group_id)


async def list_visible(session: AsyncSession, scope: Scope) -> list[Profile]:
    return list((await session.scalars(visible(select(Profile), scope).order_by(Profile.id))).all())


async def get_visible(session: AsyncSession, scope: Scope, profile_id: int) -> Profile | None:
    return await session.scalar(visible(select(Profile).where(Profile.id == profile_id), scope))


async def ensure_group(session: AsyncSession, name: str) -> ProfileGroup:
    """The group of this name, created if missing."""
    await session.execute(
        insert(ProfileGroup).values(name=name).on_conflict_do_nothing(index_elements=["name"])
    )
    return (await session.scalars(select(ProfileGroup).where(ProfileGroup.name == name))).one()


async def upsert(
    session: AsyncSession, values: dict[str, Any], group_id: int, move: bool
) -> Profile | None:
    """Insert the profile, or update the one with its platform id; None if that one is in
    another group than `group_id` and not `move` (nothing is changed then)."""
    statement = (
        insert(Profile)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["platform", "platform_id"],
            set_={k: v for k, v in values.items() if k not in {"platform", "platform_id"}},
            # In the statement itself, so a concurrent add cannot slip a move past the check;
            # a profile being erased is never revived.
            where=Profile.erasing_since.is_(None)
            & (true() if move else Profile.profile_group_id == group_id),
        )
        .returning(Profile)
    )
    return (await session.scalars(statement)).one_or_none()


async def group_name_of(session: AsyncSession, platform: str, platform_id: str) -> str | None:
    """The name of the group the account is connected in, if it is."""
    return await session.scalar(
        select(ProfileGroup.name)
        .join(Profile, Profile.profile_group_id == ProfileGroup.id)
        .where(Profile.platform == platform, Profile.platform_id == platform_id)
    )


async def being_erased(session: AsyncSession, platform: str, platform_id: str) -> bool:
    """Whether the account's profile is being erased (it cannot be connected until then)."""
    found = await session.scalar(
        select(Profile.id).where(
            Profile.platform == platform,
            Profile.platform_id == platform_id,
            Profile.erasing_since.is_not(None),
        )
    )
    return found is not None


def _groups(scope: Scope) -> Select[ProfileGroup, int]:
    """The groups the key may see, each with its number of profiles."""
    count = (
        select(func.count(Profile.id))
        .where(Profile.profile_group_id == ProfileGroup.id, Profile.erasing_since.is_(None))
        .scalar_subquery()
    )
    statement = select(ProfileGroup, count)
    if scope.profile_group_id is not None:
        statement = statement.where(ProfileGroup.id == scope.profile_group_id)
    return statement


async def list_groups(session: AsyncSession, scope: Scope) -> list[tuple[ProfileGroup, int]]:
    rows = await session.execute(_groups(scope).order_by(ProfileGroup.id))
    return [(group, count) for group, count in rows.all()]


async def get_group(
    session: AsyncSession, scope: Scope, group_id: int
) -> tuple[ProfileGroup, int] | None:
    row = (await session.execute(_groups(scope).where(ProfileGroup.id == group_id))).first()
    return None if row is None else (row[0], row[1])


async def create_group(session: AsyncSession, name: str) -> ProfileGroup | None:
    """A new group; None if one of this name exists."""
    return await session.scalar(
        insert(ProfileGroup)
        .values(name=name)
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(ProfileGroup)
    )


async def delete_group(session: AsyncSession, group_id: int) -> bool:
    """Delete the group and its keys (a key of a deleted group has nothing to see); False if
    it still has profiles (checked under the group's row lock)."""
    locked = await session.scalar(
        select(ProfileGroup.id).where(ProfileGroup.id == group_id).with_for_update()
    )
    has_profiles = await session.scalar(
        select(func.count(Profile.id)).where(Profile.profile_group_id == group_id)
    )
    if locked is None or has_profiles:
        return False
    await session.execute(delete(ApiKey).where(ApiKey.profile_group_id == group_id))
    await session.execute(delete(ProfileGroup).where(ProfileGroup.id == group_id))
    return True


async def expire(
    connection: AsyncSession | AsyncConnection,
    profile_id: int,
    refused_token: str,
    origin: str = "automated",
) -> bool:
    """Mark an active profile expired (Meta refused its token, `refused_token` encrypted as
    stored), with its profile.disconnected event; False if it was not active, or holds
    another token: reconnected while the refused one was in use, it stays active."""
    row = (
        await connection.execute(
            update(Profile)
            .where(
                Profile.id == profile_id,
                Profile.status == ProfileStatus.ACTIVE,
                Profile.access_token_encrypted == refused_token,
            )
            .values(status=ProfileStatus.EXPIRED)
            .returning(*cast(Table, Profile.__table__).c)
        )
    ).first()
    if row is None:
        return False
    event = events.profile_event(row, CustomerEventType.PROFILE_DISCONNECTED, origin)
    await events_repository.insert_all(connection, [event])
    return True


async def due_for_refresh(
    session: AsyncSession, issued_before: datetime, expiring_before: datetime
) -> list[int]:
    """Active Instagram Login profiles whose token was issued before `issued_before` and
    expires before `expiring_before` (a token of unknown age, added by hand, is left alone)."""
    due = await session.scalars(
        select(Profile.id).where(
            Profile.status == ProfileStatus.ACTIVE,
            Profile.connection == Connection.INSTAGRAM_LOGIN,
            Profile.token_issued_at <= issued_before,
            Profile.expires_at <= expiring_before,
        )
    )
    return list(due.all())


async def replace_token(
    session: AsyncSession, profile_id: int, old_ciphertext: str, values: dict[str, Any]
) -> bool:
    """Store a refreshed token (and what came with it) if the profile still has the old one."""
    replaced = await session.scalar(
        update(Profile)
        .where(Profile.id == profile_id, Profile.access_token_encrypted == old_ciphertext)
        .values(**values)
        .returning(Profile.id)
    )
    return replaced is not None
