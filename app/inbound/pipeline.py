"""Meta's webhooks on the worker: stored webhook deliveries go through a pipeline,
parse → classify → apply → emit.

1. Parse (split.py, parsing.py): stored webhook deliveries are drained, oldest first, by a
   job that the acks signal (receipt.py, app/core/jobs.py's `signal`): up to
   BATCH_WEBHOOK_DELIVERIES at a time are claimed, parsed and split in one transaction, a few
   statements for the lot rather than a dozen per event, one batch at a time per worker. The
   job runs until none is left and no ack has signalled since it last looked; one job per
   backlog, not one per delivery (arq's work per job was a tenth of the worker's).
2. Classify (split.py): the chats that hear only new messages and have nothing open are
   applied by the split itself; the others' events are staged in `inbound_events`.
3. Apply (apply.py, with the appliers of service.py): each chat's open events, oldest first,
   under a per-chat lock, so that two workers never interleave one chat; most chats together,
   in one transaction, the others a chat per transaction.
4. Emit: each applier records its customer events in the transaction of its change
   (app/events/service.py), written just before commit; the jobs it asks for (participants'
   profiles, media) are enqueued once the transaction commits (app/core/db.py).

Falling back is a next pass, never a recursion: a batch whose split fails while applying
is split again with every event staged (SplitMode.STAGE_ALL), and if that fails, one webhook
delivery at a time; one whose events PostgreSQL refuses is kept as `unparseable`. Chats that
fail together are applied alone, then event by event (ApplyMode).
Recovery: a claim commits with its batch's split, so a crash in the middle of a batch leaves
its deliveries `received`, for the next drain. One left so (a drain lost with its worker, or
one whose split failed) gets a drain enqueued by the sweep, under an id of its own: one still
queued behind a backlog is not doubled. Events left pending (a crash between split and apply)
are applied by the sweep.
"""

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import NamedTuple
from uuid import uuid4

from arq.connections import ArqRedis
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core import tracing
from app.core.db import session_scope
from app.core.jobs import JobName, Signal, enqueue_first_free, settle, signalled
from app.core.settings import Settings
from app.inbound import repository
from app.inbound.apply import ApplyMode, Known, apply_open_events
from app.inbound.parsing import ChatKey
from app.inbound.split import NextDeliveries, Split, SplitMode, split

log = logging.getLogger(__name__)

# At most this many webhook deliveries per batch. One batch runs at a time: the jobs that come
# in meanwhile make the next one (batches run side by side would each be smaller).
BATCH_WEBHOOK_DELIVERIES = 100
# Younger than this, a webhook delivery or event still has the job that was enqueued for it.
SWEEP_GRACE = timedelta(seconds=10)
SWEEP_BATCH = 200


# The drain's signal (app/core/jobs.py): counted by every ack. Its time to live is how long
# a drain lost with its worker holds up the next: the running drain renews it every batch.
DRAIN_SIGNAL = Signal("dmrelay:inbound:drain", timedelta(seconds=3), JobName.DRAIN_WEBHOOKS)
# The drain the sweep enqueues, and the one a full batch asks for so that other workers help.
SWEEP_DRAIN_JOB_ID = "webhooks:drain:sweep"
HELPER_DRAIN_JOB_ID = "webhooks:drain:helper"


# A drain hands over to a new job after this long: arq cancels a job that runs past its
# timeout (300 s), and a steady stream of webhooks would never let a drain end.
DRAIN_SECONDS = 60.0


def drain_job_id(webhook_delivery_id: int) -> str:
    """The id of the drain an ack enqueues: named by its webhook delivery, so no other drain
    has it (the last one may not have left yet)."""
    return f"webhooks:drain:{webhook_delivery_id}"


class _Queued(NamedTuple):
    webhook_delivery_id: int
    done: asyncio.Future[None]
    # The trace of the POST that stored it (while tracing is on).
    traceparent: str | None = None


class _SplitPass(NamedTuple):
    # These, or the next ones to drain (which the split notes as it claims them).
    webhook_delivery_ids: list[int] | NextDeliveries
    mode: SplitMode

    @property
    def ids(self) -> list[int]:
        """The webhook deliveries it is about (those it claimed, if it drains)."""
        claim = self.webhook_delivery_ids
        return claim.claimed if isinstance(claim, NextDeliveries) else claim


