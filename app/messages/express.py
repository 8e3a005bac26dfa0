"""The express lane for `POST /api/chats/{id}/messages`, dmrelay's hottest request.

FastAPI's per-request machinery (routing through every route, dependency injection, a
SQLAlchemy session, exit stacks) costs more than accepting a message does: one statement
and one Redis call. So the plain case is served here, in front of FastAPI, by the same
service code the route uses: a key verified in the last few seconds, a JSON body that
validates, no Idempotency-Key and no query. Anything else goes on, untouched (the body
replayed), to the FastAPI route, which answers the plain case the same way.
"""

import re

import asyncpg
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api_keys.auth import Scope as KeyScope
from app.api_keys.auth import bearer_token
from app.core.errors import APIError, error_response
from app.messages import service
from app.messages.delivery import request_delivery
from app.messages.schemas import MessageOut, MessageSend

SEND_PATH = re.compile(r"/api/chats/([^/]+)/messages")
JSON_HEADERS = [(b"content-type", b"application/json")]


class ExpressSend:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (
            SEND_PATH.fullmatch(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST" and not scope["query_string"]
            else None
        )
        headers = dict(scope["headers"]) if match else {}
        if (
            match is None
            or b"idempotency-key" in headers
            or not headers.get(b"content-type", b"").startswith(b"application/json")
        ):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        body = await _read_body(receive)
        token = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
        principal = state.principals.cached(token) if token else None
        try:
            fields = MessageSend.model_validate_json(body) if principal else None
        except ValidationError:
            fields = None
        if fields is None:
            await self.app(scope, _replay(body, receive), send)
            return

        pool: asyncpg.Pool = state.express_pool
        key_scope = KeyScope(principal.api_key_id, principal.profile_group_id)
        try:
            async with pool.acquire() as connection:
                message = await service.send(connection, key_scope, match[1], fields)
        except APIError as error:
            response = error_response(error.status_code, error.message, error.errors)
            await response(scope, receive, send)
            return
        await request_delivery(state.arq_pool, message.chat_id)
        answer = MessageOut.of(message).model_dump_json().encode()
        await send({"type": "http.response.start", "status": 202, "headers": JSON_HEADERS})
        await send({"type": "http.response.body", "body": answer})


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the already-read body over again, then listens as before."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
