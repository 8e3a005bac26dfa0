"""Interactive sends through the SDK: quick replies, buttons, a card, a carousel, a quoted
reply; what Meta receives, what the message shows, the 422s, and taps coming back."""

import httpx
import pytest
from postproxy import ValidationError
from postproxy._types import CardDefaultAction, MessageButton, MessageCard, QuickReply

from tests.conftest import wait_for
from tests.inbound import customer_writes

CUSTOMER = "1602510301006188"


async def _published(client, message_id):
    async def published():
        message = await client.messages.get(message_id)
        return message if message.status == "published" else None

    return await wait_for(published)


async def _sent(clean):
    return (await clean.sandbox("GET", "/_sandbox/sent")).json()["data"]


async def test_quick_replies_reach_meta_and_the_message_shows_them(account, clean):
    chat = await account.client.chats.create(account.profile_id, CUSTOMER)
    message = await account.client.messages.send(
        chat.id,
        body="Pick one",
        quick_replies=[
            QuickReply(title="Visit us", payload="QR_VISIT"),
            {"title": "Chat", "payload": "QR_CHAT"},
        ],
    )
    assert [q.model_dump() for q in message.quick_replies] == [
        {"content_type": "text", "title": "Visit us", "payload": "QR_VISIT"},
        {"content_type": "text", "title": "Chat", "payload": "QR_CHAT"},
    ]
    assert message.buttons is None and message.card is None and message.elements is None
    published = await _published(account.client, message.id)
    assert published.quick_replies == message.quick_replies
    [sent] = await _sent(clean)
    assert sent["message"] == {
        "text": "Pick one",
        "quick_replies": [
            {"content_type": "text", "title": "Visit us", "payload": "QR_VISIT"},
            {"content_type": "text", "title": "Chat", "payload": "QR_CHAT"},
        ],
    }


async def test_buttons_and_card_are_a_generic_template_titled_by_the_body(account, clean):
    chat = await account.client.chats.create(account.profile_id, CUSTOMER)
    buttons = [
        MessageButton(type="web_url", title="Website", url="https://shop.example/"),
        MessageButton(type="postback", title="Talk to us", payload="TALK"),
    ]
    card = MessageCard(
        subtitle="We have the right hat",
        image_url="https://cdn.example/hat.jpg",
        default_action=CardDefaultAction(type="web_url", url="https://shop.example/hat"),
    )
    message = await account.client.messages.send(
        chat.id, body="Welcome!", buttons=buttons, card=card
    )
    assert message.buttons == buttons
    assert message.card == card
    await _published(account.client, message.id)
    [sent] = await _sent(clean)
    assert sent["message"] == {
        "attachment": {
            "type": "template",
            "payload": {
                "template_type": "generic",
                "elements": [
                    {
                        "title": "Welcome!",
                        "subtitle": "We have the right hat",
                        "image_url": "https://cdn.example/hat.jpg",
                        "default_action": {"type": "web_url", "url": "https://shop.example/hat"},
                        "buttons": [
                            {"type": "web_url", "title": "Website", "url": "https://shop.example/"},
                            {"type": "postback", "title": "Talk to us", "payload": "TALK"},
                        ],
                    }
                ],
            },
        }
    }


async def test_a_carousel_of_elements_goes_without_a_body(account, clean):
    chat = await account.client.chats.create(account.profile_id, CUSTOMER)
    elements = [
        {
            "title": f"Hat {n}",
            "image_url": f"https://cdn.example/{n}.jpg",
            "buttons": [{"type": "postback", "title": "Buy", "payload": f"BUY_{n}"}],
        }
        for n in range(3)
    ]
    message = await account.client.messages.send(chat.id, elements=elements)
    assert message.body is None
    assert [e.model_dump(exclude_none=True) for e in message.elements] == elements
    await _published(account.client, message.id)
    [sent] = await _sent(clean)
    payload = sent["message"]["attachment"]["payload"]
    assert payload == {"template_type": "generic", "elements": elements}
    # The list shows it too, as stored.
    [listed] = (await account.client.messages.list(chat.id)).data
    assert listed.elements == message.elements


async def test_reply_to_external_id_quotes_the_message(account, clean):
    mid = await customer_writes(clean, account, CUSTOMER, "Hi")
    chats = await wait_for(lambda: _chats(account))
    message = await account.client.messages.send(
        chats[0].id, body="Hello!", reply_to_external_id=mid
    )
    assert message.reply_to_external_id == mid
    await _published(account.client, message.id)
    [sent] = await _sent(clean)
    assert sent["reply_to"] == {"mid": mid}


