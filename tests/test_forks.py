"""Forked processes (atlasgen/forks.py): the same results in the same order as in one process,
errors and dead children that reach the caller, children ended when the caller stops; pages
rendered in them byte-for-byte the same; a failing template named with its line."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from atlasgen import forks, threads
from atlasgen.errors import AtlasError
from atlasgen.render import pages as page_module
from atlasgen.render import render_site
from atlasgen.render.writer import MANIFEST_NAME
from sitefixture import make_site_data

LINUX = sys.platform.startswith("linux")


@pytest.fixture
def two_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fork even for a few small chunks, on any machine with Linux's fork."""
    monkeypatch.setattr(threads, "cores", lambda: 2)
    monkeypatch.setattr(forks, "MIN_CHUNKS", 2)
    monkeypatch.setattr(page_module, "PAGES_PER_CHUNK", 2)


def _pids(start: int, stop: int) -> list[tuple[int, int]]:
    return [(i, os.getpid()) for i in range(start, stop)]


def test_forked_map_keeps_order_and_runs_in_children(two_processes: None) -> None:
    out = [item for chunk in forks.forked_map(_pids, forks.chunks(23, 3)) for item in chunk]
    assert [i for i, _ in out] == list(range(23))
    pids = {pid for _, pid in out}
    if LINUX:
        assert os.getpid() not in pids and len(pids) >= 1
    else:
        assert pids == {os.getpid()}


def test_forked_map_in_one_process_without_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "cores", lambda: 1)
    out = [item for chunk in forks.forked_map(_pids, forks.chunks(40, 2)) for item in chunk]
    assert [i for i, _ in out] == list(range(40)) and {pid for _, pid in out} == {os.getpid()}


def test_forked_map_works_here_where_the_system_gives_no_pool(two_processes: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_semaphores(*args: object, **kwargs: object) -> None:
        raise OSError(38, "Function not implemented")  # what SemLock raises without /dev/shm

    monkeypatch.setattr(forks, "ProcessPoolExecutor", no_semaphores)
    out = [item for chunk in forks.forked_map(_pids, forks.chunks(10, 2)) for item in chunk]
    assert [i for i, _ in out] == list(range(10)) and {pid for _, pid in out} == {os.getpid()}


def test_balanced_chunks_give_a_large_item_its_own_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "cores", lambda: 2)
    costs = [500, 400, 300] + [1] * 200
    bounds = forks.balanced_chunks(costs, per_process=4)
    assert bounds[:3] == [(0, 1), (1, 2), (2, 3)]
    assert [i for start, stop in bounds for i in range(start, stop)] == list(range(len(costs)))
    assert forks.balanced_chunks([]) == [] and forks.balanced_chunks([0, 0]) == [(0, 2)]


def _fails_at_seven(start: int, stop: int) -> list[int]:
    if start <= 7 < stop:
        raise AtlasError("item 7 is bad")
    return list(range(start, stop))


def test_forked_map_raises_a_childs_error(two_processes: None) -> None:
    with pytest.raises(AtlasError, match="item 7 is bad"):
        list(forks.forked_map(_fails_at_seven, forks.chunks(20, 2)))


def _killed_at_five(start: int, stop: int) -> list[int]:
    if start <= 5 < stop:
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would
    return list(range(start, stop))


@pytest.mark.skipif(not LINUX, reason="children are forked on Linux only")
def test_a_child_killed_is_a_clear_error(two_processes: None) -> None:
    with pytest.raises(AtlasError, match="stopped unexpectedly"):
        list(forks.forked_map(_killed_at_five, forks.chunks(20, 2)))


def _slow_after_first(start: int, stop: int) -> int:
    if start:
        time.sleep(60)
    return start


@pytest.mark.skipif(not LINUX, reason="children are forked on Linux only")
def test_stopping_early_ends_the_children_at_once(two_processes: None) -> None:
    results = forks.forked_map(_slow_after_first, forks.chunks(8, 1))
    began = time.monotonic()
    assert next(results) == 0
    results.close()  # as Ctrl-C or an error in the caller does
    assert time.monotonic() - began < 20 and multiprocessing.active_children() == []


def _files(root: Path) -> dict[str, object]:
    files: dict[str, object] = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    records = json.loads(files.pop(MANIFEST_NAME))  # the same but for when each file was written
    files[MANIFEST_NAME] = {name: {k: v for k, v in record.items() if k != "mtime_ns"} for name, record in records["files"].items()}
    return files


def test_pages_rendered_in_processes_are_the_same_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    site = make_site_data(tmp_path / "cache")
    monkeypatch.setattr(threads, "cores", lambda: 1)
    render_site(site, tmp_path / "one")
    monkeypatch.setattr(threads, "cores", lambda: 2)
    monkeypatch.setattr(forks, "MIN_CHUNKS", 2)
    monkeypatch.setattr(page_module, "PAGES_PER_CHUNK", 2)
    with caplog.at_level(logging.DEBUG, logger="atlasgen.forks"):
        render_site(make_site_data(tmp_path / "cache"), tmp_path / "two")
    assert not LINUX or any("forked processes" in r.getMessage() for r in caplog.records)
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert sorted(one) == sorted(two) and len(one) > 50
    assert [name for name in one if one[name] != two[name]] == []


@pytest.mark.parametrize("fork", [False, True], ids=["one process", "forked"])
@pytest.mark.parametrize("source, line, says", [
    ("ok\n{{ no_such_thing }}\n", 2, "'no_such_thing' is undefined"),
    ("{% if %}\n", 1, "Expected an expression"),
    ("a\nb\n{{ 1 // 0 }}\n", 3, "ZeroDivisionError"),
])
def test_a_broken_user_template_is_named_with_its_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fork: bool,
                                                         source: str, line: int, says: str) -> None:
    if fork:
        monkeypatch.setattr(threads, "cores", lambda: 2)
        monkeypatch.setattr(forks, "MIN_CHUNKS", 2)
        monkeypatch.setattr(page_module, "PAGES_PER_CHUNK", 2)
    else:
        monkeypatch.setattr(threads, "cores", lambda: 1)
    partial = tmp_path / "templates" / "partials" / "dead.html"  # shown on the dead unit's page
    partial.parent.mkdir(parents=True)
    partial.write_text(source)
    with pytest.raises(AtlasError) as caught:
        render_site(make_site_data(tmp_path / "cache"), tmp_path / "site", templates=tmp_path / "templates")
    message = str(caught.value)
    assert f"{partial}, line {line}" in message and says in message
    assert "demo/conv2/3/index.html" in message and "remove it from the templates folder" in message
