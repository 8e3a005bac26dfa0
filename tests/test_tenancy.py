"""Tenancy: profile groups and API keys through the SDK, and isolation between groups on
every route of the API (enumerated from the app, so a new route is walked too)."""

import json
import re

import pytest
from postproxy import (
    AuthenticationError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PostProxy,
    PostProxyError,
    ValidationError,
)
from sqlalchemy import text

from tests.conftest import connect, wait_for

CUSTOMER = "1700000000000301"


async def test_an_account_wide_key_manages_groups(clean):
    admin = await connect(clean)
    try:
        created = await admin.client.profile_groups.create("Shop")
        assert (created.name, created.profiles_count) == ("Shop", 0)
        listed = await admin.client.profile_groups.list()
        assert {(g.name, g.profiles_count) for g in listed.data} == {("default", 1), ("Shop", 0)}
        assert (await admin.client.profile_groups.get(created.id)).name == "Shop"

        with pytest.raises(ConflictError, match="named 'Shop' exists already"):
            await admin.client.profile_groups.create("Shop")
        with pytest.raises(ValidationError):
            await admin.client.profile_groups.create("   ")
        default = next(g for g in listed.data if g.name == "default")
        with pytest.raises(ConflictError, match="still has profiles"):
            await admin.client.profile_groups.delete(default.id)

        assert (await admin.client.profile_groups.delete(created.id)).deleted is True
        with pytest.raises(NotFoundError, match="Profile group not found"):
            await admin.client.profile_groups.get(created.id)
        assert [g.name for g in (await admin.client.profile_groups.list()).data] == ["default"]
    finally:
        await admin.client.close()


async def test_keys_are_made_shown_once_and_revoked_through_the_api(clean):
    admin = await connect(clean)
    group = await admin.client.profile_groups.create("Shop")
    try:
        key = await admin.client.api_keys.create("shop backend", group.id)
        assert key.token and key.token.startswith("dmr_")
        assert key.profile_group_id == group.id
        listed = (await admin.client.api_keys.list()).data
        assert {k.id: k.token for k in listed}[key.id] is None  # never shown again
        assert {k.name for k in listed} == {"test", "shop backend"}

        async with PostProxy(key.token, base_url=clean.api_url) as shop:
            assert (await shop.profiles.list()).data == []  # its group has no profile
            assert [g.id for g in (await shop.profile_groups.list()).data] == [group.id]
            # A group's key manages neither groups nor keys.
            with pytest.raises(ForbiddenError, match="account-wide"):
                await shop.api_keys.list()
            with pytest.raises(ForbiddenError, match="account-wide"):
                await shop.profile_groups.create("Mine")
            with pytest.raises(ForbiddenError, match="account-wide"):
                await shop.profile_groups.delete(group.id)

            assert (await admin.client.api_keys.delete(key.id)).deleted is True

            async def refused() -> bool:
                try:
                    await shop.profiles.list()
                except AuthenticationError:
                    return True
                return False

            await wait_for(refused, timeout=5, interval=0.05)
        with pytest.raises(NotFoundError, match="API key not found"):
            await admin.client.api_keys.delete(key.id)
        with pytest.raises(NotFoundError, match="Profile group not found"):
            await admin.client.api_keys.create("nowhere", "nope")
    finally:
        await admin.client.close()


async def test_deleting_a_group_revokes_its_keys(clean):
    admin = await connect(clean)
    group = await admin.client.profile_groups.create("Gone")
    key = await admin.client.api_keys.create("gone", group.id)
    try:
        async with PostProxy(key.token, base_url=clean.api_url) as gone:
            assert (await gone.profiles.list()).data == []
            await admin.client.profile_groups.delete(group.id)

            async def refused() -> bool:
                try:
                    await gone.profiles.list()
                except AuthenticationError:
                    return True
                return False

            await wait_for(refused, timeout=5, interval=0.05)
        assert key.id not in {k.id for k in (await admin.client.api_keys.list()).data}
    finally:
        await admin.client.close()


# A valid body for each route that takes one, so that the refusal is about the foreign id,
# not the body. A new route with a body must be added here (the walk says so).
def _bodies(theirs: dict[str, str]) -> dict[tuple[str, str], dict[str, object]]:
    return {
        ("POST", "/api/profile_groups"): {"profile_group": {"name": "Intruders"}},
        ("POST", "/api/api_keys"): {"name": "x", "profile_group_id": theirs["group_id"]},
        ("POST", "/api/profiles/{profile_id}/chats"): {"participant_external_id": "17000001"},
        ("POST", "/api/chats/{chat_id}/messages"): {"body": "hello"},
        ("POST", "/api/profile_groups/{group_id}/initialize_connection"): {"platform": "instagram"},
        ("POST", "/api/profiles/{profile_id}/backfill_chats"): {"from": "2026-01-01"},
        ("POST", "/api/profiles/{profile_id}/messages"): {"recipient_id": "17000001", "body": "hi"},
        ("POST", "/api/webhooks"): {"url": "http://127.0.0.1:9/hook", "events": ["message.sent"]},
        ("PATCH", "/api/webhooks/{webhook_id}"): {"description": "mine now"},
        ("POST", "/api/webhooks/{webhook_id}/test"): {},
        ("POST", "/api/messages/{message_id}/react"): {"reaction": "love"},
        ("POST", "/api/profiles/{profile_id}/ice_breakers"): {
            "ice_breakers": [{"question": "Hours?", "payload": "HOURS"}]
        },
        ("POST", "/api/posts/{post_id}/comments/{comment_id}/private_reply"): {"text": "hi"},
    }


