"""Meta's webhooks, end to end: the sandbox posts signed events, the worker applies them, and
the results are read back through the Postproxy SDK."""

import json
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import text

from app.core import ids
from tests.conftest import IG_ACCOUNT_ID, connect, wait_for
from tests.inbound import (
    T0,
    customer_events,
    emit,
    event,
    messages_of,
    only_chat,
    post_payload,
    post_raw,
    received,
    scalar,
    settled,
)


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


async def test_verification_handshake(clean):
    async with httpx.AsyncClient(base_url=clean.api_url) as http:
        params = {"hub.mode": "subscribe", "hub.challenge": "1158201444"}
        ok = await http.get(
            "/webhooks/instagram", params={**params, "hub.verify_token": "test-verify-token"}
        )
        wrong = await http.get("/webhooks/instagram", params={**params, "hub.verify_token": "no"})
    assert (ok.status_code, ok.text) == (200, "1158201444")
    assert wrong.status_code == 403


def _text_payload(mid: str, text: str, sender: str = "557") -> bytes:
    item = {
        "sender": {"id": sender},
        "recipient": {"id": IG_ACCOUNT_ID},
        "timestamp": T0,
        "message": {"mid": mid, "text": text},
    }
    payload = {"object": "instagram", "entry": [{"id": IG_ACCOUNT_ID, "messaging": [item]}]}
    # Meta sends (and signs) the escaped-unicode form.
    return json.dumps(payload, ensure_ascii=True).encode()


@pytest.mark.parametrize(
    "signature", [None, "sha256=" + "0" * 64, "garbage", "signed-with-another-secret"]
)
async def test_bad_signatures_are_401_and_store_nothing(account, clean, signature):
    body = _text_payload("aWdf_forged", "forged")
    if signature == "signed-with-another-secret":
        response = await post_raw(clean, body, secret="not-our-secret")
    else:
        response = await post_raw(clean, body, signature=signature)
    assert response.status_code == 401
    assert "X-Hub-Signature-256" in response.json()["error"]
    assert await scalar(clean, "SELECT count(*) FROM webhook_deliveries") == 0
    assert (await account.client.chats.list(account.profile_id)).total == 0


@pytest.mark.parametrize("secret", ["test-app-secret", "test-instagram-app-secret"])
async def test_either_app_secret_signs(account, clean, secret):
    """Facebook-Login apps sign with the Meta app secret, Instagram-Login apps with the
    Instagram app secret; the signature covers the escaped-unicode bytes."""
    response = await post_raw(clean, _text_payload("aWdf_signed", "Grüße ✓"), secret=secret)
    assert response.status_code == 200
    await settled(clean)
    chat = await only_chat(account)
    assert [m.body for m in (await messages_of(account, chat.id)).values()] == ["Grüße ✓"]


async def test_duplicated_deliveries_store_each_event_once(account, clean):
    [mid] = await emit(
        clean, event("text", text="hi there", timestamp=T0), duplicate=True, batch="single"
    )
    await emit(clean, event("text", text="hi there", timestamp=T0, mid=mid))  # and again later

    chat = await only_chat(account)
    assert chat.participant_external_id == "555"
    assert chat.last_inbound_at == at(T0) == chat.last_message_at
    messages = await account.client.messages.list(chat.id)
    assert [(m.body, m.status, m.direction, m.external_id) for m in messages.data] == [
        ("hi there", "received", "inbound", mid)
    ]
    assert [t for t, _ in await customer_events(clean)] == ["message.received"]


@pytest.mark.parametrize("shape", ["messaging", "standby", "changes"])
@pytest.mark.parametrize("batch", ["single", "entries", "messaging"])
async def test_every_envelope_shape(account, clean, shape, batch):
    mids = await emit(
        clean,
        event("text", text="one", timestamp=T0),
        event("echo", text="two", timestamp=T0 + 1),
        event("reaction", mid="aWdf_unknown", timestamp=T0 + 2),
        shape=shape,
        batch=batch,
    )
    chat = await only_chat(account)
    stored = await messages_of(account, chat.id)
    assert [(stored[mid].body, stored[mid].direction) for mid in mids[:2]] == [
        ("one", "inbound"),
        ("two", "outbound"),
    ]


