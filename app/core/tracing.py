"""OpenTelemetry tracing of a send, from the API to Meta and back: off unless configured.

It is configured by OpenTelemetry's own environment variables, as any OTel SDK is:
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns it on, exporting
over OTLP/HTTP; `OTEL_TRACES_EXPORTER` may name `otlp`, `console` or `none`;
`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*` and the
exporter's own variables apply as the SDK reads them; `OTEL_SDK_DISABLED=true` turns it off.
Unlike the SDK's defaults, nothing set means off: dmrelay exports nowhere by surprise. The SDK
and the exporter are the `tracing` extra (`pip install 'dmrelay[tracing]'`), imported only
when tracing is on.

Off, `tracer` is None and every hot path pays one check of it. On, the spans are:
- the server span of each HTTP request (HttpTracing), the express lane's included; a send's
  carries its message, chat and profile ids, and its context is stored with the message
  (`messages.traceparent`, W3C Trace Context), since a chat's sends are batched into jobs;
- the worker's attempt at each message (`dmrelay.send`), a child of that context, with its
  claim, the Graph call (a client span: method, status, Meta's error code) and its publish or
  recorded failure;
- Meta's webhook: its POST's server span, the worker's batch that applies it (linked to the
  POSTs it holds), and an echo that confirms one of our sends (`dmrelay.echo`, linked to the
  send's trace).
Attributes carry ids, statuses and codes: never a token, a secret or a message's text.
"""

import asyncio
import logging
import os
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import (
    INVALID_SPAN,
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    StatusCode,
    Tracer,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core import ids
from app.core.metrics import route_of

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

# The tracer every span is started with; None while tracing is off (the hot paths' check).
tracer: Tracer | None = None

INSTRUMENTATION = "dmrelay"
# OTel's variables that docker-compose.yml passes through to the API and the worker (their
# service names stay dmrelay-api and dmrelay-worker unless OTEL_RESOURCE_ATTRIBUTES says).
ENVIRONMENT = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_TRACES_EXPORTER",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SDK_DISABLED",
)
EXTRA = "pip install 'dmrelay[tracing]'"
_PROPAGATOR = TraceContextTextMapPropagator()
_OFF: AbstractContextManager[None] = nullcontext()
_KIND = {"message": ids.Kind.MESSAGE, "chat": ids.Kind.CHAT, "profile": ids.Kind.PROFILE}


class TracingConfigError(ValueError):
    """The environment asks for tracing that cannot be had; its message is the one line."""


