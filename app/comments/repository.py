"""Every query of comments."""

from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.comments.models import Comment
from app.inbound.parsing import CommentEvent
from app.profiles.models import Profile


async def store_comments(session: AsyncSession, comments: Sequence[CommentEvent]) -> None:
    """Store the comments of connected accounts' posts, each once (Meta may repeat one);
    those of accounts not connected are dropped."""
    accounts = {comment.account_id for comment in comments}
    found = await session.execute(
        select(Profile.platform_id, Profile.id).where(
            Profile.platform_id.in_(accounts), Profile.erasing_since.is_(None)
        )
    )
    profiles = {platform_id: profile_id for platform_id, profile_id in found}
    rows = [
        {
            "profile_id": profiles[comment.account_id],
            "external_id": comment.external_id,
            "post_external_id": comment.post_id,
            "parent_external_id": comment.parent_id,
            "media_product_type": comment.media_product_type,
            "author_external_id": comment.author_id,
            "author_username": comment.author_username,
            "body": comment.text,
            "commented_at": comment.commented_at,
        }
        for comment in comments
        if comment.account_id in profiles
    ]
    if rows:
        await session.execute(
            insert(Comment)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["profile_id", "external_id"])
        )


async def lock(session: AsyncSession, profile_id: int, external_id: str) -> Comment | None:
    """The profile's comment with this id, its row locked (one private reply each)."""
    return await session.scalar(
        select(Comment)
        .where(Comment.profile_id == profile_id, Comment.external_id == external_id)
        .with_for_update()
    )


async def mark_replied(session: AsyncSession, comment: Comment, message_id: int) -> None:
    await session.execute(
        update(Comment).where(Comment.id == comment.id).values(private_reply_message_id=message_id)
    )
