"""Field types shared by request schemas and parameters."""

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator


def text_problem(value: str) -> str | None:
    """Why PostgreSQL's text and jsonb could not hold a string, or None. O(len): a string
    that is ASCII skips the encoding."""
    if "\x00" in value:
        return "may not contain the NUL character (U+0000)"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # Only a lone surrogate (from a JSON escape such as "\ud800") fails to encode.
            return "may not contain a lone surrogate (U+D800 to U+DFFF): it is not valid Unicode"
    return None


def _storable(value: str) -> str:
    # Refused here, naming the field, rather than by a failed statement (a 500).
    if problem := text_problem(value):
        raise ValueError(problem)
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


def _comparable(value: datetime) -> datetime:
    # A time a client gives to compare with stored ones, in UTC (a time without an offset is
    # taken as UTC). Near the ends of Python's range an offset can push it past them
    # (0001-01-01T00:00:00+14:00 is in year 0): refused, rather than failing in the driver.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range: give a time between years 1 and 9999 in UTC") from None


# A point in time a client gives: ISO 8601 only, compared in UTC.
Timestamp = Annotated[datetime, BeforeValidator(_iso_8601), AfterValidator(_comparable)]
