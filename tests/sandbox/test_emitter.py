"""POST /_sandbox/emit: every Instagram webhook event kind, batched and delivered as Meta does."""

import pytest

from tests.sandbox.support import IG_ID, IGSID, sandbox_client

OTHER_ID = "17841400000000001"
MID = "aWdfZAG1faXRlbTox_known"
BASE = {"account_id": IG_ID, "sender_id": IGSID}
MEDIA = "http://sandbox/_sandbox/media/"


async def emit(app, *events, **options) -> dict:
    async with sandbox_client(app) as client:
        response = await client.post("/_sandbox/emit", json={"events": list(events), **options})
    assert response.status_code == 200, response.text
    return response.json()


def items_of(payload: dict, shape: str = "messaging") -> list[dict]:
    return [item for entry in payload["entry"] for item in entry[shape]]


# (event fields, item key, expected content; "MID" stands for the generated mid)
KINDS = [
    ({"kind": "text", "text": "hé"}, "message", {"mid": "MID", "text": "hé"}),
    (
        {"kind": "reply", "text": "yes", "reply_to_mid": MID},
        "message",
        {"mid": "MID", "text": "yes", "reply_to": {"mid": MID}},
    ),
    (
        {"kind": "story_reply", "text": "wow", "story": {"url": "https://cdn/s.mp4", "id": "9"}},
        "message",
        {
            "mid": "MID",
            "text": "wow",
            "reply_to": {"story": {"url": "https://cdn/s.mp4", "id": "9"}},
        },
    ),
    (
        {"kind": "quick_reply", "text": "Red", "payload": "RED"},
        "message",
        {"mid": "MID", "text": "Red", "quick_reply": {"payload": "RED"}},
    ),
    (
        {"kind": "postback", "title": "Start", "payload": "GET_STARTED", "mid": MID},
        "postback",
        {"mid": MID, "title": "Start", "payload": "GET_STARTED"},
    ),
    (
        {"kind": "referral", "ref": "summer", "source": "SHORTLINK"},
        "referral",
        {"ref": "summer", "source": "SHORTLINK", "type": "OPEN_THREAD"},
    ),
    (
        {
            "kind": "referral",
            "in_message": True,
            "text": "Is this available?",
            "ref": "ad1",
            "source": "ADS",
            "ad_id": "123",
            "ads_context_data": {"ad_title": "Sale", "photo_url": "https://cdn/p.jpg"},
        },
        "message",
        {
            "mid": "MID",
            "text": "Is this available?",
            "referral": {
                "ref": "ad1",
                "source": "ADS",
                "type": "OPEN_THREAD",
                "ad_id": "123",
                "ads_context_data": {"ad_title": "Sale", "photo_url": "https://cdn/p.jpg"},
            },
        },
    ),
    ({"kind": "unsupported"}, "message", {"mid": "MID", "is_unsupported": True}),
    (
        {"kind": "reaction", "mid": MID, "reaction": "laugh", "emoji": "😂"},
        "reaction",
        {"mid": MID, "action": "react", "reaction": "laugh", "emoji": "😂"},
    ),
    (
        {"kind": "reaction", "mid": MID, "action": "unreact"},
        "reaction",
        {"mid": MID, "action": "unreact"},
    ),
    ({"kind": "read", "mid": MID}, "read", {"mid": MID}),
    (
        {"kind": "edit", "mid": MID, "text": "fixed", "num_edit": 2},
        "message_edit",
        {"mid": MID, "text": "fixed", "num_edit": 2},
    ),
    ({"kind": "delete", "mid": MID}, "message", {"mid": MID, "is_deleted": True}),
]


@pytest.mark.parametrize("fields, key, content", KINDS, ids=lambda v: str(v)[:30])
async def test_each_kind_becomes_metas_item(hooked, receiver, fields, key, content):
    answer = await emit(hooked, {**BASE, **fields, "timestamp": 1700000000000})

    [payload] = receiver.payloads()
    [entry] = payload["entry"]
    [item] = entry["messaging"]
    assert payload["object"] == "instagram"
    assert (entry["id"], entry["time"]) == (IG_ID, 1700000000000)
    assert item["sender"] == {"id": IGSID} and item["recipient"] == {"id": IG_ID}
    assert item["timestamp"] == 1700000000000
    assert set(item) == {"sender", "recipient", "timestamp", key}
    # The answer's mid: generated, given, or the one the event is about; none for a referral.
    [mid] = answer["mids"]
    assert item[key] == {k: (mid if v == "MID" else v) for k, v in content.items()}
    assert mid == content.get("mid") or (content["mid"] == "MID" and mid.startswith("aWdf"))
    assert (answer["posts"], answer["statuses"]) == (1, [200])


