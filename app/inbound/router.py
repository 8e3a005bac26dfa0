from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse

from app.core.db import acquire
from app.core.errors import APIError
from app.inbound import receipt
from app.inbound.schemas import Received
from app.inbound.signature import SIGNATURE_HEADER

router = APIRouter(prefix="/webhooks", tags=["meta webhooks"])


@router.get(
    "/instagram",
    response_class=PlainTextResponse,
    operation_id="webhooks_verify",
    summary="Meta's webhook subscription handshake",
    responses={
        200: {"description": "The challenge, echoed"},
        403: {"description": "Wrong hub.mode or hub.verify_token"},
    },
)
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


@router.post(
    "/instagram",
    operation_id="webhooks_receive",
    summary="Receive Meta's webhook deliveries",
    response_model=Received,
    responses={401: {"description": "Missing or invalid X-Hub-Signature-256 signature"}},
    openapi_extra={
        "parameters": [
            {
                "name": SIGNATURE_HEADER,
                "in": "header",
                "required": True,
                "description": "sha256= and the HMAC-SHA256 of the body with the app secret",
                "schema": {"type": "string"},
            }
        ],
        "requestBody": {
            "required": True,
            "description": "Meta's delivery, stored as sent and processed by a worker",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "object": {"type": "string", "examples": ["instagram"]},
                            "entry": {"type": "array", "items": {"type": "object"}},
                        },
                    }
                }
            },
        },
    },
)
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