async def _chats(account):
    return (await account.client.chats.list(account.profile_id)).data


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        (
            {"body": "x", "quick_replies": [{"title": "t", "payload": "p"}] * 14},
            "quick_replies",
            "at most 13",
        ),
        (
            {
                "body": "x",
                "quick_replies": [
                    {"title": "t", "payload": "p"},
                    {"title": "t" * 21, "payload": "p"},
                ],
            },
            "quick_replies.1.title",
            "at most 20",
        ),
        (
            {"body": "x", "quick_replies": [{"title": "t", "payload": "p" * 1001}]},
            "quick_replies.0.payload",
            "at most 1000",
        ),
        ({"quick_replies": [{"title": "t", "payload": "p"}]}, "body", "need a body"),
        (
            {
                "media": ["https://cdn.example/a.png"],
                "quick_replies": [{"title": "t", "payload": "p"}],
            },
            "quick_replies",
            "text only",
        ),
        (
            {
                "body": "x",
                "buttons": [{"type": "postback", "title": "b", "payload": "p"}],
                "quick_replies": [{"title": "t", "payload": "p"}],
            },
            "quick_replies",
            "text only",
        ),
        (
            {"body": "x", "buttons": [{"type": "postback", "title": "b", "payload": "p"}] * 4},
            "buttons",
            "at most 3",
        ),
        (
            {
                "body": "x",
                "buttons": [{"type": "web_url", "title": "b", "url": "http://a.example/"}],
            },
            "buttons.0.url",
            "https",
        ),
        (
            {
                "body": "x",
                "buttons": [{"type": "postback", "title": "b"}, {"type": "postback", "title": "c"}],
            },
            "buttons.0",
            "payload",
        ),
        (
            {"body": "x", "buttons": [{"type": "phone_number", "title": "b", "payload": "+1"}]},
            "buttons.0",
            "web_url or postback",
        ),
        (
            {"body": "y" * 81, "buttons": [{"type": "postback", "title": "b", "payload": "p"}]},
            "body",
            "at most 80",
        ),
        ({"body": "x", "card": {"subtitle": "s"}}, "card", "needs buttons"),
        (
            {
                "body": "x",
                "buttons": [{"type": "postback", "title": "b", "payload": "p"}],
                "card": {"subtitle": "s" * 81},
            },
            "card.subtitle",
            "at most 80",
        ),
        (
            {
                "body": "x",
                "buttons": [{"type": "postback", "title": "b", "payload": "p"}],
                "card": {"image_url": "http://cdn.example/a.png"},
            },
            "card.image_url",
            "https",
        ),
        (
            {"elements": [{"title": "t", "subtitle": "s"}] * 11},
            "elements",
            "at most 10",
        ),
        (
            {"elements": [{"title": "t", "subtitle": "s"}, {"title": "only"}]},
            "elements.1",
            "besides",
        ),
        (
            {"body": "x", "elements": [{"title": "t", "subtitle": "s"}]},
            "elements",
            "cannot be sent with body",
        ),
    ],
)
async def test_interactive_rules_are_422s_naming_field_and_index(
    account, clean, fields, field, words
):
    chat = await account.client.chats.create(account.profile_id, CUSTOMER)
    with pytest.raises(ValidationError) as refused:
        await account.client.messages.send(chat.id, **fields)
    assert refused.value.status_code == 422
    assert words in str(refused.value)
    response = refused.value.response
    assert field in [e["field"] for e in response["errors"]], response
    assert (await account.client.messages.list(chat.id)).total == 0


async def test_sandbox_refuses_what_meta_refuses(account, clean):
    """Meta's own limits, as the sandbox enforces them for any client."""
    async with httpx.AsyncClient(base_url=clean.sandbox_url) as http:

        async def send(message):
            return await http.post(
                f"/v23.0/{account.platform_id}/messages",
                headers={"Authorization": "Bearer sandbox-token"},
                json={"recipient": {"id": CUSTOMER}, "message": message},
            )

        too_many = await send(
            {
                "text": "x",
                "quick_replies": [{"content_type": "text", "title": "t", "payload": "p"}] * 14,
            }
        )
        assert too_many.status_code == 400 and too_many.json()["error"]["code"] == 100
        bad_button = {"attachment": {"type": "template", "payload": {
            "template_type": "generic",
            "elements": [{"title": "t", "buttons": [{"type": "postback", "title": "b"}]}],
        }}}  # fmt: skip
        refused = await send(bad_button)
        assert refused.json()["error"]["error_subcode"] == 2534015
        cut = await send(
            {
                "text": "x",
                "quick_replies": [{"content_type": "text", "title": "t" * 25, "payload": "p"}],
            }
        )
        assert cut.status_code == 200
    [sent] = await _sent(clean)
    assert sent["message"]["quick_replies"][0]["title"] == "t" * 20


async def test_a_tap_comes_back_as_the_inbound_messages_tapped_action(account, clean):
    base = {"account_id": account.platform_id, "sender_id": CUSTOMER}
    await clean.sandbox(
        "POST",
        "/_sandbox/emit",
        json={
            "events": [
                {"kind": "quick_reply", "text": "Visit us", "payload": "QR_VISIT", **base},
                {"kind": "postback", "title": "Talk to us", "payload": "TALK", **base},
            ]
        },  # fmt: skip
    )

    async def two():
        chats = await _chats(account)
        if not chats:
            return None
        page = await account.client.messages.list(chats[0].id)
        return page.data if page.total == 2 else None

    postback, quick = await wait_for(two)
    assert quick.tapped_action.model_dump() == {
        "kind": "quick_reply",
        "payload": "QR_VISIT",
        "title": "Visit us",
    }
    assert postback.tapped_action.model_dump() == {
        "kind": "postback",
        "payload": "TALK",
        "title": "Talk to us",
    }