# Query parameters a route requires, naming the other group's resource.
def _queries(theirs: dict[str, str]) -> dict[tuple[str, str], dict[str, str]]:
    return {
        ("POST", "/api/posts/{post_id}/comments/{comment_id}/private_reply"): {
            "profile_id": theirs["profile_id"]
        },
    }


async def _ids_of(clean, account) -> dict[str, str]:
    """One of everything an account's group has, by the path parameter that names it."""
    from app.api_keys.service import hash_token
    from app.core import ids

    client = account.client
    chat = await client.chats.create(account.profile_id, CUSTOMER)
    message = await client.messages.send(chat.id, body="mine")
    sync = await client.profiles.backfill_chats(account.profile_id, from_="2026-01-01")
    hook = await client.webhooks.create("http://127.0.0.1:9/hook", ["message.sent"])
    async with clean.sessionmaker() as session:
        key_id = await session.scalar(
            text("SELECT id FROM api_keys WHERE token_hash = :hash"),
            {"hash": hash_token(account.token)},
        )
    return {
        "profile_id": account.profile_id,
        "group_id": (await client.profiles.get(account.profile_id)).profile_group_id,
        "chat_id": chat.id,
        "message_id": message.id,
        "user_id": CUSTOMER,
        "key_id": ids.encode(ids.Kind.API_KEY, key_id),
        "chat_sync_id": sync.id,
        "webhook_id": hook.id,
        # Under their webhook, any delivery is theirs; no comment: their profile is named.
        "delivery_id": "their-delivery",
        "post_id": "17900000000000001",
        "comment_id": "17900000000000002",
    }


async def _status(client: PostProxy, method: str, path: str, **kwargs) -> tuple[int, str]:
    try:
        answer = await client._request(method, path, **kwargs)
    except PostProxyError as error:
        return error.status_code or 0, str(error)
    return 200, repr(answer)


async def test_a_groups_key_finds_nothing_of_another_group_on_any_route(clean):
    ours = await connect(clean, platform_id="1001", group="ours", key_group="ours")
    theirs = await connect(clean, platform_id="1002", group="theirs", key_group="theirs")
    try:
        mine = await _ids_of(clean, ours)
        foreign = await _ids_of(clean, theirs)
        bodies = _bodies(foreign)
        queries = _queries(foreign)
        walked = 0
        # The OpenAPI schema lists every route of the API (the routes' own objects are
        # FastAPI's internals).
        for route_path, operations in clean.api.openapi()["paths"].items():
            if not route_path.startswith("/api/"):
                continue
            params = re.findall(r"{(\w+)}", route_path)
            for method, operation in sorted(operations.items()):
                method = method.upper()
                kwargs: dict[str, object] = {}
                if "requestBody" in operation:
                    assert (method, route_path) in bodies, f"add a body for {method} {route_path}"
                    kwargs["json"] = bodies[(method, route_path)]
                if (method, route_path) in queries:
                    kwargs["params"] = queries[(method, route_path)]
                path = route_path.removeprefix("/api")
                for name in params:
                    assert name in foreign, f"{route_path}: what is {{{name}}} of another group?"
                    path = path.replace(f"{{{name}}}", foreign[name])
                # Asking for the other group by name is refused too.
                status, said = await _status(
                    ours.client, method, path, profile_group_id=foreign["group_id"], **kwargs
                )
                assert status == 404, f"{method} {route_path} with their group: {status} {said}"
                status, said = await _status(ours.client, method, path, **kwargs)
                body = json.dumps([kwargs.get("json"), kwargs.get("params")])
                if params or any(value in body for value in foreign.values()):
                    assert status == 404, f"{method} {route_path}: {status} {said}"
                else:
                    # Nothing named: what it answers must not mention the other group.
                    assert status in (200, 201, 403), f"{method} {route_path}: {status} {said}"
                    leaked = [value for value in foreign.values() if value and value in said]
                    assert not leaked, f"{method} {route_path} shows {leaked}"
                walked += 1
        assert walked >= 15
        # Nothing of theirs changed, and our key still sees ours.
        assert (await theirs.client.profiles.get(foreign["profile_id"])).status == "active"
        messages = await theirs.client.messages.list(foreign["chat_id"])
        assert [m.body for m in messages.data] == ["mine"]
        assert (await ours.client.profiles.get(mine["profile_id"])).id == mine["profile_id"]
    finally:
        await ours.client.close()
        await theirs.client.close()
