"""Customer webhooks through the SDK, delivered to a real HTTP receiver on loopback: every
request's signature checked and its body parsed by the SDK (postproxy.webhooks), every event
type, retries on their schedule, order per endpoint, disabling and re-enabling, redelivery,
SSRF refusals (resolver injected, nothing reached), isolation between profile groups."""

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from postproxy import NotFoundError, ValidationError
from sqlalchemy import text

from app.core.settings import Settings
from app.webhooks.dispatcher import Dispatcher
from tests.conftest import DNS, Account, Stack, _free_port, _serve, connect, wait_for
from tests.inbound import emit, event
from tests.receiver import Receiver

ALL_TYPES = [
    "message.received",
    "message.sent",
    "message.delivered",
    "message.read",
    "message.edited",
    "message.deleted",
    "message.failed_waiting_for_retry",
    "message.failed",
    "reaction.received",
    "referral.received",
    "profile.connected",
    "profile.disconnected",
]


@pytest.fixture(scope="session")
async def receiver(stack: Stack):
    receiver = Receiver()
    receiver.port = _free_port()
    server, task = await _serve(receiver, receiver.port)
    yield receiver
    server.should_exit = True
    await task


@dataclass
class Hooks:
    stack: Stack
    receiver: Receiver
    dispatcher: Dispatcher

    def configure(self, **updates: Any) -> Settings:
        """Settings for the API and the worker's dispatcher, for this test alone."""
        settings = self.stack.settings.model_copy(update=updates)
        self.stack.api.state.settings = settings
        self.dispatcher.settings = settings
        return settings

    def resolve_with(self, answers: dict[str, list[str]]) -> list[tuple[str, int]]:
        """Both resolve host names with `answers` (changeable later); the lookups made."""
        DNS.answers = answers
        DNS.calls = []
        return DNS.calls

    async def sql(self, statement: str, **params: Any) -> Any:
        async with self.stack.sessionmaker() as session:
            return (await session.execute(text(statement), params)).all()


@pytest.fixture
async def hooks(clean: Stack, receiver: Receiver):
    dispatcher = clean.worker.ctx["webhooks"]
    saved = dispatcher.settings
    receiver.reset()
    await asyncio.wait_for(dispatcher.listening.wait(), 30)
    yield Hooks(clean, receiver, dispatcher)
    dispatcher.settings = saved
    DNS.reset()
    clean.api.state.settings = clean.settings
    # Quiet, so that the next test's TRUNCATE does not meet an attempt being recorded.
    async with clean.sessionmaker() as session, session.begin():
        await session.execute(text("DELETE FROM customer_webhooks"))
    receiver.delays.clear()

    async def idle():
        return not dispatcher.running

    await wait_for(idle)
    receiver.reset()


async def received(receiver: Receiver, name: str, count: int) -> list:
    async def enough():
        return len(receiver.of(name)) >= count

    await wait_for(enough)
    return receiver.of(name)


async def logged(account: Account, webhook_id: str, count: int) -> Any:
    """The endpoint's delivery log, once it holds `count` attempts."""

    async def enough():
        log = await account.client.webhooks.deliveries(webhook_id, per_page=100)
        return log if log.total >= count else None

    return await wait_for(enough)


async def text_messages(stack: Stack, count: int, start: int = 0) -> list[str]:
    return await emit(
        stack,
        *[
            event("text", text=f"m{n}", timestamp=1_763_000_000_000 + n)
            for n in range(start, start + count)
        ],
    )


# -- The API ---------------------------------------------------------------------------------


async def test_create_get_list_update_delete_through_the_sdk(account: Account, hooks: Hooks):
    client = account.client
    created = await client.webhooks.create(
        hooks.receiver.url("a"), ["message.received", "message.sent"], description="inbox"
    )
    assert created.secret is not None and created.secret.startswith("whsec_")
    assert (created.url, created.events, created.enabled, created.description) == (
        hooks.receiver.url("a"),
        ["message.received", "message.sent"],
        True,
        "inbox",
    )
    fetched = await client.webhooks.get(created.id)
    assert fetched.id == created.id and fetched.secret is None  # shown once
    assert [w.id for w in (await client.webhooks.list()).data] == [created.id]
    # Stored encrypted: the secret is nowhere in the row.
    [(stored,)] = await hooks.sql("SELECT secret_encrypted FROM customer_webhooks")
    assert created.secret not in stored

    updated = await client.webhooks.update(
        created.id, url=hooks.receiver.url("b"), events=["message.read"], description="reads"
    )
    assert (updated.url, updated.events, updated.description) == (
        hooks.receiver.url("b"),
        ["message.read"],
        "reads",
    )
    assert updated.updated_at >= created.updated_at
    paused = await client.webhooks.update(created.id, enabled=False)
    assert paused.enabled is False
    assert (await client.webhooks.update(created.id, enabled=True)).enabled is True

    assert (await client.webhooks.deliveries(created.id)).total == 0
    assert (await client.webhooks.delete(created.id)).deleted is True
    with pytest.raises(NotFoundError):
        await client.webhooks.get(created.id)
    with pytest.raises(NotFoundError):
        await client.webhooks.delete(created.id)
    assert (await client.webhooks.list()).data == []


