"""The User Profile API (consent, overrides, request counts) and the media the sandbox serves."""

from tests.sandbox.support import IG_ID, IGSID, assert_error, sandbox_client

FIELDS = (
    "name,username,profile_pic,follower_count,is_user_follow_business,"
    "is_business_follow_user,is_verified_user"
)


def read_profile(client, igsid=IGSID, fields=FIELDS, token="tok"):
    return client.get(f"/v25.0/{igsid}", params={"fields": fields, "access_token": token})


async def requests_made(client) -> dict:
    return (await client.get("/_sandbox/profile_requests")).json()["data"]


async def test_consent_error_until_the_customer_writes(hooked, receiver):
    async with sandbox_client(hooked) as client:
        before = await read_profile(client)
        inbound = {"account_id": IG_ID, "sender_id": IGSID, "text": "hi"}
        await client.post("/_sandbox/inbound", json=inbound)
        after = await read_profile(client)
        again = await read_profile(client)
        counts = await requests_made(client)

    error = assert_error(before, 400, 230)
    assert error["message"] == "(#230) User consent is required to access user profile"
    assert error["type"] == "OAuthException"
    assert after.status_code == 200
    assert after.json() == again.json()  # deterministic
    assert after.json() == {
        "name": "User 6188",
        "username": "user_6188",
        "profile_pic": f"http://sandbox/_sandbox/media/avatar_{IGSID}.png",
        "follower_count": after.json()["follower_count"],
        "is_user_follow_business": after.json()["is_user_follow_business"],
        "is_business_follow_user": after.json()["is_business_follow_user"],
        "is_verified_user": after.json()["is_verified_user"],
        "id": IGSID,
    }
    assert isinstance(after.json()["follower_count"], int)
    assert counts == {IGSID: 3}


async def test_only_the_requested_fields_come_back(client):
    await client.post("/_sandbox/profiles", json={"42": {}})
    assert (await read_profile(client, "42", "username")).json() == {
        "username": "user_42",
        "id": "42",
    }
    assert (await read_profile(client, "42", None)).json() == {"name": "User 42", "id": "42"}
    assert_error(await read_profile(client, "42", "name,email"), 400, 100)


async def test_overrides_set_fields_and_consent(client):
    body = {IGSID: {"name": None, "follower_count": 7, "is_verified_user": True}}
    answer = await client.post("/_sandbox/profiles", json=body)
    profile = (await read_profile(client)).json()

    assert answer.json()[IGSID] == {**profile, "id": IGSID}
    assert profile["name"] is None
    assert (profile["follower_count"], profile["is_verified_user"]) == (7, True)
    assert profile["username"] == "user_6188"
    bad = {IGSID: {"email": "x"}}
    assert (await client.post("/_sandbox/profiles", json=bad)).status_code == 422


async def test_profile_reads_need_a_token_and_are_counted(client):
    assert_error(await read_profile(client, token=""), 400, 190)
    await read_profile(client)
    await read_profile(client)
    await read_profile(client, "42")
    assert await requests_made(client) == {IGSID: 2, "42": 1}

    await client.delete("/_sandbox/profile_requests")
    assert await requests_made(client) == {}
    await client.post("/_sandbox/profiles", json={IGSID: {}})
    await client.delete("/_sandbox/profiles")  # forgets consent too
    assert_error(await read_profile(client), 400, 230)


async def test_media_is_served_and_expires(client):
    png = await client.get("/_sandbox/media/avatar_1.png")
    video = await client.get("/_sandbox/media/video_ab.mp4")
    audio = await client.get("/_sandbox/media/audio_ab.m4a")
    pdf = await client.get("/_sandbox/media/file_ab.pdf")
    other = await client.get("/_sandbox/media/thing.bin")

    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n") and png.content.endswith(b"IEND\xaeB`\x82")
    assert video.headers["content-type"] == "video/mp4" and video.content[4:8] == b"ftyp"
    assert audio.headers["content-type"] == "audio/mp4" and audio.content[4:8] == b"ftyp"
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-")
    assert other.headers["content-type"] == "application/octet-stream"
    assert other.content == (await client.get("/_sandbox/media/thing.bin")).content

    expired = await client.post("/_sandbox/media/expire", json={"names": ["avatar_1.png"]})
    assert expired.json() == {"expired": ["avatar_1.png"]}
    assert (await client.get("/_sandbox/media/avatar_1.png")).status_code == 404
    assert (await client.get("/_sandbox/media/video_ab.mp4")).status_code == 200
