"""Sender actions through the SDK: reactions, read receipts, typing; editing refused."""

from datetime import timedelta

import pytest
from postproxy import PostProxyError, ValidationError
from sqlalchemy import func, update

from app.chats.models import Chat
from app.core import ids
from app.profiles.models import Profile
from tests.conftest import wait_for
from tests.inbound import customer_writes

CUSTOMER = "1602510301006188"


async def _inbound(account, clean, text="Hi"):
    """A message from the customer (which opens the window); its chat and message."""
    mid = await customer_writes(clean, account, CUSTOMER, text)

    async def arrived():
        try:
            return await account.client.messages.get(mid)
        except PostProxyError:
            return None

    message = await wait_for(arrived)
    return await account.client.chats.get(message.chat_id), message


async def _actions(clean):
    return (await clean.sandbox("GET", "/_sandbox/actions")).json()["data"]


async def test_react_with_love_or_an_emoji_then_unreact(account, clean):
    _, message = await _inbound(account, clean)
    reacted = await account.client.messages.react(message.id, reaction="love")
    assert [r.model_dump(exclude={"at"}) for r in reacted.reactions] == [
        {"sender_external_id": account.platform_id, "reaction": "love", "emoji": "\u2764\ufe0f"}
    ]
    # Reacting again replaces the reaction.
    reacted = await account.client.messages.react(message.id, emoji="😂")
    assert [(r.reaction, r.emoji) for r in reacted.reactions] == [(None, "😂")]
    assert (await account.client.messages.get(message.id)).reactions == reacted.reactions

    unreacted = await account.client.messages.unreact(message.id)
    assert unreacted.reactions == []
    actions = await _actions(clean)
    assert [(a["sender_action"], a["recipient_id"], a.get("payload")) for a in actions] == [
        ("react", CUSTOMER, {"message_id": message.external_id, "reaction": "love"}),
        ("react", CUSTOMER, {"message_id": message.external_id, "reaction": "😂"}),
        ("unreact", CUSTOMER, {"message_id": message.external_id}),
    ]


async def test_a_participants_reaction_and_ours_are_both_kept(account, clean):
    _, message = await _inbound(account, clean)
    await account.client.messages.react(message.id, reaction="love")
    await clean.sandbox(
        "POST",
        "/_sandbox/emit",
        json={
            "events": [
                {
                    "kind": "reaction",
                    "account_id": account.platform_id,
                    "sender_id": CUSTOMER,
                    "mid": message.external_id,
                }
            ]
        },  # fmt: skip
    )

    async def both():
        found = await account.client.messages.get(message.id)
        return found if len(found.reactions) == 2 else None

    found = await wait_for(both)
    assert {r.sender_external_id for r in found.reactions} == {CUSTOMER, account.platform_id}


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"reaction": "like"}, "love"),
        ({"emoji": "haha"}, "emoji"),
        ({}, "request body is missing"),
    ],
)
async def test_wrong_reactions_are_refused_and_nothing_is_sent(account, clean, fields, words):
    _, message = await _inbound(account, clean)
    with pytest.raises(ValidationError, match=words):
        await account.client.messages.react(message.id, **fields)
    assert await _actions(clean) == []
    assert (await account.client.messages.get(message.id)).reactions == []


async def test_a_pending_message_cannot_be_reacted_to(account, clean):
    chat, _ = await _inbound(account, clean)
    clean.worker.allow_pick_jobs = False
    try:
        pending = await account.client.messages.send(chat.id, body="not sent yet")
        with pytest.raises(ValidationError, match="no Instagram id yet"):
            await account.client.messages.react(pending.id, reaction="love")
    finally:
        clean.worker.allow_pick_jobs = True


async def test_editing_is_refused_as_instagram_does(account, clean):
    _, message = await _inbound(account, clean)
    with pytest.raises(ValidationError, match="does not let a business edit"):
        await account.client.messages.edit(message.id, body="changed")
    assert (await account.client.messages.get(message.id)).body == "Hi"
    with pytest.raises(PostProxyError) as missing:
        await account.client.messages.edit("nope", body="x")
    assert missing.value.status_code == 404


