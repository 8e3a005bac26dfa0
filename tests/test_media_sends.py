"""Media sends through the SDK: the type told from the content (an extension-less CDN URL
works), Meta's formats and sizes enforced with 422s, files (multipart, base64) stored and
served, and each file uploaded to Meta once per profile (reusable attachments)."""

import asyncio
import base64
import hashlib

import httpx
import pytest
from postproxy import ValidationError
from sqlalchemy import text

from app.core import ids
from app.core.errors import APIError
from app.media.download import DownloadError
from app.media.outbound import from_url, sniff
from app.sandbox.media import FORMATS, PNG
from tests.conftest import CDN_HOST, CDN_URL, DNS, connect, wait_for

MP4 = FORMATS[".mp4"][1]
M4A = FORMATS[".m4a"][1]
PDF = FORMATS[".pdf"][1]
CUSTOMER = "1602510301006188"


async def _cdn(stack, name: str, content: bytes, content_type: str) -> str:
    """Put a file on the sandbox's CDN; its URL, on a public-looking host (CDN_HOST)."""
    await stack.sandbox("PUT", f"/_sandbox/media/{name}", content=content,
                        headers={"content-type": content_type})  # fmt: skip
    return f"{CDN_URL}/{name}"


async def _chat(account, customer: str = CUSTOMER):
    return await account.client.chats.create(account.profile_id, customer)


async def _settled(client, message_id):
    async def settled():
        message = await client.messages.get(message_id)
        return message if message.status not in {"pending", "failed_waiting_for_retry"} else None

    return await wait_for(settled)


async def _uploads(stack) -> list[dict]:
    return (await stack.sandbox("GET", "/_sandbox/uploads")).json()["data"]


async def _sent(stack) -> list[dict]:
    return (await stack.sandbox("GET", "/_sandbox/sent")).json()["data"]


async def test_an_extension_less_cdn_url_is_typed_by_its_content(account, clean):
    url = await _cdn(clean, "AbC123", MP4, "application/octet-stream")
    chat = await _chat(account)
    accepted = await account.client.messages.send(chat.id, media=[url])
    [pending] = accepted.attachments
    assert (pending.type, pending.url, pending.status, pending.external_id) == (
        "video",
        url,
        "pending",
        None,
    )
    published = await _settled(account.client, accepted.id)
    assert published.status == "published"
    [upload] = await _uploads(clean)
    assert (upload["type"], upload["url"], upload["account_id"]) == (
        "video",
        url,
        account.platform_id,
    )
    [sent] = await _sent(clean)
    assert sent["message"] == {
        "attachment": {"type": "video", "payload": {"attachment_id": upload["attachment_id"]}}
    }
    [attachment] = published.attachments
    assert (attachment.status, attachment.external_id) == ("processed", upload["attachment_id"])


