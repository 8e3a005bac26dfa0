"""Applying Meta's webhook events to chats and messages.

Every applier here runs inside the transaction that applies its chat's events (see
processing.py), which holds that chat's lock, and records the matching customer event
alongside its change. An event about a message that is not stored yet answers WAITING: it is
applied once the message arrives. Changes that arrive late never overwrite newer state: times
only move forward, an edit or reaction older than the stored one is dropped, and an unsend is
final.
"""

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import SimpleNamespace
from typing import Any

from sqlalchemy import JSON, Text, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import get_history, set_committed_value
from sqlalchemy.sql.expression import TableValuedAlias

from app.chats.models import Chat
from app.core.settings import Settings
from app.core.sql import rows_table
from app.events import service as events
from app.inbound import erasure
from app.inbound.content import message_columns
from app.inbound.parsing import Event
from app.media import service as media
from app.messages import repository as messages
from app.messages.models import UNDELIVERED, Direction, Message, MessageStatus
from app.profiles.models import Profile

# Message columns a stored message is not read back for: they hold what its row carried (or
# NULL; none has a default), so decoding them again would be wasted work on every message.
WRITTEN_ONLY = tuple(c.name for c in Message.__table__.c if isinstance(c.type, JSON))

# A chat, as webhooks name it: the business's IG_ID and the customer's IGSID.
ChatKey = tuple[str, str]
# Kinds stored many at a time (apply_messages): storing one reads nothing first.
BULK_KINDS = frozenset({"message", "postback"})


class Outcome(StrEnum):
    APPLIED = "applied"
    WAITING = "waiting"  # the message it is about is not stored yet
    IGNORED = "ignored"  # nothing to do (a duplicate of something already stored)


@dataclass
class Context:
    session: AsyncSession
    settings: Settings
    profile_id: int
    chat: Chat


def chat_keys_table(keys: Collection[ChatKey]) -> TableValuedAlias:
    rows = [{"account_id": account, "participant_id": participant} for account, participant in keys]
    return rows_table(rows, {"account_id": Text(), "participant_id": Text()})


