"""Public ids: short opaque strings that encode (kind, serial), never the raw serial.

Opaque, not secret: the alphabet is fixed and public (it owes nothing to SECRET_KEY), so
anyone can decode an id. Access is decided by the API key's scope, never by an id being
hard to guess."""

from enum import IntEnum
from functools import lru_cache

from sqids import Sqids

# A fixed shuffle of sqids' default alphabet: changing it would change every public id.
ALPHABET = "k3G7QAe51FCsPW92uEOyq4Bg6Sp8YzVTmnU0liwDvXNrhMtfHxRacjLbdKIJoZ"
MIN_LENGTH = 10


class CachedShuffleSqids(Sqids):
    """Sqids, with its alphabet shuffle remembered. sqids shuffles the alphabet afresh several
    times per id, in Python; the shuffle depends on nothing but the alphabet given, and an
    encoding only ever meets a few hundred of them, so the answers are kept. Without this,
    encoding the ids of new messages was a sixth of the cost of applying inbound messages."""

    # Overrides sqids' private `__shuffle` (name-mangled), which encode and decode call.
    @lru_cache(maxsize=4096)  # noqa: B019 - one instance, kept for the process's life
    def _Sqids__shuffle(self, alphabet: str) -> str:
        return super()._Sqids__shuffle(alphabet)


_sqids = CachedShuffleSqids(alphabet=ALPHABET, min_length=MIN_LENGTH)


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
