"""Threads for work that leaves the GIL: a pool with a thread per core (Pillow decodes, draws and
encodes without the GIL), and a writer thread that stores results while the caller computes on."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

log = logging.getLogger(__name__)

MAX_THREADS = 16  # at most, threads of a pool (no more than the cores)


def cores() -> int:
    """Cores this process may use: its affinity mask where the platform has one (a container or
    a batch job's share), else every core."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def pool() -> ThreadPoolExecutor:
    """A thread per core, at most MAX_THREADS."""
    return ThreadPoolExecutor(max_workers=min(MAX_THREADS, cores()))


class Later:
    """Jobs run in the order given, on one thread of their own while the caller goes on, or at
    once where there is no thread (`later(background=False)`)."""

    def __init__(self, writer: ThreadPoolExecutor | None):
        self._writer = writer
        self._pending: list[Future] = []

    def submit(self, job: Callable[[], None]) -> None:
        if self._writer is None:
            job()
        else:
            self._pending.append(self._writer.submit(job))

    @property
    def pending(self) -> int:
        """Jobs given and not run yet."""
        return sum(not future.done() for future in self._pending)

    @property
    def given(self) -> bool:
        """Whether jobs were given since the last `wait`."""
        return bool(self._pending)

    def wait(self) -> None:
        """Return when every job given so far has run; raise the first one's error."""
        while self._pending:
            self._pending.pop(0).result()


@contextmanager
def later(background: bool) -> Iterator[Later]:
    """A `Later` whose jobs run on a thread of their own if `background`. Leaving the block waits
    for them. If the block raises (Ctrl-C, say), the jobs given still run and the block's error is
    what propagates; if waiting for them is interrupted too, the jobs not yet started are dropped."""
    if not background:
        yield Later(None)
        return
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atlasgen-writer")
    jobs = Later(writer)
    try:
        yield jobs
        jobs.wait()
    except BaseException:
        try:
            if jobs.pending:
                log.warning("finishing %d result(s) in progress before stopping", jobs.pending)
            for future in jobs._pending:
                if future.exception() is not None:
                    log.warning("storing results in the background failed too: %s", future.exception())
        except BaseException:
            writer.shutdown(wait=False, cancel_futures=True)
            raise
        raise
    finally:
        writer.shutdown(wait=True)
