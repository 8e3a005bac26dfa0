"""The log handler (app/core/logs.py:BufferedStreamHandler) writes the lines of a busy event
loop together, but never out of order, never later than its flush, and a warning at once; and
the access line (`logs.access`) is the record `logger.info` would make."""

import asyncio
import io
import json
import logging

from app.core import logs


class Counted(io.StringIO):
    """A stream that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _logger(name: str, handler: logging.Handler) -> logging.Logger:
    """A logger of its own, writing JSON lines through `handler` only."""
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def _handler() -> tuple[logs.BufferedStreamHandler, Counted, logging.Logger]:
    stream = Counted()
    handler = logs.BufferedStreamHandler(stream)
    return handler, stream, _logger("test_logs.buffered", handler)


def _messages(stream: io.StringIO) -> list[str]:
    return [json.loads(line)["message"] for line in stream.getvalue().splitlines()]


async def test_lines_on_an_event_loop_are_written_together_after_a_moment():
    handler, stream, logger = _handler()
    for n in range(3):
        logger.info("line %d", n)
    assert stream.getvalue() == ""  # waiting for the timer
    await asyncio.sleep(handler.FLUSH_SECONDS * 4)
    assert _messages(stream) == ["line 0", "line 1", "line 2"]
    assert stream.writes == 1


async def test_a_warning_is_written_at_once_after_the_lines_before_it():
    _, stream, logger = _handler()
    logger.info("first")
    logger.warning("second")
    assert _messages(stream) == ["first", "second"]
    logger.info("third")
    assert _messages(stream) == ["first", "second"]


async def test_flush_and_close_write_what_waits():
    handler, stream, logger = _handler()
    logger.info("waiting")
    handler.flush()
    assert _messages(stream) == ["waiting"]
    logger.info("at exit")
    handler.close()  # as logging.shutdown does at a clean exit
    assert _messages(stream) == ["waiting", "at exit"]


def test_off_an_event_loop_a_line_is_written_at_once():
    _, stream, logger = _handler()
    logger.info("no loop here")
    assert _messages(stream) == ["no loop here"]


async def test_a_line_from_a_thread_is_written_at_once_after_the_loops():
    _, stream, logger = _handler()
    logger.info("on the loop")
    await asyncio.to_thread(logger.info, "in a thread")
    assert _messages(stream) == ["on the loop", "in a thread"]


def test_the_access_line_is_the_record_info_would_make():
    stream = io.StringIO()
    logger = _logger("test_logs.access", logging.StreamHandler(stream))
    with logs.bound(request_id="abc"):
        logs.access(logger, "POST", "/api/chats/{chat_id}/messages", 202, 0.0012345)
        logger.info(
            "%s %s %d",
            "POST",
            "/api/chats/{chat_id}/messages",
            202,
            extra={
                "method": "POST",
                "route": "/api/chats/{chat_id}/messages",
                "status": 202,
                "duration_ms": 1.234,
            },
        )
    fast, usual = (json.loads(line) for line in stream.getvalue().splitlines())
    del fast["time"], usual["time"]
    assert fast == usual
    assert fast["level"] == "info" and fast["request_id"] == "abc"
    assert fast["message"] == "POST /api/chats/{chat_id}/messages 202"
