"""The writer that stores one result while the caller computes the next (`threads.one_behind`), and
the feature-visualization stage storing that way, as it does on a GPU."""

from __future__ import annotations

import threading

import pytest

from atlasgen import threads
from atlasgen.build import BuildOptions, build
from atlasgen.config import load_config

from tests.test_build import images, make_project  # noqa: F401 (a fixture)


def test_the_caller_goes_on_while_the_job_runs_and_jobs_keep_their_order():
    started, release, order = threading.Event(), threading.Event(), []

    def slow() -> None:
        started.set()
        release.wait(5)
        order.append("first")

    with threads.one_behind(True) as submit:
        submit(slow)
        assert started.wait(5)
        order.append("caller")  # the job is still waiting for `release`
        release.set()
        submit(lambda: order.append("second"))  # waits for the first job
    assert order == ["caller", "first", "second"]


def test_without_background_a_job_runs_at_once():
    order = []
    with threads.one_behind(False) as submit:
        submit(lambda: order.append("job"))
        order.append("caller")
    assert order == ["job", "caller"]


def test_a_jobs_error_reaches_the_caller():
    def fails() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        with threads.one_behind(True) as submit:
            submit(fails)
            submit(lambda: None)  # raises the first job's error
    with pytest.raises(OSError, match="disk full"):
        with threads.one_behind(True) as submit:
            submit(fails)  # the last job: raised on leaving the block


def test_the_callers_error_waits_for_the_job_in_flight(caplog):
    done = threading.Event()

    def job() -> None:
        threading.Event().wait(0.2)
        done.set()

    with pytest.raises(KeyboardInterrupt):
        with threads.one_behind(True) as submit:
            submit(job)
            raise KeyboardInterrupt
    assert done.is_set()  # finished, and kept, before the interruption went on


@pytest.mark.slow
def test_visualizations_stored_behind_the_next_call_are_the_same(tmp_path, images, monkeypatch):  # noqa: F811
    def site_images(folder):
        (tmp_path / folder).mkdir()
        summary = build(load_config(make_project(tmp_path / folder, images, steps=4)), BuildOptions(progress=False))
        assert summary.computed["featvis"] == 6
        site = tmp_path / folder / "site"
        return {p.relative_to(site): p.read_bytes() for p in site.rglob("*.png")}

    inline = site_images("inline")
    real, forced = threads.one_behind, []
    monkeypatch.setattr(threads, "one_behind", lambda _background: forced.append(True) or real(True))
    monkeypatch.setattr("atlasgen.stages.featvis.CHUNK", 1)  # a call per channel: each stored behind the next
    behind = site_images("behind")
    assert forced and behind == inline
    assert sum("diversity" in path.name for path in behind) == 12  # 6 units x 2, every unit stored whole
    again = build(load_config(tmp_path / "behind" / "atlas.toml"), BuildOptions(progress=False))
    assert again.computed["featvis"] == 0
