"""Progress off a terminal: a build whose standard error is a file or a pipe (SLURM, CI, nohup)
logs each stage's units done of the total, its rate and the time left; on a terminal, bars."""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest
from tqdm import tqdm

from atlasgen import progress as progress_module
from atlasgen.build import BuildOptions, build
from atlasgen.config import load_config
from atlasgen.progress import LoggedProgress, duration, progress
from test_build import images, make_project  # noqa: F401  (images is a fixture)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "atlasgen.progress"]


def test_off_a_terminal_lines_carry_done_total_rate_and_time_left(monkeypatch, caplog):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setattr(progress_module, "LOG_INTERVAL", 0.0)
    caplog.set_level(logging.INFO, logger="atlasgen.progress")
    with progress(10, "m: stage", "img") as counter:
        assert isinstance(counter, LoggedProgress)
        counter.set_postfix_str("conv1 0-31")
        counter.update(4)
    first, end = _lines(caplog)
    assert re.fullmatch(r"m: stage: 4/10 img \(40%\), [\d.,]+ img/s, \d+s left; conv1 0-31", first), first
    assert re.fullmatch(r"m: stage: done, 4/10 img \(40%\), [\d.,]+ img/s, in \d+s", end), end
    assert sys.stderr.getvalue() == ""  # no bar drawn into a log file


def test_lines_wait_for_the_interval(monkeypatch, caplog):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    caplog.set_level(logging.INFO, logger="atlasgen.progress")
    with progress(100, "m: stage", "img") as counter:
        for _ in range(100):
            counter.update()
    assert _lines(caplog) == [_lines(caplog)[-1]] and _lines(caplog)[-1].startswith("m: stage: done, 100/100 img")


def test_a_stopped_stage_says_so_and_disabled_progress_is_silent(monkeypatch, caplog):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    caplog.set_level(logging.INFO, logger="atlasgen.progress")
    with pytest.raises(KeyboardInterrupt), progress(5, "m: stage", "img") as counter:
        counter.update(2)
        raise KeyboardInterrupt
    assert _lines(caplog)[-1].startswith("m: stage: stopped, 2/5 img")
    caplog.clear()
    with progress(5, "m: stage", "img", enabled=False) as counter:
        counter.update(5)
    assert _lines(caplog) == []


def test_on_a_terminal_bars_and_no_lines(monkeypatch, caplog):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(progress_module, "LOG_INTERVAL", 0.0)
    caplog.set_level(logging.INFO, logger="atlasgen.progress")
    with progress(3, "m: stage", "img") as counter:
        assert isinstance(counter, tqdm)
        counter.update(3)
    assert "m: stage" in terminal.getvalue() and _lines(caplog) == []
    with progress(3, "m: stage", "img", bars=False) as counter:  # another rank on the same terminal: lines
        assert isinstance(counter, LoggedProgress)


def test_duration():
    assert [duration(s) for s in (0.4, 59, 61, 3599, 3600 * 3 + 7 * 60 + 20)] == ["0s", "59s", "1m01s", "59m59s", "3h07m"]


@pytest.mark.slow
def test_a_build_off_a_terminal_logs_progress_of_each_stage(tmp_path, images, monkeypatch, caplog):  # noqa: F811
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setattr(progress_module, "LOG_INTERVAL", 0.0)
    caplog.set_level(logging.INFO, logger="atlasgen.progress")
    summary = build(load_config(make_project(tmp_path, images, steps=4)), BuildOptions(progress=True))
    assert summary.computed["featvis"] == 6
    lines = _lines(caplog)
    # 40 images; 3 channels x 2 layers x (3 single images + 2 diversity) x 4 steps = 120 image-steps
    assert "demo: dataset pass: done, 40/40 img (100%)" in "\n".join(lines)
    assert any(re.match(r"demo: dataset pass: \d+/40 img \(\d+%\), [\d.,]+ img/s, \d+s left$", line) for line in lines)
    assert any(line.startswith("demo: dataset results: done, 8/8 layer-task") for line in lines)  # 4 stages x 2 layers
    visualization = [line for line in lines if line.startswith("demo: feature visualization: ")]
    assert visualization[-1].startswith("demo: feature visualization: done, 120/120 img-step (100%)")
    for postfix in ("conv1 0-2, 0 of 6 units done", "conv3 0-2, 3 of 6 units done"):
        assert any(re.search(r": \d+/120 img-step .*left; " + postfix + "$", line) for line in visualization), postfix
    assert sys.stderr.getvalue() == ""
