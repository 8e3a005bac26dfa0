import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys.models import ApiKey

TOKEN_PREFIX = "dmr_"
# How long a verified key is trusted without asking the database again.
CACHE_SECONDS = 30.0


@dataclass(frozen=True)
class Principal:
    api_key_id: int
    # None: an account-wide key, which sees every profile group.
    profile_group_id: int | None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def create(
    session: AsyncSession, name: str, profile_group_id: int | None
) -> tuple[ApiKey, str]:
    token = new_token()
    key = ApiKey(name=name, token_hash=hash_token(token), profile_group_id=profile_group_id)
    session.add(key)
    await session.flush()
    return key, token


class PrincipalCache:
    """Verified keys, per process: the accept path must not pay a query per request."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Principal]] = {}

    def cached(self, token: str) -> Principal | None:
        """The key's principal if it was verified within CACHE_SECONDS, without a query."""
        entry = self._entries.get(hash_token(token))
        return entry[1] if entry and entry[0] > time.monotonic() else None

    async def resolve(self, session: AsyncSession, token: str) -> Principal | None:
        if (principal := self.cached(token)) is not None:
            return principal
        token_hash = hash_token(token)
        row = (
            await session.execute(
                select(ApiKey.id, ApiKey.profile_group_id).where(
                    ApiKey.token_hash == token_hash, ApiKey.revoked_at.is_(None)
                )
            )
        ).first()
        if row is None:
            self._entries.pop(token_hash, None)
            return None
        principal = Principal(api_key_id=row.id, profile_group_id=row.profile_group_id)
        self._entries[token_hash] = (time.monotonic() + CACHE_SECONDS, principal)
        return principal
