"""Sending outbound messages to Meta: once, in order per chat, whatever fails.

A send job names a chat. The worker that takes the chat's lease (app/messages/lease.py)
sends the chat's undelivered messages oldest first, so two workers never send the same
message and a chat's messages reach Meta in the order they were accepted. A message waiting
for a retry holds back the later ones of its chat; a permanent failure releases them.

Before each Graph call, and before waiting for its rate-limit slot, the message is claimed
(`claimed_until`, for as long as an attempt can take) and its attempt number counted. While
the claim lasts no other worker sends the message, even one that took over the chat because
this worker's lease ran out. A claim still set when it has ended means the previous
attempt's outcome is unknown (the worker died, or PostgreSQL went away before the outcome
was stored): Meta may have delivered it, so the answer kept in Redis, or else the echo
webhook for a bounded time, is looked for before sending again.

Every change an attempt makes is checked against what it expects: a lease is renewed and
released only by the worker that took it, and a message is published, failed or held back
only while it is undelivered and on the attempt that claimed it, so an echo that published
it meanwhile stands. The statements are in app/messages/repository.py.
"""

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from arq.connections import ArqRedis
from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core import logs, tracing
from app.core.batching import Batcher
from app.core.jobs import Job, JobName, enqueue, enqueue_first_free
from app.core.metrics import SEND_ATTEMPTS
from app.core.settings import Settings
from app.media import repository as media_repository
from app.media.attachments import ReusableAttachments
from app.media.models import AttachmentStatus
from app.messages import repository
from app.messages.lease import ChatLeases, Lease, LeaseLost
from app.messages.models import UNDELIVERED
from app.messages.repository import Answered, Claim, Head, Outbound
from app.messages.sharing import ChatSharing
from app.messages.throttle import Held, PauseReason, ProfileThrottle, unpause
from app.meta.errors import NOT_OWNED_ATTACHMENT, TOKEN_CODE, GraphError
from app.meta.graph import Account, GraphClient, GraphUnreachable, send_body
from app.profiles.models import Connection
from app.profiles.service import access_token

log = logging.getLogger(__name__)

# A worker sends one chat's messages for at most this long, then hands it to a fresh job, so
# a busy chat does not pin a job slot and a graceful shutdown is never long. It hands it
# over sooner to share it with an idle worker (app/messages/sharing.py).
DRAIN_SECONDS = 20.0
# Why an attempt's outcome is unknown when its claim is still set: its worker died, or
# PostgreSQL went away before the outcome was stored.
UNFINISHED_ATTEMPT = "an earlier attempt never finished"
# Meta's answer to a send whose outcome PostgreSQL could not store, kept in Redis for the
# attempt that finds the claim left behind. Long enough for PostgreSQL to come back.
ANSWER_KEY = "dmrelay:answer:{}"
ANSWER_TTL = timedelta(days=7)


async def request_send(pool: ArqRedis, chat_id: int) -> None:
    """Ask a worker to send a chat's messages, with at most two jobs per chat in Redis.

    A job already queued for the chat will see the new message. One already running may be
    past its last look at the chat, so a follow-up job is queued as well (at most one).
    """
    job_ids = [f"deliver:{chat_id}", f"deliver:{chat_id}:next"]
    await enqueue_first_free(pool, JobName.SEND_CHAT, (chat_id,), job_ids)


def send_job(chat_id: int, job_id: str, defer_until: datetime | None = None) -> Job:
    """The job that asks a worker to send a chat's messages."""
    return Job(JobName.SEND_CHAT, (chat_id,), job_id, defer_until)


