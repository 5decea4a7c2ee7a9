"""Scale and faults: a build killed mid-way resumes without redoing finished work and ends
with the same site; two torchrun ranks split the units exactly once and agree with one
process."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from atlasgen.atomic import HOST
from atlasgen.demo import write_demo_dataset

pytestmark = pytest.mark.slow

CONFIG = """
[build]
device = "cpu"
[visualize]
objectives = ["channel", "negative"]
size = 32
steps = {steps}
[examples]
top_k = 2
bottom_k = 1
patch_size = 24
[[models]]
name = "demo"
arch = "demo"
layers = ["conv1", "conv2"]
channels = "0:{channels}"
dataset = "{images}"
"""


def project(tmp_path: Path, images: Path, steps: int = 8, channels: int = 4) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "atlas.toml"
    path.write_text(CONFIG.format(images=images, steps=steps, channels=channels))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_demo_dataset(tmp_path_factory.mktemp("data") / "images", count=24, seed=3)


def run(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kwargs)


def site_data(site: Path) -> dict[str, object]:
    """Every index.json and every image file's bytes, by path."""
    found: dict[str, object] = {}
    for path in sorted(site.rglob("*")):
        rel = path.relative_to(site).as_posix()
        if path.name == "index.json":
            found[rel] = json.loads(path.read_text())
        elif path.suffix in (".png", ".webp", ".jpg"):
            found[rel] = path.read_bytes()
    return found


def _finished_entries(kind_folder: Path) -> list[Path]:
    """Whole cache entries (a folder being written has a dot name until it is renamed)."""
    return [p for p in kind_folder.glob("??/*") if not p.name.startswith(".")] if kind_folder.is_dir() else []


def computed_counts(stderr: str) -> int:
    total = 0
    for line in stderr.splitlines():
        if "computed:" in line:
            part = line.split("computed:", 1)[1].split(";", 1)[0]
            total += sum(int(word) for word in part.replace(",", " ").split() if word.isdigit())
    return total


def test_killed_build_resumes_and_matches(tmp_path, images):
    reference = project(tmp_path / "ref", images, steps=40, channels=8)
    done = run([sys.executable, "-m", "atlasgen", "build", "-c", str(reference)], tmp_path / "ref")
    assert done.returncode == 0, done.stderr

    config = project(tmp_path / "killed", images, steps=40, channels=8)
    proc = subprocess.Popen([sys.executable, "-m", "atlasgen", "build", "-c", str(config), "-q"], cwd=config.parent,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    featvis = config.parent / ".atlas-cache" / "featvis"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not _finished_entries(featvis):
        time.sleep(0.05)
    assert proc.poll() is None, "the build finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cache = config.parent / ".atlas-cache"
    finished = {kind: len(_finished_entries(cache / kind)) for kind in ("featvis", "dataset", "similarity", "histogram", "image_mean", "receptive", "filters")}
    assert 0 < finished["featvis"] < 16

    resumed = run([sys.executable, "-m", "atlasgen", "build", "-c", str(config)], config.parent)
    assert resumed.returncode == 0, resumed.stderr
    # Only what had not finished is computed again.
    assert computed_counts(resumed.stderr) == (16 - finished["featvis"]) + (2 - finished["dataset"]) + (2 - finished["similarity"]) + (2 - finished["histogram"]) + (2 - finished["image_mean"]) + (1 - finished["receptive"]) + (1 - finished["filters"])
    assert site_data(config.parent / "site") == site_data(tmp_path / "ref" / "site")


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_two_ranks_compute_each_unit_once_and_agree(tmp_path, images):
    single = project(tmp_path / "one", images)
    one = run([sys.executable, "-m", "atlasgen", "build", "-c", str(single)], single.parent)
    assert one.returncode == 0, one.stderr
    assert computed_counts(one.stderr) == 8 + 2 + 2 + 2 + 2 + 1 + 1

    double = project(tmp_path / "two", images)
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    two = run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "atlasgen", "build", "-c", str(double)], double.parent)
    assert two.returncode == 0, two.stderr + two.stdout
    assert computed_counts(two.stderr + two.stdout) == 8 + 2 + 2 + 2 + 2 + 1 + 1  # each unit exactly once across the ranks
    assert site_data(double.parent / "site") == site_data(single.parent / "site")


def test_shards_split_the_work_and_a_final_build_renders(tmp_path, images):
    config = project(tmp_path, images)
    counts = []
    for share in ("0/2", "1/2"):
        result = run([sys.executable, "-m", "atlasgen", "build", "-c", str(config), "--shard", share], tmp_path)
        assert result.returncode == 0, result.stderr
        counts.append(computed_counts(result.stderr))
    # The receptive fields are counted once, or not at all when the shard that does not own them
    # needs them first (for its examples) and computes them uncounted (Run.ensure): which shard owns
    # them depends on the sorted order of every stage's tasks.
    assert sum(counts) in (8 + 2 + 2 + 2 + 2 + 1 + 1, 8 + 2 + 2 + 2 + 2 + 1) and all(counts)
    final = run([sys.executable, "-m", "atlasgen", "build", "-c", str(config)], tmp_path)
    assert final.returncode == 0 and computed_counts(final.stderr) == 0
    assert (tmp_path / "site" / "demo" / "conv2" / "index.json").is_file()


