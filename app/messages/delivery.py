"""Delivering outbound messages to Meta: once, in order per chat, whatever fails.

A delivery job names a chat. The worker that takes the chat's lease (a time-bounded lock in
PostgreSQL) sends the chat's undelivered messages oldest first, so two workers never send
the same message and a chat's messages reach Meta in the order they were accepted. A message
waiting for a retry holds back the later ones of its chat; a permanent failure releases them.

Before each Graph call, and before waiting for its rate-limit slot, the message is claimed
(`claimed_until`, for as long as an attempt can take) and its attempt number counted. While
the claim lasts no other worker sends the message, even one that took over the chat because
this worker's lease ran out. A claim still set when it has ended means the previous
attempt's outcome is unknown (the worker died, or PostgreSQL went away before the outcome
was stored): Meta may have delivered it, so the answer kept in Redis, or else the echo
webhook for a bounded time, is looked for before sending again.

Every change an attempt makes is checked against what it expects: a lease is renewed and
released only by the worker that took it (its token, `delivery_lease_owner`), and a message
is published, failed or held back only while it is undelivered and on the attempt that
claimed it, so an echo that published it meanwhile stands.
"""

import asyncio
import json
import logging
import random
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from arq.connections import ArqRedis
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.chats.models import Chat
from app.core.batching import Batcher
from app.core.jobs import Job, JobName, enqueue, enqueue_first_free
from app.core.models import sql_values
from app.core.settings import Settings
from app.messages.models import UNDELIVERED, Message
from app.messages.throttle import Held, ProfileThrottle
from app.meta.errors import TOKEN_CODE, GraphError
from app.meta.graph import Account, GraphClient, GraphUnreachable, send_body
from app.profiles.models import Profile
from app.profiles.service import access_token

log = logging.getLogger(__name__)

# A worker drains one chat for at most this long, then hands it to a fresh job, so a busy
# chat does not pin a job slot and a graceful shutdown is never long.
DRAIN_SECONDS = 20.0
# A message younger than this still has the job its acceptance enqueued.
SWEEP_GRACE = timedelta(seconds=5)
SWEEP_BATCH = 500
# Why an attempt's outcome is unknown when its claim is still set: its worker died, or
# PostgreSQL went away before the outcome was stored.
UNFINISHED_ATTEMPT = "an earlier attempt never finished"
# What an attempt may still need once its lease was last checked, beyond the Graph call and
# the echo wait: storing the outcome, and a booked rate-limit slot up to a second away.
ATTEMPT_MARGIN_SECONDS = 5.0
# Meta's answer to a send whose outcome PostgreSQL could not store, kept in Redis for the
# attempt that finds the claim left behind. Long enough for PostgreSQL to come back.
ANSWER_KEY = "dmrelay:answer:{}"
ANSWER_TTL = timedelta(days=7)


class LeaseLost(Exception):
    """Another worker has the chat now: this one stops without sending anything more."""


async def request_delivery(pool: ArqRedis, chat_id: int) -> None:
    """Ask a worker to deliver a chat's messages, with at most two jobs per chat in Redis.

    A job already queued for the chat will see the new message. One already running may be
    past its last look at the chat, so a follow-up job is queued as well (at most one).
    """
    job_ids = [f"deliver:{chat_id}", f"deliver:{chat_id}:next"]
    await enqueue_first_free(pool, JobName.DELIVER_CHAT, (chat_id,), job_ids)


def delivery_job(chat_id: int, job_id: str, defer_until: datetime | None = None) -> Job:
    """The job that asks a worker to deliver a chat's messages."""
    return Job(JobName.DELIVER_CHAT, (chat_id,), job_id, defer_until)


@dataclass(frozen=True)
class Failure:
    """Why an attempt failed, in the user's words and Meta's."""

    reason: str
    details: dict[str, str | None]
    retryable: bool
    is_token_error: bool = False

    @classmethod
    def of_graph_error(cls, error: GraphError) -> "Failure":
        return cls(error.explain(), error.details(), error.retryable, error.code == TOKEN_CODE)

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
        )


