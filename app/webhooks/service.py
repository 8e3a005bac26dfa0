"""Customer webhooks' rules: who sees an endpoint (its profile group), where one may point
(targets.py), its secret (generated, kept encrypted, shown once), and what re-enabling,
testing and redelivering queue. Sending is dispatcher.py's."""

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.api_keys.auth import Scope
from app.core import crypto, ids
from app.core.addresses import Resolver
from app.core.errors import NotFound, Unprocessable
from app.core.pagination import PageParams
from app.core.settings import Settings
from app.events.models import CustomerEventType
from app.webhooks import repository, samples, signing, targets
from app.webhooks.models import CustomerWebhook, DispatchAttempt
from app.webhooks.schemas import WebhookCreate, WebhookUpdate

# Events pruned per statement: a large backlog goes in several, none holding locks long.
PRUNE_BATCH = 5000
DISABLED_BY_REQUEST = "Disabled by request"


async def _checked_url(url: str, settings: Settings, resolver: Resolver) -> str:
    try:
        await targets.check(url, settings, resolver)
    except targets.Refused as refusal:
        raise Unprocessable(f"This URL cannot be used: {refusal}", "url") from refusal
    return url


async def create(
    session: AsyncSession,
    scope: Scope,
    fields: WebhookCreate,
    settings: Settings,
    resolver: Resolver,
) -> tuple[CustomerWebhook, str]:
    """A new endpoint of the key's profile group (of every group, for a key that sees them
    all), and its secret."""
    url = await _checked_url(fields.url, settings, resolver)
    secret = signing.new_secret()
    webhook = CustomerWebhook(
        profile_group_id=scope.profile_group_id,
        url=url,
        events=fields.events,
        description=fields.description,
        secret_encrypted=crypto.encrypt(settings.secret_key, secret),
    )
    return await repository.add(session, webhook), secret


async def get(session: AsyncSession, scope: Scope, public_id: str) -> CustomerWebhook:
    serial = ids.decode(ids.Kind.WEBHOOK, public_id)
    webhook = await repository.find(session, scope, serial) if serial is not None else None
    if webhook is None:
        raise NotFound("Webhook")
    return webhook


async def list_webhooks(session: AsyncSession, scope: Scope) -> list[CustomerWebhook]:
    return await repository.list_visible(session, scope)


async def update(
    session: AsyncSession,
    scope: Scope,
    public_id: str,
    fields: WebhookUpdate,
    settings: Settings,
    resolver: Resolver,
) -> CustomerWebhook:
    """Change what is given. Enabling a disabled endpoint clears its failures and sends what
    it has pending at once, in order."""
    webhook = await get(session, scope, public_id)
    if fields.url is not None and fields.url != webhook.url:
        webhook.url = await _checked_url(fields.url, settings, resolver)
    if fields.events is not None:
        webhook.events = fields.events
    if fields.description is not None:
        webhook.description = fields.description
    if fields.enabled is True and not webhook.enabled:
        webhook.enabled = True
        webhook.disabled_reason = None
        webhook.consecutive_failures = 0
        await repository.resume(session, webhook.id)
    elif fields.enabled is False and webhook.enabled:
        webhook.enabled = False
        webhook.disabled_reason = DISABLED_BY_REQUEST
    await repository.save(session, webhook)
    return webhook


async def delete(session: AsyncSession, scope: Scope, public_id: str) -> None:
    """The endpoint, its pending events and its delivery log."""
    await repository.remove(session, await get(session, scope, public_id))


async def deliveries(
    session: AsyncSession, scope: Scope, public_id: str, page: PageParams
) -> tuple[list[DispatchAttempt], int]:
    webhook = await get(session, scope, public_id)
    return await repository.page_of_attempts(session, webhook.id, page)


async def send_test(
    session: AsyncSession, scope: Scope, public_id: str, event_type: str | None
) -> tuple[str, str]:
    """Queue a sample event for the endpoint alone, signed like any: its id and type."""
    webhook = await get(session, scope, public_id)
    type = CustomerEventType(event_type or webhook.events[0])
    now = datetime.now(UTC)
    dispatch = await repository.queue(session, webhook.id, type, None, None)
    event_id = ids.encode(ids.Kind.DISPATCH, dispatch.id)
    dispatch.test_data = {
        "id": event_id,
        "created_at": now.isoformat(),
        "data": samples.data(type, now),
    }
    await session.flush()
    return event_id, type


async def redeliver(
    session: AsyncSession, scope: Scope, public_id: str, delivery_id: str
) -> tuple[str, str]:
    """Queue again the event of one of the endpoint's deliveries: its id and type."""
    webhook = await get(session, scope, public_id)
    serial = ids.decode(ids.Kind.WEBHOOK_DELIVERY, delivery_id)
    found = await repository.find_attempt(session, webhook.id, serial) if serial else None
    if found is None:
        raise NotFound("Delivery")
    attempt, dispatch = found
    if dispatch is None or (
        dispatch.event_id is not None
        and not await repository.event_exists(session, dispatch.event_id)
    ):
        raise Unprocessable(
            "This delivery's event is no longer kept (events are deleted after the retention "
            "period), so it cannot be sent again"
        )
    await repository.queue(
        session, webhook.id, dispatch.event_type, dispatch.event_id, dispatch.test_data
    )
    return attempt.event_public_id, attempt.event_type


async def prune(engine: AsyncEngine, settings: Settings) -> int:
    """Delete the events every endpoint is done with, once past their retention."""
    retention = timedelta(seconds=settings.webhook_event_retention_seconds)
    pruned = total = await repository.prune(engine, retention, PRUNE_BATCH)
    while pruned == PRUNE_BATCH:
        pruned = await repository.prune(engine, retention, PRUNE_BATCH)
        total += pruned
    return total
