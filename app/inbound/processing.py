"""The worker side of Meta's webhooks: split stored deliveries into events, then apply each
chat's events in timestamp order.

Dedupe: an event is stored once, keyed by what identifies it across redeliveries (its kind
and mid, plus the timestamp for repeatable kinds such as reads and reactions).
Ordering: a chat's open events are applied oldest first under a per-chat lock, so two
workers never interleave one chat. An event about a message not stored yet stays `waiting`
and is retried whenever that chat's events run again (the missing message usually arrives
in the same or the next delivery).
Batching: the deliveries whose jobs come in together are split in one transaction, and their
chats applied in another: a few statements for the lot rather than a dozen per event. The
apply takes what the split knows from memory (see Known): it reads back only the payloads of
the chats' other open events (reading and decoding every payload again would be wasted work),
and looks up no chat the split found.
Applied as split: most chats hear only new messages and have no open events. The split
applies those itself, under their locks, and stages nothing for them: a message's mid is
unique in its profile, so `messages` dedupes it as `inbound_events` would have (storing each
event, then its outcome, is costly). Should that fail, the deliveries are split
again with every event staged. Chats with events other than new messages (see
InboundProcessor._apply_chats), and all of them if applying them together fails, are applied
a chat per transaction instead, with a savepoint per event if need be, so that an event that
fails is kept as failed and the others still apply.
Recovery: a delivery left unprocessed gets its job again from the sweep, which enqueues it
under the job's own id: a job still queued behind a backlog is not doubled, a lost one (Redis
flushed) is replaced. Events left pending (a crash between split and apply) are applied by
the sweep.
"""

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import groupby
from typing import Any

from sqlalchemy import BigInteger, Boolean, Text, any_, case, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.chats.models import Chat
from app.core import sql
from app.core.db import session_scope
from app.core.jobs import JobName, enqueue_each_first_free
from app.core.settings import Settings
from app.events import service as customer_events
from app.inbound import service
from app.inbound.models import (
    OPEN_EVENT_STATUSES,
    InboundEvent,
    InboundEventStatus,
    WebhookDelivery,
)
from app.inbound.parsing import Event, Parsed, parse_payload
from app.inbound.service import ChatKey, Context, Outcome
from app.participants import service as participants

log = logging.getLogger(__name__)

# Outcomes after which an event's payload is dropped.
SETTLED_EVENT_STATUSES = (InboundEventStatus.APPLIED, InboundEventStatus.IGNORED)
# Kinds whose event stores a message, which waiting events may be about.
STORES_MESSAGE = frozenset({"message", "postback", "echo"})
# A waiting event whose message has not come in this long never will (it predates dmrelay).
WAITING_LIMIT = timedelta(days=7)
# Younger than this, a delivery or event still has the job that was enqueued for it.
SWEEP_GRACE = timedelta(seconds=10)
SWEEP_BATCH = 200
# At most this many deliveries per batch. One batch runs at a time: the jobs that come in
# meanwhile make the next one (batches run side by side would each be smaller).
BATCH_DELIVERIES = 100

EVENT_COLUMNS = (
    "delivery_id",
    "account_id",
    "participant_id",
    "kind",
    "mid",
    "dedupe_key",
    "occurred_at",
    "payload",
)


def delivery_job_id(delivery_id: int) -> str:
    return f"webhook:{delivery_id}"


def parse_body(body: str) -> Parsed:
    try:
        payload = json.loads(body)
        if "\\u0000" in body:  # the only way JSON carries U+0000; rare, so the walk is too
            payload = _without_nul(payload)
    except ValueError:
        return Parsed(problems=["the body is not JSON"])
    except RecursionError:
        # No Meta payload nests deeper than a few levels; reading one that does would fail
        # the same way at every try, and the delivery would never leave `received`.
        return Parsed(problems=["the body's JSON is nested too deeply to read"])
    return parse_payload(payload)


