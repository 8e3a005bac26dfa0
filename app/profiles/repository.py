"""Every query on profiles and profile groups."""

from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys.auth import Scope
from app.profiles.models import Profile, ProfileGroup

S = TypeVar("S", bound=Select[*tuple[Any, ...]])


def visible(statement: S, scope: Scope) -> S:
    """Confine a query that involves profiles to what the caller's key may see."""
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
            # In the statement itself, so a concurrent add cannot slip a move past the check.
            where=None if move else Profile.profile_group_id == group_id,
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
