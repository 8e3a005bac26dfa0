import logging
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import logs
from app.core.availability import MESSAGES, RETRY_AFTER_SECONDS, unavailable
from app.core.errors import error_body

log = logging.getLogger(__name__)

_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


# The ASGI scope key a request's id is kept in once given, so that the express front
# (app/core/front.py), when it passes a request on, and this middleware give it the same.
REQUEST_ID_KEY = "dmrelay.request_id"


def assign(scope: Scope) -> tuple[str, tuple[bytes, bytes]]:
    """The request's id (the caller's X-Request-Id, when sane) and its response header; bound
    to every line logged while answering (a request is a task of its own)."""
    request_id: str | None = scope.get(REQUEST_ID_KEY)
    if request_id is None:
        incoming = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
        request_id = incoming if _ACCEPTABLE.match(incoming) else uuid.uuid4().hex
        scope[REQUEST_ID_KEY] = request_id
    logs.bind(request_id=request_id)
    return request_id, (b"x-request-id", request_id.encode())


async def answer_failure(
    error: Exception, request_id: str, header: tuple[bytes, bytes], started: bool, send: Send
) -> int | None:
    """Answer for an unexpected exception (called while handling it): a JSON 500 that carries
    the request id, or a 503 when it says PostgreSQL or Redis is down or stalled; the status
    sent. None when the answer had begun: then it is only logged, and the caller raises it
    again."""
    dependency = None if started else unavailable(error)
    if dependency is None:
        log.exception("unhandled error, request id %s", request_id)
        if started:
            return None
        status, message = 500, f"Internal server error (request id {request_id})"
        headers = [header]
    else:
        # Not a bug: a dependency timed out or refused (app/core/availability.py).
        log.warning("%s unavailable, request id %s: %r", dependency, request_id, error)
        status, message = 503, MESSAGES[dependency]
        headers = [header, (b"retry-after", str(RETRY_AFTER_SECONDS).encode())]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": error_body(message)})
    return status


class RequestIdMiddleware:
    """Gives every response an X-Request-Id (the caller's, when sane), and turns an
    unexpected exception into a JSON 500 that carries it too, or a 503 when it says
    PostgreSQL or Redis is down or stalled (`answer_failure`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id, header = assign(scope)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as error:
            if await answer_failure(error, request_id, header, started, send) is None:
                raise
