"""Every query of customer webhooks: the endpoints (in the caller's session), and the outbox
and its delivery log (the dispatcher's, each statement or transaction on its own
connection of the worker's engine)."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.api_keys.auth import Scope
from app.core.pagination import PageParams, fetch_page
from app.events.models import CustomerEvent
from app.messages.models import Message, MessageRow
from app.webhooks.models import CustomerWebhook, Dispatch, DispatchAttempt, DispatchStatus

# The channel the outbox trigger (migration 0010) and the API notify with an endpoint's id.
CHANNEL = "customer_webhooks"
_NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', :webhook_id)")


# -- Endpoints (the caller's session) ---------------------------------------------------------


def _visible(scope: Scope) -> list[Any]:
    """A key of a profile group sees that group's endpoints only."""
    if scope.profile_group_id is None:
        return []
    return [CustomerWebhook.profile_group_id == scope.profile_group_id]


async def list_visible(session: AsyncSession, scope: Scope) -> list[CustomerWebhook]:
    rows = await session.scalars(
        select(CustomerWebhook).where(*_visible(scope)).order_by(CustomerWebhook.id)
    )
    return list(rows.all())


async def find(session: AsyncSession, scope: Scope, webhook_id: int) -> CustomerWebhook | None:
    found: CustomerWebhook | None = await session.scalar(
        select(CustomerWebhook).where(CustomerWebhook.id == webhook_id, *_visible(scope))
    )
    return found


async def add(session: AsyncSession, webhook: CustomerWebhook) -> CustomerWebhook:
    session.add(webhook)
    await session.flush()
    await session.refresh(webhook)
    return webhook


async def save(session: AsyncSession, webhook: CustomerWebhook) -> None:
    await session.flush()
    await session.refresh(webhook)


async def remove(session: AsyncSession, webhook: CustomerWebhook) -> None:
    await session.delete(webhook)
    await session.flush()


async def resume(session: AsyncSession, webhook_id: int) -> None:
    """An endpoint's pending events due now, and a worker told (at commit)."""
    await session.execute(
        update(Dispatch)
        .where(Dispatch.webhook_id == webhook_id, Dispatch.status == DispatchStatus.PENDING)
        .values(next_attempt_at=func.now())
    )
    await notify(session, webhook_id)


async def notify(session: AsyncSession, webhook_id: int) -> None:
    """Wake the workers for this endpoint once the transaction commits."""
    await session.execute(_NOTIFY, {"webhook_id": str(webhook_id)})


async def queue(
    session: AsyncSession,
    webhook_id: int,
    event_type: str,
    event_id: int | None,
    test_data: dict[str, Any] | None,
) -> Dispatch:
    """One more event for this endpoint (a test, or a redelivery), after those queued."""
    dispatch = Dispatch(
        webhook_id=webhook_id, event_type=event_type, event_id=event_id, test_data=test_data
    )
    session.add(dispatch)
    await session.flush()
    await notify(session, webhook_id)
    return dispatch


async def event_exists(session: AsyncSession, event_id: int) -> bool:
    return bool(await session.scalar(select(exists().where(CustomerEvent.id == event_id))))


async def page_of_attempts(
    session: AsyncSession, webhook_id: int, page: PageParams
) -> tuple[list[DispatchAttempt], int]:
    """The endpoint's delivery log, newest first."""
    return await fetch_page(
        session,
        DispatchAttempt,
        [DispatchAttempt.webhook_id == webhook_id],
        [DispatchAttempt.id.desc()],
        page,
        None,
    )


async def find_attempt(
    session: AsyncSession, webhook_id: int, attempt_id: int
) -> tuple[DispatchAttempt, Dispatch | None] | None:
    """An attempt of this endpoint, and its dispatch if its event is still kept."""
    attempt = await session.scalar(
        select(DispatchAttempt).where(
            DispatchAttempt.id == attempt_id, DispatchAttempt.webhook_id == webhook_id
        )
    )
    if attempt is None:
        return None
    return attempt, await session.get(Dispatch, attempt.dispatch_id)


