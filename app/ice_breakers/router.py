from fastapi import APIRouter, Request, Response

from app.api_keys.auth import CurrentScope
from app.core.deps import Session
from app.core.idempotency import Idempotency
from app.ice_breakers import service
from app.ice_breakers.schemas import IceBreakersIn, IceBreakersOut, SuccessOut
from app.profiles.service import get_profile

router = APIRouter(tags=["ice breakers"])


@router.get(
    "/profiles/{profile_id}/ice_breakers",
    operation_id="ice_breakers_get",
    summary="Get a profile's ice breakers",
    response_model=IceBreakersOut,
)
async def get_ice_breakers(
    profile_id: str, request: Request, scope: CurrentScope, session: Session
) -> IceBreakersOut:
    """The account's ice breakers, as Meta has them."""
    profile = await get_profile(session, scope, profile_id)
    state = request.app.state
    return IceBreakersOut(ice_breakers=await service.get(state.graph, state.settings, profile))


@router.post(
    "/profiles/{profile_id}/ice_breakers",
    operation_id="ice_breakers_set",
    summary="Set a profile's ice breakers",
    response_model=SuccessOut,
)
async def set_ice_breakers(
    profile_id: str,
    fields: IceBreakersIn,
    request: Request,
    scope: CurrentScope,
    session: Session,
    idempotency: Idempotency,
) -> Response:
    """Replace the account's ice breakers (1 to 4 questions, each with the payload its tap
    sends back as a postback)."""
    profile = await get_profile(session, scope, profile_id)
    state = request.app.state
    await service.put(state.graph, state.settings, profile, fields.ice_breakers)
    return await idempotency.remember(session, 200, SuccessOut(success=True))


@router.delete(
    "/profiles/{profile_id}/ice_breakers",
    operation_id="ice_breakers_delete",
    summary="Remove a profile's ice breakers",
    response_model=SuccessOut,
)
async def delete_ice_breakers(
    profile_id: str,
    request: Request,
    scope: CurrentScope,
    session: Session,
    idempotency: Idempotency,
) -> Response:
    profile = await get_profile(session, scope, profile_id)
    state = request.app.state
    await service.delete(state.graph, state.settings, profile)
    return await idempotency.remember(session, 200, SuccessOut(success=True))
