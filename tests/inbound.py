"""Helpers for the inbound tests: emit events through the sandbox, post raw webhooks, and
wait until dmrelay's worker has applied everything it received."""

import json

import httpx
from sqlalchemy import text

from app.inbound.signature import signature_of
from tests.conftest import IG_ACCOUNT_ID, WAIT_SECONDS, Stack, wait_for

T0 = 1_763_000_000_000  # a webhook time, in ms


def event(kind: str, sender: str = "555", **fields) -> dict:
    return {"kind": kind, "account_id": IG_ACCOUNT_ID, "sender_id": sender, **fields}


async def emit(stack: Stack, *events: dict, **options) -> list[str]:
    """Post events through the sandbox (signed like Meta), then wait until applied."""
    response = await stack.sandbox("POST", "/_sandbox/emit", json={"events": events, **options})
    answer = response.json()
    assert set(answer["statuses"]) == {200}, answer
    await settled(stack)
    return answer["mids"]


async def customer_writes(stack: Stack, account, sender: str, text: str) -> str:
    """A customer writes to the account, as the sandbox plays it (Meta's webhook follows);
    the new message's mid."""
    answer = await stack.sandbox(
        "POST",
        "/_sandbox/inbound",
        json={"account_id": account.platform_id, "sender_id": sender, "text": text},
    )
    return answer.json()["mid"]


async def post_raw(
    stack: Stack, body: bytes, secret: str | None = None, signature: str | None = None
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is None and secret is not None:
        signature = signature_of(secret, body)
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=WAIT_SECONDS) as http:
        return await http.post("/webhooks/instagram", content=body, headers=headers)


async def post_payload(stack: Stack, payload: dict) -> httpx.Response:
    body = json.dumps(payload).encode()
    return await post_raw(stack, body, secret=stack.settings.meta_app_secret)


async def settled(stack: Stack) -> None:
    """Every stored delivery split and every event given its chance to apply."""

    async def nothing_open() -> bool:
        return await scalar(
            stack,
            "SELECT NOT EXISTS (SELECT 1 FROM webhook_deliveries WHERE status = 'received') "
            "AND NOT EXISTS (SELECT 1 FROM inbound_events WHERE status = 'pending')",
        )

    await wait_for(nothing_open)


async def received(stack: Stack, deliveries: int) -> None:
    """Wait until dmrelay has received this many webhook deliveries in all (the sandbox's
    echoes come on their own time), and applied them."""

    async def all_received() -> bool:
        return await scalar(stack, "SELECT count(*) FROM webhook_deliveries") >= deliveries

    await wait_for(all_received)
    await settled(stack)


async def scalar(stack: Stack, sql: str, **params):
    async with stack.sessionmaker() as session:
        return await session.scalar(text(sql), params)


async def customer_events(stack: Stack) -> list[tuple[str, dict]]:
    async with stack.sessionmaker() as session:
        rows = await session.execute(text("SELECT type, data FROM customer_events ORDER BY id"))
        return [(row.type, row.data) for row in rows]


async def only_chat(account):
    chats = await account.client.chats.list(account.profile_id)
    assert chats.total == 1, chats
    return chats.data[0]


async def messages_of(account, chat_id: str) -> dict:
    """The chat's messages by mid."""
    page = await account.client.messages.list(chat_id, per_page=100)
    return {m.external_id: m for m in page.data}
