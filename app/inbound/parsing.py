"""Meta's webhook payloads, split into one typed event per thing that happened.

Shapes: `entry[].messaging[]`, `entry[].standby[]` (a conversation another app owns) and the
dashboard test shape `entry[].changes[{field, value}]`. Anything that cannot be understood
becomes a problem, reported with the delivery; it never stops the rest of the batch.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# The item key that names each kind of `messaging` event (a `message` may instead be an echo
# or an unsend; see _kind_of).
ITEM_KINDS = {
    "message": "message",
    "reaction": "reaction",
    "read": "read",
    "message_edit": "edit",
    "postback": "postback",
    "referral": "referral",
}
# Below this a webhook time is in seconds (the dashboard's test events), above in milliseconds.
SECONDS_LIMIT = 100_000_000_000


@dataclass(frozen=True)
class Event:
    kind: str  # message, echo, delete, reaction, read, edit, postback, referral
    account_id: str  # the business (IG_ID)
    participant_id: str  # the customer (IGSID)
    occurred_at: datetime
    # Meta's id of the message the event is, or is about.
    mid: str | None
    # Stable across Meta's redeliveries: the same event always gets the same key.
    dedupe_key: str
    item: dict[str, Any]


@dataclass
class Parsed:
    events: list[Event] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def meta_time(value: Any) -> datetime | None:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        return None
    seconds = value if value < SECONDS_LIMIT else value / 1000
    return datetime.fromtimestamp(seconds, tz=UTC)


def parse_payload(payload: Any) -> Parsed:
    parsed = Parsed()
    entries = payload.get("entry") if isinstance(payload, dict) else None
    if not isinstance(entries, list):
        parsed.problems.append("the payload has no entry list")
        return parsed
    for e, entry in enumerate(entries):
        if not isinstance(entry, dict):
            parsed.problems.append(f"entry[{e}] is not an object")
            continue
        entry_id = str(entry.get("id") or "")
        for list_name in ("messaging", "standby"):
            for i, item in enumerate(_list(entry.get(list_name))):
                _add(parsed, entry_id, item, f"entry[{e}].{list_name}[{i}]")
        for i, change in enumerate(_list(entry.get("changes"))):
            where = f"entry[{e}].changes[{i}]"
            if not isinstance(change, dict) or not isinstance(change.get("value"), dict):
                parsed.problems.append(f"{where} has no value object")
            elif change.get("field") == "comments":
                parsed.problems.append(f"{where}: comment webhooks are not handled by dmrelay")
            else:
                _add(parsed, entry_id, change["value"], where)
    return parsed


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _id_of(item: dict[str, Any], key: str) -> str | None:
    party = item.get(key)
    value = party.get("id") if isinstance(party, dict) else None
    return str(value) if isinstance(value, str | int) and str(value) else None


def _add(parsed: Parsed, entry_id: str, item: Any, where: str) -> None:
    try:
        parsed.events.append(_event(entry_id, item))
    except ValueError as problem:
        parsed.problems.append(f"{where}: {problem}")


def _event(entry_id: str, item: Any) -> Event:
    if not isinstance(item, dict):
        raise ValueError("not an object")
    sender, recipient = _id_of(item, "sender"), _id_of(item, "recipient")
    occurred_at = meta_time(item.get("timestamp"))
    if sender is None or recipient is None or occurred_at is None:
        raise ValueError("sender.id, recipient.id and timestamp are required")
    kind = _kind_of(item)
    account_id = entry_id
    if entry_id in ("", "0"):  # the dashboard's test events: the business is a party
        account_id = sender if kind == "echo" else recipient
    participant_id = recipient if kind == "echo" or sender == account_id else sender
    mid = item[_item_key(item)].get("mid")
    if mid is not None and not isinstance(mid, str):
        raise ValueError("mid is not a string")
    if kind != "referral" and not mid:
        raise ValueError(f"a {kind} event needs a mid")
    return Event(
        kind=kind,
        account_id=account_id,
        participant_id=participant_id,
        occurred_at=occurred_at,
        mid=mid,
        dedupe_key=_dedupe_key(kind, mid, participant_id, item),
        item=item,
    )


def _item_key(item: dict[str, Any]) -> str:
    for key in ITEM_KINDS:
        if isinstance(item.get(key), dict):
            return key
    known = ", ".join(ITEM_KINDS)
    raise ValueError(f"no event this service understands (expected one of {known})")


def _kind_of(item: dict[str, Any]) -> str:
    key = _item_key(item)
    if key == "message":
        if item["message"].get("is_deleted"):
            return "delete"
        if item["message"].get("is_echo"):
            return "echo"
    return ITEM_KINDS[key]


def _dedupe_key(kind: str, mid: str | None, participant_id: str, item: dict[str, Any]) -> str:
    timestamp = item["timestamp"]
    if kind in ("message", "echo", "delete", "postback"):
        return f"{kind}:{mid}"
    if kind == "edit":
        return f"edit:{mid}:{item['message_edit'].get('num_edit', timestamp)}"
    if kind == "reaction":
        action = item["reaction"].get("action")
        return f"reaction:{mid}:{participant_id}:{action}:{timestamp}"
    if kind == "read":
        return f"read:{mid}:{timestamp}"
    return f"referral:{participant_id}:{timestamp}"