def _without_nul(value: Any) -> Any:
    """U+0000 as U+FFFD, the replacement character: PostgreSQL's text and jsonb cannot hold
    it, and a delivery that carried one could never be stored."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    return value


@dataclass(frozen=True)
class Known:
    """What a split hands on to the apply, which need not read it back: the events it stored,
    by id, and the ids of the chats they are about."""

    events: Mapping[int, Event] = field(default_factory=dict)
    chat_ids: Mapping[ChatKey, int] = field(default_factory=dict)


@dataclass
class OpenEvent:
    """An open inbound event, and what applying it came to."""

    id: int | None  # None: applied as split, never stored
    created_at: datetime
    event: Event
    status: str
    error: str | None = None
    applied: bool = False  # its applied_at is due

    def record(self, outcome: Outcome) -> None:
        if outcome is Outcome.WAITING and datetime.now(UTC) - self.created_at > WAITING_LIMIT:
            self.status, self.error = "ignored", f"message {self.event.mid} never arrived"
            return
        self.status, self.applied = outcome.value, outcome is not Outcome.WAITING

    def fail(self, status: str, error: str) -> None:
        self.status, self.error = status, error


@dataclass
class ChatRun:
    """One chat's open events, applied oldest first. A pass that stores a message may be what
    the waiting ones were waiting for: they then get another pass."""

    context: Context
    queue: deque[OpenEvent]
    waiting: list[OpenEvent] = field(default_factory=list)
    stored_message: bool = False

    def take(self, many: bool) -> list[OpenEvent]:
        """The next event, or with `many` the next events if they can be stored together."""
        taken = [self.queue.popleft()]
        if many and taken[0].event.kind in service.BULK_KINDS:
            while self.queue and self.queue[0].event.kind in service.BULK_KINDS:
                taken.append(self.queue.popleft())
        return taken

    def record(self, row: OpenEvent, outcome: Outcome) -> None:
        row.record(outcome)
        if row.status == Outcome.WAITING:
            self.waiting.append(row)
        self.stored_message |= row.status == Outcome.APPLIED and row.event.kind in STORES_MESSAGE

    def end_of_round(self) -> None:
        if not self.queue and self.stored_message:
            self.queue, self.waiting, self.stored_message = deque(self.waiting), [], False


class InboundProcessor:
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, redis: Any
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.redis = redis
        self._queued: list[tuple[int, asyncio.Future[None]]] = []
        self._batching = asyncio.Lock()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        async for session in session_scope(self.sessionmaker, self.redis):
            yield session

    async def process_delivery(self, delivery_id: int) -> None:
        """The job of one delivery. The deliveries queued meanwhile are processed together by
        whichever of their jobs takes the lock first; the others then find theirs done."""
        done = asyncio.get_running_loop().create_future()
        self._queued.append((delivery_id, done))
        async with self._batching:
            while not done.done():
                batch = self._queued[:BATCH_DELIVERIES]
                del self._queued[:BATCH_DELIVERIES]
                await self._process_batch(batch)

    async def _process_batch(self, batch: list[tuple[int, asyncio.Future[None]]]) -> None:
        try:
            await self.process_deliveries([delivery_id for delivery_id, _ in batch])
        finally:
            # Even if cancelled (the worker stopping; the sweep takes the deliveries up again),
            # no job is left waiting.
            for _, done in batch:
                done.set_result(None)

    async def process_deliveries(self, delivery_ids: list[int], as_split: bool = True) -> None:
        """Split deliveries and apply their chats, those that can be as they are split. A
        delivery whose events PostgreSQL refuses is kept as `unparseable`, saying why; one
        that cannot be split for another reason (logged) stays `received`, for the sweep. One
        bad delivery does not hold up the others."""
        try:
            chats, known = await self._split(delivery_ids, as_split)
        except Exception as error:
            if as_split:
                log.warning(
                    "applying %d deliveries as split failed (%r); staging their events",
                    len(delivery_ids),
                    error,
                )
                await self.process_deliveries(delivery_ids, as_split=False)
                return
            if len(delivery_ids) == 1:
                [delivery_id] = delivery_ids
                if refusal := _refusal(error):
                    log.error("webhook delivery %s kept as unparseable: %s", delivery_id, refusal)
                    await self._keep_unparseable(delivery_id, refusal)
                else:
                    log.exception("webhook delivery %s could not be split", delivery_id)
                return
            log.warning("splitting %d deliveries together failed; one by one", len(delivery_ids))
            for delivery_id in delivery_ids:
                await self.process_deliveries([delivery_id], as_split=False)
            return
        await self.apply_chats(chats, known)

    async def _keep_unparseable(self, delivery_id: int, problem: str) -> None:
        async with self._transaction() as session:
            await session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "received")
                .values(status="unparseable", problems=[problem], processed_at=func.now())
            )

    async def _split(self, delivery_ids: list[int], as_split: bool) -> tuple[set[ChatKey], Known]:
        """Store the events of those deliveries still to split, applying (with `as_split`) the
        chats that need no staging; the chats left to apply, and what the split knows of them
        (the events it stored, not those stored before)."""
        async with self._transaction() as session:
            # Marked processed as they are read, their bodies dropped: what they said is then
            # in the events and the rows those change, and nowhere else, so that an unsend
            # can erase it. Any found unparseable are corrected (bodies kept) below. One being
            # split by another worker is skipped: that worker finishes it.
            table = WebhookDelivery.__table__
            claimed = (
                select(table.c.id, table.c.body)
                .where(
                    table.c.id == any_(sql.array(delivery_ids, BigInteger())),
                    table.c.status == "received",
                )
                .order_by(table.c.id)
                .with_for_update(skip_locked=True)
                .subquery()
            )
            bodies = dict(
                (
                    await session.execute(
                        update(table)
                        .where(table.c.id == claimed.c.id)
                        .values(status="processed", processed_at=func.now(), body=None)
                        .returning(table.c.id, claimed.c.body)
                    )
                ).all()
            )
            parsed = {delivery_id: parse_body(body) for delivery_id, body in bodies.items()}
            events = [(delivery_id, e) for delivery_id, p in parsed.items() for e in p.events]
            chats = {(event.account_id, event.participant_id) for _, event in events}
            if as_split and chats:
                await session.execute(_lock(chats))
            # Created here, before any chat is applied: creating a chat locks its profile's
            # row until commit, which other transactions changing that profile wait for.
            chat_ids = await service.chats_of(session, chats) if chats else {}
            if as_split and chats:
                chats -= await self._apply_as_split(session, [e for _, e in events], chat_ids)
                events = [(d, e) for d, e in events if (e.account_id, e.participant_id) in chats]
            stored = {}
            if events:
                table = InboundEvent.__table__
                rows = [_row(delivery_id, event) for delivery_id, event in events]
                new = sql.rows_table(rows, {n: table.c[n].type for n in EVENT_COLUMNS})
                inserted = await session.execute(
                    insert(table)
                    .from_select(EVENT_COLUMNS, select(new))
                    .on_conflict_do_nothing(index_elements=["account_id", "dedupe_key"])
                    .returning(table.c.id, table.c.account_id, table.c.dedupe_key)
                )
                by_key = {(e.account_id, e.dedupe_key): e for _, e in events}
                stored = {id: by_key[account, key] for id, account, key in inserted}
            problems = {delivery_id: p.problems for delivery_id, p in parsed.items() if p.problems}
            if problems:
                await session.execute(
                    update(WebhookDelivery),
                    [
                        {
                            "id": delivery_id,
                            "status": "unparseable",
                            "problems": found,
                            "body": bodies[delivery_id],
                        }
                        for delivery_id, found in problems.items()
                    ],
                )
        for delivery_id, found in problems.items():
            for problem in found:
                log.warning("webhook delivery %s: %s", delivery_id, problem)
        return chats, Known(stored, chat_ids)

    async def apply_chats(self, chats: Collection[ChatKey], known: Known | None = None) -> None:
        """Apply these chats' open events: most together, in one transaction, the others (see
        _apply_chats) each in a transaction of its own."""
        known = known or Known()
        alone = list(chats)
        if len(alone) > 1:
            try:
                async with self._transaction() as session:
                    alone = await self._apply_chats(session, alone, known)
            except Exception as error:
                log.warning("applying %d chats together failed (%r); one by one", len(alone), error)
        for chat in alone:
            await self._apply_chat(chat, known)

    async def _apply_chat(self, chat: ChatKey, known: Known) -> None:
        """Apply one chat's events without savepoints, or if that fails, with one per event:
        an event that fails is kept as failed and the others still apply. A failure beyond
        that leaves the chat's events open, for the sweep."""
        try:
            async with self._transaction() as session:
                await self._apply_chats(session, [chat], known)
            return
        except Exception as error:
            log.warning("applying chat %s/%s failed (%r); event by event", *chat, error)
        try:
            async with self._transaction() as session:
                await self._apply_chats(session, [chat], known, careful=True)
        except Exception:
            log.exception("applying events of chat %s/%s failed", *chat)

    async def _apply_chats(
        self,
        session: AsyncSession,
        chats: Collection[ChatKey],
        known: Known,
        careful: bool = False,
    ) -> list[ChatKey]:
        """Apply these chats' open events in this transaction; the chats left to be applied
        alone. The delivery worker locks a chat's row, then its message's, for several chats
        at once: a transaction that applies several chats must not wait for a chat's row
        while it holds another, nor lock messages. So of several chats, only those whose
        events are all new messages, and whose row it can lock at once, are applied."""
        together = len(chats) > 1
        await session.execute(_lock(chats))
        by_chat = await _open_events(session, chats, known.events)
        alone = []
        if together:
            alone = [chat for chat, events in by_chat.items() if not _new_messages(events)]
            for chat in alone:
                del by_chat[chat]
        if not by_chat:
            return alone
        chat_ids = {chat: known.chat_ids[chat] for chat in by_chat if chat in known.chat_ids}
        if unknown := [chat for chat in by_chat if chat not in chat_ids]:
            chat_ids |= await service.chats_of(session, unknown)
        alone += await self._apply_events(session, by_chat, chat_ids, together, careful)
        await _store_outcomes(session, [row for events in by_chat.values() for row in events])
        return alone

    async def _apply_as_split(
        self, session: AsyncSession, events: list[Event], chat_ids: Mapping[ChatKey, int]
    ) -> set[ChatKey]:
        """Apply, in the split's transaction (which holds the chats' locks), the chats whose
        events are all new messages and that have no open events; the chats applied. Their
        events are not staged."""
        now = datetime.now(UTC)
        by_chat: dict[ChatKey, list[OpenEvent]] = {}
        for event in events:
            key = (event.account_id, event.participant_id)
            by_chat.setdefault(key, []).append(OpenEvent(None, now, event, "pending"))
        by_chat = {
            chat: sorted(rows, key=lambda row: row.event.occurred_at)
            for chat, rows in by_chat.items()
            if chat in chat_ids and _new_messages(rows)
        }
        for chat in await _with_open_events(session, by_chat) if by_chat else []:
            del by_chat[chat]
        if by_chat:
            await self._apply_events(session, by_chat, chat_ids, together=True, careful=False)
        return set(by_chat)

    async def _apply_events(
        self,
        session: AsyncSession,
        by_chat: dict[ChatKey, list[OpenEvent]],
        chat_ids: Mapping[ChatKey, int],
        together: bool,
        careful: bool,
    ) -> list[ChatKey]:
        """Apply these events, each chat's in order; the chats whose row was locked (only
        `together`), which are left out of `by_chat`."""
        alone = []
        wanted = [chat_ids[chat] for chat in by_chat if chat in chat_ids]
        locked = await session.scalars(
            select(Chat)
            .where(Chat.id == any_(sql.array(wanted, BigInteger())))
            .order_by(Chat.id)
            .with_for_update(key_share=True, skip_locked=together)
        )
        chat_by_id = {chat.id: chat for chat in locked}
        runs = []
        for (account_id, participant_id), events in list(by_chat.items()):
            chat_id = chat_ids.get((account_id, participant_id))
            if chat_id is None:
                log.warning("webhook events for unknown Instagram account %s ignored", account_id)
                for row in events:
                    row.fail(
                        "ignored", f"no connected profile has Instagram account id {account_id}"
                    )
            elif chat_id not in chat_by_id:
                alone.append((account_id, participant_id))
                del by_chat[(account_id, participant_id)]
            else:
                chat = chat_by_id[chat_id]
                context = Context(session, self.settings, chat.profile_id, chat)
                runs.append(ChatRun(context, deque(events)))
        # Rounds: each chat's next event, or its next messages together, so that chats keep
        # their own order while their messages are stored by one statement per round.
        pending = runs
        while pending:
            taken = [(run, row) for run in pending for row in run.take(many=not careful)]
            if careful:
                for one in taken:
                    await _apply_in_savepoint(session, one)
            else:
                await _apply(session, taken)
            for run in pending:
                run.end_of_round()
            pending = [run for run in pending if run.queue]
        await service.write_chat_times(session, [run.context.chat for run in runs])
        participants.refresh_if_stale(session, [run.context.chat for run in runs], self.settings)
        return alone

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
            delivery_ids, chat_keys = list(deliveries), [tuple(chat) for chat in chats]
        if delivery_ids:
            jobs = [
                ((delivery_id,), [delivery_job_id(delivery_id)]) for delivery_id in delivery_ids
            ]
            await enqueue_each_first_free(self.redis, JobName.PROCESS_WEBHOOK, jobs)
        await self.apply_chats(chat_keys)


