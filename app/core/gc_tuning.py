"""Python's cyclic garbage collector, set for a long-running server process."""

import gc

# Container objects allocated, net, between two young collections (Python's default: 700).
# A worker allocates hundreds of thousands a second (ORM rows, HTTP requests, tasks); at the
# default, collecting them was ~6 % of its samples under the bench's delivery load (py-spy
# --native), ~2.6 % with this and the freeze below.
YOUNG_THRESHOLD = 50_000


def tune_for_serving() -> None:
    """Call once start-up is done: what exists then (modules, classes, pools) lives as long as
    the process, so it is frozen out of every later collection."""
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 20, 20)
