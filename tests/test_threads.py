"""Work finished on a writer thread while the caller computes on (`threads.later`): the feature
visualization stores a call's images during the next call, and the dataset examples are drawn
during the feature visualization, as a build does on a GPU."""

from __future__ import annotations

import threading

import pytest

from atlasgen import threads
from atlasgen.build import BuildOptions, build
from atlasgen.config import load_config

from tests.test_build import images, make_project  # noqa: F401 (a fixture)


def test_the_caller_goes_on_while_jobs_run_in_order():
    started, release, order = threading.Event(), threading.Event(), []

    def slow() -> None:
        started.set()
        release.wait(5)
        order.append("first")

    with threads.later(True) as jobs:
        jobs.submit(slow)
        jobs.submit(lambda: order.append("second"))
        assert started.wait(5)
        order.append("caller")  # the first job still waits for `release`
        assert jobs.pending == 2 and jobs.given
        release.set()
        jobs.wait()
        assert not jobs.given
    assert order == ["caller", "first", "second"]


def test_without_background_a_job_runs_at_once():
    order = []
    with threads.later(False) as jobs:
        jobs.submit(lambda: order.append("job"))
        order.append("caller")
        assert not jobs.given
    assert order == ["job", "caller"]


def test_a_jobs_error_reaches_the_caller():
    def fails() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        with threads.later(True) as jobs:
            jobs.submit(fails)
            jobs.wait()
    with pytest.raises(OSError, match="disk full"):
        with threads.later(True) as jobs:
            jobs.submit(fails)  # not waited for: raised on leaving the block


def test_the_callers_error_waits_for_the_jobs_given(caplog):
    done = []

    def job() -> None:
        threading.Event().wait(0.2)
        done.append(True)

    with pytest.raises(KeyboardInterrupt):
        with threads.later(True) as jobs:
            jobs.submit(job)
            jobs.submit(job)
            raise KeyboardInterrupt
    assert done == [True, True]  # finished, and kept, before the interruption went on
    assert "finishing 2 result(s) in progress before stopping" in caplog.text


@pytest.mark.slow
def test_a_build_finishing_work_in_the_background_makes_the_same_site(tmp_path, images, monkeypatch):  # noqa: F811
    def site_files(folder):
        (tmp_path / folder).mkdir()
        summary = build(load_config(make_project(tmp_path / folder, images, steps=4)), BuildOptions(progress=False))
        assert summary.computed["featvis"] == 6 and summary.computed["dataset"] == 2
        site = tmp_path / folder / "site"
        return {p.relative_to(site): p.read_bytes() for p in site.rglob("*")
                if p.suffix in (".png", ".webp", ".json") and not p.name.startswith(".")}

    inline = site_files("inline")
    real, forced = threads.later, []
    monkeypatch.setattr(threads, "later", lambda _background: forced.append(True) or real(True))
    monkeypatch.setattr("atlasgen.stages.featvis.CHUNK", 1)  # a call per channel: each stored during the next
    behind = site_files("behind")
    assert len(forced) == 2  # the build's (dataset examples) and the feature visualization's
    assert behind == inline
    assert sum("diversity" in path.name for path in behind) == 12  # 6 units x 2, every unit stored whole
    assert any(path.name.startswith("top-") for path in behind)  # dataset examples, drawn in the background
    again = build(load_config(tmp_path / "behind" / "atlas.toml"), BuildOptions(progress=False))
    assert sum(again.computed.values()) == 0
