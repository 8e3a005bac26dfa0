"""A thin client for the parts of Meta's Graph API dmrelay uses.

On aiohttp rather than httpx (which the rest of dmrelay uses): the Send API call is the
worker's hottest request, and with a hundred in flight httpx's connection pool costs several
times more CPU per call than aiohttp, and more as concurrency grows (docs/performance.md).
"""

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
from opentelemetry.trace import SpanKind, StatusCode

from app.core import tracing
from app.core.metrics import META_REQUEST_DURATION
from app.core.settings import Settings
from app.messages.interactive import meta_message
from app.meta.errors import GraphError, _int_or_none
from app.profiles.models import Connection


class GraphOperation(StrEnum):
    """What a Graph call does: the label of its latency metric."""

    SEND_MESSAGE = "send_message"
    SENDER_ACTION = "sender_action"
    MESSENGER_PROFILE = "messenger_profile"
    UPLOAD_ATTACHMENT = "upload_attachment"
    GET_ME = "get_me"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    READ = "read"
    GET_USER_PROFILE = "get_user_profile"


@dataclass(frozen=True)
class Account:
    """What the Graph API needs to act as one connected Instagram account."""

    connection: str
    platform_id: str
    page_id: str | None
    # Out of the repr, so that logging an account (or an error holding one) cannot leak it.
    access_token: str = field(repr=False)
    # Prove the app with appsecret_proof on an Instagram Login token too (a Page token always
    # is; Meta does not document it for Instagram Login, so each profile opts in).
    appsecret_proof: bool = False

    @property
    def proves_app(self) -> bool:
        return self.connection == Connection.FACEBOOK_LOGIN or self.appsecret_proof

    @property
    def send_path_id(self) -> str:
        # Instagram Login sends as the IG account; Facebook Login as its Page.
        return (
            self.platform_id
            if self.connection == Connection.INSTAGRAM_LOGIN
            else self.page_id or ""
        )


