from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.api_keys.auth import CurrentScope
from app.comments import service
from app.comments.schemas import PrivateReplyIn
from app.core.deps import Session
from app.core.idempotency import Idempotency
from app.messages.schemas import MessageOut

router = APIRouter(tags=["comments"])


@router.post(
    "/posts/{post_id}/comments/{comment_id}/private_reply",
    operation_id="comments_private_reply",
    summary="Answer a comment with a private reply",
    response_model=MessageOut,
    status_code=202,
)
async def private_reply(
    post_id: str,
    comment_id: str,
    profile_id: Annotated[str, Query(description="The profile whose post was commented on")],
    fields: PrivateReplyIn,
    scope: CurrentScope,
    session: Session,
    idempotency: Idempotency,
) -> Response:
    """Answer a comment on the account's post (Meta's ids) with a direct message to its author:
    one per comment, within 7 days of it. Filed in the chat with the commenter; `pending`
    until a worker hands it to Meta."""
    message = await service.private_reply(session, scope, profile_id, post_id, comment_id, fields)
    return await idempotency.remember(session, 202, MessageOut.of(message))
