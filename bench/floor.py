"""The floor for the accept path: the least any implementation must do to accept a message.

A bare ASGI app (no framework, no auth, no ORM, no validation beyond reading JSON) that
stores the same `messages` row dmrelay stores, with one raw asyncpg INSERT, then enqueues
the same arq job. The chat's public id is resolved from a map built at startup, so the
same wrk script loads both. Served as dmrelay is: uvicorn, one worker, same pool size.

    DATABASE_URL=... REDIS_URL=... uvicorn bench.floor:app --port 8100 --workers 1
"""

import json
import os

import asyncpg
from arq.connections import RedisSettings, create_pool

from app.core import ids
from app.core.express import read_body
from app.core.queue import pack_job, unpack_job

INSERT = (
    "INSERT INTO messages (chat_id, profile_id, direction, status, body) "
    "VALUES ($1, $2, 'outbound', 'pending', $3) RETURNING id"
)
# dmrelay's engine: pool_size 20, no overflow.
POOL_SIZE = 20


class Floor:
    def __init__(self) -> None:
        self.chats: dict[str, tuple[int, int]] = {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["path"] == "/healthz":
            await _answer(send, 200, b'{"status":"ok"}')
        else:
            await self._accept(scope, receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                self.db = await asyncpg.create_pool(
                    os.environ["DATABASE_URL"], min_size=POOL_SIZE, max_size=POOL_SIZE
                )
                # dmrelay's job format (msgpack), which its worker reads.
                self.queue = await create_pool(
                    RedisSettings.from_dsn(os.environ["REDIS_URL"]),
                    job_serializer=pack_job,
                    job_deserializer=unpack_job,
                )
                rows = await self.db.fetch("SELECT id, profile_id FROM chats")
                self.chats = {
                    ids.encode(ids.Kind.CHAT, r["id"]): (r["id"], r["profile_id"]) for r in rows
                }
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await self.queue.aclose()
                await self.db.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _accept(self, scope, receive, send) -> None:
        # /api/chats/{chat_id}/messages
        chat = self.chats.get(scope["path"].split("/")[3])
        if chat is None:
            await _answer(send, 404, b'{"error":"chat not found"}')
            return
        body = await read_body(receive)
        text = json.loads(body)["body"]
        message_id = await self.db.fetchval(INSERT, chat[0], chat[1], text)
        # The job app/messages/service.py enqueues: deliver the chat, one job per message.
        await self.queue.enqueue_job("deliver_chat", chat[0], _job_id=f"deliver:{message_id}")
        await _answer(send, 202, b'{"id":%d}' % message_id)


async def _answer(send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


app = Floor()
