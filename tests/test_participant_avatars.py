"""Participants' pictures: copied from Meta's expiring CDN links to dmrelay's media store, served
at /media, copied again once stale (the old copy deleted); a failed copy keeps the previous
one and never fails the profile fetch."""

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import wait_for, worker_idle
from tests.inbound import emit, event, only_chat, scalar

PICTURE = b"\x89PNG\r\n\x1a\n another picture"


@pytest.fixture
async def sandbox_profiles(clean):
    await clean.sandbox("DELETE", "/_sandbox/profiles")
    yield clean


async def fetch(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(url)


async def profiled(account, stack, igsid: str, text_: str = "hi"):
    """The chat once the participant's profile has been fetched after this message."""
    before = await scalar(stack, "SELECT max(participant_synced_at) FROM chats")
    await emit(stack, event("text", sender=igsid, text=text_))

    async def fetched():
        synced = await scalar(stack, "SELECT max(participant_synced_at) FROM chats")
        return synced is not None and (before is None or synced > before)

    await wait_for(fetched)
    await worker_idle(stack)
    return await only_chat(account)


async def age(stack, profile: timedelta, picture: timedelta) -> None:
    """Make the stored profile and picture copy look this old."""
    async with stack.sessionmaker() as session, session.begin():
        await session.execute(
            text(
                "UPDATE chats SET participant_synced_at = now() - CAST(:profile AS interval),"
                " participant_avatar_synced_at = now() - CAST(:picture AS interval)"
            ),
            {"profile": profile, "picture": picture},
        )


async def test_the_picture_is_copied_and_served_by_dmrelay(account, sandbox_profiles):
    stack = sandbox_profiles
    chat = await profiled(account, stack, "6101")

    url = chat.participant_avatar_url
    assert url.startswith(f"{stack.api_url}/media/avatars/") and url.endswith(".png")
    copy = await fetch(url)
    original = await fetch(f"{stack.sandbox_url}/_sandbox/media/avatar_6101.png")
    assert copy.status_code == 200 and copy.content == original.content
    assert copy.headers["content-type"] == "image/png"


async def test_an_expired_meta_link_does_not_break_the_picture(account, sandbox_profiles):
    stack = sandbox_profiles
    url = (await profiled(account, stack, "6102")).participant_avatar_url
    await stack.sandbox("POST", "/_sandbox/media/expire", json={"names": ["avatar_6102.png"]})

    assert (await fetch(url)).status_code == 200
    # Stale, the picture is copied again from the dead link: the copy is kept, and the
    # profile fetch succeeds all the same.
    await stack.sandbox("POST", "/_sandbox/profiles", json={"6102": {"name": "Renamed"}})
    await age(stack, profile=timedelta(hours=1), picture=timedelta(days=8))
    chat = await profiled(account, stack, "6102", "again")

    assert (chat.participant_name, chat.participant_avatar_url) == ("Renamed", url)
    assert await scalar(stack, "SELECT participant_sync_error FROM chats") is None
    assert (await fetch(url)).status_code == 200


async def test_a_stale_picture_is_copied_again_and_the_old_copy_deleted(account, sandbox_profiles):
    stack = sandbox_profiles
    old_url = (await profiled(account, stack, "6103")).participant_avatar_url
    new_pic = (
        await stack.sandbox(
            "PUT",
            "/_sandbox/media/new_6103.png",
            content=PICTURE,
            headers={"content-type": "image/png"},
        )
    ).json()["url"]
    await stack.sandbox("POST", "/_sandbox/profiles", json={"6103": {"profile_pic": new_pic}})

    # The profile is stale, the copy is not (PARTICIPANT_AVATAR_MAX_AGE_SECONDS is a week):
    # the profile is read again, the picture is not copied again.
    await age(stack, profile=timedelta(days=2), picture=timedelta(days=1))
    chat = await profiled(account, stack, "6103", "again")
    assert chat.participant_avatar_url == old_url

    await age(stack, profile=timedelta(hours=1), picture=timedelta(days=8))
    new_url = (await profiled(account, stack, "6103", "and again")).participant_avatar_url
    assert new_url != old_url and new_url.startswith(f"{stack.api_url}/media/avatars/")
    assert (await fetch(new_url)).content == PICTURE

    async def old_copy_deleted():
        return (await fetch(old_url)).status_code == 404

    await wait_for(old_copy_deleted)
    assert await scalar(stack, "SELECT count(*) FROM media_deletions") == 0


async def test_with_no_copy_yet_a_failed_copy_shows_metas_link_until_retried(
    account, sandbox_profiles
):
    stack = sandbox_profiles
    await stack.sandbox("POST", "/_sandbox/media/expire", json={"names": ["avatar_6104.png"]})
    chat = await profiled(account, stack, "6104")
    assert chat.participant_username == "user_6104"  # the fetch itself succeeded
    assert chat.participant_avatar_url == f"{stack.sandbox_url}/_sandbox/media/avatar_6104.png"

    # Tried again with the next fetch (here, past PARTICIPANT_RETRY_SECONDS).
    live = (
        await stack.sandbox(
            "PUT",
            "/_sandbox/media/live_6104.png",
            content=PICTURE,
            headers={"content-type": "image/png"},
        )
    ).json()["url"]
    await stack.sandbox("POST", "/_sandbox/profiles", json={"6104": {"profile_pic": live}})
    async with stack.sessionmaker() as session, session.begin():
        await session.execute(
            text("UPDATE chats SET participant_synced_at = now() - interval '1 hour'")
        )
    chat = await profiled(account, stack, "6104", "again")
    assert chat.participant_avatar_url.startswith(f"{stack.api_url}/media/avatars/")
    assert (await fetch(chat.participant_avatar_url)).content == PICTURE


async def test_a_picture_that_is_not_an_image_is_not_copied(account, sandbox_profiles):
    stack = sandbox_profiles
    page = (
        await stack.sandbox(
            "PUT",
            "/_sandbox/media/page_6105.png",
            content=b"<script>",
            headers={"content-type": "text/html"},
        )
    ).json()["url"]
    await stack.sandbox("POST", "/_sandbox/profiles", json={"6105": {"profile_pic": page}})
    chat = await profiled(account, stack, "6105")
    assert chat.participant_avatar_url == page
    assert await scalar(stack, "SELECT participant_avatar_key FROM chats") is None


async def test_erasing_the_profile_deletes_the_copies(account, sandbox_profiles):
    stack = sandbox_profiles
    url = (await profiled(account, stack, "6106")).participant_avatar_url
    result = await account.client._request(
        "DELETE", f"/profiles/{account.profile_id}", params={"erase": "true"}
    )
    assert result == {"success": True}

    async def deleted():
        return (await fetch(url)).status_code == 404

    await wait_for(deleted)