def _new_messages(events: list[OpenEvent]) -> bool:
    return all(row.event.kind in service.BULK_KINDS for row in events)


async def _with_open_events(session: AsyncSession, chats: Collection[ChatKey]) -> list[ChatKey]:
    keys = service.chat_keys_table(chats)
    rows = await session.execute(
        select(keys.c.account_id, keys.c.participant_id).where(
            select(InboundEvent.id)
            .where(
                InboundEvent.account_id == keys.c.account_id,
                InboundEvent.participant_id == keys.c.participant_id,
                InboundEvent.status.in_(OPEN_EVENT_STATUSES),
            )
            .exists()
        )
    )
    return [(account, participant) for account, participant in rows]


async def _open_events(
    session: AsyncSession, chats: Collection[ChatKey], known: Mapping[int, Event]
) -> dict[ChatKey, list[OpenEvent]]:
    """The chats' open events, oldest first, by chat; those not `known` read in full."""
    keys = service.chat_keys_table(chats)
    result = await session.execute(
        select(
            InboundEvent.id,
            InboundEvent.account_id,
            InboundEvent.participant_id,
            InboundEvent.kind,
            InboundEvent.mid,
            InboundEvent.dedupe_key,
            InboundEvent.occurred_at,
            InboundEvent.status,
            InboundEvent.created_at,
        )
        .join(
            keys,
            (InboundEvent.account_id == keys.c.account_id)
            & (InboundEvent.participant_id == keys.c.participant_id),
        )
        .where(InboundEvent.status.in_(OPEN_EVENT_STATUSES))
        .order_by(
            InboundEvent.account_id,
            InboundEvent.participant_id,
            InboundEvent.occurred_at,
            InboundEvent.id,
        )
    )
    rows = result.all()
    payloads = await _payloads(session, [row.id for row in rows if row.id not in known])
    return {
        chat: [_open_event(row, known, payloads) for row in chat_rows]
        for chat, chat_rows in groupby(rows, lambda row: (row.account_id, row.participant_id))
    }