@pytest.mark.parametrize(
    "type_, extension, payload_keys",
    [
        ("image", ".png", {"url"}),
        ("video", ".mp4", {"url"}),
        ("audio", ".m4a", {"url"}),
        ("file", ".pdf", {"url"}),
        ("share", ".png", {"url"}),
        ("story_mention", ".png", {"url"}),
        ("ig_post", ".png", {"url", "title", "id"}),
        ("ig_reel", ".mp4", {"url", "title", "reel_video_id"}),
        ("reel", ".mp4", {"url", "title", "reel_video_id"}),
        ("fallback", ".png", {"url", "title"}),
        ("sticker", ".png", {"url", "sticker_id"}),
    ],
)
async def test_attachments_point_at_sandbox_media(hooked, receiver, type_, extension, payload_keys):
    async with sandbox_client(hooked) as client:
        event = {**BASE, "kind": "attachment", "type": type_}
        answer = (await client.post("/_sandbox/emit", json={"events": [event]})).json()
        [item] = items_of(receiver.payloads()[0])
        [attachment] = item["message"]["attachments"]
        assert item["message"]["mid"] == answer["mids"][0]
        assert attachment["type"] == type_
        assert set(attachment["payload"]) == payload_keys
        url = attachment["payload"]["url"]
        assert url.startswith(MEDIA) and url.endswith(extension)
        assert (await client.get(url.removeprefix("http://sandbox"))).status_code == 200


async def test_attachment_urls_ids_and_the_url_less_kinds(hooked, receiver):
    await emit(
        hooked,
        {**BASE, "kind": "attachment", "type": "image", "url": "https://cdn/x.png"},
        {**BASE, "kind": "attachment", "type": "ig_post", "title": "Hi", "id": "55"},
        {**BASE, "kind": "attachment", "type": "ephemeral"},
        {**BASE, "kind": "attachment", "type": "template", "id": "77", "title": "Shoe"},
        batch="entries",
    )

    image, post, ephemeral, template = (
        i["message"]["attachments"][0] for i in items_of(receiver.payloads()[0])
    )
    assert image == {"type": "image", "payload": {"url": "https://cdn/x.png"}}
    assert (post["payload"]["title"], post["payload"]["id"]) == ("Hi", "55")
    assert ephemeral == {"type": "ephemeral"}  # view-once media: no URL
    [product] = template["payload"]["product"]["elements"]
    assert (product["id"], product["title"]) == ("77", "Shoe")
    assert product["image_url"].startswith(MEDIA)


async def test_echo_comes_from_the_business(hooked, receiver):
    answer = await emit(
        hooked,
        {**BASE, "kind": "echo", "text": "typed in the app"},
        {**BASE, "kind": "echo", "type": "image", "mid": MID},
    )

    text, image = (items_of(p)[0] for p in receiver.payloads())
    for item in (text, image):
        assert item["sender"] == {"id": IG_ID} and item["recipient"] == {"id": IGSID}
    assert text["message"] == {
        "mid": answer["mids"][0],
        "is_echo": True,
        "text": "typed in the app",
    }
    assert image["message"]["mid"] == MID == answer["mids"][1]
    assert image["message"]["is_echo"] is True
    assert image["message"]["attachments"][0]["payload"]["url"].startswith(MEDIA)


async def test_event_validation(hooked):
    async with sandbox_client(hooked) as client:
        for events in (
            [],
            [{**BASE, "kind": "dance"}],
            [{**BASE, "kind": "text"}],
            [{**BASE, "kind": "echo"}],
            [{**BASE, "kind": "reaction"}],
            [{**BASE, "kind": "attachment", "type": "gif"}],
            [{**BASE, "kind": "text", "text": "x", "extra": 1}],
        ):
            response = await client.post("/_sandbox/emit", json={"events": events})
            assert response.status_code == 422, events


async def test_timestamps_default_to_now_and_increase(hooked, receiver):
    await emit(hooked, *({**BASE, "kind": "text", "text": str(i)} for i in range(5)))

    stamps = [items_of(p)[0]["timestamp"] for p in receiver.payloads()]
    assert stamps == sorted(set(stamps)) and len(stamps) == 5


async def test_mids_are_unique_unless_given(hooked, receiver):
    answer = await emit(hooked, *({**BASE, "kind": "text", "text": "x"} for _ in range(3)))
    assert len(set(answer["mids"])) == 3


# --- batching and shapes -------------------------------------------------------------------


THREE = [
    {**BASE, "kind": "text", "text": "a"},
    {"account_id": OTHER_ID, "sender_id": IGSID, "kind": "read", "mid": MID},
    {**BASE, "kind": "text", "text": "c"},
]


