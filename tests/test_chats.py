from datetime import UTC, datetime, timedelta

import httpx
import pytest
from postproxy import NotFoundError, ValidationError
from sqlalchemy import func, update

from app.chats.models import Chat


async def test_create_is_find_or_create(account):
    client = account.client
    async with httpx.AsyncClient(base_url=client.base_url) as http:
        headers = {"Authorization": f"Bearer {account.token}"}
        url = f"/api/profiles/{account.profile_id}/chats"
        created = await http.post(url, json={"participant_external_id": "111"}, headers=headers)
        again = await http.post(
            url,
            json={"participant_external_id": "111", "participant_name": "Ann"},
            headers=headers,
        )
    assert created.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == created.json()["id"]
    chat = await client.chats.get(created.json()["id"])
    assert chat.participant_name == "Ann"
    assert chat.participant_external_id == "111"
    assert chat.profile_id == account.profile_id


async def test_chat_can_be_found_by_meta_conversation_id(account, clean):
    chat = await account.client.chats.create(account.profile_id, "222")
    async with clean.sessionmaker() as session, session.begin():
        await session.execute(update(Chat).values(external_conversation_id="aWdfZAG06xyz"))
    assert (await account.client.chats.get("aWdfZAG06xyz")).id == chat.id


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"participant_external_id": ""},
        {"participant_external_id": "not-an-igsid"},
        {"participant_external_id": 5},
        {"participant_external_id": "1", "surprise": True},
        {"participant_external_id": "1", "participant_name": "Ann\x00"},
    ],
)
async def test_bad_chat_input_is_422_and_creates_nothing(account, body):
    async with httpx.AsyncClient(base_url=account.client.base_url) as http:
        response = await http.post(
            f"/api/profiles/{account.profile_id}/chats",
            json=body,
            headers={"Authorization": f"Bearer {account.token}"},
        )
    assert response.status_code == 422
    assert response.json()["error"]
    assert response.json()["errors"]
    assert (await account.client.chats.list(account.profile_id)).total == 0


async def test_list_is_newest_first_and_paginates_from_page_0(account, clean):
    base = datetime(2026, 11, 1, tzinfo=UTC)
    ids = []
    for n in range(5):
        chat = await account.client.chats.create(account.profile_id, str(300 + n))
        async with clean.sessionmaker() as session, session.begin():
            await session.execute(
                update(Chat)
                .where(Chat.participant_external_id == str(300 + n))
                .values(last_message_at=base + timedelta(hours=n))
            )
        ids.append(chat.id)
    first = await account.client.chats.list(account.profile_id, per_page=2)
    assert (first.total, first.page, first.per_page) == (5, 0, 2)
    assert [c.id for c in first.data] == [ids[4], ids[3]]
    second = await account.client.chats.list(account.profile_id, page=1, per_page=2)
    assert [c.id for c in second.data] == [ids[2], ids[1]]
    window = await account.client.chats.list(
        account.profile_id, before=base + timedelta(hours=3), after=base
    )
    assert [c.id for c in window.data] == [ids[2], ids[1]]


async def test_per_page_is_bounded(account):
    with pytest.raises(ValidationError):
        await account.client.chats.list(account.profile_id, per_page=101)
    with pytest.raises(ValidationError):
        await account.client.chats.list(account.profile_id, page=-1)


async def test_chats_of_unknown_profile_are_404(account):
    with pytest.raises(NotFoundError):
        await account.client.chats.list("unknown")


@pytest.mark.parametrize(
    "value", ["0.5", "1700000000", "yesterday", "2026-13-01T00:00:00Z", "2026-01-01T00:00+25:00"]
)
async def test_before_and_after_take_iso_8601_date_times_only(account, value):
    # Pydantic alone reads a number as a Unix time: before=0.5 was 1970-01-01T00:00:00.5Z.
    async with httpx.AsyncClient(
        base_url=account.client.base_url, headers={"Authorization": f"Bearer {account.token}"}
    ) as http:
        for name in ("before", "after"):
            response = await http.get(
                f"/api/profiles/{account.profile_id}/chats", params={name: value}
            )
            assert response.status_code == 422, response.text
            assert [e["field"] for e in response.json()["errors"]] == [name]
            assert "ISO 8601" in response.json()["error"]


@pytest.mark.parametrize(
    "value",
    ["2026-11-01T00:00:00Z", "2026-11-01T02:00:00.123+02:00", "2026-11-01 00:00", "2026-11-01"],
)
async def test_iso_8601_forms_are_accepted(account, clean, value):
    chat = await account.client.chats.create(account.profile_id, "400")
    async with clean.sessionmaker() as session, session.begin():
        await session.execute(
            update(Chat).values(last_message_at=datetime(2026, 10, 31, 23, 0, tzinfo=UTC))
        )
    async with httpx.AsyncClient(
        base_url=account.client.base_url, headers={"Authorization": f"Bearer {account.token}"}
    ) as http:
        response = await http.get(
            f"/api/profiles/{account.profile_id}/chats", params={"before": value}
        )
    assert response.status_code == 200, response.text
    assert [c["id"] for c in response.json()["data"]] == [chat.id]


@pytest.mark.parametrize(
    ("ago", "within"),
    [
        (None, None),
        (timedelta(hours=23), True),
        (timedelta(hours=25), False),
        (timedelta(days=8), False),
    ],
)
async def test_within_messaging_window_is_the_rule_the_send_check_applies(
    account, clean, ago, within
):
    chat = await account.client.chats.create(account.profile_id, "500")
    if ago is not None:
        async with clean.sessionmaker() as session, session.begin():
            await session.execute(update(Chat).values(last_inbound_at=func.now() - ago))
    assert (await account.client.chats.get(chat.id)).within_messaging_window is within
    listed = await account.client.chats.list(account.profile_id)
    assert [c.within_messaging_window for c in listed.data] == [within]
    # Whatever the chat says, a send without a tag is accepted or refused alike.
    if within is False:
        with pytest.raises(ValidationError, match="messaging window is closed"):
            await account.client.messages.send(chat.id, body="hello")
    else:
        assert (await account.client.messages.send(chat.id, body="hello")).status == "pending"