async def _payloads(session: AsyncSession, event_ids: list[int]) -> dict[int, Any]:
    if not event_ids:
        return {}
    rows = await session.execute(
        select(InboundEvent.id, InboundEvent.payload).where(
            InboundEvent.id == any_(sql.array(event_ids, BigInteger()))
        )
    )
    return dict(rows.all())


async def _apply(session: AsyncSession, taken: list[tuple[ChatRun, OpenEvent]]) -> None:
    """Apply events of different chats (or a chat's consecutive messages): the messages by
    one statement, the rest one by one."""
    bulk = [(run, row) for run, row in taken if row.event.kind in service.BULK_KINDS]
    if bulk:
        outcomes = await service.apply_messages(
            session, [(run.context, row.event) for run, row in bulk]
        )
        for (run, row), outcome in zip(bulk, outcomes, strict=True):
            run.record(row, outcome)
    for run, row in taken:
        if row.event.kind not in service.BULK_KINDS:
            run.record(row, await service.apply(run.context, row.event))


async def _apply_in_savepoint(session: AsyncSession, one: tuple[ChatRun, OpenEvent]) -> None:
    run, row = one
    try:
        async with session.begin_nested():
            await _apply(session, [one])
            await customer_events.write_recorded(session)
    except Exception as error:
        customer_events.discard_recorded(session)
        log.exception("webhook event %s (%s) could not be applied", row.id, row.event.dedupe_key)
        await session.refresh(run.context.chat)
        row.fail("failed", f"{type(error).__name__}: {error}")


