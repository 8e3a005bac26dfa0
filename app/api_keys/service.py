import asyncio
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.api_keys import repository
from app.api_keys.models import ApiKey
from app.api_keys.schemas import KeyInfo, Principal
from app.core import ids
from app.core.db import after_commit
from app.core.errors import APIError, NotFound

if TYPE_CHECKING:
    from app.api_keys.auth import Scope

log = logging.getLogger(__name__)

TOKEN_PREFIX = "dmr_"
# How long a verified key is trusted without asking the database again: a backstop only,
# for a key revoked without the Redis signal below (by hand, in SQL).
CACHE_SECONDS = 30.0
# A key used since it was verified is verified again by the watcher (below) once it is this
# old, while requests are still served from the cache: under steady traffic its entry never
# runs out. Were it left to run out, every request in flight would miss it at once and take
# FastAPI's full route (the express lane trusts the cache alone): a burst of slow requests
# every 30 s, which was the accept path's p99 (docs/performance.md, "Accept").
REFRESH_SECONDS = CACHE_SECONDS / 2
# Set to a fresh random value whenever a key is revoked. Random rather than a counter, so
# that a Redis flush followed by a revocation can never bring back a value a process saw.
REVOCATIONS_KEY = "dmrelay:api_keys:revoked"
# A process trusts its cache only this long after a read of REVOCATIONS_KEY began: a revoked
# key stops working on every API process within this time of the signal.
REVOCATION_SECONDS = 1.0
# How often each API process reads REVOCATIONS_KEY (one GET, whatever the traffic).
WATCH_SECONDS = 0.2
_UNSEEN = object()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def create(
    session: AsyncSession, name: str, profile_group_id: int | None
) -> tuple[ApiKey, str]:
    token = new_token()
    key = await repository.create(session, name, hash_token(token), profile_group_id)
    return key, token


async def list_keys(session: AsyncSession) -> list[KeyInfo]:
    return await repository.list_infos(session)


async def revoke(session: AsyncSession, key_id: int) -> KeyInfo | None:
    """Mark the key revoked (a revoked key keeps its first revocation time); None if there
    is no such key. Once committed, `signal_revocation` tells the API processes."""
    return await repository.revoke(session, key_id)


async def signal_revocation(redis: Redis) -> None:
    """Tell every API process to forget the keys it verified (run after the commit: a
    process that re-verifies a key before it must not find it still valid)."""
    await redis.set(REVOCATIONS_KEY, secrets.token_hex(16))


@dataclass(slots=True)
class _Entry:
    expires: float
    principal: Principal
    verified: float
    # Used since it was verified: worth verifying again before it expires.
    used: bool = False


