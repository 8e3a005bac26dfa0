"""Public ids: stable, short, and refused cheaply when they cannot be ours."""

import gc

from sqids import Sqids

from app.core import ids


def test_public_ids_do_not_change():
    # Ids already handed out must stay valid: a change of alphabet or library would break them.
    assert ids.encode(ids.Kind.MESSAGE, 1) == "cbIv3yZYDk"
    assert ids.encode(ids.Kind.CHAT, 123456) == "J5u61Il8SU"
    assert ids.encode(ids.Kind.PROFILE, 7) == "zI8TjIsQ6f"
    assert ids.decode(ids.Kind.CHAT, "J5u61Il8SU") == 123456
    assert ids.decode(ids.Kind.MESSAGE, "J5u61Il8SU") is None


def test_the_longest_id_is_that_of_the_largest_serial():
    assert ids.MAX_LENGTH == 14
    for kind in ids.Kind:
        longest = ids.encode(kind, ids.MAX_SERIAL)
        assert len(longest) == ids.MAX_LENGTH
        assert ids.decode(kind, longest) == ids.MAX_SERIAL


def test_an_id_decoding_past_a_bigint_is_no_id():
    # Canonical sqids for (CHAT, 17964826343829345689), a number no bigint holds.
    assert Sqids(alphabet=ids.ALPHABET).decode("iMj2tfJ8bUOnPe") == [4, 17964826343829345689]
    assert ids.decode(ids.Kind.CHAT, "iMj2tfJ8bUOnPe") is None
    assert ids.lookup(ids.Kind.CHAT, "iMj2tfJ8bUOnPe") == "iMj2tfJ8bUOnPe"  # maybe Meta's


def test_an_id_longer_than_any_issued_is_refused_before_decoding(monkeypatch):
    decoded = []
    real_decode = ids._sqids.decode

    def counting_decode(public_id: str) -> list[int]:
        decoded.append(public_id)
        return real_decode(public_id)

    monkeypatch.setattr(ids._sqids, "decode", counting_decode)
    assert ids.decode(ids.Kind.CHAT, "a" * 15_000) is None
    assert ids.decode(ids.Kind.CHAT, "b" * (ids.MAX_LENGTH + 1)) is None
    assert decoded == []
    # Up to the longest id issued, decoding is done (and so costs at most that much).
    assert ids.decode(ids.Kind.CHAT, "c" * ids.MAX_LENGTH) is None
    assert decoded == ["c" * ids.MAX_LENGTH]


def test_a_path_id_is_ours_or_shaped_like_metas_or_nothing():
    assert ids.lookup(ids.Kind.CHAT, "J5u61Il8SU") == 123456
    mid = "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQx-_="
    assert ids.lookup(ids.Kind.MESSAGE, mid) == mid
    assert ids.lookup(ids.Kind.CHAT, "t_10161234567890") == "t_10161234567890"
    for odd in ("a" * (ids.META_ID_MAX_LENGTH + 1), "a b", "a\x00b", "é", "", "a/b", "\ud800"):
        assert ids.lookup(ids.Kind.CHAT, odd) is None, odd


def test_the_id_caches_leave_the_garbage_collector_nothing_to_walk():
    # Every new message's id is encoded once and cached: a cache key the collector tracks
    # would be walked by every full collection, up to the cache's 65,536 (app/core/heap.py).
    gc.collect()
    before = len(gc.get_objects())
    for serial in range(10**12, 10**12 + 2_000):
        public = ids.encode(ids.Kind.MESSAGE, serial)
        assert ids.decode(ids.Kind.MESSAGE, public) == serial
    gc.collect()
    assert len(gc.get_objects()) - before < 100
