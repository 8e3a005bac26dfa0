"""The participant's profile: fetched into a new chat, refreshed without retry storms, and
served by the SDK's `participant_status`."""

import asyncio

import pytest
from postproxy import ValidationError
from sqlalchemy import text

from app.participants import service as participants
from tests.conftest import WAIT_SECONDS, wait_for, worker_idle
from tests.inbound import emit, event, only_chat, scalar


@pytest.fixture
async def sandbox_profiles(clean):
    await clean.sandbox("DELETE", "/_sandbox/profiles")
    yield clean


async def profile_requests(stack) -> dict[str, int]:
    return (await stack.sandbox("GET", "/_sandbox/profile_requests")).json()["data"]


async def test_a_new_chat_gets_the_participants_profile(account, sandbox_profiles):
    await sandbox_profiles.sandbox(
        "POST",
        "/_sandbox/profiles",
        json={
            "4242": {
                "name": "Ada L.",
                "username": "ada",
                "follower_count": 1815,
                "is_verified_user": True,
                "is_user_follow_business": True,
                "is_business_follow_user": False,
            }
        },
    )
    await emit(sandbox_profiles, event("text", sender="4242", text="hi"))

    async def profiled():
        chat = await only_chat(account)
        return chat if chat.participant_username else None

    chat = await wait_for(profiled)
    assert (chat.participant_name, chat.participant_username) == ("Ada L.", "ada")
    # The picture is dmrelay's copy (see tests/test_participant_avatars.py).
    assert chat.participant_avatar_url.startswith(f"{sandbox_profiles.api_url}/media/avatars/")
    assert chat.metadata == {
        "follower_count": 1815,
        "is_verified_user": True,
        "is_user_follow_business": True,
        "is_business_follow_user": False,
    }
    # More messages do not read the profile again while it is fresh.
    await emit(sandbox_profiles, event("text", sender="4242", text="still me"))
    await worker_idle(sandbox_profiles)
    assert (await profile_requests(sandbox_profiles)) == {"4242": 1}


async def test_the_new_chats_of_one_delivery_each_get_their_participants_profile(
    account, sandbox_profiles
):
    senders = ["5101", "5102", "5103"]
    await sandbox_profiles.sandbox(
        "POST", "/_sandbox/profiles", json={s: {"username": f"user{s}"} for s in senders}
    )
    await emit(sandbox_profiles, *(event("text", sender=s, text="hi") for s in senders))

    async def all_profiled():
        chats = (await account.client.chats.list(account.profile_id)).data
        names = {chat.participant_external_id: chat.participant_username for chat in chats}
        return names if len(names) == 3 and all(names.values()) else None

    assert await wait_for(all_profiled) == {s: f"user{s}" for s in senders}
    await worker_idle(sandbox_profiles)
    assert (await profile_requests(sandbox_profiles)) == {s: 1 for s in senders}


async def test_two_jobs_at_once_fetch_a_participant_once(account, sandbox_profiles):
    await sandbox_profiles.sandbox("POST", "/_sandbox/profiles", json={"5201": {"name": "Bo"}})
    await emit(sandbox_profiles, event("text", sender="5201", text="hi"))
    await wait_for(lambda: _requests_for(sandbox_profiles, "5201", 1))
    await worker_idle(sandbox_profiles)  # its job done (its picture copied), its claim gone
    chat_id = await scalar(sandbox_profiles, "SELECT id FROM chats")
    async with sandbox_profiles.sessionmaker() as session, session.begin():
        await session.execute(text("UPDATE chats SET participant_synced_at = NULL"))  # stale

    # Slow answers, so that both jobs have read the chat as stale before either stores it.
    await sandbox_profiles.sandbox("POST", "/_sandbox/faults", json={"latency_ms": 300})
    ctx = sandbox_profiles.worker.ctx
    inbound = ctx["inbound"]
    await asyncio.gather(
        *(
            participants.refresh(
                inbound.sessionmaker,
                ctx["graph"],
                inbound.settings,
                ctx["redis"],
                ctx["mirror"],
                [chat_id],
            )
            for _ in range(2)
        )
    )
    assert (await profile_requests(sandbox_profiles))["5201"] == 2
    assert (await only_chat(account)).participant_name == "Bo"


