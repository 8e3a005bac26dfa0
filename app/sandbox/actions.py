"""Sender actions as the sandbox's Send API checks and records them (meta doc §2.5, §2.6,
§11.7): `react` needs a message of that thread and a reaction (love or an emoji), `unreact`
a message of that thread; typing and `mark_seen` need nothing more. Unknown messages and
wrong reactions → 400 code 100 (Meta's codes for these are undocumented: stand-ins)."""

from datetime import UTC, datetime
from typing import Any

from app.sandbox.errors import GraphError
from app.sandbox.state import Sandbox

REACTION_ACTIONS = {"react", "unreact"}


def is_emoji(value: str) -> bool:
    # What no emoji holds: ASCII letters, digits or spaces (a reaction name such as "like").
    return (
        bool(value)
        and len(value) <= 16
        and not any(c.isascii() and (c.isalnum() or c.isspace()) for c in value)
    )


def check_and_record(
    sandbox: Sandbox, account: str, recipient_id: str, action: str, params: dict[str, Any]
) -> None:
    payload = params.get("payload")
    if action in REACTION_ACTIONS:
        mid = payload.get("message_id") if isinstance(payload, dict) else None
        if not isinstance(mid, str) or sandbox.threads.get(mid) != (account, recipient_id):
            raise GraphError(
                100, "(#100) Param payload[message_id] is not a message of this thread"
            )
        if action == "react":
            reaction = payload.get("reaction") if isinstance(payload, dict) else None
            if not (isinstance(reaction, str) and (reaction == "love" or is_emoji(reaction))):
                raise GraphError(100, "(#100) Param payload[reaction] must be love or an emoji")
    record: dict[str, Any] = {
        "account_id": account,
        "recipient_id": recipient_id,
        "sender_action": action,
        "received_at": datetime.now(UTC).isoformat(),
    }
    if payload is not None:
        record["payload"] = payload
    sandbox.actions.append(record)
