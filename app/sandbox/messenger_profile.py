"""The Messenger Profile API's ice breakers for Instagram, as the sandbox serves them (meta doc
§11.3): stored per account and locale, in the format they were set in.

New format: `ice_breakers: [{locale, call_to_actions: [{question, payload}]}]`, a `default`
locale required; old flat format: `ice_breakers: [{question, payload}]`. More than 4 questions
in a locale, an empty question or payload, no `default`, or the two formats mixed → 400 code
100 (Meta's code for these is undocumented: a stand-in)."""

from typing import Any

from app.sandbox.errors import GraphError

MAX_QUESTIONS = 4


def _invalid(problem: str) -> GraphError:
    return GraphError(100, f"(#100) Invalid ice_breakers: {problem}")


def _questions(items: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(items, list) or not 0 < len(items) <= MAX_QUESTIONS:
        raise _invalid(f"{where} must hold 1 to {MAX_QUESTIONS} questions")
    questions = []
    for item in items:
        question = item.get("question") if isinstance(item, dict) else None
        payload = item.get("payload") if isinstance(item, dict) else None
        if not (isinstance(question, str) and question and isinstance(payload, str) and payload):
            raise _invalid(f"each of {where} needs a question and a payload")
        questions.append({"question": question, "payload": payload})
    return questions


def parse(params: dict[str, Any]) -> list[dict[str, Any]]:
    """The ice breakers to store, as they will be read back; GraphError if Meta refuses."""
    if params.get("platform") not in (None, "instagram"):
        raise GraphError(100, "(#100) Param platform must be instagram")
    given = params.get("ice_breakers")
    if not isinstance(given, list) or not given:
        raise _invalid("ice_breakers must be a non-empty array")
    new = ["call_to_actions" in item for item in given if isinstance(item, dict)]
    if len(new) != len(given) or (any(new) and not all(new)):
        raise _invalid("use either the locale format or the flat one, not both")
    if not all(new):
        return _questions(given, "ice_breakers")
    locales = [item.get("locale") for item in given]
    if "default" not in locales:
        raise _invalid("a default locale is required")
    return [
        {"call_to_actions": _questions(item["call_to_actions"], "call_to_actions"),
         "locale": item["locale"]}
        for item in given
    ]  # fmt: skip
