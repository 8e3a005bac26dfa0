"""GET /metrics: the API's requests by route template and status (both lanes), messages
accepted, send attempts and Meta's latency (the worker runs in this process), Meta webhooks,
and the send backlog read at scrape time."""

import gc

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.inbound.signature import signature_of
from tests.conftest import _worker_idle, connect, wait_for
from tests.test_delivery import settle

CUSTOMER = "1700000000000077"
SEND_ROUTE = "/api/chats/{chat_id}/messages"


async def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient(base_url=url) as client:
        answer = await client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def _value(samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_requests_sends_and_webhooks_are_counted(account, clean):
    before = await _scrape(clean.api_url)
    chat = await account.client.chats.create(account.profile_id, CUSTOMER)
    auth = {"Authorization": f"Bearer {account.token}"}
    async with httpx.AsyncClient(base_url=clean.api_url, headers=auth) as api:
        # The first send verifies the key (FastAPI); the second takes the express lane.
        for body in ("one", "two"):
            sent = await api.post(f"/api/chats/{chat.id}/messages", json={"body": body})
            assert sent.status_code == 202
        refused = await api.post(f"/api/chats/{chat.id}/messages", json={"body": ""})
        assert refused.status_code == 422
        assert (await api.get("/no/such/route")).status_code == 404
        webhook = b'{"object": "instagram", "entry": []}'
        signed = signature_of(clean.settings.meta_app_secret, webhook)
        for signature in (signed, "sha256=00"):
            await api.post(
                "/webhooks/instagram",
                content=webhook,
                headers={"Content-Type": "application/json", "X-Hub-Signature-256": signature},
            )
    await settle(account.client, [await account.client.messages.get(sent.json()["id"])])
    after = await _scrape(clean.api_url)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    requests = "dmrelay_http_requests_total"
    post = {"route": SEND_ROUTE, "method": "POST"}
    assert grew(requests, **post, status="202") == 2
    assert clean.api.state.express_answered  # one of them by the express lane
    assert grew(requests, **post, status="422") == 1
    assert grew(requests, route="(unmatched)", method="GET", status="404") == 1
    chats = {"route": "/api/profiles/{profile_id}/chats", "method": "POST"}
    assert grew(requests, **chats, status="201") == 1
    assert grew("dmrelay_http_request_duration_seconds_count", **post) == 3
    assert grew("dmrelay_messages_accepted_total") == 2
    # Ours, and the sandbox's echoes of the sends (as they come).
    assert grew("dmrelay_meta_webhooks_total", outcome="stored") >= 1
    assert grew("dmrelay_meta_webhooks_total", outcome="refused") == 1
    assert grew("dmrelay_send_attempts_total", outcome="published", code="") == 2
    latency = "dmrelay_meta_request_duration_seconds_count"
    assert grew(latency, operation="send_message", outcome="ok") == 2
    assert _value(after, "dmrelay_backlog_up") == 1
    assert _value(after, "dmrelay_messages_undelivered", status="pending") == 0


async def test_a_failed_send_is_counted_with_metas_code(clean):
    token = "IGAA-metrics-test-token"
    account = await connect(clean, token=token)
    try:
        chat = await account.client.chats.create(account.profile_id, CUSTOMER)
        before = await _scrape(clean.api_url)
        await clean.sandbox("POST", "/_sandbox/faults", json={"malformed_tokens": [token]})
        message = await account.client.messages.send(chat.id, body="refused by Meta")
        (failed,) = await settle(account.client, [message])
        assert failed.status == "failed"
        after = await _scrape(clean.api_url)
    finally:
        await account.client.close()
    name, labels = "dmrelay_send_attempts_total", {"outcome": "failed", "code": "190"}
    assert _value(after, name, **labels) - _value(before, name, **labels) == 1


async def test_the_backlog_shows_waiting_messages_and_their_age(account, clean):
    chat = await account.client.chats.create(account.profile_id, CUSTOMER)
    clean.worker.allow_pick_jobs = False  # what is sent now stays pending
    try:
        await wait_for(_worker_idle(clean.worker))
        await account.client.messages.send(chat.id, body="waiting")
        samples = await _scrape(clean.api_url)
    finally:
        clean.worker.allow_pick_jobs = True
    assert _value(samples, "dmrelay_messages_undelivered", status="pending") == 1
    assert _value(samples, "dmrelay_oldest_undelivered_message_age_seconds") >= 0
    assert _value(samples, "dmrelay_queue_jobs") >= 1
    assert _value(samples, "dmrelay_backlog_up") == 1


async def test_the_collectors_pauses_are_counted_and_the_start_up_heap_is_frozen(clean):
    # The API runs in this process: its lifespan froze what start-up made (app/core/heap.py),
    # so a full collection walks only what was made since, and each pause is counted.
    assert gc.get_freeze_count() > 10_000
    before = _value(await _scrape(clean.api_url), "dmrelay_gc_pause_seconds_count", generation="2")
    gc.collect()
    after = _value(await _scrape(clean.api_url), "dmrelay_gc_pause_seconds_count", generation="2")
    assert after >= before + 1
