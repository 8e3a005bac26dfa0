import asyncio
import json
import time

import pytest

from app.sandbox.app import create_app
from tests.sandbox.support import (
    IG_ID,
    IGSID,
    PLAIN,
    assert_error,
    assert_signed,
    sandbox_client,
    send,
    sent,
    text_body,
)

# --- sending -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "encode",
    [
        lambda: {"json": {"recipient": {"id": IGSID}, "message": {"text": "hé"}}},
        lambda: {"data": {"recipient": json.dumps({"id": IGSID}), "message": '{"text":"hé"}'}},
        lambda: {"data": {"recipient[id]": IGSID, "message[text]": "hé"}},
    ],
    ids=["json", "form-json-values", "bracket-form"],
)
async def test_three_encodings_record_the_same_message(client, encode):
    response = await client.post(f"/v21.0/{IG_ID}/messages?access_token=tok", **encode())

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["recipient_id"] == IGSID
    assert answer["message_id"].startswith("aWdf")
    [record] = await sent(client)
    assert record["message_id"] == answer["message_id"]
    assert record["recipient_id"] == IGSID
    assert record["account_id"] == IG_ID
    assert record["message"] == {"text": "hé"}
    assert record["received_at"].endswith("+00:00")


async def test_paths_tokens_and_extra_fields(client):
    no_prefix = await send(client, text_body(), account="me", version="")
    page = await client.post(
        "/v25.0/123456/messages",
        data={
            "access_token": "tok",
            "recipient[id]": IGSID,
            "message[attachment][type]": "image",
            "message[attachment][payload][url]": "https://example.com/a.png",
            "messaging_type": "MESSAGE_TAG",
            "tag": "HUMAN_AGENT",
        },
    )

    assert no_prefix.status_code == page.status_code == 200
    assert no_prefix.json()["message_id"] != page.json()["message_id"]
    first, second = await sent(client)
    assert first["account_id"] == "me"
    assert second["account_id"] == "123456"
    assert second["message"] == {
        "attachment": {"type": "image", "payload": {"url": "https://example.com/a.png"}}
    }
    assert (second["messaging_type"], second["tag"]) == ("MESSAGE_TAG", "HUMAN_AGENT")


async def test_sender_actions_answer_without_a_message(client):
    mid = (await send(client, text_body())).json()["message_id"]
    await client.delete("/_sandbox/sent")
    payloads = {"react": {"message_id": mid, "reaction": "love"}, "unreact": {"message_id": mid}}
    for action in ("typing_on", "typing_off", "mark_seen", "react", "unreact"):
        body = {"recipient": {"id": IGSID}, "sender_action": action}
        if action in payloads:
            body["payload"] = payloads[action]
        response = await send(client, body)
        assert response.status_code == 200
        assert response.json() == {"recipient_id": IGSID}
    assert await sent(client) == []
    actions = (await client.get("/_sandbox/actions")).json()["data"]
    assert [a["sender_action"] for a in actions] == [
        "typing_on", "typing_off", "mark_seen", "react", "unreact"
    ]  # fmt: skip
    assert actions[3]["payload"] == payloads["react"]


@pytest.mark.parametrize(
    "payload",
    [
        {"message_id": "aWdf_unknown", "reaction": "love"},
        {"reaction": "love"},
        {"message_id": "{mid}", "reaction": "like"},
        {"message_id": "{mid}", "reaction": ""},
        {"message_id": "{mid}"},
    ],
)
async def test_reactions_meta_refuses(client, payload):
    mid = (await send(client, text_body())).json()["message_id"]
    if payload.get("message_id") == "{mid}":
        payload = {**payload, "message_id": mid}
    body = {"recipient": {"id": IGSID}, "sender_action": "react", "payload": payload}
    assert_error(await send(client, body), 400, 100)
    other = {"recipient": {"id": "1234"}, "sender_action": "react",
             "payload": {"message_id": mid, "reaction": "love"}}  # fmt: skip
    assert_error(await send(client, other), 400, 100)


async def test_sent_keeps_arrival_order_and_clears(client):
    for text in ("one", "two", "three"):
        await send(client, text_body(text))
    assert [r["message"]["text"] for r in await sent(client)] == ["one", "two", "three"]

    assert (await client.delete("/_sandbox/sent")).json() == {"success": True}
    assert await sent(client) == []


async def test_text_limit_counts_utf8_bytes(client):
    assert (await send(client, text_body("a" * 1000))).status_code == 200
    response = await send(client, text_body("ä" * 501))  # 501 characters, 1002 bytes
    assert_error(response, 400, 100, 2534015)


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers, query",
    [({}, ""), ({"Authorization": "Bearer "}, ""), ({}, "?access_token=")],
    ids=["none", "empty-bearer", "empty-query"],
)
async def test_missing_token_is_190(client, headers, query):
    response = await client.post(f"/v25.0/me/messages{query}", json=text_body(), headers=headers)
    assert_error(response, 400, 190)
    assert await sent(client) == []


