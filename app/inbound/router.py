import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse

from app.core.db import enqueue_after_commit
from app.core.deps import Session
from app.core.errors import APIError
from app.core.settings import Settings
from app.inbound.models import WebhookDelivery
from app.inbound.processing import delivery_job_id
from app.inbound.signature import SIGNATURE_HEADER, signature_is_valid

log = logging.getLogger(__name__)

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


def _webhook_secrets(settings: Settings) -> list[str]:
    return [s for s in (settings.meta_app_secret, settings.instagram_app_secret) if s]


@router.post("/instagram")
async def receive(request: Request, session: Session) -> dict[str, bool]:
    """Verify, store, acknowledge: Meta wants the 200 within seconds and retries otherwise,
    so the events are applied by a worker, not here."""
    body = await request.body()
    secrets = _webhook_secrets(request.app.state.settings)
    if not secrets:
        log.error(
            "a Meta webhook arrived but neither META_APP_SECRET nor INSTAGRAM_APP_SECRET is set; "
            "it cannot be verified"
        )
    if not signature_is_valid(secrets, body, request.headers.get(SIGNATURE_HEADER)):
        raise APIError(401, f"Missing or invalid {SIGNATURE_HEADER} signature")
    # Kept even if it is not JSON (the worker reports it); PostgreSQL text cannot hold NUL.
    text = body.decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    delivery = WebhookDelivery(body=text)
    session.add(delivery)
    await session.flush()
    enqueue_after_commit(
        session, "process_webhook", delivery.id, _job_id=delivery_job_id(delivery.id)
    )
    return {"received": True}
