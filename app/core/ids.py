"""Public ids: short opaque strings that encode (kind, serial), never the raw serial.

Opaque, not secret: the alphabet is fixed and public (it owes nothing to SECRET_KEY), so
anyone can decode an id. Access is decided by the API key's scope, never by an id being
hard to guess."""

import re
from enum import IntEnum
from functools import lru_cache

from sqids import Sqids

# A fixed shuffle of sqids' default alphabet: changing it would change every public id.
ALPHABET = "k3G7QAe51FCsPW92uEOyq4Bg6Sp8YzVTmnU0liwDvXNrhMtfHxRacjLbdKIJoZ"
MIN_LENGTH = 10


_sqids = Sqids(alphabet=ALPHABET, min_length=MIN_LENGTH)


class Kind(IntEnum):
    PROFILE_GROUP = 1
    API_KEY = 2
    PROFILE = 3
    CHAT = 4
    MESSAGE = 5
    WEBHOOK = 6
    # An attempt to send an event to a customer webhook (the API's "delivery").
    WEBHOOK_DELIVERY = 7
    CUSTOMER_EVENT = 8
    # A dispatch: one event for one endpoint (X-PostProxy-Delivery); a test event's id too.
    DISPATCH = 9
    CHAT_SYNC = 10


def encode(kind: Kind, serial: int) -> str:
    return _encode(int(kind), serial)


# The caches are keyed by plain ints and strings, not by `Kind`: a key holding an enum member
# (an object the garbage collector tracks) stays tracked, and a full cache of them made every
# full collection walk 65,536 more objects (app/core/heap.py); a tuple of ints and strings is
# untracked at the first collection it survives.
@lru_cache(maxsize=65_536)
def _encode(kind: int, serial: int) -> str:
    return _sqids.encode([kind, serial])


# The longest id dmrelay issues: serials are PostgreSQL bigints. Anything longer is refused
# before sqids sees it; decoding a long string costs time quadratic in its length (15,000
# characters: seconds, on the event loop) and may yield numbers no bigint holds.
MAX_SERIAL = 2**63 - 1
MAX_LENGTH = max(len(_sqids.encode([int(kind), MAX_SERIAL])) for kind in Kind)

# Meta's ids, taken in place of ours in paths (a conversation id or a message's mid): opaque
# base64-like strings (`aWdf…`, Messenger's `m_…`, `t_…`), a few hundred characters at most.
META_ID_MAX_LENGTH = 512
_META_ID = re.compile(rf"[A-Za-z0-9_=+.:-]{{1,{META_ID_MAX_LENGTH}}}")


def decode(kind: Kind, public_id: str) -> int | None:
    """The serial behind a public id of that kind, or None for anything else."""
    if len(public_id) > MAX_LENGTH or not public_id.isascii() or not public_id.isalnum():
        return None
    return _decode(int(kind), public_id)


@lru_cache(maxsize=65_536)
def _decode(kind: int, public_id: str) -> int | None:
    try:
        numbers = _sqids.decode(public_id)
        # sqids decodes many strings; only the canonical encoding of our own pair counts
        # (encoding refuses numbers past a bigint's range).
        if len(numbers) != 2 or numbers[0] != kind or _encode(kind, numbers[1]) != public_id:
            return None
    except ValueError:
        return None
    return numbers[1]


def lookup(kind: Kind, path_id: str) -> int | str | None:
    """A path id that may be ours or Meta's: our serial, or Meta's id as given, or None
    when it can be neither (the caller answers "not found" without a query)."""
    serial = decode(kind, path_id)
    if serial is not None:
        return serial
    return path_id if _META_ID.fullmatch(path_id) else None
