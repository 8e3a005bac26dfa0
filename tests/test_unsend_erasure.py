"""An unsend erases what the message said everywhere dmrelay keeps it, not only from the API:
the whole database is searched (pg_dump) for its text and media, and the media store too."""

import asyncio
import json
import uuid
from pathlib import Path

import httpx
from sqlalchemy import make_url, text

from app import embedded
from app.media.storage import LocalStore
from app.sandbox.media import PNG
from tests.conftest import IG_ACCOUNT_ID, Stack, wait_for
from tests.inbound import T0, emit, event, only_chat, post_payload, scalar, settled

# The newest pg_dump at hand (the embedded extra's, else the machine's): it dumps any older
# server too, so it fits the machine's server and an embedded one alike.
_BINDIR = embedded.postgres_bindir(bundled_first=True)
PG_DUMP = str(_BINDIR / "pg_dump") if _BINDIR else "pg_dump"


async def database_dump(stack: Stack) -> str:
    """Every row of the test database, as text."""
    url = make_url(stack.settings.database_url).set(drivername="postgresql")

    async def dump() -> str | None:
        process = await asyncio.create_subprocess_exec(
            PG_DUMP,
            "--data-only",
            "--dbname",
            url.render_as_string(hide_password=False),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        if b"too many clients" in err:  # the server is shared: wait for a free connection
            return None
        assert process.returncode == 0, err.decode()
        return out.decode()

    return await wait_for(dump, timeout=60, interval=0.5)


def secret(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex}"


def customer_message(mid: str, text: str, media_url: str, sender: str = "555") -> dict:
    """A messaging item with text, an image and a quick reply, as Meta sends it."""
    return {
        "sender": {"id": sender},
        "recipient": {"id": IG_ACCOUNT_ID},
        "timestamp": T0,
        "message": {
            "mid": mid,
            "text": text,
            "attachments": [{"type": "image", "payload": {"url": media_url}}],
            "quick_reply": {"payload": f"QR {text}"},
        },
    }


def delivery(*items) -> dict:
    return {"object": "instagram", "entry": [{"id": IG_ACCOUNT_ID, "messaging": list(items)}]}


def media_files(stack: Stack) -> set[str]:
    root = Path(stack.settings.media_dir)
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


async def test_an_unsent_message_is_erased_everywhere(account, clean):
    text, edited = secret("said"), secret("edited")
    media_name = f"{secret('image')}.png"
    media_url = f"{clean.sandbox_url}/_sandbox/media/{media_name}"
    mid = f"aWdf_{uuid.uuid4().hex}"
    item = customer_message(mid, text, media_url)
    # Delivered with an item dmrelay cannot understand: that delivery's body is kept.
    assert (await post_payload(clean, delivery(item, "junk"))).status_code == 200
    await settled(clean)

    async def mirrored():
        [attachment] = (await account.client.messages.get(mid)).attachments
        return attachment.url if attachment.status == "processed" else None

    copy_url = await wait_for(mirrored)
    key = copy_url.removeprefix(f"{clean.settings.media_base_url}/")
    assert key in media_files(clean)
    await emit(
        clean,
        event("reaction", mid=mid, timestamp=T0 + 1000),
        event("edit", mid=mid, text=edited, num_edit=1, timestamp=T0 + 2000),
        event("read", mid=mid, timestamp=T0 + 3000),
    )
    assert (await account.client.messages.get(mid)).body == edited

    await emit(clean, event("delete", mid=mid, timestamp=T0 + 4000))
    # Meta delivers the message again: it must not come back.
    assert (await post_payload(clean, delivery(item))).status_code == 200
    await settled(clean)

    message = await account.client.messages.get(mid)
    assert (message.body, message.attachments, message.platform_data) == (None, [], None)
    assert message.tapped_action is None

    async def media_erased():
        pending = await scalar(clean, "SELECT count(*) FROM media_deletions")
        return key not in media_files(clean) and pending == 0

    await wait_for(media_erased)
    dump = await database_dump(clean)
    for kept in (text, edited, media_name, key):
        assert kept not in dump, kept
    # The delivery kept for diagnosis still says what it could not understand.
    problems = await scalar(
        clean, "SELECT problems FROM webhook_deliveries WHERE status = 'unparseable'"
    )
    assert len(problems) == 1


async def test_an_unsend_before_its_message_leaves_nothing(account, clean):
    text = secret("said")
    media_name = f"{secret('image')}.png"
    mid = f"aWdf_{uuid.uuid4().hex}"
    # Other tests' copies are still there.
    files = {name for name in media_files(clean) if not name.startswith("avatars/")}
    await emit(clean, event("delete", mid=mid, timestamp=T0 + 1000))
    item = customer_message(mid, text, f"{clean.sandbox_url}/_sandbox/media/{media_name}")
    assert (await post_payload(clean, delivery(item))).status_code == 200
    await settled(clean)
    assert (await post_payload(clean, delivery(item))).status_code == 200
    await settled(clean)

    message = await account.client.messages.get(mid)
    assert (message.body, message.attachments) == (None, [])
    dump = await database_dump(clean)
    assert text not in dump and media_name not in dump
    # The participant's picture is copied with their profile (not the message's media).
    assert {name for name in media_files(clean) if not name.startswith("avatars/")} == files


async def test_an_outbound_message_unsent_by_the_business_leaves_no_copy(account, clean):
    """Its text was also in the stored Idempotency-Key response and in Meta's echo."""
    await emit(clean, event("text", text="hello"))  # the reply window opens
    chat = await only_chat(account)
    text = secret("sent")
    async with httpx.AsyncClient(base_url=clean.api_url) as http:
        response = await http.post(
            f"/api/chats/{chat.id}/messages",
            json={"body": text},
            headers={"Authorization": f"Bearer {account.token}", "Idempotency-Key": secret("k")},
        )
    assert response.status_code == 202, response.text
    sent_id = response.json()["id"]

    async def published():
        message = await account.client.messages.get(sent_id)
        return message.external_id if message.status == "published" else None

    mid = await wait_for(published)
    await settled(clean)
    assert text in await database_dump(clean)

    await emit(clean, event("delete", mid=mid))
    message = await account.client.messages.get(sent_id)
    assert message.body is None and message.external_deleted_at is not None
    assert text not in await database_dump(clean)


async def test_a_media_deletion_whose_job_was_lost_is_done_by_the_sweep(clean):
    key = f"lost/{secret('copy')}.png"
    await LocalStore(Path(clean.settings.media_dir), "").put(key, PNG, "image/png")
    async with clean.sessionmaker() as session, session.begin():
        await session.execute(
            text(
                "INSERT INTO media_deletions (key, created_at) "
                "VALUES (:key, now() - interval '1 hour')"
            ),
            {"key": key},
        )

    async def deleted():
        pending = await scalar(clean, "SELECT count(*) FROM media_deletions")
        return key not in media_files(clean) and pending == 0

    await wait_for(deleted)


def test_a_kept_body_loses_only_that_messages_content():
    from app.inbound.erasure import redact_body

    other = {"mid": "aWdf_other", "text": "kept"}
    body = json.dumps(
        delivery(
            {"message": {"mid": "aWdf_gone", "text": "gone", "attachments": []}},
            {"message_edit": {"mid": "aWdf_gone", "text": "gone too", "num_edit": 1}},
            {"message": other},
        )
    )
    items = json.loads(redact_body(body, "aWdf_gone"))["entry"][0]["messaging"]
    assert items == [
        {"message": {"mid": "aWdf_gone"}},
        {"message_edit": {"mid": "aWdf_gone"}},
        {"message": other},
    ]
    assert redact_body("not json aWdf_gone", "aWdf_gone") is None
