"""Connecting an Instagram account with Instagram Login, through the SDK and a browser's
redirects, against the sandbox playing Instagram's OAuth."""

import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from postproxy import NotFoundError, ValidationError

from app.connections import state as states
from tests.conftest import connect, wait_for
from tests.inbound import customer_events, scalar

DONE = "https://app.example/connected?from=dmrelay"
ACCOUNT = {"user_id": "17841400000000777", "username": "shop", "name": "The Shop"}


async def sandbox_account(stack, deny: bool = False, **account) -> None:
    body = {"account": {**ACCOUNT, **account}, "deny": deny}
    await stack.sandbox("POST", "/_sandbox/oauth", json=body)


async def browse(url: str) -> httpx.Response:
    """One step of the browser: the answer, not following its redirect (dmrelay's
    redirect_url is never fetched: nothing leaves the machine)."""
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.get(url)


async def start(admin, group_id: str, redirect_url: str | None = DONE) -> str:
    answer = await admin.client.profile_groups.initialize_connection(
        group_id, "instagram", redirect_url
    )
    assert answer.success is True
    return answer.url


async def authorize(stack, url: str) -> str:
    """The authorize page approves at once: the callback URL it sends the browser to."""
    page = await browse(url)
    assert page.status_code == 302, page.text
    callback = page.headers["location"]
    assert callback.startswith(f"{stack.api_url}/connect/instagram/callback?")
    return callback


def landed(response: httpx.Response) -> dict[str, list[str]]:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith("https://app.example/connected?")
    return parse_qs(urlsplit(location).query)


@pytest.fixture
async def admin(clean):
    admin = await connect(clean)
    yield admin
    await admin.client.close()


async def _group(admin) -> str:
    return (await admin.client.profile_groups.create("Shop")).id


async def test_connecting_an_account_end_to_end(admin, clean):
    await sandbox_account(clean, profile_picture_url=f"{clean.sandbox_url}/_sandbox/media/me.png")
    group_id = await _group(admin)
    url = await start(admin, group_id)
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(f"{clean.sandbox_url}/oauth/authorize?")
    assert query["client_id"] == ["test-instagram-app-id"]
    assert query["redirect_uri"] == [clean.settings.instagram_redirect_uri]
    assert set(query["scope"][0].split(",")) >= {
        "instagram_business_basic",
        "instagram_business_manage_messages",
    }

    back = landed(await browse(await authorize(clean, url)))
    assert back["success"] == ["true"] and back["from"] == ["dmrelay"]
    profile = await admin.client.profiles.get(back["profile_id"][0])
    assert (profile.platform_id, profile.username, profile.name) == (
        ACCOUNT["user_id"],
        "shop",
        "The Shop",
    )
    assert profile.status == "active" and profile.profile_group_id == group_id
    assert profile.avatar_url.endswith("/me.png")
    assert 59 * 86400 < profile.expires_at.timestamp() - time.time() <= 60 * 86400

    oauth = (await clean.sandbox("GET", "/_sandbox/oauth")).json()
    assert [c["path"] for c in oauth["calls"]] == ["oauth/access_token", "access_token"]
    assert "messages" in oauth["subscribed"][ACCOUNT["user_id"]].split(",")
    connected = [data for kind, data in await customer_events(clean) if kind == "profile.connected"]
    assert [(d["id"], d["platform_id"], d["status"]) for d in connected] == [
        (profile.id, ACCOUNT["user_id"], "active")
    ]

    # The long-lived token works: a send goes out with it.
    chat = await admin.client.chats.create(profile.id, "1700000000000501")
    sent = await admin.client.messages.send(chat.id, body="hello from the connected account")

    async def published() -> bool:
        return (await admin.client.messages.get(sent.id)).status == "published"

    await wait_for(published)


async def test_a_refused_or_tampered_callback_changes_nothing_and_says_why(admin, clean):
    group_id = await _group(admin)
    profiles_before = await scalar(clean, "SELECT count(*) FROM profiles")

    # The user says no: back to the app, with Instagram's reason.
    await sandbox_account(clean, deny=True)
    back = landed(await browse(await authorize(clean, await start(admin, group_id))))
    assert back["success"] == ["false"]
    assert "The user denied your request" in back["error"][0]

    # An altered state: not trusted to say where to go, so a 400 that says why.
    await sandbox_account(clean)
    callback = await authorize(clean, await start(admin, group_id))
    state = parse_qs(urlsplit(callback).query)["state"][0]
    forged = callback.replace(state, "x" + state[1:])
    refused = await browse(forged)
    assert refused.status_code == 400
    assert "altered" in refused.json()["error"]

    # A state past its time.
    stale = states.sign(
        clean.settings.secret_key, states.ConnectState(1, DONE), lifetime_seconds=-1
    )
    refused = await browse(callback.replace(state, stale))
    assert refused.status_code == 400 and "expired" in refused.json()["error"]

    # The real callback once, then replayed: Meta refuses a used code.
    assert landed(await browse(callback))["success"] == ["true"]
    again = landed(await browse(callback))
    assert again["success"] == ["false"] and "Matching code" in again["error"][0]
    assert await scalar(clean, "SELECT count(*) FROM profiles") == profiles_before + 1

    # An account of another group is not moved by connecting it here.
    other = await admin.client.profile_groups.create("Other")
    moved = landed(await browse(await authorize(clean, await start(admin, other.id))))
    assert moved["success"] == ["false"] and "another profile group ('Shop')" in moved["error"][0]


async def test_initialize_connection_checks_its_input(admin, clean):
    group_id = await _group(admin)
    with pytest.raises(ValidationError):
        await admin.client.profile_groups.initialize_connection(group_id, "tiktok")
    with pytest.raises(ValidationError, match="redirect_url"):
        await admin.client.profile_groups.initialize_connection(
            group_id, "instagram", "javascript:alert(1)"
        )
    with pytest.raises(NotFoundError):
        await admin.client.profile_groups.initialize_connection("nope", "instagram")
    # Without a redirect_url, the browser is told it is done.
    await sandbox_account(clean)
    done = await browse(await authorize(clean, await start(admin, group_id, None)))
    assert done.status_code == 200 and "shop" in done.text
