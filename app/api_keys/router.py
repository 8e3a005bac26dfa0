from fastapi import APIRouter, Response

from app.api_keys import service
from app.api_keys.auth import CurrentScope
from app.api_keys.schemas import ApiKeyCreate, ApiKeyList, ApiKeyOut
from app.core.deps import Session
from app.core.idempotency import Idempotency
from app.profiles.schemas import DeleteOut

router = APIRouter(tags=["api keys"])


@router.get(
    "/api_keys", operation_id="api_keys_list", summary="List API keys", response_model=ApiKeyList
)
async def list_keys(scope: CurrentScope, session: Session) -> ApiKeyList:
    return ApiKeyList(data=[ApiKeyOut.of(key) for key in await service.list_for(session, scope)])


@router.post(
    "/api_keys",
    operation_id="api_keys_create",
    summary="Create an API key",
    response_model=ApiKeyOut,
    status_code=201,
)
async def create_key(
    fields: ApiKeyCreate, scope: CurrentScope, session: Session, idempotency: Idempotency
) -> Response:
    key, token = await service.create_for(session, scope, fields.name, fields.profile_group_id)
    # The token is shown once: a replay of this request answers without it, as the token
    # is never stored (only its hash).
    await idempotency.remember(session, 201, ApiKeyOut.of(key))
    shown = ApiKeyOut.of(key, token)
    return Response(shown.model_dump_json(), 201, media_type="application/json")


@router.delete(
    "/api_keys/{key_id}",
    operation_id="api_keys_delete",
    summary="Revoke an API key",
    response_model=DeleteOut,
)
async def delete_key(key_id: str, scope: CurrentScope, session: Session) -> DeleteOut:
    await service.delete_for(session, scope, key_id)
    return DeleteOut(deleted=True)
