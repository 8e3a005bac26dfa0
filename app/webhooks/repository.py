"""Every query of customer webhooks: the endpoints (in the caller's session), and the outbox
and its delivery log (the dispatcher's, each statement or transaction on its own
connection of the worker's engine)."""

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import delete, exists, func, or_, select, text, update
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


# -- The dispatcher (raw asyncpg on the worker's driver pool: its hot path) ------------------


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


# Not a change of the endpoint: updated_at stays.
_TAKE_LEASE = """
UPDATE customer_webhooks SET lease_owner = $2, lease_until = now() + $3::interval
WHERE id = $1 AND (lease_until IS NULL OR lease_until < now() OR lease_owner = $2)
RETURNING id
"""
_RELEASE_LEASE = """
UPDATE customer_webhooks SET lease_owner = NULL, lease_until = NULL
WHERE id = $1 AND lease_owner = $2
"""
_HEADS = f"""
SELECT d.id, d.webhook_id, d.event_id, d.event_type, d.test_data::text, d.attempts,
    extract(epoch FROM d.next_attempt_at - now())::float8, e.data::text, e.created_at,
    e.message_id, w.url, w.secret_encrypted, w.enabled
FROM customer_webhook_dispatches d
JOIN customer_webhooks w ON w.id = d.webhook_id
LEFT JOIN customer_events e ON e.id = d.event_id
WHERE d.webhook_id = $1 AND d.status = '{DispatchStatus.PENDING}'
ORDER BY d.id
LIMIT $2
"""
# A failed attempt in one statement: logged, its dispatch moved on (pending again after
# $11; failed when $11 is NULL), the endpoint's run of failures one longer, and the endpoint
# disabled when that makes the run $12 long. Answers the reason when it did. (Successes:
# _RECORD_DELIVERED.)
_RECORD_FAILURE = f"""
WITH logged AS (
    INSERT INTO customer_webhook_attempts (webhook_id, dispatch_id, event_public_id,
        event_type, attempt_number, response_status, success, response_excerpt, error,
        duration_ms, attempted_at)
    VALUES ($1, $2, $3, $4, $5, $6, false, $7, $8, $9, $10)
), moved AS (
    UPDATE customer_webhook_dispatches
    SET attempts = $5,
        status = CASE WHEN $11::interval IS NULL THEN '{DispatchStatus.FAILED}'
            ELSE '{DispatchStatus.PENDING}' END,
        next_attempt_at = CASE WHEN $11::interval IS NULL THEN next_attempt_at
            ELSE now() + $11::interval END
    WHERE id = $2 AND status = '{DispatchStatus.PENDING}'
), counted AS (
    UPDATE customer_webhooks w
    SET consecutive_failures = w.consecutive_failures + 1,
        enabled = w.enabled AND w.consecutive_failures + 1 < $12,
        disabled_reason = CASE
            WHEN w.enabled AND w.consecutive_failures + 1 >= $12
            THEN format('Disabled after %s consecutive failed attempts; the last: %s',
                w.consecutive_failures + 1, $13::text)
            ELSE w.disabled_reason END,
        updated_at = CASE WHEN w.enabled AND w.consecutive_failures + 1 >= $12
            THEN now() ELSE w.updated_at END
    WHERE w.id = $1
    RETURNING w.enabled, w.disabled_reason, w.consecutive_failures
)
SELECT disabled_reason FROM counted WHERE NOT enabled AND consecutive_failures = $12
"""