async def test_single_posts_one_body_per_event(hooked, receiver):
    answer = await emit(hooked, *THREE)

    assert (answer["posts"], answer["statuses"]) == (3, [200, 200, 200])
    assert [[e["id"] for e in p["entry"]] for p in receiver.payloads()] == [
        [IG_ID],
        [OTHER_ID],
        [IG_ID],
    ]


async def test_entries_puts_one_entry_per_event_in_one_body(hooked, receiver):
    answer = await emit(hooked, *THREE, batch="entries")

    [payload] = receiver.payloads()
    assert answer["posts"] == 1
    assert [e["id"] for e in payload["entry"]] == [IG_ID, OTHER_ID, IG_ID]
    assert all(len(e["messaging"]) == 1 for e in payload["entry"])


async def test_messaging_groups_events_per_account(hooked, receiver):
    await emit(hooked, *THREE, batch="messaging")

    [payload] = receiver.payloads()
    first, second = payload["entry"]
    assert first["id"] == IG_ID
    assert [i["message"]["text"] for i in first["messaging"]] == ["a", "c"]
    assert first["time"] == first["messaging"][1]["timestamp"]
    assert (second["id"], second["messaging"][0]["read"]) == (OTHER_ID, {"mid": MID})


async def test_duplicate_posts_every_body_twice(hooked, receiver):
    answer = await emit(hooked, *THREE[:2], duplicate=True)

    bodies = [body for _, body in receiver.requests]
    assert answer["posts"] == 4
    assert bodies[0] == bodies[1] != bodies[2] == bodies[3]


async def test_shuffle_posts_in_random_order(hooked, receiver):
    events = [{**BASE, "kind": "text", "text": str(i)} for i in range(8)]
    answer = await emit(hooked, *events, shuffle=True)

    texts = [items_of(p)[0]["message"]["text"] for p in receiver.payloads()]
    assert sorted(texts) == [str(i) for i in range(8)]
    assert texts != sorted(texts)  # fails once in 40320 runs
    assert answer["posts"] == 8


async def test_standby_shape(hooked, receiver):
    await emit(hooked, *THREE, batch="messaging", shape="standby")

    [payload] = receiver.payloads()
    assert all("messaging" not in e for e in payload["entry"])
    assert [i["message"]["text"] for i in payload["entry"][0]["standby"]] == ["a", "c"]


async def test_changes_shape_is_the_dashboard_test_shape(hooked, receiver):
    await emit(
        hooked, *THREE, {**BASE, "kind": "reaction", "mid": MID}, batch="entries", shape="changes"
    )

    [payload] = receiver.payloads()
    assert [e["id"] for e in payload["entry"]] == ["0"] * 4
    changes = [c for e in payload["entry"] for c in e["changes"]]
    assert [c["field"] for c in changes] == [
        "messages",
        "messaging_seen",
        "messages",
        "message_reactions",
    ]
    value = changes[0]["value"]
    assert set(value) == {"sender", "recipient", "timestamp", "message"}
    assert value["message"]["text"] == "a"


async def test_bodies_are_signed_escaped_json(hooked, receiver):
    await emit(hooked, {**BASE, "kind": "text", "text": "äöå"}, batch="entries")

    [(headers, body)] = receiver.requests
    assert b"\\u00e4\\u00f6\\u00e5" in body
    assert receiver.payloads()[0]["entry"][0]["messaging"][0]["message"]["text"] == "äöå"


async def test_statuses_report_dmrelays_answers(hooked, receiver):
    receiver.status = 401
    answer = await emit(hooked, *THREE[:2])
    assert answer["statuses"] == [401, 401]


async def test_emit_needs_a_webhook_url(client):
    response = await client.post(
        "/_sandbox/emit", json={"events": [{**BASE, "kind": "unsupported"}]}
    )
    assert response.status_code == 409
    assert "SANDBOX_WEBHOOK_URL" in response.json()["error"]


# --- consent -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, consents",
    [
        ({"kind": "text", "text": "x"}, True),
        ({"kind": "postback", "title": "t", "payload": "p"}, True),
        ({"kind": "attachment", "type": "story_mention"}, True),
        ({"kind": "echo", "text": "x"}, False),
        ({"kind": "reaction", "mid": MID}, False),
        ({"kind": "referral", "ref": "r", "source": "SHORTLINK"}, False),
    ],
    ids=lambda v: str(v)[:24],
)
async def test_customer_messages_grant_profile_consent(hooked, receiver, fields, consents):
    async with sandbox_client(hooked) as client:
        await client.post("/_sandbox/emit", json={"events": [{**BASE, **fields}]})
        profile = await client.get(f"/v25.0/{IGSID}", params={"access_token": "t"})
    assert profile.status_code == (200 if consents else 400)
