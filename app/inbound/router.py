from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse

from app.core.db import acquire
from app.core.errors import APIError
from app.inbound import receipt
from app.inbound.signature import SIGNATURE_HEADER

router = APIRouter(prefix="/webhooks", tags=["meta webhooks"])


@router.get("/instagram", response_class=PlainTextResponse)
async def verify_subscription(
    request: Request,
    mode: Annotated[str | None, Query(alias="hub.mode")] = None,
    verify_token: Annotated[str | None, Query(alias="hub.verify_token")] = None,
    challenge: Annotated[str | None, Query(alias="hub.challenge")] = None,
) -> str:
    """Meta's subscription handshake: echo the challenge if the verify token matches."""
    expected = request.app.state.settings.meta_verify_token
    if mode != "subscribe" or not expected or verify_token != expected or challenge is None:
        raise APIError(403, "Webhook verification failed: wrong hub.mode or hub.verify_token")
    return challenge


@router.post("/instagram")
async def receive(request: Request) -> Response:
    """Verify, store, acknowledge (app/inbound/receipt.py)."""
    body = await request.body()
    state = request.app.state
    if not receipt.is_signed(state.settings, body, request.headers.get(SIGNATURE_HEADER)):
        receipt.META_WEBHOOKS_REFUSED.inc()
        raise APIError(401, f"Missing or invalid {SIGNATURE_HEADER} signature")
    async with acquire(
        state.driver_pool, state.settings.database_pool_timeout_seconds
    ) as connection:
        await receipt.store(connection, state.arq_pool, body)
    return Response(receipt.RECEIVED, media_type="application/json")