async def chats_of(session: AsyncSession, keys: Collection[ChatKey]) -> dict[ChatKey, int]:
    """The chat ids of these chats, creating those of first events; a chat whose account no
    connected profile has is left out."""
    found = await _find_chats(session, keys)
    missing = sorted(
        (profile_id, key[1]) for key, (profile_id, chat_id) in found.items() if chat_id is None
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
        new = rows_table(
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
) -> dict[ChatKey, tuple[int, int | None]]:
    """(profile id, chat id if the chat exists) of each chat whose account has a profile."""
    wanted = chat_keys_table(keys)
    rows = await session.execute(
        select(wanted.c.account_id, wanted.c.participant_id, Profile.id, Chat.id)
        .join(Profile, Profile.platform_id == wanted.c.account_id)
        .outerjoin(
            Chat,
            (Chat.profile_id == Profile.id)
            & (Chat.participant_external_id == wanted.c.participant_id),
        )
    )
    return {(account, participant): (p, c) for account, participant, p, c in rows}


async def apply(context: Context, event: Event) -> Outcome:
    """Apply one event of a kind not in BULK_KINDS (those go through apply_messages)."""
    return await APPLIERS[event.kind](context, event)


async def apply_messages(
    session: AsyncSession, pending: list[tuple[Context, Event]]
) -> list[Outcome]:
    """Inbound messages and postbacks, of any chats, stored by one statement: every kind
    opens the 24-hour window, story mentions and story replies included."""
    messages = await _insert_messages(
        session,
        [
            (context, event, {"direction": "inbound", "status": "received"})
            for context, event in pending
        ],
    )
    return [
        _received(context, event, message)
        for (context, event), message in zip(pending, messages, strict=True)
    ]


def _received(context: Context, event: Event, message: Any) -> Outcome:
    if message is None:
        return Outcome.IGNORED
    _touch_chat(context.chat, inbound_at=event.occurred_at)
    events.record_message(
        context.session, context.profile_id, "message.received", message, event.occurred_at
    )
    if message.referral is not None:
        _record_referral(context, message.referral, event.occurred_at, message.id)
    return Outcome.APPLIED


async def apply_echo(context: Context, event: Event) -> Outcome:
    """A message the business sent, as Meta echoes it back.

    1. A row with this mid is ours (the send call returned first): mark it published.
    2. Else a row of this chat being sent right now (claimed, mid unknown) with the same
       content is ours too, the echo having beaten the send call's answer, if it is the
       only such row: content (text, or an attachment's type alone, as echoes carry Meta's
       copy of the file) can be shared, and a wrong pairing would mark a message published
       that Meta never got. With two, the echo is stored on its own, and the send's answer
       merges it into its message (SQL publish_sends, migration 0008).
    3. Else it was sent from the Instagram app or another inbox: store it as published.
    Never a second row for one mid, whatever the arrival order.
    """
    session, mid = context.session, event.mid
    assert mid is not None  # parsing refuses an echo without one
    ours = await session.scalar(
        select(Message)
        .where(Message.profile_id == context.profile_id, Message.external_id == mid)
        .with_for_update()
    )
    if ours is None:
        ours = await _claimed_match(context, event)
    if ours is not None:
        if ours.status in UNDELIVERED:
            # As the send's answer publishes it: Meta's id, and no retry or error left.
            await messages.publish_echoed(session, ours, mid, event.occurred_at)
        _touch_chat(context.chat, outbound_at=event.occurred_at)
        return Outcome.APPLIED
    published = {"direction": Direction.OUTBOUND, "status": MessageStatus.PUBLISHED}
    [message] = await _insert_messages(session, [(context, event, published)])
    if message is None:
        return Outcome.IGNORED
    _touch_chat(context.chat, outbound_at=event.occurred_at)
    events.record_message(session, context.profile_id, "message.sent", message, event.occurred_at)
    return Outcome.APPLIED


async def _claimed_match(context: Context, event: Event) -> Message | None:
    """The chat's message being sent right now with the echo's content, if only one has it."""
    echo = event.item["message"]
    attachments = echo.get("attachments")
    if isinstance(attachments, list) and attachments and isinstance(attachments[0], dict):
        body, attachment_type = None, str(attachments[0].get("type"))
    else:
        body, attachment_type = echo.get("text"), None
    candidates = await messages.claimed_candidates(
        context.session, context.chat.id, body, attachment_type
    )
    return candidates[0] if len(candidates) == 1 else None


async def _apply_delete(context: Context, event: Event) -> Outcome:
    message = await _target(context, event)
    if message is None:
        return Outcome.WAITING
    if message.external_deleted_at is not None:
        return Outcome.IGNORED
    message.external_deleted_at = event.occurred_at
    await erasure.erase(context.session, message, event.account_id)
    await _record_message_event(context, "message.deleted", message, event)
    return Outcome.APPLIED


async def _apply_edit(context: Context, event: Event) -> Outcome:
    message = await _target(context, event)
    if message is None:
        return Outcome.WAITING
    stale = message.external_edited_at is not None and message.external_edited_at >= (
        event.occurred_at
    )
    if message.external_deleted_at is not None or stale:
        return Outcome.IGNORED
    text = event.item["message_edit"].get("text")
    message.body = text if isinstance(text, str) else None
    message.external_edited_at = event.occurred_at
    await _record_message_event(context, "message.edited", message, event)
    return Outcome.APPLIED


async def _apply_read(context: Context, event: Event) -> Outcome:
    message = await _target(context, event)
    if message is None:
        return Outcome.WAITING
    if message.external_read_at is not None and message.external_read_at >= event.occurred_at:
        return Outcome.IGNORED
    message.external_read_at = event.occurred_at
    await _record_message_event(context, "message.read", message, event)
    return Outcome.APPLIED


async def _apply_reaction(context: Context, event: Event) -> Outcome:
    message = await _target(context, event)
    if message is None:
        return Outcome.WAITING
    sender = event.participant_id
    current = (message.reactions or {}).get(sender)
    if message.external_deleted_at is not None or (
        current is not None and datetime.fromisoformat(current["at"]) >= event.occurred_at
    ):
        return Outcome.IGNORED
    reaction = event.item["reaction"]
    action = "unreact" if reaction.get("action") == "unreact" else "react"
    state = {
        "action": action,
        "reaction": reaction.get("reaction") if action == "react" else None,
        "emoji": reaction.get("emoji") if action == "react" else None,
        "at": event.occurred_at.isoformat(),
    }
    # A new dict, so the ORM sees the change.
    message.reactions = {**(message.reactions or {}), sender: state}
    await context.session.flush()
    events.record_message(
        context.session,
        context.profile_id,
        "reaction.received",
        message,
        event.occurred_at,
        {
            "sender_external_id": sender,
            "action": action,
            "reaction": state["reaction"],
            "emoji": state["emoji"],
            "occurred_at": state["at"],
        },
    )
    return Outcome.APPLIED


async def _apply_referral(context: Context, event: Event) -> Outcome:
    """An ig.me link or an ad opened an existing thread: no message, but worth telling."""
    referral = event.item["referral"]
    metadata = dict(context.chat.metadata_ or {})
    metadata["referral"] = {**referral, "at": event.occurred_at.isoformat()}
    context.chat.metadata_ = metadata
    _record_referral(context, referral, event.occurred_at)
    return Outcome.APPLIED


def _record_referral(
    context: Context,
    referral: dict[str, Any],
    occurred_at: datetime,
    message_id: int | None = None,
) -> None:
    """`message_id`: the message that carried the referral (an ad's), if one did."""
    events.record(
        context.session,
        context.profile_id,
        "referral.received",
        {
            "chat": events.chat_data(context.chat),
            "ref": referral.get("ref"),
            "source": referral.get("source"),
            "type": referral.get("type"),
            "occurred_at": occurred_at.isoformat(),
            "referral": referral,
        },
        occurred_at,
        message_id=message_id,
    )


async def _insert_messages(
    session: AsyncSession, pending: list[tuple[Context, Event, dict[str, Any]]]
) -> list[Any]:
    """Store messages Meta told us about, in one statement: for each, its row (read like a
    Message), or None if its mid is stored already, or earlier in the list."""
    rows = [
        {
            "chat_id": context.chat.id,
            "profile_id": context.profile_id,
            "external_id": event.mid,
            "external_posted_at": event.occurred_at,
            "is_unsupported": False,  # the column's default, for content that does not say
            **values,
            **message_columns(event.item, context.settings),
        }
        for context, event, values in pending
    ]
    table = Message.__table__
    # Sorted: one statement text per set of columns.
    names = sorted({name for row in rows for name in row})
    stored = await session.execute(
        insert(table)
        .from_select(names, select(rows_table(rows, {n: table.c[n].type for n in names})))
        .on_conflict_do_nothing(index_elements=["profile_id", "external_id"])
        .returning(*(c for c in table.c if c.name not in WRITTEN_ONLY))
    )
    by_mid = {(message.profile_id, message.external_id): message for message in stored}
    # Rows are inserted in list order, so a mid listed twice is stored by its first listing.
    messages = []
    for row in rows:
        read = by_mid.pop((row["profile_id"], row["external_id"]), None)
        written = {name: row.get(name) for name in WRITTEN_ONLY}
        messages.append(None if read is None else SimpleNamespace(**read._mapping, **written))
    for (context, _, _), message in zip(pending, messages, strict=True):
        if message is not None:
            media.mirror_after_commit(session, message, context.settings)
    return messages


async def _target(context: Context, event: Event) -> Message | None:
    """The stored message an event is about."""
    return await context.session.scalar(
        select(Message)
        .where(Message.profile_id == context.profile_id, Message.external_id == event.mid)
        .with_for_update()
    )


async def _record_message_event(
    context: Context, type: events.EventType, message: Message, event: Event
) -> None:
    await context.session.flush()
    events.record_message(context.session, context.profile_id, type, message, event.occurred_at)


# The chat columns _touch_chat moves.
CHAT_TIMES = ("last_inbound_at", "last_outbound_at", "last_message_at")


async def write_chat_times(session: AsyncSession, chats: Collection[Chat]) -> None:
    """Write the times moved in these chats by one statement, rather than the UPDATE apiece
    the session's flush would send: as much work for PostgreSQL, about half for the worker."""
    moved = [chat for chat in chats if _times_moved(chat)]
    if not moved:
        return
    table = Chat.__table__
    times = rows_table(
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


def _touch_chat(
    chat: Chat, *, inbound_at: datetime | None = None, outbound_at: datetime | None = None
) -> None:
    """Times only move forward, so events applied out of order leave the latest in place."""
    if inbound_at is not None:
        chat.last_inbound_at = _latest(chat.last_inbound_at, inbound_at)
    if outbound_at is not None:
        chat.last_outbound_at = _latest(chat.last_outbound_at, outbound_at)
    chat.last_message_at = _latest(chat.last_message_at, inbound_at or outbound_at)


def _latest(current: datetime | None, candidate: datetime | None) -> datetime | None:
    if current is None or candidate is None:
        return current or candidate
    return max(current, candidate)


APPLIERS = {
    "echo": apply_echo,
    "delete": _apply_delete,
    "edit": _apply_edit,
    "read": _apply_read,
    "reaction": _apply_reaction,
    "referral": _apply_referral,
}
