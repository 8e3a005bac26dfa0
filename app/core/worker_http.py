"""The worker's HTTP port (WORKER_HTTP_PORT): GET /healthz for an orchestrator (and
`dmrelay worker --check`), GET /metrics for Prometheus. Served on the worker's own event loop,
so an answer also says the loop turns."""

import json
import time
from typing import TYPE_CHECKING

from aiohttp import web

from app.core.metrics import exposition

if TYPE_CHECKING:
    from app.core.worker import ResilientWorker

# The worker polls its queue every few milliseconds while Redis answers; a poll loop silent
# for this long is stuck.
STALLED_SECONDS = 30.0


def health(worker: "ResilientWorker") -> tuple[int, dict[str, object]]:
    """The status and body of GET /healthz."""
    since = time.monotonic() - worker.last_poll if worker.last_poll is not None else None
    body: dict[str, object] = {
        "jobs_running": sum(not task.done() for task in worker.tasks.values()),
        "seconds_since_poll": None if since is None else round(since, 3),
    }
    if worker.waiting_for_redis:
        error = "The worker is waiting for Redis, which is not answering."
    elif since is None:
        error = "The worker is starting and has not polled its queue yet."
    elif since > STALLED_SECONDS:
        error = f"The worker has not polled its queue for {since:.0f} s: it is stuck."
    else:
        return 200, {"status": "ok", **body}
    return 503, {"status": "unavailable", "error": error, **body}


async def start(worker: "ResilientWorker", port: int) -> web.AppRunner:
    async def healthz(request: web.Request) -> web.Response:
        status, body = health(worker)
        return web.Response(status=status, text=json.dumps(body), content_type="application/json")

    async def metrics(request: web.Request) -> web.Response:
        body, content_type = exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, port=port).start()
    return runner