async def test_out_of_order_arrival_keeps_timestamp_order_and_latest_times(account, clean):
    events = [event("text", text=f"m{i}", timestamp=T0 + i * 1000) for i in range(8)]
    await emit(clean, *reversed(events), batch="single", shuffle=True)

    chat = await only_chat(account)
    assert chat.last_inbound_at == at(T0 + 7000) == chat.last_message_at
    page = await account.client.messages.list(chat.id)
    assert [m.body for m in page.data] == [f"m{i}" for i in reversed(range(8))]


async def test_every_message_kind(account, clean):
    base = {"timestamp": T0}
    mids = await emit(
        clean,
        event("text", text="plain", **base),
        event("reply", text="answering", reply_to_mid="aWdf_earlier", **base),
        event("story_reply", text="nice story", story={"id": "1791", "url": "https://x/s"}, **base),
        event("quick_reply", text="Yes please", payload="YES", **base),
        event("postback", title="Get started", payload="START", **base),
        event("referral", ref="spring", source="ADS", in_message=True, text="from an ad", **base),
        event("unsupported", **base),
        batch="messaging",
    )
    chat = await only_chat(account)
    stored = await messages_of(account, chat.id)
    plain, reply, story, quick, postback, referral, unsupported = (stored[m] for m in mids)

    assert (plain.body, plain.status, plain.direction) == ("plain", "received", "inbound")
    assert reply.reply_to_external_id == "aWdf_earlier"
    assert story.body == "nice story"
    assert story.story_reply == {"id": "1791", "url": "https://x/s"}
    assert quick.tapped_action.model_dump() == {
        "kind": "quick_reply",
        "payload": "YES",
        "title": "Yes please",
    }
    assert postback.body == "Get started"
    assert postback.tapped_action.model_dump() == {
        "kind": "postback",
        "payload": "START",
        "title": "Get started",
    }
    assert referral.body == "from an ad"
    assert referral.platform_data["webhook"]["message"]["referral"]["ref"] == "spring"
    assert unsupported.is_unsupported and unsupported.body is None
    assert chat.last_inbound_at == at(T0)

    types = [t for t, _ in await customer_events(clean)]
    assert types.count("message.received") == 7
    assert types.count("referral.received") == 1


async def test_every_attachment_type(account, clean):
    types = [
        "image",
        "video",
        "audio",
        "file",
        "ig_post",
        "share",
        "ig_reel",
        "reel",
        "story_mention",
        "ephemeral",
        "fallback",
        "template",
        "sticker",
    ]
    mids = await emit(
        clean,
        *(event("attachment", type=t, timestamp=T0 + i) for i, t in enumerate(types)),
        batch="messaging",
    )
    chat = await only_chat(account)
    stored = await messages_of(account, chat.id)
    by_type = {t: stored[mid].attachments[0] for t, mid in zip(types, mids, strict=True)}
    assert {t: a.type for t, a in by_type.items()} == {t: t for t in types}
    assert by_type["ephemeral"].status == "failed" and by_type["ephemeral"].url is None
    assert by_type["ig_post"].external_id and by_type["ig_reel"].external_id
    assert by_type["sticker"].external_id == "369239263222822"
    # A story mention is a conversation entry point: it opens the window like any message.
    assert chat.last_inbound_at == at(T0 + len(types) - 1)


async def test_standalone_referral_creates_the_chat_and_an_event(account, clean):
    await emit(clean, event("referral", ref="ig.me-campaign", source="SHORTLINKS", timestamp=T0))
    chat = await only_chat(account)
    assert chat.metadata["referral"]["ref"] == "ig.me-campaign"
    assert chat.last_inbound_at is None  # a link opened is not a message
    [(kind, data)] = [e for e in await customer_events(clean) if e[0] == "referral.received"]
    assert (data["ref"], data["source"], data["chat"]["id"]) == (
        "ig.me-campaign",
        "SHORTLINKS",
        chat.id,
    )


