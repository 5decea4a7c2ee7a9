"""Progress of the long stages, wherever the build's output goes.

On a terminal: tqdm bars, redrawn in place. Off a terminal (a SLURM log, CI, `nohup`), where a
bar is either nothing or a line per redraw, the same calls write a `logging` line every
`LOG_INTERVAL` seconds and one when the stage ends: units done of the total, the rate and the
time left, so a long build's log shows that it is alive and when it should end."""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Any

from tqdm import tqdm

log = logging.getLogger(__name__)

LOG_INTERVAL = 30.0  # seconds between progress lines off a terminal


def progress(total: int, desc: str, unit: str, enabled: bool = True, bars: bool = True) -> Any:
    """A progress counter of `total` `unit`s named `desc` (used as a context manager, with
    `update(n)` and `set_postfix_str(text)`). `bars`: tqdm bars are allowed (the main rank) when
    standard error is a terminal; otherwise, or on other ranks, log lines. Nothing when not `enabled`."""
    if enabled and bars and sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)
    return LoggedProgress(total, desc, unit, enabled)


class LoggedProgress:
    """The part of tqdm's interface the stages use, reported as log lines."""

    def __init__(self, total: int, desc: str, unit: str, enabled: bool = True) -> None:
        self.total, self.desc, self.unit, self.enabled = total, desc, unit, enabled
        self.done = 0
        self.postfix = ""
        self.start = self.last = time.monotonic()
        self.closed = False

    def __enter__(self) -> LoggedProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None) -> None:
        self.close(stopped=kind is not None)

    def update(self, n: float = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self.last >= LOG_INTERVAL:
            self.last = now
            log.info("%s", self.line(now))

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def close(self, stopped: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        if self.enabled:
            log.info("%s", self.line(time.monotonic(), end="stopped" if stopped else "done"))

    def line(self, now: float, end: str = "") -> str:
        """'demo: dataset pass: 640/1,000 img (64%), 52.1 img/s, 7s left; conv2 0-31'."""
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {end + ', ' if end else ''}{self.done:,.0f}/{self.total:,} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.done / self.total:.0f}%)"
        if rate > 0:
            parts.append(f"{rate:,.{1 if rate < 100 else 0}f} {self.unit}/s")
        if end:
            parts.append(f"in {duration(elapsed)}")
        elif rate > 0:
            parts.append(f"{duration(max(self.total - self.done, 0) / rate)} left")
        text = ", ".join(parts)
        return f"{text}; {self.postfix}" if self.postfix and not end else text


def duration(seconds: float) -> str:
    """'42s', '12m05s', '3h07m'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
