"""Applying many deliveries and chats together: what one transaction does for many must keep
every guarantee of applying them one by one (isolation of a failing event or delivery,
per-chat order, no loss when two workers take the same chats, the sweep)."""

import asyncio
import json
import random
import string
from dataclasses import fields

from sqlalchemy import text

from app.core.db import create_engine, create_sessionmaker
from app.inbound import service
from app.inbound.pipeline import InboundPipeline
from app.messages.models import Message, MessageRow
from tests.conftest import IG_ACCOUNT_ID, WAIT_SECONDS, wait_for
from tests.inbound import T0, customer_events, post_payload, scalar, settled


def message(sender: str, mid: str, timestamp: int, **fields) -> dict:
    return {
        "sender": {"id": sender},
        "recipient": {"id": IG_ACCOUNT_ID},
        "timestamp": timestamp,
        "message": {"mid": mid, "text": f"text of {mid}", **fields},
    }


def reaction(sender: str, mid: str, timestamp: int) -> dict:
    return {
        "sender": {"id": sender},
        "recipient": {"id": IG_ACCOUNT_ID},
        "timestamp": timestamp,
        "reaction": {"mid": mid, "action": "react", "reaction": "love", "emoji": "\u2764"},
    }


def payload(*items: dict) -> dict:
    """One entry per item, as the benchmark's batched webhooks have them."""
    return {
        "object": "instagram",
        "entry": [{"id": IG_ACCOUNT_ID, "messaging": [i]} for i in items],
    }


async def store_delivery(stack, body: dict, age_seconds: int = 0) -> int:
    """A delivery as the ack stores it, but without its job (as if the job were lost)."""
    async with stack.sessionmaker() as session, session.begin():
        return await session.scalar(
            text(
                "INSERT INTO webhook_deliveries (body, received_at) "
                "VALUES (:body, now() - make_interval(secs => :age)) RETURNING id"
            ),
            {"body": json.dumps(body), "age": age_seconds},
        )


async def statuses(stack) -> dict[str, tuple[str, str | None]]:
    async with stack.sessionmaker() as session:
        rows = await session.execute(text("SELECT dedupe_key, status, error FROM inbound_events"))
        return {row.dedupe_key: (row.status, row.error) for row in rows}


async def stored_mids(stack) -> list[str]:
    async with stack.sessionmaker() as session:
        return list(await session.scalars(text("SELECT external_id FROM messages ORDER BY id")))


def processor(stack) -> InboundPipeline:
    return stack.worker.ctx["inbound"]


async def test_a_failing_event_is_kept_as_failed_and_the_others_apply(account, clean, monkeypatch):
    real = service.message_columns

    def columns(item, settings):
        if item["message"]["mid"] == "aWdf_poison":
            raise ValueError("poisoned")
        return real(item, settings)

    monkeypatch.setattr(service, "message_columns", columns)
    response = await post_payload(
        clean,
        payload(
            message("601", "aWdf_a1", T0),
            message("601", "aWdf_poison", T0 + 1),
            message("601", "aWdf_a3", T0 + 2),
            message("602", "aWdf_b1", T0),
        ),
    )
    assert response.status_code == 200
    await settled(clean)

    assert (await statuses(clean)) == {
        "message:aWdf_a1": ("applied", None),
        "message:aWdf_poison": ("failed", "ValueError: poisoned"),
        "message:aWdf_a3": ("applied", None),
        "message:aWdf_b1": ("applied", None),
    }
    assert sorted(await stored_mids(clean)) == ["aWdf_a1", "aWdf_a3", "aWdf_b1"]
    assert [t for t, _ in await customer_events(clean)] == ["message.received"] * 3