async def test_reactions_reads_edits_and_deletes(account, clean):
    [mid] = await emit(clean, event("text", text="original", timestamp=T0))
    await emit(
        clean,
        event("reaction", mid=mid, timestamp=T0 + 1000),
        event("edit", mid=mid, text="edited", num_edit=1, timestamp=T0 + 2000),
        event("read", mid=mid, timestamp=T0 + 3000),
    )
    message = await account.client.messages.get(mid)
    assert message.body == "edited"
    assert message.external_edited_at == at(T0 + 2000)
    assert message.external_read_at == at(T0 + 3000)
    [reaction] = message.reactions
    assert (reaction.sender_external_id, reaction.reaction, reaction.emoji) == (
        "555",
        "love",
        "\u2764\ufe0f",
    )

    await emit(clean, event("reaction", mid=mid, action="unreact", timestamp=T0 + 4000))
    assert (await account.client.messages.get(mid)).reactions == []

    await emit(clean, event("delete", mid=mid, timestamp=T0 + 5000))
    deleted = await account.client.messages.get(mid)
    assert deleted.external_deleted_at == at(T0 + 5000)
    assert (deleted.body, deleted.attachments, deleted.platform_data) == (None, [], None)

    types = [t for t, _ in await customer_events(clean)]
    assert types == [
        "message.received",
        "reaction.received",
        "message.edited",
        "message.read",
        "reaction.received",
        "message.deleted",
    ]


async def test_events_before_their_message_wait_for_it(account, clean):
    """A reaction, edit or read delivered before the message it is about is kept, and
    applied once the message arrives."""
    mid = "aWdf_late_message"
    await emit(
        clean,
        event("reaction", mid=mid, timestamp=T0 + 1000),
        event("edit", mid=mid, text="fixed typo", num_edit=1, timestamp=T0 + 2000),
    )
    assert (await account.client.chats.list(account.profile_id)).data[0].last_message_at is None
    await emit(clean, event("text", text="tpyo", mid=mid, timestamp=T0))

    message = await account.client.messages.get(mid)
    assert message.body == "fixed typo"
    assert len(message.reactions) == 1


async def test_a_late_older_change_never_overwrites_a_newer_one(account, clean):
    [mid] = await emit(clean, event("text", text="v0", timestamp=T0))
    await emit(
        clean,
        event("edit", mid=mid, text="v2", num_edit=2, timestamp=T0 + 2000),
        event("reaction", mid=mid, action="unreact", timestamp=T0 + 4000),
    )
    await emit(
        clean,
        event("edit", mid=mid, text="v1", num_edit=1, timestamp=T0 + 1000),
        event("reaction", mid=mid, timestamp=T0 + 3000),
    )
    message = await account.client.messages.get(mid)
    assert (message.body, message.reactions) == ("v2", [])


async def test_an_unsend_is_final_even_before_the_message_arrives(account, clean):
    mid = "aWdf_unsent"
    await emit(clean, event("delete", mid=mid, timestamp=T0 + 1000))
    await emit(clean, event("text", text="oops", mid=mid, timestamp=T0))
    await emit(clean, event("edit", mid=mid, text="still there?", timestamp=T0 + 2000))
    message = await account.client.messages.get(mid)
    assert message.body is None
    assert message.external_deleted_at == at(T0 + 1000)


async def test_echo_of_a_message_sent_from_the_instagram_app(account, clean):
    [mid] = await emit(clean, event("echo", text="typed in the app", timestamp=T0))
    await emit(clean, event("echo", text="typed in the app", mid=mid, timestamp=T0))
    chat = await only_chat(account)
    assert chat.participant_external_id == "555"
    assert chat.last_outbound_at == at(T0) and chat.last_inbound_at is None
    [message] = (await account.client.messages.list(chat.id)).data
    assert (message.direction, message.status, message.body, message.external_id) == (
        "outbound",
        "published",
        "typed in the app",
        mid,
    )
    assert [t for t, _ in await customer_events(clean)] == ["message.sent"]