def test_two_builds_at_once_share_the_cache_safely(tmp_path, images):
    config = project(tmp_path, images)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "atlasgen", "build", "-c", str(config), "-q", "-o", str(tmp_path / f"site{i}")],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    assert site_data(tmp_path / "site0") == site_data(tmp_path / "site1")
    check = run([sys.executable, "-m", "atlasgen", "build", "-c", str(config), "--dry-run"], tmp_path)
    assert "nothing to compute" in check.stdout  # every entry whole and verified
    leftovers = [p for p in (tmp_path / ".atlas-cache").rglob("*") if ".tmp-" in p.name]
    assert leftovers == []


def test_clean_removes_only_unused_entries(tmp_path, images):
    config = project(tmp_path, images, channels=4)
    assert run([sys.executable, "-m", "atlasgen", "build", "-c", str(config)], tmp_path).returncode == 0
    user_file = tmp_path / ".atlas-cache" / "my-notes.txt"
    user_file.write_text("mine")
    project(tmp_path, images, channels=2)  # channels 2 and 3 of both layers are no longer used
    result = run([sys.executable, "-m", "atlasgen", "clean", "-c", str(config)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "unused cache entries" in result.stderr
    assert len(_finished_entries(tmp_path / ".atlas-cache" / "featvis")) == 4  # channels 0 and 1 of two layers
    assert user_file.read_text() == "mine"
    again = run([sys.executable, "-m", "atlasgen", "build", "-c", str(config), "--dry-run"], tmp_path)
    assert "nothing to compute" in again.stdout


def test_ctrl_c_stops_between_units_and_says_how_to_resume(tmp_path, images):
    config = project(tmp_path, images, steps=40, channels=8)
    config.write_text(config.read_text().replace('layers = ["conv1", "conv2"]', 'layers = ["conv1", "conv2", "conv3"]'))
    proc = subprocess.Popen([sys.executable, "-m", "atlasgen", "build", "-c", str(config), "-q"], cwd=tmp_path,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    featvis = tmp_path / ".atlas-cache" / "featvis"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not _finished_entries(featvis):
        time.sleep(0.05)
    assert proc.poll() is None, "the build finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "stopping after the units in progress" in err
    assert "run the same command again to resume" in err
    assert "Traceback" not in err
    done = _finished_entries(featvis)
    assert len(done) in (8, 16)  # whole layers (one chunk each): the one running when Ctrl-C came was finished
    resumed = run([sys.executable, "-m", "atlasgen", "build", "-c", str(config)], tmp_path)
    assert resumed.returncode == 0
    assert computed_counts(resumed.stderr) == 24 - len(done)  # the dataset tasks finished before the first Ctrl-C


STRESS = """
[build]
device = "cpu"
[visualize]
objectives = ["channel"]
size = 16
steps = 2
[examples]
top_k = 1
bottom_k = 1
patch_size = 16
[[models]]
name = "demo"
arch = "demo"
layers = ["conv1"]
channels = "0:2"
dataset = "demo"
"""


def concurrent_builds(tmp_path: Path, n: int) -> list[Path]:
    """`n` builds started together on one fresh cache (the generated demo dataset included),
    each into its own site; every one must succeed."""
    config = tmp_path / "atlas.toml"
    config.write_text(STRESS)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sites = [tmp_path / f"site{i}" for i in range(n)]
    procs = [subprocess.Popen([sys.executable, "-m", "atlasgen", "build", "-c", str(config), "-q", "-o", str(site)],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for site in sites]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    return sites


def test_four_builds_at_once_on_a_fresh_cache_all_succeed_alike(tmp_path):
    sites = concurrent_builds(tmp_path, 4)
    first = site_data(sites[0])
    assert first and all(site_data(site) == first for site in sites[1:])
    temporaries = [p for p in tmp_path.rglob("*") if ".tmp-" in p.name or ".old-" in p.name or ".trash-" in p.name]
    assert temporaries == []
    check = run([sys.executable, "-m", "atlasgen", "build", "-c", str(tmp_path / "atlas.toml"), "--dry-run"], tmp_path)
    assert "nothing to compute" in check.stdout


def test_a_killed_builds_leftovers_are_removed_by_clean(tmp_path, images):
    config = project(tmp_path, images, steps=60, channels=8)
    proc = subprocess.Popen([sys.executable, "-m", "atlasgen", "build", "-c", str(config), "-q"], cwd=tmp_path,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    cache = tmp_path / ".atlas-cache"
    deadline = time.time() + 120
    while time.time() < deadline and not _finished_entries(cache / "featvis"):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # what a kill in the middle of writing an entry leaves (the kill above may or may not have hit one)
    (cache / "featvis" / "ab" / f".abababab.tmp-{proc.pid}@{HOST}-0123abcd").mkdir(parents=True)
    result = run([sys.executable, "-m", "atlasgen", "clean", "-c", str(config)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert [p for p in cache.rglob("*") if ".tmp-" in p.name] == []
