"""The model zoo of the tests: small members of every family researchers bring, built from
torchvision's and timm's own classes (tiny configurations where the default is large), and
the brute-force receptive field every computed one is checked against."""

from __future__ import annotations

import copy

import torch
from torch import nn

from atlasgen.hooks import declare_layouts, forward_layers

# Factories for a "file.py:function" arch: the families' own classes at test sizes.
FACTORIES = '''
import torch
from torch import nn
from torchvision.models.vgg import make_layers
from torchvision.models.vision_transformer import VisionTransformer
from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2


class TinyVGG(nn.Module):
    """torchvision's VGG layout (one flat `features` Sequential, avgpool, classifier) at test
    size; torchvision's VGG class always builds a 102M-parameter classifier."""

    def __init__(self):
        super().__init__()
        self.features = make_layers([8, "M", 16, "M", 16, 16, "M", 32, 32, "M"])
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(nn.Linear(32 * 4, 16), nn.ReLU(True), nn.Dropout(), nn.Linear(16, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg():
    torch.manual_seed(0)
    return TinyVGG()


def vit():
    torch.manual_seed(0)
    return VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=10)


def swin():
    torch.manual_seed(0)
    return SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4],
                           num_classes=10)


def swin_v2():  # position bias from an MLP over a coordinate table
    torch.manual_seed(0)
    return SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4],
                           num_classes=10, block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2)
'''


def _cut_se_gates(model: nn.Module) -> None:
    """Squeeze-and-excitation's global pooling is a gate, not part of a unit's field: cut its
    gradient path (torchvision's SqueezeExcitation and timm's SE modules pool in `avgpool`/`fc1`)."""
    for module in model.modules():
        if type(module).__name__ in ("SqueezeExcitation", "SEModule", "EffectiveSEModule"):
            first = getattr(module, "avgpool", None) or getattr(module, "fc1", None)
            if first is not None:
                first.register_forward_hook(lambda _m, _i, out: out.detach())


def brute_force_boxes(model: nn.Module, layers: dict[str, str], size: int) -> dict[str, tuple[int, ...]]:
    """For each layer (name -> layout), the input pixels whose gradient is non-zero for its centre
    unit, on a random input, in float64: (top, left, bottom, right, row, col). Channels are
    weighted by random positive numbers (a plain sum of a layer-normalized output is constant)."""
    twin = copy.deepcopy(model).double().eval()
    declare_layouts(twin, layers)
    _cut_se_gates(twin)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, size, size, dtype=torch.float64, generator=generator).requires_grad_(True)
    boxes = {}
    with torch.enable_grad():
        outputs = forward_layers(twin, x, list(layers))
        for i, (name, out) in enumerate(outputs.items()):
            row, col = out.shape[2] // 2, out.shape[3] // 2
            weights = torch.rand(out.shape[1], dtype=torch.float64, generator=generator) + 0.5
            (grad,) = torch.autograd.grad((out[0, :, row, col] * weights).sum(), x, retain_graph=i < len(outputs) - 1)
            mask = grad[0].abs().amax(dim=0) > 0
            rows = torch.nonzero(mask.any(dim=1)).flatten()
            cols = torch.nonzero(mask.any(dim=0)).flatten()
            boxes[name] = (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1, row, col)
    return boxes
