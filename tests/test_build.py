"""The whole build, end to end, on a small slice of the demo model: pages and data are
written, a second build computes nothing, a changed setting recomputes only what it affects."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from atlasgen.build import BuildOptions, build
from atlasgen.cli import main
from atlasgen.config import load_config
from atlasgen.demo import write_demo_dataset

pytestmark = pytest.mark.slow

CONFIG = """
[site]
title = "test atlas"
authors = ["Doe, Jane"]
[build]
device = "cpu"
[visualize]
objectives = ["channel", "negative", "neuron", "diversity"]
diversity = 2
size = 32
steps = {steps}
[examples]
top_k = {top_k}
bottom_k = 2
patch_size = 32
[[models]]
name = "demo"
arch = "demo"
layers = ["conv1", "conv3"]
channels = "0:3"
dataset = "images"
"""


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_demo_dataset(tmp_path_factory.mktemp("data") / "images", count=40, seed=7)


def make_project(tmp_path: Path, images: Path, steps: int = 8, top_k: int = 3) -> Path:
    (tmp_path / "images").unlink(missing_ok=True)
    (tmp_path / "images").symlink_to(images, target_is_directory=True)
    path = tmp_path / "atlas.toml"
    path.write_text(CONFIG.format(steps=steps, top_k=top_k))
    return path


def quiet() -> BuildOptions:
    return BuildOptions(progress=False)


def test_build_then_rebuild_then_change(tmp_path, images):
    config_path = make_project(tmp_path, images)
    first = build(load_config(config_path), quiet())
    assert first.computed == {"featvis": 6, "dataset": 2, "similarity": 2, "histogram": 2, "image_mean": 2, "receptive": 1,
                              "filters": 1}
    site = tmp_path / "site"
    for page in ["index.html", "demo/index.html", "demo/conv1/index.html", "demo/conv3/index.html",
                 "demo/conv1/0/index.html", "demo/conv3/2/index.html", "404.html"]:
        assert (site / page).is_file(), page
    data = json.loads((site / "demo/conv1/index.json").read_text())
    units = data["units"] if isinstance(data, dict) else data
    assert [u["channel"] for u in units] == [0, 1, 2]
    unit = units[0]
    assert len(unit["examples"]["top"]) == 3 and len(unit["examples"]["bottom"]) == 2
    example = unit["examples"]["top"][0]
    assert example["source"].endswith(".png") and len(example["box"]) == 4
    assert (images / example["source"]).is_file()
    assert len(unit["similar"]) >= 1
    for image in _image_paths(unit):
        assert (site / "demo/conv1" / image).is_file(), image

    second = build(load_config(config_path), quiet())
    assert sum(second.computed.values()) == 0
    assert second.cached == {"featvis": 6, "dataset": 2, "similarity": 2, "histogram": 2, "image_mean": 2, "receptive": 1,
                             "filters": 1}
    assert json.loads((site / "demo/conv1/index.json").read_text()) == data

    # Only the visualizations depend on the number of steps; only the examples on top_k.
    make_project(tmp_path, images, steps=10)
    third = build(load_config(config_path), quiet())
    assert third.computed == {"featvis": 6}
    make_project(tmp_path, images, steps=10, top_k=4)
    fourth = build(load_config(config_path), quiet())
    assert fourth.computed == {"dataset": 2}


def _image_paths(unit: dict) -> list[str]:
    found = []

    def walk(value):
        if isinstance(value, str) and value.endswith((".png", ".webp", ".jpg")) and not value.startswith(("/", "http")):
            found.append(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                if key != "source":
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(unit)
    return found


def test_cli_dry_run_explains_and_bad_config_is_one_message(tmp_path, images):
    config_path = make_project(tmp_path, images)
    runner = CliRunner()
    result = runner.invoke(main, ["build", "--config", str(config_path), "--dry-run", "-q"])
    assert result.exit_code == 0, result.output
    assert "would compute featvis:demo/conv1/0  (not computed before)" in result.output
    assert not (tmp_path / "site").exists()

    bad = tmp_path / "bad.toml"
    bad.write_text('[[models]]\nname = "demo"\narch = "demo"\nlayers = ["conv9"]\ndataset = "images"\n[examples]\ntop = 3\n')
    result = runner.invoke(main, ["build", "--config", str(bad)])
    assert result.exit_code == 1
    assert "examples.top: unknown key; did you mean 'top_k'?" in result.output
    assert "a second round of problems may follow" in result.output  # conv9 is found only once the model loads
    assert "Traceback" not in result.output
    result = runner.invoke(main, ["build", "--config", str(tmp_path / "missing.toml")])
    assert result.exit_code == 1 and "not found" in result.output


def test_unknown_layer_is_reported_before_any_work(tmp_path, images):
    make_project(tmp_path, images)
    bad = tmp_path / "atlas.toml"
    bad.write_text(bad.read_text().replace('layers = ["conv1", "conv3"]', 'layers = ["conv1", "conv9"]'))
    result = CliRunner().invoke(main, ["build", "--config", str(bad)])
    assert result.exit_code == 1
    assert "models[0].layers[1]: no layer matches 'conv9'; layers: conv1, conv2, conv3, conv4 (" in result.output
    assert not (tmp_path / ".atlas-cache" / "featvis").exists()


def test_built_demo_site_passes_browser_checks(tmp_path, images):
    """The real build output (not a fixture) in Chromium from file:// and http, the Nu HTML
    Checker, axe-core and the link check; screenshots kept in artifacts/ for CI."""
    import shutil
    import subprocess

    if shutil.which("bash") is None or shutil.which("node") is None:
        pytest.skip("BROWSER CHECKS SKIPPED: bash or node is not installed")
    config_path = make_project(tmp_path, images)
    config_path.write_text(config_path.read_text().replace('[site]\n', '[site]\nurl = "https://example.org/atlas/"\n'))
    build(load_config(config_path), quiet())
    root = Path(__file__).resolve().parent.parent
    artifacts = root / "artifacts" / "demo-site"
    run = subprocess.run(["bash", str(root / ".ci" / "site-checks.sh"), str(tmp_path / "site"), str(artifacts)],
                         capture_output=True, text=True, timeout=900)
    output = run.stdout + run.stderr
    if run.returncode == 0 and "BROWSER CHECKS SKIPPED" in output:
        pytest.skip(next(line for line in output.splitlines() if "BROWSER CHECKS SKIPPED" in line))
    assert run.returncode == 0, output[-4000:]
    assert "site checks passed" in output
    assert (artifacts / "layer-light.png").stat().st_size > 1000


def test_only_computes_one_layer_and_keeps_the_rest_of_the_site(tmp_path, images):
    config_path = make_project(tmp_path, images)
    first = build(load_config(config_path), BuildOptions(progress=False, only="demo/conv1"))
    assert first.computed == {"featvis": 3, "dataset": 1, "similarity": 1, "histogram": 1, "image_mean": 1, "receptive": 1,
                              "filters": 1}
    site = tmp_path / "site"
    assert (site / "demo/conv1/0/index.html").is_file()
    assert (site / "demo/conv3/index.html").is_file()  # listed, waiting for its units
    rest = build(load_config(config_path), quiet())
    assert rest.computed == {"featvis": 3, "dataset": 1, "similarity": 1, "histogram": 1, "image_mean": 1}
    # --force --only recomputes conv1 and reuses conv3's cached results for the site: counted as such
    forced = build(load_config(config_path), BuildOptions(progress=False, only="demo/conv1", force=True))
    assert forced.computed == {"featvis": 3, "dataset": 1, "similarity": 1, "histogram": 1, "image_mean": 1, "receptive": 1,
                               "filters": 1}
    assert forced.cached == {"featvis": 3, "dataset": 1, "similarity": 1, "histogram": 1, "image_mean": 1}
    dry = CliRunner().invoke(main, ["build", "-c", str(config_path), "--force", "--only", "demo/conv1", "--dry-run"])
    assert "9 units to compute, 7 from the cache" in dry.output, dry.output
    with pytest.raises(Exception, match="has no selected layer 'conv2'; layers: conv1, conv3"):
        build(load_config(config_path), BuildOptions(progress=False, only="demo/conv2"))


def test_a_changed_stage_set_invalidates_the_saved_plan(tmp_path, images, monkeypatch):
    """A plan saved by a version of atlasgen with other stages lacks their tasks: it must not match."""
    from atlasgen import stages
    from atlasgen.cache import Cache
    from atlasgen.plan import plan_key_for

    config = load_config(make_project(tmp_path, images))
    cache = Cache(config.site.cache)
    before = plan_key_for(config, cache)
    assert before is not None and plan_key_for(config, cache) == before
    monkeypatch.setattr(stages.get("histogram"), "version", 2)
    assert plan_key_for(config, cache) != before
