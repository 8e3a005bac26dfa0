"""Public ids: short opaque strings that encode (kind, serial), never the raw serial."""

from enum import IntEnum
from functools import lru_cache

from sqids import Sqids

# A fixed shuffle of sqids' default alphabet: changing it would change every public id.
_ALPHABET = "k3G7QAe51FCsPW92uEOyq4Bg6Sp8YzVTmnU0liwDvXNrhMtfHxRacjLbdKIJoZ"
_sqids = Sqids(alphabet=_ALPHABET, min_length=10)


class Kind(IntEnum):
    PROFILE_GROUP = 1
    API_KEY = 2
    PROFILE = 3
    CHAT = 4
    MESSAGE = 5


@lru_cache(maxsize=65_536)
def encode(kind: Kind, serial: int) -> str:
    return _sqids.encode([int(kind), serial])


@lru_cache(maxsize=65_536)
def decode(kind: Kind, public_id: str) -> int | None:
    """The serial behind a public id of that kind, or None for anything else."""
    if not public_id.isascii() or not public_id.isalnum():
        return None
    numbers = _sqids.decode(public_id)
    # sqids decodes many strings; only the canonical encoding of our own pair counts.
    if len(numbers) != 2 or numbers[0] != kind or encode(kind, numbers[1]) != public_id:
        return None
    return numbers[1]
