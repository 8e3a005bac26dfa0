"""Ice breakers: the questions Instagram offers a person opening a conversation with the
account, kept by Meta in the account's messenger profile (meta doc §11.3), not by dmrelay.
A tap arrives as a postback (the inbound message's `tapped_action`)."""

from typing import Any

from app.core.errors import APIError
from app.core.settings import Settings
from app.ice_breakers.schemas import IceBreaker
from app.meta.errors import GraphError
from app.meta.graph import GraphClient, GraphUnreachable
from app.profiles.models import Profile
from app.profiles.service import graph_account


async def _call(
    graph: GraphClient,
    settings: Settings,
    profile: Profile,
    method: str,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    try:
        return await graph.messenger_profile(graph_account(profile, settings), method, body)
    except GraphError as error:
        status = 502 if error.retryable or error.code is None else 422
        raise APIError(status, f"Meta refused the ice breakers: {error.message}") from error
    except GraphUnreachable as error:
        raise APIError(502, "dmrelay could not reach Meta's Graph API") from error


async def get(graph: GraphClient, settings: Settings, profile: Profile) -> list[IceBreaker]:
    answer = await _call(graph, settings, profile, "GET")
    return questions_of(answer.get("data"))


async def put(
    graph: GraphClient, settings: Settings, profile: Profile, items: list[IceBreaker]
) -> None:
    """Replace the account's ice breakers (the `default` locale, which Meta requires)."""
    actions = [item.model_dump() for item in items]
    body = {
        "platform": "instagram",
        "ice_breakers": [{"locale": "default", "call_to_actions": actions}],
    }
    _succeeded(await _call(graph, settings, profile, "POST", body))


async def delete(graph: GraphClient, settings: Settings, profile: Profile) -> None:
    body = {"platform": "instagram", "fields": ["ice_breakers"]}
    _succeeded(await _call(graph, settings, profile, "DELETE", body))


def _succeeded(answer: dict[str, Any]) -> None:
    # Meta's reference shows {"success": "true"}, a string, as well as the boolean.
    if answer.get("success") not in (True, "true"):
        raise APIError(502, f"Meta did not confirm the change: {answer}")


def questions_of(data: Any) -> list[IceBreaker]:
    """The questions of Meta's answer, in either format: the `default` locale's (else the
    first locale's) `call_to_actions`, or the old flat list, or either under `ice_breakers`."""
    entries = data if isinstance(data, list) else []
    if len(entries) == 1 and isinstance(entries[0], dict) and "ice_breakers" in entries[0]:
        entries = entries[0]["ice_breakers"] or []
    entries = [e for e in entries if isinstance(e, dict)]
    locales = [e for e in entries if "call_to_actions" in e]
    if locales:
        chosen = next((e for e in locales if e.get("locale") == "default"), locales[0])
        entries = [e for e in chosen["call_to_actions"] or [] if isinstance(e, dict)]
    return [
        IceBreaker.model_construct(question=str(e["question"]), payload=str(e["payload"]))
        for e in entries
        if "question" in e and "payload" in e
    ]
