"""Prometheus metrics: every metric dmrelay exports is defined here, once, and the modules
that count import it from here (so two processes or two capabilities never define a name
twice). GET /metrics on the API; the worker's own on WORKER_HTTP_PORT.

Several processes of one API (`dmrelay api --workers N`) share their counts through
prometheus-client's multiprocess mode: PROMETHEUS_MULTIPROC_DIR, set (and emptied) by
`dmrelay api` itself when it starts more than one (app/cli.py). It must be in the
environment before prometheus_client is first imported.

On the hot path a count is a dict lookup and a locked add (`HttpMetrics` keeps the labelled
children it has used), so the accept path pays a few microseconds for it.
"""

import logging
import os
import time
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import logs

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

access = logging.getLogger("dmrelay.access")

# Seconds: an accept takes about a millisecond, a Graph call tens to hundreds of them.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

HTTP_REQUESTS = Counter(
    "dmrelay_http_requests_total",
    "HTTP requests answered, by route template, method and status",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "dmrelay_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template and method",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
MESSAGES_ACCEPTED = Counter(
    "dmrelay_messages_accepted_total", "Messages accepted for sending (answered 202)"
)
SEND_ATTEMPTS = Counter(
    "dmrelay_send_attempts_total",
    "Attempts to send a message to Meta, by outcome (published, retrying, failed, held) and "
    "Meta's error code ('' when none; 'unreachable' when Meta did not answer)",
    ["outcome", "code"],
)
META_REQUEST_DURATION = Histogram(
    "dmrelay_meta_request_duration_seconds",
    "Time a Graph API call took, by operation and outcome (ok, error, unreachable)",
    ["operation", "outcome"],
    buckets=LATENCY_BUCKETS,
)
META_WEBHOOKS = Counter(
    "dmrelay_meta_webhooks_total",
    "Meta webhook POSTs, by outcome: stored (and queued) or refused (bad signature)",
    ["outcome"],
)
# For the customer-webhook delivery (the events dmrelay posts to its users' endpoints).
CUSTOMER_WEBHOOK_DELIVERIES = Counter(
    "dmrelay_customer_webhook_deliveries_total",
    "Customer webhook deliveries, by outcome (delivered, retrying, failed)",
    ["outcome"],
)
CUSTOMER_WEBHOOK_DURATION = Histogram(
    "dmrelay_customer_webhook_delivery_duration_seconds",
    "Time a customer's endpoint took to answer a delivery",
    buckets=LATENCY_BUCKETS,
)

# Seconds the garbage collector held the process (app/core/heap.py): a young collection takes
# tens of microseconds, a full one of a large heap hundreds of milliseconds.
GC_PAUSE = Histogram(
    "dmrelay_gc_pause_seconds",
    "Time each garbage collection held the process, by generation (2: a full collection)",
    ["generation"],
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)

# The route label of requests no route matched: never the path itself (unbounded, and it may
# carry what a client should not have sent).
UNMATCHED = "(unmatched)"
# The ASGI scope key the express lane (app/core/express.py) names its route template in.
ROUTE_KEY = "dmrelay.route"
# The ASGI scope key the express front (app/core/front.py) names a request's start in
# (time.perf_counter's), when it passes the request on: its duration counts from there.
STARTED_KEY = "dmrelay.started"


def exposition(*collectors: Collector) -> tuple[bytes, str]:
    """The text Prometheus scrapes, and its content type: this process's metrics, or all the
    API processes' in multiprocess mode; plus `collectors` (asked at scrape time)."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        registry.register(_Everything())
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _Everything(Collector):
    """The default registry, as one collector of another registry."""

    def collect(self):  # type: ignore[no-untyped-def]
        return REGISTRY.collect()


def route_of(scope: Scope) -> str:
    """The route template a request was answered by (FastAPI's, or the express lane's)."""
    express = scope.get(ROUTE_KEY)
    if express is not None:
        return str(express)
    # FastAPI 0.16x serves an included router's routes as the router's (scope["route"] is the
    # route without its prefix) and keeps the effective route, prefix included, here; before,
    # scope["route"] had the full path. tests/test_metrics.py checks the label.
    fastapi = scope.get("fastapi")
    route = fastapi.get("effective_route_context") if isinstance(fastapi, dict) else None
    route = route or scope.get("route")
    path = getattr(route, "path_format", None)
    return path if isinstance(path, str) else UNMATCHED


# The labelled children already used (`labels()` per request would cost more than the count).
_counters: dict[tuple[str, str, int], Counter] = {}
_histograms: dict[tuple[str, str], Histogram] = {}


def observe(route: str, method: str, status: int, seconds: float) -> None:
    """Count an HTTP request answered and write its access line (at INFO: the route's
    template, never the path and query, which may carry a verify token). HttpMetrics's, for
    every request, and the express front's (app/core/front.py), for those it answers."""
    key = (route, method, status)
    counter = _counters.get(key)
    if counter is None:
        counter = _counters[key] = HTTP_REQUESTS.labels(route, method, str(status))
    counter.inc()
    histogram = _histograms.get((route, method))
    if histogram is None:
        histogram = _histograms[(route, method)] = HTTP_DURATION.labels(route, method)
    histogram.observe(seconds)
    if access.isEnabledFor(logging.INFO):
        logs.access(access, method, route, status, seconds)


class HttpMetrics:
    """Counts every HTTP request (outermost, so 503s and 500s of the middlewares are counted),
    times it until its answer is sent, and writes its access line (`observe`)."""

    def __init__(self, app: ASGIApp, clock: Callable[[], float] = time.perf_counter) -> None:
        self.app = app
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # From the express front's start, when it passed the request on (app/core/front.py).
        started = scope.get(STARTED_KEY)
        if started is None:
            started = self.clock()
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            observe(route_of(scope), scope["method"], status, self.clock() - started)