@dataclass(slots=True)
class Outbound:
    """An outbound message on its way to Meta: plain, not an ORM object, as one is built for
    every send (an ORM object costs far more to build and track)."""

    id: int
    chat_id: int
    profile_id: int
    body: str | None
    tag: str | None
    attachment: dict[str, str] | None
    reply_to_external_id: str | None
    attempts: int
    claimed_until: datetime | None
    next_attempt_at: datetime | None


@dataclass(slots=True)
class Lease:
    """A chat this worker holds: its token, and when it was last known to run until
    `now + Delivery.lease` (taken before the statement that set it, so never late)."""

    chat_id: int
    owner: int
    checked_at: float


@dataclass(frozen=True)
class Head:
    """The oldest undelivered message of a chat, with what sending it needs."""

    message: Outbound
    participant_id: str
    account: Account


# The statements every delivery runs, as SQL on asyncpg: through SQLAlchemy, building and
# running them cost the worker more CPU than the rest of a delivery did.
_TAKE_LEASE = """
UPDATE chats SET delivery_lease_until = now() + $2::interval, delivery_lease_owner = $3
WHERE id = $1 AND (delivery_lease_until IS NULL OR delivery_lease_until < now())
RETURNING id
"""
# The owner's alone: a lease that ran out and was taken since is another worker's.
_RENEW_LEASE = """
UPDATE chats SET delivery_lease_until = now() + $2::interval
WHERE id = $1 AND delivery_lease_owner = $3
RETURNING id
"""
_RELEASE_LEASE = """
UPDATE chats SET delivery_lease_until = NULL, delivery_lease_owner = NULL
WHERE id = $1 AND delivery_lease_owner = $2
"""
# The chat's next message to send (migration 0005), and publishing messages (migration
# 0007: each only while still on the attempt that sent it), which answers with the next.
_HEAD = "SELECT * FROM delivery_head($1)"
_PUBLISH = "SELECT * FROM publish_deliveries($1, $2, $3, $4, $5, $6)"
# Only with the chat's lease, and never over another attempt's live claim. The chats are
# read, not locked (an UPDATE locks its target's rows alone): inbound processing locks a
# chat, then its messages, so a statement that locked both the other way round could
# deadlock with it.
_CLAIM = f"""
UPDATE messages m SET claimed_until = now() + $3::interval, attempts = m.attempts + 1
FROM unnest($1::bigint[], $2::bigint[]) AS t(id, owner), chats c
WHERE m.id = t.id AND c.id = m.chat_id AND c.delivery_lease_owner = t.owner
    AND m.status IN {sql_values(UNDELIVERED)}
    AND (m.claimed_until IS NULL OR m.claimed_until <= now())
RETURNING m.id, m.attempts
"""


