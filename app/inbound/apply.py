"""The pipeline's apply step: each chat's open events, oldest first, through the appliers
(service.py), in a transaction that holds the chat's lock and its row's.

A chat's events run as a ChatRun. Chats run side by side in rounds (each chat's next event,
or its next new messages together), so that each keeps its own order while the messages of
them all are stored by one statement a round. An event about a message not stored yet stays
`waiting`; a round that stores a message gives the waiting ones another pass, and any left
are tried again whenever the chat's events run again, until WAITING_LIMIT. How much one
transaction takes on is its ApplyMode (pipeline.py falls back from one to the next).
"""

import logging
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from itertools import groupby
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.settings import Settings
from app.events import service as customer_events
from app.inbound import repository, service
from app.inbound.models import EventKind, InboundEventStatus, Outcome
from app.inbound.parsing import ChatKey, Event
from app.inbound.repository import OpenEventRow
from app.inbound.service import Context
from app.participants import service as participants

log = logging.getLogger(__name__)

# Kinds whose event stores a message, which waiting events may be about.
STORES_MESSAGE = frozenset({EventKind.MESSAGE, EventKind.POSTBACK, EventKind.ECHO})
# A waiting event whose message has not come in this long never will (it predates dmrelay).
WAITING_LIMIT = timedelta(days=7)


class ApplyMode(Enum):
    """How much one transaction applies."""

    # Several chats. The worker sending messages locks a chat's row, then its message's,
    # for several chats at once: a transaction applying several chats must not wait for a
    # chat's row while it holds another, nor lock messages. So only chats whose events are
    # all new messages are applied, and of those only the ones whose row is free at once;
    # the others are left to be applied alone.
    TOGETHER = "together"
    # One chat.
    ALONE = "alone"
    # One chat, a savepoint per event: an event that fails is kept as failed, and the
    # others still apply.
    EVENT_BY_EVENT = "event by event"


@dataclass(frozen=True)
class Known:
    """What a split hands on to the apply, which need not read it back: the events it staged,
    by id, and the ids of the chats they are about."""

    events: Mapping[int, Event] = field(default_factory=dict)
    chat_ids: Mapping[ChatKey, int] = field(default_factory=dict)


@dataclass
class OpenEvent:
    """An open inbound event, and what applying it came to."""

    id: int | None  # None: applied as split, never staged
    created_at: datetime
    event: Event
    status: InboundEventStatus
    error: str | None = None
    applied: bool = False  # its applied_at is due

    def record(self, outcome: Outcome) -> None:
        if outcome is Outcome.WAITING and datetime.now(UTC) - self.created_at > WAITING_LIMIT:
            self.status = InboundEventStatus.IGNORED
            self.error = f"message {self.event.mid} never arrived"
            return
        self.status, self.applied = outcome.status, outcome is not Outcome.WAITING

    def fail(self, status: InboundEventStatus, error: str) -> None:
        self.status, self.error = status, error


@dataclass
class ChatRun:
    """One chat's open events, applied oldest first. A round that stores a message may be
    what the waiting ones were waiting for: they then get another pass."""

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
        if row.status is InboundEventStatus.WAITING:
            self.waiting.append(row)
        self.stored_message |= (
            row.status is InboundEventStatus.APPLIED and row.event.kind in STORES_MESSAGE
        )

    def end_of_round(self) -> None:
        if not self.queue and self.stored_message:
            self.queue, self.waiting, self.stored_message = deque(self.waiting), [], False


async def apply_open_events(
    session: AsyncSession,
    chats: Collection[ChatKey],
    known: Known,
    mode: ApplyMode,
    settings: Settings,
) -> list[ChatKey]:
    """Apply these chats' open events in this transaction, under their locks; the chats left
    to be applied alone (TOGETHER applies only some, see ApplyMode)."""
    await repository.lock_chats(session, chats)
    by_chat = await _open_events(session, chats, known.events)
    alone = []
    if mode is ApplyMode.TOGETHER:
        alone = [chat for chat, events in by_chat.items() if not new_messages_only(events)]
        for chat in alone:
            del by_chat[chat]
    if not by_chat:
        return alone
    chat_ids = {chat: known.chat_ids[chat] for chat in by_chat if chat in known.chat_ids}
    if unknown := [chat for chat in by_chat if chat not in chat_ids]:
        chat_ids |= await repository.chats_of(session, unknown)
    held = await apply_events(session, by_chat, chat_ids, mode, settings)
    for chat in held:
        del by_chat[chat]
    await repository.store_outcomes(session, [row for events in by_chat.values() for row in events])
    return alone + held


async def apply_events(
    session: AsyncSession,
    by_chat: Mapping[ChatKey, list[OpenEvent]],
    chat_ids: Mapping[ChatKey, int],
    mode: ApplyMode,
    settings: Settings,
) -> list[ChatKey]:
    """Apply these events, each chat's in order; the chats not applied because another
    transaction holds their row (TOGETHER only: the others wait for it)."""
    wanted = [chat_ids[chat] for chat in by_chat if chat in chat_ids]
    rows = await repository.lock_chat_rows(session, wanted, skip_locked=mode is ApplyMode.TOGETHER)
    held = []
    runs = []
    for chat_key, events in by_chat.items():
        chat_id = chat_ids.get(chat_key)
        if chat_id is None:
            account_id = chat_key.account_id
            log.warning("webhook events for unknown Instagram account %s ignored", account_id)
            for row in events:
                row.fail(
                    InboundEventStatus.IGNORED,
                    f"no connected profile has Instagram account id {account_id}",
                )
        elif chat_id not in rows:
            held.append(chat_key)
        else:
            chat = rows[chat_id]
            runs.append(ChatRun(Context(session, settings, chat.profile_id, chat), deque(events)))
    many = mode is not ApplyMode.EVENT_BY_EVENT
    pending = runs
    while pending:
        taken = [(run, row) for run in pending for row in run.take(many)]
        if many:
            await _apply(session, taken)
        else:
            for one in taken:
                await _apply_in_savepoint(session, one)
        for run in pending:
            run.end_of_round()
        pending = [run for run in pending if run.queue]
    chats = [run.context.chat for run in runs]
    await repository.write_chat_times(session, chats)
    participants.refresh_if_stale(session, chats, settings)
    return held


def new_messages_only(events: list[OpenEvent]) -> bool:
    return all(row.event.kind in service.BULK_KINDS for row in events)


async def _open_events(
    session: AsyncSession, chats: Collection[ChatKey], known: Mapping[int, Event]
) -> dict[ChatKey, list[OpenEvent]]:
    """The chats' open events, oldest first, by chat; those not `known` read in full."""
    rows = await repository.open_events(session, chats)
    payloads = await repository.event_payloads(
        session, [row.id for row in rows if row.id not in known]
    )
    return {
        ChatKey(*chat): [_open_event(row, known, payloads) for row in chat_rows]
        for chat, chat_rows in groupby(rows, lambda row: (row.account_id, row.participant_id))
    }


def _open_event(
    row: OpenEventRow, known: Mapping[int, Event], payloads: Mapping[int, Any]
) -> OpenEvent:
    event = known.get(row.id) or Event(
        kind=EventKind(row.kind),
        account_id=row.account_id,
        participant_id=row.participant_id,
        occurred_at=row.occurred_at,
        mid=row.mid,
        dedupe_key=row.dedupe_key,
        item=payloads[row.id],
    )
    return OpenEvent(row.id, row.created_at, event, InboundEventStatus(row.status))


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
        row.fail(InboundEventStatus.FAILED, f"{type(error).__name__}: {error}")
