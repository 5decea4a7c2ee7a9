"""What the objectives add to a step: one batch of "channel" images against one batch of every
default objective's images (channel, negative, neuron and 4 diverse per channel), same batch size,
GoogLeNet (seeded random weights, BatchNorm folded), one octave at each --sizes side, alternating
rounds, fastest kept. The difference is the objectives' own work: the neuron's view alignment,
the diversity penalty's Gram similarity.

    python benchmarks/objectives_cost.py --layers inception4c inception5b --sizes 64 128
    python benchmarks/objectives_cost.py --device cuda --batch 511
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision

from atlasgen.featvis.batch import ImageSpec, image_specs
from atlasgen.featvis.device import repeatable
from atlasgen.featvis.fold import folded_batchnorm
from atlasgen.featvis.optimize import optimize_batch
from atlasgen.hooks import eval_mode
from atlasgen.settings import Preprocess, VisSettings


def seconds(model: torch.nn.Module, layer: str, specs: list[ImageSpec], settings: VisSettings, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    optimize_batch(model, layer, specs, settings, Preprocess(), device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", nargs="+", default=["inception4c"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--batch", type=int, default=28, help="images per batch (a multiple of 7 fills both)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).to(device).eval()
    for layer in args.layers:
        for size in args.sizes:
            settings = VisSettings(steps=args.steps, size=size, octaves=VisSettings().octaves[-1:], relu_redirect_steps=0)
            every = image_specs(range(args.batch // 7), settings)
            channel = [ImageSpec(c, "channel") for c in range(len(every))]
            best = {"channel": float("inf"), "all": float("inf")}
            probe = torch.rand(1, 3, size, size, device=device)
            with eval_mode(model, frozen=True), repeatable(device), folded_batchnorm(model, layer, probe):
                seconds(model, layer, every, settings, device)  # warm-up
                for _ in range(args.rounds):
                    for name, specs in (("channel", channel), ("all", every)):
                        best[name] = min(best[name], seconds(model, layer, specs, settings, device))
            rate = {name: len(every) * args.steps / s for name, s in best.items()}
            print(f"{layer:<12} {size:>3} px, {len(every)} images, {device}: channel {rate['channel']:8.0f}, "
                  f"every objective {rate['all']:8.0f} image-steps/s ({best['all'] / best['channel']:.2f}x the time)",
                  flush=True)


if __name__ == "__main__":
    main()
