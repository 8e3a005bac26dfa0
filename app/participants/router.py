from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from app.api_keys.auth import CurrentScope
from app.chats.schemas import IGSID_PATTERN
from app.core.deps import Session
from app.participants import service
from app.participants.schemas import ParticipantStatusOut
from app.profiles.service import get_profile

router = APIRouter(tags=["participants"])


@router.get(
    "/profiles/{profile_id}/participants/{user_id}",
    response_model=ParticipantStatusOut,
    operation_id="participants_get",
    summary="Get a participant's verification and follow status",
    responses={
        422: {"description": "Meta will not share this participant's profile yet"},
        502: {"description": "Meta refused the profile request, or could not be reached"},
    },
)
async def participant_status(
    profile_id: str,
    user_id: Annotated[str, Path(pattern=IGSID_PATTERN, description="The participant's IGSID")],
    request: Request,
    scope: CurrentScope,
    session: Session,
) -> dict[str, Any]:
    """Whether an Instagram participant is verified and follows the account (and vice
    versa); cached for a short while."""
    profile = await get_profile(session, scope, profile_id)
    state = request.app.state
    return await service.status(session, state.graph, state.settings, profile, user_id)
