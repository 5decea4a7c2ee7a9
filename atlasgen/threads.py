"""Threads for work that leaves the GIL: a pool with a thread per core (Pillow decodes, draws and
encodes without the GIL), and a writer that stores one result while the caller computes the next."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

log = logging.getLogger(__name__)

MAX_THREADS = 16  # at most, threads of a pool (no more than the cores)


def pool() -> ThreadPoolExecutor:
    """A thread per core, at most MAX_THREADS."""
    return ThreadPoolExecutor(max_workers=min(MAX_THREADS, os.cpu_count() or 1))


@contextmanager
def one_behind(background: bool) -> Iterator[Callable[[Callable[[], None]], None]]:
    """Yields `submit(job)`. With `background`, the job runs on a thread of its own while the
    caller goes on; `submit` first waits for the job before (raising its error), so one job at most
    is in flight, and leaving the block waits for the last. Without, `submit` runs the job at once.
    If the block raises, the job in flight still finishes (its error, if any, is logged) and the
    block's error is what propagates."""
    if not background:
        yield lambda job: job()
        return
    pending: list[Future] = []

    def submit(job: Callable[[], None]) -> None:
        if pending:
            pending.pop().result()
        pending.append(writer.submit(job))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="atlasgen-writer") as writer:
        try:
            yield submit
        except BaseException:
            for future in pending:
                if future.exception() is not None:
                    log.warning("storing the last results failed too: %s", future.exception())
            raise
        for future in pending:
            future.result()
