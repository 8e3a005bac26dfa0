"""Reusable attachments: each file a profile sends is uploaded to Meta once (Attachment
Upload API, `is_reusable`), and every send of it, then or later, names Meta's attachment id.

A file is known by its content key (app/media/outbound.py). Concurrent sends of a new file
upload it once: in a worker, they share one upload task; across workers, a Redis lock
elects the uploader and the others look for its id in PostgreSQL until it is there.
"""

import asyncio
import hashlib
import secrets
import time
from typing import Any

import asyncpg
from redis.asyncio import Redis

from app.media import repository
from app.meta.graph import UPLOAD_TIMEOUT_SECONDS, Account, GraphClient, GraphUnreachable

# Held by the worker uploading a profile's file; outlives the longest upload a little, so a
# dead uploader's lock frees itself.
LOCK_KEY = "dmrelay:upload:{}:{}"
LOCK_SECONDS = UPLOAD_TIMEOUT_SECONDS + 10
# How often a worker waiting for another's upload looks for its id.
POLL_SECONDS = 0.2
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class ReusableAttachments:
    def __init__(self, db: asyncpg.Pool, graph: GraphClient, redis: Redis) -> None:
        self.db = db
        self.graph = graph
        self.redis = redis
        self._uploads: dict[tuple[int, str], asyncio.Task[str]] = {}

    async def attachment_id(
        self, account: Account, profile_id: int, attachment: dict[str, Any]
    ) -> str:
        """Meta's id for the attachment's file, uploaded now if the profile never has.
        Raises GraphError or GraphUnreachable if the upload fails."""
        key = attachment["content_key"]
        found = await repository.raw_attachment_id(self.db, profile_id, key)
        if found is not None:
            return found
        task = self._uploads.get((profile_id, key))
        if task is None:
            task = asyncio.create_task(self._upload_once(account, profile_id, attachment))
            self._uploads[(profile_id, key)] = task
            task.add_done_callback(lambda _: self._uploads.pop((profile_id, key), None))
        # Shielded: one waiting send cancelled must not cancel the others' upload.
        return await asyncio.shield(task)

    async def forget(self, profile_id: int, attachment: dict[str, Any]) -> None:
        """Meta no longer takes the id: the next send uploads the file again."""
        await repository.raw_forget_attachment_id(
            self.db, profile_id, attachment["content_key"], attachment["external_id"]
        )

    async def _upload_once(
        self, account: Account, profile_id: int, attachment: dict[str, Any]
    ) -> str:
        key = attachment["content_key"]
        lock = LOCK_KEY.format(profile_id, hashlib.sha256(key.encode()).hexdigest())
        token = secrets.token_hex(8)
        deadline = time.monotonic() + LOCK_SECONDS
        while not await self.redis.set(lock, token, nx=True, ex=int(LOCK_SECONDS)):
            # Another worker is uploading it: its id will be stored.
            await asyncio.sleep(POLL_SECONDS)
            found = await repository.raw_attachment_id(self.db, profile_id, key)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise GraphUnreachable("another worker's upload of the file never finished", False)
        try:
            # Stored between our first look and the lock?
            found = await repository.raw_attachment_id(self.db, profile_id, key)
            if found is not None:
                return found
            attachment_id = await self.graph.upload_attachment(
                account, attachment["type"], attachment["url"]
            )
            await repository.raw_keep_attachment_id(self.db, profile_id, key, attachment_id)
            return attachment_id
        finally:
            await self.redis.eval(_RELEASE, 1, lock, token)  # type: ignore[misc]