# -- The dispatcher (the worker's engine) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Head:
    """An endpoint's next event to send, with what sending it takes."""

    dispatch_id: int
    webhook_id: int
    event_id: int | None
    event_type: str
    test_data: dict[str, Any] | None
    attempts: int
    # Seconds until it is due (zero or less: due now), by the database's clock.
    wait_seconds: float
    event_data: dict[str, Any] | None
    event_created_at: datetime | None
    message_id: int | None
    url: str
    secret_encrypted: str
    enabled: bool


async def take_lease(engine: AsyncEngine, webhook_id: int, owner: int, lease: timedelta) -> bool:
    """The endpoint is this worker's to send for `lease`, unless another worker's lease is
    live."""
    async with engine.begin() as connection:
        taken = await connection.execute(
            update(CustomerWebhook)
            .where(
                CustomerWebhook.id == webhook_id,
                or_(
                    CustomerWebhook.lease_until.is_(None),
                    CustomerWebhook.lease_until < func.now(),
                    CustomerWebhook.lease_owner == owner,
                ),
            )
            # Not a change of the endpoint: updated_at stays.
            .values(
                lease_owner=owner,
                lease_until=func.now() + lease,
                updated_at=CustomerWebhook.updated_at,
            )
        )
    return taken.rowcount > 0


async def release_lease(engine: AsyncEngine, webhook_id: int, owner: int) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            update(CustomerWebhook)
            .where(CustomerWebhook.id == webhook_id, CustomerWebhook.lease_owner == owner)
            .values(lease_owner=None, lease_until=None, updated_at=CustomerWebhook.updated_at)
        )


async def heads(engine: AsyncEngine, webhook_id: int, limit: int) -> list[Head]:
    """The endpoint's next pending events, oldest first."""
    statement = (
        select(
            Dispatch.id,
            Dispatch.webhook_id,
            Dispatch.event_id,
            Dispatch.event_type,
            Dispatch.test_data,
            Dispatch.attempts,
            func.extract("epoch", Dispatch.next_attempt_at - func.now()),
            CustomerEvent.data,
            CustomerEvent.created_at,
            CustomerEvent.message_id,
            CustomerWebhook.url,
            CustomerWebhook.secret_encrypted,
            CustomerWebhook.enabled,
        )
        .join(CustomerWebhook, CustomerWebhook.id == Dispatch.webhook_id)
        .outerjoin(CustomerEvent, CustomerEvent.id == Dispatch.event_id)
        .where(Dispatch.webhook_id == webhook_id, Dispatch.status == DispatchStatus.PENDING)
        .order_by(Dispatch.id)
        .limit(limit)
    )
    async with engine.connect() as connection:
        rows = await connection.execute(statement)
        return [
            Head(row[0], row[1], row[2], row[3], row[4], row[5], float(row[6]), *row[7:])
            for row in rows
        ]


async def message_row(engine: AsyncEngine, message_id: int) -> MessageRow | None:
    async with engine.connect() as connection:
        row = (
            await connection.execute(select(Message.__table__).where(Message.id == message_id))
        ).one_or_none()
    return None if row is None else MessageRow(**row._mapping)


