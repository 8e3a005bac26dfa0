"""Logs: one JSON object per line (LOG_FORMAT=json, the default), or plain text for a person at
a terminal (LOG_FORMAT=text, what `dmrelay up` uses).

Each line carries, where they apply, the request id (`request_id`, the X-Request-Id answered)
and the ids of the message, chat and profile at hand (`message_id`, `chat_id`, `profile_id`:
dmrelay's row ids), bound for a block with `bound(...)` or given per call with
`extra={"message_id": …}`. What is logged never holds an access token, a secret or a message's
text: tests/test_secrets_in_logs.py greps a whole test run's logs for them.
"""

import asyncio
import json
import logging
import logging.config
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

# The ids a line may carry, in the order they are written; then an access line's fields.
FIELDS = ("request_id", "message_id", "chat_id", "profile_id")
ACCESS_FIELDS = ("method", "route", "status", "duration_ms")

# Libraries whose INFO lines say nothing an operator needs, or too much: httpx logs each
# request's URL (a media download's signed CDN link); alembic, its plugins as /readyz reads
# the migrations.
QUIET = {"httpx": "WARNING", "httpcore": "WARNING", "alembic": "WARNING"}

# json.dumps with options builds an encoder per call; one, made once, writes the same text.
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)

_bound: ContextVar[dict[str, Any] | None] = ContextVar("dmrelay_log_context", default=None)


def bind(**ids: Any) -> None:
    """Bind ids to every line logged from here on in this task (a request, a job)."""
    _bound.set({**(_bound.get() or {}), **ids})


@contextmanager
def bound(**ids: Any) -> Iterator[None]:
    """Bind ids to the lines logged within the block."""
    token = _bound.set({**(_bound.get() or {}), **ids})
    try:
        yield
    finally:
        _bound.reset(token)


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        # The API writes a line per request: the date and time of the current second are
        # formatted once.
        self._second = -1
        self._stamp = ""

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._stamp = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = _bound.get() or {}
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is None:
                value = context.get(name)
            if value is not None:
                line[name] = value
        for name in ACCESS_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return _ENCODER.encode(line)


def access(logger: logging.Logger, method: str, route: str, status: int, seconds: float) -> None:
    """An HTTP request's access line, at INFO, as `logger.info` would log it (the caller has
    checked the level), less the search of the stack for the caller's file and line: the
    formatters write neither, and it is most of what a line costs before it is formatted."""
    logger.handle(
        logger.makeRecord(
            logger.name,
            logging.INFO,
            __file__,
            0,
            "%s %s %d",
            (method, route, status),
            None,
            "access",
            {
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
            },
        )
    )


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that, on an event loop, writes lines of INFO and below in one write
    at most FLUSH_SECONDS after the first of them (as nginx's `access_log … flush=`), rather
    than one write per line: the API writes an access line per request. A line above INFO
    writes at once, after those waiting, and so does any line logged off the event loop;
    `flush` (at a clean exit, logging.shutdown's) writes what waits. Only a process killed
    outright loses lines: those of its last FLUSH_SECONDS."""

    FLUSH_SECONDS = 0.05
    # Written at once past this many (a burst at a high rate).
    MAX_LINES = 512

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._waiting: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._waiting.append(self.format(record) + self.terminator)
            if record.levelno > logging.INFO or len(self._waiting) >= self.MAX_LINES:
                self._write()
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is None or (self._timer is not None and loop is not self._timer_loop):
                self._write()
            elif self._timer is None:
                self._timer = loop.call_later(self.FLUSH_SECONDS, self.flush)
                self._timer_loop = loop
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def close(self) -> None:
        self.flush()
        super().close()

    def _write(self) -> None:
        """Write what waits, and flush the stream (called with the handler's lock held)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_loop = None
        if self._waiting:
            text, self._waiting = "".join(self._waiting), []
            self.stream.write(text)
        if self.stream and hasattr(self.stream, "flush"):
            self.stream.flush()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        given = {name: getattr(record, name) for name in FIELDS if hasattr(record, name)}
        context = {**(_bound.get() or {}), **given}
        ids = " ".join(f"{name}={context[name]}" for name in FIELDS if context.get(name))
        return f"{text} [{ids}]" if ids else text


def dict_config(log_format: str, level: str) -> dict[str, Any]:
    """The logging configuration of a process (logging.config.dictConfig's), to stderr, for
    every logger: uvicorn's (which applies it in each of its worker processes) and arq's too,
    through the root logger rather than their own handlers (which would write a second line)."""
    formatter = TextFormatter if log_format == "text" else JsonFormatter
    through_root = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"dmrelay": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            "stderr": {
                "class": f"{BufferedStreamHandler.__module__}.{BufferedStreamHandler.__qualname__}",
                "formatter": "dmrelay",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            **{name: through_root for name in ("uvicorn", "uvicorn.error", "arq")},
            **{name: {"level": level} for name, level in QUIET.items()},
        },
    }


def configure(log_format: str, level: str) -> None:
    logging.config.dictConfig(dict_config(log_format, level))
