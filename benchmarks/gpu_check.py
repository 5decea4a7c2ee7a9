"""The CUDA path checked and timed on a GPU: what the CPU suite cannot exercise.

    python benchmarks/gpu_check.py            # on a machine with CUDA

1. Fidelity on the GPU (the demo model's relu3 and relu4, 8 channels, every objective):
   each image alone against in a batch (PSNR > 40 dB), the same seed twice (PSNR, and
   whether bit-identical), the GPU's image against the CPU's (informational: bf16 against
   float32 arithmetic).
2. Host synchronizations inside the step loop: torch's sync debug mode counts them in a 16-step
   and a 48-step run; the difference over 32 is the count per step (target 0).
3. The automatic batch size and the GPU memory it peaks at, per GoogLeNet layer, and the
   step time at each --batches size and --sizes side (image-steps per second), which shows where
   per-step launch overhead stops mattering.
4. (--parts graphs) The step eagerly against replayed as a CUDA graph, on every objective's
   images: image-steps per second each way and whether the images are the same.
5. (--parts profile) Where inception4c's GPU time goes, by operator.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from atlasgen.demo.net import build_demo_model  # noqa: E402
from atlasgen.featvis import visualize_channels  # noqa: E402
from atlasgen.featvis.batch import ImageSpec  # noqa: E402
from atlasgen.featvis.fold import folded_batchnorm  # noqa: E402
from atlasgen.featvis.device import repeatable  # noqa: E402
from atlasgen.featvis.optimize import _auto_batch_size, optimize_batch  # noqa: E402
from atlasgen.hooks import eval_mode  # noqa: E402
from atlasgen.settings import Preprocess, VisSettings  # noqa: E402
from atlasgen.demo import DEMO_INPUT_SIZE, DEMO_MEAN, DEMO_STD  # noqa: E402

log = logging.getLogger("gpu_check")
DEMO = Preprocess(DEMO_INPUT_SIZE, tuple(DEMO_MEAN), tuple(DEMO_STD))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def fidelity(device: torch.device) -> None:
    settings = VisSettings(steps=64, size=64)
    for layer in ("relu3", "relu4"):
        model = build_demo_model().to(device)
        channels = list(range(8))
        batch = visualize_channels(model, layer, channels, settings, DEMO, device)
        again = visualize_channels(model, layer, channels, settings, DEMO, device)
        cpu = visualize_channels(build_demo_model(), layer, channels, settings, DEMO, torch.device("cpu"))
        for name in settings.objectives:
            alone = np.concatenate([visualize_channels(model, layer, [c], settings, DEMO, device).images[name]
                                    for c in (0, 5)])
            in_batch = batch.images[name][[0, 5]]
            print(f"{layer:<6} {name:<10} alone vs batch {psnr(alone, in_batch):6.1f} dB; same seed twice "
                  f"{psnr(batch.images[name], again.images[name]):6.1f} dB "
                  f"(identical: {np.array_equal(batch.images[name], again.images[name])}); GPU vs CPU "
                  f"{psnr(batch.images[name], cpu.images[name]):5.1f} dB; activation GPU "
                  f"{np.median(batch.activation[name]):.3g} CPU {np.median(cpu.activation[name]):.3g}")


def syncs_per_step(device: torch.device) -> None:
    model = build_demo_model().to(device).eval()
    specs = [ImageSpec(c, "channel") for c in range(8)] + [ImageSpec(c, "neuron") for c in range(8)]
    counts = {}
    for steps in (16, 48):
        settings = VisSettings(steps=steps, size=64, objectives=("channel", "neuron"))
        optimize_batch(model, "relu3", specs, settings, DEMO, device)  # warm-up
        torch.cuda.synchronize(device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                optimize_batch(model, "relu3", specs, settings, DEMO, device)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts[steps] = [str(w.message).splitlines()[0] for w in caught]
    per_step = (len(counts[48]) - len(counts[16])) / 32
    print(f"host synchronizations: {len(counts[16])} in 16 steps, {len(counts[48])} in 48 steps: {per_step:.2f} per step")
    for message in sorted(set(counts[48]))[:5]:
        print(f"   e.g. {message[:160]}")


def googlenet_steps(device: torch.device, batches: list[int], sizes: list[int]) -> None:
    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).to(device).eval()
    for layer in ("conv1", "inception3a", "inception4c", "inception5b"):
        with eval_mode(model, frozen=True), repeatable(device), folded_batchnorm(model, layer, probe(device)):
            for size in sizes:
                layer_steps(model, layer, device, batches, size)


def probe(device: torch.device) -> torch.Tensor:
    return torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0)).to(device)


def layer_steps(model: torch.nn.Module, layer: str, device: torch.device, batches: list[int], size: int) -> None:
    """As visualize_channels runs a batch: frozen weights, batch norms folded, cuDNN deterministic;
    one octave at `size` px (the default schedule runs half its steps at half the final side)."""
    imagenet = Preprocess()
    settings = VisSettings(objectives=("channel",), size=size)
    torch.cuda.reset_peak_memory_stats(device)
    auto = _auto_batch_size(model, layer, settings, imagenet, device)
    row = []
    for batch in batches:
        specs = [ImageSpec(c % 64, "channel") for c in range(batch)]
        timed = VisSettings(objectives=("channel",), steps=24, size=size, octaves=VisSettings().octaves[-1:])
        optimize_batch(model, layer, specs, timed, imagenet, device)  # warm-up: cuDNN plans, allocator
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        optimize_batch(model, layer, specs, timed, imagenet, device)
        torch.cuda.synchronize(device)
        row.append(f"batch {batch}: {batch * timed.steps / (time.perf_counter() - start):7.0f} image-steps/s")
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    print(f"googlenet {layer:<12} {size:>3} px auto batch {auto:>4}; " + "; ".join(row) + f"; peak {peak:.1f} GiB")


def profile(device: torch.device, batches: list[int], sizes: list[int]) -> None:
    """Where one step's GPU time goes: torch.profiler over 8 steps of inception4c at the first
    batch size and each image side."""
    from torch.profiler import ProfilerActivity, profile as profiler

    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).to(device).eval()
    specs = [ImageSpec(c % 512, "channel") for c in range(batches[0])]
    for size in sizes:
        settings = VisSettings(objectives=("channel",), steps=8, size=size, octaves=VisSettings().octaves[-1:],
                               relu_redirect_steps=0)
        with eval_mode(model, frozen=True), repeatable(device), folded_batchnorm(model, "inception4c", probe(device)):
            optimize_batch(model, "inception4c", specs, settings, Preprocess(), device)
            torch.cuda.synchronize(device)
            with profiler(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                optimize_batch(model, "inception4c", specs, settings, Preprocess(), device)
                torch.cuda.synchronize(device)
        print(f"inception4c, batch {len(specs)}, {size} px, 8 steps:")
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=60))


def graphs(device: torch.device, batches: list[int], sizes: list[int]) -> None:
    """The step eagerly against replayed as a CUDA graph (featvis/replay.py), alternating, on
    every objective's images (batch: the first --batches size): image-steps per second each way,
    how many steps were captured, and whether the two give the same images."""
    import atlasgen.featvis.optimize as optimize
    from atlasgen.featvis.batch import image_specs
    from atlasgen.featvis.replay import StepReplay

    class Eager(StepReplay):
        def __init__(self, step, optimizers, capture):  # noqa: ANN001
            super().__init__(step, optimizers, capture=False)

    class Graph(StepReplay):
        captured = 0

        def _captured(self):  # noqa: ANN202
            output = super()._captured()
            Graph.captured += output is not None
            return output

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True).to(device).eval()
    for layer in ("conv1", "inception3a", "inception4c", "inception5b"):
        for size in sizes:
            settings = VisSettings(steps=24, size=size, octaves=VisSettings().octaves[-1:])
            specs = image_specs([c % 64 for c in range(batches[0] // 7)], settings)  # conv1 has 64 channels
            rates: dict[str, list[float]] = {"eager": [], "graph": []}
            images = {}
            Graph.captured = 0
            with eval_mode(model, frozen=True), repeatable(device), folded_batchnorm(model, layer, probe(device)):
                for name, kind in [("eager", Eager), ("graph", Graph)] * 3:
                    optimize.StepReplay = kind
                    sync()
                    start = time.perf_counter()
                    images[name] = optimize_batch(model, layer, specs, settings, Preprocess(), device)
                    sync()
                    rates[name].append(len(specs) * settings.steps / (time.perf_counter() - start))
            optimize.StepReplay = StepReplay
            eager, graph = max(rates["eager"][1:]), max(rates["graph"][1:])  # the first of each: warm-up
            same = torch.equal(images["eager"], images["graph"])
            print(f"googlenet {layer:<12} {size:>3} px, {len(specs)} images: eager {eager:7.0f}, graph {graph:7.0f} "
                  f"image-steps/s ({graph / eager:.2f}x), {Graph.captured} captures; same images: {same} "
                  f"(largest difference {(images['eager'] - images['graph']).abs().max().item():.2g})", flush=True)

def deterministic(device: torch.device) -> None:
    """The fidelity check again with cuDNN's deterministic algorithms and torch's deterministic
    mode (warn only), listing the operations that still have no deterministic version."""
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fidelity(device)
    for message in sorted({str(w.message).splitlines()[0][:200] for w in caught}):
        print(f"   nondeterministic: {message}")
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--parts", nargs="+", default=["fidelity", "syncs", "steps"])
    parser.add_argument("--batches", nargs="+", type=int, default=[32, 128, 512], help="batch sizes of steps, profile")
    parser.add_argument("--sizes", nargs="+", type=int, default=[128], help="image sides of steps, profile")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("atlasgen.featvis.replay").setLevel(logging.DEBUG)  # a step that could not be captured
    device = torch.device(args.device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        print(f"{props.name}, {props.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, "
              f"cuDNN {torch.backends.cudnn.version()}, bf16 {torch.cuda.is_bf16_supported()}")
    sized = {"steps": googlenet_steps, "profile": profile, "graphs": graphs}
    parts = {"fidelity": fidelity, "syncs": syncs_per_step, "deterministic": deterministic}
    for name in args.parts:
        began = time.perf_counter()
        if name in sized:
            sized[name](device, args.batches, args.sizes)
        else:
            parts[name](device)
        print(f"[{name}: {time.perf_counter() - began:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