async def test_a_failing_event_leaves_no_customer_event(account, clean, monkeypatch):
    """The event fails after its customer event was recorded: that record goes with it."""
    real = service._record_referral

    def record_referral(context, referral, *args):
        if referral["ref"] == "poison":
            raise ValueError("poisoned")
        real(context, referral, *args)

    monkeypatch.setattr(service, "_record_referral", record_referral)
    ad = {"ref": "poison", "source": "ADS", "type": "OPEN_THREAD"}
    response = await post_payload(
        clean,
        payload(message("603", "aWdf_c1", T0), message("603", "aWdf_c2", T0 + 1, referral=ad)),
    )
    assert response.status_code == 200
    await settled(clean)

    assert (await statuses(clean))["message:aWdf_c2"] == ("failed", "ValueError: poisoned")
    recorded = [(t, data["message"]["external_id"]) for t, data in await customer_events(clean)]
    assert recorded == [("message.received", "aWdf_c1")]


async def test_chats_with_other_events_apply_in_order_beside_the_batch(account, clean):
    """A reaction locks its message: its chat is applied on its own, the others together."""
    await post_payload(
        clean,
        payload(
            reaction("611", "aWdf_c1", T0 + 1),  # before its message, in the same delivery
            message("611", "aWdf_c1", T0),
            message("612", "aWdf_d1", T0),
            message("613", "aWdf_e1", T0),
        ),
    )
    await settled(clean)

    assert {status for status, _ in (await statuses(clean)).values()} == {"applied"}
    assert sorted(await stored_mids(clean)) == ["aWdf_c1", "aWdf_d1", "aWdf_e1"]
    recorded = [(t, data["message"]["external_id"]) for t, data in await customer_events(clean)]
    assert sorted(recorded) == [
        ("message.received", "aWdf_c1"),
        ("message.received", "aWdf_d1"),
        ("message.received", "aWdf_e1"),
        ("reaction.received", "aWdf_c1"),
    ]
    # The chat's own order: its message, then the reaction to it.
    assert recorded.index(("message.received", "aWdf_c1")) < recorded.index(
        ("reaction.received", "aWdf_c1")
    )


async def test_many_deliveries_at_once_are_each_applied_once(account, clean):
    posts = [
        payload(*(message(f"62{i % 7}", f"aWdf_m{i}_{j}", T0 + i * 10 + j) for j in range(5)))
        for i in range(40)
    ]
    # Each twice, as Meta redelivers.
    responses = await asyncio.gather(*(post_payload(clean, p) for p in posts + posts))
    assert {r.status_code for r in responses} == {200}
    await settled(clean)

    assert len(await stored_mids(clean)) == 200
    # New messages of chats with nothing open are applied as split: none is staged.
    assert await scalar(clean, "SELECT count(*) FROM inbound_events") == 0
    assert await scalar(clean, "SELECT count(*) FROM customer_events") == 200
    assert await scalar(clean, "SELECT sum(n) FROM chat_message_counts") == 200
    last = await scalar(
        clean, "SELECT max(last_inbound_at) = to_timestamp(:t / 1000.0) FROM chats", t=T0 + 394
    )
    assert last


async def test_two_workers_on_the_same_chats_lose_and_repeat_nothing(account, clean):
    """Two processors (as two workers) split and apply deliveries about the same chats at
    the same time, in opposite chat order, one of them with reactions to the other's
    messages."""
    senders = [f"63{n}" for n in range(8)]
    first = payload(*(message(s, f"aWdf_{s}_1", T0 + 2 * n) for n, s in enumerate(senders)))
    second = payload(
        *(message(s, f"aWdf_{s}_2", T0 + 2 * n + 1) for n, s in reversed(list(enumerate(senders)))),
        *(reaction(s, f"aWdf_{s}_1", T0 + 100) for s in senders[:3]),
    )
    engines = [create_engine(clean.settings, pool_size=5) for _ in range(2)]
    try:
        workers = [
            InboundPipeline(create_sessionmaker(e), clean.settings, clean.worker.pool)
            for e in engines
        ]
        for _ in range(3):
            ids = [await store_delivery(clean, first), await store_delivery(clean, second)]
            await asyncio.gather(
                *(w.process_webhook_deliveries([i]) for w, i in zip(workers, ids, strict=True))
            )
    finally:
        for engine in engines:
            await engine.dispose()

    # Staged (the others were applied as split): the reactions, and the messages of their
    # chats; all applied.
    events = await statuses(clean)
    assert sum(key.startswith("reaction:") for key in events) == 3
    assert {status for status, _ in events.values()} == {"applied"}
    assert len(await stored_mids(clean)) == 2 * len(senders)
    types = [t for t, _ in await customer_events(clean)]
    assert (types.count("message.received"), types.count("reaction.received")) == (16, 3)
    latest = await scalar(
        clean,
        "SELECT bool_and(last_inbound_at = last_message_at) AND count(*) = 8 FROM chats",
    )
    assert latest


