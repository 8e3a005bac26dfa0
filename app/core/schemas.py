"""Field types shared by request schemas."""

from typing import Annotated

from pydantic import AfterValidator


def _storable(value: str) -> str:
    # PostgreSQL's text and jsonb cannot hold U+0000: refused here, naming the field, rather
    # than by a failed statement (a 500).
    if "\x00" in value:
        raise ValueError("may not contain the NUL character (U+0000)")
    return value


# Text a client gives that dmrelay stores.
Text = Annotated[str, AfterValidator(_storable)]