async def freeze(engine: AsyncEngine, event_id: int, data: dict[str, Any]) -> None:
    """The data an event's first dispatch rendered, kept as the event's (unless an erasure
    or another dispatch wrote it first)."""
    async with engine.begin() as connection:
        await connection.execute(
            update(CustomerEvent)
            .where(CustomerEvent.id == event_id, ~CustomerEvent.data.has_key("message"))
            .values(data=data)
        )


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one POST came to."""

    attempted_at: datetime
    success: bool
    response_status: int | None
    response_excerpt: str | None
    error: str | None
    duration_ms: int


async def record_attempt(
    engine: AsyncEngine,
    head: Head,
    event_public_id: str,
    result: AttemptResult,
    retry_after: timedelta | None,
    disable_after: int,
) -> str | None:
    """Log an attempt, and move its event on: delivered, due again after `retry_after`, or
    failed (None); the endpoint's run of failures too. The reason the endpoint was disabled
    by this failure, if it was."""
    attempt = head.attempts + 1
    async with engine.begin() as connection:
        await connection.execute(
            insert(DispatchAttempt).values(
                webhook_id=head.webhook_id,
                dispatch_id=head.dispatch_id,
                event_public_id=event_public_id,
                event_type=head.event_type,
                attempt_number=attempt,
                response_status=result.response_status,
                success=result.success,
                response_excerpt=result.response_excerpt,
                error=result.error,
                duration_ms=result.duration_ms,
                attempted_at=result.attempted_at,
            )
        )
        dispatch = update(Dispatch).where(
            Dispatch.id == head.dispatch_id, Dispatch.status == DispatchStatus.PENDING
        )
        if result.success:
            await connection.execute(
                dispatch.values(attempts=attempt, status=DispatchStatus.DELIVERED)
            )
            await connection.execute(
                update(CustomerWebhook)
                .where(CustomerWebhook.id == head.webhook_id)
                .values(consecutive_failures=0, updated_at=CustomerWebhook.updated_at)
            )
            return None
        await connection.execute(
            dispatch.values(
                attempts=attempt,
                status=DispatchStatus.FAILED if retry_after is None else DispatchStatus.PENDING,
                next_attempt_at=func.now() + (retry_after or timedelta()),
            )
        )
        failures, enabled = (
            await connection.execute(
                update(CustomerWebhook)
                .where(CustomerWebhook.id == head.webhook_id)
                .values(
                    consecutive_failures=CustomerWebhook.consecutive_failures + 1,
                    updated_at=CustomerWebhook.updated_at,
                )
                .returning(CustomerWebhook.consecutive_failures, CustomerWebhook.enabled)
            )
        ).one()
        if not enabled or failures < disable_after:
            return None
        reason = (
            f"Disabled after {failures} consecutive failed attempts; the last: {_outcome(result)}"
        )
        await connection.execute(
            update(CustomerWebhook)
            .where(CustomerWebhook.id == head.webhook_id)
            .values(enabled=False, disabled_reason=reason)
        )
    return reason


def _outcome(result: AttemptResult) -> str:
    if result.response_status is not None:
        return f"HTTP {result.response_status}"
    return result.error or "no answer"


async def due_webhooks(engine: AsyncEngine, limit: int) -> list[int]:
    """Enabled endpoints with an event due and no live lease: no worker is sending them."""
    async with engine.connect() as connection:
        rows = await connection.scalars(
            select(Dispatch.webhook_id)
            .join(CustomerWebhook, CustomerWebhook.id == Dispatch.webhook_id)
            .where(
                Dispatch.status == DispatchStatus.PENDING,
                Dispatch.next_attempt_at <= func.now(),
                CustomerWebhook.enabled,
                or_(
                    CustomerWebhook.lease_until.is_(None),
                    CustomerWebhook.lease_until < func.now(),
                ),
            )
            .distinct()
            .limit(limit)
        )
        return list(rows.all())


async def prune(engine: AsyncEngine, older_than: timedelta, limit: int) -> int:
    """Delete up to `limit` events older than `older_than` that no endpoint still has to be
    sent (their dispatches go with them; the delivery log stays), and test dispatches as
    old. How many events."""
    async with engine.begin() as connection:
        old = (
            select(CustomerEvent.id)
            .where(
                CustomerEvent.created_at < func.now() - older_than,
                ~exists().where(
                    Dispatch.event_id == CustomerEvent.id,
                    Dispatch.status == DispatchStatus.PENDING,
                ),
            )
            .limit(limit)
            .scalar_subquery()
        )
        pruned = await connection.execute(delete(CustomerEvent).where(CustomerEvent.id.in_(old)))
        await connection.execute(
            delete(Dispatch).where(
                Dispatch.event_id.is_(None),
                Dispatch.status != DispatchStatus.PENDING,
                Dispatch.created_at < func.now() - older_than,
            )
        )
    return pruned.rowcount
