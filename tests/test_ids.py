"""Public ids: stable, and the same as plain sqids gives (ids.py caches sqids' shuffle)."""

import random

from sqids import Sqids

from app.core import ids


def test_cached_shuffle_encodes_and_decodes_as_sqids_does():
    plain = Sqids(alphabet=ids.ALPHABET, min_length=ids.MIN_LENGTH)
    cached = ids.CachedShuffleSqids(alphabet=ids.ALPHABET, min_length=ids.MIN_LENGTH)
    serials = [0, 1, 2, 61, 62, 3_844, 10**6, 2**31, 2**53, *random.sample(range(10**9), 2_000)]
    for kind in ids.Kind:
        for serial in serials:
            public_id = plain.encode([kind, serial])
            assert cached.encode([kind, serial]) == public_id
            assert cached.decode(public_id) == [kind, serial]


def test_public_ids_do_not_change():
    # Ids already handed out must stay valid: a change of alphabet or library would break them.
    assert ids.encode(ids.Kind.MESSAGE, 1) == "cbIv3yZYDk"
    assert ids.encode(ids.Kind.CHAT, 123456) == "J5u61Il8SU"
    assert ids.encode(ids.Kind.PROFILE, 7) == "zI8TjIsQ6f"
    assert ids.decode(ids.Kind.CHAT, "J5u61Il8SU") == 123456
    assert ids.decode(ids.Kind.MESSAGE, "J5u61Il8SU") is None
