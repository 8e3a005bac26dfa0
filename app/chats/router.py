from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.api_keys.auth import CurrentScope
from app.chats import service
from app.chats.schemas import ChatCreate, ChatOut
from app.core.deps import Session
from app.core.idempotency import Idempotency
from app.core.pagination import Page, Pagination
from app.core.schemas import Timestamp
from app.profiles.service import get_profile

router = APIRouter(tags=["chats"])


@router.get(
    "/profiles/{profile_id}/chats",
    response_model=Page[ChatOut],
    operation_id="chats_list",
    summary="List a profile's chats, most recently active first",
)
async def list_chats(
    profile_id: str,
    scope: CurrentScope,
    session: Session,
    page: Pagination,
    before: Annotated[
        Timestamp | None,
        Query(description="Chats active before this time (ISO 8601; UTC if no offset)"),
    ] = None,
    after: Annotated[
        Timestamp | None,
        Query(description="Chats active after this time (ISO 8601; UTC if no offset)"),
    ] = None,
    archived: Annotated[
        bool,
        Query(description="true: the archived chats (which other lists leave out)"),
    ] = False,
) -> Page[ChatOut]:
    profile = await get_profile(session, scope, profile_id)
    chats, total = await service.list_chats(session, profile, page, before, after, archived)
    return Page.of([ChatOut.of(c) for c in chats], total, page)


@router.post(
    "/profiles/{profile_id}/chats",
    response_model=ChatOut,
    status_code=201,
    responses={200: {"model": ChatOut, "description": "The chat already existed"}},
    operation_id="chats_create",
    summary="Find or create the chat with a participant",
)
async def create_chat(
    profile_id: str,
    fields: ChatCreate,
    scope: CurrentScope,
    session: Session,
    idempotency: Idempotency,
) -> Response:
    profile = await get_profile(session, scope, profile_id)
    chat, created = await service.find_or_create(session, profile, fields)
    return await idempotency.remember(session, 201 if created else 200, ChatOut.of(chat))


@router.post(
    "/chats/{chat_id}/archive",
    operation_id="chats_archive",
    summary="Archive a chat",
    response_model=ChatOut,
)
async def archive_chat(
    chat_id: str, scope: CurrentScope, session: Session, idempotency: Idempotency
) -> Response:
    """Archive the chat: lists leave it out (unless `archived=true`) until the participant
    writes again."""
    chat = await service.set_archived(session, scope, chat_id, archived=True)
    return await idempotency.remember(session, 200, ChatOut.of(chat))


@router.delete(
    "/chats/{chat_id}/archive",
    operation_id="chats_unarchive",
    summary="Unarchive a chat",
    response_model=ChatOut,
)
async def unarchive_chat(
    chat_id: str, scope: CurrentScope, session: Session, idempotency: Idempotency
) -> Response:
    chat = await service.set_archived(session, scope, chat_id, archived=False)
    return await idempotency.remember(session, 200, ChatOut.of(chat))


@router.get(
    "/chats/{chat_id}",
    response_model=ChatOut,
    operation_id="chats_get",
    summary="Get a chat",
)
async def get_chat(chat_id: str, scope: CurrentScope, session: Session) -> ChatOut:
    chat, _ = await service.find_chat(session, scope, chat_id)
    return ChatOut.of(chat)
