"""appsecret_proof on every Graph call made with a Page token, and with an Instagram Login
token where the profile opted in; the sandbox, told to require it as Meta does with "Require
App Secret", refuses a call without a valid one."""

import pytest
from postproxy import PostProxy

from app.api_keys import service as keys
from app.core import ids
from app.meta.errors import GraphError
from app.meta.graph import Account, GraphClient, create_session
from app.profiles import service as profiles
from tests.conftest import wait_for
from tests.test_connect import _group, admin, authorize, browse, landed, sandbox_account, start

__all__ = ["admin"]
CUSTOMER = "1700000000000701"
BODY = {"recipient": {"id": CUSTOMER}, "message": {"text": "hi"}}


async def _require(clean) -> None:
    await clean.sandbox("POST", "/_sandbox/faults", json={"require_appsecret_proof": True})
    await clean.sandbox("DELETE", "/_sandbox/proofs")


async def _proofs(clean) -> list[bool]:
    return (await clean.sandbox("GET", "/_sandbox/proofs")).json()["data"]


async def _profile(clean, platform_id: str, connection: str, proof: bool = False) -> PostProxy:
    async with clean.sessionmaker() as session, session.begin():
        group = await profiles.ensure_group(session, "default")
        profile = await profiles.add_profile(
            session,
            clean.settings,
            platform_id=platform_id,
            access_token=f"token-{platform_id}",
            connection=connection,
            group=group,
            page_id="1000000000001" if connection == "facebook_login" else None,
            extra={"appsecret_proof": proof},
        )
        _, token = await keys.create(session, "test", None)
    client = PostProxy(token, base_url=clean.api_url)
    client.profile = ids.encode(ids.Kind.PROFILE, profile.id)
    return client


async def _send(client: PostProxy, body: str):
    chat = await client.chats.create(client.profile, CUSTOMER)
    message = await client.messages.send(chat.id, body=body)

    async def settled():
        found = await client.messages.get(message.id)
        return found if found.status in ("published", "failed") else None

    return await wait_for(settled)


async def test_page_tokens_and_opted_in_profiles_prove_the_app(clean):
    await _require(clean)
    page = await _profile(clean, "1001", "facebook_login")
    opted = await _profile(clean, "1002", "instagram_login", proof=True)
    plain = await _profile(clean, "1003", "instagram_login")
    try:
        assert (await _send(page, "from the page")).status == "published"
        # The participant read (User Profile API) proves it too.
        await clean.sandbox("POST", "/_sandbox/profiles", json={CUSTOMER: {"name": "Cu"}})
        status = await page.profiles.participant_status(page.profile, CUSTOMER)
        assert status is not None
        assert (await _send(opted, "opted in")).status == "published"
        assert set(await _proofs(clean)) == {True}

        # Off by default for Instagram Login: Meta, requiring it, refuses.
        refused = await _send(plain, "no proof")
        assert refused.status == "failed"
        assert refused.error_details.platform_error_message == (
            "appsecret_proof argument must be set"
        )
    finally:
        for client in (page, opted, plain):
            await client.close()


async def test_a_connection_made_with_proofs_required(admin, clean):
    await _require(clean)
    clean.settings.instagram_login_appsecret_proof = True  # shared by the API and the sandbox
    try:
        await sandbox_account(clean)
        back = landed(await browse(await authorize(clean, await start(admin, await _group(admin)))))
    finally:
        clean.settings.instagram_login_appsecret_proof = False
    assert back["success"] == ["true"], back
    assert await _proofs(clean) and set(await _proofs(clean)) == {True}  # /me, subscribed_apps


@pytest.mark.parametrize("timestamped", [False, True])
async def test_the_proof_is_checked_in_both_forms(clean, timestamped):
    await _require(clean)
    settings = clean.settings.model_copy(update={"appsecret_proof_timestamped": timestamped})
    account = Account("facebook_login", "17841400000000001", "1000000000001", "page-token")
    async with create_session(timeout_seconds=10.0) as http:
        answer = await GraphClient(settings, http).send_message(account, BODY)
        assert answer.message_id
        wrong = settings.model_copy(update={"meta_app_secret": "not-the-secret"})
        with pytest.raises(GraphError) as refused:
            await GraphClient(wrong, http).send_message(account, BODY)
        assert refused.value.message == "Invalid appsecret_proof provided in the API argument"
