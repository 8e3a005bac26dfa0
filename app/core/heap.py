"""The garbage collector in a serving process: the start-up heap kept out of collections, and
each collection's pause measured.

A full (generation 2) collection walks every container object the process holds. The API
holds about 190,000 once started (FastAPI's routes and models, pydantic's validators, the MCP
server, SQLAlchemy's tables), and a walk of them held it 245 to 665 ms on the 2-core
development machine: under load one came every few seconds, and every request in flight
waited for it, which was much of the accept path's p99 (docs/performance.md, "Accept"). Those
objects live as long as the process, so walking them again finds nothing: frozen after
start-up (`gc.freeze`), a full collection walks only what was made since.

The API and the worker both use it. Only the freeze: the thresholds stay Python's, since
collecting less often, tried in the worker (docs/performance.md, "Tried, and not kept"),
made each collection longer and bunched its sends.
"""

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from app.core.metrics import GC_PAUSE

# The blocks in `frozen` now: the heap is thawed when the last ends (tests run several apps
# in one process, and one app stopping must not thaw another's).
_holders = 0


@contextmanager
def frozen() -> Iterator[None]:
    """Within the block, what exists now (after collecting the garbage start-up left) is
    left out of collections; when the last such block ends, it is collected again as usual,
    so an app that stops (in tests, several per process) leaves nothing behind that only a
    collection can free."""
    global _holders
    gc.collect()
    gc.freeze()
    _holders += 1
    try:
        yield
    finally:
        _holders -= 1
        if not _holders:
            gc.unfreeze()


class _Pauses:
    """A gc callback: times each collection, into GC_PAUSE by generation."""

    def __init__(self) -> None:
        self.started = 0.0
        # The labelled children, made once: the callback runs at every collection.
        self.by_generation = [GC_PAUSE.labels(str(generation)) for generation in range(3)]

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.by_generation[info["generation"]].observe(time.perf_counter() - self.started)


@contextmanager
def pauses_measured() -> Iterator[None]:
    """Count the collectors' pauses (GC_PAUSE) within the block."""
    callback = _Pauses()
    gc.callbacks.append(callback)
    try:
        yield
    finally:
        gc.callbacks.remove(callback)