class Delivery:
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
        # What an attempt needs after its last look at the lease: the Graph call (a total
        # timeout), the wait for an echo after an unknown outcome, and a margin.
        call = settings.graph_timeout_seconds + settings.echo_wait_seconds + ATTEMPT_MARGIN_SECONDS
        # The lease is looked at (renewed, only by its owner) before each claim and again
        # just before each Graph call, but only once this much of it has gone, not with
        # every message; a send waits for its rate-limit slot at most this long too.
        self._renew_after = call / 3
        # So a lease looked at always has the rest of the attempt left, and a claim (as long,
        # set before the rate-limit wait) lasts the whole attempt.
        self.lease = timedelta(seconds=self._renew_after + call)
        # Claims and publishes of concurrent chats share their round trips. Publishing
        # happens after the send, so it may wait for the publish in flight.
        self._claims = Batcher(self._claim_all)
        self._publishes = Batcher(self._publish_all, one_at_a_time=True)

    async def deliver_chat(self, chat_id: int) -> None:
        deadline = time.monotonic() + DRAIN_SECONDS
        while (lease := await self._take_lease(chat_id)) is not None:
            try:
                drained = await self._drain(lease, deadline)
            except LeaseLost:
                log.warning("chat %s: its delivery lease ran out and was taken over", chat_id)
                return
            finally:
                await self._release_lease(lease)
            if not drained:
                await self._enqueue(delivery_job(chat_id, f"continue:{chat_id}:{time.time()}"))
                return
            # A job for a message accepted while we held the lease found it taken and left;
            # now that it is released, look once more so that message is not stranded.
            if await self._due_head(chat_id) is None:
                return

    async def _drain(self, lease: Lease, deadline: float) -> bool:
        """Send the chat's due messages in order; False if time ran out first."""
        row = await self._next_head(lease.chat_id)
        while row is not None:
            if time.monotonic() >= deadline:
                return False
            head = await self._if_due(row)
            if head is None:
                return True  # the head waits for a retry, and the rest of the chat with it
            row = await self._send(head, lease)
        return True

    async def _send(self, head: Head, lease: Lease) -> asyncpg.Record | None:
        """One attempt at the head message; the chat's next head, or None if there is none
        or the chat must now wait. Raises LeaseLost, having sent nothing, if another worker
        has the chat."""
        message, account = head.message, head.account
        if message.claimed_until is not None and await self._unfinished_attempt_delivered(message):
            return await self._next_head(message.chat_id)
        await self._keep_lease(lease)
        # Claimed before its rate-limit slot, not after: the claim's round trip would delay
        # the send past its slot, into the next one's (sends bunched so exceed Meta's count).
        attempts = await self._claims.submit((message.id, lease.owner))
        if attempts is None:
            # Delivered meanwhile (an echo attached to it), or another attempt's claim is
            # still live; or, if the lease was lost, neither, and the lease says so.
            await self._keep_lease(lease, now=True)
            return await self._next_head(message.chat_id)
        attachment_type = (message.attachment or {}).get("type")
        try:
            async with self.throttle.sending(
                message.profile_id, account.connection, attachment_type, self._renew_after
            ):
                # The wait for the slot may have used up the lease: never send without it.
                await self._keep_lease(lease)
                answer = await self.graph.send_message(account, _body(head))
        except Held as held:
            await self._give_back(message, attempts, timedelta(seconds=held.seconds))
            return None
        except LeaseLost:
            await self._give_back(message, attempts, None)
            raise
        except GraphError as error:
            await self._pause_if_throttled(
                message.profile_id, error.throttled_for, error.is_throttle
            )
            failure = Failure.of_graph_error(error)
        except GraphUnreachable as error:
            if error.maybe_delivered and await self._echo_arrived(message.id, error.detail):
                return await self._next_head(message.chat_id)
            failure = Failure.of_unreachable(error)
        else:
            await self._pause_if_throttled(message.profile_id, answer.throttled_for, False)
            return await self._publish(message, attempts, answer.message_id, datetime.now(UTC))
        if await self._failed(message, attempts, failure):
            return await self._next_head(message.chat_id)
        return None

    async def _publish(
        self, message: Outbound, attempts: int, external_id: str, posted_at: datetime
    ) -> asyncpg.Record | None:
        """Record a send Meta answered; the chat's next head. If PostgreSQL cannot record it,
        Meta's answer is kept in Redis, so that the attempt that finds this one's claim
        publishes the message with it rather than sending it again."""
        send = (message, attempts, external_id, posted_at)
        try:
            return await self._publishes.submit(send)
        except Exception:
            kept = json.dumps([attempts, external_id, posted_at.isoformat()])
            try:
                await self.redis.set(ANSWER_KEY.format(message.id), kept, ex=ANSWER_TTL)
            except Exception:  # noqa: BLE001 - the publish's error is the one to raise
                log.exception("message %s: Meta's answer could not be kept either", message.id)
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
            (message, attempts, external_id, datetime.fromisoformat(posted_at))
        )
        await self.redis.delete(ANSWER_KEY.format(message.id))
        return True

    async def _echo_arrived(self, message_id: int, unknown: str) -> bool:
        """After an unknown outcome (`unknown` says why): wait a bounded time for Meta's echo
        to mark the message published. Meta has no idempotency key, so without an echo it is
        sent again."""
        deadline = time.monotonic() + self.settings.echo_wait_seconds
        while True:
            async with self.engine.connect() as connection:
                status = await connection.scalar(
                    select(Message.status).where(Message.id == message_id)
                )
            if status not in UNDELIVERED:
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

    # -- PostgreSQL ------------------------------------------------------------------------

    async def _take_lease(self, chat_id: int) -> Lease | None:
        checked_at = time.monotonic()
        owner = secrets.randbits(63)
        taken = await self.db.fetchval(_TAKE_LEASE, chat_id, self.lease, owner)
        return Lease(chat_id, owner, checked_at) if taken is not None else None

    async def _keep_lease(self, lease: Lease, now: bool = False) -> None:
        """Make sure the lease outlasts an attempt from here, renewing it once it is old
        (or `now`); raises LeaseLost if another worker has taken the chat meanwhile."""
        if not now and time.monotonic() - lease.checked_at <= self._renew_after:
            return  # still ours: a lease runs out before anyone else may take it
        checked_at = time.monotonic()
        if await self.db.fetchval(_RENEW_LEASE, lease.chat_id, self.lease, lease.owner) is None:
            raise LeaseLost
        lease.checked_at = checked_at

    async def _release_lease(self, lease: Lease) -> None:
        await self.db.execute(_RELEASE_LEASE, lease.chat_id, lease.owner)

    async def _claim_all(self, claims: list[tuple[int, int]]) -> list[int | None]:
        """Start an attempt at each message (id, lease owner); its attempt number, or None
        if it was delivered meanwhile, is claimed by a live attempt, or its chat's lease is
        not the caller's."""
        rows = await self.db.fetch(
            _CLAIM, [message_id for message_id, _ in claims], [o for _, o in claims], self.lease
        )
        attempts = {row["id"]: row["attempts"] for row in rows}
        return [attempts.get(message_id) for message_id, _ in claims]

    async def _publish_all(
        self, sends: list[tuple[Outbound, int, str, datetime]]
    ) -> list[asyncpg.Record | None]:
        """Record each message (with the attempt that sent it) as published with Meta's id;
        each chat's next head."""
        # In chat order, as every transaction that locks several chats takes them.
        ordered = sorted(sends, key=lambda send: send[0].chat_id)
        heads = await self.db.fetch(
            _PUBLISH,
            [message.id for message, _, _, _ in ordered],
            [message.chat_id for message, _, _, _ in ordered],
            [message.profile_id for message, _, _, _ in ordered],
            [external_id for _, _, external_id, _ in ordered],
            [posted_at for _, _, _, posted_at in ordered],
            [attempts for _, attempts, _, _ in ordered],
        )
        by_chat = {head["chat_id"]: head for head in heads}
        return [by_chat.get(message.chat_id) for message, _, _, _ in sends]

    async def _next_head(self, chat_id: int) -> asyncpg.Record | None:
        return await self.db.fetchrow(_HEAD, chat_id)

    async def _due_head(self, chat_id: int) -> Head | None:
        row = await self._next_head(chat_id)
        return await self._if_due(row) if row is not None else None

    async def _if_due(self, row: asyncpg.Record) -> Head | None:
        """The head row as a Head, if it may be sent now. One that waits for a retry is not
        due, but its retry job is (re)scheduled, in case it was lost."""
        message = Outbound(
            id=row["id"],
            chat_id=row["chat_id"],
            profile_id=row["profile_id"],
            body=row["body"],
            tag=row["tag"],
            attachment=json.loads(row["attachment"]) if row["attachment"] else None,
            reply_to_external_id=row["reply_to_external_id"],
            attempts=row["attempts"],
            claimed_until=row["claimed_until"],
            next_attempt_at=row["next_attempt_at"],
        )
        now = datetime.now(UTC)
        if message.claimed_until is not None and message.claimed_until > now:
            # Another attempt is under way (its worker may have lost the chat's lease, or
            # died): sending now could send twice. Look again once its claim has ended.
            message.next_attempt_at = message.claimed_until
        if message.next_attempt_at is not None and message.next_attempt_at > now:
            await self._schedule_retry(message)
            return None
        account = Account(
            connection=row["connection"],
            platform_id=row["platform_id"],
            page_id=row["page_id"],
            access_token=access_token(row["access_token_encrypted"], self.settings),
        )
        return Head(message, row["participant_external_id"], account)

    async def _failed(self, message: Outbound, attempts: int, failure: Failure) -> bool:
        """Record a failed attempt; False if the message will be retried (the chat waits).
        Only while the message is still undelivered and on this attempt: one an echo
        published meanwhile stays published."""
        retry = failure.retryable and attempts < self.settings.max_attempts
        if retry:
            delay = _backoff(attempts, self.settings)
            reason = (
                f"{failure.reason} Retrying (attempt {attempts} of {self.settings.max_attempts})."
            )
        elif failure.retryable:
            reason = f"{failure.reason} Gave up after {attempts} attempts."
        else:
            reason = failure.reason
        log.info("message %s attempt %s failed: %s", message.id, attempts, failure.details)
        async with self.engine.connect() as connection:
            recorded = await connection.execute(
                update(Message)
                .where(*_on_attempt(message.id, attempts))
                .values(
                    status="failed_waiting_for_retry" if retry else "failed",
                    error_message=reason,
                    error_details=failure.details,
                    claimed_until=None,
                    next_attempt_at=func.now() + delay if retry else None,
                )
            )
            if failure.is_token_error:
                await connection.execute(
                    update(Profile).where(Profile.id == message.profile_id).values(status="expired")
                )
        if recorded.rowcount == 0:
            return True  # delivered or taken over meanwhile: the chat goes on
        if retry:
            message.attempts = attempts
            message.next_attempt_at = datetime.now(UTC) + delay
            await self._schedule_retry(message)
        return not retry

    async def _give_back(self, message: Outbound, attempts: int, wait: timedelta | None) -> None:
        """Give a claimed message its claim and attempt back (nothing was sent), and keep it
        (and its chat) back `wait` if given."""
        values: dict[str, Any] = {"claimed_until": None, "attempts": Message.attempts - 1}
        if wait is not None:
            values["next_attempt_at"] = func.now() + wait
        async with self.engine.connect() as connection:
            given_back = await connection.execute(
                update(Message).where(*_on_attempt(message.id, attempts)).values(values)
            )
        if wait is not None and given_back.rowcount > 0:
            message.next_attempt_at = datetime.now(UTC) + wait
            await self._schedule_retry(message)

    async def _schedule_retry(self, message: Outbound) -> None:
        when = message.next_attempt_at
        await self._enqueue(
            delivery_job(message.chat_id, f"retry:{message.id}:{when.timestamp():.3f}", when)
        )

    async def _enqueue(self, job: Job) -> None:
        await enqueue(self.redis, job)

    async def sweep(self) -> int:
        """Re-enqueue chats whose due messages have no live job and no worker: the job was
        lost (Redis flushed or restarted) or its worker died. Returns how many."""
        async with self.engine.connect() as connection:
            chat_ids = (
                await connection.scalars(
                    select(Message.chat_id)
                    .join(Chat, Chat.id == Message.chat_id)
                    .where(
                        Message.direction == "outbound",
                        Message.status.in_(UNDELIVERED),
                        func.coalesce(Message.next_attempt_at, Message.created_at)
                        < func.now() - SWEEP_GRACE,
                        or_(
                            Chat.delivery_lease_until.is_(None),
                            Chat.delivery_lease_until < func.now(),
                        ),
                    )
                    .distinct()
                    .limit(SWEEP_BATCH)
                )
            ).all()
        bucket = int(time.time() // self.settings.sweep_interval_seconds)
        for chat_id in chat_ids:
            await self._enqueue(delivery_job(chat_id, f"sweep:{chat_id}:{bucket}"))
        if chat_ids:
            log.warning("sweeper re-enqueued %d chats with undelivered messages", len(chat_ids))
        return len(chat_ids)


def _on_attempt(message_id: int, attempts: int) -> tuple[Any, ...]:
    """The message, if it is still undelivered and on this attempt."""
    return (
        Message.id == message_id,
        Message.status.in_(UNDELIVERED),
        Message.attempts == attempts,
    )


def _body(head: Head) -> dict[str, Any]:
    message = head.message
    return send_body(
        head.participant_id,
        message.body,
        message.attachment,
        message.tag,
        message.reply_to_external_id,
    )


def _backoff(attempts: int, settings: Settings) -> timedelta:
    """Exponential, with full jitter so that retries of many messages spread out."""
    ceiling = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** (attempts - 1))
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))
