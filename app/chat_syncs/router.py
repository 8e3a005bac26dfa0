from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response

from app.api_keys.auth import CurrentScope
from app.chat_syncs import service
from app.chat_syncs.schemas import BackfillChats, ChatSyncOut
from app.core.deps import Session
from app.core.idempotency import Idempotency
from app.core.pagination import Page, Pagination

router = APIRouter(tags=["chat syncs"])


@router.post(
    "/profiles/{profile_id}/backfill_chats",
    operation_id="chat_syncs_backfill",
    summary="Import a profile's past chats from Instagram",
    response_model=ChatSyncOut,
    status_code=202,
)
async def backfill_chats(
    profile_id: str,
    fields: BackfillChats,
    scope: CurrentScope,
    session: Session,
    idempotency: Idempotency,
) -> Response:
    sync = await service.backfill(session, scope, profile_id, fields.from_)
    return await idempotency.remember(session, 202, ChatSyncOut.of(sync))


@router.get(
    "/profiles/{profile_id}/chat_syncs",
    operation_id="chat_syncs_list",
    summary="List a profile's chat imports",
    response_model=Page[ChatSyncOut],
)
async def list_chat_syncs(
    profile_id: str,
    scope: CurrentScope,
    session: Session,
    page: Pagination,
    trigger: Annotated[Literal["connect", "scheduled", "backfill"] | None, Query()] = None,
    status: Annotated[Literal["pending", "running", "completed", "failed"] | None, Query()] = None,
) -> Page[ChatSyncOut]:
    syncs, total = await service.list_syncs(session, scope, profile_id, page, trigger, status)
    return Page.of([ChatSyncOut.of(s) for s in syncs], total, page)


@router.get(
    "/profiles/{profile_id}/chat_syncs/{chat_sync_id}",
    operation_id="chat_syncs_get",
    summary="Get a chat import",
    response_model=ChatSyncOut,
)
async def get_chat_sync(
    profile_id: str, chat_sync_id: str, scope: CurrentScope, session: Session
) -> ChatSyncOut:
    return ChatSyncOut.of(await service.get_sync(session, scope, profile_id, chat_sync_id))