async def test_a_replayed_create_does_not_show_the_secret_again(account: Account, hooks: Hooks):
    first = await account.client.webhooks.create(
        hooks.receiver.url("a"), ["message.received"], idempotency_key="create-1"
    )
    again = await account.client.webhooks.create(
        hooks.receiver.url("a"), ["message.received"], idempotency_key="create-1"
    )
    assert again.id == first.id and first.secret and again.secret is None
    [(stored,)] = await hooks.sql("SELECT response::text FROM idempotency_keys")
    assert first.secret not in stored


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"url": "URL", "events": ["message.sent", "post.processed"]}, "events", "post.processed"),
        ({"url": "URL", "events": []}, "events", "at least 1"),
        ({"url": "URL"}, "events", "required"),
        ({"url": "ftp://example.com/x", "events": ["message.sent"]}, "url", "https://"),
        ({"url": "not a url", "events": ["message.sent"]}, "url", "https://"),
        ({"url": "URL", "events": ["message.sent"], "secret": "mine"}, "secret", "not a field"),
    ],
)
async def test_bad_requests_are_422_naming_the_field(
    account: Account, hooks: Hooks, body: dict, field: str, says: str
):
    if body.get("url") == "URL":
        body = {**body, "url": hooks.receiver.url("a")}
    async with httpx.AsyncClient(base_url=account.client.base_url) as http:
        response = await http.post(
            "/api/webhooks", json=body, headers={"Authorization": f"Bearer {account.token}"}
        )
    assert response.status_code == 422, response.text
    answer = response.json()
    assert says in answer["error"] or any(says in e["message"] for e in answer["errors"])
    assert any(e["field"].startswith(field) for e in answer["errors"]), answer
    assert await hooks.sql("SELECT id FROM customer_webhooks") == []


async def test_another_groups_key_gets_404(hooks: Hooks):
    shop = await connect(hooks.stack, platform_id="1001", group="shop", key_group="shop")
    other = await connect(hooks.stack, platform_id="1002", group="other", key_group="other")
    everyone = await connect(hooks.stack, platform_id="1003", group="third")
    try:
        mine = await shop.client.webhooks.create(hooks.receiver.url("shop"), ["message.received"])
        theirs = await other.client.webhooks.create(
            hooks.receiver.url("other"), ["message.received"]
        )
        for call in (
            other.client.webhooks.get(mine.id),
            other.client.webhooks.update(mine.id, enabled=False),
            other.client.webhooks.deliveries(mine.id),
            other.client._request("POST", f"/webhooks/{mine.id}/test"),
            other.client.webhooks.delete(mine.id),
        ):
            with pytest.raises(NotFoundError):
                await call
        assert [w.id for w in (await other.client.webhooks.list()).data] == [theirs.id]
        # A key of no group sees every group's.
        assert {w.id for w in (await everyone.client.webhooks.list()).data} == {
            mine.id,
            theirs.id,
        }
        # And each endpoint hears its own group's profiles alone.
        await emit(hooks.stack, {**event("text", text="to the shop"), "account_id": "1001"})
        await emit(hooks.stack, {**event("text", text="to the other"), "account_id": "1002"})
        await received(hooks.receiver, "shop", 1)
        await received(hooks.receiver, "other", 1)
        await asyncio.sleep(0.3)  # and nothing more comes
        [(_, shop_data)] = hooks.receiver.events("shop", mine.secret)
        [(_, other_data)] = hooks.receiver.events("other", theirs.secret)
        assert shop_data.message.body == "to the shop"
        assert other_data.message.body == "to the other"
    finally:
        for account in (shop, other, everyone):
            await account.client.close()


# -- Delivery --------------------------------------------------------------------------------