# Meta fetches an uploaded file for up to 75 s (meta-graph-api.md §2.3).
UPLOAD_TIMEOUT_SECONDS = 80.0

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
        self, operation: GraphOperation, method: str, url: str, account: Account, **kwargs: Any
    ) -> tuple[int, Any, Mapping[str, str]]:
        """Status, JSON payload (None if not JSON) and headers; GraphUnreachable if none.
        Timed, per `operation`, for the metrics; a client span while tracing is on."""
        if tracing.tracer is None:
            return await self._request(operation, method, url, account, **kwargs)
        parts = urlsplit(url)
        # The path names ids only; the token is in a header, never an attribute.
        attributes = {
            "http.request.method": method,
            "server.address": parts.hostname or "",
            "url.path": parts.path,
            "dmrelay.graph.operation": operation.value,
        }
        with tracing.span(
            f"{method} {operation}", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            answer = status, payload, _ = await self._request(
                operation, method, url, account, **kwargs
            )
            if span is not None:
                span.set_attribute("http.response.status_code", status)
                if status >= 400:
                    error = payload.get("error") if isinstance(payload, dict) else None
                    code = error.get("code") if isinstance(error, dict) else None
                    span.set_attribute("dmrelay.meta.error_code", str(code))
                    span.set_status(StatusCode.ERROR)
            return answer

    async def _request(
        self, operation: GraphOperation, method: str, url: str, account: Account, **kwargs: Any
    ) -> tuple[int, Any, Mapping[str, str]]:
        headers = {"Authorization": f"Bearer {account.access_token}"}
        if account.proves_app:
            kwargs["params"] = {**kwargs.get("params", {}), **self._proof(account)}
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

    def _proof(self, account: Account) -> dict[str, str]:
        """appsecret_proof (meta doc §8): HMAC-SHA256 of the token keyed by the app's secret
        (the Instagram app's for an Instagram Login token), or of `token|time` with
        appsecret_time where APPSECRET_PROOF_TIMESTAMPED is set (valid for 5 minutes)."""
        settings = self._settings
        secret = (
            settings.instagram_app_secret
            if account.connection == Connection.INSTAGRAM_LOGIN
            else settings.meta_app_secret
        ) or ""
        message, params = account.access_token, {}
        if settings.appsecret_proof_timestamped:
            params["appsecret_time"] = str(int(time.time()))
            message = f"{message}|{params['appsecret_time']}"
        digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
        return {"appsecret_proof": digest, **params}

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
        status, payload, headers = await self._call(
            GraphOperation.SEND_MESSAGE, "POST", url, account, json=body
        )
        backoff = throttled_for(headers)
        if status < 300 and isinstance(payload, dict) and "message_id" in payload:
            return SendAnswer(str(payload["message_id"]), backoff)
        raise self._refusal(account, status, payload, backoff)

    async def sender_action(self, account: Account, body: dict[str, Any]) -> float | None:
        """POST a sender action (react, unreact, typing, mark_seen) to the Send API, which
        answers `{"recipient_id"}` alone; returns how long Meta's usage headers ask to stop
        calling, if at all, or raises GraphError or GraphUnreachable."""
        url = self._url(account, f"{account.send_path_id}/messages")
        status, payload, headers = await self._call(
            GraphOperation.SENDER_ACTION, "POST", url, account, json=body
        )
        backoff = throttled_for(headers)
        if status < 300 and isinstance(payload, dict) and "recipient_id" in payload:
            return backoff
        raise self._refusal(account, status, payload, backoff)

    async def messenger_profile(
        self, account: Account, method: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A call to the Messenger Profile API for Instagram (ice breakers, meta doc §11.3):
        Meta's answer, or GraphError, or GraphUnreachable."""
        url = self._url(account, f"{account.send_path_id}/messenger_profile")
        params = {"platform": "instagram"}
        if method == "GET":
            params["fields"] = "ice_breakers"
        status, payload, _ = await self._call(
            GraphOperation.MESSENGER_PROFILE, method, url, account, params=params, json=body
        )
        if status < 300 and isinstance(payload, dict):
            return payload
        raise self._refusal(account, status, payload)

    async def upload_attachment(self, account: Account, kind: str, url: str) -> str:
        """The Attachment Upload API: Meta fetches the file at the URL and keeps it for
        reuse; its attachment id. Raises GraphError, or GraphUnreachable (nothing was sent
        to anyone either way)."""
        path = self._url(account, f"{account.send_path_id}/message_attachments")
        body: dict[str, Any] = {
            "message": {"attachment": {"type": kind, "payload": {"url": url, "is_reusable": True}}}
        }
        if account.connection != Connection.INSTAGRAM_LOGIN:
            body["platform"] = "instagram"  # the Page's endpoint serves Messenger too
        # Meta gives up fetching a video after 75 s: wait for its answer that long.
        timeout = aiohttp.ClientTimeout(total=UPLOAD_TIMEOUT_SECONDS, sock_connect=5.0)
        try:
            status, payload, headers = await self._call(
                GraphOperation.UPLOAD_ATTACHMENT, "POST", path, account, json=body, timeout=timeout
            )
        except GraphUnreachable as error:
            raise GraphUnreachable(error.detail, maybe_delivered=False) from error
        if status < 300 and isinstance(payload, dict) and payload.get("attachment_id"):
            return str(payload["attachment_id"])
        raise self._refusal(account, status, payload, throttled_for(headers))

    async def token_call(
        self, method: str, url: str, token: str = "", **kwargs: Any
    ) -> tuple[int, Any]:
        """A call authenticated by its parameters (a token exchange): status and JSON."""
        try:
            async with self._http.request(method, url, **kwargs) as response:
                try:
                    payload = await response.json(content_type=None)
                except ValueError:
                    payload = None
                return response.status, payload
        except (aiohttp.ClientError, TimeoutError) as error:
            raise GraphUnreachable.of(error, token) from error

    async def get_me(self, account: Account) -> dict[str, Any]:
        """The account an Instagram Login token is for (`user_id` is the id webhooks use)."""
        status, payload, _ = await self._call(
            GraphOperation.GET_ME,
            "GET",
            self._url(account, "me"),
            account,
            params={"fields": ME_FIELDS},
        )
        if status < 300 and isinstance(payload, dict) and payload.get("user_id"):
            return payload
        raise self._refusal(account, status, payload)

    async def subscribe(self, account: Account) -> None:
        """Have Meta deliver the account's webhooks (without this, nothing arrives)."""
        url = self._url(account, "me/subscribed_apps")
        params = {"subscribed_fields": SUBSCRIBED_FIELDS}
        status, payload, _ = await self._call(
            GraphOperation.SUBSCRIBE, "POST", url, account, params=params
        )
        if status >= 300 or not (isinstance(payload, dict) and payload.get("success")):
            raise self._refusal(account, status, payload)

    async def unsubscribe(self, account: Account) -> None:
        """Have Meta stop delivering the account's webhooks to this app: `DELETE
        /me/subscribed_apps` with an Instagram user token, `DELETE /{PAGE_ID}/subscribed_apps`
        with a Page token (Meta's Page Subscribed Apps reference); `{"success": true}`."""
        owner = "me" if account.connection == Connection.INSTAGRAM_LOGIN else account.page_id
        url = self._url(account, f"{owner}/subscribed_apps")
        status, payload, _ = await self._call(GraphOperation.UNSUBSCRIBE, "DELETE", url, account)
        if status >= 300 or not (isinstance(payload, dict) and payload.get("success")):
            raise self._refusal(account, status, payload)

    async def list_conversations(
        self, account: Account, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the account's conversations, newest first (meta doc §7), and the
        cursor of the next page (None on the last: Meta gives `next` only while there is
        more, even after an empty page)."""
        owner = "me" if account.connection == Connection.INSTAGRAM_LOGIN else account.page_id
        params: dict[str, str | int] = {
            "platform": "instagram",
            "fields": "id,updated_time,participants",
            "limit": limit,
        }
        if after is not None:
            params["after"] = after
        payload = await self._read(account, f"{owner}/conversations", params)
        data = payload.get("data")
        paging = _object(payload.get("paging"))
        cursors = _object(paging.get("cursors"))
        following = cursors.get("after") if paging.get("next") else None
        return [c for c in data if isinstance(c, dict)] if isinstance(data, list) else [], (
            str(following) if following else None
        )

    async def conversation_message_ids(self, account: Account, conversation_id: str) -> list[str]:
        """The ids of a conversation's messages, newest first."""
        payload = await self._read(account, conversation_id, {"fields": "messages"})
        messages = payload.get("messages")
        data = messages.get("data") if isinstance(messages, dict) else None
        return [str(m["id"]) for m in data or [] if isinstance(m, dict) and "id" in m]

    async def message_details(self, account: Account, mid: str) -> dict[str, Any]:
        return await self._read(
            account, mid, {"fields": "id,created_time,from,to,message,attachments"}
        )

    async def _read(self, account: Account, path: str, params: dict[str, Any]) -> dict[str, Any]:
        status, payload, _ = await self._call(
            GraphOperation.READ, "GET", self._url(account, path), account, params=params
        )
        if status < 300 and isinstance(payload, dict):
            return payload
        raise self._refusal(account, status, payload)

    async def get_user_profile(self, account: Account, user_id: str) -> dict[str, Any]:
        """The User Profile API: what Meta shares about a participant who has messaged the
        account (before that, Meta answers code 230, "user consent is required")."""
        url = self._url(account, user_id)
        status, payload, _ = await self._call(
            GraphOperation.GET_USER_PROFILE,
            "GET",
            url,
            account,
            params={"fields": USER_PROFILE_FIELDS},
        )
        if status < 300 and isinstance(payload, dict):
            return payload
        raise self._refusal(account, status, payload)


# What dmrelay asks Meta for, connecting with Instagram Login (meta doc §11.6): the account,
# its messages, and comments (private replies).
INSTAGRAM_LOGIN_SCOPES = (
    "instagram_business_basic,instagram_business_manage_messages,instagram_business_manage_comments"
)
ME_FIELDS = "user_id,username,name,profile_picture_url"
# The webhook fields dmrelay applies (app/inbound/parsing.py).
SUBSCRIBED_FIELDS = (
    "messages,messaging_postbacks,message_reactions,messaging_seen,messaging_referral,message_edit,"
    "comments"
)


@dataclass(frozen=True)
class IssuedToken:
    access_token: str = field(repr=False)
    # Seconds it lives, as Meta says (None: Meta did not say).
    expires_in: int | None


class InstagramLogin:
    """The token calls of Instagram Login (meta doc §1, §11.6), authenticated by the Instagram
    app's id and secret (never appsecret_proof), and the account reads that follow them."""

    def __init__(self, graph: GraphClient, settings: Settings) -> None:
        self._graph = graph
        self._settings = settings

    def authorize_url(self, state: str) -> str:
        query = urlencode(
            {
                "client_id": self._settings.instagram_app_id,
                "redirect_uri": self._settings.instagram_redirect_uri,
                "response_type": "code",
                "scope": INSTAGRAM_LOGIN_SCOPES,
                "state": state,
            }
        )
        return f"{self._settings.instagram_login_url('authorize')}?{query}"

    async def exchange_code(self, code: str) -> str:
        """A short-lived token for the authorize page's code."""
        form = {
            "client_id": self._settings.instagram_app_id or "",
            "client_secret": self._settings.instagram_app_secret or "",
            "grant_type": "authorization_code",
            "redirect_uri": self._settings.instagram_redirect_uri or "",
            "code": code,
        }
        url = self._settings.instagram_login_url("exchange")
        status, payload = await self._graph.token_call("POST", url, data=form)
        # Meta documents {"data": [{...}]}; clients also see the flat object (§11.6).
        answer = payload.get("data", [payload]) if isinstance(payload, dict) else None
        first = answer[0] if isinstance(answer, list) and answer else None
        token = first.get("access_token") if isinstance(first, dict) else None
        if status >= 300 or not isinstance(token, str):
            raise _token_refusal(status, payload, "exchanging the authorization code")
        return token

    async def long_lived(self, short_lived: str) -> IssuedToken:
        secret = self._settings.instagram_app_secret
        params = {"grant_type": "ig_exchange_token", "client_secret": secret}
        return await self._token("access_token", params, short_lived)

    async def refresh(self, long_lived: str) -> IssuedToken:
        return await self._token(
            "refresh_access_token", {"grant_type": "ig_refresh_token"}, long_lived
        )

    async def _token(self, path: str, params: dict[str, Any], token: str) -> IssuedToken:
        base = self._settings.graph_base_url(Connection.INSTAGRAM_LOGIN)
        status, payload = await self._graph.token_call(
            "GET", f"{base}/{path}", params={**params, "access_token": token}, token=token
        )
        issued = payload.get("access_token") if isinstance(payload, dict) else None
        if status >= 300 or not isinstance(issued, str):
            raise _token_refusal(status, payload, path.replace("_", " "))
        expires_in = payload.get("expires_in")
        return IssuedToken(issued, int(expires_in) if isinstance(expires_in, int | float) else None)


def _token_refusal(status: int, payload: Any, doing: str) -> GraphError:
    """Meta's refusal of a token call: a Graph error, or the code exchange's own shape
    ({"error_type", "code", "error_message"})."""
    if isinstance(payload, dict) and "error_message" in payload:
        return GraphError(
            _int_or_none(payload.get("code")), None, str(payload["error_message"]), status
        )
    error = GraphError.from_response(status, payload)
    error.message = error.message or f"Meta refused {doing}"
    return error


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


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
    return _throttled_for(
        headers.get("x-business-use-case-usage", "{}"), headers.get("x-app-usage", "{}")
    )


# Every answer carries both headers, and their values repeat (usage moves by whole percents):
# decoded once per value, not per send (3 µs of a send's CPU, 0.1 µs remembered).
@lru_cache(maxsize=1024)
def _throttled_for(business_use_case_usage: str, app_usage_header: str) -> float | None:
    seconds: float | None = None
    for usages in _json_object(business_use_case_usage).values():
        for usage in usages if isinstance(usages, list) else []:
            minutes = usage.get("estimated_time_to_regain_access") if isinstance(usage, dict) else 0
            if isinstance(minutes, int | float) and minutes > 0:
                seconds = max(seconds or 0.0, minutes * 60.0)
    app_usage = _json_object(app_usage_header)
    if seconds is None and any(isinstance(v, int | float) and v >= 100 for v in app_usage.values()):
        seconds = 0.0  # throttled, duration unknown: the caller picks a pause
    return seconds


def _json_object(value: str) -> dict[str, Any]:
    try:
        decoded = json.loads(value)
    except ValueError:
        return {}
    return decoded if isinstance(decoded, dict) else {}


def sender_action_body(
    recipient_id: str, action: str, payload: dict[str, str] | None = None
) -> dict[str, Any]:
    """The Send API body for a sender action: only `recipient` and `sender_action` (and a
    reaction's `payload`), as Meta requires (meta doc §2.5, §2.6)."""
    body: dict[str, Any] = {"recipient": {"id": recipient_id}, "sender_action": action}
    if payload is not None:
        body["payload"] = payload
    return body


def send_body(
    recipient_id: str,
    text: str | None,
    attachment: dict[str, Any] | None,
    tag: str | None,
    reply_to_mid: str | None,
    interactive: dict[str, Any] | None = None,
    comment_id: str | None = None,
) -> dict[str, Any]:
    """The Send API body for one message; with `comment_id`, a private reply to that comment
    (meta doc §2.9), which Meta delivers to its author. An attachment is sent by Meta's
    reusable attachment id (`external_id`) once it has one, else by its URL."""
    message: dict[str, Any] = (
        {"text": text}
        if attachment is None
        else {"attachment": {"type": attachment["type"], "payload": _payload(attachment)}}
    )
    if interactive:
        message = meta_message(text, interactive)
    recipient = {"id": recipient_id} if comment_id is None else {"comment_id": comment_id}
    body: dict[str, Any] = {"recipient": recipient, "message": message}
    if tag is not None:
        body["messaging_type"] = "MESSAGE_TAG"
        body["tag"] = tag
    if reply_to_mid is not None:
        body["reply_to"] = {"mid": reply_to_mid}
    return body


def _payload(attachment: dict[str, Any]) -> dict[str, str]:
    if attachment.get("external_id"):
        return {"attachment_id": attachment["external_id"]}
    return {"url": attachment["url"]}
