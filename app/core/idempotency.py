"""Idempotency-Key on POST: the same key and body within 24 h replays the first response.

The response is stored in the same transaction as the work it describes, so either both
exist or neither; a Redis lock answers 409 to a repeat that arrives while the first is
still being processed.
"""

import hashlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Annotated, Any, cast

from fastapi import Depends, Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import BigInteger, CursorResult, DateTime, Index, Integer, Text, delete, func, text
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from app.api_keys.auth import CurrentScope
from app.core.db import Base
from app.core.deps import Session
from app.core.errors import APIError
from app.core.jobs import JobName, periodic

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
RETENTION = timedelta(hours=24)
# Longer than any request should take; a crashed request frees its key after this.
LOCK_SECONDS = 60


class IdempotencyRecord(Base):
    __tablename__ = "idempotency_keys"
    # The resource a stored response describes, by its public id: an unsent message's content
    # is erased from the responses that hold it (app/inbound/erasure.py).
    __table_args__ = (Index("ix_idempotency_keys_resource", text("(response ->> 'id')")),)

    api_key_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    request_hash: Mapped[str] = mapped_column(Text, nullable=False)
    status_code: Mapped[int] = mapped_column(Integer, nullable=False)
    response: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False, index=True
    )


async def _find(session: AsyncSession, api_key_id: int, key: str) -> IdempotencyRecord | None:
    return await session.get(IdempotencyRecord, (api_key_id, key))


async def _store(session: AsyncSession, api_key_id: int, key: str, values: dict[str, Any]) -> None:
    await session.execute(
        insert(IdempotencyRecord)
        .values(api_key_id=api_key_id, key=key, **values)
        # Only an expired record can be in the way: a live one was replayed.
        .on_conflict_do_update(index_elements=["api_key_id", "key"], set_=values)
    )


async def purge_expired(session: AsyncSession) -> int:
    """Forget responses older than the retention window; returns how many."""
    result = await session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.created_at < func.now() - RETENTION)
    )
    return cast(CursorResult[Any], result).rowcount


class Replay(Exception):
    """Raised to answer with a stored response instead of running the request again."""

    def __init__(self, record: IdempotencyRecord) -> None:
        # Copied now: the session that loaded the record is rolled back before we answer.
        self.status_code = record.status_code
        self.body = record.response

    def response(self) -> JSONResponse:
        return JSONResponse(
            self.body, status_code=self.status_code, headers={"Idempotent-Replayed": "true"}
        )


class IdempotentRequest:
    def __init__(self, api_key_id: int, key: str | None, request_hash: str | None) -> None:
        self.api_key_id = api_key_id
        self.key = key
        self.request_hash = request_hash

    async def remember(
        self,
        session: AsyncSession,
        status_code: int,
        body: BaseModel,
        replayed: BaseModel | None = None,
    ) -> Response:
        """Store the response with the request's own transaction, then hand it back,
        serialised (FastAPI would otherwise validate the model again). `replayed`: what a
        replay answers instead, when the response holds a secret shown once."""
        if self.key is not None:
            values = {
                "request_hash": self.request_hash,
                "status_code": status_code,
                "response": (replayed or body).model_dump(mode="json"),
                "created_at": func.now(),
            }
            await _store(session, self.api_key_id, self.key, values)
        return Response(body.model_dump_json(), status_code, media_type="application/json")


async def _request_hash(request: Request) -> str:
    digest = hashlib.sha256()
    for part in (request.method, request.url.path, request.url.query):
        digest.update(part.encode() + b"\0")
    body = await request.body()
    # A multipart body's boundary is drawn afresh for each request (the SDK's media_files):
    # the same form sent again must hash the same.
    boundary = _multipart_boundary(request.headers.get("content-type", ""))
    digest.update(body.replace(boundary, b"") if boundary else body)
    return digest.hexdigest()


def _multipart_boundary(content_type: str) -> bytes | None:
    media_type, _, params = content_type.partition(";")
    if media_type.strip().lower() != "multipart/form-data":
        return None
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary" and value.strip('"'):
            return value.strip('"').encode("latin-1")
    return None


async def _idempotency(
    request: Request,
    scope: CurrentScope,
    session: Session,
    key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            min_length=1,
            max_length=MAX_KEY_LENGTH,
            description="Repeat the request safely: the same key and body within 24 h "
            "answer the first response again (with Idempotent-Replayed: true)",
            examples=["order-1042-confirmation"],
        ),
    ] = None,
) -> AsyncIterator[IdempotentRequest]:
    if key is None:
        yield IdempotentRequest(scope.api_key_id, None, None)
        return
    request_hash = await _request_hash(request)
    record = await _find(session, scope.api_key_id, key)
    if (
        record is not None
        and record.created_at > datetime.now(record.created_at.tzinfo) - RETENTION
    ):
        if record.request_hash != request_hash:
            raise APIError(
                422,
                f"This {HEADER} was already used for a different request; "
                "use a new key for a new request",
                [{"field": HEADER, "message": "reused with a different request"}],
            )
        raise Replay(record)

    redis = request.app.state.arq_pool
    lock = f"dmrelay:idempotency:{scope.api_key_id}:{hashlib.sha256(key.encode()).hexdigest()}"
    if not await redis.set(lock, "1", nx=True, ex=LOCK_SECONDS):
        raise APIError(
            409, f"A request with this {HEADER} is still being processed; retry in a moment"
        )
    try:
        yield IdempotentRequest(scope.api_key_id, key, request_hash)
    except BaseException:
        # A request that failed stores nothing, so its key may be used again at once.
        await redis.delete(lock)
        raise


Idempotency = Annotated[IdempotentRequest, Depends(_idempotency, scope="function")]


async def purge_idempotency_keys(ctx: dict[str, Any]) -> None:
    async with ctx["sessions"].begin() as session:
        await purge_expired(session)


# Idempotency-Key responses are replayed for 24 h, then forgotten: every ten minutes.
EVERY_TEN = set(range(0, 60, 10))
CRON_JOBS = [
    periodic(
        purge_idempotency_keys,
        JobName.PURGE_IDEMPOTENCY_KEYS,
        minute=EVERY_TEN,
        second=0,
    ),
]