async def test_every_event_type_arrives_signed_and_parses_with_the_sdk(
    account: Account, hooks: Hooks
):
    from app.events import service as events
    from app.events.models import CustomerEventType
    from app.profiles.models import Profile
    from tests.test_delivery import CUSTOMERS, faults, settle

    hook = await account.client.webhooks.create(hooks.receiver.url("all"), ALL_TYPES)
    stack = hooks.stack
    t0 = int(time.time() * 1000) - 60_000  # a minute ago: the reply window is open
    [mid] = await emit(stack, event("text", text="hello", timestamp=t0))
    await emit(
        stack,
        event("reaction", mid=mid, timestamp=t0 + 1000),
        event("edit", mid=mid, text="hello!", num_edit=1, timestamp=t0 + 2000),
        event("read", mid=mid, timestamp=t0 + 3000),
        event("referral", ref="campaign", source="SHORTLINKS", timestamp=t0 + 4000),
        event("echo", text="typed in the app", timestamp=t0 + 5000),
    )
    await emit(stack, event("delete", mid=mid, timestamp=t0 + 6000))
    # A send Meta takes (message.sent, then message.delivered by its echo); one Meta keeps
    # refusing with a transient error (message.failed_waiting_for_retry, then message.failed).
    chats = await account.client.chats.list(account.profile_id)
    sent = await account.client.messages.send(chats.data[0].id, body="our reply")
    await faults(stack, recipients={CUSTOMERS[1]: {"code": 2, "message": "try later"}})
    doomed_chat = await account.client.chats.create(account.profile_id, CUSTOMERS[1])
    doomed = await account.client.messages.send(doomed_chat.id, body="never arrives")
    assert [m.status for m in await settle(account.client, [sent, doomed])] == [
        "published",
        "failed",
    ]
    # Profile events: the accounts capability records them with its change, so.
    async with stack.sessionmaker() as session, session.begin():
        profile = await session.get(Profile, int(await _profile_serial(account)))
        events.record_profile(session, CustomerEventType.PROFILE_CONNECTED, profile)
        events.record_profile(
            session, CustomerEventType.PROFILE_DISCONNECTED, profile, origin="user"
        )
        await events.write_recorded(session)

    async def all_types():
        return {e.type for e, _ in hooks.receiver.events("all", hook.secret)} >= set(ALL_TYPES)

    await wait_for(all_types)
    by_type: dict[str, list] = {}
    for envelope, data in hooks.receiver.events("all", hook.secret):
        by_type.setdefault(envelope.type, []).append(data)
        assert isinstance(envelope.id, str)
    assert by_type["message.received"][0].message.external_id == mid
    assert by_type["reaction.received"][0].emoji == "\u2764\ufe0f"
    assert by_type["message.edited"][0].message.body == "hello!"
    assert by_type["message.deleted"][0].message.body is None  # erased
    assert by_type["referral.received"][0].ref == "campaign"
    sent_bodies = {d.message.body for d in by_type["message.sent"]}
    assert sent_bodies == {"typed in the app", "our reply"}
    [ours] = [d for d in by_type["message.sent"] if d.message.body == "our reply"]
    assert ours.message.id == sent.id and ours.message.status == "published"
    assert ours.message.external_id  # Meta's id, as confirmed
    [delivered] = by_type["message.delivered"]
    assert delivered.message.id == sent.id
    assert {d.message.status for d in by_type["message.failed_waiting_for_retry"]} == {
        "failed_waiting_for_retry"
    }
    [failed] = by_type["message.failed"]
    assert failed.message.id == doomed.id and failed.message.status == "failed"
    assert "Gave up after 8 attempts" in (failed.message.error_message or "")
    assert len(by_type["message.failed_waiting_for_retry"]) == 7  # MAX_ATTEMPTS=8
    assert by_type["profile.connected"][0].id == account.profile_id
    assert by_type["profile.disconnected"][0].origin == "user"
    # Each event once.
    ids = [e.id for e, _ in hooks.receiver.events("all", hook.secret)]
    assert len(ids) == len(set(ids))


async def _profile_serial(account: Account) -> int:
    from app.core import ids

    serial = ids.decode(ids.Kind.PROFILE, account.profile_id)
    assert serial is not None
    return serial