def exporter_from_environment(environ: Mapping[str, str]) -> "SpanExporter | None":
    """The exporter OTel's variables in `environ` ask for, or None if tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = [
        name.strip().lower()
        for name in environ.get("OTEL_TRACES_EXPORTER", "").split(",")
        if name.strip()
    ]
    if not names:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        names = ["otlp"] if endpoint else []
    if not names or names == ["none"]:
        return None
    if len(names) > 1:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER names several exporters ({', '.join(names)}); dmrelay "
            "takes one: otlp, console or none"
        )
    try:
        if names == ["otlp"]:
            protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
                "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
            )
            if protocol != "http/protobuf":
                raise TracingConfigError(
                    f"OTEL_EXPORTER_OTLP_PROTOCOL is {protocol!r}; dmrelay exports over "
                    "http/protobuf (a collector's port 4318)"
                )
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            # As the SDK derives it, but from `environ`; unset, the SDK's default (localhost).
            # Headers, timeout and compression: the process's OTEL_EXPORTER_OTLP_* variables.
            traces = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            endpoint = traces or (f"{base.rstrip('/')}/v1/traces" if base else None)
            return OTLPSpanExporter(endpoint=endpoint)
        if names == ["console"]:
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            return ConsoleSpanExporter()
    except ImportError as error:
        raise TracingConfigError(
            f"tracing is configured ({_configured_by(environ)}) but OpenTelemetry's SDK is "
            f"not installed ({error.name}): {EXTRA}"
        ) from None
    raise TracingConfigError(
        f"OTEL_TRACES_EXPORTER is {names[0]!r}; dmrelay knows otlp, console and none"
    )


def _configured_by(environ: Mapping[str, str]) -> str:
    return next(
        name
        for name in (
            "OTEL_TRACES_EXPORTER",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        )
        if environ.get(name)
    )


def start(service_name: str, environ: Mapping[str, str] = os.environ) -> "TracerProvider | None":
    """Turn tracing on if the environment asks for it (the API's lifespan, the worker's
    start-up): the provider, for `stop`, or None if it stays off (or is on already, as when
    the API and a worker share a process)."""
    if tracer is not None:
        return None
    exporter = exporter_from_environment(environ)
    if exporter is None:
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win; else the process's role.
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    # The sampler is OTEL_TRACES_SAMPLER's (parent-based, always on by default).
    provider = TracerProvider(resource=resource)
    # Batched, off the event loop: a span ended costs a queue append.
    provider.add_span_processor(BatchSpanProcessor(exporter))
    install(provider)
    log.info("tracing on: spans exported by %s", type(exporter).__name__)
    return provider


async def stop(provider: "TracerProvider | None") -> None:
    """Export the spans still queued and stop what `start` began (at shutdown). In a thread:
    the SDK's flush blocks, bounded by the exporter's timeout."""
    if provider is None:
        return
    uninstall()
    await asyncio.to_thread(provider.shutdown)


def install(provider: "TracerProvider") -> None:
    """Trace with `provider` from now on (tests install one with an in-memory exporter)."""
    global tracer
    tracer = provider.get_tracer(INSTRUMENTATION)


def uninstall() -> None:
    global tracer
    tracer = None


def span(
    name: str,
    *,
    parent: str | None = None,
    links: Iterable[str | None] = (),
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, Any] | None = None,
) -> AbstractContextManager[Span | None]:
    """A span, current within the `with`, a child of the current span or of the `parent`
    traceparent; linked to the `links` traceparents. A no-op while tracing is off."""
    active = tracer
    if active is None:
        return _OFF
    context = set_span_in_context(_span_of(parent)) if parent else None
    return active.start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=attributes,
        links=[
            Link(span_context) for link in links if link and (span_context := _context_of(link))
        ],
    )


def traceparent() -> str | None:
    """The current span's W3C traceparent, to carry to a later step; None while off."""
    if tracer is None:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def link(traceparents: Iterable[str | None]) -> None:
    """Link the current span to these traceparents (those it learns of once started)."""
    if tracer is None:
        return
    current = get_current_span()
    for traceparent in traceparents:
        if traceparent and (span_context := _context_of(traceparent)):
            current.add_link(span_context)


def annotate(**values: Any) -> None:
    """Set attributes on the current span. `message`, `chat` and `profile` (our serials) are
    set as the public ids the API shows (dmrelay.message.id, …); others as dmrelay.<name>."""
    if tracer is None:
        return
    current = get_current_span()
    for key, value in values.items():
        if value is None:
            continue
        if key in _KIND:
            current.set_attribute(f"dmrelay.{key}.id", ids.encode(_KIND[key], value))
        else:
            current.set_attribute(f"dmrelay.{key}", value)


def _span_of(traceparent: str) -> Span:
    context = _context_of(traceparent)
    return INVALID_SPAN if context is None else NonRecordingSpan(context)


def _context_of(traceparent: str) -> SpanContext | None:
    context = get_current_span(_PROPAGATOR.extract({"traceparent": traceparent})).get_span_context()
    return context if context.is_valid else None


class HttpTracing:
    """A server span for every HTTP request while tracing is on: named by its route template
    (never its path or query, which may carry a verify token), with its status and request
    id. A caller's `traceparent` header continues its trace. Off, one check per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        active = tracer
        if active is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name == b"traceparent" or name == b"tracestate"
        }
        method = scope["method"]
        with active.start_as_current_span(
            method,
            context=_PROPAGATOR.extract(incoming) if incoming else None,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method},
        ) as server_span:
            status = 500

            async def traced_send(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    for name, value in message.get("headers", ()):
                        if name == b"x-request-id":
                            server_span.set_attribute("dmrelay.request_id", value.decode())
                await send(message)

            try:
                await self.app(scope, receive, traced_send)
            finally:
                route = route_of(scope)
                server_span.update_name(f"{method} {route}")
                server_span.set_attribute("http.route", route)
                server_span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    server_span.set_status(StatusCode.ERROR)
