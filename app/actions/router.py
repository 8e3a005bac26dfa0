from collections.abc import Awaitable, Callable

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
    return service.Actor.of(request.app.state)


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


def _typing(action: str) -> Callable[..., Awaitable[Response]]:
    """The route that makes the typing indicator's `action` (typing_on, typing_off)."""

    async def typing(
        chat_id: str,
        request: Request,
        scope: CurrentScope,
        session: Session,
        idempotency: Idempotency,
    ) -> Response:
        chat, profile = await find_chat(session, scope, chat_id)
        await service.perform(_actor(request), chat, profile, action)
        return await idempotency.remember(session, 200, AcceptedOut(accepted=True))

    return typing


for name, action, verb in (
    ("start_typing", "typing_on", "Show"),
    ("stop_typing", "typing_off", "Hide"),
):
    router.add_api_route(
        f"/chats/{{chat_id}}/{name}",
        _typing(action),
        methods=["POST"],
        name=name,
        operation_id=f"chats_{name}",
        summary=f"{verb} the typing indicator",
        description=f"{verb} the typing indicator: sent at once, or dropped (429) if it cannot be.",
        response_model=AcceptedOut,
    )