class PrincipalCache:
    """Verified keys, per process: the accept path must not pay a query per request.

    Entries are trusted only while `watch` keeps confirming, from Redis, that no key was
    revoked since they were verified; without that (Redis unreachable, or no watcher
    running) every request is checked against the database."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._marker: bytes | None | object = _UNSEEN
        # Bumped whenever the entries are dropped: a lookup that began before must not
        # store what it read, which may predate the revocation.
        self._generation = 0
        self._trusted_until = 0.0
        self._stopping = False

    def cached(self, token: str) -> Principal | None:
        """The key's principal if it is verified and not since revoked, without a query."""
        now = time.monotonic()
        if now >= self._trusted_until:
            return None
        entry = self._entries.get(hash_token(token))
        if entry is None or entry.expires <= now:
            return None
        entry.used = True
        return entry.principal

    async def resolve(self, session: AsyncSession, token: str) -> Principal | None:
        if (principal := self.cached(token)) is not None:
            return principal
        token_hash = hash_token(token)
        generation = self._generation
        principal = await repository.find_unrevoked(session, token_hash)
        if principal is None:
            self._entries.pop(token_hash, None)
            return None
        if generation == self._generation:
            self._store(token_hash, principal)
        return principal

    def _store(self, token_hash: str, principal: Principal) -> None:
        now = time.monotonic()
        self._entries[token_hash] = _Entry(now + CACHE_SECONDS, principal, now)

    async def refresh(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        """Verify again the keys used since their verification, once REFRESH_SECONDS old:
        still valid, trusted CACHE_SECONDS more; revoked meanwhile, dropped."""
        now = time.monotonic()
        due = [
            token_hash
            for token_hash, entry in self._entries.items()
            if entry.used and now - entry.verified >= REFRESH_SECONDS
        ]
        if not due:
            return
        generation = self._generation
        async with sessionmaker() as session:
            for token_hash in due:
                principal = await repository.find_unrevoked(session, token_hash)
                if generation != self._generation:
                    return  # dropped meanwhile: what was read may predate a revocation
                if principal is None:
                    self._entries.pop(token_hash, None)
                else:
                    self._store(token_hash, principal)

    def observe(self, marker: bytes | None, read_at: float) -> None:
        """Take in REVOCATIONS_KEY's value, as read by a GET that began at `read_at`."""
        if marker != self._marker:
            self._marker = marker
            self._entries.clear()
            self._generation += 1
        self._trusted_until = read_at + REVOCATION_SECONDS

    async def watch(
        self, redis: Redis, sessionmaker: async_sessionmaker[AsyncSession] | None = None
    ) -> None:
        """Keep reading REVOCATIONS_KEY, for as long as the process serves (a task); with a
        sessionmaker, also keep the keys in use verified (`refresh`)."""
        failing = refresh_failing = False
        while not self._stopping:
            read_at = time.monotonic()
            try:
                marker = await redis.get(REVOCATIONS_KEY)
            except Exception as error:  # the watcher must outlive any failure
                if not failing:
                    log.warning(
                        "cannot check Redis for revoked API keys (%r): every request's key is "
                        "read from the database until it can",
                        error,
                    )
                failing = True
            else:
                self.observe(marker, read_at)
                failing = False
            if sessionmaker is not None:
                try:
                    await self.refresh(sessionmaker)
                except Exception as error:  # the entries then run out, as without a refresh
                    if not refresh_failing:
                        log.warning("cannot verify the API keys in use again (%r)", error)
                    refresh_failing = True
                else:
                    refresh_failing = False
            await asyncio.sleep(WATCH_SECONDS)

    def stop(self) -> None:
        """End `watch` at its next turn. Cancelling its task is not enough: redis-py awaits
        under asyncio.wait_for, which on Python 3.11 can swallow a cancellation, and the API's
        shutdown then waited for the watcher for ever."""
        self._stopping = True


# The API's keys routes. A key is looked up within the caller's scope first (one it may not
# see is "not found", whatever it is), then the caller must be account-wide.


async def list_for(session: AsyncSession, scope: "Scope") -> list[ApiKey]:
    scope.require_account_wide("manage API keys")
    return await repository.list_unrevoked(session, scope.profile_group_id)


async def create_for(
    session: AsyncSession, scope: "Scope", name: str, group_public_id: str
) -> tuple[ApiKey, str]:
    group = ids.decode(ids.Kind.PROFILE_GROUP, group_public_id)
    if (
        group is None
        or (scope.profile_group_id is not None and group != scope.profile_group_id)
        or not await repository.group_exists(session, group)
    ):
        raise APIError(
            404,
            "Profile group not found",
            [{"field": "profile_group_id", "message": "no profile group has this id"}],
        )
    scope.require_account_wide("manage API keys")
    return await create(session, name, group)


async def delete_for(session: AsyncSession, scope: "Scope", public_id: str) -> None:
    """Revoke the key; every API process refuses it within a second of the commit."""
    serial = ids.decode(ids.Kind.API_KEY, public_id)
    key = (
        None
        if serial is None
        else await repository.get_unrevoked(session, serial, scope.profile_group_id)
    )
    if key is None:
        raise NotFound("API key")
    scope.require_account_wide("manage API keys")
    await revoke(session, key.id)
    after_commit(session, signal_revocation)
