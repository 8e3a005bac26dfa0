import httpx
import pytest
from postproxy import AuthenticationError, NotFoundError, PostProxy

from tests.conftest import connect


async def test_profiles_list_and_get_validate_as_sdk_models(account):
    profiles = await account.client.profiles.list()
    assert [p.id for p in profiles.data] == [account.profile_id]
    profile = await account.client.profiles.get(account.profile_id)
    assert profile.platform == "instagram"
    assert profile.platform_id == account.platform_id
    assert profile.status == "active"
    assert profile.username == "acme"


async def test_missing_and_wrong_keys_are_refused_with_401(account):
    async with httpx.AsyncClient(base_url=account.client.base_url) as http:
        response = await http.get("/api/profiles")
    assert response.status_code == 401
    assert "API key" in response.json()["error"]
    assert response.headers["x-request-id"]

    async with PostProxy("dmr_wrong", base_url=account.client.base_url) as wrong:
        with pytest.raises(AuthenticationError, match="Invalid API key"):
            await wrong.profiles.list()


async def test_a_group_key_sees_only_its_group(clean):
    mine = await connect(clean, platform_id="1001", group="shop", key_group="shop")
    other = await connect(clean, platform_id="1002", group="agency")
    try:
        assert [p.id for p in (await mine.client.profiles.list()).data] == [mine.profile_id]
        with pytest.raises(NotFoundError, match="Profile not found"):
            await mine.client.profiles.get(other.profile_id)
        # An account-wide key sees both, and can narrow itself to one group.
        assert len((await other.client.profiles.list()).data) == 2
        group = (await mine.client.profiles.get(mine.profile_id)).profile_group_id
        narrowed = await other.client.profiles.list(profile_group_id=group)
        assert [p.id for p in narrowed.data] == [mine.profile_id]
    finally:
        await mine.client.close()
        await other.client.close()


@pytest.mark.parametrize("bad_id", ["nope", "0", "x" * 300, "%00"])
async def test_unknown_ids_are_404_never_500(account, bad_id):
    with pytest.raises(NotFoundError):
        await account.client.profiles.get(bad_id)


async def test_request_id_is_echoed_or_made(account):
    async with httpx.AsyncClient(base_url=account.client.base_url) as http:
        headers = {"Authorization": f"Bearer {account.token}"}
        mine = await http.get("/api/profiles", headers={**headers, "X-Request-Id": "abc-123"})
        made = await http.get("/api/profiles", headers=headers)
    assert mine.headers["x-request-id"] == "abc-123"
    assert len(made.headers["x-request-id"]) == 32
