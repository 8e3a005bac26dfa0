"""Sharing one round trip among the concurrent tasks that need the same kind of statement."""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """Gathers the items submitted during one turn of the event loop into one call of
    `run`, which answers with one result per item, in order.

    A worker with a hundred chats in flight makes the same statement a hundred times over:
    each task still waits for its own answer, but they share the round trip (and, for a
    write, the commit).

    `one_at_a_time`: items submitted while a call runs wait for it, and go together in the
    next one, as in a group commit. Batches then grow with the load instead of staying at
    what one turn of the loop gathers: fewer statements and commits under load (publishing
    sends, in the delivery drain). Not for calls that pace their callers: a send's claim or
    rate-limit slot kept waiting would release sends in bunches.
    """

    def __init__(
        self, run: Callable[[list[Item]], Awaitable[Sequence[Result]]], one_at_a_time: bool = False
    ) -> None:
        self._run = run
        self._one_at_a_time = one_at_a_time
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        # Held, too, because a task nothing refers to may be collected mid-flight.
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._waiting.append((item, future))
        if len(self._waiting) == 1 and not (self._one_at_a_time and self._running):
            loop.call_soon(self._start)
        return await future

    def _start(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.create_task(self._execute(batch))
        self._running.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._one_at_a_time and self._waiting:
            self._start()

    async def _execute(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
        except BaseException as error:  # noqa: BLE001 - each waiting task gets it instead
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
