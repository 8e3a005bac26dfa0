"""Field types shared by request schemas and parameters."""

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator


def _storable(value: str) -> str:
    # PostgreSQL's text and jsonb cannot hold U+0000: refused here, naming the field, rather
    # than by a failed statement (a 500).
    if "\x00" in value:
        raise ValueError("may not contain the NUL character (U+0000)")
    return value


# Text a client gives that dmrelay stores.
Text = Annotated[str, AfterValidator(_storable)]


def _iso_8601(value: Any) -> Any:
    # Pydantic alone would also read a number ("0.5", "1700000000") as a Unix time, which
    # a client who sent one by mistake would never notice.
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ValueError("must be an ISO 8601 date-time, such as 2026-01-31T12:00:00Z") from None


# A point in time a client gives: ISO 8601 only.
IsoDateTime = Annotated[datetime, BeforeValidator(_iso_8601)]
