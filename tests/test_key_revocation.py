"""A revoked API key stops working on every API process at once, though each keeps the keys
it verified in a cache."""

import asyncio
import time

import httpx
from redis.asyncio import Redis
from sqlalchemy import text

from app.api_keys import service
from app.api_keys.service import PrincipalCache
from app.main import create_app
from tests.cli import dmrelay
from tests.conftest import _free_port, _serve, wait_for

CUSTOMER = "1700000000000099"


async def test_a_revoked_key_is_refused_by_every_api_process_within_a_second(account, clean):
    second_app = create_app(clean.settings)
    port = _free_port()
    server, task = await _serve(second_app, port)
    try:
        urls = [clean.api_url, f"http://127.0.0.1:{port}"]
        chat = await account.client.chats.create(account.profile_id, CUSTOMER)
        headers = {"Authorization": f"Bearer {account.token}"}
        async with httpx.AsyncClient(headers=headers) as http:

            async def answers() -> list[int]:
                statuses = []
                for url in urls:
                    statuses.append((await http.get(f"{url}/api/profiles")).status_code)
                    # The express lane, which takes the key from the cache alone.
                    send = await http.post(
                        f"{url}/api/chats/{chat.id}/messages", json={"body": "hi"}
                    )
                    statuses.append(send.status_code)
                return statuses

            async def served_from_cache() -> bool:
                return await answers() == [200, 202] * 2 and (
                    second_app.state.principals.cached(account.token) is not None
                )

            # Both processes verified the key and trust it from their cache (for 30 s, were
            # it not for the revocation signal).
            await wait_for(served_from_cache, timeout=10)

            (key,) = (await dmrelay("keys", "list", "--json")).json()
            assert (await dmrelay("keys", "revoke", key["id"])).code == 0

            async def refused_everywhere() -> bool:
                return await answers() == [401, 401] * 2

            # Designed for one second; the bound leaves room for a loaded machine while
            # staying far below the cache's 30 s.
            await wait_for(refused_everywhere, timeout=5, interval=0.05)
            refused = await http.get(f"{urls[1]}/api/profiles")
            assert refused.json()["error"] == "Invalid API key"
    finally:
        server.should_exit = True
        await task


async def test_a_process_that_cannot_hear_of_revocations_checks_every_key(account, clean, caplog):
    async def verified_and_cached(cache: PrincipalCache) -> bool:
        async with clean.sessionmaker() as session:
            assert await cache.resolve(session, account.token) is not None
        return cache.cached(account.token) is not None

    # Hearing from Redis, a verified key is served from the cache.
    heard, redis = PrincipalCache(), Redis.from_url(clean.settings.redis_url)
    watcher = asyncio.create_task(heard.watch(redis))
    try:
        await wait_for(lambda: verified_and_cached(heard), timeout=10)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await redis.aclose()

    # Not hearing (Redis unreachable), it is read from the database every time.
    deaf, nowhere = PrincipalCache(), Redis.from_url(f"redis://127.0.0.1:{_free_port()}/0")
    watcher = asyncio.create_task(deaf.watch(nowhere))
    try:

        async def read_failed() -> bool:
            return "cannot check Redis for revoked API keys" in caplog.text

        await wait_for(read_failed, timeout=10)
        assert not await verified_and_cached(deaf)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await nowhere.aclose()


async def test_a_key_in_use_is_verified_again_before_its_entry_runs_out(
    account, clean, monkeypatch
):
    # Verified again while still served from the cache, so that its entry never runs out
    # under traffic (when it did, every request in flight missed it at once).
    monkeypatch.setattr(service, "REFRESH_SECONDS", 0.0)
    cache = PrincipalCache()
    # As its watcher would: no revocation heard of (for the test's length).
    cache.observe(None, time.monotonic() + 60)
    async with clean.sessionmaker() as session:
        assert await cache.resolve(session, account.token) is not None
    token_hash = service.hash_token(account.token)
    verified = cache._entries[token_hash]
    await cache.refresh(clean.sessionmaker)
    assert cache._entries[token_hash] is verified  # unused since: not verified again

    assert cache.cached(account.token) is not None
    await cache.refresh(clean.sessionmaker)
    renewed = cache._entries[token_hash]
    assert renewed is not verified and renewed.expires >= verified.expires

    # Revoked by hand in SQL (no signal): the next verification drops it.
    async with clean.sessionmaker() as session, session.begin():
        await session.execute(text("UPDATE api_keys SET revoked_at = now()"))
    assert cache.cached(account.token) is not None
    await cache.refresh(clean.sessionmaker)
    assert cache.cached(account.token) is None
