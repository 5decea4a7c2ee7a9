"""The image gradient through each kind of stem in torchvision's models: autograd (oneDNN's
transposed convolution) against atlasgen's polyphase rewrite (`atlasgen/featvis/polyphase.py`),
forced on every geometry here, side by side in one run. Best of 5, bf16 autocast, channels-last,
as in a visualization step on CPU. The rewrite's MIN_KERNEL_AREA comes from this table.

    python benchmarks/polyphase_stems.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from atlasgen.featvis import polyphase  # noqa: E402
from conv_rate import best_seconds  # noqa: E402  (benchmarks/ is on the path when run as a script)

STEMS = [  # in, out, kernel, stride, padding, image side, batch, where
    (3, 64, 7, 2, 3, 128, 32, "GoogLeNet, ResNet, DenseNet (atlasgen's 128 px default)"),
    (3, 64, 7, 2, 3, 224, 16, "GoogLeNet, ResNet, DenseNet"),
    (3, 64, 11, 4, 2, 224, 16, "AlexNet"),
    (3, 96, 4, 4, 0, 224, 16, "ConvNeXt, Swin"),
    (3, 768, 16, 16, 0, 224, 16, "ViT-B/16"),
    (3, 768, 32, 32, 0, 224, 16, "ViT-B/32"),
    (3, 32, 3, 2, 1, 224, 16, "EfficientNet, MobileNet, RegNet"),
    (3, 32, 3, 2, 0, 299, 16, "InceptionV3"),
]


def best_ms(fn, repeats: int = 5) -> float:
    return 1e3 * best_seconds(fn, repeats)


def main() -> None:
    torch.set_num_threads(os.cpu_count() or 1)
    polyphase.MIN_KERNEL_AREA = 0  # force the rewrite, to show where it does not pay
    print(f"load {os.getloadavg()[0]:.1f}\n")
    print("| stem | kernel / stride / padding | batch x side | forward ms | image gradient, autograd ms | polyphase ms | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for cin, cout, k, s, p, side, batch, where in STEMS:
        conv = nn.Conv2d(cin, cout, k, s, p, bias=False).requires_grad_(False)
        x = torch.rand(batch, cin, side, side).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(x)
            grad = torch.rand_like(out)
            autograd = best_ms(lambda: torch.autograd.grad(out, x, grad, retain_graph=True))
            with polyphase.polyphase_convolutions(conv, torch.device("cpu")):
                rewritten = conv(x)
                poly = best_ms(lambda: torch.autograd.grad(rewritten, x, grad, retain_graph=True))
            forward = best_ms(lambda: conv(x.detach()))
        print(f"| {where} | {k}x{k} / {s} / {p} | {batch} x {side} | {forward:.1f} | {autograd:.1f} | {poly:.1f} | {autograd / poly:.2f}x |")


if __name__ == "__main__":
    main()