@dataclass(frozen=True)
class Failure:
    """Why an attempt failed, in the user's words and Meta's."""

    reason: str
    details: dict[str, str | None]
    retryable: bool
    is_token_error: bool = False
    # For the metrics: Meta's error code, "none" if its answer had none, "unreachable" if
    # there was no answer.
    code: str = "none"

    @classmethod
    def of_graph_error(cls, error: GraphError) -> "Failure":
        return cls(
            error.explain(),
            error.details(),
            error.retryable,
            error.code == TOKEN_CODE,
            str(error.code) if error.code is not None else "none",
        )

    @classmethod
    def of_unreachable(cls, error: GraphUnreachable) -> "Failure":
        return cls(
            "dmrelay could not reach Meta's Graph API.",
            {
                "platform_error_code": None,
                "platform_error_subcode": None,
                "platform_error_message": error.detail,
            },
            retryable=True,
            code="unreachable",
        )


class Sender:
    """Every statement here runs in autocommit mode and stands alone: none of the steps
    below needs two statements to commit together."""

    def __init__(
        self,
        db: asyncpg.Pool,
        engine: AsyncEngine,
        graph: GraphClient,
        settings: Settings,
        redis: ArqRedis,
    ) -> None:
        self.db = db
        # SQLAlchemy Core, on autocommit connections, for the statements off the hot path.
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.graph = graph
        self.settings = settings
        self.redis = redis
        self.throttle = ProfileThrottle(redis, settings)
        self.leases = ChatLeases(db, settings)
        self.attachments = ReusableAttachments(db, graph, redis)
        self.sharing = ChatSharing(redis)
        # Claims and publishes of concurrent chats share their round trips. Publishing
        # happens after the send, so it may wait for the publish in flight.
        self._claims = Batcher(self._claim_all)
        self._publishes = Batcher(self._publish_all, one_at_a_time=True)
        # Instagram Login profiles' appsecret_proof opt-in (not in the head), read once a
        # minute per profile at most.
        self._proof_opt_ins: dict[str, tuple[bool, float]] = {}

    async def send_chat(self, chat_id: int) -> None:
        logs.bind(chat_id=chat_id)  # a job is a task of its own
        self.sharing.draining += 1
        try:
            await self._send_chat(chat_id)
        finally:
            self.sharing.draining -= 1

    async def _send_chat(self, chat_id: int) -> None:
        deadline = time.monotonic() + DRAIN_SECONDS
        while (lease := await self.leases.take(chat_id)) is not None:
            try:
                drained = await self._drain(lease, deadline)
            except LeaseLost:
                log.warning("chat %s: its send lease ran out and was taken over", chat_id)
                return
            finally:
                await self.leases.release(lease)
            if not drained:
                continuation = [f"continue:{chat_id}:{time.time()}"]
                await enqueue_first_free(self.redis, JobName.SEND_CHAT, (chat_id,), continuation)
                return
            # A job for a message accepted while we held the lease found it taken and left;
            # now that it is released, look once more so that message is not stranded.
            if not await self._has_due_head(chat_id):
                return

    async def _drain(self, lease: Lease, deadline: float) -> bool:
        """Send the chat's due messages in order; False if time ran out first, or the chat is
        to be shared (after one attempt at least, so a chat handed over still moves on)."""
        head = await self._next_head(lease.chat_id)
        while head is not None:
            account = await self._if_due(head)
            if account is None:
                return True  # the head waits for a retry, and the rest of the chat with it
            head = await self._attempt(head, account, lease)
            if head is not None and (time.monotonic() >= deadline or self.sharing.hand_over()):
                return False
        return True

    async def _attempt(self, head: Head, account: Account, lease: Lease) -> Head | None:
        """One attempt at the head message; the chat's next head, or None if there is none
        or the chat must now wait. Raises LeaseLost, having sent nothing, if another worker
        has the chat."""
        if tracing.tracer is None:
            return await self._attempt_once(head, account, lease)
        message = head.message
        # In the trace of the request that accepted the message (a chat's job sends the
        # messages of many requests).
        with tracing.span("dmrelay.send", parent=message.traceparent, kind=SpanKind.CONSUMER):
            tracing.annotate(message=message.id, chat=message.chat_id, profile=message.profile_id)
            return await self._attempt_once(head, account, lease)

    async def _attempt_once(self, head: Head, account: Account, lease: Lease) -> Head | None:
        message = head.message
        logs.bind(message_id=message.id, profile_id=message.profile_id)
        if message.claimed_until is not None and await self._unfinished_attempt_delivered(message):
            tracing.annotate(outcome="delivered_before")
            return await self._next_head(message.chat_id)
        await self.leases.keep(lease)
        # Claimed before its rate-limit slot, not after: the claim's round trip would delay
        # the send past its slot, into the next one's (sends bunched so exceed Meta's count).
        with tracing.span("dmrelay.claim"):
            attempts = await self._claims.submit(Claim(message.id, lease.owner))
        tracing.annotate(attempt=attempts)
        if attempts is None:
            # Delivered meanwhile (an echo attached to it), or another attempt's claim is
            # still live; or, if the lease was lost, neither, and the lease says so.
            await self.leases.keep(lease, now=True)
            return await self._next_head(message.chat_id)
        attachment_type = (message.attachment or {}).get("type")
        attachment = message.attachment
        try:
            # Media goes by Meta's reusable attachment id, uploaded first if need be.
            attachment = await self._with_attachment_id(message, account)
            async with self.throttle.sending(
                message.profile_id, account.connection, attachment_type, self.leases.renew_after
            ):
                # The wait for the slot may have used up the lease: never send without it.
                await self.leases.keep(lease)
                answer = await self.graph.send_message(account, _body(head, attachment))
        except Held as held:
            SEND_ATTEMPTS.labels("held", "").inc()
            tracing.annotate(outcome="held")
            held_back = await self._give_back(
                message, attempts, timedelta(seconds=held.seconds), held.expired
            )
            if held.expired and held_back is False:
                # The profile was reconnected since its token was refused, and the pause
                # outlived it (its end, asked for after the reconnect's commit, is late or
                # lost): end it here, so the chat goes on now.
                await unpause(self.redis, message.profile_id)
            return None
        except LeaseLost:
            await self._give_back(message, attempts, None, False)
            raise
        except GraphError as error:
            await self._pause_if_throttled(
                message.profile_id, error.throttled_for, error.is_throttle
            )
            failure = Failure.of_graph_error(error)
            if (
                error.subcode == NOT_OWNED_ATTACHMENT
                and attachment
                and attachment.get("external_id")
            ):
                # Meta no longer takes the id (the account was reconnected, say): upload anew.
                await self._forget_attachment_id(message, attachment)
                failure = replace(failure, retryable=True)
        except GraphUnreachable as error:
            if error.maybe_delivered and await self._echo_arrived(message.id, error.detail):
                tracing.annotate(outcome="echoed")
                return await self._next_head(message.chat_id)
            failure = Failure.of_unreachable(error)
        else:
            SEND_ATTEMPTS.labels("published", "").inc()
            await self._pause_if_throttled(message.profile_id, answer.throttled_for, False)
            tracing.annotate(outcome="published")
            with tracing.span("dmrelay.publish"):
                return await self._publish(
                    Answered(message, attempts, answer.message_id, datetime.now(UTC))
                )
        with tracing.span("dmrelay.record_failure"):
            done = await self._failed(head, attempts, failure)
        if done:
            return await self._next_head(message.chat_id)
        return None

    async def _with_attachment_id(
        self, message: Outbound, account: Account
    ) -> dict[str, Any] | None:
        """The message's attachment with Meta's reusable attachment id (`external_id`),
        uploading its file if the profile never has; recorded on the message, which shows
        it. An attachment from before reusable ones (no content key) goes by URL."""
        attachment = message.attachment
        if not attachment or not attachment.get("content_key") or attachment.get("external_id"):
            return attachment
        attachment_id = await self.attachments.attachment_id(
            account, message.profile_id, attachment
        )
        changes = {"external_id": attachment_id, "status": AttachmentStatus.PROCESSED.value}
        await media_repository.raw_set_attachment(self.db, message.id, changes)
        return {**attachment, **changes}

    async def _forget_attachment_id(self, message: Outbound, attachment: dict[str, Any]) -> None:
        await self.attachments.forget(message.profile_id, attachment)
        changes = {"external_id": None, "status": AttachmentStatus.PENDING.value}
        await media_repository.raw_set_attachment(self.db, message.id, changes)

    async def _publish(self, answered: Answered) -> Head | None:
        """Record a send Meta answered; the chat's next head. If PostgreSQL cannot record it,
        Meta's answer is kept in Redis, so that the attempt that finds this one's claim
        publishes the message with it rather than sending it again."""
        try:
            return await self._publishes.submit(answered)
        except Exception:
            message_id = answered.message.id
            kept = json.dumps(
                [answered.attempts, answered.external_id, answered.posted_at.isoformat()]
            )
            try:
                await self.redis.set(ANSWER_KEY.format(message_id), kept, ex=ANSWER_TTL)
            except Exception:  # noqa: BLE001 - the publish's error is the one to raise
                log.exception("message %s: Meta's answer could not be kept either", message_id)
            raise

    async def _unfinished_attempt_delivered(self, message: Outbound) -> bool:
        """Whether the message's last attempt, whose outcome was never stored, reached Meta:
        its answer was kept, or its echo comes."""
        return await self._published_with_kept_answer(message) or await self._echo_arrived(
            message.id, UNFINISHED_ATTEMPT
        )

    async def _published_with_kept_answer(self, message: Outbound) -> bool:
        """Publish a message whose last attempt Meta answered but PostgreSQL did not record,
        if an answer was kept for that attempt."""
        kept = await self.redis.get(ANSWER_KEY.format(message.id))
        if kept is None:
            return False
        attempts, external_id, posted_at = json.loads(kept)
        if attempts != message.attempts:
            return False
        log.info("message %s: published with the answer kept for attempt %s", message.id, attempts)
        await self._publishes.submit(
            Answered(message, attempts, external_id, datetime.fromisoformat(posted_at))
        )
        await self.redis.delete(ANSWER_KEY.format(message.id))
        return True

    async def _echo_arrived(self, message_id: int, unknown: str) -> bool:
        """After an unknown outcome (`unknown` says why): wait a bounded time for Meta's echo
        to mark the message published. Meta has no idempotency key, so without an echo it is
        sent again."""
        deadline = time.monotonic() + self.settings.echo_wait_seconds
        while True:
            if await repository.status_of(self.engine, message_id) not in UNDELIVERED:
                return True
            if time.monotonic() >= deadline:
                log.warning(
                    "message %s: Meta may have it (%s) and no echo came within %g s; if it is "
                    "sent again, it may reach the customer twice",
                    message_id,
                    unknown,
                    self.settings.echo_wait_seconds,
                )
                return False
            await asyncio.sleep(0.1)

    async def _pause_if_throttled(
        self, profile_id: int, throttled_for: float | None, is_throttle_error: bool
    ) -> None:
        if throttled_for is None and not is_throttle_error:
            return
        await self.throttle.pause(profile_id, throttled_for or self.settings.throttle_pause_seconds)

    async def _claim_all(self, claims: list[Claim]) -> list[int | None]:
        return await repository.raw_claim(self.db, claims, self.leases.duration)

    async def _publish_all(self, answers: list[Answered]) -> list[Head | None]:
        return await repository.raw_publish(self.db, answers)

    async def _next_head(self, chat_id: int) -> Head | None:
        return await repository.raw_head(self.db, chat_id)

    async def _has_due_head(self, chat_id: int) -> bool:
        head = await self._next_head(chat_id)
        return head is not None and await self._if_due(head) is not None

    async def _if_due(self, head: Head) -> Account | None:
        """The account to send the head from, if it may be sent now. One that waits for a
        retry is not due, but its retry job is (re)scheduled, in case it was lost."""
        message = head.message
        retry_at = message.next_attempt_at
        now = datetime.now(UTC)
        if message.claimed_until is not None and message.claimed_until > now:
            # Another attempt is under way (its worker may have lost the chat's lease, or
            # died): sending now could send twice. Look again once its claim has ended.
            retry_at = message.claimed_until
        if retry_at is not None and retry_at > now:
            await self._schedule_retry(message, retry_at)
            return None
        return Account(
            connection=head.connection,
            platform_id=head.platform_id,
            page_id=head.page_id,
            access_token=access_token(head.access_token_encrypted, self.settings),
            appsecret_proof=head.connection == Connection.INSTAGRAM_LOGIN
            and await self._proves_app(message.profile_id, head.access_token_encrypted),
        )

    async def _proves_app(self, profile_id: int, ciphertext: str) -> bool:
        # By token (a reconnect, which may change the opt-in, brings a new ciphertext).
        now = time.monotonic()
        known = self._proof_opt_ins.get(ciphertext)
        if known is None or known[1] <= now:
            known = (await repository.raw_appsecret_proof(self.db, profile_id), now + 60.0)
            if len(self._proof_opt_ins) > 10_000:
                self._proof_opt_ins.clear()
            self._proof_opt_ins[ciphertext] = known
        return known[0]

    async def _failed(self, head: Head, attempts: int, failure: Failure) -> bool:
        """Record a failed attempt; False if the message will be retried (the chat waits).
        Only while the message is still undelivered and on this attempt: one an echo
        published meanwhile stays published."""
        message = head.message
        retry = failure.retryable and attempts < self.settings.max_attempts
        delay = _backoff(attempts, self.settings) if retry else None
        if retry:
            reason = (
                f"{failure.reason} Retrying (attempt {attempts} of {self.settings.max_attempts})."
            )
        elif failure.retryable:
            reason = f"{failure.reason} Gave up after {attempts} attempts."
        else:
            reason = failure.reason
        log.info("message %s attempt %s failed: %s", message.id, attempts, failure.details)
        SEND_ATTEMPTS.labels("retrying" if retry else "failed", failure.code).inc()
        tracing.annotate(outcome="retrying" if retry else "failed", meta_error_code=failure.code)
        recorded = await repository.record_failure(
            self.engine,
            message.id,
            attempts,
            reason,
            failure.details,
            retry_after=delay,
            # The token sent, not the profile: one reconnected meanwhile stays active.
            refused_token=(message.profile_id, head.access_token_encrypted)
            if failure.is_token_error
            else None,
        )
        if failure.is_token_error:
            # The profile is expired now (recorded first, so that a pause saying "expired"
            # never precedes it): its other sends are held by the pause, without calling
            # Meta, until it is reconnected (which ends the pause) or the pause ends.
            await self.throttle.pause(
                message.profile_id, self.settings.expired_hold_seconds, PauseReason.EXPIRED
            )
        if not recorded:
            return True  # delivered or taken over meanwhile: the chat goes on
        if delay is not None:
            await self._schedule_retry(message, datetime.now(UTC) + delay)
        return delay is None

    async def _give_back(
        self, message: Outbound, attempts: int, wait: timedelta | None, while_expired: bool
    ) -> bool | None:
        """Give a claimed message its claim and attempt back (nothing was sent), and keep it
        (and its chat) back `wait` if given (`while_expired`: only while its profile is
        still expired). Whether it is held back; None if it was not given back."""
        held = await repository.give_back(self.engine, message.id, attempts, wait, while_expired)
        if held and wait is not None:
            await self._schedule_retry(message, datetime.now(UTC) + wait)
        return held

    async def _schedule_retry(self, message: Outbound, when: datetime) -> None:
        await self._enqueue(
            send_job(message.chat_id, f"retry:{message.id}:{when.timestamp():.3f}", when)
        )

    async def _enqueue(self, job: Job) -> None:
        await enqueue(self.redis, job)


def _body(head: Head, attachment: dict[str, Any] | None) -> dict[str, Any]:
    message = head.message
    return send_body(
        head.participant_id,
        message.body,
        attachment,
        message.tag,
        message.reply_to_external_id,
        message.interactive,
        message.external_comment_id,
    )


def _backoff(attempts: int, settings: Settings) -> timedelta:
    """Exponential, with full jitter so that retries of many messages spread out."""
    ceiling = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** (attempts - 1))
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))