def _refusal(error: Exception) -> str | None:
    """What PostgreSQL said, if it refused the data itself, which no retry would change: a
    data exception or a program limit (an index row too large). Not a constraint violation,
    which two workers racing could cause."""
    if not isinstance(error, DBAPIError):
        return None
    sqlstate = getattr(error.orig, "sqlstate", None) or ""
    if sqlstate[:2] not in ("22", "54"):
        return None
    cause = error.orig.__cause__ or error.orig
    return f"PostgreSQL refused to store its events: {cause}"


def _lock(chats: Collection[ChatKey]) -> Any:
    """Lock the chats for this transaction, in lock-key order in every worker, so that two
    transactions locking several chats never deadlock."""
    names = sql.array(
        [f"inbound:{account}:{participant}" for account, participant in chats], Text()
    )
    name = func.unnest(names).table_valued("name").render_derived()
    key = func.hashtextextended(name.c.name, 0).label("key")
    ordered = select(key).distinct().order_by(key).subquery()
    return select(func.pg_advisory_xact_lock(ordered.c.key))


async def _store_outcomes(session: AsyncSession, rows: list[OpenEvent]) -> None:
    outcomes = sql.rows_table(
        [
            {"id": row.id, "status": row.status, "error": row.error, "applied": row.applied}
            for row in rows
        ],
        {"id": BigInteger(), "status": Text(), "error": Text(), "applied": Boolean()},
    )
    await session.execute(
        update(InboundEvent.__table__)
        .where(InboundEvent.id == outcomes.c.id)
        .values(
            status=outcomes.c.status,
            error=outcomes.c.error,
            applied_at=case((outcomes.c.applied, func.now()), else_=InboundEvent.applied_at),
            # Settled, an event's payload is no longer needed (what it said is in the rows it
            # changed, which an unsend erases); an open or failed one keeps it.
            payload=case(
                (outcomes.c.status.in_(SETTLED_EVENT_STATUSES), None),
                else_=InboundEvent.payload,
            ),
        )
    )


def _open_event(row: Any, known: Mapping[int, Event], payloads: dict[int, Any]) -> OpenEvent:
    event = known.get(row.id) or Event(
        kind=row.kind,
        account_id=row.account_id,
        participant_id=row.participant_id,
        occurred_at=row.occurred_at,
        mid=row.mid,
        dedupe_key=row.dedupe_key,
        item=payloads[row.id],
    )
    return OpenEvent(row.id, row.created_at, event, row.status)


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