class InboundPipeline:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        redis: ArqRedis,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.redis = redis
        self._queued: list[_Queued] = []
        self._batching = asyncio.Lock()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        async for session in session_scope(self.sessionmaker, self.redis):
            yield session

    async def process_webhook_delivery(
        self, webhook_delivery_id: int, traceparent: str | None = None
    ) -> None:
        """The job of one webhook delivery, as versions before the drain enqueued it (for
        those still queued). Those queued meanwhile are processed together by whichever of
        their jobs takes the lock first; the others then find theirs done."""
        done = asyncio.get_running_loop().create_future()
        self._queued.append(_Queued(webhook_delivery_id, done, traceparent))
        async with self._batching:
            while not done.done():
                batch = self._queued[:BATCH_WEBHOOK_DELIVERIES]
                del self._queued[:BATCH_WEBHOOK_DELIVERIES]
                await self._process_batch(batch)

    async def drain(self) -> None:
        """The drain job: stored webhook deliveries, oldest first, a batch at a time, until
        none is left to claim and no ack has signalled since the last look (jobs.settle).
        One whose split failed is left to the sweep, not taken again by this drain."""
        failed: set[int] = set()
        ends = time.monotonic() + DRAIN_SECONDS
        while True:
            seen = await signalled(self.redis, DRAIN_SIGNAL)
            if not await self._drain_batch(failed) and await settle(self.redis, DRAIN_SIGNAL, seen):
                return
            if time.monotonic() > ends:
                # Not settled: the signal stays, and the next job drains on.
                await self._enqueue_drain(f"webhooks:drain:handover:{uuid4().hex}")
                return

    async def _drain_batch(self, failed: set[int]) -> bool:
        """Claim and apply the next batch, but the `failed` (to which its own are added);
        whether there was one."""
        claim = NextDeliveries(BATCH_WEBHOOK_DELIVERIES, sorted(failed))
        async with self._batching:
            with tracing.span("dmrelay.inbound_batch"):
                failed.update(await self.process_webhook_deliveries(claim))
        if len(claim.claimed) == BATCH_WEBHOOK_DELIVERIES:
            # A backlog: another worker, if idle, drains it too (claims skip each other's).
            await self._enqueue_drain(HELPER_DRAIN_JOB_ID)
        return bool(claim.claimed)

    async def _enqueue_drain(self, job_id: str) -> None:
        """A drain job under this id, unless one with it is queued or running."""
        await enqueue_first_free(self.redis, JobName.DRAIN_WEBHOOKS, (), [job_id])

    async def _process_batch(self, batch: list[_Queued]) -> None:
        # A span of its own, linked to the POSTs of the webhook deliveries it applies.
        with tracing.span(
            "dmrelay.inbound_batch",
            links=[queued.traceparent for queued in batch],
            attributes={"dmrelay.webhook_deliveries": len(batch)},
        ):
            await self._process_queued(batch)

    async def _process_queued(self, batch: list[_Queued]) -> None:
        try:
            await self.process_webhook_deliveries([queued.webhook_delivery_id for queued in batch])
        finally:
            # Even if cancelled (the worker stopping; the sweep takes the webhook deliveries
            # up again), no job is left waiting.
            for queued in batch:
                queued.done.set_result(None)

    async def process_webhook_deliveries(
        self, webhook_delivery_ids: list[int] | NextDeliveries
    ) -> set[int]:
        """Split webhook deliveries (these, or the next ones to drain) and apply their chats.
        One whose events PostgreSQL refuses is kept as `unparseable`, saying why; one that
        cannot be split for another reason (logged) stays `received`, for the sweep. One bad
        webhook delivery does not hold up the others. The ids of those whose split failed
        at least once."""
        failed: set[int] = set()
        passes = deque([_SplitPass(webhook_delivery_ids, SplitMode.APPLY_UNSTAGED)])
        while passes:
            split_pass = passes.popleft()
            try:
                result = await self._split(split_pass)
            except Exception as error:
                failed.update(split_pass.ids)
                passes.extend(await self._after_failed_split(split_pass, error))
                continue
            await self.apply_chats(result.chats, result.known)
        return failed

    async def _split(self, split_pass: _SplitPass) -> Split:
        async with self._transaction() as session:
            result = await split(
                session, split_pass.webhook_delivery_ids, split_pass.mode, self.settings
            )
        for webhook_delivery_id, found in result.problems.items():
            for problem in found:
                log.warning("webhook delivery %s: %s", webhook_delivery_id, problem)
        return result

    async def _after_failed_split(self, failed: _SplitPass, error: Exception) -> list[_SplitPass]:
        """The passes that take over from a failed one: every event staged, then one webhook
        delivery at a time; a single one that still fails is kept as `unparseable` if
        PostgreSQL refused its events, else left to the sweep."""
        ids = failed.ids
        if not ids:  # a drain's claim itself failed: the next drain, or the sweep's, retries
            log.warning("claiming webhook deliveries failed (%r)", error)
            return []
        if failed.mode is SplitMode.APPLY_UNSTAGED:
            log.warning(
                "applying %d webhook deliveries as split failed (%r); staging their events",
                len(ids),
                error,
            )
            return [_SplitPass(ids, SplitMode.STAGE_ALL)]
        if len(ids) > 1:
            log.warning("splitting %d webhook deliveries together failed; one by one", len(ids))
            return [
                _SplitPass([webhook_delivery_id], SplitMode.STAGE_ALL)
                for webhook_delivery_id in ids
            ]
        [webhook_delivery_id] = ids
        if refusal := _refusal(error):
            log.error("webhook delivery %s kept as unparseable: %s", webhook_delivery_id, refusal)
            async with self._transaction() as session:
                await repository.keep_refused(session, webhook_delivery_id, refusal)
        else:
            log.error("webhook delivery %s could not be split", webhook_delivery_id, exc_info=error)
        return []

    async def apply_chats(self, chats: Collection[ChatKey], known: Known | None = None) -> None:
        """Apply these chats' open events: most together, in one transaction, the others (see
        ApplyMode.TOGETHER) each in a transaction of its own."""
        known = known or Known()
        alone = list(chats)
        if len(alone) > 1:
            try:
                async with self._transaction() as session:
                    alone = await apply_open_events(
                        session, alone, known, ApplyMode.TOGETHER, self.settings
                    )
            except Exception as error:
                log.warning("applying %d chats together failed (%r); one by one", len(alone), error)
        for chat in alone:
            await self._apply_chat(chat, known)

    async def _apply_chat(self, chat: ChatKey, known: Known) -> None:
        """Apply one chat's events, or if that fails, event by event: an event that fails is
        kept as failed and the others still apply. A failure beyond that leaves the chat's
        events open, for the sweep."""
        try:
            async with self._transaction() as session:
                await apply_open_events(session, [chat], known, ApplyMode.ALONE, self.settings)
            return
        except Exception as error:
            log.warning("applying chat %s/%s failed (%r); event by event", *chat, error)
        try:
            async with self._transaction() as session:
                await apply_open_events(
                    session, [chat], known, ApplyMode.EVENT_BY_EVENT, self.settings
                )
        except Exception:
            log.exception("applying events of chat %s/%s failed", *chat)

    async def sweep(self) -> None:
        async with self.sessionmaker() as session:
            lost = await repository.lost_webhook_deliveries(session, SWEEP_GRACE, 1)
            chats = await repository.chats_with_pending_events(session, SWEEP_GRACE, SWEEP_BATCH)
        if lost:
            await self._enqueue_drain(SWEEP_DRAIN_JOB_ID)
        await self.apply_chats(chats)


def _refusal(error: Exception) -> str | None:
    """What PostgreSQL said, if it refused the data itself, which no retry would change: a
    data exception or a program limit (an index row too large). Not a constraint violation,
    which two workers racing could cause."""
    if not isinstance(error, DBAPIError) or error.orig is None:
        return None
    sqlstate = getattr(error.orig, "sqlstate", None) or ""
    if sqlstate[:2] not in ("22", "54"):
        return None
    cause = error.orig.__cause__ or error.orig
    return f"PostgreSQL refused to store its events: {cause}"