async def test_events_arrive_in_order_per_endpoint_through_retries(account: Account, hooks: Hooks):
    hook = await account.client.webhooks.create(hooks.receiver.url("ordered"), ["message.received"])
    hooks.receiver.statuses["ordered"] = [500, 503, 500]  # the first event fails three times
    await text_messages(hooks.stack, 20)
    await received(hooks.receiver, "ordered", 23)
    await logged(account, hook.id, 23)
    bodies = [d.message.body for _, d in hooks.receiver.events("ordered", hook.secret)]
    assert bodies[:4] == ["m0"] * 4
    assert bodies[3:] == [f"m{n}" for n in range(20)]

    log = await account.client.webhooks.deliveries(hook.id, per_page=100)
    assert log.total == 23
    first = sorted(
        (d for d in log.data if d.event_id == log.data[-1].event_id), key=lambda d: d.attempt_number
    )
    assert [(d.attempt_number, d.response_status, d.success) for d in first] == [
        (1, 500, False),
        (2, 503, False),
        (3, 500, False),
        (4, 200, True),
    ]
    log = await account.client._request(
        "GET", f"/webhooks/{hook.id}/deliveries", params={"per_page": 100}
    )
    row = log["data"][-1]
    assert row["response_excerpt"] == "answer 500"


async def test_an_event_sent_but_not_recorded_is_sent_again_never_lost(
    account: Account, hooks: Hooks
):
    """Successes are recorded while the endpoint's next events go: if recording fails (here
    the delivery log refuses every row), the events stay pending and are sent again once it
    works: at least once, first arrivals in order, none marked delivered unrecorded."""
    hook = await account.client.webhooks.create(
        hooks.receiver.url("unlogged"), ["message.received"]
    )
    await _ddl(
        hooks,
        "ALTER TABLE customer_webhook_attempts ADD CONSTRAINT refuse_all CHECK (false) NOT VALID",
    )
    try:
        await text_messages(hooks.stack, 5)
        await received(hooks.receiver, "unlogged", 5)
        undelivered = "SELECT count(*) FROM customer_webhook_dispatches WHERE status = 'pending'"
        assert await hooks.sql(undelivered) == [(5,)]
    finally:
        await _ddl(hooks, "ALTER TABLE customer_webhook_attempts DROP CONSTRAINT refuse_all")

    async def all_delivered() -> bool:
        return await hooks.sql(undelivered) == [(0,)]

    await wait_for(all_delivered)  # the poller finds them due again
    log = await account.client.webhooks.deliveries(hook.id, per_page=100)
    assert [d.success for d in log.data] == [True] * 5
    bodies = [d.message.body for _, d in hooks.receiver.events("unlogged", hook.secret)]
    assert len(bodies) > 5
    assert list(dict.fromkeys(bodies)) == [f"m{n}" for n in range(5)]


async def _ddl(hooks: Hooks, statement: str) -> None:
    async with hooks.stack.sessionmaker() as session, session.begin():
        await session.execute(text(statement))


