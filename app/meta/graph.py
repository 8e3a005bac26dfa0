"""A thin client for the parts of Meta's Graph API dmrelay uses.

On aiohttp rather than httpx (which the rest of dmrelay uses): the Send API call is the
worker's hottest request, and with a hundred in flight httpx's connection pool costs several
times more CPU per call than aiohttp, and more as concurrency grows (docs/performance.md).
"""

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from app.core.metrics import META_REQUEST_DURATION
from app.core.settings import Settings
from app.meta.errors import GraphError
from app.profiles.models import Connection


@dataclass(frozen=True)
class Account:
    """What the Graph API needs to act as one connected Instagram account."""

    connection: str
    platform_id: str
    page_id: str | None
    # Out of the repr, so that logging an account (or an error holding one) cannot leak it.
    access_token: str = field(repr=False)

    @property
    def send_path_id(self) -> str:
        # Instagram Login sends as the IG account; Facebook Login as its Page.
        return (
            self.platform_id
            if self.connection == Connection.INSTAGRAM_LOGIN
            else self.page_id or ""
        )


USER_PROFILE_FIELDS = (
    "name,username,profile_pic,follower_count,is_verified_user,is_user_follow_business,"
    "is_business_follow_user"
)


class GraphUnreachable(Exception):
    """No answer from the Graph API: it could not be reached, or the call broke off."""

    def __init__(self, detail: str, maybe_delivered: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        # Whether Meta may have received the request (and acted on it) before the failure.
        self.maybe_delivered = maybe_delivered

    @classmethod
    def of(cls, error: Exception, access_token: str) -> "GraphUnreachable":
        detail = redact(f"{type(error).__name__}: {error}".rstrip(": "), access_token)
        never_sent = isinstance(
            error, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError
        )
        return cls(detail, maybe_delivered=not never_sent)


def create_session(timeout_seconds: float, connections: int = 100) -> aiohttp.ClientSession:
    """The HTTP session a GraphClient calls through (one per process, made in its loop)."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout_seconds, sock_connect=5.0),
        connector=aiohttp.TCPConnector(limit=connections),
    )


class GraphClient:
    def __init__(self, settings: Settings, http: aiohttp.ClientSession) -> None:
        self._settings = settings
        self._http = http

    async def _call(
        self, operation: str, method: str, url: str, account: Account, **kwargs: Any
    ) -> tuple[int, Any, Mapping[str, str]]:
        """Status, JSON payload (None if not JSON) and headers; GraphUnreachable if none.
        Timed, per `operation`, for the metrics."""
        headers = {"Authorization": f"Bearer {account.access_token}"}
        started = time.perf_counter()
        outcome = "unreachable"  # unless it answers
        try:
            async with self._http.request(method, url, headers=headers, **kwargs) as response:
                try:
                    payload = await response.json(content_type=None)
                except ValueError:
                    payload = None
                outcome = "ok" if response.status < 300 else "error"
                return response.status, payload, response.headers
        except (aiohttp.ClientError, TimeoutError) as error:
            raise GraphUnreachable.of(error, account.access_token) from error
        finally:
            META_REQUEST_DURATION.labels(operation, outcome).observe(time.perf_counter() - started)

    def _refusal(
        self, account: Account, status: int, payload: Any, backoff: float | None = None
    ) -> GraphError:
        """Meta's error answer. Its message is stored, logged and shown to API clients, and
        Meta quotes the token in some ("Malformed access token EAAG..."): never that."""
        error = GraphError.from_response(status, payload, backoff)
        error.message = redact(error.message, account.access_token)
        return error

    def _url(self, account: Account, path: str) -> str:
        base = self._settings.graph_base_url(account.connection)
        return f"{base}/{self._settings.meta_graph_version}/{path}"

    async def send_message(self, account: Account, body: dict[str, Any]) -> "SendAnswer":
        """POST to the Send API; returns Meta's answer or raises GraphError, or
        GraphUnreachable (whether Meta got the request may then be unknown: the caller
        decides)."""
        url = self._url(account, f"{account.send_path_id}/messages")
        status, payload, headers = await self._call("send_message", "POST", url, account, json=body)
        backoff = throttled_for(headers)
        if status < 300 and isinstance(payload, dict) and "message_id" in payload:
            return SendAnswer(str(payload["message_id"]), backoff)
        raise self._refusal(account, status, payload, backoff)

    async def get_user_profile(self, account: Account, user_id: str) -> dict[str, Any]:
        """The User Profile API: what Meta shares about a participant who has messaged the
        account (before that, Meta answers code 230, "user consent is required")."""
        url = self._url(account, user_id)
        status, payload, _ = await self._call(
            "get_user_profile", "GET", url, account, params={"fields": USER_PROFILE_FIELDS}
        )
        if status < 300 and isinstance(payload, dict):
            return payload
        raise self._refusal(account, status, payload)


def redact(text: str, secret: str) -> str:
    return text.replace(secret, "[access token]") if secret else text


@dataclass(frozen=True)
class SendAnswer:
    message_id: str
    # Meta's usage headers said to stop calling for this long (seconds), if at all.
    throttled_for: float | None


def throttled_for(headers: Mapping[str, str]) -> float | None:
    """How long Meta's usage headers ask us to stop calling, in seconds.

    `X-Business-Use-Case-Usage` gives `estimated_time_to_regain_access` in minutes per
    business object; an `X-App-Usage` figure at 100 % means throttled, for an unknown time.
    """
    seconds: float | None = None
    for usages in _json_header(headers, "x-business-use-case-usage").values():
        for usage in usages if isinstance(usages, list) else []:
            minutes = usage.get("estimated_time_to_regain_access") if isinstance(usage, dict) else 0
            if isinstance(minutes, int | float) and minutes > 0:
                seconds = max(seconds or 0.0, minutes * 60.0)
    app_usage = _json_header(headers, "x-app-usage")
    if seconds is None and any(isinstance(v, int | float) and v >= 100 for v in app_usage.values()):
        seconds = 0.0  # throttled, duration unknown: the caller picks a pause
    return seconds


def _json_header(headers: Mapping[str, str], name: str) -> dict[str, Any]:
    try:
        value = json.loads(headers.get(name, "{}"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def send_body(
    recipient_id: str,
    text: str | None,
    attachment: dict[str, str] | None,
    tag: str | None,
    reply_to_mid: str | None,
) -> dict[str, Any]:
    """The Send API body for one message."""
    message: dict[str, Any] = (
        {"text": text}
        if attachment is None
        else {"attachment": {"type": attachment["type"], "payload": {"url": attachment["url"]}}}
    )
    body: dict[str, Any] = {"recipient": {"id": recipient_id}, "message": message}
    if tag is not None:
        body["messaging_type"] = "MESSAGE_TAG"
        body["tag"] = tag
    if reply_to_mid is not None:
        body["reply_to"] = {"mid": reply_to_mid}
    return body
