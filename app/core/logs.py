"""Logs: one JSON object per line (LOG_FORMAT=json, the default), or plain text for a person at
a terminal (LOG_FORMAT=text, what `dmrelay up` uses).

Each line carries, where they apply, the request id (`request_id`, the X-Request-Id answered)
and the ids of the message, chat and profile at hand (`message_id`, `chat_id`, `profile_id`:
dmrelay's row ids), bound for a block with `bound(...)` or given per call with
`extra={"message_id": …}`. What is logged never holds an access token, a secret or a message's
text: tests/test_secrets_in_logs.py greps a whole test run's logs for them.
"""

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
        return json.dumps(line, default=str, ensure_ascii=False)


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
                "class": "logging.StreamHandler",
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
