"""Where a CPU step's time goes, by aten operator, timed call by call: every operator the step
dispatches is timed around its own call (the CPU runs them one after the other, so these times
add up to the step), which torch.profiler's table does not give reliably on this machine (its
callbacks inflated some operators tenfold here). GoogLeNet (seeded random weights), 32 "channel"
images, one octave of 4 steps at --size, as a visualization runs it: BatchNorm folded, polyphase
stem, freed memory kept.

    python benchmarks/cpu_step_ops.py --layer inception4c --size 128
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from atlasgen.featvis.batch import ImageSpec  # noqa: E402
from atlasgen.featvis.fold import folded_batchnorm  # noqa: E402
from atlasgen.featvis.memory import retained_heap  # noqa: E402
from atlasgen.featvis.optimize import optimize_batch  # noqa: E402
from atlasgen.featvis.polyphase import polyphase_convolutions  # noqa: E402
from atlasgen.hooks import eval_mode  # noqa: E402
from atlasgen.settings import Preprocess, VisSettings  # noqa: E402


class OperatorTimes(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: collections.Counter = collections.Counter()
        self.calls: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        began = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        self.seconds[str(func)] += time.perf_counter() - began
        self.calls[str(func)] += 1
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", default="inception4c")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).eval()
    device = torch.device("cpu")
    steps = 4
    settings = VisSettings(objectives=("channel",), steps=steps, size=args.size, octaves=VisSettings().octaves[-1:],
                           relu_redirect_steps=0)
    specs = [ImageSpec(c, "channel") for c in range(32)]
    probe = torch.rand(1, 3, args.size, args.size)
    times = OperatorTimes()
    with eval_mode(model, frozen=True), folded_batchnorm(model, args.layer, probe), \
            polyphase_convolutions(model, device), retained_heap(True):
        optimize_batch(model, args.layer, specs, settings, Preprocess(), device)  # warm-up
        began = time.perf_counter()
        optimize_batch(model, args.layer, specs, settings, Preprocess(), device)
        plain = (time.perf_counter() - began) / steps
        with times:
            optimize_batch(model, args.layer, specs, settings, Preprocess(), device)
    total = sum(times.seconds.values())
    print(f"{args.layer}, 32 images, {args.size} px: {plain * 1e3:.0f} ms a step untimed; operators "
          f"{total / steps * 1e3:.0f} ms a step")
    for name, seconds in times.seconds.most_common(args.top):
        print(f"  {seconds / steps * 1e3:7.1f} ms {seconds / total:6.1%}  {times.calls[name] // steps:4d} calls  {name}")


if __name__ == "__main__":
    main()
