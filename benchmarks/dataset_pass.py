"""Benchmark of the dataset stage: `dataset_pass` with every default layer of torchvision
GoogLeNet and ResNet-50 (seeded random init, no downloads) against a bare forward pass of
the same model over the same images with the same DataLoader, workers and preprocessing.

    /work/venv/bin/python benchmarks/dataset_pass.py [--images 128] [--batch-size 16] [--rounds 2]

Prints images/s of both (wall clock, and per CPU-second of the main process, which is
steadier when other jobs share the machine), their ratio, and the peak resident memory of the main process
after N = images/4 and after all 4N images of the pass. Each model runs in a fresh child
process so that peaks do not leak from one measurement into the next.
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
    """`count` 240x320 JPEGs of smooth random colour (so resize + centre crop do real work)."""
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


def run_child(name: str, folder: Path, batch_size: int, workers: int, small: int, rounds: int) -> dict:
    import torch

    from atlasgen.data import ImageFolder
    from atlasgen.examples import _loader, dataset_pass
    from atlasgen.models import default_layer_names, feature_layers
    from atlasgen.settings import ExamplesSettings, Preprocess

    device = torch.device("cpu")
    model = build_model(name)
    layers = [layer.name for layer in feature_layers(model, 224, default_layer_names(model))]
    dataset = ImageFolder(folder, Preprocess(input_size=224))
    settings = ExamplesSettings(batch_size=batch_size, workers=workers)
    # warm-up of both loops on one batch: allocator, thread pools, first-call costs stay out of the timings
    with torch.inference_mode():
        model(torch.stack([dataset[i][0] for i in range(min(batch_size, len(dataset)))]))
    dataset_pass(model, layers, ImageFolder(folder, Preprocess(input_size=224), max_images=batch_size), settings, device)

    def bare() -> tuple[float, float]:
        start, cpu = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            for images, _indices, _failed in _loader(dataset, settings, device):
                model(images.to(device))
        return len(dataset) / (time.perf_counter() - start), len(dataset) / (time.process_time() - cpu)

    def full() -> tuple[float, float, int, int]:
        done, peak_small = 0, 0

        def progress(n: int) -> None:
            nonlocal done, peak_small
            done += n
            if done >= small and not peak_small:
                peak_small = memory_kib("VmHWM")

        start, cpu = time.perf_counter(), time.process_time()
        dataset_pass(model, layers, dataset, settings, device, progress=progress)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        return len(dataset) / wall, len(dataset) / cpu, peak_small, memory_kib("VmHWM")

    baseline = memory_kib("VmRSS")
    pass_rate, pass_cpu, peak_small, peak_all = full()  # first, so its peaks are not the bare loop's
    bare_rate, bare_cpu = bare()
    # further rounds in alternating order even out load from other processes; keep each one's best
    for _ in range(rounds - 1):
        again_bare, again_bare_cpu = bare()
        again_pass, again_pass_cpu, _, _ = full()
        bare_rate, bare_cpu = max(bare_rate, again_bare), max(bare_cpu, again_bare_cpu)
        pass_rate, pass_cpu = max(pass_rate, again_pass), max(pass_cpu, again_pass_cpu)
    return {"model": name, "layers": layers, "images": len(dataset), "bare": bare_rate, "pass": pass_rate,
            "bare_cpu": bare_cpu, "pass_cpu": pass_cpu,
            "baseline_mib": baseline / 1024, "peak_small_mib": peak_small / 1024, "peak_all_mib": peak_all / 1024,
            "threads": torch.get_num_threads(), "load": os.getloadavg()[0]}


def report(result: dict, small: int) -> str:
    ratio = result["pass"] / result["bare"]
    grow_small = result["peak_small_mib"] - result["baseline_mib"]
    grow_all = result["peak_all_mib"] - result["baseline_mib"]
    growth = (result["peak_all_mib"] - result["peak_small_mib"]) / result["peak_small_mib"]
    return "\n".join([
        f"{result['model']}: {len(result['layers'])} layers ({', '.join(result['layers'])})",
        f"  bare forward  {result['bare']:7.2f} images/s wall   {result['bare_cpu']:7.2f} images per CPU-second",
        f"  dataset pass  {result['pass']:7.2f} images/s wall   {result['pass_cpu']:7.2f} images per CPU-second",
        f"  ratio         {ratio:.3f} wall, {result['pass_cpu'] / result['bare_cpu']:.3f} CPU (target >= 0.8)",
        f"  peak RSS      {result['peak_small_mib']:.0f} MiB after {small} images, {result['peak_all_mib']:.0f} MiB after "
        f"{result['images']}: growth {100 * growth:+.1f}% (target < 10%)",
        f"                above the {result['baseline_mib']:.0f} MiB before the pass: {grow_small:.0f} MiB -> {grow_all:.0f} MiB",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=128, help="4N: images of the run (N = a quarter)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="timed runs of each; the best is kept")
    parser.add_argument("--workers", type=int, default=-1, help="DataLoader workers (-1 = automatic)")
    parser.add_argument("--models", nargs="+", default=["googlenet", "resnet50"], choices=["googlenet", "resnet50"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads in the main process (0 = torch's default)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    small = max(1, args.images // 4)
    if args.child:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(json.dumps(run_child(args.child, args.folder, args.batch_size, args.workers, small, args.rounds)))
        return
    with tempfile.TemporaryDirectory(prefix="atlasgen-bench-") as tmp:
        folder = Path(tmp) / "images"
        write_images(folder, args.images)
        print(f"{args.images} generated 320x240 JPEGs, batch {args.batch_size}, workers {args.workers}, "
              f"threads {args.threads or 'default'}, rounds {args.rounds}")
        for name in args.models:
            out = subprocess.run([sys.executable, __file__, "--child", name, "--folder", str(folder),
                                  "--images", str(args.images), "--batch-size", str(args.batch_size),
                                  "--workers", str(args.workers), "--rounds", str(args.rounds),
                                  "--threads", str(args.threads)], check=True, capture_output=True, text=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(report(result, small), flush=True)
            print(f"  (torch threads {result['threads']}, load average {result['load']:.1f} on {os.cpu_count()} CPUs at the end)")


if __name__ == "__main__":
    main()
