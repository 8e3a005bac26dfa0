"""The pipeline's first step: the body of a webhook delivery, parsed into one typed event per
thing that happened.

Shapes: `entry[].messaging[]`, `entry[].standby[]` (a conversation another app owns) and the
dashboard test shape `entry[].changes[{field, value}]`. Anything that cannot be understood
becomes a problem, reported with the webhook delivery; it never stops the rest of the batch.
"""

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from app.inbound.models import EventKind

# The item key that names each kind of `messaging` event (a `message` may instead be an echo
# or an unsend; see _kind_of).
ITEM_KINDS = {
    "message": EventKind.MESSAGE,
    "reaction": EventKind.REACTION,
    "read": EventKind.READ,
    "message_edit": EventKind.EDIT,
    "postback": EventKind.POSTBACK,
    "referral": EventKind.REFERRAL,
}
# Below this a webhook time is in seconds (the dashboard's test events), above in milliseconds.
SECONDS_LIMIT = 100_000_000_000


class ChatKey(NamedTuple):
    """A chat, as webhooks name it."""

    account_id: str  # the business (IG_ID)
    participant_id: str  # the customer (IGSID)


@dataclass(frozen=True)
class Event:
    kind: EventKind
    account_id: str  # the business (IG_ID)
    participant_id: str  # the customer (IGSID)
    occurred_at: datetime
    # Meta's id of the message the event is, or is about.
    mid: str | None
    # Stable across Meta's redeliveries: the same event always gets the same key.
    dedupe_key: str
    item: dict[str, Any]

    @property
    def chat(self) -> ChatKey:
        return ChatKey(self.account_id, self.participant_id)


@dataclass(frozen=True)
class CommentEvent:
    """A comment on one of the account's posts (the `comments` field, meta doc §11.4)."""

    account_id: str  # the business (IG_ID), the post's owner
    external_id: str
    commented_at: datetime
    author_id: str | None
    author_username: str | None
    text: str | None
    post_id: str | None
    parent_id: str | None
    media_product_type: str | None


@dataclass
class Parsed:
    events: list[Event] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    comments: list[CommentEvent] = field(default_factory=list)


# Deeper than any Meta payload (a few levels), and far from the interpreter's recursion
# limit, which json.loads would otherwise meet: at that depth a garbage collection that runs
# a finalizer fails it, and the error surfaces far from here.
MAX_DEPTH = 100


def too_deep(body: str) -> bool:
    """Whether the JSON text nests past MAX_DEPTH. Nesting is at most the count of its
    brackets, counted at C speed; only a body with that many is walked."""
    if body.count("[") + body.count("{") <= MAX_DEPTH:
        return False
    depth, in_string, escaped = 0, False, False
    for char in body:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif char in "]}":
            depth -= 1
    return False


def parse_body(body: str) -> Parsed:
    """A webhook delivery's body, as stored."""
    if too_deep(body):
        return Parsed(problems=["the body's JSON is nested too deeply to read"])
    try:
        payload = json.loads(body)
        if "\\u0000" in body:  # the only way JSON carries U+0000; rare, so the walk is too
            payload = _without_nul(payload)
    except ValueError:
        return Parsed(problems=["the body is not JSON"])
    except RecursionError:
        # No Meta payload nests deeper than a few levels; reading one that does would fail
        # the same way at every try, and the webhook delivery would never leave `received`.
        return Parsed(problems=["the body's JSON is nested too deeply to read"])
    return parse_payload(payload)


def _without_nul(value: Any) -> Any:
    """U+0000 as U+FFFD, the replacement character: PostgreSQL's text and jsonb cannot hold
    it, and a webhook delivery that carried one could never be stored."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    return value


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
            elif change.get("field") in ("comments", "live_comments"):
                try:
                    parsed.comments.append(_comment(entry_id, entry.get("time"), change["value"]))
                except ValueError as problem:
                    parsed.problems.append(f"{where}: {problem}")
            else:
                _add(parsed, entry_id, change["value"], where)
    return parsed


def _comment(entry_id: str, time: Any, value: dict[str, Any]) -> CommentEvent:
    # Meta's samples disagree: `id`, or `comment_id` (Facebook Login).
    comment_id = value.get("id") or value.get("comment_id")
    # The entry's time, in seconds for comments (detected as for any time): when it was made.
    commented_at = meta_time(time)
    if not isinstance(comment_id, str | int) or not entry_id or commented_at is None:
        raise ValueError("a comment needs an id, and its entry an id and a time")
    author = _object(value.get("from"))
    media = _object(value.get("media"))

    def text(source: dict[str, Any], key: str) -> str | None:
        found = source.get(key)
        return str(found) if isinstance(found, str | int) and str(found) else None

    return CommentEvent(
        account_id=entry_id,
        external_id=str(comment_id),
        commented_at=commented_at,
        author_id=text(author, "id"),
        author_username=text(author, "username"),
        text=text(value, "text"),
        post_id=text(media, "id"),
        parent_id=text(value, "parent_id"),
        media_product_type=text(media, "media_product_type"),
    )


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
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
        account_id = sender if kind is EventKind.ECHO else recipient
    participant_id = recipient if kind is EventKind.ECHO or sender == account_id else sender
    mid = item[_item_key(item)].get("mid")
    if mid is not None and not isinstance(mid, str):
        raise ValueError("mid is not a string")
    if kind is not EventKind.REFERRAL and not mid:
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


def _kind_of(item: dict[str, Any]) -> EventKind:
    key = _item_key(item)
    if key == "message":
        if item["message"].get("is_deleted"):
            return EventKind.DELETE
        if item["message"].get("is_echo"):
            return EventKind.ECHO
    return ITEM_KINDS[key]


# Kinds that happen once per mid.
_ONCE_PER_MID = frozenset({EventKind.MESSAGE, EventKind.ECHO, EventKind.DELETE, EventKind.POSTBACK})


def _dedupe_key(kind: EventKind, mid: str | None, participant_id: str, item: dict[str, Any]) -> str:
    timestamp = item["timestamp"]
    if kind in _ONCE_PER_MID:
        return f"{kind}:{mid}"
    if kind is EventKind.EDIT:
        return f"edit:{mid}:{item['message_edit'].get('num_edit', timestamp)}"
    if kind is EventKind.REACTION:
        action = item["reaction"].get("action")
        return f"reaction:{mid}:{participant_id}:{action}:{timestamp}"
    if kind is EventKind.READ:
        return f"read:{mid}:{timestamp}"
    return f"referral:{participant_id}:{timestamp}"
