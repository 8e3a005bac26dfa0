"""Sender actions: reactions, the read receipt (`mark_seen`) and the typing indicator, made
at once while answering the request (meta doc §2.5, §2.6, §11.7).

They obey what a send obeys: an active profile, the messaging window, the profile's rate
limit (app/messages/throttle.py, the slot booked as a send's). They are never queued nor
retried: one that cannot be made within SENDER_ACTION_SECONDS is dropped and the client told
(a typing indicator shown late, or a reaction landing minutes after the fact, would say
something false)."""

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import State

from app.actions import repository
from app.api_keys.auth import Scope
from app.chats import repository as chats
from app.chats.models import Chat
from app.core.errors import APIError, NotFound
from app.core.settings import Settings
from app.messages.models import Message
from app.messages.service import check_window, get_message
from app.messages.throttle import Held, ProfileThrottle
from app.meta.errors import GraphError
from app.meta.graph import GraphClient, GraphUnreachable, sender_action_body
from app.profiles.models import Profile, ProfileStatus
from app.profiles.service import graph_account

# A sender action not made within this long (the rate-limit slot and Meta's answer) is dropped:
# well within the SDK's 5-second timeout, so that the client hears that it was.
SENDER_ACTION_SECONDS = 3.0
# Instagram's one named reaction (any emoji is taken as well).
LOVE = "love"
LOVE_EMOJI = "\u2764\ufe0f"


@dataclass(frozen=True)
class Actor:
    """What making a sender action needs, from the API's state."""

    graph: GraphClient
    throttle: ProfileThrottle
    settings: Settings

    @classmethod
    def of(cls, state: State) -> "Actor":
        """The API's (app.state: the REST routes', the MCP tools'), read now: a test may
        change its settings."""
        return cls(state.graph, state.throttle, state.settings)


async def perform(
    actor: Actor, chat: Chat, profile: Profile, action: str, payload: dict[str, str] | None = None
) -> None:
    """Make the sender action in the chat now, or raise APIError saying why it was not."""
    if profile.status != ProfileStatus.ACTIVE:
        raise APIError(
            422, f"The profile is {profile.status}: reconnect the Instagram account first"
        )
    check_window(chat.last_inbound_at, None, datetime.now(UTC))
    body = sender_action_body(chat.participant_external_id, action, payload)
    try:
        async with asyncio.timeout(SENDER_ACTION_SECONDS):
            async with actor.throttle.sending(
                profile.id, profile.connection, None, patience=SENDER_ACTION_SECONDS
            ):
                backoff = await actor.graph.sender_action(
                    graph_account(profile, actor.settings), body
                )
    except (Held, TimeoutError) as error:
        raise APIError(
            429,
            f"The {action} could not be sent to Meta within {SENDER_ACTION_SECONDS:g} seconds "
            "(the profile's rate limit, or Meta slow to answer), so it was dropped: sender "
            "actions are never queued. Try again later.",
        ) from error
    except GraphError as error:
        await _pause_if_throttled(actor, profile, error.throttled_for, error.is_throttle)
        _refused(action, error)
    except GraphUnreachable as error:
        raise APIError(
            502, f"dmrelay could not reach Meta's Graph API: the {action} was not sent"
        ) from error
    await _pause_if_throttled(actor, profile, backoff, False)


async def _pause_if_throttled(
    actor: Actor, profile: Profile, throttled_for: float | None, is_throttle: bool
) -> None:
    # As the sender does: Meta's usage headers hold every send of the profile back.
    if throttled_for is not None or is_throttle:
        await actor.throttle.pause(
            profile.id, throttled_for or actor.settings.throttle_pause_seconds
        )


def _refused(action: str, error: GraphError) -> NoReturn:
    status = 502 if error.retryable or error.code is None else 422
    raise APIError(status, f"Meta refused the {action}: {error.message} ({error.explain()})")


async def chat_of(session: AsyncSession, scope: Scope, message: Message) -> tuple[Chat, Profile]:
    found = await chats.get_visible(session, scope, message.chat_id)
    if found is None:
        raise NotFound("Message")
    return found


async def _reactable(
    session: AsyncSession, scope: Scope, message_id: str
) -> tuple[Message, Chat, Profile]:
    message = await get_message(session, scope, message_id)
    if message.external_deleted_at is not None:
        raise APIError(422, "The message was unsent: it can no longer be reacted to")
    if message.external_id is None:
        raise APIError(
            422,
            f"The message is {message.status} and has no Instagram id yet: only a message "
            "Instagram has can be reacted to",
        )
    chat, profile = await chat_of(session, scope, message)
    return message, chat, profile


async def react(
    session: AsyncSession,
    actor: Actor,
    scope: Scope,
    message_id: str,
    reaction: str | None,
    emoji: str | None,
) -> Message:
    """React to a message as the account (re-reacting replaces the reaction)."""
    message, chat, profile = await _reactable(session, scope, message_id)
    sent = LOVE if reaction is not None or emoji == LOVE_EMOJI else emoji
    assert sent is not None  # the schema requires one of them
    await perform(
        actor, chat, profile, "react", {"message_id": str(message.external_id), "reaction": sent}
    )
    state: dict[str, Any] = {
        "action": "react",
        "reaction": LOVE if sent == LOVE else None,
        "emoji": LOVE_EMOJI if sent == LOVE else sent,
        "at": datetime.now(UTC).isoformat(),
    }
    await repository.set_reaction(session, message, profile.platform_id, state)
    return message


async def unreact(session: AsyncSession, actor: Actor, scope: Scope, message_id: str) -> Message:
    """Take the account's reaction to a message back."""
    message, chat, profile = await _reactable(session, scope, message_id)
    await perform(actor, chat, profile, "unreact", {"message_id": str(message.external_id)})
    state = {
        "action": "unreact",
        "reaction": None,
        "emoji": None,
        "at": datetime.now(UTC).isoformat(),
    }
    await repository.set_reaction(session, message, profile.platform_id, state)
    return message
