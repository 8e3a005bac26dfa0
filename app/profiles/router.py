from fastapi import APIRouter

from app.api_keys.auth import CurrentScope
from app.core.deps import Session
from app.profiles import service
from app.profiles.schemas import ProfileList, ProfileOut

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
