"""Private replies (meta doc §2.9, §11.4): one direct message to a comment's author, within
7 days of the comment, sent with `recipient: {comment_id}`. It is filed in the chat with the
commenter and sent as any message of that chat is (the chat's queue, the sender, its
retries); Meta's 24-hour window does not apply to it."""

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.api_keys.auth import Scope
from app.chats import repository as chats
from app.comments import repository
from app.comments.schemas import PrivateReplyIn
from app.core.errors import APIError, NotFound
from app.messages.models import Direction, Message, MessageStatus
from app.messages.service import queue_send
from app.profiles.models import ProfileStatus
from app.profiles.service import get_profile

PRIVATE_REPLY_DAYS = 7


async def private_reply(
    session: AsyncSession,
    scope: Scope,
    profile_id: str,
    post_id: str,
    comment_id: str,
    fields: PrivateReplyIn,
) -> Message:
    profile = await get_profile(session, scope, profile_id)
    comment = await repository.lock(session, profile.id, comment_id)
    if comment is None or (comment.post_external_id not in (None, post_id)):
        raise NotFound("Comment")
    if profile.status != ProfileStatus.ACTIVE:
        raise APIError(
            422, f"The profile is {profile.status}: reconnect the Instagram account first"
        )
    if comment.private_reply_message_id is not None:
        raise APIError(422, "The comment already has its private reply: Meta allows one")
    age = datetime.now(UTC) - comment.commented_at
    if age > timedelta(days=PRIVATE_REPLY_DAYS):
        raise APIError(
            422,
            f"The comment is {age.days} days old: Meta takes a private reply within "
            f"{PRIVATE_REPLY_DAYS} days of the comment",
        )
    if comment.author_external_id is None:
        raise APIError(422, "Meta did not say who wrote the comment: it cannot be answered")
    if comment.author_external_id == profile.platform_id:
        raise APIError(422, "The comment is the account's own: it cannot be answered privately")
    given = {"participant_username": comment.author_username} if comment.author_username else {}
    chat, _ = await chats.upsert(session, profile.id, comment.author_external_id, given)
    message = Message(
        chat_id=chat.id,
        profile_id=profile.id,
        direction=Direction.OUTBOUND.value,
        status=MessageStatus.PENDING.value,
        body=fields.text,
        interactive=fields.interactive,
        external_comment_id=comment.external_id,
        is_unsupported=False,
    )
    session.add(message)
    await session.flush()
    await session.refresh(message)
    await repository.mark_replied(session, comment, message.id)
    queue_send(session, chat.id)
    return message