async def test_retries_follow_the_schedule_then_give_up(account: Account, hooks: Hooks):
    hooks.configure(webhook_retry_schedule_seconds=(0.0, 0.3, 0.6))
    hook = await account.client.webhooks.create(hooks.receiver.url("down"), ["message.received"])
    hooks.receiver.always["down"] = 500
    await text_messages(hooks.stack, 1)
    attempts = await received(hooks.receiver, "down", 4)
    gaps = [b.at - a.at for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps[0] < 0.3  # at once
    assert 0.3 <= gaps[1] < 1.5 and 0.6 <= gaps[2] < 2.0
    await asyncio.sleep(1.0)
    assert len(hooks.receiver.of("down")) == 4  # the schedule ran out: given up
    [(status,)] = await hooks.sql("SELECT status FROM customer_webhook_dispatches")
    assert status == "failed"
    # The next event goes, the endpoint being back.
    hooks.receiver.always["down"] = 200
    await text_messages(hooks.stack, 1, start=1)
    await received(hooks.receiver, "down", 5)
    assert [d.message.body for _, d in hooks.receiver.events("down", hook.secret)][-1] == "m1"


async def test_consecutive_failures_disable_and_enabling_resumes_in_order(
    account: Account, hooks: Hooks
):
    hooks.configure(webhook_disable_after_failures=3)
    hook = await account.client.webhooks.create(hooks.receiver.url("flaky"), ["message.received"])
    hooks.receiver.always["flaky"] = 503
    await text_messages(hooks.stack, 1)

    async def disabled():
        current = await account.client._request("GET", f"/webhooks/{hook.id}")
        return current if not current["enabled"] else None

    current = await wait_for(disabled)
    assert "3 consecutive failed attempts" in current["disabled_reason"]
    assert "HTTP 503" in current["disabled_reason"]
    await text_messages(hooks.stack, 3, start=1)
    await asyncio.sleep(0.5)
    assert len(hooks.receiver.of("flaky")) == 3  # nothing sent while disabled

    hooks.receiver.always["flaky"] = 200
    resumed = await account.client.webhooks.update(hook.id, enabled=True)
    assert resumed.enabled
    await received(hooks.receiver, "flaky", 7)
    bodies = [d.message.body for _, d in hooks.receiver.events("flaky", hook.secret)]
    assert bodies == ["m0"] * 3 + ["m0", "m1", "m2", "m3"]
    current = await account.client._request("GET", f"/webhooks/{hook.id}")
    assert current["disabled_reason"] is None


async def test_a_hanging_endpoint_delays_no_other(account: Account, hooks: Hooks):
    hooks.configure(webhook_timeout_seconds=4.0)
    slow = await account.client.webhooks.create(hooks.receiver.url("slow"), ["message.received"])
    fast = await account.client.webhooks.create(hooks.receiver.url("fast"), ["message.received"])
    hooks.receiver.delays["slow"] = 10.0
    started = asyncio.get_running_loop().time()
    await text_messages(hooks.stack, 10)
    await received(hooks.receiver, "fast", 10)
    assert asyncio.get_running_loop().time() - started < 3.0
    assert len(hooks.receiver.of("slow")) == 1  # still waiting on its first
    bodies = [d.message.body for _, d in hooks.receiver.events("fast", fast.secret)]
    assert bodies == [f"m{n}" for n in range(10)]

    async def timed_out():
        log = await account.client._request("GET", f"/webhooks/{slow.id}/deliveries")
        return log["data"] if log["total"] else None

    [attempt] = (await wait_for(timed_out))[:1]
    assert attempt["success"] is False and "No answer within 4 s" in attempt["error"]


async def test_a_rolled_back_change_sends_nothing(account: Account, hooks: Hooks):
    from app.events import service as events
    from app.events.models import CustomerEventType
    from app.profiles.models import Profile

    hook = await account.client.webhooks.create(hooks.receiver.url("tx"), ALL_TYPES)
    async with hooks.stack.sessionmaker() as session:
        profile = await session.get(Profile, await _profile_serial(account))
        events.record_profile(session, CustomerEventType.PROFILE_CONNECTED, profile)
        await events.write_recorded(session)
        await session.rollback()
    await text_messages(hooks.stack, 1)
    await received(hooks.receiver, "tx", 1)
    await asyncio.sleep(0.3)
    assert [e.type for e, _ in hooks.receiver.events("tx", hook.secret)] == ["message.received"]


# -- Test events and redelivery --------------------------------------------------------------


async def test_test_events_and_redelivery(account: Account, hooks: Hooks):
    hook = await account.client.webhooks.create(
        hooks.receiver.url("t"), ["reaction.received", "referral.received"]
    )
    answer = await account.client._request("POST", f"/webhooks/{hook.id}/test")
    assert answer["accepted"] is True and answer["event_type"] == "reaction.received"
    for type in ALL_TYPES:
        await account.client._request(
            "POST", f"/webhooks/{hook.id}/test", json={"event_type": type}
        )
    await received(hooks.receiver, "t", 1 + len(ALL_TYPES))
    parsed = hooks.receiver.events("t", hook.secret)
    assert [e.type for e, _ in parsed] == ["reaction.received", *ALL_TYPES]
    assert parsed[0][0].id == answer["event_id"]

    log = await logged(account, hook.id, 1 + len(ALL_TYPES))
    first = log.data[-1]
    assert first.event_id == answer["event_id"] and first.success
    again = await account.client._request(
        "POST", f"/webhooks/{hook.id}/deliveries/{first.id}/redeliver"
    )
    assert again == {"accepted": True, "event_id": first.event_id, "event_type": first.event_type}
    await received(hooks.receiver, "t", 2 + len(ALL_TYPES))
    envelope, _ = hooks.receiver.events("t", hook.secret)[-1]
    assert envelope.id == first.event_id
    with pytest.raises(NotFoundError):
        await account.client._request("POST", f"/webhooks/{hook.id}/deliveries/nope/redeliver")
    with pytest.raises(ValidationError):
        await account.client._request(
            "POST", f"/webhooks/{hook.id}/test", json={"event_type": "post.processed"}
        )


async def test_redelivering_a_real_event_and_retention(account: Account, hooks: Hooks):
    hook = await account.client.webhooks.create(hooks.receiver.url("r"), ["message.received"])
    await text_messages(hooks.stack, 1)
    [delivery] = (await logged(account, hook.id, 1)).data
    await account.client._request("POST", f"/webhooks/{hook.id}/deliveries/{delivery.id}/redeliver")
    await received(hooks.receiver, "r", 2)
    first, second = hooks.receiver.events("r", hook.secret)
    assert first[0].id == second[0].id and first[1] == second[1]

    # Past the retention, delivered events go; the log stays; a redelivery says why not.
    from app.webhooks import service

    await hooks.sql("SELECT 1")  # (a connection for the update below)
    async with hooks.stack.sessionmaker() as session, session.begin():
        await session.execute(
            text("UPDATE customer_events SET created_at = now() - interval '8 days'")
        )
    pruned = await service.prune(hooks.dispatcher.engine, hooks.stack.settings)
    assert pruned == 1
    assert await hooks.sql("SELECT id FROM customer_events") == []
    assert (await account.client.webhooks.deliveries(hook.id)).total == 2
    with pytest.raises(ValidationError, match="no longer kept"):
        await account.client._request(
            "POST", f"/webhooks/{hook.id}/deliveries/{delivery.id}/redeliver"
        )


async def test_pending_events_are_not_pruned(account: Account, hooks: Hooks):
    from app.webhooks import service

    await account.client.webhooks.create(hooks.receiver.url("p"), ["message.received"])
    await account.client.webhooks.update(
        (await account.client.webhooks.list()).data[0].id, enabled=False
    )
    await text_messages(hooks.stack, 1)
    async with hooks.stack.sessionmaker() as session, session.begin():
        await session.execute(
            text("UPDATE customer_events SET created_at = now() - interval '8 days'")
        )
    assert await service.prune(hooks.dispatcher.engine, hooks.stack.settings) == 0


# -- SSRF ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://hooks.example.com/x", "https://"),
        ("https://localhost/x", "local name"),
        ("https://10.0.0.5/x", "not a public address"),
        ("https://169.254.169.254/latest/meta-data", "not a public address"),
        ("https://[::1]/x", "not a public address"),
        ("https://metadata.google.internal/x", "local name"),
        ("https://private.example.com/x", "resolves to 10.1.2.3"),
        ("https://mixed.example.com/x", "resolves to 127.0.0.1"),
        ("https://user:pw@hooks.example.com/x", "user name"),
    ],
)
async def test_urls_that_are_not_public_https_are_refused(
    account: Account, hooks: Hooks, url: str, says: str
):
    hooks.configure(webhook_allow_http=False, webhook_allow_private_hosts=False)
    hooks.resolve_with(
        {
            "hooks.example.com": ["93.184.216.34"],
            "private.example.com": ["10.1.2.3"],
            "mixed.example.com": ["93.184.216.34", "127.0.0.1"],
        }
    )
    with pytest.raises(ValidationError, match=says):
        await account.client.webhooks.create(url, ["message.received"])
    assert await hooks.sql("SELECT id FROM customer_webhooks") == []
    good = await account.client.webhooks.create("https://hooks.example.com/x", ["message.sent"])
    with pytest.raises(ValidationError, match=says):
        await account.client.webhooks.update(good.id, url=url)


