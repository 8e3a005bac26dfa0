from fastapi import APIRouter, Request, Response

from app.actions import service
from app.actions.schemas import AcceptedOut, ReactionIn
from app.api_keys.auth import CurrentScope
from app.chats.schemas import ChatOut
from app.chats.service import find_chat
from app.core.deps import Session
from app.core.idempotency import Idempotency
from app.messages import service as messages
from app.messages.schemas import MessageOut

router = APIRouter(tags=["actions"])


def _actor(request: Request) -> service.Actor:
    state = request.app.state
    return service.Actor(state.graph, state.throttle, state.settings)


@router.post(
    "/messages/{message_id}/react",
    operation_id="messages_react",
    summary="React to a message",
    response_model=MessageOut,
)
async def react(
    message_id: str,
    fields: ReactionIn,
    request: Request,
    scope: CurrentScope,
    session: Session,
    idempotency: Idempotency,
) -> Response:
    """React to a message as the account: `love`, or any emoji. Sent to Meta at once."""
    message = await service.react(
        session, _actor(request), scope, message_id, fields.reaction, fields.emoji
    )
    return await idempotency.remember(session, 200, MessageOut.of(message))


@router.delete(
    "/messages/{message_id}/unreact",
    operation_id="messages_unreact",
    summary="Take back the reaction to a message",
    response_model=MessageOut,
)
async def unreact(
    message_id: str,
    request: Request,
    scope: CurrentScope,
    session: Session,
    idempotency: Idempotency,
) -> Response:
    """Take the account's reaction back. Sent to Meta at once."""
    message = await service.unreact(session, _actor(request), scope, message_id)
    return await idempotency.remember(session, 200, MessageOut.of(message))


@router.patch(
    "/messages/{message_id}",
    operation_id="messages_edit",
    summary="Edit a message (always refused by Instagram)",
    response_model=MessageOut,
)
async def edit_message(message_id: str, scope: CurrentScope, session: Session) -> MessageOut:
    """Instagram does not let a sent message be edited: always refused."""
    await messages.edit(session, scope, message_id)


@router.post(
    "/chats/{chat_id}/mark_read",
    operation_id="chats_mark_read",
    summary="Mark a chat's messages seen",
    response_model=ChatOut,
)
async def mark_read(
    chat_id: str, request: Request, scope: CurrentScope, session: Session, idempotency: Idempotency
) -> Response:
    """Mark the participant's messages seen (Meta's read receipt). Sent to Meta at once."""
    chat, profile = await find_chat(session, scope, chat_id)
    await service.perform(_actor(request), chat, profile, "mark_seen")
    return await idempotency.remember(session, 200, ChatOut.of(chat))


async def _typing(
    request: Request, scope: CurrentScope, session: Session, chat_id: str, on: bool
) -> AcceptedOut:
    chat, profile = await find_chat(session, scope, chat_id)
    await service.perform(_actor(request), chat, profile, "typing_on" if on else "typing_off")
    return AcceptedOut(accepted=True)


@router.post(
    "/chats/{chat_id}/start_typing",
    operation_id="chats_start_typing",
    summary="Show the typing indicator",
    response_model=AcceptedOut,
)
async def start_typing(
    chat_id: str, request: Request, scope: CurrentScope, session: Session, idempotency: Idempotency
) -> Response:
    """Show the typing indicator: sent at once, or dropped (429) if it cannot be."""
    answer = await _typing(request, scope, session, chat_id, on=True)
    return await idempotency.remember(session, 200, answer)


@router.post(
    "/chats/{chat_id}/stop_typing",
    operation_id="chats_stop_typing",
    summary="Hide the typing indicator",
    response_model=AcceptedOut,
)
async def stop_typing(
    chat_id: str, request: Request, scope: CurrentScope, session: Session, idempotency: Idempotency
) -> Response:
    """Hide the typing indicator: sent at once, or dropped (429) if it cannot be."""
    answer = await _typing(request, scope, session, chat_id, on=False)
    return await idempotency.remember(session, 200, answer)
