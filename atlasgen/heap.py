"""The garbage collector while a whole atlas is assembled and rendered.

Assembly makes millions of objects that live until the site is written (a whole GoogLeNet
atlas: 116,000 examples, their paths, the pages' views). Python's collector runs a full
collection each time the long-lived heap grows by a quarter, and each one walks all of it:
about ten full passes, some 3 s of CPU on 2 cores for 5,808 units, that free nothing. Inside
`few_full_collections` only the young generations are collected (what a page's rendering leaves
in reference cycles is still freed there); full passes resume afterwards."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

FULL_EVERY = 10_000  # young-generation collections between full ones (Python's default: 10, and the growth rule)


@contextmanager
def few_full_collections() -> Iterator[None]:
    young, middle, full = gc.get_threshold()
    gc.set_threshold(young, middle, max(full, FULL_EVERY))
    try:
        yield
    finally:
        gc.set_threshold(young, middle, full)