async def test_a_refresh_waiting_for_a_held_chat_holds_no_chat_after_it(account, sandbox_profiles):
    stack = sandbox_profiles
    await emit(
        stack, event("text", sender="5301", text="hi"), event("text", sender="5302", text="hi")
    )
    await wait_for(lambda: _requests_for(stack, "5302", 1))
    await worker_idle(stack)
    async with stack.sessionmaker() as session, session.begin():
        await session.execute(text("UPDATE chats SET participant_synced_at = NULL"))
    first, second = await _chat_ids(stack)

    ctx = stack.worker.ctx
    inbound = ctx["inbound"]
    async with stack.sessionmaker() as holder, holder.begin():
        # As the delivery worker holds a chat while it publishes.
        await holder.execute(text("SELECT 1 FROM chats WHERE id = :id FOR UPDATE"), {"id": first})
        refresh = asyncio.create_task(
            participants.refresh(
                inbound.sessionmaker,
                ctx["graph"],
                inbound.settings,
                ctx["redis"],
                ctx["mirror"],
                [second, first],
            )
        )

        async def refresh_waits():
            return await scalar(
                stack,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'UPDATE chats%'",
            )

        await wait_for(refresh_waits)
        async with stack.sessionmaker() as other, other.begin():
            # Fails at once if the waiting refresh holds the later chat.
            await other.execute(
                text("SELECT 1 FROM chats WHERE id = :id FOR UPDATE NOWAIT"), {"id": second}
            )
    await asyncio.wait_for(refresh, timeout=WAIT_SECONDS)


async def _chat_ids(stack) -> list[int]:
    async with stack.sessionmaker() as session:
        return list(await session.scalars(text("SELECT id FROM chats ORDER BY id")))


async def test_consent_required_is_not_retried_until_the_participant_writes(
    account, sandbox_profiles
):
    # The business writes first (from the Instagram app): Meta shares no profile yet.
    await emit(sandbox_profiles, event("echo", sender="4343", text="hello from us"))
    await wait_for(lambda: _requests_for(sandbox_profiles, "4343", 1))
    await emit(sandbox_profiles, event("echo", sender="4343", text="anyone there?"))
    await emit(sandbox_profiles, event("reaction", sender="4343", mid="aWdf_x"))
    await worker_idle(sandbox_profiles)
    assert (await profile_requests(sandbox_profiles))["4343"] == 1
    assert (await only_chat(account)).participant_username is None

    await emit(sandbox_profiles, event("text", sender="4343", text="hi!"))

    async def profiled():
        return (await only_chat(account)).participant_username

    assert await wait_for(profiled) == "user_4343"
    await worker_idle(sandbox_profiles)
    assert (await profile_requests(sandbox_profiles))["4343"] == 2


async def _requests_for(stack, igsid: str, count: int) -> bool:
    return (await profile_requests(stack)).get(igsid) == count


async def test_participant_status_is_fetched_then_cached(account, sandbox_profiles):
    await sandbox_profiles.sandbox(
        "POST",
        "/_sandbox/profiles",
        json={"4444": {"is_verified_user": True, "is_user_follow_business": False}},
    )
    status = await account.client.profiles.participant_status(account.profile_id, "4444")
    assert (status.is_verified_user, status.is_user_follow_business) == (True, False)
    assert status.fetched_at is not None

    await emit(sandbox_profiles, event("text", sender="4444", text="hi"))

    async def profiled():
        return (await only_chat(account)).participant_username

    await wait_for(profiled)
    requests = (await profile_requests(sandbox_profiles))["4444"]
    again = await account.client.profiles.participant_status(account.profile_id, "4444")
    assert again.is_verified_user is True
    assert (await profile_requests(sandbox_profiles))["4444"] == requests  # from the chat


async def test_participant_status_errors(account, sandbox_profiles):
    with pytest.raises(ValidationError, match="consent"):
        await account.client.profiles.participant_status(account.profile_id, "4545")
    with pytest.raises(ValidationError):
        await account.client.profiles.participant_status(account.profile_id, "not-an-igsid")
