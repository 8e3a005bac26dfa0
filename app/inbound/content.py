"""What a webhook `message` (or `postback`) holds, as message columns."""

from typing import Any

from app.core.settings import Settings
from app.media.models import AttachmentStatus
from app.media.service import should_mirror

# Types that are media: without a URL, their content is lost (view-once media has none).
MEDIA_TYPES = frozenset(
    {"image", "video", "audio", "file", "sticker", "story_mention", "ephemeral", "ig_reel", "reel"}
)
# Where Meta puts the id of the thing an attachment shows (post, reel, sticker, product).
EXTERNAL_ID_KEYS = ("id", "reel_video_id", "sticker_id", "ig_post_media_id")


def attachment_of(raw: Any, settings: Settings) -> dict[str, Any]:
    raw = raw if isinstance(raw, dict) else {}
    kind = str(raw.get("type") or "unknown")
    payload = raw.get("payload") if isinstance(raw.get("payload"), dict) else {}
    url = payload.get("url") if isinstance(payload.get("url"), str) else None
    attachment: dict[str, Any] = {"type": kind, "url": url}
    if url and should_mirror(kind, settings):
        # Meta's CDN link serves until the copy is made; it expires within days.
        attachment.update(status=AttachmentStatus.PENDING.value, source_url=url)
    elif url or kind not in MEDIA_TYPES:
        attachment["status"] = AttachmentStatus.PROCESSED.value
    else:
        attachment["status"] = AttachmentStatus.FAILED.value
    external_id = next((payload[k] for k in EXTERNAL_ID_KEYS if payload.get(k)), None)
    if external_id is not None:
        attachment["external_id"] = str(external_id)
    if isinstance(payload.get("title"), str):
        attachment["title"] = payload["title"]
    return attachment


def message_columns(item: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Message columns for an inbound message, an echo or a postback item."""
    if "postback" in item and "message" not in item:
        postback = item["postback"]
        return {
            "body": postback.get("title"),
            "tapped_action": {
                "kind": "postback",
                "payload": str(postback.get("payload", "")),
                "title": postback.get("title"),
            },
            "platform_data": {"webhook": item},
        }
    message = item["message"]
    columns: dict[str, Any] = {
        "body": message.get("text") if isinstance(message.get("text"), str) else None,
        "is_unsupported": bool(message.get("is_unsupported")),
        "platform_data": {"webhook": item},
    }
    raw_attachments = message.get("attachments")
    if isinstance(raw_attachments, list) and raw_attachments:
        columns["attachments"] = [attachment_of(a, settings) for a in raw_attachments]
    reply_to = message.get("reply_to") if isinstance(message.get("reply_to"), dict) else {}
    if reply_to.get("mid"):
        columns["reply_to_external_id"] = str(reply_to["mid"])
    if isinstance(reply_to.get("story"), dict):
        story = reply_to["story"]
        columns["story_reply"] = {
            k: story[k] for k in ("id", "url", "link_sticker_url") if story.get(k) is not None
        }
    quick_reply = message.get("quick_reply")
    if isinstance(quick_reply, dict):
        columns["tapped_action"] = {
            "kind": "quick_reply",
            "payload": str(quick_reply.get("payload", "")),
            "title": columns["body"],
        }
    if isinstance(message.get("referral"), dict):
        columns["referral"] = message["referral"]
    return columns
