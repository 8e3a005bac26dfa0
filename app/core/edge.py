"""The edge: what every request must satisfy before any route (express lane or FastAPI)
sees it. Pure ASGI, so both lanes share it and nothing is read or parsed first.

- The request target: no NUL (U+0000) or lone surrogate in the path or the query string.
  PostgreSQL's text cannot hold them and file paths cannot either, so a path id or query
  value carrying one would otherwise fail deep inside (a 500), wherever it was used.
- The body: at most a cap, per path. A Content-Length over it is refused at once, unread;
  a body without one (chunked) is counted as the app reads it and refused the moment it
  passes the cap. The rest is never handed to the app: the server discards it as it
  arrives. (Closing the connection instead would reset it under a client still sending,
  and the client would lose the 413.)
"""

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import error_response
from app.core.schemas import text_problem

log = logging.getLogger(__name__)


class BodyTooLarge(HTTPException):
    """Raised from `receive` to the app reading the body: an HTTPException, so that
    FastAPI passes it through its body parsing (anything else it turns into a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large(limit))


def too_large(limit: int) -> str:
    return f"The request body is too large: this endpoint accepts at most {limit} bytes"


class BodyCaps:
    """The body caps: one for all, but for the paths and uploads given their own."""

    def __init__(
        self,
        max_body_bytes: int,
        path_limits: Mapping[str, int] | None = None,
        upload_limits: Sequence[tuple[re.Pattern[str], int]] = (),
    ) -> None:
        self.max_body_bytes = max_body_bytes
        # Exact paths with a cap of their own (Meta's webhook batches).
        self.path_limits = dict(path_limits or {})
        # Paths whose multipart/form-data requests (file uploads) have a cap of their own:
        # only those, so a JSON body there keeps the small cap.
        self.upload_limits = list(upload_limits)

    def limit(self, scope: Scope) -> int:
        path = scope["path"]
        if path in self.path_limits:
            return self.path_limits[path]
        if self.upload_limits and _is_multipart(scope):
            for pattern, limit in self.upload_limits:
                if pattern.fullmatch(path):
                    return limit
        return self.max_body_bytes

    def admits(self, scope: Scope) -> bool:
        """Whether the edge lets the request through as it is, with nothing to count: a
        storable target and a Content-Length within its cap (the express front serves only
        those, app/core/front.py)."""
        length = _content_length(scope)
        return length is not None and length <= self.limit(scope) and not _target_refusal(scope)


class EdgeGuard:
    def __init__(self, app: ASGIApp, caps: BodyCaps) -> None:
        self.app = app
        self.caps = caps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if refusal := _target_refusal(scope):
            await _answer(scope, receive, send, *refusal)
            return
        path = scope["path"]
        limit = self.caps.limit(scope)

        async def refuse() -> None:
            if path in self.caps.path_limits:
                # Meta retries a refused webhook, then unsubscribes the app: worth a warning.
                log.warning("refused a %s body over its %d-byte cap", path, limit)
            await _answer(scope, receive, send, 413, too_large(limit))

        length = _content_length(scope)
        if length is not None and length > limit:
            await refuse()
            return
        if length is not None:
            # The server's HTTP parser delivers no more than Content-Length: nothing to count.
            await self.app(scope, receive, send)
            return
        await _Capped(self.app, limit, refuse)(scope, receive, send)


class _Capped:
    """One request, its body counted as the app reads it."""

    def __init__(self, app: ASGIApp, limit: int, refuse: Callable[[], Awaitable[None]]) -> None:
        self.app = app
        self.limit = limit
        self.refuse = refuse
        self.received = 0
        self.started = False  # the app began its response
        self.refused = False  # we sent the 413

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def capped_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.limit:
                    # Answered here, so that whoever catches the exception (FastAPI's
                    # handlers, or nobody: the express lane) the client gets the same 413.
                    if not self.started and not self.refused:
                        self.refused = True
                        await self.refuse()
                    raise BodyTooLarge(self.limit)
            return message

        async def tracked_send(message: Message) -> None:
            if self.refused:
                return  # the app's own answer to the exception: ours went first
            if message["type"] == "http.response.start":
                self.started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, tracked_send)
        except BodyTooLarge:
            if not self.refused:
                raise


def _target_refusal(scope: Scope) -> tuple[int, str, list[dict[str, str]] | None] | None:
    # A path that cannot be stored can name nothing stored: not found, as any unknown id.
    if problem := text_problem(scope["path"]):
        return 404, f"Not found: the request path {problem}", None
    # The query string is still percent-encoded; decoding never yields a surrogate (invalid
    # UTF-8 becomes U+FFFD), so only an encoded NUL can get through.
    query: bytes = scope["query_string"]
    if b"%00" in query or b"\x00" in query:
        fields = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        field = next((name for name, value in fields if "\x00" in name + value), "query")
        message = f"{field} may not contain the NUL character (U+0000)"
        return 422, f"Invalid request: {message}", [{"field": field, "message": message}]
    return None


def _is_multipart(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bytes(value).lower().startswith(b"multipart/form-data")
    return False


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server's HTTP parser refuses these
    return None


async def _answer(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    message: str,
    errors: list[dict[str, str]] | None = None,
) -> None:
    """A JSON error, as app/core/errors.py gives them."""
    await error_response(status, message, errors)(scope, receive, send)
