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
    while time.time() < deadline and proc.poll() is None:
        if featvis.is_dir() and len(list(featvis.glob("??/*"))) >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the build finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cache = config.parent / ".atlas-cache"
    finished = {kind: len([p for p in (cache / kind).glob("??/*") if not p.name.startswith(".")]) for kind in ("featvis", "dataset")}
    assert 0 < finished["featvis"] < 16

    resumed = run([sys.executable, "-m", "atlasgen", "build", "-c", str(config)], config.parent)
    assert resumed.returncode == 0, resumed.stderr
    # Only what had not finished is computed again.
    assert computed_counts(resumed.stderr) == (16 - finished["featvis"]) + (2 - finished["dataset"])
    assert site_data(config.parent / "site") == site_data(tmp_path / "ref" / "site")


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_two_ranks_compute_each_unit_once_and_agree(tmp_path, images):
    single = project(tmp_path / "one", images)
    one = run([sys.executable, "-m", "atlasgen", "build", "-c", str(single)], single.parent)
    assert one.returncode == 0, one.stderr
    assert computed_counts(one.stderr) == 8 + 2

    double = project(tmp_path / "two", images)
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    two = run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "atlasgen", "build", "-c", str(double)], double.parent)
    assert two.returncode == 0, two.stderr + two.stdout
    assert computed_counts(two.stderr + two.stdout) == 8 + 2  # each unit exactly once across the ranks
    assert site_data(double.parent / "site") == site_data(single.parent / "site")
