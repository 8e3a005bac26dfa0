"""A customer's webhook endpoints for the customer-webhooks scenario: a bare ASGI app that
answers 200 at once and notes, per request, its path, the event id in its body and the
arrival time; paths starting with /hang answer only after HANG_SECONDS.

    uvicorn bench.webhook_receiver:app --port 8200 --workers 1

`GET /_records` answers the notes (`[path, event id, unix time]`), `DELETE /_records`
forgets them."""

import asyncio
import json
import os
import time

from app.core.express import read_body

HANG_SECONDS = float(os.environ.get("BENCH_HANG_SECONDS", "30"))


class Receiver:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, float]] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        arrived = time.time()
        path, method = scope["path"], scope["method"]
        if path == "/_records":
            if method == "DELETE":
                self.records.clear()
            await _answer(send, 200, json.dumps(self.records if method == "GET" else []).encode())
            return
        if path == "/healthz":
            await _answer(send, 200, b"ok")
            return
        # The id is near the start of the envelope: no need to parse the whole body.
        start = body.find(b'"id":"') + 6
        self.records.append((path, body[start : body.find(b'"', start)].decode(), arrived))
        if path.startswith("/hang"):
            await asyncio.sleep(HANG_SECONDS)
        await _answer(send, 200, b"ok")


async def _answer(send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


app = Receiver()
