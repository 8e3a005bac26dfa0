"""Inbound media: mirrored to dmrelay's store, bounded, public addresses only; story-mention
media is not stored, and expires with Meta's link."""

from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from app.core import ids
from app.media.download import DownloadError, download
from tests.conftest import wait_for
from tests.inbound import emit, event


async def attachment_when_settled(account, mid: str):
    async def settled_attachment():
        [attachment] = (await account.client.messages.get(mid)).attachments
        return attachment if attachment.status != "pending" else None

    return await wait_for(settled_attachment)


async def fetch(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.get(url)


@pytest.mark.parametrize("kind", ["image", "video", "audio", "file", "sticker"])
async def test_media_is_mirrored_to_dmrelay(account, clean, kind):
    [mid] = await emit(clean, event("attachment", type=kind))
    attachment = await attachment_when_settled(account, mid)

    assert attachment.status == "processed"
    assert attachment.url.startswith(f"{clean.api_url}/media/")
    webhook = (await account.client.messages.get(mid)).platform_data["webhook"]
    source = webhook["message"]["attachments"][0]["payload"]["url"]
    assert source.startswith(clean.sandbox_url)
    copy, original = await fetch(attachment.url), await fetch(source)
    assert copy.status_code == 200 and copy.content == original.content
    assert copy.headers["content-security-policy"] == "sandbox"


async def test_an_unsend_erases_the_mirrored_copy(account, clean):
    [mid] = await emit(clean, event("attachment", type="image"))
    url = (await attachment_when_settled(account, mid)).url
    await emit(clean, event("delete", mid=mid))

    assert (await account.client.messages.get(mid)).attachments == []

    async def erased():
        return (await fetch(url)).status_code == 404

    await wait_for(erased)


async def test_a_media_link_that_is_gone_fails_the_attachment(account, clean):
    url = f"{clean.sandbox_url}/_sandbox/media/gone.png"
    await clean.sandbox("POST", "/_sandbox/media/expire", json={"names": ["gone.png"]})
    [mid] = await emit(clean, event("attachment", type="image", url=url))
    attachment = await attachment_when_settled(account, mid)
    assert attachment.status == "failed"


async def test_story_mention_media_is_not_stored_and_expires_with_its_link(account, clean):
    url = f"{clean.sandbox_url}/_sandbox/media/story_1.mp4"
    [mid] = await emit(clean, event("attachment", type="story_mention", url=url))
    [attachment] = (await account.client.messages.get(mid)).attachments
    assert (attachment.status, attachment.url) == ("processed", url)

    await clean.sandbox("POST", "/_sandbox/media/expire", json={"names": ["story_1.mp4"]})
    # The check is deferred by hours in production; run it now.
    serial = ids.decode(ids.Kind.MESSAGE, (await account.client.messages.get(mid)).id)
    await clean.worker.pool.enqueue_job("check_story_mention", serial, 0, 1)

    async def expired():
        [attachment] = (await account.client.messages.get(mid)).attachments
        return attachment if attachment.status == "failed" else None

    assert (await wait_for(expired)).url is None


async def test_downloads_are_bounded_in_size(clean):
    small = clean.settings.model_copy(update={"media_max_bytes": 10})
    async with httpx.AsyncClient() as http:
        with pytest.raises(DownloadError, match="limit"):
            await download(http, f"{clean.sandbox_url}/_sandbox/media/big.png", small)
        data, content_type = await download(
            http, f"{clean.sandbox_url}/_sandbox/media/big.png", clean.settings
        )
    assert content_type == "image/png" and len(data) > 10


@pytest.mark.parametrize(
    "key",
    ["x" * 300, "💥" * 100, "1/" + "y" * 256, "1/0-stored.jpg/more"],
)
async def test_a_media_key_that_names_no_file_is_404(clean, key):
    # What the file system refuses with an error (a name over 255 bytes, a file taken for a
    # directory) is just as absent as what it does not find.
    stored = Path(clean.settings.media_dir) / "1" / "0-stored.jpg"
    stored.parent.mkdir(exist_ok=True)
    stored.write_bytes(b"jpeg")
    assert (await fetch(f"{clean.api_url}/media/1/0-stored.jpg")).content == b"jpeg"
    response = await fetch(f"{clean.api_url}/media/{quote(key)}")
    assert response.status_code == 404, response.text
    assert response.json() == {"error": "Media not found", "errors": []}
