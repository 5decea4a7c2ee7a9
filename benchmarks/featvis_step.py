"""One optimization step's network cost, four ways, side by side in one run: as the model is
(eval BatchNorm), with BatchNorm folded into its convolutions (`atlasgen.featvis.fold`), folded
and with the stem's image gradient by polyphase convolution (`atlasgen.featvis.polyphase`, what
atlasgen runs on CPU), and the folded network under `torch.compile`.

A step is the forward pass to the layer on a batch of channels-last images under the autocast
atlasgen uses, and the backward pass to the images (no weight gradients). Rounds alternate
between the variants and each keeps its fastest, in CPU seconds of this process (`process_time`),
which other jobs on a shared machine disturb less than wall time. The compiled variant's first
call (the compilation) is reported apart.

    python benchmarks/featvis_step.py --layers inception3a inception4c --size 128 --batch 32
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import torch
import torchvision

from atlasgen.featvis.fold import folded_batchnorm
from atlasgen.featvis.device import autocast_for
from atlasgen.featvis.polyphase import polyphase_convolutions
from atlasgen.hooks import forward_layers

log = logging.getLogger("featvis_step")


def googlenet() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def step(fn, x0: torch.Tensor) -> None:
    x = x0.clone().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    autocast, _ = autocast_for(torch.device("cpu"))
    with autocast:
        acts = fn(x)
    acts.float()[:, 0].mean().backward()


def cpu_seconds(fn, x0: torch.Tensor, repeats: int) -> float:
    start = time.process_time()
    for _ in range(repeats):
        step(fn, x0)
    return (time.process_time() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", nargs="+", default=["inception3a", "inception4c"])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    x0 = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    print("\n| layer | as built, ms/image-step | BatchNorm folded | folded + polyphase stem gradient | "
          "folded + torch.compile | compile s |\n|---|---|---|---|---|---|")
    for layer in args.layers:
        plain, folded = googlenet(), googlenet()
        plain_fn = lambda x, m=plain: forward_layers(m, x, [layer])[layer]  # noqa: E731
        with folded_batchnorm(folded, layer, x0[:1]):
            folded_fn = lambda x, m=folded: forward_layers(m, x, [layer])[layer]  # noqa: E731

            def polyphase_fn(x, m=folded):
                with polyphase_convolutions(m, torch.device("cpu")):
                    return forward_layers(m, x, [layer])[layer]

            variants = {"plain": plain_fn, "folded": folded_fn, "polyphase": polyphase_fn}
            compile_s = float("nan")
            if not args.no_compile:
                # forward_layers stops the pass by raising, which torch.compile cannot trace: compile
                # the children that run up to the layer and call them in order (GoogLeNet's forward).
                names = [n for n, _ in folded.named_children()]
                children = [torch.compile(getattr(folded, n)) for n in names[: names.index(layer) + 1]]

                def compiled(x, m=folded, children=children):
                    x = m._transform_input(x)
                    for child in children:
                        x = child(x)
                    return x

                start = time.perf_counter()
                step(compiled, x0)
                compile_s = time.perf_counter() - start
                variants["compiled"] = compiled
            best = {name: float("inf") for name in variants}
            for _ in range(args.rounds):
                for name, fn in variants.items():
                    best[name] = min(best[name], cpu_seconds(fn, x0, args.repeats))
        ms = {name: 1000 * s / args.batch for name, s in best.items()}
        log.info("%s: %s (CPU ms per image-step), load %s", layer, {k: round(v, 2) for k, v in ms.items()},
                 [round(v, 1) for v in os.getloadavg()])
        print(f"| {layer} | {ms['plain']:.2f} | {ms['folded']:.2f} ({ms['plain'] / ms['folded']:.2f}x) | "
              f"{ms['polyphase']:.2f} ({ms['plain'] / ms['polyphase']:.2f}x) | {ms.get('compiled', float('nan')):.2f} | {compile_s:.0f} |")


if __name__ == "__main__":
    main()
