"""7. One video sent to many chats of one profile is uploaded to Meta once (reusable
attachments), and the sends keep Meta's audio/video pace.

With the worker stopped, one 5 MB video is sent through the API as a multipart file (stored,
as `media_files` sends are: its accept time is reported), then one video URL to each of
`count` chats of one profile (a campaign's usual shape); then one worker delivers them all.
The sandbox counts its Attachment Upload API calls, and throttles the account above Meta's
audio/video cap (code 4), so the run shows whether dmrelay holds that rate. The URL's host
(`.invalid`, RFC 6761) never resolves, so the API's probe gives up at once and the extension
tells the type; the sandbox, like Meta, is handed the URL and does not fetch it here.
"""

import asyncio
import time

import httpx

from app.core.settings import Settings
from bench.fixtures import Chat, Fixtures
from bench.scenarios.delivery import (
    POST_CONCURRENCY,
    enable_sandbox_rate_limit,
    work_until_delivered,
)
from bench.stack import Stack

VIDEO_URL = "https://cdn.bench.invalid/campaign/video-5mb.mp4"
VIDEO_BYTES = 5 * 1024 * 1024
# An ISO base media (mp4) header, then padding to 5 MB.
MP4_HEAD = b"\x00\x00\x00\x1cftypisom\x00\x00\x02\x00isomiso2mp41"
FIRST_PARTICIPANT = 9_000_000
# Meta's audio/video sends per second per account, which dmrelay paces to (RATE_AUDIO_VIDEO).
AUDIO_VIDEO_CAP = float(Settings.model_fields["rate_audio_video"].default)


async def _chats(api: httpx.AsyncClient, profile_id: str, count: int) -> list[Chat]:
    from app.core import ids

    gate = asyncio.Semaphore(POST_CONCURRENCY)

    async def chat(participant: int) -> Chat:
        async with gate:
            response = await api.post(
                f"/api/profiles/{profile_id}/chats",
                json={"participant_external_id": str(participant)},
            )
        response.raise_for_status()
        public_id = response.json()["id"]
        return Chat(public_id, ids.decode(ids.Kind.CHAT, public_id), profile_id)

    return list(await asyncio.gather(*(chat(FIRST_PARTICIPANT + i) for i in range(count))))


async def run(stack: Stack, fixtures: Fixtures, count: int, timeout: float) -> dict:
    stack.stop_workers()
    await stack.reset_messages()
    headers = {"Authorization": f"Bearer {fixtures.token}"}
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers, timeout=60) as api:
        chats = await _chats(api, fixtures.main.public_id, count)
        video = MP4_HEAD + b"\x00" * (VIDEO_BYTES - len(MP4_HEAD))
        started = time.monotonic()
        stored = await api.post(
            chats[0].path, files=[("media[]", ("campaign.mp4", video, "video/mp4"))]
        )
        multipart_ms = (time.monotonic() - started) * 1000
        stored.raise_for_status()
        gate = asyncio.Semaphore(POST_CONCURRENCY)

        async def post(chat: Chat) -> None:
            async with gate:
                response = await api.post(chat.path, json={"media": [VIDEO_URL]})
            response.raise_for_status()

        started = time.monotonic()
        await asyncio.gather(*(post(chat) for chat in chats))
        accept_seconds = time.monotonic() - started

    # The sandbox throttles the account above Meta's audio/video cap, as Meta would.
    enforced = await enable_sandbox_rate_limit(stack, round(AUDIO_VIDEO_CAP))
    outcome, cost = await work_until_delivered(stack, timeout, 0.5)
    async with httpx.AsyncClient(base_url=stack.sandbox_url) as sandbox:
        uploads = (await sandbox.get("/_sandbox/uploads")).json()["data"]
        sent = (await sandbox.get("/_sandbox/sent")).json()["data"]
    by_id = [s for s in sent if "attachment_id" in s["message"]["attachment"]["payload"]]
    campaign = [u for u in uploads if u["url"] == VIDEO_URL]
    span = float(outcome["span"] or 0)
    rate = (outcome["published"] - 1) / span if span > 0 else None
    return {
        "chats": count,
        "messages": count + 1,
        "video_bytes": VIDEO_BYTES,
        "multipart_accept_ms": multipart_ms,
        "url_accept_rate": count / accept_seconds,
        "published": outcome["published"],
        "failed": outcome["failed"],
        "undelivered": outcome["undelivered"],
        # The URL's sends, and the stored file's one (a different file to Meta).
        "campaign_upload_calls": len(campaign),
        "upload_calls": len(uploads),
        "sent_by_attachment_id": len(by_id),
        "seconds": span,
        "rate": rate,
        # Held the per-account rate: the pace against Meta's audio/video cap, and the sends
        # the sandbox refused for going over it (retries counted).
        "cap": AUDIO_VIDEO_CAP,
        "cap_enforced_by_sandbox": enforced,
        "share_of_cap": (rate or 0.0) / AUDIO_VIDEO_CAP,
        "throttle_errors": outcome["throttled"] + outcome["extra_attempts"],
        "cpu": cost,
    }
