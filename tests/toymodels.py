"""Tiny models and generated image folders with known answers, shared by the tests.

Receptive fields (size, stride, offset) by hand, with the DeepVis recurrence
size += (k - 1) * stride, offset -= pad * stride, stride *= s:
  PlainNet   conv1 3/1/-1, pool 4/2/-1, conv2 8/2/-3
  BranchNet  stem 3/1/-1, mix 7/1/-3 (widest branch: the 5x5), res 9/1/-4, down 11/2/-5
  DetectorNet detect 5/1/-2, relu 5/1/-2
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from atlasgen.settings import Preprocess


def seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-initialize every parameter from a seeded generator, in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return model.eval()


class PlainNet(nn.Module):
    """conv -> relu -> maxpool -> conv -> relu. Layers: conv1 (signed), pool, conv2, relu2."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(self.conv2(self.pool(self.relu1(self.conv1(x)))))


class Branches(nn.Module):
    """Inception-like: 1x1, 3x3, 5x5 and pool->1x1 branches, concatenated."""

    def __init__(self, channels: int):
        super().__init__()
        self.b1 = nn.Conv2d(channels, 2, 1)
        self.b3 = nn.Conv2d(channels, 3, 3, padding=1)
        self.b5 = nn.Conv2d(channels, 2, 5, padding=2)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
        self.bp = nn.Conv2d(channels, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(self.pool(x))], dim=1)


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)) + x)


class BranchNet(nn.Module):
    """stem -> concatenated branches (mix, 9 channels) -> residual block (res) -> strided conv (down)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.mix = Branches(4)
        self.res = Residual(9)
        self.down = nn.Conv2d(9, 5, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.res(self.mix(torch.relu(self.stem(x)))))


class DetectorNet(nn.Module):
    """Channels with known meaning, on raw [0, 1] RGB averaged over a 5x5 window:
    0 = redness R - (G + B) / 2, 1 = vertical edge (right half brighter than left),
    2 = an exact copy of channel 0 (correlation 1). Layers: detect (signed), relu."""

    def __init__(self, preprocess: Preprocess = Preprocess()):
        super().__init__()
        self.detect = nn.Conv2d(3, 3, 5, padding=2)
        self.relu = nn.ReLU()
        raw = torch.zeros(3, 3, 5, 5)
        raw[0, 0], raw[0, 1], raw[0, 2] = 1.0, -0.5, -0.5
        grey = torch.zeros(5, 5)
        grey[:, :2], grey[:, 3:] = -1.0, 1.0
        raw[1, :] = grey / 3.0
        raw[0] /= 25.0
        raw[1] /= 10.0
        raw[2] = raw[0]
        # The conv sees (x - mean) / std: fold the normalization back so the channels act on raw RGB.
        mean = torch.tensor(preprocess.mean).view(1, 3, 1, 1)
        std = torch.tensor(preprocess.std).view(1, 3, 1, 1)
        with torch.no_grad():
            self.detect.weight.copy_(raw * std)
            self.detect.bias.copy_((raw * mean).sum(dim=(1, 2, 3)))
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.detect(x))


# --- generated image folders -------------------------------------------------------------


def noise_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth-ish random colours: blocky noise, so channels have structure to find."""
    coarse = rng.integers(0, 256, size=(height // 4 + 1, width // 4 + 1, 3))
    return np.kron(coarse, np.ones((4, 4, 1)))[:height, :width].astype(np.uint8)


def write_dataset(folder: Path, count: int = 40, size: int = 32, seed: int = 0) -> list[str]:
    """`count` noise PNGs (every 5th one 40 px wide, so centre-cropping is exercised) in two
    subfolders, plus a greyscale PNG, an RGBA PNG and a truncated PNG ("broken.png").
    Returns the readable files' relative names in dataset order."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        width = size + 8 if i % 5 == 0 else size
        path = folder / ("a" if i % 2 else "b") / f"img{i:03d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(noise_image(rng, size, width)).save(path)
    Image.fromarray(noise_image(rng, size, size)[:, :, 0], mode="L").save(folder / "grey.png")
    rgba = np.concatenate([noise_image(rng, size, size), rng.integers(0, 256, (size, size, 1), dtype=np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(folder / "rgba.png")
    Image.fromarray(noise_image(rng, size, size)).save(folder / "broken.png")
    data = (folder / "broken.png").read_bytes()
    (folder / "broken.png").write_bytes(data[: len(data) // 2])
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    return [n for n in names if n != "broken.png"]