# Successful attempts, of several endpoints, in one statement (one commit): each logged, its
# dispatch delivered, its endpoint's run of failures ended (no row written for an endpoint
# with none). An endpoint's attempts come in the order they were made.
_RECORD_DELIVERED = f"""
WITH attempt AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::int[],
        $6::int[], $7::text[], $8::int[], $9::timestamptz[]) WITH ORDINALITY
        AS a(webhook_id, dispatch_id, event_public_id, event_type, attempt_number,
            response_status, response_excerpt, duration_ms, attempted_at, n)
), logged AS (
    INSERT INTO customer_webhook_attempts (webhook_id, dispatch_id, event_public_id,
        event_type, attempt_number, response_status, success, response_excerpt, error,
        duration_ms, attempted_at)
    SELECT webhook_id, dispatch_id, event_public_id, event_type, attempt_number,
        response_status, true, response_excerpt, NULL, duration_ms, attempted_at
    FROM attempt ORDER BY n
), moved AS (
    UPDATE customer_webhook_dispatches d
    SET attempts = a.attempt_number, status = '{DispatchStatus.DELIVERED}'
    FROM attempt a
    WHERE d.id = a.dispatch_id AND d.status = '{DispatchStatus.PENDING}'
)
UPDATE customer_webhooks SET consecutive_failures = 0
WHERE id IN (SELECT webhook_id FROM attempt) AND consecutive_failures <> 0
"""


async def take_lease(db: asyncpg.Pool, webhook_id: int, owner: int, lease: timedelta) -> bool:
    """The endpoint is this worker's to send for `lease`, unless another worker's lease is
    live."""
    return await db.fetchval(_TAKE_LEASE, webhook_id, owner, lease) is not None


async def release_lease(db: asyncpg.Pool, webhook_id: int, owner: int) -> None:
    await db.execute(_RELEASE_LEASE, webhook_id, owner)


async def heads(db: asyncpg.Pool, webhook_id: int, limit: int) -> list[Head]:
    """The endpoint's next pending events, oldest first."""
    rows = await db.fetch(_HEADS, webhook_id, limit)
    return [
        Head(
            row[0],
            row[1],
            row[2],
            row[3],
            None if row[4] is None else json.loads(row[4]),
            row[5],
            row[6],
            None if row[7] is None else json.loads(row[7]),
            *row[8:],
        )
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

    @property
    def outcome(self) -> str:
        if self.response_status is not None:
            return f"HTTP {self.response_status}"
        return self.error or "no answer"


async def record_failure(
    db: asyncpg.Pool,
    head: Head,
    event_public_id: str,
    result: AttemptResult,
    retry_after: timedelta | None,
    disable_after: int,
) -> str | None:
    """Log a failed attempt, and move its event on: due again after `retry_after`, or failed
    (None); the endpoint's run of failures too. The reason the endpoint was disabled by this
    failure, if it was. Raises asyncpg.ForeignKeyViolationError if the endpoint was deleted
    meanwhile."""
    disabled: str | None = await db.fetchval(
        _RECORD_FAILURE,
        head.webhook_id,
        head.dispatch_id,
        event_public_id,
        head.event_type,
        head.attempts + 1,
        result.response_status,
        result.response_excerpt,
        result.error,
        result.duration_ms,
        result.attempted_at,
        retry_after,
        disable_after,
        result.outcome,
    )
    return disabled


@dataclass(frozen=True, slots=True)
class Delivered:
    """A successful attempt, to record (`record_delivered`)."""

    head: Head
    event_public_id: str
    result: AttemptResult


async def record_delivered(db: asyncpg.Pool, delivered: list[Delivered]) -> None:
    """Log successful attempts, of any endpoints, and move their events on (delivered), in
    one statement. Raises
    asyncpg.ForeignKeyViolationError if an endpoint was deleted meanwhile (nothing is
    recorded then)."""
    await db.execute(
        _RECORD_DELIVERED,
        [d.head.webhook_id for d in delivered],
        [d.head.dispatch_id for d in delivered],
        [d.event_public_id for d in delivered],
        [d.head.event_type for d in delivered],
        [d.head.attempts + 1 for d in delivered],
        [d.result.response_status for d in delivered],
        [d.result.response_excerpt for d in delivered],
        [d.result.duration_ms for d in delivered],
        [d.result.attempted_at for d in delivered],
    )


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
