"""Comments from the `comments` webhook field, and private replies to them through the SDK."""

import time

import pytest
from postproxy import PostProxyError, ValidationError
from sqlalchemy import select

from app.comments.models import Comment
from tests.conftest import wait_for, worker_idle

COMMENTER = "1602510301007777"


async def _comment(account, clean, **fields):
    body = {"account_id": account.platform_id, "sender_id": COMMENTER, "text": "LINK",
            "media_id": "17900000000000001", **fields}  # fmt: skip
    answer = (await clean.sandbox("POST", "/_sandbox/comments", json=body)).json()
    assert answer["status"] == 200
    comment_id = answer["comment_id"]

    async def stored():
        async with clean.sessionmaker() as session:
            return await session.scalar(select(Comment).where(Comment.external_id == comment_id))

    return await wait_for(stored)


async def _settled(client, message_id):
    async def settled():
        message = await client.messages.get(message_id)
        return message if message.status not in {"pending", "failed_waiting_for_retry"} else None

    return await wait_for(settled)


async def test_a_comment_is_stored_and_answered_once_in_the_commenters_chat(account, clean):
    comment = await _comment(account, clean, username="fan")
    assert (comment.body, comment.author_external_id, comment.author_username) == (
        "LINK", COMMENTER, "fan"
    )  # fmt: skip
    assert comment.post_external_id == "17900000000000001"

    reply = await account.client.comments.private_reply(
        comment.post_external_id,
        comment.external_id,
        account.profile_id,
        "Here is the link",
        quick_replies=[{"title": "Thanks", "payload": "THANKS"}],
    )
    assert reply.status == "pending"
    assert reply.external_comment_id == comment.external_id
    assert reply.quick_replies[0].payload == "THANKS"
    published = await _settled(account.client, reply.id)
    assert published.status == "published"

    chat = await account.client.chats.get(reply.chat_id)
    assert chat.participant_external_id == COMMENTER
    assert chat.participant_username == "fan"
    [sent] = (await clean.sandbox("GET", "/_sandbox/sent")).json()["data"]
    assert sent["comment_id"] == comment.external_id
    assert sent["recipient_id"] == COMMENTER
    assert sent["message"]["text"] == "Here is the link"

    with pytest.raises(ValidationError, match="already has its private reply"):
        await account.client.comments.private_reply(
            comment.post_external_id, comment.external_id, account.profile_id, "again"
        )
    assert (await account.client.messages.list(chat.id)).total == 1


async def test_a_private_reply_needs_no_open_window(account, clean):
    """The commenter never messaged the account: the reply still goes."""
    comment = await _comment(account, clean)
    reply = await account.client.comments.private_reply(
        comment.post_external_id, comment.external_id, account.profile_id, "Hello"
    )
    assert (await _settled(account.client, reply.id)).status == "published"


async def test_comments_older_than_seven_days_are_refused(account, clean):
    eight_days_ago = int(time.time()) - 8 * 24 * 3600
    comment = await _comment(account, clean, time=eight_days_ago)
    with pytest.raises(ValidationError, match="7 days"):
        await account.client.comments.private_reply(
            comment.post_external_id, comment.external_id, account.profile_id, "late"
        )
    assert (await clean.sandbox("GET", "/_sandbox/sent")).json()["data"] == []


async def test_unknown_comments_and_wrong_posts_are_404(account, clean):
    comment = await _comment(account, clean)
    for post, comment_id in (("17900000000000001", "404404"), ("other", comment.external_id)):
        with pytest.raises(PostProxyError) as missing:
            await account.client.comments.private_reply(post, comment_id, account.profile_id, "hi")
        assert missing.value.status_code == 404


async def test_private_reply_fields_are_checked_like_a_send(account, clean):
    comment = await _comment(account, clean)
    with pytest.raises(ValidationError) as refused:
        await account.client.comments.private_reply(
            comment.post_external_id,
            comment.external_id,
            account.profile_id,
            "",
            quick_replies=[{"title": "t", "payload": "p"}],
        )
    assert "text" in [e["field"] for e in refused.value.response["errors"]]
    elements = [{"title": "Hat", "subtitle": "A hat"}]
    reply = await account.client.comments.private_reply(
        comment.post_external_id, comment.external_id, account.profile_id, "", elements=elements
    )
    assert reply.body is None
    await _settled(account.client, reply.id)
    [sent] = (await clean.sandbox("GET", "/_sandbox/sent")).json()["data"]
    assert sent["message"]["attachment"]["payload"]["elements"] == elements


async def test_the_sandbox_refuses_what_meta_refuses(account, clean):
    import httpx

    old = await _comment(account, clean, time=int(time.time()) - 8 * 24 * 3600)
    fresh = await _comment(account, clean)
    async with httpx.AsyncClient(base_url=clean.sandbox_url) as http:

        async def reply(comment_id, **extra):
            return await http.post(
                f"/v25.0/{account.platform_id}/messages",
                headers={"Authorization": "Bearer sandbox-token"},
                json={"recipient": {"comment_id": comment_id}, "message": {"text": "x"}, **extra},
            )

        for answer in (await reply(old.external_id), await reply("123")):
            assert answer.json()["error"]["error_subcode"] == 2534025
        tagged = await reply(fresh.external_id, messaging_type="MESSAGE_TAG", tag="HUMAN_AGENT")
        assert tagged.json()["error"]["code"] == 100
        assert (await reply(fresh.external_id)).status_code == 200
        assert (await reply(fresh.external_id)).json()["error"]["error_subcode"] == 2534025


def test_comment_webhooks_parse_in_metas_shapes():
    from app.inbound.parsing import parse_payload

    value = {"comment_id": "555", "text": "hi", "parent_id": "444",
             "from": {"id": COMMENTER, "username": "fan"},
             "media": {"id": "999", "media_product_type": "REELS"}}  # fmt: skip
    entry = {"id": "17841400000000001", "time": 1776339591, "changes": [
        {"field": "comments", "value": value},
        {"field": "comments", "value": {"text": "no id"}},
    ]}  # fmt: skip
    parsed = parse_payload({"object": "instagram", "entry": [entry]})
    [comment] = parsed.comments
    assert (comment.external_id, comment.parent_id, comment.post_id) == ("555", "444", "999")
    assert comment.commented_at.year == 2026  # seconds, not milliseconds
    assert comment.media_product_type == "REELS" and comment.author_username == "fan"
    assert len(parsed.problems) == 1 and parsed.events == []


async def test_a_comment_delivered_twice_is_stored_once_and_others_accounts_not_at_all(
    account, clean
):
    first = await _comment(account, clean)
    await _comment(account, clean, comment_id=first.external_id)
    stranger = {"account_id": "17841400000009999", "sender_id": COMMENTER, "text": "hi",
                "comment_id": "31337"}  # fmt: skip
    await clean.sandbox("POST", "/_sandbox/comments", json=stranger)
    last = await _comment(account, clean)
    await worker_idle(clean)  # every webhook applied
    async with clean.sessionmaker() as session:
        stored = (await session.scalars(select(Comment.external_id).order_by(Comment.id))).all()
    assert stored == [first.external_id, last.external_id]
