"""Meta's error codes: which are worth retrying, and what to tell the user.

Keyed on `error.code` and `error_subcode`, never on the HTTP status or the (localised)
message text.
"""

from dataclasses import dataclass
from typing import Any

THROTTLE_CODES = frozenset({4, 17, 32, 613, 80001, 80002, 80006, 341})
TRANSIENT_CODES = frozenset({1, 2, -1, -2}) | THROTTLE_CODES
# Throttle codes whose subcode says "stop", not "slow down".
PERMANENT_SUBCODES = frozenset({2018338, 1893016})
# An attachment id Meta does not know, or that another account uploaded.
NOT_OWNED_ATTACHMENT = 2018074
TOKEN_CODE = 190


@dataclass
class GraphError(Exception):
    """An error answer from the Graph API."""

    code: int | None
    subcode: int | None
    message: str
    http_status: int
    is_transient: bool = False
    # From Meta's usage headers: how long to stop calling, in seconds (0: unknown).
    throttled_for: float | None = None

    @classmethod
    def from_response(
        cls, http_status: int, body: Any, throttled_for: float | None = None
    ) -> "GraphError":
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            message = f"HTTP {http_status} without a Graph error body"
            return cls(None, None, message, http_status, throttled_for=throttled_for)
        return cls(
            code=_int_or_none(error.get("code")),
            subcode=_int_or_none(error.get("error_subcode")),
            message=str(error.get("message", "")),
            http_status=http_status,
            is_transient=bool(error.get("is_transient")),
            throttled_for=throttled_for,
        )

    @property
    def retryable(self) -> bool:
        if self.subcode in PERMANENT_SUBCODES:
            return False
        if self.code in TRANSIENT_CODES:
            return True
        if self.code is None:
            return self.http_status >= 500
        return self.is_transient and not _is_known_permanent(self.code)

    @property
    def is_throttle(self) -> bool:
        return self.code in THROTTLE_CODES and self.subcode not in PERMANENT_SUBCODES

    def details(self) -> dict[str, str | None]:
        return {
            "platform_error_code": None if self.code is None else str(self.code),
            "platform_error_subcode": None if self.subcode is None else str(self.subcode),
            "platform_error_message": self.message or None,
        }

    def explain(self) -> str:
        """A sentence that tells the user what happened and what to do."""
        return _explain(self.code, self.subcode)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _is_known_permanent(code: int) -> bool:
    return code in {10, 100, 190, 551} or 200 <= code <= 299


_BY_SUBCODE = {
    2534022: "The 24-hour messaging window is closed: Instagram accepts no reply until the "
    "participant writes again (a human agent may use tag HUMAN_AGENT within 7 days).",
    2018278: "The messaging window is closed: wait for the participant to write again.",
    2018108: "This person cannot receive your messages right now.",
    1893063: "Instagram has temporarily restricted this account from sending messages; "
    "review the account's status in the Instagram app.",
    2534077: "Meta cannot verify the link between the Instagram account and its Page; "
    "reconnect the account.",
    2534014: "Instagram knows no user with this id: participant_external_id must be the "
    "Instagram-scoped id (IGSID) Meta gives in webhooks.",
    2534015: "Instagram refused the message content as invalid for this message type.",
    2534041: "The account owner has turned off access to Instagram messages for apps; turn "
    "it on in the Instagram app's settings.",
    2018008: "Meta could not fetch the media from its URL; check that it is public and small "
    "enough.",
    2018047: "Meta could not upload the media; check that the file matches its type.",
    2018109: "The attachment is too large for Instagram.",
    2018294: "The video upload timed out or the file is corrupted.",
    NOT_OWNED_ATTACHMENT: "Meta does not know the attachment id, or another account uploaded "
    "it; the file is uploaded again on the next attempt.",
}

_BY_CODE = {
    190: "The Instagram access token is invalid or expired: reconnect the account with a "
    "fresh token.",
    10: "Meta denied permission for this send; check the app's permissions and the "
    "messaging window.",
    551: "This person isn't available right now (they may have blocked the account or "
    "deactivated theirs).",
    100: "Meta rejected the request as invalid.",
    368: "The account is temporarily blocked for policy violations.",
}


def _explain(code: int | None, subcode: int | None) -> str:
    if subcode in _BY_SUBCODE:
        return _BY_SUBCODE[subcode]
    if code in THROTTLE_CODES:
        return "Meta is rate-limiting this account; dmrelay retries later."
    if code in {1, 2, -1, -2}:
        return "Meta had a temporary error; dmrelay retries later."
    if code in _BY_CODE:
        return _BY_CODE[code]
    if code is not None and 200 <= code <= 299:
        return "The app lacks a permission Meta requires for this send; check the app's review."
    return "Meta refused the message."