async def test_revoked_token_is_190_460(client):
    await client.post("/_sandbox/faults", json={"revoked_tokens": ["old"]})
    assert_error(await send(client, text_body(), token="old"), 400, 190, 460)
    assert (await send(client, text_body(), token="other")).status_code == 200


@pytest.mark.parametrize(
    "body, subcode",
    [
        ({"message": {"text": "hi"}}, 2534014),
        (text_body(recipient="john.doe"), 2534014),
        (text_body("x" * 1001), 2534015),
        ({"recipient": {"id": IGSID}}, None),
        ({**text_body(), "sender_action": "typing_on"}, None),
        ({"recipient": {"id": IGSID}, "sender_action": "dance"}, None),
        ({"recipient": {"id": IGSID}, "message": {}}, 2534015),
        ({"recipient": {"id": IGSID}, "message": {"attachment": {"type": "gif"}}}, None),
        (text_body(tag="ACCOUNT_UPDATE", messaging_type="MESSAGE_TAG"), None),
        (text_body(tag="HUMAN_AGENT"), None),
        (text_body(messaging_type="MESSAGE_TAG"), None),
    ],
    ids=[
        "no-recipient",
        "non-numeric-recipient",
        "text-too-long",
        "no-message",
        "message-and-action",
        "unknown-action",
        "empty-message",
        "unknown-attachment",
        "other-tag",
        "tag-without-type",
        "type-without-tag",
    ],
)
async def test_send_validation(client, body, subcode):
    assert_error(await send(client, body), 400, 100, subcode)
    assert await sent(client) == []


async def test_validation_order_recipient_before_text(client):
    response = await send(client, text_body("x" * 2000, recipient="nope"))
    assert_error(response, 400, 100, 2534014)


async def test_unknown_graph_path(client):
    response = await client.post("/v25.0/me/feed", headers={"Authorization": "Bearer t"})
    assert_error(response, 400, 100, 33)


async def test_me(client):
    response = await client.get("/v25.0/me?fields=user_id,username", params={"access_token": "t"})
    assert response.status_code == 200
    body = response.json()
    assert body["username"] == "sandbox_user"
    assert body["user_id"].startswith("1784") and body["id"].isdigit()


# --- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault, status",
    [
        ({"code": 10, "error_subcode": 2534022, "message": "outside window"}, 403),
        ({"code": 551, "error_subcode": 1545041, "message": "not available"}, 400),
        ({"code": 2, "message": "temporary"}, 500),
        ({"code": 613, "error_subcode": 2534040, "message": "slow down"}, 403),
    ],
)
async def test_recipient_fault(client, fault, status):
    await client.post("/_sandbox/faults", json={"recipients": {IGSID: fault}})

    error = assert_error(
        await send(client, text_body()), status, fault["code"], fault.get("error_subcode")
    )
    assert error["message"] == fault["message"]
    assert (await send(client, text_body(recipient="42"))).status_code == 200
    assert [r["recipient_id"] for r in await sent(client)] == ["42"]


async def test_full_transient_rate_fails_everything_and_records_nothing(client):
    await client.post("/_sandbox/faults", json={"transient_rate": 1.0})

    for _ in range(20):
        response = await send(client, text_body())
        error = response.json()["error"]
        assert error["is_transient"] is True
        expected = {1: (500, None), 2: (500, None), 4: (403, None), 613: (403, 2534040)}
        assert (response.status_code, error.get("error_subcode")) == expected[error["code"]]
    assert await sent(client) == []


async def test_faults_are_replaced_validated_and_cleared(client):
    first = {"recipients": {IGSID: {"code": 10, "message": "x"}}, "revoked_tokens": ["a"]}
    await client.post("/_sandbox/faults", json=first)
    await client.post("/_sandbox/faults", json={"latency_ms": 5})

    current = (await client.get("/_sandbox/faults")).json()
    assert current == {
        "transient_rate": 0.0,
        "latency_ms": 5,
        "recipients": {},
        "revoked_tokens": [],
        "malformed_tokens": [],
        "rate_limit": {
            "per_second": None,
            "audio_video_per_second": None,
            "regain_access_minutes": 0,
        },
        "timeout": None,
        "echo": {"mode": "after", "delay_ms": 2000},
        "unfetchable_media": [],
        "require_appsecret_proof": False,
    }
    for bad in ({"transient_rate": 2}, {"latency_ms": -1}, {"recipients": {IGSID: {}}}, {"x": 1}):
        assert (await client.post("/_sandbox/faults", json=bad)).status_code == 422
    assert (await client.get("/_sandbox/faults")).json() == current

    await client.post("/_sandbox/faults", json={})
    assert (await client.get("/_sandbox/faults")).json()["latency_ms"] == 0


