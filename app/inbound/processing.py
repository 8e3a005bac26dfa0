"""The worker side of Meta's webhooks: split a stored delivery into events, then apply each
chat's events in timestamp order.

Dedupe: an event is stored once, keyed by what identifies it across redeliveries (its kind
and mid, plus the timestamp for repeatable kinds such as reads and reactions).
Ordering: a chat's open events are applied oldest first under a per-chat lock, so two
workers never interleave one chat. An event about a message not stored yet stays `waiting`
and is retried whenever that chat's events run again (the missing message usually arrives
in the same or the next delivery).
Recovery: a delivery or event left unprocessed (a lost job, a crash) is picked up by the
sweep.
"""

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import session_scope
from app.core.settings import Settings
from app.inbound import service
from app.inbound.models import OPEN_EVENT_STATUSES, InboundEvent, WebhookDelivery
from app.inbound.parsing import Event, Parsed, parse_payload
from app.inbound.service import Context, Outcome
from app.participants import service as participants
from app.profiles.models import Profile

log = logging.getLogger(__name__)

# Kinds whose event stores a message, which waiting events may be about.
STORES_MESSAGE = frozenset({"message", "postback", "echo"})
# A waiting event whose message has not come in this long never will (it predates dmrelay).
WAITING_LIMIT = timedelta(days=7)
# Younger than this, a delivery or event still has the job that was enqueued for it.
SWEEP_GRACE = timedelta(seconds=10)
SWEEP_BATCH = 200


def delivery_job_id(delivery_id: int) -> str:
    return f"webhook:{delivery_id}"


def parse_body(body: str) -> Parsed:
    try:
        payload = json.loads(body)
    except ValueError:
        return Parsed(problems=["the body is not JSON"])
    return parse_payload(payload)


class InboundProcessor:
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, redis: Any
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.redis = redis

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        async for session in session_scope(self.sessionmaker, self.redis):
            yield session

    async def process_delivery(self, delivery_id: int) -> None:
        async with self._transaction() as session:
            delivery = await session.get(WebhookDelivery, delivery_id, with_for_update=True)
            if delivery is None or delivery.status != "received":
                return
            parsed = parse_body(delivery.body)
            if parsed.events:
                await session.execute(
                    insert(InboundEvent)
                    .values([_row(delivery_id, event) for event in parsed.events])
                    .on_conflict_do_nothing(index_elements=["account_id", "dedupe_key"])
                )
            delivery.status = "unparseable" if parsed.problems else "processed"
            delivery.problems = parsed.problems or None
            delivery.processed_at = func.now()
        for problem in parsed.problems:
            log.warning("webhook delivery %s: %s", delivery_id, problem)
        for account_id, participant_id in dict.fromkeys(
            (e.account_id, e.participant_id) for e in parsed.events
        ):
            await self.apply_chat(account_id, participant_id)

    async def apply_chat(self, account_id: str, participant_id: str) -> None:
        """Apply a chat's open events. A failure leaves them open for the sweep."""
        try:
            async with self._transaction() as session:
                await self._apply_chat(session, account_id, participant_id)
        except Exception:
            log.exception("applying events of chat %s/%s failed", account_id, participant_id)

    async def _apply_chat(
        self, session: AsyncSession, account_id: str, participant_id: str
    ) -> None:
        lock_key = func.hashtextextended(f"inbound:{account_id}:{participant_id}", 0)
        await session.execute(select(func.pg_advisory_xact_lock(lock_key)))
        open_events = list(
            await session.scalars(
                select(InboundEvent)
                .where(
                    InboundEvent.account_id == account_id,
                    InboundEvent.participant_id == participant_id,
                    InboundEvent.status.in_(OPEN_EVENT_STATUSES),
                )
                .order_by(InboundEvent.occurred_at, InboundEvent.id)
            )
        )
        if not open_events:
            return
        profile = await session.scalar(select(Profile).where(Profile.platform_id == account_id))
        if profile is None:
            log.warning("webhook events for unknown Instagram account %s ignored", account_id)
            for row in open_events:
                row.status = "ignored"
                row.error = f"no connected profile has Instagram account id {account_id}"
            return
        chat = await service.chat_for(session, profile, participant_id)
        context = Context(session, self.settings, profile, chat)
        rows = open_events
        while rows:
            waiting, stored_message = [], False
            for row in rows:
                outcome = await self._apply_event(context, row)
                if outcome is Outcome.WAITING:
                    waiting.append(row)
                stored_message |= outcome is Outcome.APPLIED and row.kind in STORES_MESSAGE
            # A message stored in this pass may be what an earlier-stamped event waited for.
            rows = waiting if stored_message else []
        participants.refresh_if_stale(session, chat, self.settings)

    async def _apply_event(self, context: Context, row: InboundEvent) -> Outcome | None:
        event = Event(
            kind=row.kind,
            account_id=row.account_id,
            participant_id=row.participant_id,
            occurred_at=row.occurred_at,
            mid=row.mid,
            dedupe_key=row.dedupe_key,
            item=row.payload,
        )
        try:
            # A savepoint: an event that fails is kept as failed and the rest still apply.
            async with context.session.begin_nested():
                outcome = await service.apply(context, event)
        except Exception as error:
            log.exception("webhook event %s (%s) could not be applied", row.id, row.dedupe_key)
            await context.session.refresh(context.chat)
            row.status, row.error = "failed", f"{type(error).__name__}: {error}"
            return None
        if outcome is Outcome.WAITING and datetime.now(UTC) - row.created_at > WAITING_LIMIT:
            row.status, row.error = "ignored", f"message {row.mid} never arrived"
            return None
        row.status = outcome.value
        if outcome is not Outcome.WAITING:
            row.applied_at = func.now()
        return outcome

    async def sweep(self) -> None:
        async with self.sessionmaker() as session:
            cutoff = func.now() - SWEEP_GRACE
            deliveries = await session.scalars(
                select(WebhookDelivery.id)
                .where(WebhookDelivery.status == "received", WebhookDelivery.received_at < cutoff)
                .order_by(WebhookDelivery.id)
                .limit(SWEEP_BATCH)
            )
            chats = await session.execute(
                select(InboundEvent.account_id, InboundEvent.participant_id)
                .where(InboundEvent.status == "pending", InboundEvent.created_at < cutoff)
                .group_by(InboundEvent.account_id, InboundEvent.participant_id)
                .limit(SWEEP_BATCH)
            )
            delivery_ids, chat_keys = list(deliveries), list(chats)
        for delivery_id in delivery_ids:
            await self.process_delivery(delivery_id)
        for account_id, participant_id in chat_keys:
            await self.apply_chat(account_id, participant_id)


def _row(delivery_id: int, event: Event) -> dict[str, Any]:
    return {
        "delivery_id": delivery_id,
        "account_id": event.account_id,
        "participant_id": event.participant_id,
        "kind": event.kind,
        "mid": event.mid,
        "dedupe_key": event.dedupe_key,
        "occurred_at": event.occurred_at,
        "payload": event.item,
    }
