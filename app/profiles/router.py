from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.api_keys.auth import CurrentScope
from app.core.deps import Session
from app.core.idempotency import Idempotency
from app.profiles import service
from app.profiles.schemas import (
    DeleteOut,
    ProfileGroupCreate,
    ProfileGroupList,
    ProfileGroupOut,
    ProfileList,
    ProfileOut,
    SuccessOut,
)

router = APIRouter(tags=["profiles"])


@router.get(
    "/profiles",
    response_model=ProfileList,
    operation_id="profiles_list",
    summary="List the profiles this key sees",
)
async def list_profiles(scope: CurrentScope, session: Session) -> ProfileList:
    profiles = await service.list_profiles(session, scope)
    return ProfileList(data=[ProfileOut.of(p) for p in profiles])


@router.get(
    "/profiles/{profile_id}",
    response_model=ProfileOut,
    operation_id="profiles_get",
    summary="Get a profile",
)
async def get_profile(profile_id: str, scope: CurrentScope, session: Session) -> ProfileOut:
    return ProfileOut.of(await service.get_profile(session, scope, profile_id))


@router.delete(
    "/profiles/{profile_id}",
    operation_id="profiles_delete",
    summary="Disconnect a profile and erase its data",
    response_model=SuccessOut,
)
async def delete_profile(
    profile_id: str,
    scope: CurrentScope,
    session: Session,
    erase: Annotated[
        bool,
        Query(
            description="Also erase its chats, messages, events, raw payloads and media "
            "(hidden at once, deleted by a worker in the background; otherwise they stay, and "
            "the profile is only disconnected)"
        ),
    ] = False,
) -> SuccessOut:
    await service.delete_profile(session, scope, profile_id, erase)
    return SuccessOut(success=True)


groups_router = APIRouter(tags=["profile groups"])


@groups_router.get(
    "/profile_groups",
    operation_id="profile_groups_list",
    summary="List the profile groups this key sees",
    response_model=ProfileGroupList,
)
async def list_groups(scope: CurrentScope, session: Session) -> ProfileGroupList:
    groups = await service.list_groups(session, scope)
    return ProfileGroupList(data=[ProfileGroupOut.of(g, n) for g, n in groups])


@groups_router.post(
    "/profile_groups",
    operation_id="profile_groups_create",
    summary="Create a profile group",
    response_model=ProfileGroupOut,
    status_code=201,
)
async def create_group(
    fields: ProfileGroupCreate, scope: CurrentScope, session: Session, idempotency: Idempotency
) -> Response:
    group = await service.create_group(session, scope, fields.profile_group.name)
    return await idempotency.remember(session, 201, ProfileGroupOut.of(group, 0))


@groups_router.get(
    "/profile_groups/{group_id}",
    operation_id="profile_groups_get",
    summary="Get a profile group",
    response_model=ProfileGroupOut,
)
async def get_group(group_id: str, scope: CurrentScope, session: Session) -> ProfileGroupOut:
    return ProfileGroupOut.of(*await service.get_group(session, scope, group_id))


@groups_router.delete(
    "/profile_groups/{group_id}",
    operation_id="profile_groups_delete",
    summary="Delete a profile group",
    response_model=DeleteOut,
)
async def delete_group(group_id: str, scope: CurrentScope, session: Session) -> DeleteOut:
    await service.delete_group(session, scope, group_id)
    return DeleteOut(deleted=True)
