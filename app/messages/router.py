from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.api_keys.auth import CurrentScope
from app.chats.service import find_chat
from app.core.db import driver_connection
from app.core.deps import Session
from app.core.idempotency import Idempotency
from app.core.pagination import Page, Pagination
from app.messages import service
from app.messages.schemas import (
    DirectionName,
    MessageOut,
    MessageSend,
    RecipientMessageSend,
    StatusName,
)

router = APIRouter(tags=["messages"])


@router.get(
    "/chats/{chat_id}/messages",
    response_model=Page[MessageOut],
    operation_id="messages_list",
    summary="List a chat's messages, newest first",
)
async def list_messages(
    chat_id: str,
    scope: CurrentScope,
    session: Session,
    page: Pagination,
    direction: Annotated[DirectionName | None, Query()] = None,
    status: Annotated[StatusName | None, Query()] = None,
) -> Page[MessageOut]:
    chat, _ = await find_chat(session, scope, chat_id)
    messages, total = await service.list_messages(session, chat, page, direction, status)
    return Page(
        data=[MessageOut.of(m) for m in messages],
        total=total,
        page=page.page,
        per_page=page.per_page,
    )


@router.post(
    "/chats/{chat_id}/messages",
    response_model=MessageOut,
    status_code=202,
    operation_id="messages_send",
    summary="Send a message in a chat",
)
async def send_message(
    chat_id: str,
    fields: MessageSend,
    scope: CurrentScope,
    session: Session,
    idempotency: Idempotency,
) -> Response:
    """Accept a message to send: it is `pending` until a worker hands it to Meta."""
    # With an Idempotency-Key, the session's transaction is open (the key was looked up), so
    # the insert and the stored response commit together.
    message = await service.send(await driver_connection(session), scope, chat_id, fields)
    service.queue_send(session, message.chat_id)
    return await idempotency.remember(session, 202, MessageOut.of(message))


@router.post(
    "/profiles/{profile_id}/messages",
    response_model=MessageOut,
    status_code=202,
    operation_id="messages_send_to_recipient",
    summary="Send a message to a participant, in their chat (found or created)",
)
async def send_to_recipient(
    profile_id: str,
    fields: RecipientMessageSend,
    scope: CurrentScope,
    session: Session,
    idempotency: Idempotency,
) -> Response:
    """One request for a workflow step: the profile's chat with `recipient_id` is found or
    created, then the message is accepted in it, `pending` until a worker hands it to Meta."""
    message = await service.send_to_recipient(session, scope, profile_id, fields)
    service.queue_send(session, message.chat_id)
    return await idempotency.remember(session, 202, MessageOut.of(message))


@router.post(
    "/messages/{message_id}/retry",
    response_model=MessageOut,
    status_code=202,
    operation_id="messages_retry",
    summary="Send a failed message again",
)
async def retry_message(
    message_id: str, scope: CurrentScope, session: Session, idempotency: Idempotency
) -> Response:
    """Send a failed message again: it is `pending` until a worker hands it to Meta."""
    message = await service.retry(session, scope, message_id)
    return await idempotency.remember(session, 202, MessageOut.of(message))


@router.get(
    "/messages/{message_id}",
    response_model=MessageOut,
    operation_id="messages_get",
    summary="Get a message by its id or Meta's mid",
)
async def get_message(message_id: str, scope: CurrentScope, session: Session) -> MessageOut:
    return MessageOut.of(await service.get_message(session, scope, message_id))
