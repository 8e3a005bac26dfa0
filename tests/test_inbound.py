import json

import httpx
import pytest

from app.meta.webhooks import signature_of
from tests.conftest import IG_ACCOUNT_ID, wait_for


def _inbound(mid: str, sender: str, text: str, timestamp: int) -> dict:
    return {
        "object": "instagram",
        "entry": [
            {
                "id": IG_ACCOUNT_ID,
                "time": timestamp,
                "messaging": [
                    {
                        "sender": {"id": sender},
                        "recipient": {"id": IG_ACCOUNT_ID},
                        "timestamp": timestamp,
                        "message": {"mid": mid, "text": text},
                    }
                ],
            }
        ],
    }


async def _post(clean, payload: dict, signature: str | None = "valid") -> httpx.Response:
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if signature == "valid":
        headers["X-Hub-Signature-256"] = signature_of(clean.settings.meta_app_secret, body)
    elif signature is not None:
        headers["X-Hub-Signature-256"] = signature
    async with httpx.AsyncClient(base_url=clean.api_url) as http:
        return await http.post("/webhooks/instagram", content=body, headers=headers)


async def test_verification_handshake(clean):
    async with httpx.AsyncClient(base_url=clean.api_url) as http:
        params = {"hub.mode": "subscribe", "hub.challenge": "1158201444"}
        ok = await http.get(
            "/webhooks/instagram", params={**params, "hub.verify_token": "test-verify-token"}
        )
        wrong = await http.get("/webhooks/instagram", params={**params, "hub.verify_token": "no"})
    assert (ok.status_code, ok.text) == (200, "1158201444")
    assert wrong.status_code == 403


async def test_inbound_text_creates_chat_and_received_message_once(account, clean):
    payload = _inbound("aWdf_in_1", "555", "hi there", 1_763_000_000_000)
    assert (await _post(clean, payload)).status_code == 200
    assert (await _post(clean, payload)).status_code == 200  # Meta redelivers

    chats = await account.client.chats.list(account.profile_id)
    assert chats.total == 1
    chat = chats.data[0]
    assert chat.participant_external_id == "555"
    assert int(chat.last_inbound_at.timestamp() * 1000) == 1_763_000_000_000
    messages = await account.client.messages.list(chat.id)
    assert [(m.body, m.status, m.direction, m.external_id) for m in messages.data] == [
        ("hi there", "received", "inbound", "aWdf_in_1")
    ]


async def test_older_event_does_not_move_last_inbound_back(account, clean):
    await _post(clean, _inbound("aWdf_new", "556", "new", 1_763_000_100_000))
    await _post(clean, _inbound("aWdf_old", "556", "old", 1_763_000_000_000))
    chat = (await account.client.chats.list(account.profile_id)).data[0]
    assert int(chat.last_inbound_at.timestamp() * 1000) == 1_763_000_100_000
    assert (await account.client.messages.list(chat.id)).total == 2


@pytest.mark.parametrize("signature", [None, "sha256=" + "0" * 64, "garbage"])
async def test_bad_signatures_are_401_and_store_nothing(account, clean, signature):
    response = await _post(clean, _inbound("aWdf_x", "557", "forged", 1_763_000_000_000), signature)
    assert response.status_code == 401
    assert (await account.client.chats.list(account.profile_id)).total == 0


async def test_sandbox_inbound_reaches_dmrelay_signed(account, clean):
    await clean.sandbox(
        "POST",
        "/_sandbox/inbound",
        json={"account_id": IG_ACCOUNT_ID, "sender_id": "558", "text": "Grüße ✓"},
    )

    async def chat_appeared():
        return (await account.client.chats.list(account.profile_id)).data

    chat = (await wait_for(chat_appeared))[0]
    messages = await account.client.messages.list(chat.id)
    assert messages.data[0].body == "Grüße ✓"
