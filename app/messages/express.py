"""`POST /api/chats/{id}/messages` in the express lane (app/core/express.py): a key
verified in the last few seconds, a JSON body that validates, no Idempotency-Key."""

import re

from pydantic import ValidationError

from app.api_keys.auth import Scope, bearer_token
from app.core.db import acquire
from app.core.errors import APIError
from app.core.express import Answer, ExpressRequest, Route
from app.media.outbound import attach_media
from app.messages import service
from app.messages.schemas import MessageOut, MessageSend
from app.messages.sender import request_send


async def send(request: ExpressRequest) -> Answer | None:
    headers = request.headers
    if b"idempotency-key" in headers or not headers.get(b"content-type", b"").startswith(
        b"application/json"
    ):
        return None
    token = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
    principal = request.state.principals.cached(token) if token else None
    if principal is None:
        return None
    try:
        fields = MessageSend.model_validate_json(request.body)
    except ValidationError:
        return None
    scope = Scope(principal.api_key_id, principal.profile_group_id)
    try:
        await attach_media(request.state.media, fields)
        async with acquire(
            request.state.driver_pool, request.state.settings.database_pool_timeout_seconds
        ) as connection:
            message = await service.send(connection, scope, request.match[1], fields)
    except APIError:
        return None  # refused: FastAPI's route explains why, as it always does
    await request_send(request.state.arq_pool, message.chat_id)
    return Answer(202, MessageOut.of(message).model_dump_json().encode())


ROUTE = Route(
    "POST", re.compile(r"/api/chats/([^/]+)/messages"), send, "/api/chats/{chat_id}/messages"
)
