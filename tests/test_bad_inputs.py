"""Bad inputs: each gets one clear message and exit code 1, no traceback without -v,
and nothing outside the output and cache folders is touched."""

import hashlib
import urllib.error
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from atlasgen.cli import main
from atlasgen.demo import write_demo_dataset

HEAD = '[build]\ndevice = "cpu"\n[visualize]\nsize = 16\nsteps = 2\nobjectives = ["channel"]\n[examples]\ntop_k = 1\nbottom_k = 0\n'
DEMO = '[[models]]\nname = "demo"\narch = "demo"\nlayers = ["conv1"]\nchannels = "0:1"\ndataset = "images"\n'

FACTORY = '''
import torch
from torch import nn

def raises():
    raise RuntimeError("checkpoint server unreachable")

def tiny():
    return nn.Sequential(nn.Conv2d(3, 2, 3))

def deep():
    return nn.Sequential(nn.Conv2d(3, 4, 5), nn.Conv2d(4, 4, 5))
'''

CASES = [
    # (name, atlas.toml, expected fragments of the message)
    ("malformed toml", '[site]\ntitle = "x\n', ["not valid TOML", "line 2"]),
    ("wrong type", HEAD.replace("steps = 2", 'steps = "2"') + DEMO, ["visualize.steps: expected an integer, got a string '2'"]),
    ("unknown key", HEAD + DEMO + "wieghts = 'x'\n", ["models[0].wieghts: unknown key; did you mean 'weights'?"]),
    ("unknown torchvision model", HEAD + '[[models]]\nname = "r"\narch = "resnet5"\ndataset = "images"\n', ["models[0].arch: no torchvision model named 'resnet5'"]),
    ("unknown weights name", HEAD + '[[models]]\nname = "r"\narch = "resnet18"\nweights = "IMAGENET9K"\ndataset = "images"\n', ["models[0].weights: resnet18 has no weights named 'IMAGENET9K'", "known: DEFAULT, IMAGENET1K_V1"]),
    ("factory file missing", HEAD + '[[models]]\nname = "f"\narch = "nope.py:tiny"\ndataset = "images"\n', ["models[0].arch: factory file", "nope.py", "does not exist"]),
    ("factory raises", HEAD + '[[models]]\nname = "f"\narch = "nets.py:raises"\ndataset = "images"\n', ["models[0].arch: the factory raises() raised RuntimeError: checkpoint server unreachable"]),
    ("checkpoint mismatch", HEAD + DEMO + 'weights = "wrong.pt"\n', ["models[0].weights: wrong.pt does not match the architecture", "missing conv1.0.weight"]),
    ("layer glob matches nothing", HEAD + DEMO.replace('["conv1"]', '["conv9*"]'), ["models[0].layers[0]: no layer matches 'conv9*'; layers: conv1, conv2, conv3, conv4 (", "/atlas.toml"]),
    ("channel range out of bounds", HEAD + DEMO.replace('"0:1"', '"40:50"'), ["models[0].channels: range 40:50 starts past the last channel of conv1 (16 channels)"]),
    ("missing dataset", HEAD + DEMO.replace('dataset = "images"', 'dataset = "photos"'), ["models[0].dataset: dataset folder", "photos", "does not exist"]),
    ("empty dataset", HEAD + DEMO.replace('dataset = "images"', 'dataset = "empty"'), ["empty", "no images"]),
    ("input too small", HEAD + '[[models]]\nname = "f"\narch = "nets.py:deep"\ninput_size = 8\ndataset = "images"\n',
     ["models[0]: the model fails on a 8x8 input", "set input_size to a size the model accepts"]),
    ("output not writable", HEAD.replace("[build]", '[site]\noutput = "afile/site"\n[build]') + DEMO, ["afile", "not writable"]),
    ("site over its budget", HEAD.replace("[build]", "[site]\nbudget_mb = 0.001\n[build]") + DEMO,
     ["MB, over site.budget_mb = 0.001", 'visualizations = "jpeg"', "the site is written to"]),
    ("cuda not available", HEAD.replace('device = "cpu"', 'device = "cuda:3"') + DEMO, ["cuda:3", "not available", "device = \"cpu\""]),
]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_demo_dataset(tmp_path_factory.mktemp("data") / "images", count=8, seed=5)


def snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and ".atlas-cache" not in p.parts and "site" not in p.parts}


@pytest.mark.parametrize("name,toml,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_message(tmp_path, images, name, toml, expected):
    (tmp_path / "images").symlink_to(images, target_is_directory=True)
    (tmp_path / "empty").mkdir()
    (tmp_path / "nets.py").write_text(FACTORY)
    (tmp_path / "afile").write_text("a file where a folder is expected")
    torch.save({"layer.weight": torch.zeros(2)}, tmp_path / "wrong.pt")
    (tmp_path / "atlas.toml").write_text(toml)
    before = snapshot(tmp_path)
    result = CliRunner().invoke(main, ["build", "-c", str(tmp_path / "atlas.toml"), "-q"])
    assert result.exit_code == 1, result.output
    for fragment in expected:
        assert fragment in result.output, f"{fragment!r} not in {result.output!r}"
    assert "Traceback" not in result.output
    assert snapshot(tmp_path) == before


def test_verbose_shows_the_traceback(tmp_path, images):
    (tmp_path / "images").symlink_to(images, target_is_directory=True)
    (tmp_path / "atlas.toml").write_text(HEAD + DEMO.replace('"0:1"', '"40:50"'))
    result = CliRunner().invoke(main, ["build", "-c", str(tmp_path / "atlas.toml"), "-v"])
    assert result.exit_code == 1 and "Traceback" in result.output


def test_failed_weights_download_says_how_to_use_a_local_file(tmp_path, images, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    (tmp_path / "images").symlink_to(images, target_is_directory=True)
    (tmp_path / "atlas.toml").write_text(HEAD + '[[models]]\nname = "r"\narch = "resnet18"\nweights = "DEFAULT"\ndataset = "images"\n')
    result = CliRunner().invoke(main, ["build", "-c", str(tmp_path / "atlas.toml"), "-q"])
    assert result.exit_code == 1
    assert "models[0].weights: could not download resnet18 weights" in result.output
    assert 'weights = "path/to/file.pth"' in result.output


def test_unreadable_greyscale_and_rgba_images_are_handled(tmp_path, images):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i, path in enumerate(sorted(images.rglob("*.png"))[:4]):
        (folder / f"ok{i}.png").write_bytes(path.read_bytes())
    Image.new("L", (40, 30), 128).save(folder / "grey.png")
    Image.new("RGBA", (30, 40), (255, 0, 0, 128)).save(folder / "rgba.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    truncated = (folder / "ok0.png").read_bytes()
    (folder / "truncated.png").write_bytes(truncated[: len(truncated) // 2])
    (tmp_path / "atlas.toml").write_text(HEAD + DEMO.replace('dataset = "images"', 'dataset = "mixed"'))
    result = CliRunner().invoke(main, ["build", "-c", str(tmp_path / "atlas.toml")])
    assert result.exit_code == 0, result.output
    assert "skipped 2 unreadable images: broken.jpg, truncated.png" in result.output
