"""The inbound capability's queries: webhook deliveries (the ack's INSERT, on a bare asyncpg
connection; claiming them to split; keeping the unparseable ones), the events staged in
`inbound_events`, chats (their locks, rows and times), the messages the appliers store and
change, and the sweep's look for lost work; erasure.py has those of an unsend. Statements
that carry many rows take them as one array per column (app/core/sql.py): their text, and
so their prepared plan, stays the same."""

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Row,
    Table,
    Text,
    all_,
    any_,
    case,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import get_history, set_committed_value
from sqlalchemy.sql.expression import TableValuedAlias

from app.chats.models import Chat
from app.core import sql
from app.core.db import Base
from app.inbound.models import (
    OPEN_EVENT_STATUSES,
    SETTLED_EVENT_STATUSES,
    InboundEvent,
    InboundEventStatus,
    WebhookDelivery,
    WebhookDeliveryStatus,
)
from app.inbound.parsing import ChatKey, Event
from app.messages.models import Message, MessageRow
from app.profiles.models import Profile, ProfileStatus


def _table(model: type[Base]) -> Table:
    """A model's table, typed as one (the declarative base types it as any FROM clause)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


CHATS = _table(Chat)
MESSAGES = _table(Message)
INBOUND_EVENTS = _table(InboundEvent)
WEBHOOK_DELIVERIES = _table(WebhookDelivery)

# --- Webhook deliveries

_STORE = "INSERT INTO webhook_deliveries (body, traceparent) VALUES ($1, $2) RETURNING id"


async def store_webhook_delivery(
    connection: asyncpg.Connection | PoolConnectionProxy, body: str, traceparent: str | None
) -> int:
    """Store a webhook delivery as received (autocommit, on the express lane's pool), with the
    trace of the POST that brought it (while tracing is on); its id."""
    webhook_delivery_id: int = await connection.fetchval(_STORE, body, traceparent)
    return webhook_delivery_id


class Claimed(NamedTuple):
    """A webhook delivery claimed to be split."""

    body: str
    traceparent: str | None


async def claim_webhook_deliveries(
    session: AsyncSession, ids: list[int] | None, limit: int = 0, excluded: Collection[int] = ()
) -> dict[int, Claimed]:
    """Webhook deliveries still `received`, marked processed and their bodies dropped as they
    are read; by id. These `ids`, or with None the oldest `limit` of them, but the
    `excluded`. One being split by another worker is skipped: that worker finishes it."""
    table = WEBHOOK_DELIVERIES
    wanted = select(table.c.id).where(table.c.status == WebhookDeliveryStatus.RECEIVED)
    if ids is not None:
        wanted = wanted.where(table.c.id == any_(sql.array(ids, BigInteger())))
    else:
        wanted = wanted.where(table.c.id != all_(sql.array(sorted(excluded), BigInteger()))).limit(
            limit
        )
    claimed = (
        wanted.add_columns(table.c.body, table.c.traceparent)
        .order_by(table.c.id)
        .with_for_update(skip_locked=True)
        .subquery()
    )
    rows = await session.execute(
        update(table)
        .where(table.c.id == claimed.c.id)
        .values(status=WebhookDeliveryStatus.PROCESSED, processed_at=func.now(), body=None)
        .returning(table.c.id, claimed.c.body, claimed.c.traceparent)
    )
    return {id: Claimed(body, traceparent) for id, body, traceparent in sorted(rows)}


async def keep_unparseable(
    session: AsyncSession, problems: Mapping[int, list[str]], bodies: Mapping[int, str]
) -> None:
    """Mark webhook deliveries just claimed as unparseable, with what could not be understood
    of each, and their bodies back, for diagnosis."""
    await session.execute(
        update(WebhookDelivery),
        [
            {
                "id": webhook_delivery_id,
                "status": WebhookDeliveryStatus.UNPARSEABLE,
                "problems": found,
                "body": bodies[webhook_delivery_id],
            }
            for webhook_delivery_id, found in problems.items()
        ],
    )


async def keep_refused(session: AsyncSession, webhook_delivery_id: int, problem: str) -> None:
    """Mark a webhook delivery still `received` (its body kept) as unparseable."""
    await session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == webhook_delivery_id,
            WebhookDelivery.status == WebhookDeliveryStatus.RECEIVED,
        )
        .values(
            status=WebhookDeliveryStatus.UNPARSEABLE, problems=[problem], processed_at=func.now()
        )
    )


async def lost_webhook_deliveries(
    session: AsyncSession, received_before: timedelta, limit: int
) -> list[int]:
    """Webhook deliveries still `received` this long after they were."""
    ids = await session.scalars(
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.status == WebhookDeliveryStatus.RECEIVED,
            WebhookDelivery.received_at < func.now() - received_before,
        )
        .order_by(WebhookDelivery.id)
        .limit(limit)
    )
    return list(ids)


# --- Inbound events (the staging table)

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


async def stage_events(
    session: AsyncSession, events: Mapping[int, Sequence[Event]]
) -> dict[int, Event]:
    """Store events, by the id of their webhook delivery, each once however often Meta sends
    it; those stored now, by id."""
    table = INBOUND_EVENTS
    rows = [_row(id, event) for id, listed in events.items() for event in listed]
    new = sql.rows_table(rows, {n: table.c[n].type for n in EVENT_COLUMNS})
    inserted = await session.execute(
        insert(table)
        .from_select(EVENT_COLUMNS, select(new))
        .on_conflict_do_nothing(index_elements=["account_id", "dedupe_key"])
        .returning(table.c.id, table.c.account_id, table.c.dedupe_key)
    )
    by_key = {(e.account_id, e.dedupe_key): e for listed in events.values() for e in listed}
    return {id: by_key[account, key] for id, account, key in inserted}


def _row(webhook_delivery_id: int, event: Event) -> dict[str, Any]:
    return {
        "delivery_id": webhook_delivery_id,
        "account_id": event.account_id,
        "participant_id": event.participant_id,
        "kind": event.kind,
        "mid": event.mid,
        "dedupe_key": event.dedupe_key,
        "occurred_at": event.occurred_at,
        "payload": event.item,
    }


async def chats_with_open_events(
    session: AsyncSession, chats: Collection[ChatKey]
) -> list[ChatKey]:
    keys = chat_keys_table(chats)
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
    return [ChatKey(account, participant) for account, participant in rows]


# An open event as open_events reads it, without its payload.
OpenEventRow = Row[int, str, str, str, str | None, str, datetime, str, datetime]


async def open_events(session: AsyncSession, chats: Collection[ChatKey]) -> Sequence[OpenEventRow]:
    """The chats' open events, by chat, oldest first."""
    keys = chat_keys_table(chats)
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
    return result.all()


async def event_payloads(session: AsyncSession, event_ids: list[int]) -> dict[int, Any]:
    if not event_ids:
        return {}
    rows = await session.execute(
        select(InboundEvent.id, InboundEvent.payload).where(
            InboundEvent.id == any_(sql.array(event_ids, BigInteger()))
        )
    )
    return dict(rows.all())


class EventOutcome(Protocol):
    """What applying an event came to, as store_outcomes writes it."""

    @property
    def id(self) -> int | None: ...
    @property
    def status(self) -> InboundEventStatus: ...
    @property
    def error(self) -> str | None: ...
    @property
    def applied(self) -> bool: ...  # its applied_at is due


async def store_outcomes(session: AsyncSession, events: Iterable[EventOutcome]) -> None:
    outcomes = sql.rows_table(
        [
            {"id": row.id, "status": row.status, "error": row.error, "applied": row.applied}
            for row in events
        ],
        {"id": BigInteger(), "status": Text(), "error": Text(), "applied": Boolean()},
    )
    await session.execute(
        update(INBOUND_EVENTS)
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


async def chats_with_pending_events(
    session: AsyncSession, created_before: timedelta, limit: int
) -> list[ChatKey]:
    """Chats with events still `pending` this long after they were staged."""
    chats = await session.execute(
        select(InboundEvent.account_id, InboundEvent.participant_id)
        .where(
            InboundEvent.status == InboundEventStatus.PENDING,
            InboundEvent.created_at < func.now() - created_before,
        )
        .group_by(InboundEvent.account_id, InboundEvent.participant_id)
        .limit(limit)
    )
    return [ChatKey(account, participant) for account, participant in chats]


# --- Chats


def chat_keys_table(keys: Collection[ChatKey]) -> TableValuedAlias:
    rows = [{"account_id": account, "participant_id": participant} for account, participant in keys]
    return sql.rows_table(rows, {"account_id": Text(), "participant_id": Text()})


async def lock_chats(session: AsyncSession, chats: Collection[ChatKey]) -> None:
    """Lock the chats for this transaction (advisory locks), in lock-key order in every
    worker, so that two transactions locking several chats never deadlock."""
    names = sql.array(
        [f"inbound:{account}:{participant}" for account, participant in chats], Text()
    )
    name = func.unnest(names).table_valued("name").render_derived()
    key = func.hashtextextended(name.c.name, 0).label("key")
    ordered = select(key).distinct().order_by(key).subquery()
    await session.execute(select(func.pg_advisory_xact_lock(ordered.c.key)))


class _FoundChat(NamedTuple):
    profile_id: int
    chat_id: int | None  # None: the chat does not exist yet


async def chats_of(session: AsyncSession, keys: Collection[ChatKey]) -> dict[ChatKey, int]:
    """The chat ids of these chats, creating those of first events; a chat whose account no
    connected profile has is left out."""
    found = await _find_chats(session, keys)
    missing = sorted(
        (found_chat.profile_id, key.participant_id)
        for key, found_chat in found.items()
        if found_chat.chat_id is None
    )
    if missing:
        # A new chat counts in its profile's row (migration 0004's trigger), locked until
        # commit: lock those rows first, in one order, so that transactions creating chats of
        # several profiles never deadlock.
        await session.execute(
            select(Profile.id)
            .where(Profile.id.in_({profile_id for profile_id, _ in missing}))
            .order_by(Profile.id)
            .with_for_update(key_share=True)
        )
        new = sql.rows_table(
            [{"profile_id": p, "participant_external_id": i} for p, i in missing],
            {"profile_id": Chat.profile_id.type, "participant_external_id": Text()},
        )
        await session.execute(
            insert(Chat)
            .from_select(["profile_id", "participant_external_id"], select(new))
            .on_conflict_do_nothing(index_elements=["profile_id", "participant_external_id"])
        )
        found = await _find_chats(session, keys)
    return {key: chat_id for key, (_, chat_id) in found.items() if chat_id is not None}


async def _find_chats(
    session: AsyncSession, keys: Collection[ChatKey]
) -> dict[ChatKey, _FoundChat]:
    """Each chat whose account has a profile."""
    wanted = chat_keys_table(keys)
    rows = await session.execute(
        select(wanted.c.account_id, wanted.c.participant_id, Profile.id, Chat.id)
        # A disconnected profile hears nothing until it is connected again.
        .join(
            Profile,
            (Profile.platform_id == wanted.c.account_id)
            & (Profile.status != ProfileStatus.INACTIVE),
        )
        .outerjoin(
            Chat,
            (Chat.profile_id == Profile.id)
            & (Chat.participant_external_id == wanted.c.participant_id),
        )
    )
    return {ChatKey(a, i): _FoundChat(p, c) for a, i, p, c in rows}


async def lock_chat_rows(
    session: AsyncSession, chat_ids: list[int], skip_locked: bool
) -> dict[int, Chat]:
    """These chats, their rows locked (with `skip_locked`, those another transaction holds
    are left out); by id."""
    locked = await session.scalars(
        select(Chat)
        .where(Chat.id == any_(sql.array(chat_ids, BigInteger())))
        .order_by(Chat.id)
        .with_for_update(key_share=True, skip_locked=skip_locked)
    )
    return {chat.id: chat for chat in locked}


# The chat columns the appliers move (service._touch_chat).
CHAT_TIMES = ("last_inbound_at", "last_outbound_at", "last_message_at")


async def write_chat_times(session: AsyncSession, chats: Collection[Chat]) -> None:
    """Write the times moved in these chats by one statement, rather than the UPDATE apiece
    the session's flush would send: as much work for PostgreSQL, about half for the worker."""
    moved = [chat for chat in chats if _times_moved(chat)]
    if not moved:
        return
    table = CHATS
    times = sql.rows_table(
        [{"id": chat.id, **{name: getattr(chat, name) for name in CHAT_TIMES}} for chat in moved],
        {"id": table.c.id.type, **{name: table.c[name].type for name in CHAT_TIMES}},
    )
    with session.no_autoflush:  # which would send the UPDATEs apiece first
        await session.execute(
            update(table)
            .where(table.c.id == times.c.id)
            .values({**{name: times.c[name] for name in CHAT_TIMES}, "updated_at": func.now()})
        )
    for chat in moved:  # written: the flush has nothing left to send for them
        for name in CHAT_TIMES:
            set_committed_value(chat, name, getattr(chat, name))


def _times_moved(chat: Chat) -> bool:
    # get_history, not inspect(chat).attrs, which builds a view of every attribute.
    return any(get_history(chat, name).has_changes() for name in CHAT_TIMES)


# --- Messages

# Message columns a stored message is not read back for: they hold what its row carried (or
# NULL; none has a default), so decoding them again would be wasted work on every message.
WRITTEN_ONLY = tuple(c.name for c in MESSAGES.c if isinstance(c.type, JSON))


async def insert_messages(
    session: AsyncSession, rows: list[dict[str, Any]]
) -> list[MessageRow | None]:
    """Store messages by one statement: for each row, the message stored, or None if its mid
    is stored already, or earlier in the list."""
    table = MESSAGES
    # Sorted: one statement text per set of columns.
    names = sorted({name for row in rows for name in row})
    stored = await session.execute(
        insert(table)
        .from_select(names, select(sql.rows_table(rows, {n: table.c[n].type for n in names})))
        .on_conflict_do_nothing(index_elements=["profile_id", "external_id"])
        .returning(*(c for c in table.c if c.name not in WRITTEN_ONLY))
    )
    by_mid = {(message.profile_id, message.external_id): message for message in stored}
    # Rows are inserted in list order, so a mid listed twice is stored by its first listing.
    messages: list[MessageRow | None] = []
    for row in rows:
        read = by_mid.pop((row["profile_id"], row["external_id"]), None)
        written: dict[str, Any] = {name: row.get(name) for name in WRITTEN_ONLY}
        messages.append(None if read is None else MessageRow(**read._mapping, **written))
    return messages


async def message_by_mid(session: AsyncSession, profile_id: int, mid: str | None) -> Message | None:
    """The profile's message with this mid, its row locked."""
    return await session.scalar(
        select(Message)
        .where(Message.profile_id == profile_id, Message.external_id == mid)
        .with_for_update()
    )
