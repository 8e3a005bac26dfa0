"""Every query on API keys."""

from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys.models import ApiKey
from app.api_keys.schemas import KeyInfo, Principal
from app.profiles.models import ProfileGroup


async def create(
    session: AsyncSession, name: str, token_hash: str, profile_group_id: int | None
) -> ApiKey:
    key = ApiKey(name=name, token_hash=token_hash, profile_group_id=profile_group_id)
    session.add(key)
    await session.flush()
    await session.refresh(key)  # its server-made created_at, for the API's answer
    return key


def _infos() -> Select[*tuple[Any, ...]]:
    return select(
        ApiKey.id,
        ApiKey.name,
        ApiKey.profile_group_id,
        ProfileGroup.name.label("profile_group"),
        ApiKey.created_at,
        ApiKey.revoked_at,
    ).outerjoin(ProfileGroup, ProfileGroup.id == ApiKey.profile_group_id)


async def list_infos(session: AsyncSession) -> list[KeyInfo]:
    rows = await session.execute(_infos().order_by(ApiKey.id))
    return [KeyInfo(**row._mapping) for row in rows]


async def revoke(session: AsyncSession, key_id: int) -> KeyInfo | None:
    """Mark the key revoked, keeping a first revocation time; None if there is no such key."""
    revoked = await session.scalar(
        update(ApiKey)
        .where(ApiKey.id == key_id)
        .values(revoked_at=func.coalesce(ApiKey.revoked_at, func.now()))
        .returning(ApiKey.id)
    )
    if revoked is None:
        return None
    row = (await session.execute(_infos().where(ApiKey.id == key_id))).one()
    return KeyInfo(**row._mapping)


async def find_unrevoked(session: AsyncSession, token_hash: str) -> Principal | None:
    """The principal of the unrevoked key with this token hash, if any."""
    row = (
        await session.execute(
            select(ApiKey.id, ApiKey.profile_group_id).where(
                ApiKey.token_hash == token_hash, ApiKey.revoked_at.is_(None)
            )
        )
    ).first()
    return (
        None if row is None else Principal(api_key_id=row.id, profile_group_id=row.profile_group_id)
    )


def _unrevoked(profile_group_id: int | None) -> Select[ApiKey]:
    """Unrevoked keys; of one group only, if given."""
    statement = select(ApiKey).where(ApiKey.revoked_at.is_(None))
    if profile_group_id is not None:
        statement = statement.where(ApiKey.profile_group_id == profile_group_id)
    return statement


async def list_unrevoked(session: AsyncSession, profile_group_id: int | None) -> list[ApiKey]:
    return list((await session.scalars(_unrevoked(profile_group_id).order_by(ApiKey.id))).all())


async def get_unrevoked(
    session: AsyncSession, key_id: int, profile_group_id: int | None
) -> ApiKey | None:
    return await session.scalar(_unrevoked(profile_group_id).where(ApiKey.id == key_id))


async def group_exists(session: AsyncSession, group_id: int) -> bool:
    found = await session.scalar(select(ProfileGroup.id).where(ProfileGroup.id == group_id))
    return found is not None
