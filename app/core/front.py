"""The express front: the express lane's requests (app/core/express.py) served before FastAPI
and every middleware.

On its way to the lane, a request went through eleven ASGI layers (uvicorn's proxy headers,
FastAPI's telemetry and body limit, Starlette's error middleware, then dmrelay's metrics,
tracing, request id and edge), each a coroutine and most a wrapped `send`: a tenth of what an
accept costs the API beyond the floor's. The front does for the lane's routes what dmrelay's
middlewares do, inline and with their own functions: the edge's caps (`BodyCaps.admits`, before
the body is read, so before any key is checked), the request id (`request_id.assign`, and
`answer_failure` for an exception), the count, histogram and access line (`metrics.observe`).
FastAPI's own layers do nothing for these requests: dmrelay sets no body limit of FastAPI's,
and no global OpenTelemetry provider that FastAPI's telemetry would use.

What the front does not serve goes to the full app, unchanged, where the lane still sits
behind the middlewares:
- every request while tracing is on, so that the middlewares' server span holds the lane's;
- a request the edge would refuse or must count as it reads (no Content-Length, or one past
  the cap, a target it refuses): refused there, or served by the lane behind it;
- one the lane's handler passes on: marked so that the lane behind does not try again, with
  its request id and start kept, so its lines, header and duration are the request's.
"""

import time
from collections.abc import Callable

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from app.core import tracing
from app.core.edge import BodyCaps
from app.core.express import PASSED_KEY, Lane, replay, start_message
from app.core.metrics import STARTED_KEY, observe, route_of
from app.core.request_id import answer_failure, assign


class ExpressFront:
    def __init__(
        self, lane: Lane, caps: BodyCaps, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.lane = lane
        self.caps = caps
        self.clock = clock

    async def serve(self, scope: Scope, receive: Receive, send: Send, app: "FrontedAPI") -> bool:
        """Serve the request if it is the front's; False, having done nothing, if not."""
        if tracing.tracer is not None:
            return False
        found = self.lane.find(scope)
        if found is None or not self.caps.admits(scope):
            return False
        started = self.clock()
        request_id, header = assign(scope)
        status, responded, passed = 500, False, False
        try:
            body, answer = await self.lane.attempt(found, scope, receive, app.state)
            if answer is None:
                passed = True  # the full app counts it and logs it
                scope[PASSED_KEY] = True
                scope[STARTED_KEY] = started
                await app.full(scope, replay(body, receive), send)
                return True
            status = answer.status
            await send(start_message(answer, header))
            responded = True
            await send({"type": "http.response.body", "body": answer.body})
        except Exception as error:
            if passed:
                raise  # the full app's to answer, as it did
            sent = await answer_failure(error, request_id, header, responded, send)
            if sent is None:
                raise
            status = sent
        finally:
            if not passed:
                observe(route_of(scope), scope["method"], status, self.clock() - started)
        return True


class FrontedAPI(FastAPI):
    """FastAPI, with the express front before it (when given one)."""

    front: ExpressFront | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        front = self.front
        if front is None or not await front.serve(scope, receive, send, self):
            await super().__call__(scope, receive, send)

    async def full(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The request through FastAPI and every middleware, as if there were no front."""
        await super().__call__(scope, receive, send)
