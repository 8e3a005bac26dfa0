"""Field types shared by request schemas."""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator


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


Timestamp = Annotated[datetime, AfterValidator(_comparable)]