async def test_mark_read_and_typing_reach_meta(account, clean):
    chat, _ = await _inbound(account, clean)
    read = await account.client.chats.mark_read(chat.id)
    assert read.id == chat.id
    assert (await account.client.chats.start_typing(chat.id)).accepted is True
    assert (await account.client.chats.stop_typing(chat.id)).accepted is True
    assert [(a["sender_action"], a["recipient_id"]) for a in await _actions(clean)] == [
        ("mark_seen", CUSTOMER),
        ("typing_on", CUSTOMER),
        ("typing_off", CUSTOMER),
    ]


async def test_sender_actions_respect_the_window_and_the_profile(account, clean):
    chat, message = await _inbound(account, clean)
    async with clean.sessionmaker() as session, session.begin():
        await session.execute(update(Chat).values(last_inbound_at=func.now() - timedelta(days=2)))
    for call in (
        account.client.chats.start_typing(chat.id),
        account.client.chats.mark_read(chat.id),
        account.client.messages.react(message.id, reaction="love"),
    ):
        with pytest.raises(ValidationError, match="24 hours"):
            await call
    async with clean.sessionmaker() as session, session.begin():
        await session.execute(update(Chat).values(last_inbound_at=func.now()))
        await session.execute(update(Profile).values(status="expired"))
    with pytest.raises(ValidationError, match="expired"):
        await account.client.chats.start_typing(chat.id)
    assert await _actions(clean) == []


async def test_a_sender_action_that_cannot_go_at_once_is_dropped(account, clean):
    chat, _ = await _inbound(account, clean)
    # Meta asked the profile to back off: a typing indicator is not queued behind that.
    await clean.api.state.throttle.pause(ids.lookup(ids.Kind.PROFILE, account.profile_id), 60)
    with pytest.raises(PostProxyError) as dropped:
        await account.client.chats.start_typing(chat.id)
    assert dropped.value.status_code == 429
    assert "dropped" in str(dropped.value)
    assert await _actions(clean) == []


async def test_metas_refusal_is_explained(account, clean):
    chat, _ = await _inbound(account, clean)
    await clean.sandbox(
        "POST",
        "/_sandbox/faults",
        json={"recipients": {CUSTOMER: {"code": 551, "error_subcode": 1545041,
                                        "message": "This person isn't available right now."}}},
    )  # fmt: skip
    with pytest.raises(ValidationError, match="isn't available"):
        await account.client.chats.start_typing(chat.id)


# --- archiving -----------------------------------------------------------------------------


async def _listed(account, **params):
    path = f"/profiles/{account.profile_id}/chats"
    page = await account.client._request("GET", path, params=params)
    return [chat["id"] for chat in page["data"]], page["total"]


async def test_archived_chats_leave_lists_until_the_participant_writes(account, clean):
    chat, _ = await _inbound(account, clean)
    other = await account.client.chats.create(account.profile_id, "1602510301009999")

    archived = await account.client.chats.archive(chat.id)
    assert archived.archived is True
    assert (await account.client.chats.get(chat.id)).archived is True
    page = await account.client.chats.list(account.profile_id)
    assert ([c.id for c in page.data], page.total) == ([other.id], 1)
    assert await _listed(account, archived="true") == ([chat.id], 1)
    # Archiving twice changes nothing, counts included.
    await account.client.chats.archive(chat.id)
    assert await _listed(account, archived="true") == ([chat.id], 1)

    unarchived = await account.client.chats.unarchive(chat.id)
    assert unarchived.archived is False
    assert (await account.client.chats.list(account.profile_id)).total == 2
    assert await _listed(account, archived="true") == ([], 0)

    await account.client.chats.archive(chat.id)
    await _inbound(account, clean, text="I am back")

    async def back():
        return (await account.client.chats.get(chat.id)).archived is False

    await wait_for(back)
    page = await account.client.chats.list(account.profile_id)
    assert ({c.id for c in page.data}, page.total) == ({chat.id, other.id}, 2)


async def test_archive_of_an_unknown_chat_is_404(account, clean):
    with pytest.raises(PostProxyError) as missing:
        await account.client.chats.archive("nope")
    assert missing.value.status_code == 404


async def test_a_sender_action_meta_is_slow_to_answer_is_dropped_not_waited_for(account, clean):
    chat, _ = await _inbound(account, clean)
    await clean.sandbox("POST", "/_sandbox/faults", json={"latency_ms": 7000})
    # Answered (the SDK gives up after 5 s): dropped, as the indicator would now be late.
    with pytest.raises(PostProxyError) as dropped:
        await account.client.chats.start_typing(chat.id)
    assert dropped.value.status_code == 429
    assert "dropped" in str(dropped.value)
