"""What compiling the network would give the GPU step: the step as built (eager network, replayed
as a CUDA graph) against the same with each of GoogLeNet's top-level modules up to the layer
compiled by inductor (`torch.compile`, static shapes), one batch of every objective (511 images),
one octave of --steps steps at --size, no redirected ReLU steps (the redirect swaps `F.relu`, which
a compiled module would have to be traced for twice). Prints the compile time (the first run
minus a warm run) and the images' PSNR against the eager step's.

    python3 benchmarks/compiled_step.py --layer inception4c --size 128
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from atlasgen.featvis.batch import image_specs  # noqa: E402
from atlasgen.featvis.device import repeatable  # noqa: E402
from atlasgen.featvis.fold import folded_batchnorm  # noqa: E402
from atlasgen.featvis.optimize import optimize_batch  # noqa: E402
from atlasgen.hooks import eval_mode  # noqa: E402
from atlasgen.settings import Preprocess, VisSettings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", default="inception4c")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=511)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).to(device).eval()
    settings = VisSettings(steps=args.steps, size=args.size, octaves=VisSettings().octaves[-1:], relu_redirect_steps=0)
    specs = image_specs(range(args.batch // 7), settings)
    probe = torch.rand(1, 3, args.size, args.size, device=device)

    def run() -> tuple[float, torch.Tensor]:
        sync()
        began = time.perf_counter()
        images = optimize_batch(model, args.layer, specs, settings, Preprocess(), device)
        sync()
        return time.perf_counter() - began, images

    names = [name for name, _ in model.named_children()]
    upto = names[: names.index(args.layer) + 1]
    with eval_mode(model, frozen=True), repeatable(device), folded_batchnorm(model, args.layer, probe):
        run()
        eager = min(run()[0] for _ in range(2))
        eager_images = run()[1]
        originals = {name: getattr(model, name) for name in upto}
        for name in upto:
            setattr(model, name, torch.compile(originals[name], dynamic=False))
        try:
            first, images = run()
            compiled = min(run()[0] for _ in range(2))
        finally:
            for name, module in originals.items():
                setattr(model, name, module)
    rate = len(specs) * settings.steps
    mse = float(((images - eager_images) ** 2).mean())
    psnr = float("inf") if mse == 0 else 10 * np.log10(1 / mse)
    print(f"googlenet {args.layer} {args.size} px, {len(specs)} images, {settings.steps} steps: eager {rate / eager:.0f}, "
          f"compiled {rate / compiled:.0f} image-steps/s ({eager / compiled:.2f}x); compiling took {first - compiled:.0f} s; "
          f"images {psnr:.1f} dB from the eager step's", flush=True)


if __name__ == "__main__":
    main()