async def test_a_chat_whose_row_is_held_is_applied_once_it_is_free(account, clean):
    await post_payload(clean, payload(message("641", "aWdf_f1", T0), message("642", "aWdf_g1", T0)))
    await settled(clean)
    delivery = await store_delivery(
        clean, payload(message("641", "aWdf_f2", T0 + 1), message("642", "aWdf_g2", T0 + 1))
    )
    async with clean.sessionmaker() as holder, holder.begin():
        # As the delivery worker holds a chat while it publishes.
        await holder.execute(
            text("SELECT 1 FROM chats WHERE participant_external_id = '641' FOR UPDATE")
        )
        task = asyncio.create_task(processor(clean).process_webhook_deliveries([delivery]))

        async def other_chat_applied():
            return "aWdf_g2" in await stored_mids(clean)

        await wait_for(other_chat_applied)
        assert "aWdf_f2" not in await stored_mids(clean) and not task.done()
    await asyncio.wait_for(task, timeout=WAIT_SECONDS)
    assert sorted(await stored_mids(clean)) == ["aWdf_f1", "aWdf_f2", "aWdf_g1", "aWdf_g2"]


async def test_a_delivery_that_cannot_be_split_does_not_hold_up_the_others(account, clean):
    # A mid too long for a btree index (of random characters, which do not compress): storing
    # this one's events fails.
    mid = "".join(random.choices(string.ascii_letters, k=4000))
    bad = await store_delivery(clean, payload(message("651", mid, T0)))
    good = await store_delivery(clean, payload(message("652", "aWdf_h1", T0)))
    await processor(clean).process_webhook_deliveries([bad, good])

    assert await stored_mids(clean) == ["aWdf_h1"]
    # Kept, saying why, and not taken up again: no retry would store it.
    async with clean.sessionmaker() as session:
        kept = await session.execute(
            text("SELECT status, problems FROM webhook_deliveries WHERE id = :id"), {"id": bad}
        )
        status, [problem] = kept.one()
    assert status == "unparseable"
    assert problem.startswith("PostgreSQL refused to store its events: index row size")


async def test_the_sweep_takes_up_lost_deliveries_and_events(account, clean):
    await store_delivery(clean, payload(message("661", "aWdf_i1", T0)), age_seconds=60)
    async with clean.sessionmaker() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO inbound_events (account_id, participant_id, kind, mid, dedupe_key, "
                "occurred_at, payload, created_at) VALUES (:account, '662', 'message', "
                "'aWdf_j1', 'message:aWdf_j1', now(), :payload, now() - interval '1 minute')"
            ),
            {"account": IG_ACCOUNT_ID, "payload": json.dumps(message("662", "aWdf_j1", T0))},
        )

    async def swept():
        return len(await stored_mids(clean)) == 2

    await wait_for(swept)
    assert {status for status, _ in (await statuses(clean)).values()} == {"applied"}

    async def profiles_read():  # the jobs this started are done before the next test
        return await scalar(clean, "SELECT bool_and(participant_synced_at IS NOT NULL) FROM chats")

    await wait_for(profiles_read)


def test_a_stored_message_row_has_every_message_column():
    """A message stored many at once is read back as a MessageRow, built from its columns."""
    assert {f.name for f in fields(MessageRow)} == set(Message.__table__.c.keys())
