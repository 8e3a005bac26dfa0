"""Rate limits, usage headers, timeouts and echo timing: the faults delivery guarantees meet."""

import json
import time
from datetime import datetime, timedelta

import httpx
import pytest

from app.sandbox import ratelimit
from app.sandbox.app import create_app
from tests.conftest import wait_for
from tests.sandbox.support import (
    IG_ID,
    IGSID,
    PLAIN,
    assert_error,
    sandbox_client,
    send,
    sent,
    serving,
    text_body,
)

# For a send the sandbox never answers: the client gives up waiting for the answer (only that;
# on a busy machine, connecting or anything else may take longer).
GIVE_UP = httpx.Timeout(10.0, read=1.0)
VIDEO = {"recipient": {"id": IGSID}, "message": {"attachment": {"type": "video", "payload": {}}}}


def usage(response, account=IG_ID) -> tuple[dict, dict]:
    app = json.loads(response.headers["x-app-usage"])
    business = json.loads(response.headers["x-business-use-case-usage"])
    [entry] = business[account]
    return app, entry


# --- rate limit and usage headers ----------------------------------------------------------


class Clock:
    """The rate limiter's clock, moved by the test: its one-second windows pass when the test
    says so, not at whatever pace a busy machine runs the requests."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(ratelimit, "time", clock)
    return clock


async def test_rate_limit_trips_at_the_configured_rate(client, clock):
    await client.post("/_sandbox/faults", json={"rate_limit": {"per_second": 2}})

    first = await send(client, text_body("1"), account=IG_ID)
    second = await send(client, text_body("2"), account=IG_ID)
    third = await send(client, text_body("3"), account=IG_ID)

    assert first.status_code == second.status_code == 200
    error = assert_error(third, 403, 613, 2534040)
    assert error["message"] == "(#613) Calls to this api have exceeded the rate limit."
    assert error["is_transient"] is True
    assert [r["message"]["text"] for r in await sent(client)] == ["1", "2"]

    app, business = usage(first)
    assert app == {"call_count": 50, "total_cputime": 50, "total_time": 50}
    assert business == {"type": "instagram", **app, "estimated_time_to_regain_access": 0}
    app, business = usage(third)
    assert app["call_count"] == business["call_count"] == 100
    assert business["estimated_time_to_regain_access"] == 0  # the window alone throttles

    other = await send(client, text_body(), account="123456")  # limits are per account
    assert other.status_code == 200
    clock.now += 0.99
    assert_error(await send(client, text_body("4"), account=IG_ID), 403, 613, 2534040)
    clock.now += 0.02  # the first send has left the window
    assert (await send(client, text_body("4"), account=IG_ID)).status_code == 200


async def test_audio_and_video_have_their_own_budget(client, clock):
    await client.post("/_sandbox/faults", json={"rate_limit": {"audio_video_per_second": 1}})

    assert (await send(client, VIDEO, account=IG_ID)).status_code == 200
    assert_error(await send(client, VIDEO, account=IG_ID), 403, 613, 2534040)
    for _ in range(5):  # text is unlimited here
        assert (await send(client, text_body(), account=IG_ID)).status_code == 200


async def test_sender_actions_count_and_are_throttled(client, clock):
    await client.post("/_sandbox/faults", json={"rate_limit": {"per_second": 1}})
    action = {"recipient": {"id": IGSID}, "sender_action": "typing_on"}

    assert (await send(client, action)).status_code == 200
    assert_error(await send(client, action), 403, 613, 2534040)


async def test_regain_access_minutes_block_the_account(client, clock):
    limit = {"per_second": 1, "regain_access_minutes": 2}
    await client.post("/_sandbox/faults", json={"rate_limit": limit})
    await send(client, text_body(), account=IG_ID)

    tripped = await send(client, text_body(), account=IG_ID)
    clock.now += 1.05  # the window is free again, the block is not
    still = await send(client, text_body(), account=IG_ID)

    for response in (tripped, still):
        assert_error(response, 403, 613, 2534040)
        app, business = usage(response)
        assert app["call_count"] == business["call_count"] == 100
        assert business["estimated_time_to_regain_access"] == 2
    await client.post("/_sandbox/faults", json={})  # replacing the faults lifts the block
    assert (await send(client, text_body(), account=IG_ID)).status_code == 200


async def test_every_graph_answer_carries_usage_headers(client, clock):
    sent_ok = await send(client, text_body(), account=IG_ID)
    app, business = usage(sent_ok)
    assert app["call_count"] == business["call_count"] == 1  # 1 of Meta's documented 100/s

    me = await client.get("/v25.0/me", params={"access_token": "tok"})
    no_token = await client.post(f"/v25.0/{IG_ID}/messages", json=text_body())
    unknown = await client.post(f"/v25.0/{IG_ID}/feed", params={"access_token": "tok"})
    for response in (me, no_token, unknown):
        assert "x-app-usage" in response.headers
    user_id = me.json()["user_id"]  # node reads are billed to the token's account
    assert list(json.loads(me.headers["x-business-use-case-usage"])) == [user_id]
    assert usage(no_token)[1]["call_count"] == 1


# --- timeouts ------------------------------------------------------------------------------


async def test_timeout_records_then_never_answers():
    app = create_app(PLAIN)
    timeout = {"recipients": [IGSID], "times": 1}
    async with serving(app) as url, httpx.AsyncClient(base_url=url) as client:
        await client.post("/_sandbox/faults", json={"timeout": timeout})

        with pytest.raises(httpx.ReadTimeout):
            await send(client, text_body("lost answer"), timeout=GIVE_UP)
        retried = await send(client, text_body("lost answer"))
        other = await send(client, text_body(recipient="42"))

        assert retried.status_code == other.status_code == 200
        records = await sent(client)
    assert [(r["message"]["text"], r["timed_out"]) for r in records] == [
        ("lost answer", True),
        ("lost answer", False),
        ("hi", False),
    ]
    # Only the answers that left are stamped with when they did.
    assert records[0]["answered_at"] is None
    assert all(r["received_at"] <= r["answered_at"] for r in records[1:])


async def test_timeout_rate_and_recipients_filter(client):
    await client.post("/_sandbox/faults", json={"timeout": {"rate": 0, "recipients": []}})
    assert (await send(client, text_body())).status_code == 200
    await client.post("/_sandbox/faults", json={"timeout": {"recipients": ["42"]}})
    assert (await send(client, text_body())).status_code == 200
    for bad in ({"rate": 2}, {"times": -1}, {"x": 1}):
        assert (await client.post("/_sandbox/faults", json={"timeout": bad})).status_code == 422


async def test_a_timed_out_send_is_still_echoed(hooked, receiver):
    async with serving(hooked) as url, httpx.AsyncClient(base_url=url) as client:
        await client.post("/_sandbox/faults", json={"timeout": {}})
        with pytest.raises(httpx.ReadTimeout):
            await send(client, text_body(), account=IG_ID, timeout=GIVE_UP)
        [record] = await sent(client)

    [echo] = receiver.payloads()
    assert echo["entry"][0]["messaging"][0]["message"]["mid"] == record["message_id"]


# --- echo timing ---------------------------------------------------------------------------


async def test_echo_before_is_answered_before_the_send(hooked, receiver):
    receiver.delay = 0.3
    async with sandbox_client(hooked) as client:
        await client.post("/_sandbox/faults", json={"echo": {"mode": "before"}})
        started = time.monotonic()
        answer = (await send(client, text_body(), account=IG_ID)).json()
        assert time.monotonic() - started >= 0.3
        [echo] = receiver.payloads()  # already there, and answered
    assert echo["entry"][0]["messaging"][0]["message"]["mid"] == answer["message_id"]


async def test_echo_late_comes_after_the_delay(hooked, receiver):
    async with hooked.router.lifespan_context(hooked), sandbox_client(hooked) as client:
        # An echo first: the sandbox's webhook client takes about a second to set up, which
        # would pass for the delay.
        await send(client, text_body("first"), account=IG_ID)

        async def first_echo_came() -> bool:
            return len(receiver.requests) == 1

        await wait_for(first_echo_came)
        await client.post("/_sandbox/faults", json={"echo": {"mode": "late", "delay_ms": 300}})
        await send(client, text_body("late"), account=IG_ID)
        [_, record] = await sent(client)
    # Leaving the lifespan waits for deliveries in flight.
    assert len(receiver.payloads()) == 2
    arrived = receiver.arrivals[1]
    assert arrived - datetime.fromisoformat(record["answered_at"]) >= timedelta(milliseconds=300)


@pytest.mark.parametrize("mode, copies", [("after", 1), ("twice", 2), ("none", 0)])
async def test_echo_modes_deliver_that_many_copies(hooked, receiver, mode, copies):
    async with hooked.router.lifespan_context(hooked), sandbox_client(hooked) as client:
        await client.post("/_sandbox/faults", json={"echo": {"mode": mode}})
        answer = (await send(client, text_body(), account=IG_ID)).json()
    # Leaving the lifespan waits for deliveries in flight.

    echoes = receiver.payloads()
    assert len(echoes) == copies
    assert all(e == receiver.payloads()[0] for e in echoes)
    for echo in echoes:
        assert echo["entry"][0]["messaging"][0]["message"]["mid"] == answer["message_id"]