@pytest.mark.parametrize(
    ("name", "content", "content_type", "complaint"),
    [
        # The name says PNG, the content is a web page: the content decides.
        ("page.png", b"<!doctype html><html></html>", "text/html", "is text/html"),
        ("pic.webp", b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp", "image/webp, which"),
        ("song", b"ID3\x03\x00\x00\x00", "audio/mpeg", "audio/mpeg, which"),
        ("big.png", PNG + b"\x00" * (8 * 1024 * 1024), "image/png", "up to 8 MB"),
        ("huge", MP4 + b"\x00" * (25 * 1024 * 1024), "video/mp4", "videos up to 25 MB"),
    ],
)
async def test_what_meta_would_refuse_is_a_422_naming_the_rule(
    account, clean, name, content, content_type, complaint
):
    url = await _cdn(clean, name, content, content_type)
    chat = await _chat(account)
    with pytest.raises(ValidationError, match=complaint) as refused:
        await account.client.messages.send(chat.id, media=[url])
    assert refused.value.response["errors"][0]["field"] == "media.0"
    assert "Instagram takes" in refused.value.response["error"]
    assert (await account.client.messages.list(chat.id)).total == 0


async def test_a_url_its_server_refuses_is_a_422(account, clean):
    await clean.sandbox("POST", "/_sandbox/media/expire", json={"names": ["gone.mp4"]})
    chat = await _chat(account)
    with pytest.raises(ValidationError, match="HTTP 404"):
        await account.client.messages.send(chat.id, media=[f"{CDN_URL}/gone.mp4"])


async def test_an_unreachable_server_leaves_the_type_to_the_extension(account, clean):
    """cdn.example does not resolve (tests reach no other host): its .m4a decides."""
    chat = await _chat(account)
    accepted = await account.client.messages.send(chat.id, media=["https://cdn.example/x.m4a"])
    assert accepted.attachments[0].type == "audio"
    with pytest.raises(ValidationError, match="cannot tell the media type"):
        await account.client.messages.send(chat.id, media=["https://cdn.example/clip"])


async def test_the_probe_reaches_only_public_addresses(settings):
    """As media mirroring: the injected resolver's private answer is refused, unconnected."""
    strict = settings.model_copy(update={"media_allow_private_hosts": False})
    asked: list[httpx.Request] = []

    async def resolver(host: str, port: int) -> list[str]:
        return ["10.0.0.7"]

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(200, content=PNG)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        with pytest.raises(APIError, match="non-public address 10.0.0.7"):
            await from_url(http, "https://cdn.example/a", strict, resolver, "media.0")
    assert asked == []


async def test_the_probe_asks_for_the_first_bytes_only(settings):
    requests: list[httpx.Request] = []

    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        headers = {"content-range": "bytes 0-63/5242880", "etag": '"v1"'}
        return httpx.Response(206, content=MP4, headers=headers)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        attachment = await from_url(http, "https://cdn.example/v", settings, resolver, "media.0")
    assert (attachment["type"], attachment["size"]) == ("video", 5242880)
    assert requests[0].headers["range"] == "bytes=0-63"


async def test_a_slow_server_does_not_hold_the_send_past_the_probe_timeout(settings):
    quick = settings.model_copy(update={"media_probe_timeout_seconds": 0.2})

    async def resolver(host: str, port: int) -> list[str]:
        await asyncio.sleep(5)
        raise DownloadError("never", transient=True)

    loop = asyncio.get_running_loop()
    started = loop.time()
    async with httpx.AsyncClient() as http:
        attachment = await from_url(http, "https://cdn.example/a.gif", quick, resolver, "media.0")
    assert attachment["type"] == "image"
    assert loop.time() - started < 2


def test_formats_are_told_by_their_signatures():
    assert sniff(PNG) == "image/png"
    assert sniff(MP4) == "video/mp4"
    assert sniff(M4A) == "audio/mp4"
    assert sniff(PDF) == "application/pdf"
    assert sniff(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert sniff(b"\x1a\x45\xdf\xa3") == "video/webm"
    assert sniff(b"RIFF\x00\x00\x00\x00WAVEfmt ") == "audio/wav"
    assert sniff(b"hello") is None


async def test_one_file_sent_to_many_chats_is_uploaded_once(account, clean):
    """Concurrent sends of a new file share one upload; later sends reuse its id."""
    url = await _cdn(clean, "campaign", MP4, "video/mp4")
    chats = [await _chat(account, f"17000000000000{i:02d}") for i in range(12)]
    accepted = await asyncio.gather(
        *(account.client.messages.send(chat.id, media=[url]) for chat in chats)
    )
    published = [await _settled(account.client, m.id) for m in accepted]
    assert {m.status for m in published} == {"published"}
    [upload] = await _uploads(clean)
    sent = await _sent(clean)
    assert len(sent) == 12
    assert {s["message"]["attachment"]["payload"]["attachment_id"] for s in sent} == {
        upload["attachment_id"]
    }
    assert {m.attachments[0].external_id for m in published} == {upload["attachment_id"]}

    later = await account.client.messages.send(chats[0].id, media=[url])
    assert (await _settled(account.client, later.id)).status == "published"
    assert len(await _uploads(clean)) == 1


async def test_each_profile_uploads_its_own(account, clean):
    url = await _cdn(clean, "shared.pdf", PDF, "application/pdf")
    other = await connect(clean, platform_id="17841400000000002", token="other-token")
    try:
        for client_account in (account, other):
            chat = await _chat(client_account)
            message = await client_account.client.messages.send(chat.id, media=[url])
            assert (await _settled(client_account.client, message.id)).status == "published"
    finally:
        await other.client.close()
    uploads = await _uploads(clean)
    assert sorted(u["account_id"] for u in uploads) == sorted(
        [account.platform_id, other.platform_id]
    )
    assert {u["type"] for u in uploads} == {"file"}


async def test_an_id_meta_no_longer_takes_is_uploaded_again(account, clean):
    url = await _cdn(clean, "again.png", PNG, "image/png")
    chat = await _chat(account)
    first = await account.client.messages.send(chat.id, media=[url])
    assert (await _settled(account.client, first.id)).status == "published"
    async with clean.sessionmaker() as session, session.begin():
        await session.execute(text("UPDATE reusable_attachments SET attachment_id = '999'"))
    second = await account.client.messages.send(chat.id, media=[url])
    published = await _settled(account.client, second.id)
    assert published.status == "published"
    uploads = await _uploads(clean)
    assert len(uploads) == 2
    assert published.attachments[0].external_id == uploads[1]["attachment_id"]


async def test_a_failed_upload_fails_the_message_and_its_attachment(account, clean):
    url = await _cdn(clean, "unfetchable.mp4", MP4, "video/mp4")
    await clean.sandbox("POST", "/_sandbox/faults", json={"unfetchable_media": [url]})
    chat = await _chat(account)
    message = await account.client.messages.send(chat.id, media=[url])
    failed = await _settled(account.client, message.id)
    assert failed.status == "failed"
    assert failed.error_details.platform_error_subcode == "2018008"
    assert failed.attachments[0].status == "failed"
    assert await _sent(clean) == []


async def test_a_data_uri_is_stored_served_and_sent(account, clean):
    chat = await _chat(account)
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    accepted = await account.client.messages.send(chat.id, media=[uri])
    [attachment] = accepted.attachments
    digest = hashlib.sha256(PNG).hexdigest()
    assert attachment.type == "image"
    assert attachment.url == f"{clean.settings.media_base_url}/outbound/{digest}.png"
    async with httpx.AsyncClient() as http:
        served = await http.get(attachment.url)
    assert (served.content, served.headers["content-type"]) == (PNG, "image/png")
    assert (await _settled(account.client, accepted.id)).status == "published"
    [upload] = await _uploads(clean)
    assert upload["url"] == attachment.url  # Meta fetches dmrelay's copy


@pytest.mark.parametrize(
    ("item", "complaint"),
    [
        ("data:image/png;base64,%%%", "does not decode"),
        ("data:text/plain,hello", "must be base64"),
        ("data:text/html;base64," + base64.b64encode(b"<html>").decode(), "Instagram takes"),
    ],
)
async def test_bad_data_uris_are_refused(account, clean, item, complaint):
    chat = await _chat(account)
    with pytest.raises(ValidationError, match=complaint):
        await account.client.messages.send(chat.id, media=[item])


async def test_multipart_files_are_stored_and_sent(account, clean, tmp_path):
    # Larger than the JSON body cap (MAX_BODY_BYTES): the upload cap applies to multipart.
    video = tmp_path / "clip.bin"  # the name says nothing: the content does
    video.write_bytes(MP4 + b"\x00" * (3 * 1024 * 1024))
    chat = await _chat(account)
    accepted = await account.client.messages.send(chat.id, media_files=[video])
    [attachment] = accepted.attachments
    assert attachment.type == "video"
    async with httpx.AsyncClient() as http:
        served = await http.get(attachment.url)
    assert served.content == video.read_bytes()
    assert (await _settled(account.client, accepted.id)).status == "published"
    [upload] = await _uploads(clean)
    assert (upload["type"], upload["url"]) == ("video", attachment.url)


async def test_multipart_url_parts_are_probed_like_json_ones(account, clean):
    url = await _cdn(clean, "voice", M4A, "application/octet-stream")
    chat = await _chat(account)
    accepted = await account.client.messages.send(chat.id, media=[url], media_files=[])
    assert accepted.attachments[0].type == "audio"
    assert (await _settled(account.client, accepted.id)).status == "published"


async def test_multipart_sends_follow_the_same_rules(account, clean, tmp_path):
    picture = tmp_path / "a.png"
    picture.write_bytes(PNG)
    page = tmp_path / "b.png"
    page.write_bytes(b"<html></html>")
    chat = await _chat(account)
    with pytest.raises(ValidationError, match="separate messages"):
        await account.client.messages.send(chat.id, body="hi", media_files=[picture])
    with pytest.raises(ValidationError, match="one attachment"):
        await account.client.messages.send(chat.id, media_files=[picture, picture])
    with pytest.raises(ValidationError, match="Instagram takes"):
        await account.client.messages.send(chat.id, media_files=[page])
    with pytest.raises(ValidationError, match="filename"):
        await account.client.messages.send(chat.id, media_files=[picture], filename="a.png")
    assert (await account.client.messages.list(chat.id)).total == 0


async def test_the_sandbox_refuses_another_accounts_attachment_id(clean):
    async with httpx.AsyncClient(base_url=clean.sandbox_url) as graph:
        uploaded = await graph.post(
            "/v25.0/17841400000000001/message_attachments",
            headers={"Authorization": "Bearer a"},
            json={"message": {"attachment": {"type": "image", "payload": {
                "url": "https://cdn.example/a.png", "is_reusable": True}}}},
        )  # fmt: skip
        attachment_id = uploaded.json()["attachment_id"]
        message = {"attachment": {"type": "image", "payload": {"attachment_id": attachment_id}}}
        refused = await graph.post(
            "/v25.0/17841400000000002/messages",
            headers={"Authorization": "Bearer b"},
            json={"recipient": {"id": CUSTOMER}, "message": message},
        )
        taken = await graph.post(
            "/v25.0/17841400000000001/messages",
            headers={"Authorization": "Bearer a"},
            json={"recipient": {"id": CUSTOMER}, "message": message},
        )
        bad_type = await graph.post(
            "/v25.0/17841400000000001/message_attachments",
            headers={"Authorization": "Bearer a"},
            json={"message": {"attachment": {"type": "sticker", "payload": {"url": "x"}}}},
        )
        too_large = await graph.post(
            "/v25.0/17841400000000001/message_attachments",
            headers={"Authorization": "Bearer a"},
            data={"message": '{"attachment": {"type": "image", "payload": {}}}'},
            files={"filedata": ("a.png", b"\x00" * (8 * 1024 * 1024 + 1), "image/png")},
        )
        # Upload and send in one call: is_reusable beside the URL.
        both = await graph.post(
            "/v25.0/17841400000000002/messages",
            headers={"Authorization": "Bearer b"},
            json={"recipient": {"id": CUSTOMER}, "message": {"attachment": {"type": "video",
                  "payload": {"url": "https://cdn.example/v.mp4", "is_reusable": True}}}},
        )  # fmt: skip
        reused = await graph.post(
            "/v25.0/17841400000000002/messages",
            headers={"Authorization": "Bearer b"},
            json={"recipient": {"id": CUSTOMER}, "message": {"attachment": {"type": "video",
                  "payload": {"attachment_id": both.json()["attachment_id"]}}}},
        )  # fmt: skip
    assert uploaded.status_code == 200 and attachment_id.isdigit()
    assert {"message_id", "attachment_id"} <= set(both.json())
    assert reused.status_code == 200
    assert refused.json()["error"]["code"] == 100
    assert refused.json()["error"]["error_subcode"] == 2018074
    assert taken.status_code == 200 and "message_id" in taken.json()
    assert bad_type.json()["error"]["code"] == 100
    assert too_large.json()["error"]["error_subcode"] == 2018109


async def test_a_video_known_by_its_content_counts_against_metas_audio_video_rate(account, clean):
    """Meta's audio and video sends have their own, lower limit (10/s): an extension-less
    video URL is paced by it, as a .mp4 one."""
    url = await _cdn(clean, "paced", MP4, "video/mp4")
    chat = await _chat(account)
    redis = clean.worker.pool
    profile = ids.decode(ids.Kind.PROFILE, account.profile_id)
    message = await account.client.messages.send(chat.id, media=[url])

    async def booked() -> bool:  # the send's entry in the profile's audio/video log
        return bool(await redis.exists(f"dmrelay:sent:{profile}:audio_video"))

    await wait_for(booked, interval=0.005)
    assert (await _settled(account.client, message.id)).status == "published"
    assert not await redis.exists(f"dmrelay:sent:{profile}:text")


async def test_the_api_has_one_resolver_for_media_and_webhook_urls(stack):
    """Sends' media URLs and customer webhook URLs are resolved alike: with the resolver
    create_app was given (here the tests' DNS, which looks nothing up)."""
    assert stack.api.state.media.resolver is stack.api.state.resolver is DNS


async def test_a_campaigns_url_is_asked_about_once(account, clean):
    """Concurrent and later sends of one URL share the API's one probe of it."""
    url = await _cdn(clean, "asked-once", MP4, "video/mp4")
    chats = [await _chat(account, f"17100000000000{i:02d}") for i in range(8)]
    DNS.calls.clear()
    await asyncio.gather(*(account.client.messages.send(c.id, media=[url]) for c in chats))
    await account.client.messages.send(chats[0].id, media=[url])
    assert [host for host, _ in DNS.calls] == [CDN_HOST]


async def test_an_unreadable_multipart_body_is_a_400(account, clean):
    chat = await _chat(account)
    async with httpx.AsyncClient(base_url=clean.api_url) as http:
        answer = await http.post(
            f"/api/chats/{chat.id}/messages",
            headers={
                "Authorization": f"Bearer {account.token}",
                "Content-Type": "multipart/form-data",  # no boundary
            },
            content=b"--x\r\nnot a part",
        )
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("The multipart body cannot be read")


def test_the_send_documents_its_multipart_form_once(clean):
    schema = clean.api.openapi()
    send = schema["paths"]["/api/chats/{chat_id}/messages"]["post"]
    content = send["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    assert "media[]" in content["multipart/form-data"]["schema"]["properties"]


async def test_a_multipart_send_with_an_idempotency_key_is_replayed(account, clean, tmp_path):
    """The SDK draws a new multipart boundary for each request: the same form is still the
    same request."""
    picture = tmp_path / "a.png"
    picture.write_bytes(PNG)
    chat = await _chat(account)
    first = await account.client.messages.send(
        chat.id, media_files=[picture], idempotency_key="campaign-1"
    )
    again = await account.client.messages.send(
        chat.id, media_files=[picture], idempotency_key="campaign-1"
    )
    assert again.id == first.id
    other = tmp_path / "b.png"
    other.write_bytes(PNG + b"\x00")
    with pytest.raises(ValidationError, match="different request"):
        await account.client.messages.send(
            chat.id, media_files=[other], idempotency_key="campaign-1"
        )
    assert (await account.client.messages.list(chat.id)).total == 1
