"""Mirroring inbound attachments, so their URLs outlive Meta's expiring CDN links.

An attachment to mirror is stored `pending` with Meta's URL; a worker downloads it, stores a
copy and marks it `processed` with dmrelay's URL (or `failed`). Story-mention media is not
copied unless MIRROR_STORY_MENTIONS is set (Meta forbids storing it): its CDN URL is kept
and checked later, and marked expired once it stops resolving.
"""

import logging
import mimetypes
import secrets
from datetime import timedelta
from typing import Any

import httpx
from arq import Retry
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.addresses import Resolver, resolve
from app.core.jobs import Job, JobName, enqueue, enqueue_after_commit
from app.core.settings import Settings
from app.media import repository
from app.media.download import DownloadError, download, status_of
from app.media.models import AttachmentStatus
from app.media.storage import MediaStore
from app.messages.models import Message, MessageRow

log = logging.getLogger(__name__)

MIRRORED_TYPES = frozenset({"image", "video", "audio", "file", "sticker"})
MAX_DOWNLOAD_TRIES = 3
# Meta's CDN links die within days; stop checking a story mention after this many looks.
MAX_STORY_CHECKS = 7
EXPIRED_STATUSES = frozenset({403, 404, 410})
# Younger than this, a media deletion still has the job enqueued for it.
DELETION_GRACE = timedelta(seconds=30)
DELETION_BATCH = 500


def should_mirror(kind: str, settings: Settings) -> bool:
    return kind in MIRRORED_TYPES or (kind == "story_mention" and settings.mirror_story_mentions)


def stored_keys(attachments: list[dict[str, Any]] | None) -> list[str]:
    return [a["storage_key"] for a in attachments or [] if a.get("storage_key")]


async def delete_after_commit(session: AsyncSession, keys: list[str]) -> None:
    """Delete stored media once the session's transaction (which records the deletion)
    commits; until it is gone, the sweep enqueues it again. No keys, nothing to do."""
    if not keys:
        return
    await repository.record_deletions(session, keys)
    enqueue_after_commit(session, Job(JobName.DELETE_MEDIA, (keys,)))


def mirror_after_commit(
    session: AsyncSession, message: Message | MessageRow, settings: Settings
) -> None:
    """Queue the work a newly stored message's attachments need."""
    for index, attachment in enumerate(message.attachments or []):
        if attachment["status"] == AttachmentStatus.PENDING:
            job = Job(
                JobName.MIRROR_ATTACHMENT, (message.id, index), f"mirror:{message.id}:{index}"
            )
            enqueue_after_commit(session, job)
        elif attachment["type"] == "story_mention" and attachment.get("url"):
            enqueue_after_commit(session, story_check_job(message.id, index, 1, settings))


def story_check_job(message_id: int, index: int, check: int, settings: Settings) -> Job:
    """The job that looks whether a story mention's CDN link still resolves."""
    return Job(
        JobName.CHECK_STORY_MENTION,
        (message_id, index, check),
        id=f"story:{message_id}:{index}:{check}",
        defer_by=timedelta(seconds=settings.story_mention_check_seconds),
    )


class Mirror:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        http: httpx.AsyncClient,
        store: MediaStore,
        settings: Settings,
        redis: ArqRedis,
        resolver: Resolver = resolve,
    ) -> None:
        self.redis = redis
        self.resolver = resolver
        self.sessionmaker = sessionmaker
        self.http = http
        self.store = store
        self.settings = settings

    async def mirror(self, message_id: int, index: int, job_try: int) -> None:
        attachment = await self._attachment(message_id, index)
        if attachment is None or attachment["status"] != AttachmentStatus.PENDING:
            return
        try:
            key, url = await self.copy(attachment["source_url"], f"{message_id}/{index}")
        except DownloadError as error:
            if error.transient and job_try < MAX_DOWNLOAD_TRIES:
                raise Retry(defer=timedelta(seconds=5 * job_try)) from error
            log.warning("mirroring attachment %s/%s failed: %s", message_id, index, error)
            await self._failed(message_id, index, error)
            return
        changes = {"status": AttachmentStatus.PROCESSED, "url": url, "storage_key": key}
        if not await self._update(message_id, index, changes):
            await self.store.delete([key])  # unsent meanwhile: the copy must not outlive it

    async def copy(self, source_url: str, prefix: str, kind: str = "") -> tuple[str, str]:
        """Download a URL and store a copy under a new random key starting with `prefix`;
        returns the key and the URL the copy is served at. Raises DownloadError, also when
        the file is not of the `kind` of type asked for (e.g. "image/")."""
        data, content_type = await download(self.http, source_url, self.settings, self.resolver)
        content_type = content_type.split(";")[0].strip()
        if not content_type.startswith(kind):
            raise DownloadError(f"the file is {content_type}, not {kind}")
        extension = mimetypes.guess_extension(content_type) or ""
        key = f"{prefix}-{secrets.token_urlsafe(16)}{extension}"
        return key, await self.store.put(key, data, content_type)

    async def check_story_mention(self, message_id: int, index: int, check: int) -> None:
        attachment = await self._attachment(message_id, index)
        if attachment is None or not attachment.get("url") or attachment.get("storage_key"):
            return
        try:
            status = await status_of(self.http, attachment["url"], self.settings, self.resolver)
        except DownloadError as error:
            if not error.transient:  # a link dmrelay must not follow: never look again
                log.warning("story mention %s/%s not checked: %s", message_id, index, error)
                await self._failed(message_id, index, error)
                return
            status = None  # unreachable for now: look again later
        if status in EXPIRED_STATUSES:
            expired = {"status": AttachmentStatus.FAILED, "url": None, "expired": True}
            await self._update(message_id, index, expired)
        elif check < MAX_STORY_CHECKS:
            await enqueue(self.redis, story_check_job(message_id, index, check + 1, self.settings))

    async def delete(self, keys: list[str]) -> None:
        await self.store.delete(keys)
        async with self.sessionmaker() as session, session.begin():
            await repository.forget_deletions(session, keys)

    async def sweep_deletions(self) -> None:
        """Enqueue again the deletions whose job is gone (Redis lost it, or it failed)."""
        async with self.sessionmaker() as session:
            keys = await repository.deletions_older_than(session, DELETION_GRACE, DELETION_BATCH)
        if keys:
            # One job per batch, named by its first key, so that a batch still queued (or
            # being deleted) is not doubled.
            await enqueue(self.redis, Job(JobName.DELETE_MEDIA, (keys,), f"delete:{keys[0]}"))

    async def _attachment(self, message_id: int, index: int) -> dict[str, Any] | None:
        async with self.sessionmaker() as session:
            message = await repository.get_message(session, message_id)
        if message is None or message.external_deleted_at is not None:
            return None
        attachments = message.attachments or []
        return attachments[index] if index < len(attachments) else None

    async def _failed(self, message_id: int, index: int, error: DownloadError) -> None:
        await self._update(
            message_id, index, {"status": AttachmentStatus.FAILED, "error": str(error)}
        )

    async def _update(self, message_id: int, index: int, changes: dict[str, Any]) -> bool:
        """Apply changes to one attachment; False if the message was unsent meanwhile."""
        async with self.sessionmaker() as session, session.begin():
            message = await repository.lock_message(session, message_id)
            if message is None or message.external_deleted_at is not None:
                return False
            attachments = list(message.attachments or [])
            if index >= len(attachments):
                return False
            attachments[index] = {**attachments[index], **changes}
            message.attachments = attachments
        return True
