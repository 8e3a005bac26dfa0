"""The pipeline's split step, in one transaction for a batch of webhook deliveries: claim and
parse them (parsing.py), classify their chats, apply those that need no staging, and stage
the events of the others for the apply step (apply.py).

Classify: most chats hear only new messages and have no open events. The split applies those
itself, under their locks, and stages nothing for them: a message's mid is unique in its
profile, so `messages` dedupes it as `inbound_events` would have (storing each event, then its
outcome, is costly). Staged events are stored once each (unique on account and dedupe key:
its kind and mid, plus the timestamp for repeatable kinds such as reads and reactions).
The apply takes what the split knows from memory (Known): the events it staged, and the ids
of the chats it found or created.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum

from sqlalchemy.ext.asyncio import AsyncSession

from app.comments.repository import store_comments
from app.core import tracing
from app.core.settings import Settings
from app.inbound import repository
from app.inbound.apply import ApplyMode, Known, OpenEvent, apply_events, new_messages_only
from app.inbound.models import InboundEventStatus
from app.inbound.parsing import ChatKey, Event, parse_body


class SplitMode(Enum):
    # Apply the chats that need no staging as they are split: the fast path.
    APPLY_UNSTAGED = "apply unstaged"
    # Stage every event, should applying as split fail.
    STAGE_ALL = "stage all"


@dataclass
class NextDeliveries:
    """A drain's claim: the oldest `limit` webhook deliveries still `received`, but the
    `excluded`; `claimed` notes their ids as the split claims them (kept should it fail)."""

    limit: int
    excluded: list[int]
    claimed: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Split:
    """What a split leaves to the apply step."""

    chats: set[ChatKey]  # those it did not apply itself
    known: Known
    # What could not be understood, by webhook delivery id.
    problems: Mapping[int, list[str]]


async def split(
    session: AsyncSession,
    webhook_delivery_ids: list[int] | NextDeliveries,
    mode: SplitMode,
    settings: Settings,
) -> Split:
    """Split those of these webhook deliveries (or the next ones to drain) still to split,
    in this transaction."""
    # Marked processed as they are read, their bodies dropped: what they said is then in the
    # events and the rows those change, and nowhere else, so that an unsend can erase it.
    # Any found unparseable are corrected (bodies kept) below.
    if isinstance(webhook_delivery_ids, NextDeliveries):
        claim = webhook_delivery_ids
        claimed = await repository.claim_webhook_deliveries(
            session, None, claim.limit, claim.excluded
        )
        claim.claimed = list(claimed)
    else:
        claimed = await repository.claim_webhook_deliveries(session, webhook_delivery_ids)
    # The batch's span (pipeline.py) links to the POSTs that stored them.
    tracing.link(found.traceparent for found in claimed.values())
    tracing.annotate(webhook_deliveries=len(claimed))
    bodies = {webhook_delivery_id: found.body for webhook_delivery_id, found in claimed.items()}
    parsed = {webhook_delivery_id: parse_body(body) for webhook_delivery_id, body in bodies.items()}
    events = [event for found in parsed.values() for event in found.events]
    comments = [comment for found in parsed.values() for comment in found.comments]
    if comments:
        await store_comments(session, comments)
    chats = {event.chat for event in events}
    apply_unstaged = mode is SplitMode.APPLY_UNSTAGED and bool(chats)
    if apply_unstaged:
        await repository.lock_chats(session, chats)
    # Created here, before any chat is applied: creating a chat locks its profile's row
    # until commit, which other transactions changing that profile wait for.
    chat_ids = await repository.chats_of(session, chats) if chats else {}
    if apply_unstaged:
        chats -= await _apply_unstaged(session, events, chat_ids, settings)
    to_stage = {
        webhook_delivery_id: [event for event in found.events if event.chat in chats]
        for webhook_delivery_id, found in parsed.items()
    }
    staged = {}
    if any(to_stage.values()):
        staged = await repository.stage_events(session, to_stage)
    problems = {
        webhook_delivery_id: p.problems for webhook_delivery_id, p in parsed.items() if p.problems
    }
    if problems:
        await repository.keep_unparseable(session, problems, bodies)
    return Split(chats, Known(staged, chat_ids), problems)


async def _apply_unstaged(
    session: AsyncSession, events: list[Event], chat_ids: Mapping[ChatKey, int], settings: Settings
) -> set[ChatKey]:
    """Apply, in the split's transaction (which holds the chats' locks), the chats whose
    events are all new messages and that have no open events; the chats applied."""
    now = datetime.now(UTC)
    by_chat: dict[ChatKey, list[OpenEvent]] = {}
    for event in events:
        by_chat.setdefault(event.chat, []).append(
            OpenEvent(None, now, event, InboundEventStatus.PENDING)
        )
    by_chat = {
        chat: sorted(rows, key=lambda row: row.event.occurred_at)
        for chat, rows in by_chat.items()
        if chat in chat_ids and new_messages_only(rows)
    }
    for chat in await repository.chats_with_open_events(session, by_chat) if by_chat else []:
        del by_chat[chat]
    if not by_chat:
        return set()
    held = await apply_events(session, by_chat, chat_ids, ApplyMode.TOGETHER, settings)
    return set(by_chat).difference(held)
