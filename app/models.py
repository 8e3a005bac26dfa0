"""Every table, for Alembic: importing the model modules registers them on the metadata."""

from app.api_keys.models import ApiKey
from app.chat_syncs.models import ChatSync
from app.chats.models import Chat
from app.comments.models import Comment
from app.core.db import Base
from app.core.idempotency import IdempotencyRecord
from app.events.models import CustomerEvent
from app.inbound.models import InboundEvent, WebhookDelivery
from app.media.models import MediaDeletion, ReusableAttachment
from app.messages.models import Message
from app.profiles.models import Profile, ProfileGroup
from app.webhooks.models import CustomerWebhook, Dispatch, DispatchAttempt

metadata = Base.metadata

__all__ = [
    "ApiKey",
    "Chat",
    "Comment",
    "ChatSync",
    "CustomerEvent",
    "CustomerWebhook",
    "Dispatch",
    "DispatchAttempt",
    "IdempotencyRecord",
    "InboundEvent",
    "MediaDeletion",
    "Message",
    "Profile",
    "ProfileGroup",
    "ReusableAttachment",
    "WebhookDelivery",
    "metadata",
]