@pytest.mark.parametrize("mode, echoes", [("after", 1), ("before", 1), ("twice", 2)])
async def test_echo_of_our_own_send_attaches_to_its_row(account, clean, mode, echoes):
    """Whichever arrives first, the send's answer or its echo, there is one outbound row."""
    await clean.sandbox("POST", "/_sandbox/faults", json={"echo": {"mode": mode}})
    await emit(clean, event("text", text="hello?"))  # now: the reply window is open
    chat = await only_chat(account)
    sent = await account.client.messages.send(chat.id, body="hello!")

    async def published():
        message = await account.client.messages.get(sent.id)
        return message if message.status == "published" and message.external_id else None

    message = await wait_for(published)
    await received(clean, 1 + echoes)  # the customer's message, then the echoes
    outbound = (await account.client.messages.list(chat.id, direction="outbound")).data
    assert [(m.id, m.external_id) for m in outbound] == [(sent.id, message.external_id)]
    # Not a message from the app: our send, sent once and delivered once, however many echoes.
    async with clean.sessionmaker() as session:
        events = (
            await session.execute(
                text(
                    "SELECT type, message_id FROM customer_events WHERE type <> 'message.received'"
                )
            )
        ).all()
    serial = ids.decode(ids.Kind.MESSAGE, sent.id)
    assert sorted(tuple(e) for e in events) == [
        ("message.delivered", serial),
        ("message.sent", serial),
    ]


async def test_unparseable_items_are_kept_and_reported_without_blocking_the_batch(account, clean):
    good = {
        "sender": {"id": "560"},
        "recipient": {"id": IG_ACCOUNT_ID},
        "timestamp": T0,
        "message": {"mid": "aWdf_good", "text": "still applied"},
    }
    payload = {
        "object": "instagram",
        "entry": [
            {"id": IG_ACCOUNT_ID, "messaging": [{"sender": {"id": "560"}}, "junk", good]},
            {"id": IG_ACCOUNT_ID, "messaging": [{**good, "optin": {}, "message": None}]},
        ],
    }
    assert (await post_payload(clean, payload)).status_code == 200
    assert (await post_raw(clean, b"not json", secret="test-app-secret")).status_code == 200
    await settled(clean)

    chat = await only_chat(account)
    assert [m.body for m in (await messages_of(account, chat.id)).values()] == ["still applied"]
    assert (
        await scalar(clean, "SELECT count(*) FROM webhook_deliveries WHERE status = 'unparseable'")
        == 2
    )
    problems = await scalar(
        clean, "SELECT problems FROM webhook_deliveries WHERE body LIKE '%aWdf_good%'"
    )
    assert len(problems) == 3 and "entry[0].messaging[0]" in problems[0]


async def test_events_for_an_unknown_account_are_ignored(account, clean):
    await emit(clean, {**event("text", text="hi"), "account_id": "17841499999999999"})
    assert (await account.client.chats.list(account.profile_id)).total == 0
    assert await scalar(clean, "SELECT status FROM inbound_events") == "ignored"


async def test_chats_of_two_accounts_in_one_delivery(account, clean):
    other = await connect(clean, platform_id="17841400000000002", token="other-token")
    try:
        await emit(
            clean,
            event("text", text="to the first"),
            {**event("text", text="to the second"), "account_id": other.platform_id},
            batch="entries",
        )
        first = await only_chat(account)
        second = await only_chat(other)
        assert [m.body for m in (await messages_of(account, first.id)).values()] == ["to the first"]
        assert [m.body for m in (await messages_of(other, second.id)).values()] == ["to the second"]
    finally:
        await other.client.close()


async def test_a_nul_character_is_stored_as_the_replacement_character(account, clean):
    # PostgreSQL's text and jsonb cannot hold U+0000, which JSON can carry (escaped).
    body = _text_payload("aWdf_nul", "before\x00after", sender="561")
    assert b"\\u0000" in body
    assert (await post_raw(clean, body, secret="test-app-secret")).status_code == 200
    await settled(clean)

    chat = await only_chat(account)
    [message] = (await messages_of(account, chat.id)).values()
    assert message.body == "before\ufffdafter"
    [(kind, data)] = await customer_events(clean)
    assert (kind, data["message"]["body"]) == ("message.received", "before\ufffdafter")


@pytest.mark.parametrize("body", [b"[" * 5000, b'{"entry": ' * 3000])
async def test_a_body_nested_too_deeply_is_kept_as_unparseable(clean, body):
    # Reading it fails the same way every time: it must not stay `received`, tried forever.
    assert (await post_raw(clean, body, secret="test-app-secret")).status_code == 200
    await settled(clean)
    assert await scalar(clean, "SELECT status FROM webhook_deliveries") == "unparseable"
    assert await scalar(clean, "SELECT problems FROM webhook_deliveries") == [
        "the body's JSON is nested too deeply to read"
    ]
