"""DemoNet: the compact CNN of the built-in demo, and its shipped weights.

Top-level named children (conv1 ... conv4) so atlasgen's layer discovery offers the conv blocks.
A block is convolution + batch norm and its ReLU is a sibling (relu1 ...), so the atlas shows
pre-activations, as Distill's appendix does ("pre_relu"): the negative objective and the
bottom-k examples then mean something instead of being ties at zero."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from atlasgen.demo.data import CLASSES
from atlasgen.errors import AtlasError

DEMO_INPUT_SIZE = 64
# Per-channel mean and std of the generated images in [0, 1] (measured on 10,000 images, seed 0).
DEMO_MEAN: tuple[float, float, float] = (0.466, 0.464, 0.465)
DEMO_STD: tuple[float, float, float] = (0.228, 0.227, 0.229)
DEMO_WIDTHS: tuple[int, int, int, int] = (16, 32, 64, 128)
WEIGHTS_PATH = Path(__file__).parent / "weights.pt"
INIT_SEED = 0


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution and batch norm; padding keeps the spatial size."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class DemoNet(nn.Module):
    """Four conv blocks with 2x2 max pooling between them, global average pooling, linear classifier."""

    def __init__(self, num_classes: int = len(CLASSES), widths: tuple[int, int, int, int] = DEMO_WIDTHS):
        super().__init__()
        c1, c2, c3, c4 = widths
        self.conv1 = conv_block(3, c1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = conv_block(c1, c2)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = conv_block(c2, c3)
        self.relu3 = nn.ReLU()
        self.pool3 = nn.MaxPool2d(2)
        self.conv4 = conv_block(c3, c4)
        self.relu4 = nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c4, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.pool3(self.relu3(self.conv3(x)))
        return self.head(self.relu4(self.conv4(x)))


def seeded_demo_net(seed: int = INIT_SEED) -> DemoNet:
    """A freshly initialized DemoNet; the global torch RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DemoNet()


def build_demo_model(pretrained: bool = True) -> DemoNet:
    """DemoNet in eval mode, with the shipped weights or (pretrained=False) seeded random ones."""
    model = seeded_demo_net()
    if pretrained:
        if not WEIGHTS_PATH.is_file():
            raise AtlasError(
                f"the demo weights {WEIGHTS_PATH} are missing; reinstall atlasgen or run "
                f"`atlasgen train-demo --output {WEIGHTS_PATH}`"
            )
        load_weights(model, WEIGHTS_PATH)
    return model.eval()


def load_weights(model: DemoNet, path: Path) -> None:
    """Load a state_dict saved by `atlasgen train-demo` into `model`; a bad file is a user error."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, AttributeError, TypeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise AtlasError(
            f"{path} does not hold DemoNet weights ({reason}); retrain them with `atlasgen train-demo`"
        ) from error