async def test_latency_delays_graph_answers(client):
    await client.post("/_sandbox/faults", json={"latency_ms": 200})
    started = time.monotonic()
    await send(client, text_body())
    assert time.monotonic() - started >= 0.2


async def test_apps_are_independent():
    async with (
        sandbox_client(create_app(PLAIN)) as a,
        sandbox_client(create_app(PLAIN)) as b,
    ):
        await send(a, text_body())
        assert len(await sent(a)) == 1
        assert await sent(b) == []


# --- webhooks ------------------------------------------------------------------------------


async def test_send_emits_signed_echo(hooked, receiver):
    async with hooked.router.lifespan_context(hooked), sandbox_client(hooked) as client:
        answer = (await send(client, text_body("äöå"), account=IG_ID)).json()
        await send(client, {"recipient": {"id": IGSID}, "sender_action": "typing_on"})
    # Leaving the lifespan waits for deliveries in flight.

    [(headers, body)] = receiver.requests
    assert b"\\u00e4\\u00f6\\u00e5" in body
    payload = assert_signed(headers, body)
    assert payload["object"] == "instagram"
    [entry] = payload["entry"]
    [event] = entry["messaging"]
    assert entry["id"] == IG_ID and isinstance(entry["time"], int)
    assert event["sender"] == {"id": IG_ID}
    assert event["recipient"] == {"id": IGSID}
    assert event["timestamp"] >= entry["time"] - 1000
    assert event["message"] == {"mid": answer["message_id"], "is_echo": True, "text": "äöå"}


async def test_a_slow_webhook_does_not_hold_up_the_send_answer(hooked, receiver):
    receiver.gate = asyncio.Event()  # the echo is not answered until the send has been
    async with hooked.router.lifespan_context(hooked), sandbox_client(hooked) as client:
        # A send that waited for the echo would be answered when the sandbox gives up on it,
        # after 10 s; one that does not wait is answered at once.
        try:
            async with asyncio.timeout(5):
                assert (await send(client, text_body())).status_code == 200
        finally:
            receiver.gate.set()
    assert len(receiver.requests) == 1


async def test_inbound_posts_signed_message_before_answering(hooked, receiver):
    async with sandbox_client(hooked) as client:
        response = await client.post(
            "/_sandbox/inbound", json={"account_id": IG_ID, "sender_id": IGSID, "text": "hej å"}
        )

    assert response.status_code == 200
    answer = response.json()
    [(headers, body)] = receiver.requests
    payload = assert_signed(headers, body)
    [event] = payload["entry"][0]["messaging"]
    assert payload["entry"][0]["id"] == IG_ID
    assert event["sender"] == {"id": IGSID}
    assert event["recipient"] == {"id": IG_ID}
    assert event["timestamp"] == answer["timestamp"]
    assert event["message"] == {"mid": answer["mid"], "text": "hej å"}
    assert answer["mid"].startswith("aWdf")


async def test_inbound_reports_a_refused_webhook(hooked, receiver):
    receiver.status = 403
    async with sandbox_client(hooked) as client:
        response = await client.post(
            "/_sandbox/inbound", json={"account_id": IG_ID, "sender_id": IGSID, "text": "x"}
        )
    assert response.status_code == 502


async def test_inbound_needs_a_webhook_url(client):
    response = await client.post(
        "/_sandbox/inbound", json={"account_id": IG_ID, "sender_id": IGSID, "text": "x"}
    )
    assert response.status_code == 409
    assert "SANDBOX_WEBHOOK_URL" in response.json()["error"]


async def test_ice_breakers_as_meta_keeps_them(client):
    path = f"/v25.0/{IG_ID}/messenger_profile"
    headers = {"Authorization": "Bearer tok"}
    default = {"locale": "default", "call_to_actions": [{"question": "Hours?", "payload": "H"}]}
    for refused in (
        [{"locale": "en_GB", "call_to_actions": [{"question": "q", "payload": "p"}]}],
        [{"locale": "default", "call_to_actions": [{"question": "q", "payload": "p"}] * 5}],
        [default, {"question": "q", "payload": "p"}],
        [{"locale": "default", "call_to_actions": [{"question": "", "payload": "p"}]}],
    ):
        answer = await client.post(path, headers=headers, json={"ice_breakers": refused})
        assert_error(answer, 400, 100)
    set_ = await client.post(
        path, headers=headers, json={"platform": "instagram", "ice_breakers": [default]}
    )
    assert set_.json() == {"success": True}
    read = await client.get(path, headers=headers, params={"fields": "ice_breakers"})
    assert read.json() == {"data": [default]}
    deleted = await client.request(
        "DELETE", path, headers=headers, json={"fields": ["ice_breakers"]}
    )
    assert deleted.json() == {"success": True}
    assert (await client.get(path, headers=headers)).json() == {"data": []}
