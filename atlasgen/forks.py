"""Processes for pure-Python work that holds the GIL (the Jinja pages, the cache's checksums):
children forked from this process, so they start at once and see its objects as they are, with
nothing to pickle but the results.

Forking is only safe where the platform forks cleanly (Linux); on macOS and Windows, and with
one core, the work runs here, in order, with the same results."""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from atlasgen import threads
from atlasgen.errors import AtlasError

log = logging.getLogger(__name__)

MAX_PROCESSES = 16
MIN_CHUNKS = 4  # fewer chunks than this run here: forking costs more than it saves

T = TypeVar("T")
_work: Callable[[int, int], object] | None = None  # the job the children run, inherited at fork


def processes() -> int:
    """How many children `forked_map` uses: one per core, at most MAX_PROCESSES; 1 means none."""
    if not sys.platform.startswith("linux"):
        return 1
    ranks = os.environ.get("LOCAL_WORLD_SIZE", "1")  # torchrun's processes on this machine share its cores
    ranks_here = max(1, int(ranks)) if ranks.isdigit() else 1
    return max(1, min(MAX_PROCESSES, threads.cores() // ranks_here))


def _child_start() -> None:
    # Ctrl-C reaches the whole process group: the parent stops the children; they must not
    # each print a traceback of their own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _stop(pool: ProcessPoolExecutor) -> None:
    """End the children at once: their work only reads and returns, so nothing is left half done.
    (The pool then fails the tasks not run; cancelling them first makes it raise in its thread.)"""
    for process in list(getattr(pool, "_processes", {}).values()):  # no public way to end a running task
        process.terminate()


def _pool(workers: int) -> ProcessPoolExecutor | None:
    """A pool forking `workers` children as tasks arrive, or None where this system cannot give
    one (no working semaphores, as in some containers without /dev/shm)."""
    try:
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_child_start)
    except (OSError, ImportError, NotImplementedError) as exc:
        log.debug("no forked processes here (%s): working in this process", exc)
        return None


def _run(bounds: tuple[int, int]) -> object:
    assert _work is not None
    return _work(*bounds)


def chunks(count: int, size: int) -> list[tuple[int, int]]:
    """[0, count) as (start, stop) ranges of `size` items."""
    return [(start, min(start + size, count)) for start in range(0, count, size)]


def balanced_chunks(costs: Sequence[float], per_process: int = 8) -> list[tuple[int, int]]:
    """Consecutive ranges of about equal cost, about `per_process` for each process: with the costliest
    items first, a large item is a range of its own and the small ones fill in after it."""
    target = sum(costs) / (per_process * processes()) or 1.0
    bounds, start, total = [], 0, 0.0
    for i, cost in enumerate(costs):
        total += cost
        if total >= target:
            bounds.append((start, i + 1))
            start, total = i + 1, 0.0
    return bounds + ([(start, len(costs))] if start < len(costs) else [])


def forked_map(work: Callable[[int, int], T], bounds: list[tuple[int, int]]) -> Iterator[T]:
    """`work(start, stop)` for each range of `bounds`, results in order. `work` must only read what
    this process holds and return what it makes: a child's changes to objects stay in the child.
    Its exceptions are raised here (they must pickle)."""
    global _work
    workers = min(processes(), len(bounds))
    pool = _pool(workers) if workers >= 2 and len(bounds) >= MIN_CHUNKS else None
    if pool is None:
        yield from (work(*b) for b in bounds)
        return
    _work = work
    gc.freeze()  # the children's collections leave the inherited objects (and their pages) alone
    try:
        with pool:
            log.debug("%d chunks in %d forked processes", len(bounds), workers)
            futures = [pool.submit(_run, b) for b in bounds]
            try:
                for future in futures:
                    yield future.result()
            except BrokenProcessPool:
                raise AtlasError("a process working in parallel stopped unexpectedly (out of memory?); "
                                 "see the system log, free some memory and run again") from None
            except BaseException:  # an error, Ctrl-C, or the caller stopped reading: stop the children now
                _stop(pool)
                raise
    finally:
        _work = None
        gc.unfreeze()