async def test_every_attempt_checks_the_address_it_connects_to(account: Account, hooks: Hooks):
    answers = {"hooks.example.com": ["127.0.0.1"]}
    calls = hooks.resolve_with(answers)
    # Allowed (private hosts on, as in development): sent to the address resolved, by name.
    hook = await account.client.webhooks.create(
        hooks.receiver.url("named", host="hooks.example.com"), ["message.received"]
    )
    await text_messages(hooks.stack, 1)
    [request] = await received(hooks.receiver, "named", 1)
    assert request.headers["host"] == f"hooks.example.com:{hooks.receiver.port}"
    assert ("hooks.example.com", hooks.receiver.port) in calls
    # Then the operator's rule is strict, and the name now resolves to a private address
    # (DNS rebinding): the next attempts are refused before connecting.
    hooks.configure(webhook_allow_private_hosts=False)
    answers["hooks.example.com"] = ["10.0.0.7"]
    await text_messages(hooks.stack, 1, start=1)

    async def refused():
        log = await account.client._request("GET", f"/webhooks/{hook.id}/deliveries")
        return [d for d in log["data"] if not d["success"]]

    [attempt, *_] = await wait_for(refused)
    assert attempt["response_status"] is None
    assert "resolves to 10.0.0.7, which is not a public address" in attempt["error"]
    assert len(hooks.receiver.of("named")) == 1  # nothing reached anywhere
