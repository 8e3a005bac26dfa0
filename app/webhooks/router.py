from typing import Annotated

from fastapi import APIRouter, Body, Request, Response

from app.api_keys.auth import CurrentScope
from app.core.addresses import Resolver
from app.core.deps import Session
from app.core.idempotency import Idempotency
from app.core.pagination import Page, Pagination
from app.core.settings import Settings
from app.webhooks import service
from app.webhooks.schemas import (
    AcceptedOut,
    DeletedOut,
    WebhookCreate,
    WebhookDeliveryOut,
    WebhookOut,
    WebhookTest,
    WebhookUpdate,
)

router = APIRouter(tags=["webhooks"])


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _resolver(request: Request) -> Resolver:
    # The API's one resolver (create_app), sends' media URLs' too.
    resolver: Resolver = request.app.state.resolver
    return resolver


@router.get("/webhooks", operation_id="webhooks_list", summary="List webhook endpoints")
async def list_webhooks(scope: CurrentScope, session: Session) -> dict[str, list[WebhookOut]]:
    return {"data": [WebhookOut.of(w) for w in await service.list_webhooks(session, scope)]}


@router.post(
    "/webhooks",
    operation_id="webhooks_create",
    summary="Create a webhook endpoint",
    response_model=WebhookOut,
    status_code=201,
)
async def create_webhook(
    fields: WebhookCreate,
    request: Request,
    scope: CurrentScope,
    session: Session,
    idempotency: Idempotency,
) -> Response:
    """A new endpoint for the key's profile group. Its `secret` (signing every request) is
    in this answer alone."""
    webhook, secret = await service.create(
        session, scope, fields, _settings(request), _resolver(request)
    )
    return await idempotency.remember(
        session, 201, WebhookOut.of(webhook, secret), replayed=WebhookOut.of(webhook)
    )


@router.get(
    "/webhooks/{webhook_id}",
    operation_id="webhooks_get",
    summary="Get a webhook endpoint",
    response_model=WebhookOut,
)
async def get_webhook(webhook_id: str, scope: CurrentScope, session: Session) -> WebhookOut:
    return WebhookOut.of(await service.get(session, scope, webhook_id))


@router.patch(
    "/webhooks/{webhook_id}",
    operation_id="webhooks_update",
    summary="Update a webhook endpoint",
    response_model=WebhookOut,
)
async def update_webhook(
    webhook_id: str,
    fields: WebhookUpdate,
    request: Request,
    scope: CurrentScope,
    session: Session,
    idempotency: Idempotency,
) -> Response:
    """Change the URL, events, description; `enabled: true` resumes a disabled endpoint."""
    webhook = await service.update(
        session, scope, webhook_id, fields, _settings(request), _resolver(request)
    )
    return await idempotency.remember(session, 200, WebhookOut.of(webhook))


@router.delete(
    "/webhooks/{webhook_id}",
    operation_id="webhooks_delete",
    summary="Delete a webhook endpoint",
    response_model=DeletedOut,
)
async def delete_webhook(
    webhook_id: str, scope: CurrentScope, session: Session, idempotency: Idempotency
) -> Response:
    await service.delete(session, scope, webhook_id)
    return await idempotency.remember(session, 200, DeletedOut(deleted=True))


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    operation_id="webhooks_deliveries",
    summary="List a webhook endpoint's deliveries",
    response_model=Page[WebhookDeliveryOut],
)
async def list_deliveries(
    webhook_id: str, scope: CurrentScope, session: Session, page: Pagination
) -> Page[WebhookDeliveryOut]:
    """Every attempt to send an event to the endpoint, newest first."""
    attempts, total = await service.deliveries(session, scope, webhook_id, page)
    return Page.of([WebhookDeliveryOut.of(a) for a in attempts], total, page)


@router.post(
    "/webhooks/{webhook_id}/test",
    operation_id="webhooks_test",
    summary="Send a test event to a webhook endpoint",
    response_model=AcceptedOut,
    status_code=202,
)
async def test_webhook(
    webhook_id: str,
    scope: CurrentScope,
    session: Session,
    idempotency: Idempotency,
    fields: Annotated[WebhookTest | None, Body()] = None,
) -> Response:
    """Send the endpoint a signed sample event (after what it has pending)."""
    event_type = fields.event_type if fields is not None else None
    event_id, type = await service.send_test(session, scope, webhook_id, event_type)
    return await idempotency.remember(
        session, 202, AcceptedOut(accepted=True, event_id=event_id, event_type=type)
    )


@router.post(
    "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    operation_id="webhooks_redeliver",
    summary="Deliver a webhook event again",
    response_model=AcceptedOut,
    status_code=202,
)
async def redeliver(
    webhook_id: str,
    delivery_id: str,
    scope: CurrentScope,
    session: Session,
    idempotency: Idempotency,
) -> Response:
    """Send a delivery's event again (after what the endpoint has pending)."""
    event_id, type = await service.redeliver(session, scope, webhook_id, delivery_id)
    return await idempotency.remember(
        session, 202, AcceptedOut(accepted=True, event_id=event_id, event_type=type)
    )
