"""Benchmark of the dataset pass as `atlasgen build` runs it (examples, similarity and histogram
accumulators on every default layer of torchvision
GoogLeNet and ResNet-50; seeded random init, no downloads) against a bare forward pass of
the same model over the same images with the same DataLoader, workers and preprocessing.

    /work/venv/bin/python benchmarks/dataset_pass.py [--images 256] [--batch-size 32]

Per model, in a fresh child process (so memory peaks never leak between measurements):

1. end to end: the build's pass over all 4N images, then the bare loop over the same images,
   repeated in alternating rounds (--rounds, fastest of each kept, as the machine is shared);
   images/s by wall clock and per CPU-second of the main process (all its threads), and the
   ratios. The pass folds each batch into its statistics while the next batch's forward runs,
   so its wall-clock ratio can be above its CPU-time ratio.
2. memory: the main process's peak resident set (VmHWM) after the pass's first N images and
   after all 4N, and its growth above the resident set before the pass. RSS rather than
   tracemalloc because tensors live outside Python's allocator.

With --breakdown, only the single-thread CPU cost of one batch: forward, top/bottom-k and
co-activation (float32 and float64 products), the steadiest numbers on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def write_images(folder: Path, count: int, seed: int = 0) -> None:
    """`count` 320x240 JPEGs of smooth random colour (so resize + centre crop do real work)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        coarse = rng.integers(0, 256, size=(15, 20, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((320, 240), Image.Resampling.BICUBIC)
        img.save(folder / f"{i:05d}.jpg", quality=90)


def memory_kib(field: str) -> int:
    """VmRSS (current) or VmHWM (peak) of this process, KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def build_model(name: str):
    import torch
    import torchvision

    torch.manual_seed(0)
    if name == "googlenet":
        model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    else:
        model = torchvision.models.resnet50(weights=None)
    return model.eval()


class Clock:
    """Wall and main-process CPU seconds of the code run inside `with clock:`, summed."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def __enter__(self):
        self._start = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_exc):
        self.wall += time.perf_counter() - self._start[0]
        self.cpu += time.process_time() - self._start[1]


def build_pass(model, layers, dataset, settings, device, progress=None) -> None:
    """The dataset pass as `atlasgen build` runs it: every stage that reads the dataset
    (examples, similarity, histogram) folds every layer, in one pass."""
    from atlasgen.examples import ExtremesAccumulator
    from atlasgen.similarity import Scratch, SizedOnFirstBatch
    from atlasgen.stages.histogram import HistogramAccumulator
    from atlasgen.stream import stream_dataset

    scratch = Scratch()
    accumulators = {layer: [ExtremesAccumulator(layer, settings), SizedOnFirstBatch(scratch), HistogramAccumulator()]
                    for layer in layers}
    stream_dataset(model, accumulators, dataset, settings, device, progress)


def run_child(name: str, folder: Path, batch_size: int, workers: int, small: int, rounds: int,
              fold_share: int, device_name: str = "cpu") -> dict:
    import torch

    import atlasgen.stream

    from atlasgen.data import ImageFolder
    from atlasgen.stream import loader
    from atlasgen.models import default_layer_names, feature_layers, module_shapes
    from atlasgen.settings import ExamplesSettings, Preprocess

    if fold_share:
        atlasgen.stream.FOLD_THREAD_SHARE = fold_share
    device = torch.device(device_name)
    model = build_model(name).to(device)
    shapes = module_shapes(model, 224)
    layers = [layer.name for layer in feature_layers(shapes, default_layer_names(model, shapes))]
    dataset = ImageFolder(folder, Preprocess(input_size=224))
    settings = ExamplesSettings(batch_size=batch_size, workers=workers)
    # warm-up of both on one batch: allocator, thread pools and first calls stay out of the timings
    with torch.inference_mode():
        model(torch.stack([dataset[i][0] for i in range(min(batch_size, len(dataset)))]).to(device))
    build_pass(model, layers, ImageFolder(folder, Preprocess(input_size=224), max_images=batch_size), settings, device)

    done, peak_small = 0, 0

    def progress(n: int) -> None:
        nonlocal done, peak_small
        done += n
        if done >= small and not peak_small:
            peak_small = memory_kib("VmHWM")

    def bare_pass() -> None:
        with torch.inference_mode():
            for images, _indices, _failed in loader(dataset, settings, device):
                model(images.to(device, non_blocking=True))
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the GPU's queued work counts

    # Alternating rounds, fastest of each kept: other jobs on a shared machine slow whole rounds down.
    baseline = memory_kib("VmRSS")
    pass_clock, bare_clock = None, None
    for round_ in range(rounds):
        with Clock() as clock:  # the first round's pass comes first, so its memory peaks are its own
            build_pass(model, layers, dataset, settings, device, progress=progress if round_ == 0 else None)
        if round_ == 0:
            peak_all = memory_kib("VmHWM")
        pass_clock = min(pass_clock or clock, clock, key=lambda c: c.wall)
        with Clock() as clock:
            bare_pass()
        bare_clock = min(bare_clock or clock, clock, key=lambda c: c.wall)

    n = len(dataset)
    return {"model": name, "layers": layers, "images": n,
            "bare": n / bare_clock.wall, "pass": n / pass_clock.wall,
            "bare_cpu": n / bare_clock.cpu, "pass_cpu": n / pass_clock.cpu,
            "baseline_mib": baseline / 1024, "peak_small_mib": peak_small / 1024, "peak_all_mib": peak_all / 1024,
            "threads": torch.get_num_threads(), "load": os.getloadavg()[0], "rounds": rounds, "device": device_name,
            "gpu_peak_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0}


def breakdown(name: str, batch_size: int) -> str:
    """Single-thread CPU seconds of one batch: forward vs the pass's statistics (float32 and float64
    co-activation products), which shows where the pass's time goes without noise from the loader."""
    import torch

    from atlasgen.examples import _RunningExtremes
    from atlasgen.hooks import forward_layers
    from atlasgen.models import default_layer_names, feature_layers, module_shapes
    from atlasgen.similarity import CoActivation

    torch.set_num_threads(1)
    model = build_model(name)
    shapes = module_shapes(model, 224)
    layers = [layer.name for layer in feature_layers(shapes, default_layer_names(model, shapes))]
    x = torch.randn(batch_size, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    half = batch_size // 2
    with torch.inference_mode():
        model(x[:2])
        start = time.process_time()
        model(x)
        forward = time.process_time() - start
        outputs = forward_layers(model, x, layers)
        products = {}
        for dtype in (torch.float32, torch.float64):
            products[dtype] = 0.0
            for layer in layers:
                co = CoActivation(outputs[layer].shape[1], dtype)
                co.update(outputs[layer][:1])
                start = time.process_time()
                co.update(outputs[layer])
                products[dtype] += time.process_time() - start
        extremes = 0.0
        for layer in layers:
            flat = outputs[layer].flatten(2)
            top, bottom = _RunningExtremes(10, True), _RunningExtremes(10, False)
            top.update(flat[:half], torch.arange(half))
            bottom.update(flat[:half], torch.arange(half))
            start = time.process_time()
            top.update(flat[half:], torch.arange(half, batch_size))
            bottom.update(flat[half:], torch.arange(half, batch_size))
            extremes += (time.process_time() - start) * batch_size / (batch_size - half)
    f32, f64 = products[torch.float32], products[torch.float64]
    return (f"{name}, 1 thread, CPU s per {batch_size} images: forward {forward:.2f}, top/bottom-k {extremes:.2f}, "
            f"co-activation {f32:.2f} (float64 products: {f64:.2f}) -> ratio {forward / (forward + extremes + f32):.2f} "
            f"(float64: {forward / (forward + extremes + f64):.2f})")


def report(r: dict, small: int) -> str:
    grow_small = r["peak_small_mib"] - r["baseline_mib"]
    grow_all = r["peak_all_mib"] - r["baseline_mib"]
    growth = (r["peak_all_mib"] - r["peak_small_mib"]) / r["peak_small_mib"]
    return "\n".join([
        f"{r['model']}: {len(r['layers'])} layers ({', '.join(r['layers'])})",
        f"                      bare fwd   dataset pass   ratio (target >= 0.8); end to end: fastest of {r['rounds']} rounds",
        f"  end to end, wall   {r['bare']:7.2f}/s   {r['pass']:7.2f}/s      {r['pass'] / r['bare']:.3f}",
        f"  end to end, CPU    {r['bare_cpu']:7.2f}/s   {r['pass_cpu']:7.2f}/s      {r['pass_cpu'] / r['bare_cpu']:.3f}",
        f"  peak RSS  {r['peak_small_mib']:.0f} MiB after {small} images, {r['peak_all_mib']:.0f} MiB after "
        f"{r['images']}: growth {100 * growth:+.1f}% (target < 10%)",
        f"            above the {r['baseline_mib']:.0f} MiB before the pass: {grow_small:.0f} MiB -> {grow_all:.0f} MiB",
        f"  (torch threads {r['threads']}, load average {r['load']:.1f} on {os.cpu_count()} CPUs at the end; "
        f"device {r['device']}" + (f", GPU memory peak {r['gpu_peak_mib']:.0f} MiB)" if r["gpu_peak_mib"] else ")"),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256, help="4N: images of the run (N = a quarter)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=-1, help="DataLoader workers (-1 = automatic)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in the main process (0 = torch's default)")
    parser.add_argument("--models", nargs="+", default=["googlenet", "resnet50"], choices=["googlenet", "resnet50"])
    parser.add_argument("--rounds", type=int, default=3, help="alternating end-to-end rounds; the fastest of each is kept")
    parser.add_argument("--fold-share", type=int, default=0,
                        help="the fold thread gets torch's threads // this (0 = atlasgen's FOLD_THREAD_SHARE)")
    parser.add_argument("--breakdown", action="store_true", help="only the single-thread cost breakdown per batch")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    small = max(1, args.images // 4)
    if args.breakdown:
        for name in args.models:
            print(breakdown(name, args.batch_size), flush=True)
        return
    if args.child:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(json.dumps(run_child(args.child, args.folder, args.batch_size, args.workers, small, args.rounds,
                                   args.fold_share, args.device)))
        return
    with tempfile.TemporaryDirectory(prefix="atlasgen-bench-") as tmp:
        folder = Path(tmp) / "images"
        write_images(folder, args.images)
        print(f"{args.images} generated 320x240 JPEGs, batch {args.batch_size}, workers {args.workers}, "
              f"threads {args.threads or 'default'}, device {args.device}")
        for name in args.models:
            out = subprocess.run([sys.executable, __file__, "--child", name, "--folder", str(folder),
                                  "--images", str(args.images), "--batch-size", str(args.batch_size),
                                  "--workers", str(args.workers), "--threads", str(args.threads),
                                  "--rounds", str(args.rounds), "--fold-share", str(args.fold_share),
                                  "--device", args.device],
                                 check=True, capture_output=True, text=True)
            print(report(json.loads(out.stdout.strip().splitlines()[-1]), small), flush=True)


if __name__ == "__main__":
    main()
