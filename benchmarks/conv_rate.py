"""The arithmetic ceiling of a feature-visualization step on this CPU: each convolution a GoogLeNet
step runs, timed alone (forward, and backward to its input only, as in the step), against the bf16
matmul peak measured in the same run.

The step's own rate (benchmarks/featvis_vs_lucent.py) cannot exceed what its convolutions reach
by themselves; this prints that, layer shape by layer shape, and the FLOP-weighted whole.

    python benchmarks/conv_rate.py --layer inception3a --size 128 --batch 32
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from atlasgen.featvis.polyphase import polyphase_convolutions  # noqa: E402
from atlasgen.hooks import forward_layers  # noqa: E402


def best_seconds(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bf16_peak(n: int = 2048, repeats: int = 5) -> float:
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=generator).bfloat16() for _ in range(2))
    return 2 * n**3 / best_seconds(lambda: a @ b, repeats) / 1e9


def convolutions(layer: str, size: int, batch: int) -> list[tuple[torch.nn.Conv2d, tuple[int, ...]]]:
    """The model's convolutions that run up to `layer`, each with the input shape it sees."""
    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).eval().requires_grad_(False)
    seen: list[tuple[torch.nn.Conv2d, tuple[int, ...]]] = []
    hooks = [m.register_forward_hook(lambda m, a, o: seen.append((m, tuple(a[0].shape))))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        forward_layers(model, torch.rand(batch, 3, size, size), [layer])
    for hook in hooks:
        hook.remove()
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default="inception3a")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    peak = bf16_peak()
    print("| convolution (input shape, weight shape, stride) | GFLOP | forward GFLOP/s | input backward GFLOP/s |")
    print("|---|---|---|---|")
    total_flop = total_s = 0.0
    for conv, shape in convolutions(args.layer, args.size, args.batch):
        w = conv.weight.detach().bfloat16().contiguous(memory_format=torch.channels_last)
        x = torch.rand(shape).bfloat16().contiguous(memory_format=torch.channels_last).requires_grad_(True)
        out_shape = F.conv2d(x.detach(), w, None, conv.stride, conv.padding).shape
        flop = 2 * out_shape.numel() * w[0].numel()
        grad = torch.rand(out_shape).bfloat16().contiguous(memory_format=torch.channels_last)
        forward = best_seconds(lambda: F.conv2d(x.detach(), w, None, conv.stride, conv.padding), args.repeats)
        with polyphase_convolutions(conv, torch.device("cpu")):  # what a visualization runs on CPU
            out = _bf16_conv(conv, w, x)
            backward = best_seconds(lambda: torch.autograd.grad(out, x, grad, retain_graph=True), args.repeats)
        total_flop += 2 * flop
        total_s += forward + backward
        print(f"| {list(shape)}, {list(w.shape)}, {conv.stride[0]} | {flop / 1e9:.2f} | {flop / forward / 1e9:.0f} "
              f"| {flop / backward / 1e9:.0f} |")
    rate = total_flop / total_s / 1e9
    peak = max(peak, bf16_peak())  # before and after: the first is sometimes taken at a lower clock
    print(f"\nbf16 matmul peak (best of before and after) {peak:.0f} GFLOP/s, load {os.getloadavg()[0]:.1f}")
    print(f"all {args.layer} convolutions, forward + input backward: {rate:.0f} GFLOP/s = {rate / peak:.0%} of the bf16 peak")


def _bf16_conv(conv: torch.nn.Conv2d, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The rewritten convolution with the benchmark's bf16 weight in place of the module's."""
    saved = conv.weight
    conv.weight = torch.nn.Parameter(w, requires_grad=False)
    try:
        return conv(x)
    finally:
        conv.weight = saved


if __name__ == "__main__":
    main()
