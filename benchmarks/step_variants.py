"""Ways of running the GPU step, side by side: image-steps per second of a batch of every
objective (511 images: 73 channels x 7), GoogLeNet with seeded random weights, BatchNorm folded,
cuDNN deterministic, one octave of --steps steps at each --sizes side, the variants alternating
over --rounds rounds after a warm-up each (fastest kept). Variants:

- base: the step as a visualization runs it without the two below;
- pool: every nn.MaxPool2d compiled by inductor (one-byte offsets instead of torch's int64
  indices; symbolic shapes), defined here;
- polyphase: the stem's image gradient by polyphase convolution (featvis/polyphase.py, CPU only
  by default);
- both.

Each variant's images are compared with base's (PSNR; the pool variant may send a tie's
gradient elsewhere, so the images can differ). --profile: torch profiler's table of one more
run of the last variant on the first layer at the last size.

    python3 benchmarks/step_variants.py --layers inception3a inception4c inception5b --sizes 64 128
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from atlasgen.featvis.batch import image_specs  # noqa: E402
from atlasgen.featvis.device import repeatable  # noqa: E402
from atlasgen.featvis.fold import folded_batchnorm  # noqa: E402
from atlasgen.featvis.optimize import optimize_batch  # noqa: E402
from atlasgen.featvis.polyphase import polyphase_convolutions  # noqa: E402
from atlasgen.hooks import eval_mode  # noqa: E402
from atlasgen.settings import Preprocess, VisSettings  # noqa: E402

VARIANTS = ("base", "pool", "polyphase", "both")


@functools.cache
def compiled_pool(kernel: int, stride: int, padding: int, ceil_mode: bool):  # noqa: ANN201
    def pool(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, kernel, stride, padding, 1, ceil_mode)

    return torch.compile(pool, dynamic=True, fullgraph=True)


@contextlib.contextmanager
def compiled_pooling(model: torch.nn.Module):  # noqa: ANN201
    pools = [m for m in model.modules() if type(m) is torch.nn.MaxPool2d]
    for m in pools:  # GoogLeNet's pools: square windows, no dilation, no indices
        m.forward = compiled_pool(m.kernel_size, m.stride, m.padding, m.ceil_mode)
    try:
        with torch._dynamo.config.patch(cache_size_limit=64):
            yield
    finally:
        for m in pools:
            del m.forward


def variant(name: str, model: torch.nn.Module, device: torch.device) -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    if name in ("pool", "both"):
        stack.enter_context(compiled_pooling(model))
    if name in ("polyphase", "both"):
        stack.enter_context(polyphase_convolutions(model, torch.device("cpu")))  # "cpu": the rewrite on any device
    return stack


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", nargs="+", default=["inception3a", "inception4c", "inception5b"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--batch", type=int, default=511)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).to(device).eval()
    for layer in args.layers:
        for size in args.sizes:
            settings = VisSettings(steps=args.steps, size=size, octaves=VisSettings().octaves[-1:])
            specs = image_specs(range(args.batch // 7), settings)
            probe = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
            rates: dict[str, float] = {}
            images: dict[str, torch.Tensor] = {}
            with eval_mode(model, frozen=True), repeatable(device), folded_batchnorm(model, layer, probe):
                for name in args.variants:  # warm-up: compilation, cuDNN plans, the allocator
                    with variant(name, model, device):
                        began = time.perf_counter()
                        images[name] = optimize_batch(model, layer, specs, settings, Preprocess(), device)
                        sync()
                        print(f"   {layer} {size} px {name}: first run {time.perf_counter() - began:.1f} s", flush=True)
                for _ in range(args.rounds):
                    for name in args.variants:
                        with variant(name, model, device):
                            sync()
                            began = time.perf_counter()
                            optimize_batch(model, layer, specs, settings, Preprocess(), device)
                            sync()
                            rate = len(specs) * settings.steps / (time.perf_counter() - began)
                            rates[name] = max(rates.get(name, 0.0), rate)
                if args.profile and layer == args.layers[0] and size == args.sizes[-1]:
                    from torch.profiler import ProfilerActivity, profile

                    with variant(args.variants[-1], model, device), \
                            profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                        optimize_batch(model, layer, specs, settings, Preprocess(), device)
                        sync()
            base = args.variants[0]
            print(f"googlenet {layer:<12} {size:>3} px, {len(specs)} images, {settings.steps} steps: "
                  + "; ".join(f"{name} {rates[name]:7.0f} image-steps/s ({rates[name] / rates[base]:.2f}x"
                              + (f", {psnr(images[name], images[base]):.1f} dB" if name != base else "") + ")"
                              for name in args.variants), flush=True)
    if args.profile:
        print(prof.key_averages().table(sort_by="self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total",
                                        row_limit=30, max_name_column_width=60))


if __name__ == "__main__":
    main()
