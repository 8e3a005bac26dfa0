"""Sample data for test events (`POST /api/webhooks/{id}/test`): of the type asked for,
shaped as the SDK's model for that type parses it, about nobody real."""

from datetime import UTC, datetime
from typing import Any

from app.events.models import CustomerEventType

_SAMPLE_ID = "test"


def data(type: CustomerEventType, now: datetime | None = None) -> dict[str, Any]:
    at = (now or datetime.now(UTC)).isoformat()
    if type in (CustomerEventType.PROFILE_CONNECTED, CustomerEventType.PROFILE_DISCONNECTED):
        return {
            "id": _SAMPLE_ID,
            "name": "Test profile",
            "platform": "instagram",
            "profile_group_id": _SAMPLE_ID,
            "status": "active" if type == CustomerEventType.PROFILE_CONNECTED else "inactive",
            "uid": "0",
            "platform_id": "0",
            "username": "test",
            "origin": None if type == CustomerEventType.PROFILE_CONNECTED else "user",
        }
    if type == CustomerEventType.REFERRAL_RECEIVED:
        return {
            "chat": {
                "id": _SAMPLE_ID,
                "profile_id": _SAMPLE_ID,
                "platform": "instagram",
                "external_placement_id": None,
                "group": False,
                "participant_external_id": "0",
                "participant_username": "test",
                "participant_name": "Test participant",
                "last_inbound_at": at,
                "last_outbound_at": None,
                "last_message_at": at,
            },
            "ref": "test",
            "source": "SHORTLINKS",
            "type": "OPEN_THREAD",
            "occurred_at": at,
        }
    message = _message(type, at)
    if type == CustomerEventType.REACTION_RECEIVED:
        return {
            "message": message,
            "sender_external_id": "0",
            "action": "react",
            "reaction": "love",
            "emoji": "\u2764\ufe0f",
            "occurred_at": at,
        }
    return {"message": message}


def _message(type: CustomerEventType, at: str) -> dict[str, Any]:
    inbound = type in (CustomerEventType.MESSAGE_RECEIVED, CustomerEventType.REACTION_RECEIVED)
    failed = type in (
        CustomerEventType.MESSAGE_FAILED,
        CustomerEventType.MESSAGE_FAILED_WAITING_FOR_RETRY,
    )
    status = "received" if inbound else type.removeprefix("message.") if failed else "published"
    return {
        "id": _SAMPLE_ID,
        "chat_id": _SAMPLE_ID,
        "external_id": None if failed else "test",
        "direction": "inbound" if inbound else "outbound",
        "body": "This is a test event from dmrelay.",
        "status": status,
        "tag": None,
        "error_message": "A test failure" if failed else None,
        "error_details": None,
        "platform_data": None,
        "external_posted_at": None if failed else at,
        "external_read_at": at if type == CustomerEventType.MESSAGE_READ else None,
        "external_edited_at": at if type == CustomerEventType.MESSAGE_EDITED else None,
        "external_deleted_at": at if type == CustomerEventType.MESSAGE_DELETED else None,
        "reply_to_external_id": None,
        "reactions": [],
        "attachments": [],
        "is_unsupported": False,
        "created_at": at,
    }
