"""OpenTelemetry tracing (app/core/tracing.py): a send traced from the API request that
accepts it, through the worker's attempt and its Graph call, to Meta's echo, in one trace;
ids as attributes, never a token or a text; and nothing at all unless it is configured."""

import http.server
import threading

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import text

from app.core import tracing
from app.messages import express as messages_express
from tests.cli import dmrelay_process
from tests.conftest import SECRETS_USED, _free_port, wait_for
from tests.test_delivery import settle
from tests.test_startup import _one_line

CUSTOMER = "1700000000000091"
SEND_ROUTE = "POST /api/chats/{chat_id}/messages"
# A caller's own trace, which the send continues.
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_TRACEPARENT = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"
# Never contacted: no exporter here sends anything during a test.
COLLECTOR = "http://127.0.0.1:4318"


@pytest.fixture
def spans(clean):
    """Tracing on, in this process (the API and the worker both), into memory: once the
    stack is emptied, so that the work left by earlier tests is not in it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.uninstall()


def _named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def _children(spans: list[ReadableSpan], parent: ReadableSpan) -> dict[str, ReadableSpan]:
    return {
        span.name: span
        for span in spans
        if span.parent is not None and span.parent.span_id == parent.context.span_id
    }


async def _send_twice(clean, account, headers: dict[str, str]) -> list[str]:
    """Two sends in one chat: the first with an Idempotency-Key (FastAPI's route), the second
    by the express lane. Their ids, once both are published."""
    chat = await account.client.chats.create(account.profile_id, CUSTOMER)
    answered_before = clean.api.state.express_answered[messages_express.ROUTE]
    ids = []
    auth = {"Authorization": f"Bearer {account.token}", **headers}
    async with httpx.AsyncClient(base_url=clean.api_url, headers=auth) as api:
        for number, lane in ((1, {"Idempotency-Key": "trace-1"}), (2, {})):
            body = f"Your order #{number} has shipped today"
            SECRETS_USED.add(body)
            sent = await api.post(
                f"/api/chats/{chat.id}/messages", json={"body": body}, headers=lane
            )
            assert sent.status_code == 202, sent.text
            ids.append(sent.json()["id"])
    assert clean.api.state.express_answered[messages_express.ROUTE] == answered_before + 1
    await settle(account.client, [await account.client.messages.get(i) for i in ids])
    return ids


@pytest.mark.parametrize("caller", [False, True], ids=["new-trace", "caller-trace"])
async def test_a_send_is_one_trace_from_the_api_to_meta_and_its_echo(spans, account, clean, caller):
    headers = {"traceparent": CALLER_TRACEPARENT} if caller else {}
    message_ids = await _send_twice(clean, account, headers)

    async def echoes_traced():
        # Both echoes applied, and the batches that applied them ended.
        finished = list(spans.get_finished_spans())
        ended = {span.context.span_id for span in finished}
        echoes = _named(finished, "dmrelay.echo")
        return len(echoes) >= 2 and all(
            echo.parent is not None and echo.parent.span_id in ended for echo in echoes
        )

    await wait_for(echoes_traced)
    finished = list(spans.get_finished_spans())
    requests = _named(finished, SEND_ROUTE)
    assert len(requests) == 2
    for message_id, request in zip(message_ids, requests, strict=True):
        # The API's server span names the message it accepted.
        assert request.kind is SpanKind.SERVER
        assert request.attributes["dmrelay.message.id"] == message_id
        assert request.attributes["http.response.status_code"] == 202
        assert request.attributes["http.route"] == "/api/chats/{chat_id}/messages"
        assert request.attributes["dmrelay.request_id"]
        trace_id = request.context.trace_id
        if caller:
            assert format(trace_id, "032x") == CALLER_TRACE
        # The worker's attempt: in the same trace, a child of the request.
        [send] = [
            span
            for span in _named(finished, "dmrelay.send")
            if span.attributes["dmrelay.message.id"] == message_id
        ]
        assert send.context.trace_id == trace_id
        assert send.parent.span_id == request.context.span_id
        assert send.attributes["dmrelay.chat.id"] == request.attributes["dmrelay.chat.id"]
        assert send.attributes["dmrelay.profile.id"] == account.profile_id
        assert send.attributes["dmrelay.outcome"] == "published"
        assert send.attributes["dmrelay.attempt"] == 1
        # Its claim, the Graph call and the publish, as its children.
        children = _children(finished, send)
        assert {"dmrelay.claim", "POST send_message", "dmrelay.publish"} <= set(children)
        graph = children["POST send_message"]
        assert graph.kind is SpanKind.CLIENT
        assert graph.context.trace_id == trace_id
        assert graph.attributes["http.request.method"] == "POST"
        assert graph.attributes["http.response.status_code"] == 200
        assert graph.attributes["server.address"] == "127.0.0.1"
        assert graph.attributes["url.path"].endswith(f"/{account.platform_id}/messages")
        # Back: Meta's echo of it, applied by the worker's inbound batch, linked to the send.
        [echo] = [
            span
            for span in _named(finished, "dmrelay.echo")
            if span.attributes["dmrelay.message.id"] == message_id
            and span.attributes["dmrelay.profile.id"] == account.profile_id
        ]
        assert [link.context.trace_id for link in echo.links] == [trace_id]
        [batch] = [span for span in finished if span.context.span_id == echo.parent.span_id]
        assert batch.name == "dmrelay.inbound_batch"
        # The batch links to the webhook POSTs it applies: the echo's among them.
        webhooks = {
            span.context.span_id: span for span in _named(finished, "POST /webhooks/instagram")
        }
        linked = [webhooks[link.context.span_id] for link in batch.links]
        assert linked and all(
            span.attributes["http.response.status_code"] == 200 for span in linked
        )

    # The trace's context was kept with each message, for the worker.
    async with clean.sessionmaker() as session:
        kept = (await session.execute(text("SELECT traceparent FROM messages"))).scalars().all()
    assert len(kept) == 2 and all(value and value.startswith("00-") for value in kept)
    # Ids, codes and statuses only: no token, secret or message text in any attribute.
    values = " ".join(str(value) for span in finished for value in (span.attributes or {}).values())
    for secret in (*SECRETS_USED, account.token, "sandbox-token", "has shipped"):
        assert secret not in values


async def test_a_failed_graph_call_is_traced_with_metas_error(spans, account, clean):
    # Meta refuses the token (190): the attempt fails for good.
    await clean.sandbox("POST", "/_sandbox/faults", json={"revoked_tokens": ["sandbox-token"]})
    chat = await account.client.chats.create(account.profile_id, CUSTOMER)
    message = await account.client.messages.send(chat.id, body="refused")
    await settle(account.client, [message])

    def graph_calls():
        return [
            span
            for span in _named(list(spans.get_finished_spans()), "POST send_message")
            if span.attributes.get("http.response.status_code", 0) >= 400
        ]

    async def traced():
        return graph_calls()

    [graph, *_] = await wait_for(traced)
    assert graph.status.status_code is trace.StatusCode.ERROR
    assert graph.attributes["dmrelay.meta.error_code"] == "190"
    send = next(
        span for span in spans.get_finished_spans() if span.context.span_id == graph.parent.span_id
    )
    assert send.name == "dmrelay.send"
    failure = _children(list(spans.get_finished_spans()), send)["dmrelay.record_failure"]
    assert failure.attributes["dmrelay.outcome"] == "failed"
    assert failure.attributes["dmrelay.meta_error_code"] == "190"


async def test_with_tracing_off_nothing_is_traced_or_kept(account, clean):
    # The test stack has no OTel variable set: tracing stayed off in the API and the worker.
    assert tracing.tracer is None
    message_ids = await _send_twice(clean, account, {"traceparent": CALLER_TRACEPARENT})
    assert tracing.tracer is None
    async with clean.sessionmaker() as session:
        kept = (await session.execute(text("SELECT traceparent FROM messages"))).scalars().all()
    assert len(kept) == len(message_ids) and kept == [None] * len(kept)
    # dmrelay never touches OpenTelemetry's global provider, on or off.
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    assert tracing.traceparent() is None
    with tracing.span("nothing") as span:
        assert span is None


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": COLLECTOR},
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": COLLECTOR},
        {"OTEL_SERVICE_NAME": "relay"},
    ],
)
async def test_tracing_is_off_unless_an_exporter_is_configured(environ):
    assert tracing.exporter_from_environment(environ) is None
    assert tracing.start("dmrelay-test", environ) is None
    assert tracing.tracer is None


@pytest.mark.parametrize(
    ("environ", "exporter"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": COLLECTOR}, OTLPSpanExporter),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"},
            OTLPSpanExporter,
        ),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, OTLPSpanExporter),
        ({"OTEL_TRACES_EXPORTER": "console"}, ConsoleSpanExporter),
    ],
)
def test_an_exporter_turns_it_on(environ, exporter):
    assert isinstance(tracing.exporter_from_environment(environ), exporter)


async def test_start_configures_a_provider_with_the_service_name_and_stop_ends_it():
    provider = tracing.start("dmrelay-test", {"OTEL_TRACES_EXPORTER": "console"})
    try:
        assert provider is not None and tracing.tracer is not None
        assert provider.resource.attributes["service.name"] == "dmrelay-test"
        # Started once per process: a second start (an API and a worker in one) is a no-op.
        assert tracing.start("dmrelay-other", {"OTEL_TRACES_EXPORTER": "console"}) is None
    finally:
        await tracing.stop(provider)
    assert tracing.tracer is None


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER is 'zipkin'"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            },
            "OTEL_EXPORTER_OTLP_PROTOCOL is 'grpc'",
        ),
    ],
)
async def test_a_tracing_setting_dmrelay_cannot_honour_stops_the_process(env, says):
    done = await dmrelay_process("api", "--port", str(_free_port()), env=env)
    assert says in _one_line(done, "api")


class _Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP collector on loopback: keeps what it is sent."""

    received: list[tuple[str, bytes]] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Collector.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args):
        pass


async def test_spans_reach_an_otlp_collector_and_stop_flushes_them():
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Collector.received.clear()
    try:
        endpoint = f"http://127.0.0.1:{server.server_port}"
        provider = tracing.start("dmrelay-test", {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
        with tracing.span("dmrelay.test", attributes={"dmrelay.message.id": "m1"}):
            pass
        # Batched: nothing is sent before the batch's delay, or the flush at stop.
        await tracing.stop(provider)
    finally:
        server.shutdown()
        thread.join()
    [(path, body)] = _Collector.received
    assert path == "/v1/traces"
    request = ExportTraceServiceRequest.FromString(body)
    [resource_spans] = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert service["service.name"] == "dmrelay-test"
    [span] = [span for scope in resource_spans.scope_spans for span in scope.spans]
    assert span.name == "dmrelay.test"
    assert {a.key: a.value.string_value for a in span.attributes} == {"dmrelay.message.id": "m1"}
